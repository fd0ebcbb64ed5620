//! The processor: store first, then deliver to live sessions or wake the recipient.

use std::sync::Arc;

use std::hash::{Hash, Hasher};
use thiserror::Error;

use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, warn};

use crate::clock::Clock;
use crate::envelope_header::EnvelopeHeader;
use crate::instance_id::InstanceId;
use crate::ports::bus::{BusMessage, BusSubscription, EnvelopeBus, ReceivedMessage};
use crate::ports::delivery_channel::{DeliveryChannel, DeliveryItem};
use crate::ports::envelope_store::{Durability, EnqueueOutcome, EnvelopeStore, QueuedEnvelope};
use crate::ports::presence::{PresenceStore, SessionInfo};
use crate::routing::processor_metrics::ProcessorMetrics;
use crate::routing::transformer::transform;
use crate::routing::wakeup::{WakeReason, Wakeups};
use crate::urn::UserUrn;

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
    metrics: Arc<ProcessorMetrics>,
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
            metrics: Arc::new(ProcessorMetrics::register()),
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
        self.process_batch(&[(message, attempt)])
            .await
            .pop()
            .unwrap_or_else(|| Err(ProcessError::Transient("empty batch".into())))
    }

    /// Routes `batch` (messages with their delivery attempts) in order, as
    /// [`Processor::process`] would one by one, with one store write for all of them and one
    /// presence lookup; returns one result per message, in order, once what was stored is
    /// durable.
    ///
    /// A store failure fails every stored envelope of the batch (transient: nacked, retried).
    pub async fn process_batch(
        &self,
        batch: &[(&BusMessage, u32)],
    ) -> Vec<Result<Routed, ProcessError>> {
        self.route_batch(batch).await.settled().await
    }

    /// Routes `batch` as [`Processor::process_batch`] does, but answers as soon as the
    /// envelopes are stored (not yet durable) and handed on: the results hold until
    /// [`RoutedBatch::settled`] says the store made them durable.
    pub async fn route_batch(&self, batch: &[(&BusMessage, u32)]) -> RoutedBatch {
        let mut results: Vec<Option<Result<Routed, ProcessError>>> =
            (0..batch.len()).map(|_| None).collect();
        let mut parsed = Vec::with_capacity(batch.len());
        for (index, (message, _)) in batch.iter().enumerate() {
            match transform(message) {
                Ok((envelope, json)) => parsed.push((index, envelope, json)),
                Err(err) => results[index] = Some(Err(ProcessError::Permanent(err.to_string()))),
            }
        }
        // (1) Store every non-ephemeral envelope in one write.
        let queued: Vec<QueuedEnvelope> = parsed
            .iter()
            .filter(|(_, envelope, _)| !envelope.ephemeral)
            .map(|(_, envelope, json)| QueuedEnvelope {
                message_id: envelope.message_id.clone(),
                recipient: envelope.recipient.clone(),
                express: envelope.express,
                json: json.clone(),
            })
            .collect();
        let stored = if queued.is_empty() {
            None
        } else {
            Some(self.store.enqueue_staged(&queued).await)
        };
        let mut durable: Option<Durability> = None;
        let mut outcomes = match stored {
            None => Vec::new().into_iter(),
            Some(Ok(staged)) if staged.outcomes.len() == queued.len() => {
                durable = Some(staged.durable);
                staged.outcomes.into_iter()
            }
            Some(failed) => {
                let cause = match failed {
                    Err(err) => err.to_string(),
                    Ok(_) => "the store answered a different number of outcomes".into(),
                };
                for (index, envelope, _) in &parsed {
                    if !envelope.ephemeral {
                        results[*index] = Some(Err(ProcessError::Transient(cause.clone())));
                    }
                }
                Vec::new().into_iter()
            }
        };
        let mut to_route = Vec::with_capacity(parsed.len());
        for (index, envelope, json) in parsed {
            if results[index].is_some() {
                continue;
            }
            if !envelope.ephemeral
                && outcomes.next() == Some(EnqueueOutcome::Duplicate)
                && batch[index].1 <= 1
            {
                debug!(message_id = %envelope.message_id, recipient = %envelope.recipient, "duplicate messageId dropped");
                self.metrics.duplicate.increment(1);
                results[index] = Some(Ok(Routed::Duplicate));
                continue;
            }
            to_route.push((index, envelope, json));
        }
        // (2) and (3): one presence lookup for the batch, then hand-offs in bus order.
        let recipients: Vec<UserUrn> = to_route
            .iter()
            .map(|(_, envelope, _)| envelope.recipient.clone())
            .collect();
        let sessions = self.lookup(&recipients).await;
        for ((index, envelope, json), sessions) in to_route.into_iter().zip(sessions) {
            let ingested_at = batch[index].0.attributes.ingested_at_ms();
            let routed = match sessions {
                Ok(sessions) => {
                    let routed = self
                        .route_stored(&envelope, json, sessions, ingested_at)
                        .await;
                    self.record_lag(ingested_at);
                    Ok(routed)
                }
                Err(cause) => Err(ProcessError::Transient(cause)),
            };
            results[index] = Some(routed);
        }
        RoutedBatch {
            results: results
                .into_iter()
                .map(|r| r.unwrap_or_else(|| Err(ProcessError::Transient("not routed".into()))))
                .collect(),
            durable,
        }
    }

    /// The live sessions of each of `users` (one lookup), or the lookup's error for each.
    async fn lookup(&self, users: &[UserUrn]) -> Vec<Result<Vec<SessionInfo>, String>> {
        if users.is_empty() {
            return Vec::new();
        }
        match self.presence.sessions_many(users).await {
            Ok(all) if all.len() == users.len() => {
                let offline = all.iter().filter(|sessions| sessions.is_empty()).count();
                self.metrics.presence_offline.increment(offline as u64);
                self.metrics
                    .presence_online
                    .increment((all.len() - offline) as u64);
                all.into_iter().map(Ok).collect()
            }
            failed => {
                self.metrics.presence_error.increment(users.len() as u64);
                let cause = match failed {
                    Err(err) => err.to_string(),
                    Ok(_) => "presence answered a different number of users".into(),
                };
                users.iter().map(|_| Err(cause.clone())).collect()
            }
        }
    }

    /// Steps 2 and 3: hand to the instances holding `sessions`, or wake the recipient.
    async fn route_stored(
        &self,
        envelope: &EnvelopeHeader,
        json: Arc<str>,
        sessions: Vec<SessionInfo>,
        ingested_at_ms: Option<u64>,
    ) -> Routed {
        let mut handed = 0usize;
        for instance in distinct_instances(&sessions) {
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
            self.metrics.delivered.increment(1);
            return Routed::Delivered;
        }
        self.metrics.offline.increment(1);
        if !envelope.ephemeral {
            self.wakeups
                .wake_in_background(&envelope.recipient, WakeReason::Offline);
        }
        Routed::Offline
    }

    fn record_lag(&self, ingested_at_ms: Option<u64>) {
        if let Some(ingested) = ingested_at_ms {
            let lag = self.clock.now_ms().saturating_sub(ingested) as f64 / 1000.0;
            self.metrics.routing_lag.record(lag);
        }
    }

    /// Acks, nacks or dead-letters one received message by its routing `result`.
    async fn settle(
        bus: &dyn EnvelopeBus,
        metrics: &ProcessorMetrics,
        received: ReceivedMessage,
        result: Result<Routed, ProcessError>,
    ) {
        let settled = match result {
            Ok(_) => {
                metrics.bus_ack.increment(1);
                received.ack().await
            }
            Err(ProcessError::Transient(cause)) => {
                warn!(attempt = received.attempt, %cause, "routing failed; nacking for redelivery");
                metrics.bus_nack.increment(1);
                received.nack().await
            }
            Err(ProcessError::Permanent(cause)) => {
                warn!(%cause, "unroutable bus message; dead-lettering");
                match bus.dead_letter(received.message.clone(), &cause).await {
                    Ok(()) => {
                        metrics.bus_dead_letter.increment(1);
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
    /// With one worker, the consuming task routes what it takes itself: every message waiting
    /// on the bus (up to [`WORKER_BATCH`]) as one batch, in bus order. With more, messages are
    /// sharded by recipient: one worker routes all of a recipient's envelopes in bus order, so
    /// they are stored (and delivered) in the order they were accepted, while different
    /// recipients are routed in parallel.
    pub async fn run(
        self: Arc<Self>,
        bus: Arc<dyn EnvelopeBus>,
        mut subscription: Box<dyn BusSubscription>,
        concurrency: usize,
        shutdown: CancellationToken,
    ) {
        let workers = concurrency.max(1);
        let worker = Worker {
            processor: self,
            bus,
            unsettled_bound: (UNSETTLED_MESSAGES / workers).max(MIN_UNSETTLED_PER_WORKER),
        };
        if workers == 1 {
            let source = BatchSource::Subscription {
                subscription,
                shutdown,
            };
            worker.run(source).await;
            return;
        }
        let tracker = TaskTracker::new();
        let mut shards = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (sender, receiver) = mpsc::channel::<ReceivedMessage>(SHARD_QUEUE);
            tracker.spawn(worker.clone().run(BatchSource::Shard(receiver)));
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

/// Messages a shard holds before the consumer waits for it (backpressure to the bus).
const SHARD_QUEUE: usize = 64;

/// Most messages a worker routes together (one store write, one presence lookup).
const WORKER_BATCH: usize = 64;

/// Routed messages of all workers together that may wait for their store's durability at
/// once. Counted in messages, not batches: under light load a worker routes many batches of
/// one or two messages per commit interval, and a count of batches would stop it until the
/// next commit.
const UNSETTLED_MESSAGES: usize = 64 * MIN_UNSETTLED_PER_WORKER;

/// The least a worker may have waiting for durability: eight full batches.
const MIN_UNSETTLED_PER_WORKER: usize = 8 * WORKER_BATCH;

/// Where a worker takes its batches from.
enum BatchSource {
    /// Its shard of the consumer's messages.
    Shard(mpsc::Receiver<ReceivedMessage>),
    /// The bus subscription itself (a single worker), until `shutdown`.
    Subscription {
        subscription: Box<dyn BusSubscription>,
        shutdown: CancellationToken,
    },
}

impl BatchSource {
    /// Moves the messages waiting (at least one, at most [`WORKER_BATCH`]) into `batch`;
    /// false once none will come. Cancel-safe: a cancelled call has taken nothing.
    async fn fill(&mut self, batch: &mut Vec<ReceivedMessage>) -> bool {
        let first = match self {
            Self::Shard(receiver) => receiver.recv().await,
            Self::Subscription {
                subscription,
                shutdown,
            } => tokio::select! {
                _ = shutdown.cancelled() => None,
                received = subscription.next() => received,
            },
        };
        let Some(first) = first else {
            return false;
        };
        batch.push(first);
        self.take_ready(batch);
        true
    }

    /// Moves the messages ready now (none waited for) into `batch`, up to [`WORKER_BATCH`].
    fn take_ready(&mut self, batch: &mut Vec<ReceivedMessage>) {
        while batch.len() < WORKER_BATCH {
            let ready = match self {
                Self::Shard(receiver) => receiver.try_recv().ok(),
                // `next` is cancel-safe, so polling it once and dropping it takes nothing.
                Self::Subscription { subscription, .. } => {
                    subscription.next().now_or_never().flatten()
                }
            };
            match ready {
                Some(received) => batch.push(received),
                None => return,
            }
        }
    }

    /// Lets the tasks already runnable on this worker run before `batch` is routed, and adds
    /// what they published meanwhile, up to [`GATHER_YIELDS`] times while each finds more.
    ///
    /// The embedded bus hands a message on from its publisher's task, and tokio runs the
    /// routing task it woke right after that one (its LIFO slot), before the other requests
    /// ready beside it: routed at once, every message would be a batch of its own, and so
    /// would its store write, its bus ack and its session's flush. Tokio runs a yielded task
    /// once its worker has run every ready task and polled for I/O, so under load this
    /// gathers the messages of the requests in flight into one batch, and on an idle worker
    /// it costs a poll of the I/O driver and no wait.
    async fn gather(&mut self, batch: &mut Vec<ReceivedMessage>) {
        for _ in 0..GATHER_YIELDS {
            if batch.len() >= WORKER_BATCH {
                return;
            }
            tokio::task::yield_now().await;
            let before = batch.len();
            self.take_ready(batch);
            if batch.len() == before {
                return;
            }
        }
    }
}

/// Most times a worker lets other tasks run while it gathers a batch: once for the tasks
/// runnable when it yields, once more for those their I/O woke.
const GATHER_YIELDS: usize = 2;

/// One routing worker: routes its batches in order, and settles each (acks, nacks) on its own
/// task once what the batch stored is durable, while it goes on routing.
#[derive(Clone)]
struct Worker {
    processor: Arc<Processor>,
    bus: Arc<dyn EnvelopeBus>,
    /// Most routed messages waiting for durability before the worker takes no more.
    unsettled_bound: usize,
}

impl Worker {
    /// Routes what `source` gives until it ends, then settles what is left.
    async fn run(self, mut source: BatchSource) {
        let mut settling = FuturesUnordered::new();
        let mut unsettled = 0usize;
        let mut batch = Vec::with_capacity(WORKER_BATCH);
        loop {
            // Never both branches off: a message unsettled is a batch still settling.
            tokio::select! {
                biased;
                Some(settled) = settling.next(), if !settling.is_empty() => {
                    unsettled -= settled;
                }
                more = source.fill(&mut batch), if unsettled < self.unsettled_bound => {
                    if !more {
                        break;
                    }
                    source.gather(&mut batch).await;
                    self.processor.metrics.batch.record(batch.len() as f64);
                    unsettled += batch.len();
                    let batch = std::mem::take(&mut batch);
                    let routed = {
                        let messages: Vec<(&BusMessage, u32)> = batch
                            .iter()
                            .map(|received| (&received.message, received.attempt))
                            .collect();
                        self.processor.route_batch(&messages).await
                    };
                    settling.push(settle_batch(
                        self.bus.clone(),
                        self.processor.metrics.clone(),
                        batch,
                        routed,
                    ));
                }
            }
        }
        while settling.next().await.is_some() {}
    }
}

/// Waits until `routed` is settled, then acks, nacks or dead-letters each message of `batch`
/// by its result, all at once; returns how many messages it settled.
async fn settle_batch(
    bus: Arc<dyn EnvelopeBus>,
    metrics: Arc<ProcessorMetrics>,
    batch: Vec<ReceivedMessage>,
    routed: RoutedBatch,
) -> usize {
    let count = batch.len();
    let results = routed.settled().await;
    let settles = batch
        .into_iter()
        .zip(results)
        .map(|(received, result)| Processor::settle(bus.as_ref(), &metrics, received, result));
    futures_util::future::join_all(settles).await;
    count
}

/// A routed batch: its results, and the durability of what it stored, which they wait for.
pub struct RoutedBatch {
    results: Vec<Result<Routed, ProcessError>>,
    durable: Option<Durability>,
}

impl RoutedBatch {
    /// The results once what the batch stored is durable; if it never will be, every
    /// success becomes a transient failure, so its bus message comes again.
    pub async fn settled(self) -> Vec<Result<Routed, ProcessError>> {
        let Some(durable) = self.durable else {
            return self.results;
        };
        match durable.await {
            Ok(()) => self.results,
            Err(err) => {
                let cause = format!("store write not durable: {err}");
                self.results
                    .into_iter()
                    .map(|result| result.and(Err(ProcessError::Transient(cause.clone()))))
                    .collect()
            }
        }
    }
}

/// The instances holding `sessions`, each once however many of the sessions it holds. A
/// recipient has a handful of sessions at most: a scan costs less than building a set.
fn distinct_instances(sessions: &[SessionInfo]) -> impl Iterator<Item = &InstanceId> {
    sessions
        .iter()
        .enumerate()
        .filter(|(at, session)| {
            !sessions[..*at]
                .iter()
                .any(|earlier| earlier.instance == session.instance)
        })
        .map(|(_, session)| &session.instance)
}

/// The worker of `message`: by recipient attribute, else by content.
fn shard_of(message: &BusMessage, shards: usize) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    match message.attributes.recipient() {
        Some(recipient) => recipient.hash(&mut hasher),
        None => message.data.hash(&mut hasher),
    }
    (hasher.finish() % shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::presence::Protocol;
    use crate::session_id::SessionId;

    fn session(instance: &InstanceId, n: u32) -> SessionInfo {
        SessionInfo {
            session: SessionId::from_stored(&format!("s-{n}")),
            user: UserUrn::parse("urn:x:user:bob").unwrap(),
            instance: instance.clone(),
            protocol: Protocol::WebSocket,
            connected_at_ms: 0,
            last_seen_ms: 0,
        }
    }

    /// Settles nothing: the batching tests only count messages.
    struct Unsettled;

    #[async_trait::async_trait]
    impl crate::ports::bus::Acknowledger for Unsettled {
        async fn ack(self: Box<Self>) -> Result<(), crate::error::BusError> {
            Ok(())
        }
        async fn nack(self: Box<Self>, _: BusMessage) -> Result<(), crate::error::BusError> {
            Ok(())
        }
    }

    fn received(n: u8) -> ReceivedMessage {
        let message = BusMessage::new(
            bytes::Bytes::from(vec![n]),
            std::collections::BTreeMap::new(),
        );
        ReceivedMessage::new(message, 1, Box::new(Unsettled))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_batch_gathers_what_the_tasks_ready_beside_it_publish() {
        let (publish, receiver) = mpsc::channel(WORKER_BATCH);
        let mut source = BatchSource::Shard(receiver);
        // Three requests ready to run, and one that only runs once the first three did.
        for n in 1..=3u8 {
            let publish = publish.clone();
            tokio::spawn(async move {
                publish.send(received(n)).await.unwrap();
                if n == 3 {
                    tokio::spawn(async move { publish.send(received(4)).await.unwrap() });
                }
            });
        }
        publish.send(received(0)).await.unwrap();
        let mut batch = Vec::new();
        assert!(source.fill(&mut batch).await);
        assert_eq!(batch.len(), 1, "the others have not run yet");
        source.gather(&mut batch).await;
        let order: Vec<u8> = batch.iter().map(|r| r.message.data[0]).collect();
        assert_eq!(order, [0, 1, 2, 3, 4], "one batch, in publish order");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn gathering_stops_at_a_yield_that_finds_nothing_and_at_a_full_batch() {
        let (publish, receiver) = mpsc::channel(2 * WORKER_BATCH);
        let mut source = BatchSource::Shard(receiver);
        publish.send(received(0)).await.unwrap();
        let mut batch = Vec::new();
        assert!(source.fill(&mut batch).await);
        source.gather(&mut batch).await;
        assert_eq!(batch.len(), 1, "nothing else was ready");
        // More than a batch waiting: the first fill is full, and gathering takes no more.
        for n in 0..WORKER_BATCH + 5 {
            publish.send(received(n as u8)).await.unwrap();
        }
        let mut batch = Vec::new();
        assert!(source.fill(&mut batch).await);
        source.gather(&mut batch).await;
        assert_eq!(batch.len(), WORKER_BATCH);
        drop(publish);
        let mut rest = Vec::new();
        assert!(source.fill(&mut rest).await);
        assert_eq!(rest.len(), 5);
        assert!(!source.fill(&mut Vec::new()).await, "none will come");
    }

    #[test]
    fn each_instance_is_handed_an_envelope_once_whatever_its_session_count() {
        let (a, b, c) = (
            InstanceId::new("a"),
            InstanceId::new("b"),
            InstanceId::new("c"),
        );
        let sessions = [
            session(&b, 1),
            session(&a, 2),
            session(&b, 3),
            session(&c, 4),
            session(&a, 5),
        ];
        let handed: Vec<&InstanceId> = distinct_instances(&sessions).collect();
        assert_eq!(handed, [&b, &a, &c], "first-seen order, no repeats");
        assert_eq!(distinct_instances(&[]).count(), 0);
        assert_eq!(distinct_instances(&sessions[..1]).collect::<Vec<_>>(), [&b]);
    }
}
