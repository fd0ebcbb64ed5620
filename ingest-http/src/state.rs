//! The handlers' shared state: only ports and settings, behind one `Arc` cloned per request.

use std::ops::Deref;
use std::sync::Arc;

use axum::http::HeaderValue;
use delivery::ConnectionManager;
use pipeline::clock::{Clock, IdGenerator};
use pipeline::health::IngestGate;
use pipeline::ports::{DeviceTokenStore, EnvelopeBus, EnvelopeStore, PresenceStore, RateLimiter};

use crate::auth::Authenticator;
use crate::ingest_metrics::IngestMetrics;

/// Renders the Prometheus text exposition.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// The handlers' state: a cheap handle on [`ApiParts`].
///
/// axum clones the state for every extractor of every request; one reference count to bump
/// instead of one per port keeps that off the profile.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// What an [`AppState`] shares: the parts and the counters registered for them.
struct Shared {
    parts: ApiParts,
    metrics: IngestMetrics,
}

impl AppState {
    /// The state holding `parts`, with the ingest counters registered.
    pub fn new(parts: ApiParts) -> Self {
        Self(Arc::new(Shared {
            parts,
            metrics: IngestMetrics::register(),
        }))
    }

    /// The counters the handlers bump per envelope.
    pub fn ingest_metrics(&self) -> &IngestMetrics {
        &self.0.metrics
    }
}

impl Deref for AppState {
    type Target = ApiParts;
    fn deref(&self) -> &ApiParts {
        &self.0.parts
    }
}

/// Everything the HTTP API needs.
pub struct ApiParts {
    /// Verifies tokens.
    pub auth: Arc<Authenticator>,
    /// Where accepted envelopes go.
    pub bus: Arc<dyn EnvelopeBus>,
    /// Queues, for the pull path (`/messages`).
    pub store: Arc<dyn EnvelopeStore>,
    /// Presence, for `/readyz`.
    pub presence: Arc<dyn PresenceStore>,
    /// Push tokens (`/register-device`).
    pub devices: Arc<dyn DeviceTokenStore>,
    /// Per-sender token buckets.
    pub sender_limiter: Arc<dyn RateLimiter>,
    /// Per (sender, recipient) token buckets.
    pub pair_limiter: Arc<dyn RateLimiter>,
    /// 503 at ingest while the store or bus is down.
    pub gate: Arc<IngestGate>,
    /// Ids for envelopes that come without one.
    pub ids: Arc<dyn IdGenerator>,
    /// Ingest timestamps.
    pub clock: Arc<dyn Clock>,
    /// Live sessions (`/connect`); `None` on instances without the delivery role.
    pub delivery: Option<Arc<ConnectionManager>>,
    /// Whether this instance runs the api role (`/send`); without it `/send` answers 503.
    pub ingest: bool,
    /// Which components `/readyz` checks (only those this instance's roles use).
    pub ready: ReadyChecks,
    /// Largest request body, bytes.
    pub max_body: usize,
    /// Browser origins allowed (CORS and WebSocket `Origin`); empty = no CORS.
    pub cors_origins: Arc<[HeaderValue]>,
    /// The `/metrics` text.
    pub metrics: MetricsRender,
}

/// The components `/readyz` checks besides the store (which every role uses) and delivery
/// (checked when this instance holds sessions).
#[derive(Clone, Copy, Debug)]
pub struct ReadyChecks {
    /// The bus (api and processor roles).
    pub bus: bool,
    /// Presence (delivery and processor roles).
    pub presence: bool,
}
