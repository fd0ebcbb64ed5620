//! Per-instance delivery channels: the processor hands an envelope to the instance holding a
//! recipient's live session; that instance writes it to the session.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::error::DeliveryError;
use crate::instance_id::InstanceId;
use crate::message_id::MessageId;
use crate::urn::UserUrn;

/// One envelope for the live sessions of one recipient on one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryItem {
    /// Whose sessions get it.
    pub recipient: UserUrn,
    /// The envelope's id (acks name it).
    pub message_id: MessageId,
    /// The canonical envelope JSON.
    pub json: Arc<str>,
    /// Ephemeral envelopes are not stored: no ack tracking, no wake-up.
    pub ephemeral: bool,
    /// When the envelope was accepted at ingest (ms since the epoch), for the delivery-lag metric.
    pub ingested_at_ms: Option<u64>,
}

/// An instance's own handling of its items, for a channel that can hand them over directly:
/// on the publisher's task, instead of through the instance's [`DeliveryReceiver`].
pub trait DeliverySink: Send + Sync + 'static {
    /// Writes `item` to the instance's sessions, without waiting on any of them.
    fn deliver(&self, item: DeliveryItem);
}

/// The receiving end an instance consumes.
pub type DeliveryReceiver = mpsc::Receiver<DeliveryItem>;

/// Routes delivery items to instances.
///
/// A channel may be lossy: every stored envelope is also in the store, so a missed item is
/// delivered from the backlog on the next connect (and an unacked envelope triggers a wake-up).
#[async_trait]
pub trait DeliveryChannel: Send + Sync + 'static {
    /// Hands `item` to `instance`'s channel.
    async fn publish(&self, instance: &InstanceId, item: DeliveryItem)
    -> Result<(), DeliveryError>;

    /// Opens `instance`'s own channel, bounded to `capacity` items in flight.
    async fn subscribe(
        &self,
        instance: &InstanceId,
        capacity: usize,
    ) -> Result<DeliveryReceiver, DeliveryError>;

    /// Closes `instance`'s channel (graceful shutdown).
    async fn unsubscribe(&self, instance: &InstanceId) -> Result<(), DeliveryError>;

    /// Instead of `subscribe`: from now until `unsubscribe`, hands `instance`'s items straight
    /// to `sink` (held weakly) on the publisher's task, if this channel can (an in-process
    /// channel: one task hop fewer per envelope). False if it cannot; the instance then
    /// subscribes and consumes its receiver.
    fn attach(&self, instance: &InstanceId, sink: Weak<dyn DeliverySink>) -> bool {
        let _ = (instance, sink);
        false
    }
}
