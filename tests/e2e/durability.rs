//! Nothing accepted is lost: restarts and crashes between 202 and delivery.

use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use crate::harness::{CIPHERTEXT_B64, Server, WsClient, envelope, token, unique, user};

#[tokio::test]
async fn envelope_survives_a_restart_between_send_and_connect() -> Result<()> {
    let server = Server::start(&[]).await?;
    let (alice, bob) = (user("alice"), user("bob"));
    let id = server.send_ok(&token(&alice), &envelope(&bob)).await?;
    let server = server.stop().await?.restart().await?;
    let mut session = server.connect(&token(&bob)).await?;
    assert_eq!(session.envelope().await?.0, id);
    Ok(())
}

/// The ids of the next `count` envelopes `session` receives, in order, acking them
/// `per_ack` at a time.
async fn receive_acking(
    session: &mut WsClient,
    count: usize,
    per_ack: usize,
) -> Result<Vec<String>> {
    let mut received = Vec::with_capacity(count);
    while received.len() < count {
        received.push(session.envelope().await?.0);
        if received.len() % per_ack == 0 {
            session.ack(&received[received.len() - per_ack..]).await?;
        }
    }
    Ok(received)
}

#[tokio::test]
async fn kill_9_right_after_202_loses_nothing() -> Result<()> {
    let server = Server::start(&[
        ("RATE_LIMIT_SENDER_BURST", "1000"),
        ("RATE_LIMIT_PAIR_BURST", "1000"),
    ])
    .await?;
    let (alice, bob) = (user("alice"), user("bob"));
    let mut accepted = Vec::new();
    for _ in 0..60 {
        accepted.push(server.send_ok(&token(&alice), &envelope(&bob)).await?);
    }
    // No pause: some envelopes are still on the bus, not yet routed, when the process dies.
    let server = server.kill9().await?.restart().await?;
    let mut session = server.connect(&token(&bob)).await?;
    let mut received = receive_acking(&mut session, accepted.len(), 20).await?;
    received.sort();
    received.dedup();
    accepted.sort();
    assert_eq!(
        received, accepted,
        "every accepted envelope arrives after the crash"
    );
    Ok(())
}

/// With small bus log segments, fully acked ones are reused as later segments: `kill -9`
/// after many of them still loses nothing, brings back no envelope twice, and the restart
/// reads every reused file to a clean end (no torn-record warning).
#[tokio::test]
async fn kill_9_over_reused_bus_segments_loses_nothing() -> Result<()> {
    let server = Server::start(&[
        ("BUS_SEGMENT_BYTES", "16384"),
        ("RATE_LIMIT_SENDER_BURST", "1000"),
        ("RATE_LIMIT_PAIR_BURST", "1000"),
    ])
    .await?;
    let (alice, bob) = (user("alice"), user("bob"));
    let mut accepted = Vec::new();
    // ~1.6 KB per envelope on the log: some twenty segments, most of them reused spares.
    for _ in 0..200 {
        accepted.push(server.send_ok(&token(&alice), &envelope(&bob)).await?);
    }
    let bus_dir = server.data_dir.join("bus");
    let spares = std::fs::read_dir(&bus_dir)?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".spare"))
        .count();
    assert!(spares > 0, "acked segments are kept to be reused");
    let server = server.kill9().await?.restart().await?;
    let mut session = server.connect(&token(&bob)).await?;
    let received = receive_acking(&mut session, accepted.len(), 50).await?;
    session.expect_silence(Duration::from_millis(500)).await?;
    let mut unique = received.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), received.len(), "no envelope twice");
    accepted.sort();
    assert_eq!(unique, accepted, "every accepted envelope arrives");
    assert!(
        server.log_lines_with(&["torn"]).is_empty(),
        "{:?}",
        server.log_lines_with(&["torn"])
    );
    Ok(())
}

#[tokio::test]
async fn envelopes_waiting_on_the_bus_survive_kill_9() -> Result<()> {
    // An ingest-only process accepts envelopes onto the durable local bus without routing them.
    let server = Server::start(&[
        ("ROLES", "api"),
        ("RATE_LIMIT_SENDER_BURST", "1000"),
        ("RATE_LIMIT_PAIR_BURST", "1000"),
    ])
    .await?;
    let (alice, bob) = (user("alice"), user("bob"));
    let mut accepted = Vec::new();
    for _ in 0..25 {
        accepted.push(server.send_ok(&token(&alice), &envelope(&bob)).await?);
    }
    assert!(
        server.pending_ids(&token(&bob)).await?.is_empty(),
        "not routed yet: still on the bus"
    );
    let server = {
        // The same settings (and Redis prefix) without ROLES=api: a routing process.
        let routing: Vec<_> = server
            .env()
            .into_iter()
            .filter(|(k, _)| k != "ROLES")
            .collect();
        server.kill9().await?.restart_with(routing).await?
    };
    server
        .wait_for_log(
            &["redelivering bus messages", "count=25"],
            1,
            Duration::from_secs(5),
        )
        .await?;
    let mut session = server.connect(&token(&bob)).await?;
    let mut received = Vec::new();
    for _ in 0..accepted.len() {
        received.push(session.envelope().await?.0);
    }
    assert_eq!(received, accepted, "every envelope, in order");
    Ok(())
}

#[tokio::test]
async fn acked_envelopes_stay_deleted_across_restarts() -> Result<()> {
    let server = Server::start(&[]).await?;
    let (alice, bob) = (user("alice"), user("bob"));
    let id = server.send_ok(&token(&alice), &envelope(&bob)).await?;
    let mut session = server.connect(&token(&bob)).await?;
    assert_eq!(session.envelope().await?.0, id);
    session.ack(&[id]).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let server = server.stop().await?.restart().await?;
    let mut again = server.connect(&token(&bob)).await?;
    again.expect_silence(Duration::from_millis(400)).await?;
    Ok(())
}

#[tokio::test]
async fn expired_envelopes_are_not_delivered() -> Result<()> {
    let server = Server::start(&[("RETENTION", "1s"), ("PURGE_INTERVAL", "500ms")]).await?;
    let (alice, bob) = (user("alice"), user("bob"));
    server.send_ok(&token(&alice), &envelope(&bob)).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(server.pending_ids(&token(&bob)).await?.is_empty());
    let mut session = server.connect(&token(&bob)).await?;
    session.expect_silence(Duration::from_millis(300)).await?;
    Ok(())
}

#[tokio::test]
async fn bus_messages_an_older_version_left_pending_are_delivered_after_an_upgrade() -> Result<()> {
    let server = Server::start(&[]).await?.stop().await?;
    let bob = user("bob");
    let id = unique("legacy");
    // What a version before the bus log kept: a JSON row of `bus_pending` in router.redb.
    let data = json!({"messageId": id, "recipientId": bob, "encryptedData": CIPHERTEXT_B64});
    let row = json!({"attributes": {"recipient": bob, "messageId": id}, "data": data.to_string()});
    let path = server.data_dir.join("router.redb");
    tokio::task::spawn_blocking(move || -> Result<()> {
        const PENDING: redb::TableDefinition<u64, &[u8]> =
            redb::TableDefinition::new("bus_pending");
        let db = redb::Database::create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(PENDING)?
            .insert(1, row.to_string().as_bytes())?;
        txn.commit()?;
        Ok(())
    })
    .await??;
    let server = server.restart().await?;
    let mut session = server.connect(&token(&bob)).await?;
    assert_eq!(
        session.envelope().await?.0,
        id,
        "the pending envelope arrives"
    );
    Ok(())
}

#[tokio::test]
async fn kill_9_after_delivery_but_before_the_queue_commit_redelivers() -> Result<()> {
    // A long commit interval keeps the queue write uncommitted while the envelope is delivered.
    let server = Server::start(&[("EMBEDDED_COMMIT_INTERVAL", "1h")]).await?;
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    // Both connect first: opening a session reads the store, and reads commit.
    let mut session = server.connect(&token(&bob)).await?;
    let mut carols = server.connect(&token(&carol)).await?;
    let id = server.send_ok(&token(&alice), &envelope(&bob)).await?;
    assert_eq!(
        session.envelope().await?.0,
        id,
        "delivered before its commit"
    );
    // Another accepted envelope makes the bus log write (and fsync) whatever acks it holds, so
    // an ack of bob's bus message sent before the queue commit would now be on disk. Carol is
    // online: an offline recipient's wake-up would read device tokens.
    let other = server.send_ok(&token(&alice), &envelope(&carol)).await?;
    assert_eq!(carols.envelope().await?.0, other);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let server = server.kill9().await?.restart().await?;
    let mut again = server.connect(&token(&bob)).await?;
    assert_eq!(
        again.envelope().await?.0,
        id,
        "the bus kept the message its queue write had not made durable"
    );
    Ok(())
}
