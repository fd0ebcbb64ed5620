//! The embedded envelope store holds an enqueue out of its queue tables until the open
//! transaction commits: an ack before then, a reopen after it, a roll-back and a purge all
//! find the queue they should.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use adapters::embedded::{EmbeddedDb, EmbeddedEnvelopeStore};
use pipeline::clock::SystemClock;
use pipeline::ports::envelope_store::{
    Durability, EnqueueOutcome, EnvelopeStore, QueuedEnvelope, Retention,
};
use pipeline::{MessageId, UserUrn};
use redb::TableDefinition;

/// Long enough that only the commits a test asks for happen.
const NO_TIMED_COMMITS: Duration = Duration::from_secs(3600);

const HOUR: Retention = Retention {
    envelopes: Duration::from_secs(3600),
    dedupe: Duration::from_secs(3600),
};

/// A normal-lane envelope `id` for `recipient`.
fn queued(recipient: &UserUrn, id: &str) -> QueuedEnvelope {
    pipeline::testkit::queued(recipient, id, false)
}

fn id(text: &str) -> MessageId {
    MessageId::parse(text).unwrap_or_else(|e| panic!("{e}"))
}

/// Opens the store in `dir`, waiting while an earlier handle's writer thread still holds
/// the file.
async fn open_store(dir: &Path, retention: Retention) -> (EmbeddedDb, EmbeddedEnvelopeStore) {
    let path = dir.join("router.redb");
    let mut db = EmbeddedDb::open(&path, NO_TIMED_COMMITS);
    for _ in 0..50 {
        if db.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        db = EmbeddedDb::open(&path, NO_TIMED_COMMITS);
    }
    let db = db.expect("open database");
    let store = EmbeddedEnvelopeStore::new(db.clone(), retention, Arc::new(SystemClock))
        .await
        .expect("open store");
    (db, store)
}

async fn backlog_ids(store: &EmbeddedEnvelopeStore, user: &UserUrn) -> Vec<String> {
    let page = store.backlog(user, None, 100).await.expect("backlog");
    page.envelopes
        .iter()
        .map(|e| e.message_id.to_string())
        .collect()
}

/// Stages `envelopes`, checks that each is new, and returns the signal of their commit.
async fn stage_new(store: &EmbeddedEnvelopeStore, envelopes: &[QueuedEnvelope]) -> Durability {
    let staged = store.enqueue_staged(envelopes).await.expect("enqueue");
    assert_eq!(
        staged.outcomes,
        vec![EnqueueOutcome::Stored; envelopes.len()]
    );
    staged.durable
}

/// Enqueues `envelopes` and commits them at once (no timed commits happen in these tests).
async fn enqueue_committed(
    db: &EmbeddedDb,
    store: &EmbeddedEnvelopeStore,
    envelopes: &[QueuedEnvelope],
) -> Vec<EnqueueOutcome> {
    let staged = store.enqueue_staged(envelopes).await.expect("enqueue");
    db.flush().await.expect("flush");
    staged.durable.await.expect("durable");
    staged.outcomes
}

/// A store in a fresh directory named after `name`, and a user of its own.
async fn fresh(
    name: &str,
    retention: Retention,
) -> (PathBuf, UserUrn, EmbeddedDb, EmbeddedEnvelopeStore) {
    let dir = common::temp_dir(name);
    let user = pipeline::testkit::user(name, "user");
    let (db, store) = open_store(&dir, retention).await;
    (dir, user, db, store)
}

/// Closes the store and removes its directory.
fn close(dir: PathBuf, db: EmbeddedDb, store: EmbeddedEnvelopeStore) {
    drop((store, db));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_envelope_acked_before_its_commit_is_gone_and_its_id_still_deduped_after_a_reopen() {
    let (dir, user, db, store) = fresh("held-ack", HOUR).await;
    let mut durable = stage_new(&store, &[queued(&user, "m-acked"), queued(&user, "m-kept")]).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut durable)
            .await
            .is_err(),
        "nothing is durable before a commit"
    );
    assert_eq!(store.ack(&user, &[id("m-acked")]).await.expect("ack"), 1);
    assert_eq!(store.ack(&user, &[id("m-acked")]).await.expect("ack"), 0);
    db.flush().await.expect("flush");
    durable.await.expect("durable after the commit");
    assert_eq!(backlog_ids(&store, &user).await, ["m-kept"]);
    assert!(
        !store
            .contains(&user, &id("m-acked"))
            .await
            .expect("contains")
    );
    drop((store, db));

    let (db, store) = open_store(&dir, HOUR).await;
    assert_eq!(store.depth(&user).await.expect("depth"), 1);
    assert_eq!(backlog_ids(&store, &user).await, ["m-kept"]);
    assert_eq!(
        enqueue_committed(
            &db,
            &store,
            &[queued(&user, "m-acked"), queued(&user, "m-kept")]
        )
        .await,
        vec![EnqueueOutcome::Duplicate; 2],
        "both ids are remembered for dedupe"
    );
    close(dir, db, store);
}

#[tokio::test]
async fn a_rolled_back_transaction_drops_the_envelopes_it_held() {
    let (dir, user, db, store) = fresh("held-rollback", HOUR).await;
    let durable = stage_new(&store, &[queued(&user, "m-lost")]).await;
    // A write that fails in the same open transaction: the queue table has other types.
    const WRONG_TYPES: TableDefinition<u64, u64> = TableDefinition::new("queue");
    let failed = db
        .write_lazy(|txn| {
            txn.open_table(WRONG_TYPES)?;
            Ok(())
        })
        .await;
    assert!(failed.is_err(), "opening a table with other types fails");
    assert!(
        durable.await.is_err(),
        "the staged enqueue hears it will never be durable"
    );
    db.flush().await.expect("flush");
    assert_eq!(
        store.depth(&user).await.expect("depth"),
        0,
        "a later commit does not write what the roll-back dropped"
    );
    // Its dedupe entry went with it: the redelivered envelope is stored.
    assert_eq!(
        enqueue_committed(&db, &store, &[queued(&user, "m-lost")]).await,
        vec![EnqueueOutcome::Stored]
    );
    assert_eq!(backlog_ids(&store, &user).await, ["m-lost"]);
    close(dir, db, store);
}

#[tokio::test]
async fn a_purge_finds_expired_envelopes_still_held_for_the_commit() {
    let short = Retention {
        envelopes: Duration::from_millis(50),
        dedupe: Duration::from_secs(3600),
    };
    let (dir, user, db, store) = fresh("held-purge", short).await;
    let durable = stage_new(&store, &[queued(&user, "m-old")]).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(store.purge_expired().await.expect("purge"), 1);
    db.flush().await.expect("flush");
    durable.await.expect("durable");
    assert_eq!(store.depth(&user).await.expect("depth"), 0);
    assert_eq!(store.purge_expired().await.expect("purge again"), 0);
    close(dir, db, store);
}
