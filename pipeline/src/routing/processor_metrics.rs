//! The processor's counters and histograms, registered once when it is built, so routing an
//! envelope increments them without looking each up by name and labels.

use metrics::{Counter, Histogram, counter, histogram};

/// Handles of every metric the processor records per envelope.
pub struct ProcessorMetrics {
    /// `envelope_router_envelopes_total{stage="processor",outcome="delivered"}`.
    pub delivered: Counter,
    /// `envelope_router_envelopes_total{stage="processor",outcome="offline"}`.
    pub offline: Counter,
    /// `envelope_router_envelopes_total{stage="processor",outcome="duplicate"}`.
    pub duplicate: Counter,
    /// `envelope_router_presence_lookups_total{outcome="online"}`.
    pub presence_online: Counter,
    /// `envelope_router_presence_lookups_total{outcome="offline"}`.
    pub presence_offline: Counter,
    /// `envelope_router_presence_lookups_total{outcome="error"}`.
    pub presence_error: Counter,
    /// `envelope_router_routing_lag_seconds`: ingest to routed.
    pub routing_lag: Histogram,
    /// `envelope_router_processor_batch_envelopes`: messages a routing worker routed together.
    pub batch: Histogram,
    /// `envelope_router_bus_total{op="ack"}`.
    pub bus_ack: Counter,
    /// `envelope_router_bus_total{op="nack"}`.
    pub bus_nack: Counter,
    /// `envelope_router_bus_total{op="dead_letter"}`.
    pub bus_dead_letter: Counter,
}

impl ProcessorMetrics {
    /// Registers the handles with the installed recorder (none installed: they count nowhere).
    pub fn register() -> Self {
        Self {
            delivered: counter!("envelope_router_envelopes_total", "stage" => "processor", "outcome" => "delivered"),
            offline: counter!("envelope_router_envelopes_total", "stage" => "processor", "outcome" => "offline"),
            duplicate: counter!("envelope_router_envelopes_total", "stage" => "processor", "outcome" => "duplicate"),
            presence_online: counter!("envelope_router_presence_lookups_total", "outcome" => "online"),
            presence_offline: counter!("envelope_router_presence_lookups_total", "outcome" => "offline"),
            presence_error: counter!("envelope_router_presence_lookups_total", "outcome" => "error"),
            routing_lag: histogram!("envelope_router_routing_lag_seconds"),
            batch: histogram!("envelope_router_processor_batch_envelopes"),
            bus_ack: counter!("envelope_router_bus_total", "op" => "ack"),
            bus_nack: counter!("envelope_router_bus_total", "op" => "nack"),
            bus_dead_letter: counter!("envelope_router_bus_total", "op" => "dead_letter"),
        }
    }
}
