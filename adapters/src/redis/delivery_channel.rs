//! Per-instance delivery channels over Redis pub/sub (`DELIVERY=redis`).
//!
//! Lossy by design: every stored envelope is also in the store, so a missed publish is delivered
//! from the backlog on reconnect and covered by the unacked-envelope wake-up.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use pipeline::error::DeliveryError;
use pipeline::ports::delivery_channel::{DeliveryChannel, DeliveryItem, DeliveryReceiver};
use pipeline::{InstanceId, MessageId, UserUrn};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::redis::connection::RedisHandle;

/// The wire form of a delivery item; the envelope is embedded as raw JSON.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireOut<'a> {
    recipient: &'a str,
    message_id: &'a str,
    ephemeral: bool,
    envelope: &'a RawValue,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireIn {
    recipient: String,
    message_id: String,
    ephemeral: bool,
    envelope: Box<RawValue>,
}

fn decode(payload: &[u8]) -> Option<DeliveryItem> {
    let wire: WireIn = serde_json::from_slice(payload).ok()?;
    Some(DeliveryItem {
        recipient: UserUrn::parse(&wire.recipient).ok()?,
        message_id: MessageId::parse(&wire.message_id).ok()?,
        json: wire.envelope.get().into(),
        ephemeral: wire.ephemeral,
    })
}

/// Delivery channels on Redis pub/sub, one channel per instance.
pub struct RedisDeliveryChannel {
    redis: RedisHandle,
    subscriptions: Mutex<HashMap<InstanceId, CancellationToken>>,
}

impl RedisDeliveryChannel {
    /// Channels in `redis`.
    pub fn new(redis: RedisHandle) -> Self {
        Self {
            redis,
            subscriptions: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl DeliveryChannel for RedisDeliveryChannel {
    async fn publish(
        &self,
        instance: &InstanceId,
        item: DeliveryItem,
    ) -> Result<(), DeliveryError> {
        let envelope: &RawValue = serde_json::from_str(&item.json)
            .map_err(|e| DeliveryError::Unavailable(format!("envelope is not JSON: {e}")))?;
        let payload = serde_json::to_vec(&WireOut {
            recipient: item.recipient.as_str(),
            message_id: item.message_id.as_str(),
            ephemeral: item.ephemeral,
            envelope,
        })
        .map_err(|e| DeliveryError::Unavailable(e.to_string()))?;
        let receivers: i64 = ::redis::cmd("PUBLISH")
            .arg(self.redis.keys.delivery_channel(instance))
            .arg(payload)
            .query_async(&mut self.redis.conn())
            .await
            .map_err(|e| DeliveryError::Unavailable(e.to_string()))?;
        if receivers == 0 {
            return Err(DeliveryError::UnknownInstance(instance.to_string()));
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        instance: &InstanceId,
        capacity: usize,
    ) -> Result<DeliveryReceiver, DeliveryError> {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let channel = self.redis.keys.delivery_channel(instance);
        let client = self.redis.client.clone();
        // Subscribe once before returning, so publishes right after start are not missed.
        let first = client
            .get_async_pubsub()
            .await
            .map_err(|e| DeliveryError::Unavailable(e.to_string()))?;
        let stop = CancellationToken::new();
        self.subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(instance.clone(), stop.clone());
        let mut pubsub = Some(first);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                let mut connection = match pubsub.take() {
                    Some(connection) => connection,
                    None => match client.get_async_pubsub().await {
                        Ok(connection) => connection,
                        Err(err) => {
                            warn!(cause = %err, "delivery channel reconnect failed");
                            tokio::select! {
                                _ = stop.cancelled() => return,
                                _ = tokio::time::sleep(backoff) => {}
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(2));
                            continue;
                        }
                    },
                };
                if let Err(err) = connection.subscribe(&channel).await {
                    warn!(cause = %err, "delivery channel subscribe failed");
                    continue;
                }
                info!(%channel, "delivery channel subscribed");
                backoff = Duration::from_millis(100);
                let mut messages = connection.on_message();
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        message = messages.next() => match message {
                            Some(message) => {
                                let Some(item) = decode(message.get_payload_bytes()) else {
                                    warn!("undecodable delivery item dropped");
                                    continue;
                                };
                                if sender.send(item).await.is_err() {
                                    return;
                                }
                            }
                            None => {
                                warn!("delivery channel connection lost; resubscribing");
                                break;
                            }
                        },
                    }
                }
            }
        });
        Ok(receiver)
    }

    async fn unsubscribe(&self, instance: &InstanceId) -> Result<(), DeliveryError> {
        if let Some(stop) = self
            .subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(instance)
        {
            stop.cancel();
        }
        Ok(())
    }
}
