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
