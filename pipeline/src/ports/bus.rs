//! The envelope bus (`envelope-ingress`): ingestors publish, the processor consumes with ack/nack.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::envelope_header::EnvelopeHeader;
use crate::error::BusError;
use crate::ports::bus_attributes::BusAttributes;

/// Attribute naming the recipient URN (for filters and debugging).
pub const ATTR_RECIPIENT: &str = "recipient";
/// Attribute naming the envelope's message id.
pub const ATTR_MESSAGE_ID: &str = "messageId";
/// Attribute with the ingest time, milliseconds since the Unix epoch (for routing-lag metrics).
pub const ATTR_INGESTED_AT: &str = "ingestedAt";
/// Attribute naming the ingestion path (`http`, `mqtt`).
pub const ATTR_SOURCE: &str = "source";

/// One bus message: the envelope's canonical JSON plus clear attributes (never ciphertext).
///
/// Messages are equal when their data and attributes are: what an ingestor validated (see
/// [`BusMessage::validated`]) is a memo of the data, not part of the message.
#[derive(Clone, Debug)]
pub struct BusMessage {
    /// The canonical envelope JSON.
    pub data: Bytes,
    /// Clear metadata: recipient, message id, ingest time, source.
    pub attributes: BusAttributes,
    /// The header and text an ingestor in this process validated `data` as; trusted only
    /// while `data` still points at that text (see [`BusMessage::validated_envelope`]).
    validated: Option<Validated>,
}

/// An envelope an ingestor validated, kept with the message built from it so a bus that
/// hands messages over in memory spares the processor a second parse.
#[derive(Clone)]
struct Validated {
    /// Its clear header.
    header: EnvelopeHeader,
    /// Its canonical JSON, the very buffer the message's `data` was made over.
    json: Arc<str>,
}

impl fmt::Debug for Validated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validated")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

/// Lets `data` share the validated text's buffer instead of copying it.
struct JsonText(Arc<str>);

impl AsRef<[u8]> for JsonText {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl BusMessage {
    /// A message of `data` with `attributes`, as a bus reads it off the wire or a disk: the
    /// processor parses and validates `data` itself.
    pub fn new(data: Bytes, attributes: impl Into<BusAttributes>) -> Self {
        Self {
            data,
            attributes: attributes.into(),
            validated: None,
        }
    }

    /// A message whose data is `json`, the canonical text of an envelope an ingestor has
    /// validated, with that envelope's `header`. A bus that carries the message out of the
    /// process sends only the data; one that hands it over in memory keeps the pair, and the
    /// transformer takes it instead of parsing `json` again.
    pub fn validated(header: EnvelopeHeader, json: Arc<str>, attributes: BusAttributes) -> Self {
        Self {
            data: Bytes::from_owner(JsonText(json.clone())),
            attributes,
            validated: Some(Validated { header, json }),
        }
    }

    /// The header and text given to [`BusMessage::validated`], while `data` is still that
    /// text: the memo holds the buffer, so a `data` at its address and of its length cannot
    /// be anything else. `None` for a message made by [`BusMessage::new`] or whose data
    /// was replaced.
    pub fn validated_envelope(&self) -> Option<(&EnvelopeHeader, &Arc<str>)> {
        let validated = self.validated.as_ref()?;
        let same = validated.json.as_ptr() == self.data.as_ptr()
            && validated.json.len() == self.data.len();
        same.then_some((&validated.header, &validated.json))
    }
}

impl PartialEq for BusMessage {
    fn eq(&self, other: &Self) -> bool {
        self.data == other.data && self.attributes == other.attributes
    }
}

impl Eq for BusMessage {}

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
