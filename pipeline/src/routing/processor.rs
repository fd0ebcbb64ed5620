//! The processor: store first, then deliver to live sessions or wake the recipient.

use std::collections::BTreeSet;
use std::sync::Arc;

use std::hash::{Hash, Hasher};
use thiserror::Error;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, warn};

use crate::clock::Clock;
use crate::envelope::Envelope;
use crate::ports::bus::{
    ATTR_INGESTED_AT, ATTR_RECIPIENT, BusMessage, BusSubscription, EnvelopeBus, ReceivedMessage,
};
use crate::ports::delivery_channel::{DeliveryChannel, DeliveryItem};
use crate::ports::envelope_store::{EnqueueOutcome, EnvelopeStore, QueuedEnvelope};
use crate::ports::presence::PresenceStore;
use crate::routing::transformer::transform;
use crate::routing::wakeup::{WakeReason, Wakeups};

/// What the processor did with an envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routed {
    /// Handed to the delivery channel of at least one instance.
    Delivered,
    /// No live session: stored (unless ephemeral) and a wake-up sent.
    Offline,
    /// A client resent a known `messageId`: nothing to do.
    Duplicate,
}

/// Why processing failed.
#[derive(Debug, Error)]
pub enum ProcessError {
    /// Can never succeed (invalid envelope): dead-letter it.
    #[error("permanent: {0}")]
    Permanent(String),
    /// A backend failed; nack and retry later.
    #[error("transient: {0}")]
    Transient(String),
}

/// Routes envelopes from the bus. Holds only its ports.
pub struct Processor {
    store: Arc<dyn EnvelopeStore>,
    presence: Arc<dyn PresenceStore>,
    delivery: Arc<dyn DeliveryChannel>,
    wakeups: Arc<Wakeups>,
    clock: Arc<dyn Clock>,
}

impl Processor {
    /// A processor over these ports.
    pub fn new(
        store: Arc<dyn EnvelopeStore>,
        presence: Arc<dyn PresenceStore>,
        delivery: Arc<dyn DeliveryChannel>,
        wakeups: Arc<Wakeups>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            presence,
            delivery,
            wakeups,
            clock,
        }
    }

    /// Routes one bus message; `attempt` is the bus's delivery attempt (1 for the first).
    ///
    /// Order: (1) store unless ephemeral, (2) presence lookup and hand-off to every instance
    /// holding a session, (3) otherwise a wake-up. A known `messageId` on a first attempt is a
    /// client's resend and stops at (1); on a redelivery (attempt > 1) routing goes on, since
    /// the earlier attempt may have failed after storing.
    pub async fn process(
        &self,
        message: &BusMessage,
        attempt: u32,
    ) -> Result<Routed, ProcessError> {
        let (envelope, json) =
            transform(message).map_err(|err| ProcessError::Permanent(err.to_string()))?;
        if !envelope.ephemeral {
            let queued = QueuedEnvelope {
                message_id: envelope.message_id.clone(),
                recipient: envelope.recipient.clone(),
                express: envelope.priority.is_express(),
                json: json.clone(),
            };
            let outcome = self
                .store
                .enqueue(&queued)
                .await
                .map_err(|err| ProcessError::Transient(err.to_string()))?;
            if outcome == EnqueueOutcome::Duplicate && attempt <= 1 {
                debug!(message_id = %envelope.message_id, recipient = %envelope.recipient, "duplicate messageId dropped");
                metrics::counter!("envelope_router_envelopes_total", "stage" => "processor", "outcome" => "duplicate").increment(1);
                return Ok(Routed::Duplicate);
            }
        }
        let ingested_at = message
            .attributes
            .get(ATTR_INGESTED_AT)
            .and_then(|at| at.parse::<u64>().ok());
        let routed = self.route_stored(&envelope, json, ingested_at).await?;
        self.record_lag(ingested_at);
        Ok(routed)
    }

    /// Steps 2 and 3: hand to live sessions, or wake the recipient.
    async fn route_stored(
        &self,
        envelope: &Envelope,
        json: Arc<str>,
        ingested_at_ms: Option<u64>,
    ) -> Result<Routed, ProcessError> {
        let sessions = self
            .presence
            .sessions(&envelope.recipient)
            .await
            .map_err(|err| {
                metrics::counter!("envelope_router_presence_lookups_total", "outcome" => "error")
                    .increment(1);
                ProcessError::Transient(err.to_string())
            })?;
        let found = if sessions.is_empty() {
            "offline"
        } else {
            "online"
        };
        metrics::counter!("envelope_router_presence_lookups_total", "outcome" => found)
            .increment(1);
        let instances: BTreeSet<_> = sessions.into_iter().map(|s| s.instance).collect();
        let mut handed = 0usize;
        for instance in &instances {
            let item = DeliveryItem {
                recipient: envelope.recipient.clone(),
                message_id: envelope.message_id.clone(),
                json: json.clone(),
                ephemeral: envelope.ephemeral,
                ingested_at_ms,
            };
            match self.delivery.publish(instance, item).await {
                Ok(()) => handed += 1,
                Err(err) => {
                    warn!(message_id = %envelope.message_id, %instance, cause = %err, "delivery channel refused envelope; it stays stored");
                }
            }
        }
        if handed > 0 {
            metrics::counter!("envelope_router_envelopes_total", "stage" => "processor", "outcome" => "delivered").increment(1);
            return Ok(Routed::Delivered);
        }
        metrics::counter!("envelope_router_envelopes_total", "stage" => "processor", "outcome" => "offline").increment(1);
        if !envelope.ephemeral {
            self.wakeups
                .wake_in_background(&envelope.recipient, WakeReason::Offline);
        }
        Ok(Routed::Offline)
    }

    fn record_lag(&self, ingested_at_ms: Option<u64>) {
        if let Some(ingested) = ingested_at_ms {
            let lag = self.clock.now_ms().saturating_sub(ingested) as f64 / 1000.0;
            metrics::histogram!("envelope_router_routing_lag_seconds").record(lag);
        }
    }

    /// Settles one received message by the outcome of [`Processor::process`].
    async fn handle(&self, bus: &dyn EnvelopeBus, received: ReceivedMessage) {
        let result = self.process(&received.message, received.attempt).await;
        let settled = match result {
            Ok(_) => {
                metrics::counter!("envelope_router_bus_total", "op" => "ack").increment(1);
                received.ack().await
            }
            Err(ProcessError::Transient(cause)) => {
                warn!(attempt = received.attempt, %cause, "routing failed; nacking for redelivery");
                metrics::counter!("envelope_router_bus_total", "op" => "nack").increment(1);
                received.nack().await
            }
            Err(ProcessError::Permanent(cause)) => {
                warn!(%cause, "unroutable bus message; dead-lettering");
                match bus.dead_letter(received.message.clone(), &cause).await {
                    Ok(()) => {
                        metrics::counter!("envelope_router_bus_total", "op" => "dead_letter")
                            .increment(1);
                        received.ack().await
                    }
                    Err(err) => {
                        error!(cause = %err, "dead-letter publish failed; nacking");
                        received.nack().await
                    }
                }
            }
        };
        if let Err(err) = settled {
            warn!(cause = %err, "could not settle bus message; the bus will redeliver it");
        }
    }

    /// Consumes `subscription` until `shutdown` with `concurrency` workers, then lets the
    /// envelopes already handed to workers finish.
    ///
    /// Messages are sharded by recipient: one worker routes all of a recipient's envelopes in
    /// bus order, so they are stored (and delivered) in the order they were accepted, while
    /// different recipients are routed in parallel.
    pub async fn run(
        self: Arc<Self>,
        bus: Arc<dyn EnvelopeBus>,
        mut subscription: Box<dyn BusSubscription>,
        concurrency: usize,
        shutdown: CancellationToken,
    ) {
        let tracker = TaskTracker::new();
        let mut shards = Vec::with_capacity(concurrency.max(1));
        for _ in 0..concurrency.max(1) {
            let (sender, mut receiver) = mpsc::channel::<ReceivedMessage>(SHARD_QUEUE);
            let processor = self.clone();
            let bus = bus.clone();
            tracker.spawn(async move {
                while let Some(received) = receiver.recv().await {
                    processor.handle(bus.as_ref(), received).await;
                }
            });
            shards.push(sender);
        }
        loop {
            let received = tokio::select! {
                _ = shutdown.cancelled() => break,
                received = subscription.next() => match received {
                    Some(received) => received,
                    None => break,
                },
            };
            let shard = &shards[shard_of(&received.message, shards.len())];
            tokio::select! {
                _ = shutdown.cancelled() => break,
                sent = shard.send(received) => if sent.is_err() { break },
            }
        }
        drop(shards);
        tracker.close();
        tracker.wait().await;
    }
}

/// Messages a worker holds before the consumer waits for it (backpressure to the bus).
const SHARD_QUEUE: usize = 32;

/// The worker of `message`: by recipient attribute, else by content.
fn shard_of(message: &BusMessage, shards: usize) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    match message.attributes.get(ATTR_RECIPIENT) {
        Some(recipient) => recipient.hash(&mut hasher),
        None => message.data.hash(&mut hasher),
    }
    (hasher.finish() % shards as u64) as usize
}
