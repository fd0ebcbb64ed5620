//! The embedded adapters pass the same behaviour suites every backend passes.

use std::path::PathBuf;
use std::sync::Arc;

use adapters::embedded::bus::EmbeddedBusConfig;
use adapters::embedded::{
    EmbeddedBus, EmbeddedDb, EmbeddedDeviceTokenStore, EmbeddedEnvelopeStore, MemoryPresenceStore,
};
use pipeline::clock::SystemClock;
use pipeline::ports::{DeviceTokenStore, EnvelopeBus, EnvelopeStore, PresenceStore};
use pipeline::testkit;

mod common;

fn temp_db(name: &str) -> (EmbeddedDb, PathBuf) {
    let dir = common::temp_dir(&format!("suite-{name}"));
    let db = EmbeddedDb::open(
        &dir.join("router.redb"),
        adapters::embedded::database::DEFAULT_COMMIT_INTERVAL,
    )
    .expect("open db");
    (db, dir)
}

#[tokio::test]
async fn embedded_envelope_store_passes_the_suite() {
    let dirs = std::sync::Mutex::new(Vec::new());
    testkit::envelope_store_suite("embedded", |retention| {
        let (db, dir) = temp_db("store");
        dirs.lock().unwrap().push(dir);
        async move {
            Arc::new(
                EmbeddedEnvelopeStore::new(db, retention, Arc::new(SystemClock))
                    .await
                    .expect("store"),
            ) as Arc<dyn EnvelopeStore>
        }
    })
    .await;
    for dir in dirs.into_inner().unwrap() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[tokio::test]
async fn memory_presence_passes_the_suite() {
    testkit::presence_suite("memory", || async {
        Arc::new(MemoryPresenceStore::new(Arc::new(SystemClock))) as Arc<dyn PresenceStore>
    })
    .await;
}

#[tokio::test]
async fn embedded_device_tokens_pass_the_suite() {
    let (db, dir) = temp_db("devices");
    testkit::device_tokens_suite("embedded", || {
        let db = db.clone();
        async move {
            Arc::new(
                EmbeddedDeviceTokenStore::new(db, Arc::new(SystemClock))
                    .await
                    .expect("devices"),
            ) as Arc<dyn DeviceTokenStore>
        }
    })
    .await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn embedded_bus_passes_the_suite() {
    let (_db, dir) = temp_db("bus");
    testkit::bus_suite(|| {
        let bus_dir = dir.join("bus");
        async move {
            Arc::new(
                EmbeddedBus::open(&bus_dir, EmbeddedBusConfig::default())
                    .await
                    .expect("bus"),
            ) as Arc<dyn EnvelopeBus>
        }
    })
    .await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn pending_messages_of_an_older_version_move_onto_the_bus_log() {
    // Before the bus log, pending bus messages were JSON rows of `bus_pending` in router.redb.
    const LEGACY: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("bus_pending");
    let (db, dir) = temp_db("legacy-bus");
    db.write(|txn| {
        let mut table = txn.open_table(LEGACY)?;
        table.insert(
            7,
            br#"{"attributes":{"recipient":"urn:a:user:b"},"data":"{\"n\":1}"}"#.as_slice(),
        )?;
        table.insert(9, br#"{"attributes":{},"data":"{\"n\":2}"}"#.as_slice())?;
        Ok(())
    })
    .await
    .expect("legacy rows");
    let bus = EmbeddedBus::open(&dir.join("bus"), EmbeddedBusConfig::default())
        .await
        .expect("bus");
    assert_eq!(bus.adopt_pending(&db).await.expect("adopt"), 2);
    let mut subscription = bus.subscribe().await.expect("subscribe");
    for expected in [&br#"{"n":1}"#[..], &br#"{"n":2}"#[..]] {
        let received = subscription.next().await.expect("adopted message");
        assert_eq!(&received.message.data[..], expected, "in their old order");
        received.ack().await.expect("ack");
    }
    assert_eq!(
        bus.adopt_pending(&db).await.expect("adopt again"),
        0,
        "moved, not copied"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_acked_message_stays_acked_after_a_restart_and_an_unacked_one_comes_back() {
    // The subscriber may get a message (and ack it) before its publish has returned: publish
    // hands it on once its append is queued, and the ack waits for its written position.
    let dir = common::temp_dir("bus-ack-restart");
    let bus_dir = dir.join("bus");
    let message = testkit::bus_message;
    {
        let bus = EmbeddedBus::open(&bus_dir, EmbeddedBusConfig::default())
            .await
            .expect("bus");
        let mut subscription = bus.subscribe().await.expect("subscribe");
        for n in 0..2 {
            let publishing = {
                let bus = bus.clone();
                let message = message(n);
                tokio::spawn(async move { bus.publish(message).await })
            };
            let received = subscription.next().await.expect("message");
            assert_eq!(received.message, message(n));
            if n == 0 {
                received.ack().await.expect("ack");
            }
            publishing.await.expect("task").expect("publish");
        }
        bus.flush().await.expect("flush");
    }
    let bus = EmbeddedBus::open(&bus_dir, EmbeddedBusConfig::default())
        .await
        .expect("reopen");
    let mut subscription = bus.subscribe().await.expect("subscribe");
    let again = tokio::time::timeout(std::time::Duration::from_secs(10), subscription.next())
        .await
        .expect("the unacked message comes back")
        .expect("message");
    assert_eq!(again.message, message(1), "only the unacked message");
    assert_eq!(again.attempt, 2);
    again.ack().await.expect("ack");
    assert!(
        tokio::time::timeout(std::time::Duration::from_secs(1), subscription.next())
            .await
            .is_err(),
        "the acked message must not come back"
    );
    let _ = std::fs::remove_dir_all(dir);
}
