//! Per-instance delivery channels over Redis pub/sub (`DELIVERY=redis`).
//!
//! Lossy by design: every stored envelope is also in the store, so a missed publish is delivered
//! from the backlog on reconnect and covered by the unacked-envelope wake-up.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use pipeline::InstanceId;
use pipeline::error::DeliveryError;
use pipeline::ports::delivery_channel::{DeliveryChannel, DeliveryItem, DeliveryReceiver};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::delivery_wire;
use crate::redis::connection::RedisHandle;

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
        let payload = delivery_wire::encode(&item).map_err(DeliveryError::Unavailable)?;
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
                                let Some(item) = delivery_wire::decode(message.get_payload_bytes()) else {
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
