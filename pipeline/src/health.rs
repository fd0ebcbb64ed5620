//! The ingest gate: the latest known health of what an accepted envelope needs, so ingest can
//! answer 503 at once instead of accepting what it cannot store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::ports::bus::EnvelopeBus;
use crate::ports::envelope_store::EnvelopeStore;

/// Whether the bus and the store answered their latest check.
#[derive(Debug)]
pub struct IngestGate {
    bus_up: AtomicBool,
    store_up: AtomicBool,
}

impl Default for IngestGate {
    fn default() -> Self {
        Self {
            bus_up: AtomicBool::new(true),
            store_up: AtomicBool::new(true),
        }
    }
}

impl IngestGate {
    /// `Err(component)` while a component ingest depends on is down.
    pub fn accepting(&self) -> Result<(), &'static str> {
        if !self.store_up.load(Ordering::Relaxed) {
            return Err("store");
        }
        if !self.bus_up.load(Ordering::Relaxed) {
            return Err("bus");
        }
        Ok(())
    }

    fn record(flag: &AtomicBool, name: &str, up: bool, cause: Option<String>) {
        let was = flag.swap(up, Ordering::Relaxed);
        match (was, up) {
            (true, false) => warn!(
                component = name,
                cause = cause.unwrap_or_default(),
                "component down; ingest answers 503"
            ),
            (false, true) => info!(component = name, "component back; ingest accepts again"),
            _ => {}
        }
    }

    /// Checks `bus` and `store` every `interval` until `shutdown`.
    pub async fn monitor(
        self: Arc<Self>,
        bus: Arc<dyn EnvelopeBus>,
        store: Arc<dyn EnvelopeStore>,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {
                    let (bus_result, store_result) = tokio::join!(bus.check(), store.check());
                    Self::record(&self.bus_up, "bus", bus_result.is_ok(), bus_result.err().map(|e| e.to_string()));
                    Self::record(&self.store_up, "store", store_result.is_ok(), store_result.err().map(|e| e.to_string()));
                }
            }
        }
    }
}
