//! `cargo run --release -p bench -- embedded [options]`: measures envelope-router against
//! Mosquitto in the same run and writes `bench/results/<scenario>.{md,json}`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use bench::{Load, scenario};
use clap::{Parser, ValueEnum};

/// A scenario.
#[derive(ValueEnum, Clone, Copy, Debug)]
enum Scenario {
    /// `serve` with its defaults.
    Embedded,
}

/// Load and latency harness of envelope-router, with Mosquitto as the baseline.
#[derive(Parser, Debug)]
struct Args {
    /// What to run.
    #[arg(value_enum)]
    scenario: Scenario,
    /// Receivers (users with one session each).
    #[arg(long, default_value_t = 100)]
    receivers: usize,
    /// Concurrent senders.
    #[arg(long, default_value_t = 16)]
    senders: usize,
    /// Ciphertext bytes per envelope.
    #[arg(long, default_value_t = 1024)]
    payload: usize,
    /// How long to send.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    duration: Duration,
    /// Envelopes per second in all (open loop); unset: closed loop at maximum.
    #[arg(long)]
    rate: Option<u64>,
    /// The router binary (a release build).
    #[arg(long, default_value = "target/release/envelope-router")]
    router_bin: PathBuf,
    /// The Mosquitto binary.
    #[arg(long, default_value = "/usr/sbin/mosquitto")]
    mosquitto_bin: PathBuf,
    /// Where results go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let load = Load {
        receivers: args.receivers,
        senders: args.senders,
        payload: args.payload,
        duration: args.duration,
        rate: args.rate,
    };
    let report = match args.scenario {
        Scenario::Embedded => scenario::embedded(&args.router_bin, &args.mosquitto_bin, &load)
            .await
            .context("embedded scenario")?,
    };
    report.write(&args.out)?;
    println!("{}", report.markdown());
    Ok(())
}
