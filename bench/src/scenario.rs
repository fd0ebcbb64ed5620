//! Scenarios: each runs the router and the Mosquitto baseline under one load, in one invocation.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;

use crate::processes::{ServerProcess, start_mosquitto, start_router};
use crate::report::Report;
use crate::stats::RunStats;
use crate::{Load, mqtt_load, router_load};

/// `embedded`: `serve` with its defaults (local bus, embedded store, memory presence).
pub async fn embedded(router_bin: &Path, mosquitto_bin: &Path, load: &Load) -> Result<Report> {
    with_router_env("embedded", router_bin, mosquitto_bin, load, &[]).await
}

/// `embedded` at half the router's maximum, where the p99 target is set: a closed-loop run
/// of the router alone under `load`'s users, senders and payload finds the maximum, then both
/// systems run open loop at half of it. The report names the maximum.
pub async fn embedded_at_half(
    router_bin: &Path,
    mosquitto_bin: &Path,
    load: &Load,
) -> Result<Report> {
    let maximum = router_maximum(router_bin, load, &[]).await?;
    let half = at_half_of(load, maximum);
    let mut report = embedded(router_bin, mosquitto_bin, &half).await?;
    report.router_maximum_per_s = Some(maximum);
    Ok(report)
}

/// `redis`: presence, queues and rate limits in Redis at `redis_url` (a key prefix of its own,
/// deleted after the run).
pub async fn redis(
    router_bin: &Path,
    mosquitto_bin: &Path,
    load: &Load,
    redis_url: &str,
) -> Result<Report> {
    let prefix = key_prefix();
    let env = redis_backends(redis_url, &prefix);
    let report = with_router_env("redis", router_bin, mosquitto_bin, load, &env).await;
    delete_prefix(redis_url, &prefix).await?;
    report
}

/// `redis` at half the router's maximum, found as in [`embedded_at_half`] with the same
/// backends under a key prefix of the probe's own (deleted after it).
pub async fn redis_at_half(
    router_bin: &Path,
    mosquitto_bin: &Path,
    load: &Load,
    redis_url: &str,
) -> Result<Report> {
    let prefix = key_prefix();
    let maximum = router_maximum(router_bin, load, &redis_backends(redis_url, &prefix)).await;
    delete_prefix(redis_url, &prefix).await?;
    let maximum = maximum?;
    let half = at_half_of(load, maximum);
    let mut report = redis(router_bin, mosquitto_bin, &half, redis_url).await?;
    report.router_maximum_per_s = Some(maximum);
    Ok(report)
}

/// The router's maximum, envelopes received per second: one closed-loop run of a router
/// started with `env`, alone, under `load`'s users, senders, payload and duration.
async fn router_maximum(router_bin: &Path, load: &Load, env: &[(&str, &str)]) -> Result<f64> {
    let router = start_router(router_bin, env)?;
    let entry = [router.addr.clone()];
    let closed = Load {
        rate: None,
        ..load.clone()
    };
    Ok(drive_routers(&entry, &closed).await?.throughput_per_s)
}

/// `load` open loop at half of `maximum` envelopes per second (at least one).
pub fn at_half_of(load: &Load, maximum: f64) -> Load {
    Load {
        rate: Some(((maximum / 2.0).round() as u64).max(1)),
        ..load.clone()
    }
}

/// `sweep`: the embedded scenario open loop at each of `rates`, both systems; what each
/// carried and its p99 at every offered rate.
pub async fn sweep(
    router_bin: &Path,
    mosquitto_bin: &Path,
    load: &Load,
    rates: &[u64],
) -> Result<crate::report::SweepReport> {
    let mut points = Vec::with_capacity(rates.len());
    for &rate in rates {
        let at_rate = Load {
            rate: Some(rate),
            ..load.clone()
        };
        let report = embedded(router_bin, mosquitto_bin, &at_rate).await?;
        points.push(crate::plot::SweepPoint {
            offered_per_s: rate as f64,
            router_per_s: report.router.throughput_per_s,
            baseline_per_s: report.baseline.throughput_per_s,
            router_p99_ms: report.router.p99_ms,
            baseline_p99_ms: report.baseline.p99_ms,
        });
    }
    Ok(crate::report::SweepReport { points })
}

/// A Redis key prefix of one run, unlike any other run's in this process (runs may go on at
/// once, as the smoke tests do) or in another: the process id and a count.
fn key_prefix() -> String {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    format!(
        "er-bench-{}-{}:",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    )
}

/// The settings that put presence, queues and rate limits in Redis at `url`, under `prefix`.
fn redis_backends<'a>(url: &'a str, prefix: &'a str) -> [(&'static str, &'a str); 5] {
    [
        ("PRESENCE", "redis"),
        ("STORE", "redis"),
        ("RATE_LIMIT", "redis"),
        ("REDIS_URL", url),
        ("REDIS_KEY_PREFIX", prefix),
    ]
}

/// Deletes the run's keys, so a shared Redis keeps nothing of the benchmark.
async fn delete_prefix(redis_url: &str, prefix: &str) -> Result<()> {
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await?;
    for chunk in keys.chunks(1000) {
        let _: () = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await?;
    }
    Ok(())
}

/// Runs the router with `env` and then the baseline under `load`.
async fn with_router_env(
    name: &str,
    router_bin: &Path,
    mosquitto_bin: &Path,
    load: &Load,
    env: &[(&str, &str)],
) -> Result<Report> {
    let router = start_router(router_bin, env)?;
    let entry = [router.addr.clone()];
    measure(name, vec![router], &entry, mosquitto_bin, load).await
}

/// Drives `routers` through their `entry` addresses, stops them, then runs the baseline under
/// the same `load`; CPU time and peak RSS add up over every router process.
async fn measure(
    name: &str,
    routers: Vec<ServerProcess>,
    entry: &[String],
    mosquitto_bin: &Path,
    load: &Load,
) -> Result<Report> {
    let mut ours = drive_routers(entry, load).await?;
    ours.cpu_seconds = routers.iter().map(ServerProcess::cpu_seconds).sum();
    ours.peak_rss_kib = routers.iter().map(ServerProcess::peak_rss_kib).sum();
    drop(routers);

    let broker = start_mosquitto(mosquitto_bin)?;
    let outcome = mqtt_load::run(&broker.addr, load).await?;
    let mut theirs = outcome.collector.finish(
        "mosquitto",
        &outcome.accepted,
        outcome.errors,
        outcome.sending,
    );
    theirs.cpu_seconds = broker.cpu_seconds();
    theirs.peak_rss_kib = broker.peak_rss_kib();
    Ok(Report::new(name, load, ours, theirs))
}

/// Drives routers through their `entry` addresses under `load`; their figures, without the
/// processes' CPU time and memory.
async fn drive_routers(entry: &[String], load: &Load) -> Result<RunStats> {
    let outcome = router_load::run(entry, load).await?;
    let mut stats = outcome.collector.finish(
        "envelope-router",
        &outcome.accepted,
        outcome.errors,
        outcome.sending,
    );
    stats.count_still_queued(outcome.still_queued);
    Ok(stats)
}

/// The Pub/Sub project the cluster scenario uses in the emulator.
const CLUSTER_PROJECT: &str = "envelope-router-bench";

/// `cluster`: instances A and B (`api,delivery`) and one `processor`, with presence, queues
/// and rate limits in Redis at `redis_url`, the bus on the Pub/Sub emulator at `emulator`, and
/// `delivery` (`pubsub` or `redis`) between processor and instances. Receivers and senders
/// spread over A and B, so most envelopes cross instances. The run's Redis keys, topics and
/// subscriptions are deleted afterwards.
pub async fn cluster(
    router_bin: &Path,
    mosquitto_bin: &Path,
    load: &Load,
    redis_url: &str,
    emulator: &str,
    delivery: &str,
) -> Result<Report> {
    let run = format!("er-bench-{}-{delivery}", std::process::id());
    let prefix = format!("{run}:");
    let topics = [format!("{run}-ingress"), format!("{run}-dead")];
    let subscription = format!("{run}-router");
    let mut shared = redis_backends(redis_url, &prefix).to_vec();
    shared.extend([
        ("BUS", "pubsub"),
        ("DELIVERY", delivery),
        ("PUBSUB_PROJECT", CLUSTER_PROJECT),
        ("PUBSUB_EMULATOR_HOST", emulator),
        ("PUBSUB_INGRESS_TOPIC", topics[0].as_str()),
        ("PUBSUB_DEAD_LETTER_TOPIC", topics[1].as_str()),
        ("PUBSUB_SUBSCRIPTION", subscription.as_str()),
        ("CREATE_RESOURCES", "true"),
    ]);
    let ids = [format!("{run}-a"), format!("{run}-b"), format!("{run}-p")];
    let member = |roles: &'static str, instance: &str| {
        let mut env: Vec<(String, String)> = shared
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        env.push(("ROLES".into(), roles.into()));
        env.push(("INSTANCE_ID".into(), instance.to_owned()));
        env
    };
    let start = |roles: &'static str, instance: &str| {
        let env = member(roles, instance);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        start_router(router_bin, &env)
    };
    let outcome = async {
        let a = start("api,delivery", &ids[0])?;
        let b = start("api,delivery", &ids[1])?;
        let processor = start("processor", &ids[2])?;
        let entry = [a.addr.clone(), b.addr.clone()];
        measure(
            &format!("cluster-{delivery}"),
            vec![a, b, processor],
            &entry,
            mosquitto_bin,
            load,
        )
        .await
    }
    .await;
    delete_prefix(redis_url, &prefix).await?;
    delete_pubsub(emulator, &run).await?;
    outcome
}

/// Deletes the run's subscription and topics, and the delivery topics and subscriptions of its
/// instances (named after `run`; they were killed, not stopped), from the emulator.
async fn delete_pubsub(emulator: &str, run: &str) -> Result<()> {
    let client = reqwest::Client::new();
    let base = format!("http://{emulator}/v1/projects/{CLUSTER_PROJECT}");
    let listed: serde_json::Value = client
        .get(format!("{base}/subscriptions"))
        .send()
        .await?
        .json()
        .await?;
    let listed_topics: serde_json::Value = client
        .get(format!("{base}/topics"))
        .send()
        .await?
        .json()
        .await?;
    let names = |value: &serde_json::Value, key: &str| -> Vec<String> {
        value[key]
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|item| item["name"].as_str())
                    .filter_map(|name| name.rsplit('/').next())
                    .filter(|name| name.contains(run))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    for name in names(&listed, "subscriptions") {
        client
            .delete(format!("{base}/subscriptions/{name}"))
            .send()
            .await?;
    }
    for name in names(&listed_topics, "topics") {
        client
            .delete(format!("{base}/topics/{name}"))
            .send()
            .await?;
    }
    Ok(())
}

/// Files the idle scenario leaves free below the open-files limit (its own /proc reads, the
/// runtime, the servers' listeners and databases).
const IDLE_FD_HEADROOM: u64 = 400;

/// `idle`: `sessions` idle WebSocket sessions (router) and MQTT connections (Mosquitto); memory
/// per session.
pub async fn idle(
    router_bin: &Path,
    mosquitto_bin: &Path,
    sessions: usize,
) -> Result<crate::report::IdleReport> {
    let limit = crate::processes::raise_open_files((sessions as u64) * 2 + 4096);
    let requested = sessions;
    // Every client socket is a file of this process (and every session one of the server's):
    // past the limit the harness could not even read /proc. Stay under it, and say so.
    let sessions = sessions.min(limit.saturating_sub(IDLE_FD_HEADROOM) as usize);
    if sessions < requested {
        eprintln!(
            "idle: {requested} sessions asked, {sessions} measured: this process may open {limit} files (RLIMIT_NOFILE) and cannot raise it"
        );
    }
    let router = start_router(router_bin, &[])?;
    crate::idle::settle().await;
    let before = router.rss_kib();
    let (open, _failed) = crate::idle::websocket_sessions(&router.addr, sessions).await?;
    crate::idle::settle().await;
    let ours = crate::idle::stats("envelope-router", open.len(), before, router.rss_kib());
    drop(open);
    drop(router);

    let broker = start_mosquitto(mosquitto_bin)?;
    crate::idle::settle().await;
    let before = broker.rss_kib();
    let (open, _failed) = crate::idle::mqtt_connections(&broker.addr, sessions).await?;
    crate::idle::settle().await;
    let theirs = crate::idle::stats("mosquitto", open.len(), before, broker.rss_kib());
    drop(open);
    Ok(crate::report::IdleReport {
        requested,
        router: ours,
        baseline: theirs,
    })
}

/// `backlog`: `count` envelopes queued for an offline user, then drained.
pub async fn backlog(
    router_bin: &Path,
    mosquitto_bin: &Path,
    count: usize,
    payload: usize,
) -> Result<crate::report::BacklogReport> {
    let router = start_router(router_bin, &[])?;
    let ours = crate::backlog::router(&router.addr, count, payload).await?;
    drop(router);
    let broker = start_mosquitto(mosquitto_bin)?;
    let theirs = crate::backlog::mosquitto(&broker.addr, count, payload).await?;
    Ok(crate::report::BacklogReport {
        router: ours,
        baseline: theirs,
    })
}
