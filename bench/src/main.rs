//! `cargo run --release -p bench -- embedded [options]`: measures envelope-router against
//! Mosquitto in the same run and writes `bench/results/<scenario>.{md,json}`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bench::report::Report;
use bench::rounds::{Rounds, median_index};
use bench::{Load, scenario};
use clap::{Parser, ValueEnum};

/// A scenario.
#[derive(ValueEnum, Clone, Copy, Debug)]
enum Scenario {
    /// `serve` with its defaults: throughput and latency.
    Embedded,
    /// The same load with presence, queues and rate limits in Redis (`--redis-url`).
    Redis,
    /// Instances A and B plus a processor over Redis and the Pub/Sub emulator
    /// (`--pubsub-emulator-host`), once with `DELIVERY=pubsub` and once with `DELIVERY=redis`.
    Cluster,
    /// The embedded load open loop at each of `--rates`: received vs offered, plotted.
    Sweep,
    /// Memory per idle session (`--sessions`).
    Idle,
    /// An offline user with `--queued` envelopes connects and drains.
    Backlog,
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
    /// Envelopes per second in all (open loop); `half`: half the router's maximum, measured
    /// by a closed-loop run of the router alone before each round (embedded, redis); unset:
    /// closed loop at maximum.
    #[arg(long, value_parser = parse_rate)]
    rate: Option<Rate>,
    /// How long a WebSocket receiver gathers acks before sending them (or 64 of them).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20ms")]
    ack_interval: Duration,
    /// Rounds of the embedded and redis scenarios, each running the router then Mosquitto;
    /// the round with the median throughput ratio gives the full table and plot.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// The router binary (a release build).
    #[arg(long, default_value = "target/release/envelope-router")]
    router_bin: PathBuf,
    /// The Mosquitto binary.
    #[arg(long, default_value = "/usr/sbin/mosquitto")]
    mosquitto_bin: PathBuf,
    /// Idle sessions to open (idle scenario).
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Envelopes to queue (backlog scenario).
    #[arg(long, default_value_t = 100_000)]
    queued: usize,
    /// Offered rates of the sweep scenario, envelopes per second in all.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "2000,4000,8000,16000,32000"
    )]
    rates: Vec<u64>,
    /// Redis of the redis scenario (a scratch instance).
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    redis_url: String,
    /// The Pub/Sub emulator of the cluster scenario (`host:port`; `infra/dev/pubsub-emulator.sh
    /// start <dir>` starts one and prints it).
    #[arg(long, env = "PUBSUB_EMULATOR_HOST")]
    pubsub_emulator_host: Option<String>,
    /// Where results go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
}

/// The open-loop rate asked for.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Rate {
    /// This many envelopes per second in all.
    PerSecond(u64),
    /// Half the router's closed-loop maximum, measured before each round.
    HalfOfMaximum,
}

/// Reads `--rate`: a positive number of envelopes per second, or `half`.
fn parse_rate(text: &str) -> Result<Rate, String> {
    if text == "half" {
        return Ok(Rate::HalfOfMaximum);
    }
    match text.parse::<u64>() {
        Ok(rate) if rate > 0 => Ok(Rate::PerSecond(rate)),
        _ => Err(format!(
            "`{text}` is neither a positive number of envelopes per second nor `half`"
        )),
    }
}

/// Runs `round` `count` times (at least once), then writes and prints the round with the
/// median throughput ratio and, for more than one round, the table of every round with the
/// medians.
async fn run_rounds<F, Fut>(scenario: &str, count: usize, out: &Path, round: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Report>>,
{
    let mut reports = Vec::with_capacity(count.max(1));
    for _ in 0..count.max(1) {
        reports.push(
            round()
                .await
                .with_context(|| format!("{scenario} scenario"))?,
        );
    }
    let rounds = Rounds::new(scenario, &reports);
    let ratios: Vec<f64> = rounds.rounds.iter().map(|r| r.throughput_ratio).collect();
    let standing = median_index(&ratios).context("no round ran")?;
    let report = reports.swap_remove(standing);
    report.write(out)?;
    println!("{}", report.markdown());
    if rounds.rounds.len() > 1 {
        let markdown = rounds.markdown();
        bench::report::write(out, &format!("{scenario}-rounds"), &markdown, &rounds)?;
        println!("{markdown}");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let load = Load {
        receivers: args.receivers,
        senders: args.senders,
        payload: args.payload,
        duration: args.duration,
        rate: match args.rate {
            Some(Rate::PerSecond(rate)) => Some(rate),
            Some(Rate::HalfOfMaximum) | None => None,
        },
        ack_interval: args.ack_interval,
    };
    let at_half = args.rate == Some(Rate::HalfOfMaximum);
    if at_half && !matches!(args.scenario, Scenario::Embedded | Scenario::Redis) {
        bail!("--rate half is for the embedded and redis scenarios");
    }
    match args.scenario {
        Scenario::Embedded => {
            run_rounds("embedded", args.rounds, &args.out, || async {
                if at_half {
                    scenario::embedded_at_half(&args.router_bin, &args.mosquitto_bin, &load).await
                } else {
                    scenario::embedded(&args.router_bin, &args.mosquitto_bin, &load).await
                }
            })
            .await?;
        }
        Scenario::Redis => {
            run_rounds("redis", args.rounds, &args.out, || async {
                if at_half {
                    scenario::redis_at_half(
                        &args.router_bin,
                        &args.mosquitto_bin,
                        &load,
                        &args.redis_url,
                    )
                    .await
                } else {
                    scenario::redis(
                        &args.router_bin,
                        &args.mosquitto_bin,
                        &load,
                        &args.redis_url,
                    )
                    .await
                }
            })
            .await?;
        }
        Scenario::Cluster => {
            let emulator = args.pubsub_emulator_host.as_deref().context(
                "the cluster scenario needs --pubsub-emulator-host (or PUBSUB_EMULATOR_HOST)",
            )?;
            for delivery in ["pubsub", "redis"] {
                let report = scenario::cluster(
                    &args.router_bin,
                    &args.mosquitto_bin,
                    &load,
                    &args.redis_url,
                    emulator,
                    delivery,
                )
                .await
                .with_context(|| format!("cluster scenario, DELIVERY={delivery}"))?;
                report.write(&args.out)?;
                println!("{}", report.markdown());
            }
        }
        Scenario::Sweep => {
            let report = scenario::sweep(&args.router_bin, &args.mosquitto_bin, &load, &args.rates)
                .await
                .context("sweep scenario")?;
            report.write(&args.out)?;
            println!("{}", report.markdown());
        }
        Scenario::Idle => {
            let report = scenario::idle(&args.router_bin, &args.mosquitto_bin, args.sessions)
                .await
                .context("idle scenario")?;
            bench::report::write(&args.out, "idle", &report.markdown(), &report)?;
            println!("{}", report.markdown());
        }
        Scenario::Backlog => {
            let report = scenario::backlog(
                &args.router_bin,
                &args.mosquitto_bin,
                args.queued,
                args.payload,
            )
            .await
            .context("backlog scenario")?;
            bench::report::write(&args.out, "backlog", &report.markdown(), &report)?;
            println!("{}", report.markdown());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_is_a_positive_number_or_half() {
        assert_eq!(parse_rate("4000"), Ok(Rate::PerSecond(4000)));
        assert_eq!(parse_rate("half"), Ok(Rate::HalfOfMaximum));
        for refused in ["0", "-5", "Half", "4k", ""] {
            assert!(parse_rate(refused).is_err(), "{refused}");
        }
    }
}
