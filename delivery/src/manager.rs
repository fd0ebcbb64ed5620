//! The connection manager: this instance's live sessions and its side of presence.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use foldhash::{HashMap, HashMapExt};
use pipeline::clock::Clock;
use pipeline::error::{DeliveryError, PresenceError, StoreError};
use pipeline::ports::delivery_channel::{
    DeliveryChannel, DeliveryItem, DeliveryReceiver, DeliverySink,
};
use pipeline::ports::envelope_store::EnvelopeStore;
use pipeline::ports::presence::{PresenceStore, Protocol, SessionInfo};
use pipeline::routing::{WakeReason, Wakeups};
use pipeline::{InstanceId, MessageId, SessionId, UserUrn};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::DeliveryConfig;
use crate::delivery_metrics::DeliveryMetrics;
use crate::unacked::UnackedTracker;

/// An envelope on its way to one session.
#[derive(Clone, Debug)]
pub struct Outbound {
    /// The envelope's id.
    pub message_id: MessageId,
    /// The canonical envelope JSON.
    pub json: Arc<str>,
    /// Not stored: no ack tracking.
    pub ephemeral: bool,
    /// Ingest time (ms since the epoch), for the delivery-lag metric.
    pub ingested_at_ms: Option<u64>,
}

/// Why the manager closed a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The instance is shutting down: the client should reconnect elsewhere (WebSocket 1012).
    Restart,
    /// The session fell behind its queue bound (WebSocket 1013): the store keeps the data.
    Overflow,
}

struct LocalSession {
    id: SessionId,
    sender: mpsc::Sender<Arc<Outbound>>,
    close: CancellationToken,
    reason: Arc<Mutex<Option<CloseReason>>>,
}

/// A session's end of the manager: live envelopes in, a token that says when to close.
pub struct SessionHandle {
    /// The session's id.
    pub id: SessionId,
    /// Whose session it is.
    pub user: UserUrn,
    /// Live envelopes for this session. Shared, not copied, between a user's sessions; a
    /// pointer per slot also keeps each idle session's channel small (its first block of
    /// slots is allocated when the session opens).
    pub receiver: mpsc::Receiver<Arc<Outbound>>,
    /// Cancelled when the manager wants the session closed.
    pub close: CancellationToken,
    reason: Arc<Mutex<Option<CloseReason>>>,
}

impl SessionHandle {
    /// Why the manager asked to close, once `close` is cancelled.
    pub fn close_reason(&self) -> Option<CloseReason> {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Holds this instance's sessions, consumes its delivery channel, beats its liveness.
pub struct ConnectionManager {
    instance: InstanceId,
    config: DeliveryConfig,
    presence: Arc<dyn PresenceStore>,
    store: Arc<dyn EnvelopeStore>,
    channel: Arc<dyn DeliveryChannel>,
    wakeups: Arc<Wakeups>,
    clock: Arc<dyn Clock>,
    sessions: Mutex<HashMap<UserUrn, Vec<LocalSession>>>,
    unacked: Mutex<UnackedTracker>,
    shutting_down: CancellationToken,
    metrics: DeliveryMetrics,
}

impl ConnectionManager {
    /// A manager for `instance` over these ports.
    pub fn new(
        instance: InstanceId,
        config: DeliveryConfig,
        presence: Arc<dyn PresenceStore>,
        store: Arc<dyn EnvelopeStore>,
        channel: Arc<dyn DeliveryChannel>,
        wakeups: Arc<Wakeups>,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        Arc::new(Self {
            instance,
            config,
            presence,
            store,
            channel,
            wakeups,
            clock,
            sessions: Mutex::new(HashMap::new()),
            unacked: Mutex::new(UnackedTracker::default()),
            shutting_down: CancellationToken::new(),
            metrics: DeliveryMetrics::register(),
        })
    }

    /// This instance's id.
    pub fn instance(&self) -> &InstanceId {
        &self.instance
    }

    /// The session settings.
    pub fn config(&self) -> &DeliveryConfig {
        &self.config
    }

    /// The per-envelope metrics of deliveries and acks.
    pub fn metrics(&self) -> &DeliveryMetrics {
        &self.metrics
    }

    /// The envelope store (backlogs, acks).
    pub fn store(&self) -> &Arc<dyn EnvelopeStore> {
        &self.store
    }

    /// Presence (MQTT sessions are refreshed by their devices, not by this instance).
    pub fn presence(&self) -> &Arc<dyn PresenceStore> {
        &self.presence
    }

    /// How many sessions this instance holds.
    pub fn session_count(&self) -> usize {
        self.lock_sessions().values().map(Vec::len).sum()
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<UserUrn, Vec<LocalSession>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_unacked(&self) -> std::sync::MutexGuard<'_, UnackedTracker> {
        self.unacked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Announces the instance alive and opens its delivery channel; call before accepting.
    ///
    /// Where the channel can hand items over directly (in-process), the publisher's task
    /// dispatches them to the sessions itself and there is no receiver to consume (`None`).
    pub async fn start(self: &Arc<Self>) -> Result<Option<DeliveryReceiver>, StartError> {
        self.presence
            .instance_alive(&self.instance, self.config.instance_ttl)
            .await?;
        let sink = Arc::downgrade(self) as Weak<dyn DeliverySink>;
        if self.channel.attach(&self.instance, sink) {
            debug!(instance = %self.instance, "delivery items are dispatched on the publisher's task");
            return Ok(None);
        }
        Ok(Some(
            self.channel
                .subscribe(&self.instance, self.config.channel_capacity)
                .await?,
        ))
    }

    /// Runs the instance's background work until `shutdown`: the delivery channel consumer
    /// (given the `receiver` that [`ConnectionManager::start`] opened), the liveness beat and
    /// the unacked sweeper. Then closes every session with [`CloseReason::Restart`] and
    /// removes the instance from presence.
    pub async fn run(
        self: Arc<Self>,
        mut receiver: Option<DeliveryReceiver>,
        shutdown: CancellationToken,
    ) {
        let mut beat = tokio::time::interval(self.config.instance_beat);
        let mut sweep = tokio::time::interval(Duration::from_secs(1).min(self.config.ack_timeout));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                item = next_item(&mut receiver), if receiver.is_some() => match item {
                    Some(item) => self.dispatch(item),
                    None => break,
                },
                _ = beat.tick() => {
                    if let Err(err) = self.presence.instance_alive(&self.instance, self.config.instance_ttl).await {
                        warn!(cause = %err, "instance liveness beat failed");
                    }
                }
                _ = sweep.tick() => self.sweep_unacked().await,
            }
        }
        self.close_all(CloseReason::Restart);
        if let Err(err) = self.channel.unsubscribe(&self.instance).await {
            warn!(cause = %err, "could not close the delivery channel");
        }
        if let Err(err) = self.presence.remove_instance(&self.instance).await {
            warn!(cause = %err, "could not remove the instance from presence");
        }
    }

    /// Asks every session to close (shutdown); they send their close frames themselves.
    pub fn close_all(&self, reason: CloseReason) {
        self.shutting_down.cancel();
        for session in self.lock_sessions().values().flatten() {
            close_session(session, reason);
        }
    }

    /// Whether the instance is closing (new sessions are refused).
    pub fn is_closing(&self) -> bool {
        self.shutting_down.is_cancelled()
    }

    /// Writes a delivery item to the user's local sessions, without waiting on any of them.
    pub fn dispatch(&self, item: DeliveryItem) {
        let outbound = Arc::new(Outbound {
            message_id: item.message_id.clone(),
            json: item.json,
            ephemeral: item.ephemeral,
            ingested_at_ms: item.ingested_at_ms,
        });
        let ingested_at_ms = item.ingested_at_ms;
        let mut written = 0;
        {
            let sessions = self.lock_sessions();
            for session in sessions.get(&item.recipient).into_iter().flatten() {
                match session.sender.try_send(outbound.clone()) {
                    Ok(()) => written += 1,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        warn!(recipient = %item.recipient, session = %session.id, "session queue full; closing the slow session");
                        metrics::counter!("envelope_router_sessions_closed_total", "reason" => "overflow").increment(1);
                        close_session(session, CloseReason::Overflow);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
        }
        if written > 0 {
            self.record_delivery_lag(ingested_at_ms);
            self.metrics.written.increment(1);
        } else {
            self.metrics.no_local_session.increment(1);
            debug!(message_id = %item.message_id, recipient = %item.recipient, "no local session for delivery item; it stays stored");
        }
    }

    /// Records the ingest → written-to-a-session lag of a live envelope.
    pub fn record_delivery_lag(&self, ingested_at_ms: Option<u64>) {
        if let Some(at) = ingested_at_ms {
            let lag = self.clock.now_ms().saturating_sub(at) as f64 / 1000.0;
            self.metrics.delivery_lag.record(lag);
        }
    }

    /// Notes that `id` was written to a session of `user`: it must be acked within the ack
    /// timeout or the recipient is woken.
    pub fn written(&self, user: &UserUrn, id: &MessageId) {
        let deadline = Instant::now() + self.config.ack_timeout;
        self.lock_unacked().written(user, id, deadline);
    }

    /// Deletes acked envelopes from the store; returns how many were there.
    pub async fn ack(&self, user: &UserUrn, ids: &[MessageId]) -> Result<usize, StoreError> {
        let removed = self.store.ack(user, ids).await?;
        let now = Instant::now();
        for written in self.lock_unacked().acked(user, ids) {
            self.metrics
                .ack_latency
                .record(now.saturating_duration_since(written).as_secs_f64());
        }
        self.metrics.acks.increment(removed as u64);
        Ok(removed)
    }

    async fn sweep_unacked(&self) {
        let overdue = self.lock_unacked().overdue(Instant::now());
        let mut woken: Vec<UserUrn> = Vec::new();
        for (user, id) in overdue {
            if woken.contains(&user) {
                continue;
            }
            match self.store.contains(&user, &id).await {
                Ok(true) => {
                    info!(recipient = %user, message_id = %id, "envelope unacked past the ack timeout; waking recipient");
                    self.wakeups.wake_in_background(&user, WakeReason::Unacked);
                    woken.push(user);
                }
                Ok(false) => {}
                Err(err) => warn!(cause = %err, "unacked check failed"),
            }
        }
    }

    /// Opens a session of `user`: it gets live envelopes first, then counts in presence.
    pub async fn open_session(
        &self,
        user: &UserUrn,
        protocol: Protocol,
    ) -> Result<SessionHandle, PresenceError> {
        if self.is_closing() {
            return Err(PresenceError::Unavailable(
                "instance is shutting down".into(),
            ));
        }
        let id = SessionId::random();
        let (sender, receiver) = mpsc::channel(self.config.session_queue.max(1));
        let close = CancellationToken::new();
        let reason = Arc::new(Mutex::new(None));
        self.lock_sessions()
            .entry(user.clone())
            .or_default()
            .push(LocalSession {
                id: id.clone(),
                sender,
                close: close.clone(),
                reason: reason.clone(),
            });
        let now = self.clock.now_ms();
        let info = SessionInfo {
            session: id.clone(),
            user: user.clone(),
            instance: self.instance.clone(),
            protocol,
            connected_at_ms: now,
            last_seen_ms: now,
        };
        if let Err(err) = self.presence.register(&info, self.config.session_ttl).await {
            self.forget(user, &id);
            return Err(err);
        }
        metrics::counter!("envelope_router_sessions_opened_total", "protocol" => protocol.as_str())
            .increment(1);
        match self.store.oldest_enqueued_ms(user).await {
            Ok(Some(at)) => {
                let age = self.clock.now_ms().saturating_sub(at) as f64 / 1000.0;
                metrics::histogram!("envelope_router_backlog_oldest_age_seconds").record(age);
            }
            Ok(None) => {}
            Err(err) => debug!(cause = %err, "oldest-envelope age unavailable"),
        }
        Ok(SessionHandle {
            id,
            user: user.clone(),
            receiver,
            close,
            reason,
        })
    }

    /// Refreshes a session's presence; re-registers it if presence lost it.
    pub async fn heartbeat(&self, handle: &SessionHandle, protocol: Protocol) {
        let ttl = self.config.session_ttl;
        match self.presence.heartbeat(&handle.user, &handle.id, ttl).await {
            Ok(true) => {}
            Ok(false) => {
                let now = self.clock.now_ms();
                let info = SessionInfo {
                    session: handle.id.clone(),
                    user: handle.user.clone(),
                    instance: self.instance.clone(),
                    protocol,
                    connected_at_ms: now,
                    last_seen_ms: now,
                };
                if let Err(err) = self.presence.register(&info, ttl).await {
                    warn!(cause = %err, "session re-registration failed");
                }
            }
            Err(err) => warn!(cause = %err, "session heartbeat failed"),
        }
    }

    /// Drops a session from this instance's map.
    fn forget(&self, user: &UserUrn, id: &SessionId) {
        let mut sessions = self.lock_sessions();
        if let Some(list) = sessions.get_mut(user) {
            list.retain(|s| &s.id != id);
            if list.is_empty() {
                sessions.remove(user);
            }
        }
    }

    /// Closes a session: out of presence, and a wake-up if it was the user's last live session
    /// anywhere while envelopes are still queued.
    pub async fn close_session(&self, handle: SessionHandle) {
        self.forget(&handle.user, &handle.id);
        if let Err(err) = self.presence.unregister(&handle.user, &handle.id).await {
            warn!(cause = %err, "could not unregister session");
        }
        if self.is_closing() {
            // A restart: the client reconnects to another instance at once.
            return;
        }
        let still_online = match self.presence.sessions(&handle.user).await {
            Ok(sessions) => !sessions.is_empty(),
            Err(_) => false,
        };
        if still_online {
            return;
        }
        match self.store.depth(&handle.user).await {
            Ok(0) => {}
            Ok(depth) => {
                info!(recipient = %handle.user, depth, "last session closed with envelopes queued; waking recipient");
                self.wakeups
                    .wake_in_background(&handle.user, WakeReason::Disconnected);
            }
            Err(err) => warn!(cause = %err, "queue depth check failed"),
        }
    }
}

impl DeliverySink for ConnectionManager {
    fn deliver(&self, item: DeliveryItem) {
        self.dispatch(item);
    }
}

/// The next item of `receiver`; `None` once it is closed (or there is none).
async fn next_item(receiver: &mut Option<DeliveryReceiver>) -> Option<DeliveryItem> {
    receiver.as_mut()?.recv().await
}

fn close_session(session: &LocalSession, reason: CloseReason) {
    let mut slot = session.reason.lock().unwrap_or_else(|p| p.into_inner());
    if slot.is_none() {
        *slot = Some(reason);
    }
    session.close.cancel();
}

/// Why an instance could not start delivering.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Presence refused the liveness beat.
    #[error(transparent)]
    Presence(#[from] PresenceError),
    /// The delivery channel could not be opened.
    #[error(transparent)]
    Channel(#[from] DeliveryError),
}
