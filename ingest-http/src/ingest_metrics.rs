//! The HTTP ingestor's per-envelope counter, registered once with the state, so accepting an
//! envelope increments it without looking it up by name and labels (the processor does the
//! same with its own, `pipeline::routing::processor_metrics`).

use metrics::{Counter, counter};

/// Handles of the counters `POST /send` bumps on every accepted envelope.
pub struct IngestMetrics {
    /// `envelope_router_envelopes_total{stage="ingest",source="http",outcome="accepted"}`.
    pub accepted: Counter,
}

impl IngestMetrics {
    /// Registers the handles with the installed recorder (none installed: they count nowhere).
    pub fn register() -> Self {
        Self {
            accepted: counter!("envelope_router_envelopes_total", "stage" => "ingest", "source" => "http", "outcome" => "accepted"),
        }
    }
}
