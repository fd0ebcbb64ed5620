//! Device registration and content-free wake-ups (PUSH=log), coalesced per device.

use std::time::Duration;

use anyhow::Result;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::{CIPHERTEXT_B64, Server, envelope, token, user};

const WAKE: &str = "wake-up push";

async fn register(
    server: &Server,
    who: &str,
    device: &str,
    platform: &str,
    method: Method,
) -> Result<StatusCode> {
    Ok(server
        .request(method, "/register-device")
        .bearer_auth(token(who))
        .json(&json!({"token": device, "platform": platform}))
        .send()
        .await?
        .status())
}

#[tokio::test]
async fn register_and_unregister_are_idempotent() -> Result<()> {
    let server = Server::start(&[]).await?;
    let bob = user("bob");
    for _ in 0..2 {
        assert_eq!(
            register(&server, &bob, "fcm-token-1", "fcm", Method::POST).await?,
            StatusCode::NO_CONTENT
        );
    }
    for _ in 0..2 {
        assert_eq!(
            register(&server, &bob, "fcm-token-1", "fcm", Method::DELETE).await?,
            StatusCode::NO_CONTENT
        );
    }
    assert_eq!(
        register(&server, &bob, "apns-token-1", "apns", Method::POST).await?,
        StatusCode::NO_CONTENT
    );
    Ok(())
}

#[tokio::test]
async fn offline_recipient_gets_one_coalesced_content_free_wake_up() -> Result<()> {
    let server = Server::start(&[("WAKEUP_WINDOW", "2s")]).await?;
    let (alice, bob) = (user("alice"), user("bob"));
    let push_token = "fcm-device-token-secret-value";
    register(&server, &bob, push_token, "fcm", Method::POST).await?;

    server.send_ok(&token(&alice), &envelope(&bob)).await?;
    server
        .wait_for_log(&[WAKE, &bob], 1, Duration::from_secs(5))
        .await?;
    for _ in 0..3 {
        server.send_ok(&token(&alice), &envelope(&bob)).await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        server.log_lines_with(&[WAKE, &bob]).len(),
        1,
        "wake-ups within the window are coalesced"
    );

    // After the window, the next envelope wakes the device again.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    server.send_ok(&token(&alice), &envelope(&bob)).await?;
    server
        .wait_for_log(&[WAKE, &bob], 2, Duration::from_secs(5))
        .await?;

    // The wake-up carries nothing of the envelope; logs carry neither payload nor push token.
    let line = &server.log_lines_with(&[WAKE, &bob])[0];
    assert!(
        !line.contains(&alice),
        "wake-up must not name the sender: {line}"
    );
    server.assert_not_logged(&[CIPHERTEXT_B64, push_token]);
    Ok(())
}

#[tokio::test]
async fn unregistered_device_is_not_woken_and_others_cannot_unregister_it() -> Result<()> {
    let server = Server::start(&[("WAKEUP_WINDOW", "100ms")]).await?;
    let (alice, bob, mallory) = (user("alice"), user("bob"), user("mallory"));
    register(&server, &bob, "bob-phone", "apns", Method::POST).await?;
    // Another user deleting bob's token: 204 (idempotent) but bob's registration stays.
    assert_eq!(
        register(&server, &mallory, "bob-phone", "apns", Method::DELETE).await?,
        StatusCode::NO_CONTENT
    );
    server.send_ok(&token(&alice), &envelope(&bob)).await?;
    server
        .wait_for_log(&[WAKE, &bob], 1, Duration::from_secs(5))
        .await?;

    register(&server, &bob, "bob-phone", "apns", Method::DELETE).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.send_ok(&token(&alice), &envelope(&bob)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        server.log_lines_with(&[WAKE, &bob]).len(),
        1,
        "no wake-up after unregister"
    );
    Ok(())
}

#[tokio::test]
async fn online_recipient_is_not_woken_until_an_envelope_stays_unacked() -> Result<()> {
    let server = Server::start(&[("ACK_TIMEOUT", "1s"), ("WAKEUP_WINDOW", "100ms")]).await?;
    let (alice, bob) = (user("alice"), user("bob"));
    register(&server, &bob, "bob-tablet", "fcm", Method::POST).await?;
    let mut session = server.connect(&token(&bob)).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let acked = server.send_ok(&token(&alice), &envelope(&bob)).await?;
    assert_eq!(session.envelope().await?.0, acked);
    session.ack(&[acked]).await?;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert!(
        server.log_lines_with(&[WAKE, &bob]).is_empty(),
        "acked in time: no wake-up"
    );

    let unacked = server.send_ok(&token(&alice), &envelope(&bob)).await?;
    assert_eq!(session.envelope().await?.0, unacked);
    server
        .wait_for_log(&[WAKE, &bob], 1, Duration::from_secs(5))
        .await?;
    assert!(
        !server
            .log_lines_with(&["unacked past the ack timeout", &bob])
            .is_empty()
    );
    Ok(())
}

#[tokio::test]
async fn last_session_closing_with_queued_envelopes_wakes_the_recipient() -> Result<()> {
    let server = Server::start(&[("WAKEUP_WINDOW", "100ms")]).await?;
    let (alice, bob) = (user("alice"), user("bob"));
    register(&server, &bob, "bob-watch", "apns", Method::POST).await?;
    let mut first = server.connect(&token(&bob)).await?;
    let second = server.connect(&token(&bob)).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let id = server.send_ok(&token(&alice), &envelope(&bob)).await?;
    assert_eq!(first.envelope().await?.0, id);
    second.close().await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        server.log_lines_with(&[WAKE, &bob]).is_empty(),
        "another session is still live"
    );
    first.close().await?;
    server
        .wait_for_log(&["last session closed", &bob], 1, Duration::from_secs(5))
        .await?;
    server
        .wait_for_log(&[WAKE, &bob], 1, Duration::from_secs(5))
        .await?;
    Ok(())
}
