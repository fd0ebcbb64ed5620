//! What one run measured.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// The figures of one system under one load.
#[derive(Clone, Debug, Serialize)]
pub struct RunStats {
    /// Which system: `envelope-router` or `mosquitto`.
    pub system: String,
    /// Messages the system accepted (202 or PUBACK).
    pub accepted: u64,
    /// Messages received by receivers (unique ids).
    pub received: u64,
    /// Accepted, not received within the wait and not held by the system: gone.
    pub lost: u64,
    /// Accepted, not received within the wait, but still queued in the system when the run
    /// ended (counted for the router, from its `GET /messages`): late, not lost.
    pub still_queued: u64,
    /// Received more than once.
    pub duplicated: u64,
    /// Requests that failed (non-202, errors).
    pub errors: u64,
    /// Received per second over the send duration.
    pub throughput_per_s: f64,
    /// Latency percentiles, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
    /// CPU seconds the server process used.
    pub cpu_seconds: f64,
    /// Peak resident memory of the server process, KiB.
    pub peak_rss_kib: u64,
    /// The latency distribution as (milliseconds, fraction of receipts at or below), for the
    /// CDF plot.
    pub latency_cdf: Vec<(f64, f64)>,
}

impl RunStats {
    /// Counts `queued` of the envelopes not received as still held by the system (late)
    /// rather than lost.
    pub fn count_still_queued(&mut self, queued: u64) {
        self.still_queued = queued.min(self.lost);
        self.lost -= self.still_queued;
    }

    /// The server's CPU time per message received, microseconds (0 when none arrived): steadier
    /// on a shared machine than throughput, which also moves with what else runs.
    pub fn cpu_us_per_message(&self) -> f64 {
        if self.received == 0 {
            0.0
        } else {
            self.cpu_seconds * 1e6 / self.received as f64
        }
    }
}

/// Points of the CDF of `latency` (µs): denser towards the tail, where systems differ.
fn cdf_points(latency: &Histogram<u64>) -> Vec<(f64, f64)> {
    if latency.is_empty() {
        return Vec::new();
    }
    let mut points = Vec::new();
    let mut quantile = 0.0_f64;
    while quantile < 0.9999 {
        points.push((
            latency.value_at_quantile(quantile) as f64 / 1000.0,
            quantile,
        ));
        // Steps shrink as the tail nears: 5 % of what is left.
        quantile += ((1.0 - quantile) * 0.05).clamp(0.00005, 0.01);
    }
    points.push((latency.max() as f64 / 1000.0, 1.0));
    points
}

/// Collects receipts during a run.
pub struct Collector {
    /// Latency in microseconds.
    pub latency: Histogram<u64>,
    /// Ids seen by receivers.
    pub seen: HashSet<String>,
    /// Receipts of an id already seen.
    pub duplicates: u64,
}

impl Default for Collector {
    fn default() -> Self {
        Self {
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| {
                Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits is valid"))
            }),
            seen: HashSet::new(),
            duplicates: 0,
        }
    }
}

impl Collector {
    /// Records a receipt of `id` at `now_us` since the run started.
    pub fn receipt(&mut self, id: String, now_us: u64) {
        if let Some(sent) = crate::sent_us(&id) {
            let _ = self.latency.record(now_us.saturating_sub(sent).max(1));
        }
        if !self.seen.insert(id) {
            self.duplicates += 1;
        }
    }

    /// The ids of `accepted` no receiver has seen yet.
    pub fn missing<'a>(
        &'a self,
        accepted: &'a HashSet<String>,
    ) -> impl Iterator<Item = &'a String> + 'a {
        accepted.iter().filter(|id| !self.seen.contains(*id))
    }

    /// The run's figures.
    pub fn finish(
        &self,
        system: &str,
        accepted: &HashSet<String>,
        errors: u64,
        sending: Duration,
    ) -> RunStats {
        let lost = self.missing(accepted).count() as u64;
        let ms = |v: u64| v as f64 / 1000.0;
        RunStats {
            system: system.to_owned(),
            accepted: accepted.len() as u64,
            received: self.seen.len() as u64,
            lost,
            still_queued: 0,
            duplicated: self.duplicates,
            errors,
            throughput_per_s: self.seen.len() as f64 / sending.as_secs_f64().max(0.001),
            p50_ms: ms(self.latency.value_at_quantile(0.5)),
            p99_ms: ms(self.latency.value_at_quantile(0.99)),
            max_ms: ms(self.latency.max()),
            cpu_seconds: 0.0,
            peak_rss_kib: 0,
            latency_cdf: cdf_points(&self.latency),
        }
    }
}

/// Waits until every accepted id was received, or `within` passed (the last envelopes of a run).
pub async fn wait_for_receipts(
    collector: &Arc<Mutex<Collector>>,
    accepted: &HashSet<String>,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let done = {
            let collector = collector.lock().unwrap_or_else(|p| p.into_inner());
            collector.missing(accepted).next().is_none()
        };
        if done {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::RunStats;

    fn run(cpu_seconds: f64, received: u64) -> RunStats {
        RunStats {
            system: "test".into(),
            accepted: received,
            received,
            lost: 0,
            still_queued: 0,
            duplicated: 0,
            errors: 0,
            throughput_per_s: 0.0,
            p50_ms: 0.0,
            p99_ms: 0.0,
            max_ms: 0.0,
            cpu_seconds,
            peak_rss_kib: 0,
            latency_cdf: Vec::new(),
        }
    }

    #[test]
    fn cpu_per_message_divides_cpu_time_by_what_arrived() {
        assert_eq!(run(2.0, 1000).cpu_us_per_message(), 2000.0);
        assert_eq!(run(2.0, 0).cpu_us_per_message(), 0.0);
    }

    #[test]
    fn envelopes_still_queued_count_as_late_not_lost() {
        let mut stats = run(1.0, 90);
        stats.lost = 10;
        stats.count_still_queued(4);
        assert_eq!((stats.lost, stats.still_queued), (6, 4));
        let mut stats = run(1.0, 90);
        stats.lost = 3;
        stats.count_still_queued(7);
        assert_eq!(
            (stats.lost, stats.still_queued),
            (0, 3),
            "never more late than missing"
        );
    }
}
