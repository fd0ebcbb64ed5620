//! The load and latency harness: drives envelope-router and, as a baseline in the same run,
//! Mosquitto, with the same users, payloads and rates.
//!
//! # Layout
//! * `processes`: starting the router and Mosquitto on free ports; CPU time and peak RSS.
//! * `router_load`: WebSocket receivers and HTTP senders against the router.
//! * `mqtt_load`: the same load as MQTT QoS 1 publishes and subscriptions against Mosquitto.
//! * `stats`: what a run measured (latency histogram, throughput, lost and duplicated ids).
//! * `report`: the markdown table and JSON, with our figures as ratios to the baseline.
//! * `plot`: PNG plots: latency CDF of both systems, received vs offered rate.
//! * `idle`, `backlog`: memory per idle session; draining a large backlog.
//! * `scenario`: the scenarios: `embedded`, `redis`, `cluster`, `sweep`, `idle`, `backlog`.
//! * `rounds`: repeated rounds of one scenario and the medians of their ratios.

pub mod backlog;
pub mod idle;
pub mod mqtt_load;
pub mod plot;
pub mod processes;
pub mod report;
pub mod rounds;
pub mod router_load;
pub mod scenario;
pub mod stats;

use std::time::Duration;

/// The shape of the load, shared by the router run and the baseline.
#[derive(Clone, Debug)]
pub struct Load {
    /// Receivers (distinct users), each with one session.
    pub receivers: usize,
    /// Concurrent senders.
    pub senders: usize,
    /// Ciphertext bytes per envelope.
    pub payload: usize,
    /// How long senders send.
    pub duration: Duration,
    /// Envelopes per second in all (open loop); `None` sends as fast as answers come (closed loop).
    pub rate: Option<u64>,
    /// How long a WebSocket receiver gathers acks before it sends them (sooner when it has a
    /// full batch). MQTT receivers ack each publish as it comes (QoS 1 PUBACK).
    pub ack_interval: Duration,
}

impl Load {
    /// In the open loop, the ticker `sender` sends on: one tick per `senders / rate`, with the
    /// senders' first ticks spread evenly over one period, so the offered load arrives evenly
    /// instead of in bursts of `senders` at once. `None` in the closed loop.
    pub fn send_ticker(&self, sender: usize) -> Option<tokio::time::Interval> {
        let rate = self.rate?;
        let senders = self.senders.max(1);
        let period = Duration::from_secs_f64(senders as f64 / rate.max(1) as f64);
        let offset = period.mul_f64((sender % senders) as f64 / senders as f64);
        Some(tokio::time::interval_at(
            tokio::time::Instant::now() + offset,
            period,
        ))
    }
}

/// A message id carrying its send time (µs since the run started) and a sequence number.
pub fn message_id(sender: usize, seq: u64, sent_us: u64) -> String {
    format!("t{sent_us}-s{sender}-{seq}")
}

/// The send time (µs since the run started) a [`message_id`] carries.
pub fn sent_us(id: &str) -> Option<u64> {
    id.strip_prefix('t')?.split('-').next()?.parse().ok()
}

/// The sender a [`message_id`] names.
pub fn sender_of(id: &str) -> Option<usize> {
    id.split('-').nth(1)?.strip_prefix('s')?.parse().ok()
}

/// A small deterministic generator for picking receivers (no shared RNG state between tasks).
pub fn next_index(state: &mut u64, n: usize) -> usize {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state % n.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_id_gives_back_its_send_time_and_sender() {
        let id = message_id(42, 7, 1_234_567);
        assert_eq!((sent_us(&id), sender_of(&id)), (Some(1_234_567), Some(42)));
        assert_eq!((sent_us("x"), sender_of("t1-x-2")), (None, None));
    }
}
