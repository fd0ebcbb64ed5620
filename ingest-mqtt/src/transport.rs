//! What the ingestor needs from an MQTT client: messages in, manual PUBACK, replies out.

use async_trait::async_trait;
use bytes::Bytes;
use thiserror::Error;

/// A failed MQTT operation.
#[derive(Debug, Error)]
#[error("mqtt: {0}")]
pub struct MqttError(pub String);

/// A QoS 1 message received from the broker, not yet acknowledged.
pub struct InboundMessage {
    /// The topic it was published to.
    pub topic: String,
    /// The payload.
    pub payload: Bytes,
    /// MQTT v5 user properties (`authorization` carries the JWT).
    pub user_properties: Vec<(String, String)>,
    /// MQTT v5 response topic, for error replies.
    pub response_topic: Option<String>,
    /// MQTT v5 correlation data, echoed in replies.
    pub correlation_data: Option<Bytes>,
    /// The transport's handle to acknowledge it.
    pub ack_token: Box<dyn std::any::Any + Send + Sync>,
}

/// An MQTT client connection as the ingestor uses it.
#[async_trait]
pub trait MqttTransport: Send + Sync {
    /// The next message; `None` once the transport is closed.
    async fn next(&self) -> Option<InboundMessage>;

    /// Sends the PUBACK of `message` (only after the bus confirmed it).
    async fn ack(&self, message: &InboundMessage) -> Result<(), MqttError>;

    /// Publishes a QoS 0 reply to `topic` with `correlation_data`.
    async fn reply(
        &self,
        topic: &str,
        payload: Bytes,
        correlation_data: Option<Bytes>,
    ) -> Result<(), MqttError>;

    /// Publishes `payload` to `topic` with QoS 1 (the broker keeps it for a persistent client).
    async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), MqttError>;
}
