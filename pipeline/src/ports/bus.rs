//! The envelope bus (`envelope-ingress`): ingestors publish, the processor consumes with ack/nack.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::BusError;

/// Attribute naming the recipient URN (for filters and debugging).
pub const ATTR_RECIPIENT: &str = "recipient";
/// Attribute naming the envelope's message id.
pub const ATTR_MESSAGE_ID: &str = "messageId";
/// Attribute with the ingest time, milliseconds since the Unix epoch (for routing-lag metrics).
pub const ATTR_INGESTED_AT: &str = "ingestedAt";
/// Attribute naming the ingestion path (`http`, `mqtt`).
pub const ATTR_SOURCE: &str = "source";

/// One bus message: the envelope's canonical JSON plus clear attributes (never ciphertext).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusMessage {
    /// The canonical envelope JSON.
    pub data: Bytes,
    /// Clear metadata: recipient, message id, ingest time, source.
    pub attributes: BTreeMap<String, String>,
}

/// The central bus that decouples ingest from routing.
///
/// `publish` returns only once the bus has durably accepted the message: a 202 or a PUBACK is
/// answered after it, never before.
#[async_trait]
pub trait EnvelopeBus: Send + Sync + 'static {
    /// Publishes `message`, returning once the bus confirmed it is kept.
    async fn publish(&self, message: BusMessage) -> Result<(), BusError>;

    /// Opens the processor's subscription; messages come at least once until acked.
    async fn subscribe(&self) -> Result<Box<dyn BusSubscription>, BusError>;

    /// Parks a message that can never be processed on the dead-letter topic.
    async fn dead_letter(&self, message: BusMessage, reason: &str) -> Result<(), BusError>;

    /// Whether the bus is reachable (for `/readyz`).
    async fn check(&self) -> Result<(), BusError>;
}

/// A stream of messages from the bus, each to be acked or nacked.
#[async_trait]
pub trait BusSubscription: Send {
    /// The next message; `None` once the subscription is closed.
    ///
    /// Must be cancel-safe: the processor may drop a pending call (and poll it once to take
    /// what is already waiting), and nothing may be lost by that.
    async fn next(&mut self) -> Option<ReceivedMessage>;
}

/// Settles one received message with its bus.
#[async_trait]
pub trait Acknowledger: Send {
    /// Done with the message: the bus forgets it.
    async fn ack(self: Box<Self>) -> Result<(), BusError>;
    /// Not done: the bus redelivers it later, after a backoff. `message` is the message as
    /// received, handed back so a bus that redelivers from memory need not keep a copy.
    async fn nack(self: Box<Self>, message: BusMessage) -> Result<(), BusError>;
}

/// A message received from a subscription, with the handle that settles it.
pub struct ReceivedMessage {
    /// The message as published.
    pub message: BusMessage,
    /// Delivery attempt, starting at 1.
    pub attempt: u32,
    acker: Box<dyn Acknowledger>,
}

impl ReceivedMessage {
    /// Pairs a message with its acknowledger.
    pub fn new(message: BusMessage, attempt: u32, acker: Box<dyn Acknowledger>) -> Self {
        Self {
            message,
            attempt,
            acker,
        }
    }

    /// Acks: the message is fully handled.
    pub async fn ack(self) -> Result<(), BusError> {
        self.acker.ack().await
    }

    /// Nacks: the bus redelivers the message later.
    pub async fn nack(self) -> Result<(), BusError> {
        self.acker.nack(self.message).await
    }
}
