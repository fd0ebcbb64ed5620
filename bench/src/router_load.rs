//! The load against the router: WebSocket receivers that ack in batches, HTTP senders.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use base64::Engine;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::processes::SECRET;
use crate::stats::Collector;
use crate::{Load, message_id, next_index};

/// Acks are sent per this many envelopes (or on the flush tick, `Load::ack_interval`).
const ACK_BATCH: usize = 64;

/// A receiver's read buffer: room for about ten 1 KiB envelope frames per read.
const RECEIVER_READ_BUFFER: usize = 16 * 1024;

/// The receivers' WebSocket settings. tungstenite zero-fills its read buffer's free room
/// before every read, so its default buffer (128 KiB) cost the generator a 128 KiB `memset`
/// per read: 14 % of its CPU while it drove the router at 7,000/s (docs/performance.md).
pub fn receiver_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(RECEIVER_READ_BUFFER)
}

/// What a run produced: receipts, accepted ids, failed requests, time spent sending.
pub struct Outcome {
    /// Receipts.
    pub collector: Collector,
    /// Ids the system accepted.
    pub accepted: HashSet<String>,
    /// Failed requests.
    pub errors: u64,
    /// How long senders sent.
    pub sending: Duration,
    /// Accepted envelopes not received within the wait that the router still held queued for
    /// their recipients when it ended: late, not lost.
    pub still_queued: u64,
}

/// An HS256 token for `user`.
pub fn token(user: &str) -> Result<String> {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 3600;
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": user, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )?)
}

/// The `POST /send` body, written directly: users, ids and base64 need no JSON escaping, and
/// the generator shares the machine with the router, so it spends as little CPU as it can.
pub fn send_body(recipient: &str, message_id: &str, data_base64: &str) -> String {
    let mut body =
        String::with_capacity(data_base64.len() + recipient.len() + message_id.len() + 64);
    body.push_str(r#"{"recipientId":""#);
    body.push_str(recipient);
    body.push_str(r#"","messageId":""#);
    body.push_str(message_id);
    body.push_str(r#"","encryptedData":""#);
    body.push_str(data_base64);
    body.push_str(r#""}"#);
    body
}

/// The `messageId` of an envelope frame (`{"type":"envelope","messageId":"…",…}`), read
/// without parsing the envelope; `None` for any other frame.
pub fn frame_message_id(frame: &str) -> Option<&str> {
    const KEY: &str = r#""messageId":""#;
    let rest = frame.strip_prefix(r#"{"type":"envelope","#)?;
    let start = rest.find(KEY)? + KEY.len();
    let len = rest[start..].find('"')?;
    Some(&rest[start..start + len])
}

/// Drives the router at `addrs` with `load`: receiver `i` connects to `addrs[i % n]` and
/// sender `s` posts to `addrs[s % n]` (one address: a single instance).
pub async fn run(addrs: &[String], load: &Load) -> Result<Outcome> {
    anyhow::ensure!(!addrs.is_empty(), "no router address to drive");
    let users: Vec<String> = (0..load.receivers)
        .map(|i| format!("urn:bench:user:r{i}"))
        .collect();
    let collector = Arc::new(Mutex::new(Collector::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let start = Instant::now();
    let mut receivers = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let addr = &addrs[i % addrs.len()];
        let mut request = format!("ws://{addr}/connect").into_client_request()?;
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {}", token(user)?))?,
        );
        let (socket, _) =
            tokio_tungstenite::connect_async_with_config(request, Some(receiver_config()), true)
                .await
                .context("receiver connect")?;
        let collector = collector.clone();
        let ack_interval = load.ack_interval;
        let mut stop = stop_rx.clone();
        receivers.push(tokio::spawn(async move {
            let (mut sink, mut stream) = socket.split();
            let mut pending: Vec<String> = Vec::new();
            let mut flush = tokio::time::interval(ack_interval);
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    _ = flush.tick() => {
                        if !pending.is_empty() {
                            let ack = json!({"type": "ack", "messageIds": std::mem::take(&mut pending)}).to_string();
                            if sink.send(Message::Text(ack.into())).await.is_err() { break; }
                        }
                    }
                    frame = stream.next() => {
                        let Some(Ok(Message::Text(text))) = frame else {
                            if frame.is_none() { break; }
                            continue;
                        };
                        let now = start.elapsed().as_micros() as u64;
                        let Some(id) = frame_message_id(text.as_str()) else { continue };
                        collector.lock().unwrap_or_else(|p| p.into_inner()).receipt(id.to_owned(), now);
                        pending.push(id.to_owned());
                        if pending.len() >= ACK_BATCH {
                            let ack = json!({"type": "ack", "messageIds": std::mem::take(&mut pending)}).to_string();
                            if sink.send(Message::Text(ack.into())).await.is_err() { break; }
                        }
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let data = base64::engine::general_purpose::STANDARD.encode(vec![0x5a_u8; load.payload]);
    let accepted = Arc::new(Mutex::new(HashSet::new()));
    let errors = Arc::new(Mutex::new(0_u64));
    // Tokens are made and connections opened before the clock starts, as the baseline's
    // publishers connect before it does; a connection that fails here is retried on the clock.
    let mut prepared = Vec::with_capacity(load.senders);
    for s in 0..load.senders {
        let authorization = format!("Bearer {}", token(&format!("urn:bench:user:s{s}"))?);
        let addr = addrs[s % addrs.len()].clone();
        let connection = SendConnection::open(&addr).await.ok();
        prepared.push((authorization, addr, connection));
    }
    let sending_started = Instant::now();
    let deadline = sending_started + load.duration;
    let mut senders = Vec::new();
    for (s, (authorization, addr, mut connection)) in prepared.into_iter().enumerate() {
        let (users, data) = (users.clone(), data.clone());
        let (accepted, errors) = (accepted.clone(), errors.clone());
        let mut ticker = load.send_ticker(s);
        senders.push(tokio::spawn(async move {
            let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ (s as u64 + 1);
            let mut seq = 0_u64;
            while Instant::now() < deadline {
                if let Some(ticker) = ticker.as_mut() {
                    ticker.tick().await;
                }
                seq += 1;
                let id = message_id(s, seq, start.elapsed().as_micros() as u64);
                let to = &users[next_index(&mut state, users.len())];
                let body = send_body(to, &id, &data);
                if connection.is_none() {
                    connection = SendConnection::open(&addr).await.ok();
                    if connection.is_none() {
                        // Counted as a failed send below; do not spin on a refused connect.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                let status = match connection.as_mut() {
                    Some(open) => open.post(&addr, &authorization, body).await,
                    None => None,
                };
                if status == Some(202) {
                    accepted
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id);
                } else {
                    *errors.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                    if status.is_none() {
                        connection = None;
                    }
                }
            }
        }));
    }
    for sender in senders {
        sender.await?;
    }
    let sending = sending_started.elapsed();
    let accepted = accepted.lock().unwrap_or_else(|p| p.into_inner()).clone();
    crate::stats::wait_for_receipts(&collector, &accepted, Duration::from_secs(10)).await;
    let missing: HashSet<String> = collector
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .missing(&accepted)
        .cloned()
        .collect();
    let still_queued = if missing.is_empty() {
        0
    } else {
        count_still_queued(addrs, &users, &missing).await
    };
    let _ = stop_tx.send(true);
    for receiver in receivers {
        let _ = receiver.await;
    }
    let collector = std::mem::take(&mut *collector.lock().unwrap_or_else(|p| p.into_inner()));
    let errors = *errors.lock().unwrap_or_else(|p| p.into_inner());
    Ok(Outcome {
        collector,
        accepted,
        errors,
        sending,
        still_queued,
    })
}

/// Most envelopes `GET /messages` lists per call.
const LIST_LIMIT: usize = 500;

/// How many of `missing` the router at `addrs` still holds queued for `users`, from each
/// user's `GET /messages` (its first [`LIST_LIMIT`] queued envelopes, so a user with more
/// queued can be undercounted). Tells an envelope that came late from one that is gone.
pub async fn count_still_queued(
    addrs: &[String],
    users: &[String],
    missing: &HashSet<String>,
) -> u64 {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Listed {
        message_id: String,
    }
    #[derive(serde::Deserialize)]
    struct Page {
        messages: Vec<Listed>,
    }
    let client = reqwest::Client::new();
    let mut found = 0;
    for (i, user) in users.iter().enumerate() {
        let Ok(token) = token(user) else { continue };
        let url = format!(
            "http://{}/messages?limit={LIST_LIMIT}",
            addrs[i % addrs.len()]
        );
        let page = match client.get(&url).bearer_auth(token).send().await {
            Ok(response) => response.json::<Page>().await,
            Err(err) => Err(err),
        };
        match page {
            Ok(page) => {
                found += page
                    .messages
                    .iter()
                    .filter(|listed| missing.contains(&listed.message_id))
                    .count() as u64;
            }
            Err(err) => eprintln!("cannot list {user}'s queued envelopes: {err}"),
        }
    }
    found
}

/// One sender's keep-alive HTTP/1 connection: hyper's client connection without a pool, so
/// the generator spends as little CPU per request as the MQTT publishers do.
struct SendConnection {
    requests: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl SendConnection {
    /// Connects to `addr` (`host:port`).
    async fn open(addr: &str) -> Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (requests, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Self { requests })
    }

    /// Posts `body` to `/send` and reads the answer; its status, or `None` when the
    /// connection failed.
    async fn post(&mut self, addr: &str, authorization: &str, body: String) -> Option<u16> {
        self.requests.ready().await.ok()?;
        let request = hyper::Request::post("/send")
            .header(hyper::header::HOST, addr)
            .header(hyper::header::AUTHORIZATION, authorization)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .ok()?;
        let response = self.requests.send_request(request).await.ok()?;
        let status = response.status().as_u16();
        // Read the answer to its end so the connection takes the next request.
        response.into_body().collect().await.ok()?;
        Some(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json_and_frames_give_their_id() {
        let body = send_body("urn:bench:user:r1", "t5-s0-1", "AAEC");
        let value: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(value["recipientId"], "urn:bench:user:r1");
        assert_eq!(value["messageId"], "t5-s0-1");
        let frame =
            r#"{"type":"envelope","messageId":"t5-s0-1","envelope":{"messageId":"t5-s0-1"}}"#;
        assert_eq!(frame_message_id(frame), Some("t5-s0-1"));
        assert_eq!(frame_message_id(r#"{"type":"error","error":"x"}"#), None);
    }
}
