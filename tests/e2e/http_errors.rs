//! Every 4xx of every endpoint, with its JSON error body; nothing is stored on a rejection.

use std::time::Duration;

use anyhow::Result;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::harness::{SECRET, Server, envelope, token, token_with, user};

/// Asserts `response` is `status` with a JSON `{"error": …}` containing `needle`.
async fn expect_error(response: reqwest::Response, status: StatusCode, needle: &str) -> Result<()> {
    let got = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_owned());
    let body: Value = response.json().await?;
    assert_eq!(got, status, "{body}");
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let message = body["error"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "expected {needle:?} in {body}");
    Ok(())
}

/// Sends `request` and checks the error answer, as [`expect_error`] does.
async fn expect_rejected(
    request: reqwest::RequestBuilder,
    status: StatusCode,
    needle: &str,
) -> Result<()> {
    expect_error(request.send().await?, status, needle).await
}

fn raw(
    server: &Server,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::RequestBuilder {
    let builder = server
        .request(method, path)
        .header("content-type", content_type)
        .body(body);
    match bearer {
        Some(bearer) => builder.bearer_auth(bearer),
        None => builder,
    }
}

#[tokio::test]
async fn send_rejects_bad_input_with_the_right_status() -> Result<()> {
    let server = Server::start(&[("MAX_BODY_BYTES", "2048")]).await?;
    let (alice, bob) = (user("alice"), user("bob"));
    let alice_token = token(&alice);
    let json_type = "application/json";
    let cases: Vec<(String, &str)> = vec![
        ("{".into(), "malformed JSON"),
        ("[1,2]".into(), "JSON object"),
        (
            r#"{"recipientId":"b","encryptedData":"aGk="} trailing"#.into(),
            "malformed JSON",
        ),
        (json!({"encryptedData": "aGk="}).to_string(), "recipientId"),
        (json!({"recipientId": bob}).to_string(), "encryptedData"),
        (
            json!({"recipientId": bob, "encryptedData": "not base64!"}).to_string(),
            "encryptedData",
        ),
        (
            json!({"recipientId": bob, "encryptedData": "aGk=", "signature": "%%"}).to_string(),
            "signature",
        ),
        (
            json!({"recipientId": "urn:x:y", "encryptedData": "aGk="}).to_string(),
            "URN",
        ),
        (
            json!({"recipientId": "urn:sm:user:a/b", "encryptedData": "aGk="}).to_string(),
            "URN",
        ),
        (
            json!({"recipientId": bob, "encryptedData": "aGk=", "priority": 10}).to_string(),
            "priority",
        ),
        (
            json!({"recipientId": bob, "encryptedData": "aGk=", "messageId": "has space"})
                .to_string(),
            "messageId",
        ),
        (
            json!({"recipientId": bob, "encryptedData": "aGk=", "isEphemeral": "yes"}).to_string(),
            "isEphemeral",
        ),
        (
            json!({"recipientId": bob, "encryptedData": "aGk=", "senderId": "urn:bad"}).to_string(),
            "URN",
        ),
    ];
    for (body, needle) in cases {
        let response = raw(
            &server,
            Method::POST,
            "/send",
            Some(&alice_token),
            json_type,
            body.clone(),
        )
        .send()
        .await?;
        expect_error(response, StatusCode::BAD_REQUEST, needle)
            .await
            .map_err(|e| e.context(body))?;
    }

    // 401: no token, garbage, wrong secret, expired, no exp.
    expect_rejected(
        raw(
            &server,
            Method::POST,
            "/send",
            None,
            json_type,
            envelope(&bob).to_string(),
        ),
        StatusCode::UNAUTHORIZED,
        "missing bearer token",
    )
    .await?;
    for (bearer, needle) in [
        ("garbage".to_owned(), "malformed"),
        (
            token_with(&alice, "another-secret", 3600, json!({})),
            "signature",
        ),
        (token_with(&alice, SECRET, -600, json!({})), "expired"),
        (
            token_with(&alice, SECRET, 3600, json!({"sub": "urn:bad"})),
            "URN",
        ),
    ] {
        let response = raw(
            &server,
            Method::POST,
            "/send",
            Some(&bearer),
            json_type,
            envelope(&bob).to_string(),
        )
        .send()
        .await?;
        expect_error(response, StatusCode::UNAUTHORIZED, needle).await?;
    }
    let no_exp = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": alice}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )?;
    expect_rejected(
        raw(
            &server,
            Method::POST,
            "/send",
            Some(&no_exp),
            json_type,
            envelope(&bob).to_string(),
        ),
        StatusCode::UNAUTHORIZED,
        "exp",
    )
    .await?;

    // 403: senderId of somebody else.
    let mut forged = envelope(&bob);
    forged["senderId"] = json!(user("mallory"));
    expect_error(
        server.send(&alice_token, &forged).await?,
        StatusCode::FORBIDDEN,
        "senderId",
    )
    .await?;
    // ... while a bare senderId equal to the token's user is fine.
    let mut honest = envelope(&bob);
    honest["senderId"] = json!(alice);
    server.send_ok(&alice_token, &honest).await?;

    // 413 and 415.
    let big = json!({"recipientId": bob, "encryptedData": "A".repeat(4096)}).to_string();
    expect_rejected(
        raw(
            &server,
            Method::POST,
            "/send",
            Some(&alice_token),
            json_type,
            big,
        ),
        StatusCode::PAYLOAD_TOO_LARGE,
        "larger than 2048",
    )
    .await?;
    let stream_body =
        reqwest::Body::wrap_stream(futures_util::stream::iter(vec![Ok::<_, std::io::Error>(
            vec![b' '; 3000],
        )]));
    expect_rejected(
        raw(
            &server,
            Method::POST,
            "/send",
            Some(&alice_token),
            json_type,
            stream_body,
        ),
        StatusCode::PAYLOAD_TOO_LARGE,
        "larger than",
    )
    .await?;
    expect_rejected(
        raw(
            &server,
            Method::POST,
            "/send",
            Some(&alice_token),
            "text/plain",
            envelope(&bob).to_string(),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "application/json",
    )
    .await?;
    expect_error(
        server
            .request(Method::POST, "/send")
            .bearer_auth(&alice_token)
            .body(envelope(&bob).to_string())
            .send()
            .await?,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "application/json",
    )
    .await?;

    // Nothing rejected was stored: bob only has the one honest envelope.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.pending_ids(&token(&bob)).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn send_is_rate_limited_per_sender_with_retry_after() -> Result<()> {
    let server = Server::start(&[
        ("RATE_LIMIT_SENDER_BURST", "3"),
        ("RATE_LIMIT_SENDER_PER_SECOND", "0.5"),
    ])
    .await?;
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    for _ in 0..3 {
        server.send_ok(&token(&alice), &envelope(&bob)).await?;
    }
    let limited = server.send(&token(&alice), &envelope(&bob)).await?;
    let retry_after: u64 = limited.headers()["retry-after"].to_str()?.parse()?;
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    expect_error(limited, StatusCode::TOO_MANY_REQUESTS, "rate limited").await?;
    // Buckets are per sender.
    server.send_ok(&token(&carol), &envelope(&bob)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server.pending_ids(&token(&bob)).await?.len(),
        4,
        "the limited envelope was not stored"
    );
    Ok(())
}

#[tokio::test]
async fn send_is_rate_limited_per_sender_and_recipient_pair() -> Result<()> {
    let server = Server::start(&[
        ("RATE_LIMIT_PAIR_BURST", "2"),
        ("RATE_LIMIT_PAIR_PER_SECOND", "0.5"),
    ])
    .await?;
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    server.send_ok(&token(&alice), &envelope(&bob)).await?;
    server.send_ok(&token(&alice), &envelope(&bob)).await?;
    let limited = server.send(&token(&alice), &envelope(&bob)).await?;
    assert!(limited.headers().contains_key("retry-after"));
    expect_error(limited, StatusCode::TOO_MANY_REQUESTS, "rate limited").await?;
    // Other pairs have their own buckets: alice → carol, carol → bob.
    server.send_ok(&token(&alice), &envelope(&carol)).await?;
    server.send_ok(&token(&carol), &envelope(&bob)).await?;
    let metrics = server.metrics_text().await?;
    assert!(
        metrics.contains(r#"envelope_router_rate_limited_total{scope="pair"} 1"#),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn messages_endpoints_reject_bad_input() -> Result<()> {
    let server = Server::start(&[("MAX_BODY_BYTES", "1024")]).await?;
    let bob = token(&user("bob"));
    expect_error(
        server.request(Method::GET, "/messages").send().await?,
        StatusCode::UNAUTHORIZED,
        "bearer",
    )
    .await?;
    for limit in ["0", "501", "x", "-1"] {
        expect_error(
            server
                .request(Method::GET, &format!("/messages?limit={limit}"))
                .bearer_auth(&bob)
                .send()
                .await?,
            StatusCode::BAD_REQUEST,
            "limit",
        )
        .await?;
    }
    let json_type = "application/json";
    expect_rejected(
        raw(
            &server,
            Method::POST,
            "/messages/ack",
            None,
            json_type,
            r#"{"messageIds":[]}"#,
        ),
        StatusCode::UNAUTHORIZED,
        "bearer",
    )
    .await?;
    expect_rejected(
        raw(
            &server,
            Method::POST,
            "/messages/ack",
            Some(&bob),
            json_type,
            "{",
        ),
        StatusCode::BAD_REQUEST,
        "malformed JSON",
    )
    .await?;
    expect_rejected(
        raw(
            &server,
            Method::POST,
            "/messages/ack",
            Some(&bob),
            json_type,
            "{}",
        ),
        StatusCode::BAD_REQUEST,
        "messageIds",
    )
    .await?;
    expect_rejected(
        raw(
            &server,
            Method::POST,
            "/messages/ack",
            Some(&bob),
            json_type,
            r#"{"messageIds":["a b"]}"#,
        ),
        StatusCode::BAD_REQUEST,
        "messageId",
    )
    .await?;
    let too_many =
        json!({"messageIds": (0..1001).map(|i| format!("m{i}")).collect::<Vec<_>>()}).to_string();
    let big_server = Server::start(&[]).await?;
    expect_rejected(
        raw(
            &big_server,
            Method::POST,
            "/messages/ack",
            Some(&bob),
            json_type,
            too_many,
        ),
        StatusCode::BAD_REQUEST,
        "at most 1000",
    )
    .await?;
    let oversized = json!({"messageIds": vec!["x".repeat(100); 20]}).to_string();
    expect_rejected(
        raw(
            &server,
            Method::POST,
            "/messages/ack",
            Some(&bob),
            json_type,
            oversized,
        ),
        StatusCode::PAYLOAD_TOO_LARGE,
        "larger than",
    )
    .await?;
    expect_rejected(
        raw(
            &server,
            Method::POST,
            "/messages/ack",
            Some(&bob),
            "text/plain",
            "{}",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "application/json",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn register_device_rejects_bad_input() -> Result<()> {
    let server = Server::start(&[("MAX_BODY_BYTES", "1024")]).await?;
    let bob = token(&user("bob"));
    let json_type = "application/json";
    for method in [Method::POST, Method::DELETE] {
        expect_rejected(
            raw(
                &server,
                method.clone(),
                "/register-device",
                None,
                json_type,
                r#"{"token":"t","platform":"fcm"}"#,
            ),
            StatusCode::UNAUTHORIZED,
            "bearer",
        )
        .await?;
        for (body, needle) in [
            ("{", "malformed JSON"),
            (r#"{"platform":"fcm"}"#, "token"),
            (r#"{"token":"t"}"#, "platform"),
            (r#"{"token":"t","platform":"sms"}"#, "platform"),
            (r#"{"token":"has space","platform":"fcm"}"#, "token"),
            (r#"{"token":"","platform":"fcm"}"#, "token"),
        ] {
            expect_rejected(
                raw(
                    &server,
                    method.clone(),
                    "/register-device",
                    Some(&bob),
                    json_type,
                    body,
                ),
                StatusCode::BAD_REQUEST,
                needle,
            )
            .await?;
        }
        let big = json!({"token": "t".repeat(2000), "platform": "fcm"}).to_string();
        expect_rejected(
            raw(
                &server,
                method.clone(),
                "/register-device",
                Some(&bob),
                json_type,
                big,
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger than",
        )
        .await?;
        expect_rejected(
            raw(
                &server,
                method.clone(),
                "/register-device",
                Some(&bob),
                "text/plain",
                "{}",
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "application/json",
        )
        .await?;
    }
    Ok(())
}

#[tokio::test]
async fn connect_rejects_missing_tokens_foreign_origins_and_plain_requests() -> Result<()> {
    let server = Server::start(&[("CORS_ALLOWED_ORIGINS", "https://app.example")]).await?;
    let bob = token(&user("bob"));
    let ws = |bearer: Option<&str>, origin: Option<&str>| -> Result<_> {
        let mut request = format!("{}/connect", server.ws_base).into_client_request()?;
        if let Some(bearer) = bearer {
            request.headers_mut().insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {bearer}"))?,
            );
        }
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("origin", HeaderValue::from_str(origin)?);
        }
        Ok(tokio_tungstenite::connect_async(request))
    };
    let status_of = |result: Result<_, tokio_tungstenite::tungstenite::Error>| match result {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Some(response.status().as_u16())
        }
        _ => None,
    };
    assert_eq!(status_of(ws(None, None)?.await.map(|_| ())), Some(401));
    assert_eq!(
        status_of(ws(Some("garbage"), None)?.await.map(|_| ())),
        Some(401)
    );
    assert_eq!(
        status_of(
            ws(Some(&bob), Some("https://evil.example"))?
                .await
                .map(|_| ())
        ),
        Some(403)
    );
    assert!(
        ws(Some(&bob), Some("https://app.example"))?.await.is_ok(),
        "allowed origin connects"
    );
    assert!(
        ws(Some(&bob), None)?.await.is_ok(),
        "non-browser clients send no Origin"
    );
    expect_error(
        server
            .request(Method::GET, "/connect")
            .bearer_auth(&bob)
            .send()
            .await?,
        StatusCode::BAD_REQUEST,
        "WebSocket",
    )
    .await?;
    expect_error(
        server.request(Method::GET, "/connect").send().await?,
        StatusCode::UNAUTHORIZED,
        "missing token",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn unknown_routes_get_a_json_404() -> Result<()> {
    let server = Server::start(&[]).await?;
    expect_error(
        server.request(Method::GET, "/nope").send().await?,
        StatusCode::NOT_FOUND,
        "not found",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn send_answers_503_when_the_bus_cannot_take_more_and_keeps_what_it_accepted() -> Result<()> {
    // Ingest only: nothing drains the bounded bus, so the third envelope cannot be confirmed.
    let server = Server::start(&[
        ("ROLES", "api"),
        ("BUS_CAPACITY", "2"),
        ("BUS_PUBLISH_TIMEOUT", "300ms"),
    ])
    .await?;
    let (alice, bob) = (user("alice"), user("bob"));
    let first = server.send_ok(&token(&alice), &envelope(&bob)).await?;
    let second = server.send_ok(&token(&alice), &envelope(&bob)).await?;
    let refused = server.send(&token(&alice), &envelope(&bob)).await?;
    assert_eq!(refused.headers()["retry-after"], "1");
    expect_error(refused, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await?;
    let ready: Value = server
        .request(Method::GET, "/readyz")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        ready["components"]["bus"]["status"], "ok",
        "a full bus is still reachable"
    );

    // A routing process on the same data delivers exactly the accepted envelopes.
    let routing: Vec<_> = server
        .env()
        .into_iter()
        .filter(|(k, _)| k != "ROLES" && k != "BUS_CAPACITY")
        .collect();
    let server = server.restart_with(routing).await?;
    let mut session = server.connect(&token(&bob)).await?;
    assert_eq!(session.envelope().await?.0, first);
    assert_eq!(session.envelope().await?.0, second);
    session.expect_silence(Duration::from_millis(400)).await?;
    Ok(())
}
