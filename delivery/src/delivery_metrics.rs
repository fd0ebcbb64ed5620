//! The connection manager's per-envelope counters and histograms, registered once when it is
//! built, so a delivery or an ack increments them without looking each up by name and labels.

use metrics::{Counter, Histogram, counter, histogram};

/// Handles of every metric recorded per delivered or acked envelope.
pub struct DeliveryMetrics {
    /// `envelope_router_delivery_total{outcome="written"}`.
    pub written: Counter,
    /// `envelope_router_delivery_total{outcome="no_local_session"}`.
    pub no_local_session: Counter,
    /// `envelope_router_delivery_lag_seconds`: ingest to written to a session.
    pub delivery_lag: Histogram,
    /// `envelope_router_ack_latency_seconds`: written to acked.
    pub ack_latency: Histogram,
    /// `envelope_router_acks_total`.
    pub acks: Counter,
    /// `envelope_router_envelopes_written_total{protocol="websocket"}`.
    pub written_websocket: Counter,
}

impl DeliveryMetrics {
    /// Registers the handles with the installed recorder (none installed: they count nowhere).
    pub fn register() -> Self {
        Self {
            written: counter!("envelope_router_delivery_total", "outcome" => "written"),
            no_local_session: counter!("envelope_router_delivery_total", "outcome" => "no_local_session"),
            delivery_lag: histogram!("envelope_router_delivery_lag_seconds"),
            ack_latency: histogram!("envelope_router_ack_latency_seconds"),
            acks: counter!("envelope_router_acks_total"),
            written_websocket: counter!("envelope_router_envelopes_written_total", "protocol" => "websocket"),
        }
    }
}
