//! Pub/Sub settings and client construction.

use std::time::Duration;

use google_cloud_auth::credentials::anonymous;
use google_cloud_pubsub::client::{Publisher, Subscriber, SubscriptionAdmin, TopicAdmin};

use crate::error::AdapterError;

/// Where and how to use Pub/Sub.
#[derive(Clone, Debug)]
pub struct PubSubConfig {
    /// The Google Cloud project (`PUBSUB_PROJECT`).
    pub project: String,
    /// `host:port` of the emulator (`PUBSUB_EMULATOR_HOST`); `None` on Google Cloud.
    pub emulator_host: Option<String>,
    /// The ingress topic (`envelope-ingress`).
    pub ingress_topic: String,
    /// The processor's subscription (`envelope-ingress-router`).
    pub ingress_subscription: String,
    /// Where poison messages go (`envelope-ingress-dead`).
    pub dead_letter_topic: String,
    /// Delivery attempts before Pub/Sub dead-letters a message.
    pub max_delivery_attempts: i32,
    /// Flow control: messages leased at once by the processor.
    pub max_outstanding_messages: i64,
    /// Flow control: bytes leased at once by the processor.
    pub max_outstanding_bytes: i64,
    /// Publishes waiting for confirmation at once (the client's queue is unbounded).
    pub max_in_flight_publishes: usize,
    /// How long `/send` waits for a publish slot before answering 503.
    pub publish_timeout: Duration,
    /// Create missing topics and subscriptions (dev, emulator) instead of failing.
    pub create_resources: bool,
}

impl PubSubConfig {
    /// `projects/<p>/topics/<name>`.
    pub fn topic_path(&self, name: &str) -> String {
        format!("projects/{}/topics/{name}", self.project)
    }

    /// `projects/<p>/subscriptions/<name>`.
    pub fn subscription_path(&self, name: &str) -> String {
        format!("projects/{}/subscriptions/{name}", self.project)
    }

    fn endpoint(&self) -> Option<String> {
        self.emulator_host
            .as_ref()
            .map(|host| format!("http://{host}"))
    }

    fn failed(what: &str, err: impl std::fmt::Display) -> AdapterError {
        AdapterError::Unreachable {
            backend: "pubsub",
            cause: format!("{what}: {err}"),
        }
    }

    /// A topic admin client.
    pub async fn topic_admin(&self) -> Result<TopicAdmin, AdapterError> {
        let mut builder = TopicAdmin::builder();
        if let Some(endpoint) = self.endpoint() {
            builder = builder
                .with_endpoint(endpoint)
                .with_credentials(anonymous::Builder::new().build());
        }
        builder
            .build()
            .await
            .map_err(|e| Self::failed("topic admin", e))
    }

    /// A subscription admin client.
    pub async fn subscription_admin(&self) -> Result<SubscriptionAdmin, AdapterError> {
        let mut builder = SubscriptionAdmin::builder();
        if let Some(endpoint) = self.endpoint() {
            builder = builder
                .with_endpoint(endpoint)
                .with_credentials(anonymous::Builder::new().build());
        }
        builder
            .build()
            .await
            .map_err(|e| Self::failed("subscription admin", e))
    }

    /// A batching publisher for `topic` (a short name).
    pub async fn publisher(&self, topic: &str) -> Result<Publisher, AdapterError> {
        let mut builder = Publisher::builder(self.topic_path(topic))
            .set_delay_threshold(Duration::from_millis(5))
            .set_message_count_threshold(100_u32);
        if let Some(endpoint) = self.endpoint() {
            builder = builder
                .with_endpoint(endpoint)
                .with_credentials(anonymous::Builder::new().build());
        }
        builder
            .build()
            .await
            .map_err(|e| Self::failed("publisher", e))
    }

    /// A subscriber client.
    pub async fn subscriber(&self) -> Result<Subscriber, AdapterError> {
        let mut builder = Subscriber::builder();
        if let Some(endpoint) = self.endpoint() {
            builder = builder
                .with_endpoint(endpoint)
                .with_credentials(anonymous::Builder::new().build());
        }
        builder
            .build()
            .await
            .map_err(|e| Self::failed("subscriber", e))
    }
}
