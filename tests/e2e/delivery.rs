//! Live delivery, backlog, acks, ordering, dedupe, ephemeral envelopes.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Result;
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use serde_json::json;

use reqwest::{Method, StatusCode};

use crate::harness::{CIPHERTEXT_B64, Next, Server, backend_profile, envelope, token, user};

#[tokio::test]
async fn online_envelope_reaches_every_session_of_the_recipient() -> Result<()> {
    let server = Server::start(&[]).await?;
    let (alice, bob) = (user("alice"), user("bob"));
    let mut phone = server.connect(&token(&bob)).await?;
    let mut laptop = server.connect(&token(&bob)).await?;
    let mut bystander = server.connect(&token(&user("carol"))).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut body = envelope(&bob);
    body["senderId"] = json!(alice);
    body["encryptedSymmetricKey"] = json!("a2V5");
    let id = server.send_ok(&token(&alice), &body).await?;
    for session in [&mut phone, &mut laptop] {
        let (got, env) = session.envelope().await?;
        assert_eq!(got, id);
        assert_eq!(env["recipientId"], bob.as_str());
        assert_eq!(env["senderId"], alice.as_str());
        assert_eq!(env["encryptedData"], CIPHERTEXT_B64);
        assert_eq!(env["encryptedSymmetricKey"], "a2V5");
    }
    bystander.expect_silence(Duration::from_millis(300)).await?;
    phone.ack(std::slice::from_ref(&id)).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        server.pending_ids(&token(&bob)).await?.is_empty(),
        "acked envelope must be deleted"
    );
    server.assert_not_logged(&[CIPHERTEXT_B64, &token(&alice)]);
    Ok(())
}

#[tokio::test]
async fn offline_envelope_is_stored_sent_on_connect_and_gone_after_ack() -> Result<()> {
    let server = Server::start(&[]).await?;
    let (alice, bob) = (user("alice"), user("bob"));
    let first = server.send_ok(&token(&alice), &envelope(&bob)).await?;
    let second = server.send_ok(&token(&alice), &envelope(&bob)).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        server.pending_ids(&token(&bob)).await?,
        [first.clone(), second.clone()]
    );

    let mut session = server.connect(&token(&bob)).await?;
    assert_eq!(session.envelope().await?.0, first);
    assert_eq!(session.envelope().await?.0, second);
    session.ack(&[first.clone(), second.clone()]).await?;
    session.expect_silence(Duration::from_millis(300)).await?;
    session.close().await?;
    assert!(server.pending_ids(&token(&bob)).await?.is_empty());

    let mut again = server.connect(&token(&bob)).await?;
    again.expect_silence(Duration::from_millis(400)).await?;
    Ok(())
}

#[tokio::test]
async fn unacked_envelope_comes_again_on_reconnect() -> Result<()> {
    let server = Server::start(&[]).await?;
    let (alice, bob) = (user("alice"), user("bob"));
    let mut session = server.connect(&token(&bob)).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let acked = server.send_ok(&token(&alice), &envelope(&bob)).await?;
    let unacked = server.send_ok(&token(&alice), &envelope(&bob)).await?;
    assert_eq!(session.envelope().await?.0, acked);
    assert_eq!(session.envelope().await?.0, unacked);
    session.ack(std::slice::from_ref(&acked)).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    session.close().await?;

    let mut reconnected = server.connect(&token(&bob)).await?;
    assert_eq!(reconnected.envelope().await?.0, unacked);
    reconnected
        .expect_silence(Duration::from_millis(300))
        .await?;
    Ok(())
}

/// A processor worker goes on routing while what it stored waits for the queue commit: it
/// bounds the messages waiting, not the batches, so many one-envelope batches (a recipient
/// getting envelopes one by one) do not stop it until the commit.
#[tokio::test]
async fn a_worker_keeps_routing_while_many_small_batches_wait_for_their_commit() -> Result<()> {
    // One worker, and no queue commit during the test (health checks read the store, and a
    // read commits first): every envelope stays unsettled.
    let server = Server::start(&[
        ("EMBEDDED_COMMIT_INTERVAL", "1h"),
        ("HEALTH_INTERVAL", "1h"),
        ("PROCESSOR_CONCURRENCY", "1"),
    ])
    .await?;
    let (alice, bob) = (user("alice"), user("bob"));
    // Connect first: opening a session reads the store, and reads commit.
    let mut session = server.connect(&token(&bob)).await?;
    let mut sent = Vec::new();
    let mut received = Vec::new();
    for _ in 0..20 {
        sent.push(server.send_ok(&token(&alice), &envelope(&bob)).await?);
        // Each is routed alone: the next is sent only once this one is delivered.
        received.push(session.envelope().await?.0);
    }
    assert_eq!(received, sent);
    Ok(())
}

/// A single worker may hold as many routed envelopes waiting for their commit as all the
/// default workers together: well over one shard's share (512) is delivered before any commit.
#[tokio::test]
async fn a_single_worker_routes_beyond_one_shards_share_before_the_commit() -> Result<()> {
    const COUNT: usize = 600;
    let server = Server::start(&[
        ("EMBEDDED_COMMIT_INTERVAL", "1h"),
        ("HEALTH_INTERVAL", "1h"),
        ("PROCESSOR_CONCURRENCY", "1"),
        ("RATE_LIMIT_SENDER_BURST", "10000"),
        ("RATE_LIMIT_PAIR_BURST", "10000"),
    ])
    .await?;
    let (alice, bob) = (user("alice"), user("bob"));
    let mut session = server.connect(&token(&bob)).await?;
    let (alice_token, body) = (token(&alice), envelope(&bob));
    let sending = futures_util::stream::iter(0..COUNT)
        .map(|_| server.send_ok(&alice_token, &body))
        .buffer_unordered(16)
        .try_collect::<HashSet<String>>();
    let receiving = async {
        let mut received = HashSet::new();
        while received.len() < COUNT {
            received.insert(session.envelope().await?.0);
        }
        anyhow::Ok(received)
    };
    let (sent, received) = tokio::try_join!(sending, receiving)?;
    assert_eq!(sent.len(), COUNT);
    assert_eq!(received, sent);
    Ok(())
}

#[tokio::test]
async fn same_message_id_twice_is_delivered_once() -> Result<()> {
    let server = Server::start(&[]).await?;
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let mut body = envelope(&bob);
    body["messageId"] = json!("client-chosen-id.1");
    // Online recipient.
    let mut session = server.connect(&token(&bob)).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        server.send_ok(&token(&alice), &body).await?,
        "client-chosen-id.1"
    );
    assert_eq!(
        server.send_ok(&token(&alice), &body).await?,
        "client-chosen-id.1"
    );
    assert_eq!(session.envelope().await?.0, "client-chosen-id.1");
    session.expect_silence(Duration::from_millis(400)).await?;
    // Even after the ack, a resend is not delivered again.
    session.ack(&["client-chosen-id.1".to_owned()]).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.send_ok(&token(&alice), &body).await?;
    session.expect_silence(Duration::from_millis(400)).await?;

    // Offline recipient: stored once.
    let mut offline = envelope(&carol);
    offline["messageId"] = json!("dup-offline");
    server.send_ok(&token(&alice), &offline).await?;
    server.send_ok(&token(&alice), &offline).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.pending_ids(&token(&carol)).await?, ["dup-offline"]);
    Ok(())
}

#[tokio::test]
async fn a_resend_after_a_restart_is_still_a_duplicate_and_a_damaged_dedupe_key_stops_the_start()
-> Result<()> {
    let server = Server::start(&[]).await?;
    let (alice, carol) = (user("alice"), user("carol"));
    let mut body = envelope(&carol);
    body["messageId"] = json!("dedupe-across-restarts");
    server.send_ok(&token(&alice), &body).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        server.pending_ids(&token(&carol)).await?,
        ["dedupe-across-restarts"]
    );
    let acked = server
        .request(Method::POST, "/messages/ack")
        .bearer_auth(token(&carol))
        .json(&json!({"messageIds": ["dedupe-across-restarts"]}))
        .send()
        .await?;
    assert_eq!(acked.status(), StatusCode::NO_CONTENT);
    // The window outlives the process: the resend is accepted (202) but not queued again.
    let server = server.stop().await?.restart().await?;
    server.send_ok(&token(&alice), &body).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server.pending_ids(&token(&carol)).await?,
        Vec::<String>::new()
    );
    if !backend_profile()?.is_empty() {
        return Ok(()); // the rest is about the embedded store's files
    }
    // A key that is not the one the entries were hashed with would forget them: refuse it.
    let server = server.stop().await?;
    let data_dir = server.data_dir.clone();
    std::fs::write(data_dir.join("dedupe").join("key"), b"short")?;
    let restarted = server.restart().await;
    let _ = std::fs::remove_dir_all(&data_dir);
    let Err(err) = restarted else {
        anyhow::bail!("the server started with a damaged dedupe key");
    };
    let message = format!("{err:#}");
    assert!(
        message.contains("dedupe/key is not a 32-byte key"),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn ephemeral_envelopes_reach_live_sessions_only_and_are_never_stored() -> Result<()> {
    let server = Server::start(&[]).await?;
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let mut offline = envelope(&bob);
    offline["isEphemeral"] = json!(true);
    server.send_ok(&token(&alice), &offline).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        server.pending_ids(&token(&bob)).await?.is_empty(),
        "ephemeral must not be stored"
    );
    let mut late = server.connect(&token(&bob)).await?;
    late.expect_silence(Duration::from_millis(300)).await?;

    let mut live = server.connect(&token(&carol)).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut online = envelope(&carol);
    online["isEphemeral"] = json!(true);
    let id = server.send_ok(&token(&alice), &online).await?;
    let (got, env) = live.envelope().await?;
    assert_eq!(got, id);
    assert_eq!(env["isEphemeral"], true);
    assert!(
        server.pending_ids(&token(&carol)).await?.is_empty(),
        "ephemeral must not be queued"
    );
    Ok(())
}

#[tokio::test]
async fn backlog_serves_the_express_lane_first_then_oldest_first() -> Result<()> {
    let server = Server::start(&[]).await?;
    let (alice, bob) = (user("alice"), user("bob"));
    let mut ids = Vec::new();
    for priority in [0, 3, 9, 1, 5] {
        let mut body = envelope(&bob);
        body["priority"] = json!(priority);
        ids.push(server.send_ok(&token(&alice), &body).await?);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let expected = [
        ids[2].clone(),
        ids[4].clone(),
        ids[0].clone(),
        ids[1].clone(),
        ids[3].clone(),
    ];
    assert_eq!(server.pending_ids(&token(&bob)).await?, expected);
    let mut session = server.connect(&token(&bob)).await?;
    for want in &expected {
        assert_eq!(&session.envelope().await?.0, want);
    }
    Ok(())
}

#[tokio::test]
async fn live_envelopes_follow_a_large_backlog_without_duplicates() -> Result<()> {
    let server = Server::start(&[
        ("RATE_LIMIT_SENDER_BURST", "10000"),
        ("RATE_LIMIT_PAIR_BURST", "10000"),
    ])
    .await?;
    let (alice, bob) = (user("alice"), user("bob"));
    let mut sent = Vec::new();
    for _ in 0..450 {
        sent.push(server.send_ok(&token(&alice), &envelope(&bob)).await?);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut session = server.connect(&token(&bob)).await?;
    // More envelopes arrive while the backlog (several pages) is being written.
    let sender = {
        let alice_token = token(&alice);
        let body = envelope(&bob);
        let base = server.base.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut ids = Vec::new();
            for _ in 0..50 {
                let response = client
                    .post(format!("{base}/send"))
                    .bearer_auth(&alice_token)
                    .json(&body)
                    .send()
                    .await?;
                let value: serde_json::Value = response.json().await?;
                ids.push(value["messageId"].as_str().unwrap_or_default().to_owned());
            }
            anyhow::Ok(ids)
        })
    };
    let mut received = Vec::new();
    while received.len() < 500 {
        match session.next(Duration::from_secs(10)).await? {
            Next::Json(frame) => {
                received.push(frame["messageId"].as_str().unwrap_or_default().to_owned())
            }
            other => anyhow::bail!("after {} envelopes: {other:?}", received.len()),
        }
    }
    sent.extend(sender.await??);
    session.expect_silence(Duration::from_millis(500)).await?;
    assert_eq!(&received[..450], &sent[..450], "backlog in order first");
    let mut all = received.clone();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 500, "no duplicates, nothing missing");
    let mut want = sent.clone();
    want.sort();
    assert_eq!(all, want);
    Ok(())
}

/// Live envelopes that pile up while a session's client is not reading are written to it in
/// bursts (one flush each): they still arrive in accepted order, once each, and their acks
/// delete them all.
#[tokio::test]
async fn a_burst_of_live_envelopes_arrives_in_order_and_acks_delete_it() -> Result<()> {
    const COUNT: usize = 200;
    let server = Server::start(&[
        ("RATE_LIMIT_SENDER_BURST", "10000"),
        ("RATE_LIMIT_PAIR_BURST", "10000"),
    ])
    .await?;
    let (alice, bob) = (user("alice"), user("bob"));
    let mut session = server.connect(&token(&bob)).await?;
    let mut sent = Vec::new();
    for _ in 0..COUNT {
        sent.push(server.send_ok(&token(&alice), &envelope(&bob)).await?);
    }
    let mut received = Vec::new();
    while received.len() < COUNT {
        received.push(session.envelope().await?.0);
    }
    assert_eq!(received, sent);
    session.expect_silence(Duration::from_millis(300)).await?;
    session.ack(&received).await?;
    session.expect_silence(Duration::from_millis(300)).await?;
    session.close().await?;
    assert!(server.pending_ids(&token(&bob)).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn bad_frames_get_an_error_frame_and_the_session_lives_on() -> Result<()> {
    let server = Server::start(&[]).await?;
    let (alice, bob) = (user("alice"), user("bob"));
    let mut session = server.connect(&token(&bob)).await?;
    for bad in [
        "not json",
        r#"{"type":"dance"}"#,
        r#"{"type":"ack"}"#,
        r#"{"type":"ack","messageIds":["bad id"]}"#,
    ] {
        session.send_text(bad).await?;
        let frame = session.json().await?;
        assert_eq!(frame["type"], "error", "{bad}: {frame}");
        assert!(frame["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    session
        .stream
        .send(tokio_tungstenite::tungstenite::Message::Binary(
            vec![1, 2, 3].into(),
        ))
        .await?;
    assert_eq!(session.json().await?["type"], "error");
    let id = server.send_ok(&token(&alice), &envelope(&bob)).await?;
    assert_eq!(session.envelope().await?.0, id);
    Ok(())
}

#[tokio::test]
async fn a_slow_session_is_closed_and_the_store_keeps_its_envelopes() -> Result<()> {
    let server = Server::start(&[
        ("SESSION_QUEUE", "4"),
        ("MAX_BODY_BYTES", "2000000"),
        ("WRITE_TIMEOUT", "5s"),
        ("RATE_LIMIT_SENDER_BURST", "1000"),
        ("RATE_LIMIT_PAIR_BURST", "1000"),
    ])
    .await?;
    let (alice, bob) = (user("alice"), user("bob"));
    // A client that never reads: once the socket buffers are full, its queue overflows.
    let stalled = server.connect(&token(&bob)).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let big = "QUFB".repeat(200_000); // 800 KB of base64
    let mut sent = Vec::new();
    for _ in 0..40 {
        let body = json!({"recipientId": bob, "encryptedData": big});
        sent.push(server.send_ok(&token(&alice), &body).await?);
        if !server
            .log_lines_with(&["session queue full", &bob])
            .is_empty()
        {
            break;
        }
    }
    server
        .wait_for_log(&["session queue full", &bob], 1, Duration::from_secs(10))
        .await?;
    drop(stalled);
    // Everything accepted is still queued, in order, and reaches the next session.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.pending_ids(&token(&bob)).await?, sent);
    let mut fresh = server.connect(&token(&bob)).await?;
    for id in &sent {
        assert_eq!(&fresh.envelope().await?.0, id);
    }
    Ok(())
}

#[tokio::test]
async fn a_session_that_stops_answering_pings_is_dropped() -> Result<()> {
    let server = Server::start(&[("PING_INTERVAL", "300ms")]).await?;
    let bob = user("bob");
    // Never polled: the client answers no ping.
    let _silent = server.connect(&token(&bob)).await?;
    let mut alive = server.connect(&token(&user("carol"))).await?;
    // A client that keeps reading answers pings and stays, for many ping intervals.
    let closed_by_timeout = ["websocket session closed", bob.as_str(), "Timeout"];
    let (timed_out, stayed) = tokio::join!(
        server.wait_for_log(&closed_by_timeout, 1, Duration::from_secs(5)),
        alive.expect_silence(Duration::from_secs(2)),
    );
    timed_out?;
    stayed?;
    assert_eq!(
        server.log_lines_with(&["Timeout"]).len(),
        1,
        "only the silent session timed out"
    );
    Ok(())
}
