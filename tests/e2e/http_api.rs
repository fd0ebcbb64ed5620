//! The pull path, aliases, health, metrics, CORS and the WebSocket token carriers.

use std::time::Duration;

use anyhow::Result;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::harness::{Server, WsClient, backend_profile, envelope, token, user};

#[tokio::test]
async fn messages_can_be_pulled_and_acked_over_http() -> Result<()> {
    let server = Server::start(&[]).await?;
    let (alice, bob) = (user("alice"), user("bob"));
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(server.send_ok(&token(&alice), &envelope(&bob)).await?);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let page: Value = server
        .request(Method::GET, "/messages?limit=2")
        .bearer_auth(token(&bob))
        .send()
        .await?
        .json()
        .await?;
    let listed: Vec<_> = page["messages"].as_array().into_iter().flatten().collect();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["messageId"], ids[0].as_str());
    assert_eq!(listed[0]["envelope"]["recipientId"], bob.as_str());

    // Another user's ack touches nothing of bob's.
    let foreign = server
        .request(Method::POST, "/messages/ack")
        .bearer_auth(token(&alice))
        .json(&json!({"messageIds": ids}))
        .send()
        .await?;
    assert_eq!(foreign.status(), StatusCode::NO_CONTENT);
    assert_eq!(server.pending_ids(&token(&bob)).await?, ids);

    let acked = server
        .request(Method::POST, "/messages/ack")
        .bearer_auth(token(&bob))
        .json(&json!({"messageIds": [ids[0], ids[1]]}))
        .send()
        .await?;
    assert_eq!(acked.status(), StatusCode::NO_CONTENT);
    assert_eq!(server.pending_ids(&token(&bob)).await?, [ids[2].clone()]);
    Ok(())
}

#[tokio::test]
async fn every_route_is_also_under_api() -> Result<()> {
    let server = Server::start(&[]).await?;
    let (alice, bob) = (user("alice"), user("bob"));
    let sent = server
        .request(Method::POST, "/api/send")
        .bearer_auth(token(&alice))
        .json(&envelope(&bob))
        .send()
        .await?;
    assert_eq!(sent.status(), StatusCode::ACCEPTED);
    let id = sent.json::<Value>().await?["messageId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let listed: Value = server
        .request(Method::GET, "/api/messages")
        .bearer_auth(token(&bob))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(listed["messages"][0]["messageId"], id.as_str());
    let device = server
        .request(Method::POST, "/api/register-device")
        .bearer_auth(token(&bob))
        .json(&json!({"token": "t-1", "platform": "fcm"}))
        .send()
        .await?;
    assert_eq!(device.status(), StatusCode::NO_CONTENT);
    for path in ["/api/healthz", "/api/readyz", "/api/metrics"] {
        assert_eq!(
            server.request(Method::GET, path).send().await?.status(),
            StatusCode::OK,
            "{path}"
        );
    }
    let mut request = format!("{}/api/connect", server.ws_base).into_client_request()?;
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", token(&bob)))?,
    );
    let (stream, _) = tokio_tungstenite::connect_async(request).await?;
    let mut session = WsClient { stream };
    assert_eq!(session.envelope().await?.0, id);
    let acked = server
        .request(Method::POST, "/api/messages/ack")
        .bearer_auth(token(&bob))
        .json(&json!({"messageIds": [id]}))
        .send()
        .await?;
    assert_eq!(acked.status(), StatusCode::NO_CONTENT);
    // `POST /api/send` is counted under its own route, as the router labels it.
    let metrics = server.metrics_text().await?;
    let needle =
        r#"envelope_router_http_requests_total{route="/api/send",method="POST",status="202"} 1"#;
    assert!(metrics.contains(needle), "missing {needle} in:\n{metrics}");
    Ok(())
}

#[tokio::test]
async fn health_readiness_and_metrics() -> Result<()> {
    let server = Server::start(&[]).await?;
    let health: Value = server
        .request(Method::GET, "/healthz")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(health["status"], "ok");
    let ready = server.request(Method::GET, "/readyz").send().await?;
    assert_eq!(ready.status(), StatusCode::OK);
    let ready: Value = ready.json().await?;
    assert_eq!(ready["status"], "ok");
    for component in ["bus", "store", "presence", "delivery"] {
        assert_eq!(
            ready["components"][component]["status"], "ok",
            "{component}: {ready}"
        );
    }
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    server.send_ok(&token(&alice), &envelope(&bob)).await?;
    // One live delivery, acked: delivery lag and ack latency are observed.
    let mut session = server.connect(&token(&carol)).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let live = server.send_ok(&token(&alice), &envelope(&carol)).await?;
    assert_eq!(session.envelope().await?.0, live);
    session.ack(std::slice::from_ref(&live)).await?;
    // A method outside the standard nine is counted under one label value, whatever it is.
    for custom in ["PROPFIND", "X-ANYTHING"] {
        let answer = server
            .request(Method::from_bytes(custom.as_bytes())?, "/send")
            .send()
            .await?;
        assert_eq!(answer.status(), StatusCode::METHOD_NOT_ALLOWED, "{custom}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = server.request(Method::GET, "/metrics").send().await?;
    assert!(
        metrics.headers()["content-type"]
            .to_str()?
            .starts_with("text/plain")
    );
    let text = metrics.text().await?;
    // bob had one envelope queued while offline: his connect observes its age and the backlog.
    let mut bob_session = server.connect(&token(&bob)).await?;
    bob_session.envelope().await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = server.metrics_text().await?;
    for needle in [
        "envelope_router_backlog_oldest_age_seconds_count 1",
        "envelope_router_backlog_envelopes_count 2",
    ] {
        assert!(after.contains(needle), "missing {needle} in:\n{after}");
    }
    for needle in [
        r#"envelope_router_envelopes_total{stage="ingest",source="http",outcome="accepted"} 2"#,
        r#"envelope_router_envelopes_total{stage="processor",outcome="offline"} 1"#,
        r#"envelope_router_envelopes_total{stage="processor",outcome="delivered"} 1"#,
        r#"envelope_router_bus_total{op="ack"} 2"#,
        r#"envelope_router_http_requests_total{route="/send",method="POST",status="202"} 2"#,
        r#"envelope_router_http_requests_total{route="/send",method="OTHER",status="405"} 2"#,
        r#"envelope_router_presence_lookups_total{outcome="offline"} 1"#,
        r#"envelope_router_presence_lookups_total{outcome="online"} 1"#,
        r#"envelope_router_live_sessions{protocol="websocket"} 1"#,
        "envelope_router_routing_lag_seconds_bucket",
        // Each send waited for its 202 before the next: two batches of one.
        "envelope_router_processor_batch_envelopes_count 2",
        "envelope_router_processor_batch_envelopes_sum 2",
        "envelope_router_delivery_lag_seconds_count 1",
        "envelope_router_ack_latency_seconds_count 1",
        "envelope_router_acks_total 1",
        "envelope_router_backlog_envelopes_count 1",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
    for custom in ["PROPFIND", "X-ANYTHING"] {
        assert!(
            !text.contains(custom),
            "{custom} became a label value:\n{text}"
        );
    }
    if backend_profile()?.is_empty() {
        // The embedded store's dedupe window holds both ids (one acked, one queued).
        let needle = "envelope_router_embedded_dedupe_entries 2";
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
    Ok(())
}

#[tokio::test]
async fn cors_preflight_answers_allowed_origins_only() -> Result<()> {
    let server = Server::start(&[(
        "CORS_ALLOWED_ORIGINS",
        "https://app.example,https://web.example",
    )])
    .await?;
    let preflight = |origin: &'static str| {
        server
            .request(Method::OPTIONS, "/send")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let allowed = preflight("https://web.example").await?;
    assert!(allowed.status().is_success());
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://web.example"
    );
    let methods = allowed.headers()["access-control-allow-methods"]
        .to_str()?
        .to_owned();
    assert!(methods.contains("POST"), "{methods}");
    let denied = preflight("https://evil.example").await?;
    assert!(
        denied
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    // The send itself carries the CORS headers too (with an allow-list it goes through the
    // router and its CORS layer, not the direct path).
    let sent = server
        .request(Method::POST, "/send")
        .header("origin", "https://app.example")
        .bearer_auth(token(&user("alice")))
        .json(&envelope(&user("bob")))
        .send()
        .await?;
    assert_eq!(sent.status(), StatusCode::ACCEPTED);
    assert_eq!(
        sent.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    Ok(())
}

#[tokio::test]
async fn no_cors_headers_without_an_allow_list() -> Result<()> {
    let server = Server::start(&[]).await?;
    let response = server
        .request(Method::GET, "/healthz")
        .header("origin", "https://app.example")
        .send()
        .await?;
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    Ok(())
}

#[tokio::test]
async fn websocket_token_from_subprotocol_is_echoed_and_query_token_works() -> Result<()> {
    let server = Server::start(&[]).await?;
    let (alice, bob) = (user("alice"), user("bob"));
    let bob_token = token(&bob);
    let mut request = format!("{}/connect", server.ws_base).into_client_request()?;
    request
        .headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_str(&bob_token)?);
    let (stream, response) = tokio_tungstenite::connect_async(request).await?;
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        bob_token.as_str()
    );
    let mut by_protocol = WsClient { stream };

    let (stream, _) = tokio_tungstenite::connect_async(format!(
        "{}/connect?access_token={bob_token}",
        server.ws_base
    ))
    .await?;
    let mut by_query = WsClient { stream };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let id = server.send_ok(&token(&alice), &envelope(&bob)).await?;
    assert_eq!(by_protocol.envelope().await?.0, id);
    assert_eq!(by_query.envelope().await?.0, id);
    server.assert_not_logged(&[&bob_token]);
    Ok(())
}
