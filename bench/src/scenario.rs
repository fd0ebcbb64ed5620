//! Scenarios: each runs the router and the Mosquitto baseline under one load, in one invocation.

use std::path::Path;

use anyhow::Result;

use crate::processes::{start_mosquitto, start_router};
use crate::report::Report;
use crate::{Load, mqtt_load, router_load};

/// `embedded`: `serve` with its defaults (local bus, embedded store, memory presence).
pub async fn embedded(router_bin: &Path, mosquitto_bin: &Path, load: &Load) -> Result<Report> {
    let router = start_router(router_bin, &[])?;
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
    Ok(Report::new("embedded", load, ours, theirs))
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
