//! A few seconds with tiny numbers, so the harness keeps working (no timing assertions).

use std::path::PathBuf;
use std::time::Duration;

use bench::{Load, scenario};

/// The router binary the workspace test build made (target/<profile>/envelope-router).
fn router_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let bin = profile_dir.join("envelope-router");
    assert!(
        bin.exists(),
        "{} is missing: run the workspace tests (./infra/test.sh)",
        bin.display()
    );
    bin
}

#[tokio::test]
async fn the_embedded_scenario_runs_and_loses_nothing() {
    let mosquitto = PathBuf::from(
        std::env::var("MOSQUITTO_BIN").unwrap_or_else(|_| "/usr/sbin/mosquitto".into()),
    );
    let load = Load {
        receivers: 4,
        senders: 2,
        payload: 256,
        duration: Duration::from_secs(1),
        rate: None,
    };
    let report = scenario::embedded(&router_bin(), &mosquitto, &load)
        .await
        .expect("scenario");
    for run in [&report.router, &report.baseline] {
        assert!(run.received > 0, "{} received nothing", run.system);
        assert_eq!(run.lost, 0, "{} lost envelopes", run.system);
        assert_eq!(run.received, run.accepted, "{}", run.system);
        assert!(run.p99_ms > 0.0 && run.cpu_seconds >= 0.0);
    }
    assert!(report.router.peak_rss_kib > 0);
    let out = std::env::temp_dir().join(format!("er-bench-smoke-{}", std::process::id()));
    report.write(&out).expect("write");
    let markdown = std::fs::read_to_string(out.join("embedded.md")).expect("markdown");
    assert!(markdown.contains("| envelope-router |") && markdown.contains("| mosquitto |"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("embedded.json")).expect("json"))
            .expect("json");
    assert!(json["throughput_ratio"].as_f64().is_some_and(|r| r > 0.0));
    let _ = std::fs::remove_dir_all(out);
}

#[tokio::test]
async fn the_idle_and_backlog_scenarios_run() {
    let mosquitto = PathBuf::from(
        std::env::var("MOSQUITTO_BIN").unwrap_or_else(|_| "/usr/sbin/mosquitto".into()),
    );
    let idle = scenario::idle(&router_bin(), &mosquitto, 50)
        .await
        .expect("idle");
    assert_eq!(idle.router.sessions, 50);
    assert_eq!(idle.baseline.sessions, 50);
    assert!(idle.markdown().contains("| envelope-router | 50 |"));
    let backlog = scenario::backlog(&router_bin(), &mosquitto, 200, 128)
        .await
        .expect("backlog");
    assert_eq!(backlog.router.received, 200);
    assert_eq!(backlog.baseline.received, 200);
}

#[tokio::test]
async fn the_redis_scenario_runs_and_loses_nothing() {
    let url = std::env::var("REDIS_URL")
        .expect("REDIS_URL is not set: run ./infra/test.sh, which starts redis-server");
    let mosquitto = PathBuf::from(
        std::env::var("MOSQUITTO_BIN").unwrap_or_else(|_| "/usr/sbin/mosquitto".into()),
    );
    let load = Load {
        receivers: 4,
        senders: 2,
        payload: 256,
        duration: Duration::from_secs(1),
        rate: None,
    };
    let report = scenario::redis(&router_bin(), &mosquitto, &load, &url)
        .await
        .expect("redis scenario");
    assert_eq!(report.scenario, "redis");
    assert!(report.router.received > 0);
    assert_eq!(report.router.lost, 0);
}
