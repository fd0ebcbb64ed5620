//! The baseline: the same load as MQTT QoS 1 against Mosquitto — one topic per receiver,
//! publishers waiting for each PUBACK (closed loop) like senders wait for a 202.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::mpsc;

use crate::router_load::Outcome;
use crate::stats::Collector;
use crate::{Load, message_id, next_index};

fn client(id: String, port: u16) -> (AsyncClient, rumqttc::v5::EventLoop) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(Some(1 << 20));
    AsyncClient::new(options, 1024)
}

/// Drives Mosquitto at `addr` with `load`.
pub async fn run(addr: &str, load: &Load) -> Result<Outcome> {
    let port: u16 = addr.rsplit(':').next().context("port")?.parse()?;
    let collector = Arc::new(Mutex::new(Collector::default()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for r in 0..load.receivers {
        let (subscriber, mut eventloop) =
            client(format!("bench-r{r}-{}", std::process::id()), port);
        subscriber
            .subscribe(format!("bench/r{r}"), QoS::AtLeastOnce)
            .await?;
        let collector = collector.clone();
        tasks.push(tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                if let Event::Incoming(Packet::Publish(publish)) = event {
                    let now = start.elapsed().as_micros() as u64;
                    let end = publish
                        .payload
                        .iter()
                        .position(|b| *b == b'|')
                        .unwrap_or(publish.payload.len());
                    let id = String::from_utf8_lossy(&publish.payload[..end]).into_owned();
                    collector
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .receipt(id, now);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Every publisher is made and connected before the clock starts: making a client takes
    // tens of milliseconds, and 64 of them made one after another on the clock would leave
    // the last senders starting seconds late, their share of the run lost to the baseline.
    let (connected_tx, mut connected) = mpsc::channel::<()>(load.senders.max(1));
    let mut publishers = Vec::with_capacity(load.senders);
    for s in 0..load.senders {
        let (publisher, mut eventloop) = client(format!("bench-s{s}-{}", std::process::id()), port);
        let (acks_tx, acks) = mpsc::channel::<()>(1024);
        let connected_tx = connected_tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                match event {
                    Event::Incoming(Packet::ConnAck(_)) => {
                        let _ = connected_tx.try_send(());
                    }
                    // Never block the event loop: in open loop nobody waits for acks.
                    Event::Incoming(Packet::PubAck(_)) => {
                        let _ = acks_tx.try_send(());
                    }
                    _ => {}
                }
            }
        }));
        publishers.push((publisher, acks));
    }
    for _ in 0..load.senders {
        tokio::time::timeout(Duration::from_secs(10), connected.recv())
            .await
            .ok()
            .flatten()
            .context("a publisher did not connect to Mosquitto within 10 s")?;
    }

    let accepted = Arc::new(Mutex::new(HashSet::new()));
    let sending_started = Instant::now();
    let deadline = sending_started + load.duration;
    let mut senders = Vec::new();
    for (s, (publisher, mut acks)) in publishers.into_iter().enumerate() {
        let accepted = accepted.clone();
        let receivers = load.receivers;
        let payload = load.payload;
        let mut ticker = load.send_ticker(s);
        senders.push(tokio::spawn(async move {
            let mut state = 0x2545_f491_4f6c_dd1d_u64 ^ (s as u64 + 1);
            let mut seq = 0_u64;
            while Instant::now() < deadline {
                if let Some(ticker) = ticker.as_mut() {
                    ticker.tick().await;
                }
                seq += 1;
                let id = message_id(s, seq, start.elapsed().as_micros() as u64);
                let mut body = format!("{id}|").into_bytes();
                body.resize(body.len() + payload, b'Z');
                let topic = format!("bench/r{}", next_index(&mut state, receivers));
                if publisher
                    .publish(topic, QoS::AtLeastOnce, false, body)
                    .await
                    .is_err()
                {
                    continue;
                }
                if ticker.is_none() && acks.recv().await.is_none() {
                    break;
                }
                accepted
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id);
            }
        }));
    }
    for sender in senders {
        sender.await?;
    }
    let sending = sending_started.elapsed();
    let accepted = accepted.lock().unwrap_or_else(|p| p.into_inner()).clone();
    crate::stats::wait_for_receipts(&collector, &accepted, Duration::from_secs(10)).await;
    for task in tasks {
        task.abort();
    }
    let collector = std::mem::take(&mut *collector.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(Outcome {
        collector,
        accepted,
        errors: 0,
        sending,
        // What Mosquitto still holds for a subscriber cannot be asked: every shortfall counts
        // as lost.
        still_queued: 0,
    })
}
