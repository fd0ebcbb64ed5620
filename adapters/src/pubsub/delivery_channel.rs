//! Per-instance delivery over Pub/Sub (`DELIVERY=pubsub`): each instance creates topic and
//! subscription `delivery-<instanceId>` at start (expiring when unused, short retention),
//! consumes it, and deletes both on graceful shutdown.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use google_cloud_gax::error::rpc::Code;
use google_cloud_pubsub::client::{Publisher, Subscriber, SubscriptionAdmin, TopicAdmin};
use google_cloud_pubsub::error::PublishError;
use google_cloud_pubsub::model::Message;
use pipeline::InstanceId;
use pipeline::error::DeliveryError;
use pipeline::ports::delivery_channel::{DeliveryChannel, DeliveryItem, DeliveryReceiver};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::delivery_wire;
use crate::error::AdapterError;
use crate::pubsub::admin::{
    SubscriptionSpec, delete_subscription, delete_topic, ensure_subscription, ensure_topic,
};
use crate::pubsub::config::PubSubConfig;

/// Pub/Sub deletes an unused delivery subscription after this long (its minimum).
const EXPIRE_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Undelivered delivery items are dropped after this long (Pub/Sub's minimum); the store keeps
/// the envelopes anyway.
const RETENTION: Duration = Duration::from_secs(600);

/// The topic (and subscription) name of `instance`'s delivery channel.
pub fn delivery_name(instance: &InstanceId) -> String {
    format!("delivery-{instance}")
}

/// Delivery channels as Pub/Sub topics, one per instance.
pub struct PubSubDeliveryChannel {
    config: PubSubConfig,
    topics: TopicAdmin,
    subscriptions: SubscriptionAdmin,
    subscriber: Subscriber,
    publishers: tokio::sync::Mutex<HashMap<InstanceId, Publisher>>,
    running: Mutex<HashMap<InstanceId, CancellationToken>>,
}

impl PubSubDeliveryChannel {
    /// Connects the admin, publisher and subscriber clients.
    pub async fn connect(config: PubSubConfig) -> Result<Self, AdapterError> {
        Ok(Self {
            topics: config.topic_admin().await?,
            subscriptions: config.subscription_admin().await?,
            subscriber: config.subscriber().await?,
            publishers: tokio::sync::Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            config,
        })
    }

    async fn publisher(&self, instance: &InstanceId) -> Result<Publisher, DeliveryError> {
        let mut publishers = self.publishers.lock().await;
        if let Some(publisher) = publishers.get(instance) {
            return Ok(publisher.clone());
        }
        let publisher = self
            .config
            .publisher(&delivery_name(instance))
            .await
            .map_err(|e| DeliveryError::Unavailable(e.to_string()))?;
        publishers.insert(instance.clone(), publisher.clone());
        Ok(publisher)
    }
}

#[async_trait]
impl DeliveryChannel for PubSubDeliveryChannel {
    async fn publish(
        &self,
        instance: &InstanceId,
        item: DeliveryItem,
    ) -> Result<(), DeliveryError> {
        let payload = delivery_wire::encode(&item).map_err(DeliveryError::Unavailable)?;
        let publisher = self.publisher(instance).await?;
        match publisher.publish(Message::new().set_data(payload)).await {
            Ok(_) => Ok(()),
            Err(err) => {
                self.publishers.lock().await.remove(instance);
                let not_found = matches!(&err, PublishError::Rpc(rpc) if rpc.status().map(|s| s.code) == Some(Code::NotFound));
                if not_found {
                    Err(DeliveryError::UnknownInstance(instance.to_string()))
                } else {
                    Err(DeliveryError::Unavailable(err.to_string()))
                }
            }
        }
    }

    async fn subscribe(
        &self,
        instance: &InstanceId,
        capacity: usize,
    ) -> Result<DeliveryReceiver, DeliveryError> {
        let name = delivery_name(instance);
        let topic = self.config.topic_path(&name);
        let subscription = self.config.subscription_path(&name);
        let unavailable = |e: AdapterError| DeliveryError::Unavailable(e.to_string());
        ensure_topic(&self.topics, &topic)
            .await
            .map_err(unavailable)?;
        ensure_subscription(
            &self.subscriptions,
            &SubscriptionSpec {
                path: &subscription,
                topic: &topic,
                dead_letter: None,
                expire_after: Some(EXPIRE_AFTER),
                retention: Some(RETENTION),
                retry_backoff: None,
            },
        )
        .await
        .map_err(unavailable)?;
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let stop = CancellationToken::new();
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(instance.clone(), stop.clone());
        let subscriber = self.subscriber.clone();
        tokio::spawn(async move {
            info!(%subscription, "delivery subscription consuming");
            loop {
                let mut stream = subscriber.subscribe(subscription.clone()).build();
                loop {
                    let next = tokio::select! {
                        _ = stop.cancelled() => return,
                        next = stream.next() => next,
                    };
                    match next {
                        Some(Ok((message, handler))) => {
                            // The store holds every envelope: ack at once, the channel may be lossy.
                            handler.ack();
                            let Some(item) = delivery_wire::decode(&message.data) else {
                                warn!("undecodable delivery item dropped");
                                continue;
                            };
                            if sender.send(item).await.is_err() {
                                return;
                            }
                        }
                        Some(Err(err)) => {
                            warn!(cause = %err, "delivery subscription failed; retrying");
                            break;
                        }
                        None => break,
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        });
        Ok(receiver)
    }

    async fn unsubscribe(&self, instance: &InstanceId) -> Result<(), DeliveryError> {
        if let Some(stop) = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(instance)
        {
            stop.cancel();
        }
        let name = delivery_name(instance);
        let unavailable = |e: AdapterError| DeliveryError::Unavailable(e.to_string());
        delete_subscription(&self.subscriptions, &self.config.subscription_path(&name))
            .await
            .map_err(unavailable)?;
        delete_topic(&self.topics, &self.config.topic_path(&name))
            .await
            .map_err(unavailable)
    }
}
