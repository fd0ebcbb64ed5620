//! Scenarios: each runs the router and the Mosquitto baseline under one load, in one invocation.

use std::path::Path;

use anyhow::Result;

use crate::processes::{start_mosquitto, start_router};
use crate::report::Report;
use crate::{Load, mqtt_load, router_load};

/// `embedded`: `serve` with its defaults (local bus, embedded store, memory presence).
pub async fn embedded(router_bin: &Path, mosquitto_bin: &Path, load: &Load) -> Result<Report> {
    with_router_env("embedded", router_bin, mosquitto_bin, load, &[]).await
}

/// `redis`: presence, queues and rate limits in Redis at `redis_url` (a key prefix of its own,
/// deleted after the run).
pub async fn redis(
    router_bin: &Path,
    mosquitto_bin: &Path,
    load: &Load,
    redis_url: &str,
) -> Result<Report> {
    let prefix = format!("er-bench-{}:", std::process::id());
    let env = [
        ("PRESENCE", "redis"),
        ("STORE", "redis"),
        ("RATE_LIMIT", "redis"),
        ("REDIS_URL", redis_url),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
    ];
    let report = with_router_env("redis", router_bin, mosquitto_bin, load, &env).await;
    delete_prefix(redis_url, &prefix).await?;
    report
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
    let outcome = router_load::run(&router.addr, load).await?;
    let mut ours = outcome.collector.finish(
        "envelope-router",
        &outcome.accepted,
        outcome.errors,
        outcome.sending,
    );
    ours.cpu_seconds = router.cpu_seconds();
    ours.peak_rss_kib = router.peak_rss_kib();
    drop(router);

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

/// `idle`: `sessions` idle WebSocket sessions (router) and MQTT connections (Mosquitto); memory
/// per session.
pub async fn idle(
    router_bin: &Path,
    mosquitto_bin: &Path,
    sessions: usize,
) -> Result<crate::report::IdleReport> {
    crate::processes::raise_open_files((sessions as u64) * 2 + 4096);
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
