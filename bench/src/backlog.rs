//! Backlog: an offline user with N queued envelopes connects and drains them.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::router_load::{receiver_config, token};

/// Senders filling the backlog at once.
const FILLERS: usize = 16;

/// What the backlog scenario measured for one system.
#[derive(Clone, Debug, Serialize)]
pub struct BacklogStats {
    /// Which system.
    pub system: String,
    /// Envelopes queued.
    pub queued: usize,
    /// Seconds to queue them.
    pub fill_seconds: f64,
    /// Seconds from connect to the last envelope received.
    pub drain_seconds: f64,
    /// Distinct envelopes received.
    pub received: usize,
}

/// Queues `count` envelopes of `payload` bytes for an offline user, then drains them over one
/// WebSocket, acking in batches.
pub async fn router(addr: &str, count: usize, payload: usize) -> Result<BacklogStats> {
    let user = "urn:bench:user:backlog";
    let data = base64::engine::general_purpose::STANDARD.encode(vec![0x5a_u8; payload]);
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut fillers = JoinSet::new();
    for f in 0..FILLERS {
        let (client, data) = (client.clone(), data.clone());
        let url = format!("http://{addr}/send");
        let bearer = token(&format!("urn:bench:user:filler{f}"))?;
        fillers.spawn(async move {
            let mut n = f;
            while n < count {
                let body = json!({"recipientId": user, "encryptedData": data});
                let response = client
                    .post(&url)
                    .bearer_auth(&bearer)
                    .json(&body)
                    .send()
                    .await?;
                anyhow::ensure!(
                    response.status().as_u16() == 202,
                    "send answered {}",
                    response.status()
                );
                n += FILLERS;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = fillers.join_next().await {
        done??;
    }
    let fill_seconds = started.elapsed().as_secs_f64();
    // Let the processor store the tail end.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut request = format!("ws://{addr}/connect").into_client_request()?;
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", token(user)?))?,
    );
    let connected = Instant::now();
    let (socket, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(receiver_config()), false)
            .await?;
    let (mut sink, mut stream) = socket.split();
    let mut seen = HashSet::with_capacity(count);
    let mut pending = Vec::new();
    let deadline = connected + Duration::from_secs(300);
    while seen.len() < count {
        let frame = tokio::time::timeout_at(deadline.into(), stream.next())
            .await
            .context("backlog drain timed out")?;
        let Some(Ok(Message::Text(text))) = frame else {
            if frame.is_none() {
                bail!("connection closed after {} envelopes", seen.len());
            }
            continue;
        };
        let value: Value = serde_json::from_str(text.as_str())?;
        if let Some(id) = value["messageId"].as_str() {
            seen.insert(id.to_owned());
            pending.push(id.to_owned());
        }
        if pending.len() >= 500 {
            let ack =
                json!({"type": "ack", "messageIds": std::mem::take(&mut pending)}).to_string();
            sink.send(Message::Text(ack.into())).await?;
        }
    }
    let drain_seconds = connected.elapsed().as_secs_f64();
    Ok(BacklogStats {
        system: "envelope-router".into(),
        queued: count,
        fill_seconds,
        drain_seconds,
        received: seen.len(),
    })
}

/// The same with Mosquitto: a persistent session subscribed QoS 1 goes offline, `count`
/// messages are published to it, it reconnects and drains.
pub async fn mosquitto(addr: &str, count: usize, payload: usize) -> Result<BacklogStats> {
    let port: u16 = addr.rsplit(':').next().context("port")?.parse()?;
    let subscriber_options = || {
        let mut options = MqttOptions::new("bench-backlog-subscriber", "127.0.0.1", port);
        options
            .set_clean_start(false)
            .set_session_expiry_interval(Some(3600))
            .set_max_packet_size(Some(1 << 20));
        options
    };
    {
        let (client, mut eventloop) = AsyncClient::new(subscriber_options(), 64);
        client.subscribe("bench/backlog", QoS::AtLeastOnce).await?;
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = eventloop.poll().await? {
                break;
            }
        }
        client.disconnect().await?;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while eventloop.poll().await.is_ok() {}
        })
        .await;
    }
    let started = Instant::now();
    let (publisher, mut eventloop) = AsyncClient::new(
        MqttOptions::new("bench-backlog-publisher", "127.0.0.1", port),
        1024,
    );
    let body = {
        let mut body = b"x|".to_vec();
        body.resize(2 + payload, b'Z');
        body
    };
    let publishing = tokio::spawn(async move {
        for _ in 0..count {
            publisher
                .publish("bench/backlog", QoS::AtLeastOnce, false, body.clone())
                .await?;
        }
        anyhow::Ok(publisher)
    });
    let mut acked = 0;
    while acked < count {
        if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await? {
            acked += 1;
        }
    }
    publishing.await??;
    let fill_seconds = started.elapsed().as_secs_f64();

    let connected = Instant::now();
    let (_client, mut eventloop) = AsyncClient::new(subscriber_options(), 64);
    let mut received = 0;
    let deadline = connected + Duration::from_secs(300);
    while received < count {
        let event = tokio::time::timeout_at(deadline.into(), eventloop.poll())
            .await
            .context("mosquitto drain timed out")??;
        if let Event::Incoming(Packet::Publish(_)) = event {
            received += 1;
        }
    }
    let drain_seconds = connected.elapsed().as_secs_f64();
    Ok(BacklogStats {
        system: "mosquitto".into(),
        queued: count,
        fill_seconds,
        drain_seconds,
        received,
    })
}
