//! Wake-ups: content-free pushes to a recipient's devices, coalesced per device.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{debug, warn};

use crate::clock::Clock;
use crate::ports::device_tokens::DeviceTokenStore;
use crate::ports::push::{PushOutcome, PushSender};
use crate::urn::UserUrn;

/// Most devices whose last wake-up time is remembered before old entries are pruned.
const MAX_REMEMBERED_DEVICES: usize = 100_000;

/// Wake-ups running in the background at once; past it new ones are skipped (and counted):
/// a provider outage must not pile up work or slow routing.
const MAX_BACKGROUND_WAKEUPS: usize = 1024;

/// Why a recipient is being woken (a metrics label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WakeReason {
    /// An envelope arrived while no session was live.
    Offline,
    /// An envelope was delivered but not acked in time.
    Unacked,
    /// The last session closed with envelopes still queued.
    Disconnected,
}

impl WakeReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            WakeReason::Offline => "offline",
            WakeReason::Unacked => "unacked",
            WakeReason::Disconnected => "disconnected",
        }
    }
}

/// What one wake-up call did, device by device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WakeReport {
    /// Pushes the provider accepted.
    pub sent: u32,
    /// Devices skipped because they were woken within the window.
    pub coalesced: u32,
    /// Pushes that failed (provider down, rejected).
    pub failed: u32,
    /// Dead tokens deleted.
    pub removed: u32,
}

/// Sends wake-ups to a user's registered devices, at most one per device per window.
pub struct Wakeups {
    tokens: Arc<dyn DeviceTokenStore>,
    push: Arc<dyn PushSender>,
    clock: Arc<dyn Clock>,
    window_ms: u64,
    last_woken: Mutex<HashMap<String, u64>>,
    background: Arc<tokio::sync::Semaphore>,
}

impl Wakeups {
    /// Wake-ups through `push` to the devices in `tokens`, coalesced per `window`.
    pub fn new(
        tokens: Arc<dyn DeviceTokenStore>,
        push: Arc<dyn PushSender>,
        clock: Arc<dyn Clock>,
        window: Duration,
    ) -> Self {
        Self {
            tokens,
            push,
            clock,
            window_ms: window.as_millis() as u64,
            last_woken: Mutex::new(HashMap::new()),
            background: Arc::new(tokio::sync::Semaphore::new(MAX_BACKGROUND_WAKEUPS)),
        }
    }

    /// Starts a wake-up of `user` in the background and returns at once, so routing never waits
    /// on a push provider (the envelope is already stored; a wake-up is a hint). When too many
    /// wake-ups are already running, this one is skipped and counted.
    pub fn wake_in_background(self: &Arc<Self>, user: &UserUrn, reason: WakeReason) {
        let Ok(permit) = self.background.clone().try_acquire_owned() else {
            warn!(recipient = %user, "too many wake-ups in flight; skipping one");
            metrics::counter!("envelope_router_push_wakeups_total", "provider" => "none", "outcome" => "skipped_overload").increment(1);
            return;
        };
        let wakeups = self.clone();
        let user = user.clone();
        tokio::spawn(async move {
            wakeups.wake(&user, reason).await;
            drop(permit);
        });
    }

    /// Claims `device` for a wake-up now, unless it was woken within the window.
    fn claim(&self, fingerprint: &str, now: u64) -> bool {
        let mut last = self
            .last_woken
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(&at) = last.get(fingerprint)
            && now.saturating_sub(at) < self.window_ms
        {
            return false;
        }
        if last.len() >= MAX_REMEMBERED_DEVICES {
            let window = self.window_ms;
            last.retain(|_, at| now.saturating_sub(*at) < window);
        }
        last.insert(fingerprint.to_owned(), now);
        true
    }

    /// Wakes `user`'s devices; failures are counted and logged, never returned (a wake-up is a
    /// hint: the envelope is already stored).
    pub async fn wake(&self, user: &UserUrn, reason: WakeReason) -> WakeReport {
        let mut report = WakeReport::default();
        let devices = match self.tokens.devices(user).await {
            Ok(devices) => devices,
            Err(err) => {
                warn!(recipient = %user, cause = %err, "wake-up skipped: device tokens unavailable");
                metrics::counter!("envelope_router_push_wakeups_total", "provider" => "none", "outcome" => "tokens_unavailable").increment(1);
                return report;
            }
        };
        if devices.is_empty() {
            debug!(recipient = %user, reason = reason.as_str(), "no registered device to wake");
        }
        for device in devices {
            let provider = self.push.provider(device.platform);
            let started = self.clock.now_ms();
            if !self.claim(&device.token.fingerprint(), started) {
                report.coalesced += 1;
                metrics::counter!("envelope_router_push_wakeups_total", "provider" => provider, "outcome" => "coalesced").increment(1);
                continue;
            }
            let outcome = match self.push.wake(&device).await {
                Ok(PushOutcome::Sent) => {
                    report.sent += 1;
                    "sent"
                }
                Ok(PushOutcome::TokenInvalid) => {
                    match self.tokens.remove_dead(user, &device.token, started).await {
                        Ok(true) => report.removed += 1,
                        Ok(false) => {}
                        Err(err) => {
                            warn!(recipient = %user, device = %device.token, cause = %err, "could not delete dead token")
                        }
                    }
                    "token_invalid"
                }
                Err(err) => {
                    report.failed += 1;
                    warn!(recipient = %user, device = %device.token, cause = %err, "wake-up failed");
                    "failed"
                }
            };
            metrics::counter!("envelope_router_push_wakeups_total", "provider" => provider, "outcome" => outcome).increment(1);
        }
        report
    }
}
