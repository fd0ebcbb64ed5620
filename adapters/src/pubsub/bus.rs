//! The Pub/Sub bus (`BUS=pubsub`): publish to `envelope-ingress` (202 only after Pub/Sub
//! confirmed), consume `envelope-ingress-router` by streaming pull with flow control and lease
//! extension; Pub/Sub dead-letters a message after its maximum delivery attempts.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use google_cloud_pubsub::client::{Publisher, Subscriber, TopicAdmin};
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::subscriber::MessageStream;
use google_cloud_pubsub::subscriber::handler::Handler;
use pipeline::error::BusError;
use pipeline::ports::bus::{
    Acknowledger, BusMessage, BusSubscription, EnvelopeBus, ReceivedMessage,
};
use pipeline::ports::bus_attributes::BusAttributes;
use tokio::sync::Semaphore;
use tracing::warn;

use crate::error::AdapterError;
use crate::pubsub::admin::prepare_ingress;
use crate::pubsub::config::PubSubConfig;

/// The Pub/Sub bus.
pub struct PubSubBus {
    config: PubSubConfig,
    publisher: Publisher,
    dead_letters: Publisher,
    subscriber: Subscriber,
    topics: TopicAdmin,
    in_flight: Arc<Semaphore>,
}

fn message(bus: &BusMessage) -> Message {
    Message::new()
        .set_data(bus.data.clone())
        .set_attributes(bus.attributes.to_map())
}

impl PubSubBus {
    /// Connects; checks (or with `create_resources` creates) the topics, and the subscription
    /// when this process consumes (`subscribe`).
    pub async fn connect(config: PubSubConfig, subscribe: bool) -> Result<Self, AdapterError> {
        prepare_ingress(&config, subscribe).await?;
        Ok(Self {
            publisher: config.publisher(&config.ingress_topic).await?,
            dead_letters: config.publisher(&config.dead_letter_topic).await?,
            subscriber: config.subscriber().await?,
            topics: config.topic_admin().await?,
            in_flight: Arc::new(Semaphore::new(config.max_in_flight_publishes.max(1))),
            config,
        })
    }

    fn stream(&self) -> MessageStream {
        self.subscriber
            .subscribe(
                self.config
                    .subscription_path(&self.config.ingress_subscription),
            )
            .set_max_outstanding_messages(self.config.max_outstanding_messages)
            .set_max_outstanding_bytes(self.config.max_outstanding_bytes)
            .build()
    }
}

#[async_trait]
impl EnvelopeBus for PubSubBus {
    async fn publish(&self, message_in: BusMessage) -> Result<(), BusError> {
        let _slot = tokio::time::timeout(self.config.publish_timeout, self.in_flight.acquire())
            .await
            .map_err(|_| BusError::Unavailable("too many publishes in flight".into()))?
            .map_err(|_| BusError::Closed)?;
        self.publisher
            .publish(message(&message_in))
            .await
            .map(|_| ())
            .map_err(|e| BusError::Unavailable(e.to_string()))
    }

    async fn subscribe(&self) -> Result<Box<dyn BusSubscription>, BusError> {
        let limit = usize::try_from(self.config.max_outstanding_messages.max(1)).unwrap_or(1);
        Ok(Box::new(PubSubSubscription {
            stream: self.stream(),
            subscriber: self.subscriber.clone(),
            config: self.config.clone(),
            outstanding: Arc::new(Semaphore::new(limit)),
        }))
    }

    async fn dead_letter(&self, message_in: BusMessage, reason: &str) -> Result<(), BusError> {
        let mut parked = message_in;
        parked.attributes.insert("deadLetterReason", reason);
        self.dead_letters
            .publish(message(&parked))
            .await
            .map(|_| ())
            .map_err(|e| BusError::Unavailable(e.to_string()))
    }

    async fn check(&self) -> Result<(), BusError> {
        self.topics
            .get_topic()
            .set_topic(self.config.topic_path(&self.config.ingress_topic))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| BusError::Unavailable(e.to_string()))
    }
}

/// A streaming pull that hands out at most `max_outstanding_messages` unsettled messages:
/// the server's flow control is best effort, this bound is exact (messages beyond it wait in
/// the client, whose leases it keeps extending).
struct PubSubSubscription {
    stream: MessageStream,
    subscriber: Subscriber,
    config: PubSubConfig,
    outstanding: Arc<Semaphore>,
}

#[async_trait]
impl BusSubscription for PubSubSubscription {
    async fn next(&mut self) -> Option<ReceivedMessage> {
        let permit = self.outstanding.clone().acquire_owned().await.ok()?;
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.stream.next().await {
                Some(Ok((message, handler))) => {
                    let attempt = handler.delivery_attempt().unwrap_or(1).max(1) as u32;
                    let bus = BusMessage::new(
                        message.data,
                        message.attributes.into_iter().collect::<BusAttributes>(),
                    );
                    let acker = PubSubAcker {
                        handler,
                        _permit: permit,
                    };
                    return Some(ReceivedMessage::new(bus, attempt, Box::new(acker)));
                }
                Some(Err(err)) => {
                    warn!(cause = %err, "streaming pull failed; retrying");
                }
                None => {
                    warn!("streaming pull ended; reopening");
                    self.stream = self
                        .subscriber
                        .subscribe(
                            self.config
                                .subscription_path(&self.config.ingress_subscription),
                        )
                        .set_max_outstanding_messages(self.config.max_outstanding_messages)
                        .set_max_outstanding_bytes(self.config.max_outstanding_bytes)
                        .build();
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

/// Settles one message; dropping it frees its flow-control slot.
struct PubSubAcker {
    handler: Handler,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

#[async_trait]
impl Acknowledger for PubSubAcker {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        self.handler.ack();
        Ok(())
    }

    async fn nack(self: Box<Self>, _message: BusMessage) -> Result<(), BusError> {
        // Pub/Sub redelivers from its own copy.
        self.handler.nack();
        Ok(())
    }
}
