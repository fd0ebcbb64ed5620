//! The results: a markdown table and JSON, our figures as ratios to the baseline.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::Load;
use crate::stats::RunStats;

/// One scenario's results.
#[derive(Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Receivers, senders, payload bytes, seconds, rate (0 = closed loop).
    pub load: (usize, usize, usize, f64, u64),
    /// How long WebSocket receivers gathered acks (milliseconds).
    pub ack_interval_ms: f64,
    /// Our run.
    pub router: RunStats,
    /// Mosquitto's run.
    pub baseline: RunStats,
    /// router throughput / baseline throughput.
    pub throughput_ratio: f64,
    /// router p99 / baseline p99.
    pub p99_ratio: f64,
    /// The router's closed-loop maximum measured just before, when the open-loop rate was
    /// set at half of it (`--rate half`).
    pub router_maximum_per_s: Option<f64>,
}

impl Report {
    /// Builds the report of `scenario`.
    pub fn new(scenario: &str, load: &Load, router: RunStats, baseline: RunStats) -> Self {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        Self {
            scenario: scenario.to_owned(),
            load: (
                load.receivers,
                load.senders,
                load.payload,
                load.duration.as_secs_f64(),
                load.rate.unwrap_or(0),
            ),
            ack_interval_ms: load.ack_interval.as_secs_f64() * 1000.0,
            throughput_ratio: ratio(router.throughput_per_s, baseline.throughput_per_s),
            p99_ratio: ratio(router.p99_ms, baseline.p99_ms),
            router_maximum_per_s: None,
            router,
            baseline,
        }
    }

    /// The markdown table.
    pub fn markdown(&self) -> String {
        let (r, s, p, d, rate) = self.load;
        let mut out = format!(
            "### {}\n\n{r} receivers, {s} senders, {p} B payload, {d:.0} s, {}, acks gathered for {} ms\n\n| system | accepted | received | lost | late | dup | errors | per s | p50 ms | p99 ms | max ms | CPU s | CPU µs per msg | peak RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
            self.scenario,
            match (rate, self.router_maximum_per_s) {
                (0, _) => "closed loop".to_owned(),
                (rate, None) => format!("{rate}/s open loop"),
                (rate, Some(maximum)) => format!(
                    "{rate}/s open loop (half the router's closed-loop maximum of {maximum:.0}/s, measured just before)"
                ),
            },
            self.ack_interval_ms
        );
        for run in [&self.router, &self.baseline] {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {:.1} |\n",
                run.system,
                run.accepted,
                run.received,
                run.lost,
                run.still_queued,
                run.duplicated,
                run.errors,
                run.throughput_per_s,
                run.p50_ms,
                run.p99_ms,
                run.max_ms,
                run.cpu_seconds,
                run.cpu_us_per_message(),
                run.peak_rss_kib as f64 / 1024.0
            ));
        }
        out.push_str(&format!(
            "\nthroughput ratio (router / mosquitto): **{:.2}**, p99 ratio: **{:.2}**\n",
            self.throughput_ratio, self.p99_ratio
        ));
        out
    }

    /// Writes `<scenario>.md`, `<scenario>.json` and the latency CDF `<scenario>-latency.png`
    /// under `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join(format!("{}.md", self.scenario)), self.markdown())?;
        std::fs::write(
            dir.join(format!("{}.json", self.scenario)),
            serde_json::to_string_pretty(self)?,
        )?;
        let (r, s, p, _, rate) = self.load;
        let shape = if rate == 0 {
            "closed loop".to_owned()
        } else {
            format!("{rate}/s")
        };
        crate::plot::latency_cdf(
            &dir.join(format!("{}-latency.png", self.scenario)),
            &format!(
                "{}: latency CDF ({r} receivers, {s} senders, {p} B, {shape})",
                self.scenario
            ),
            &self.router,
            &self.baseline,
        )
    }
}

/// The idle scenario's results.
#[derive(Serialize)]
pub struct IdleReport {
    /// Sessions asked for (more than were measured when the open-files limit is lower).
    pub requested: usize,
    /// Our server.
    pub router: crate::idle::IdleStats,
    /// Mosquitto.
    pub baseline: crate::idle::IdleStats,
}

/// The backlog scenario's results.
#[derive(Serialize)]
pub struct BacklogReport {
    /// Our server.
    pub router: crate::backlog::BacklogStats,
    /// Mosquitto.
    pub baseline: crate::backlog::BacklogStats,
}

/// Writes `name.md` and `name.json` under `dir`.
pub fn write(dir: &Path, name: &str, markdown: &str, json: &impl Serialize) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(format!("{name}.md")), markdown)?;
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(json)?,
    )?;
    Ok(())
}

impl IdleReport {
    /// The markdown table.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "### idle\n\n{} sessions asked\n\n| system | sessions | RSS before MiB | RSS after MiB | KiB per session |\n|---|---|---|---|---|\n",
            self.requested
        );
        for s in [&self.router, &self.baseline] {
            out.push_str(&format!(
                "| {} | {} | {:.1} | {:.1} | {:.2} |\n",
                s.system,
                s.sessions,
                s.rss_before_kib as f64 / 1024.0,
                s.rss_after_kib as f64 / 1024.0,
                s.kib_per_session
            ));
        }
        out
    }
}

impl BacklogReport {
    /// The markdown table.
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "### backlog\n\n| system | queued | fill s | drain s | received |\n|---|---|---|---|---|\n",
        );
        for s in [&self.router, &self.baseline] {
            out.push_str(&format!(
                "| {} | {} | {:.2} | {:.2} | {} |\n",
                s.system, s.queued, s.fill_seconds, s.drain_seconds, s.received
            ));
        }
        out
    }
}

/// The sweep scenario's results: each offered rate's run of both systems.
#[derive(Serialize)]
pub struct SweepReport {
    /// One point per offered rate, lowest first.
    pub points: Vec<crate::plot::SweepPoint>,
}

impl SweepReport {
    /// The markdown table.
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "### sweep\n\n| offered per s | router per s | mosquitto per s | router p99 ms | mosquitto p99 ms |\n|---|---|---|---|---|\n",
        );
        for p in &self.points {
            out.push_str(&format!(
                "| {:.0} | {:.0} | {:.0} | {:.2} | {:.2} |\n",
                p.offered_per_s,
                p.router_per_s,
                p.baseline_per_s,
                p.router_p99_ms,
                p.baseline_p99_ms
            ));
        }
        out
    }

    /// Writes `sweep.md`, `sweep.json` and the plot `sweep-throughput.png` under `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        write(dir, "sweep", &self.markdown(), self)?;
        crate::plot::throughput(
            &dir.join("sweep-throughput.png"),
            "embedded: received vs offered (open loop)",
            &self.points,
        )
    }
}
