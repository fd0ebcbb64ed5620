//! A few seconds with tiny numbers, so the harness keeps working (no timing assertions).

use std::collections::HashSet;
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

/// The Mosquitto the test command found (`MOSQUITTO_BIN`), else Debian's.
fn mosquitto_bin() -> PathBuf {
    PathBuf::from(std::env::var("MOSQUITTO_BIN").unwrap_or_else(|_| "/usr/sbin/mosquitto".into()))
}

/// A load of a second with a handful of users: enough to exercise a scenario end to end.
fn tiny_load() -> Load {
    Load {
        receivers: 4,
        senders: 2,
        payload: 256,
        duration: Duration::from_secs(1),
        rate: None,
        ack_interval: Duration::from_millis(20),
    }
}

#[tokio::test]
async fn the_embedded_scenario_runs_and_loses_nothing() {
    let mosquitto = mosquitto_bin();
    let load = tiny_load();
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
    let json: serde_json::Value = json_at(&out.join("embedded.json"));
    assert!(json["throughput_ratio"].as_f64().is_some_and(|r| r > 0.0));
    assert!(
        json["router"]["latency_cdf"]
            .as_array()
            .is_some_and(|points| points.len() > 10),
        "the CDF is kept for the plot"
    );
    assert_png(&out.join("embedded-latency.png"));
    let _ = std::fs::remove_dir_all(out);
}

#[tokio::test]
async fn the_embedded_scenario_at_half_the_maximum_offers_half_what_the_router_carried() {
    let report = scenario::embedded_at_half(&router_bin(), &mosquitto_bin(), &tiny_load())
        .await
        .expect("scenario");
    let maximum = report
        .router_maximum_per_s
        .expect("the maximum is reported");
    assert!(maximum > 0.0, "the closed-loop probe carried nothing");
    let offered = report.load.4;
    assert_eq!(offered, ((maximum / 2.0).round() as u64).max(1));
    for run in [&report.router, &report.baseline] {
        assert!(run.received > 0, "{} received nothing", run.system);
        assert_eq!(run.lost, 0, "{} lost envelopes", run.system);
    }
    assert!(
        report.markdown().contains(&format!(
            "{offered}/s open loop (half the router's closed-loop maximum of {maximum:.0}/s"
        )),
        "{}",
        report.markdown()
    );
}

/// `path` is a PNG image of the plot's size.
fn assert_png(path: &std::path::Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );
    // IHDR: width and height, big-endian, after the signature and the chunk header.
    let width = u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    let height = u32::from_be_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
    assert_eq!((width, height), (900, 560));
}

#[tokio::test]
async fn the_sweep_scenario_plots_received_vs_offered() {
    let mosquitto = mosquitto_bin();
    let load = tiny_load();
    let report = scenario::sweep(&router_bin(), &mosquitto, &load, &[50, 100])
        .await
        .expect("sweep");
    assert_eq!(report.points.len(), 2);
    for point in &report.points {
        assert!(
            point.router_per_s > 0.0 && point.baseline_per_s > 0.0,
            "{point:?}"
        );
    }
    let out = std::env::temp_dir().join(format!("er-bench-sweep-{}", std::process::id()));
    report.write(&out).expect("write");
    assert_png(&out.join("sweep-throughput.png"));
    assert!(
        std::fs::read_to_string(out.join("sweep.md"))
            .expect("md")
            .contains("| 100 |")
    );
    let _ = std::fs::remove_dir_all(out);
}

#[tokio::test]
async fn the_cluster_scenario_runs_over_both_delivery_channels() {
    let redis = std::env::var("REDIS_URL")
        .expect("REDIS_URL is not set: run ./infra/test.sh, which starts redis-server");
    let emulator = std::env::var("PUBSUB_EMULATOR_HOST")
        .expect("PUBSUB_EMULATOR_HOST is not set: run ./infra/test.sh, which starts the emulator");
    let mosquitto = mosquitto_bin();
    let load = tiny_load();
    for delivery in ["pubsub", "redis"] {
        let report = scenario::cluster(
            &router_bin(),
            &mosquitto,
            &load,
            &redis,
            &emulator,
            delivery,
        )
        .await
        .unwrap_or_else(|e| panic!("cluster {delivery}: {e:#}"));
        assert_eq!(report.scenario, format!("cluster-{delivery}"));
        assert!(report.router.received > 0, "{delivery}: nothing received");
        assert_eq!(report.router.lost, 0, "{delivery}: lost envelopes");
        assert!(report.router.cpu_seconds > 0.0, "CPU of three processes");
    }
    // Nothing of the runs is left in the emulator.
    let topics: serde_json::Value = reqwest::get(format!(
        "http://{emulator}/v1/projects/envelope-router-bench/topics"
    ))
    .await
    .expect("list topics")
    .json()
    .await
    .expect("json");
    let left: Vec<_> = topics["topics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str())
        .filter(|name| name.contains(&format!("er-bench-{}-", std::process::id())))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn the_idle_and_backlog_scenarios_run() {
    let mosquitto = mosquitto_bin();
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
    let mosquitto = mosquitto_bin();
    let load = tiny_load();
    let report = scenario::redis(&router_bin(), &mosquitto, &load, &url)
        .await
        .expect("redis scenario");
    assert_eq!(report.scenario, "redis");
    assert!(report.router.received > 0);
    assert_eq!(report.router.lost, 0);
}

#[tokio::test]
async fn the_redis_scenario_at_half_the_maximum_offers_half_what_the_router_carried() {
    let url = std::env::var("REDIS_URL")
        .expect("REDIS_URL is not set: run ./infra/test.sh, which starts redis-server");
    let report = scenario::redis_at_half(&router_bin(), &mosquitto_bin(), &tiny_load(), &url)
        .await
        .expect("redis scenario at half");
    assert_eq!(report.scenario, "redis");
    let maximum = report
        .router_maximum_per_s
        .expect("the maximum is reported");
    assert!(maximum > 0.0, "the closed-loop probe carried nothing");
    assert_eq!(report.load.4, ((maximum / 2.0).round() as u64).max(1));
    assert!(report.router.received > 0);
    assert_eq!(report.router.lost, 0);
}

/// The JSON file at `path`, parsed.
fn json_at(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs the bench binary with `args` and a tiny load (1 s, 4 receivers, 2 senders, 256 B)
/// against the test build's router and Mosquitto, writing its results under `out`.
fn run_bench(args: &[&str], out: &std::path::Path) -> std::process::ExitStatus {
    std::process::Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(args)
        .args(["--duration", "1s", "--receivers", "4", "--senders", "2"])
        .args(["--payload", "256"])
        .arg("--router-bin")
        .arg(router_bin())
        .arg("--mosquitto-bin")
        .arg(mosquitto_bin())
        .arg("--out")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run bench")
}

#[test]
fn the_cli_runs_rounds_at_half_the_maximum_and_refuses_what_it_cannot_run() {
    let out = std::env::temp_dir().join(format!("er-bench-half-{}", std::process::id()));
    let status = run_bench(&["embedded", "--rate", "half", "--rounds", "2"], &out);
    assert!(status.success(), "bench exited with {status}");
    let rounds: serde_json::Value = json_at(&out.join("embedded-rounds.json"));
    let each = rounds["rounds"].as_array().expect("rounds");
    assert_eq!(each.len(), 2);
    for round in each {
        let maximum = round["router_maximum_per_s"].as_f64().expect("a maximum");
        assert!(maximum > 0.0);
        assert_eq!(
            round["offered_per_s"].as_u64(),
            Some(((maximum / 2.0).round() as u64).max(1))
        );
        assert_eq!(round["lost"], 0);
    }
    let markdown = std::fs::read_to_string(out.join("embedded-rounds.md")).expect("markdown");
    assert!(markdown.contains("| router maximum per s | offered per s |"));
    let _ = std::fs::remove_dir_all(out);

    // What it cannot run is refused before anything starts, with the reason.
    for (args, reason) in [
        (
            &["sweep", "--rate", "half"][..],
            "--rate half is for the embedded and redis",
        ),
        (
            &["embedded", "--rate", "0"][..],
            "neither a positive number",
        ),
        (
            &["embedded", "--rate", "fast"][..],
            "neither a positive number",
        ),
    ] {
        let run = std::process::Command::new(env!("CARGO_BIN_EXE_bench"))
            .args(args)
            .output()
            .expect("run bench");
        assert!(!run.status.success(), "{args:?} must be refused");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
}

#[test]
fn rounds_report_every_round_and_write_the_median_one() {
    let out = std::env::temp_dir().join(format!("er-bench-rounds-{}", std::process::id()));
    let status = run_bench(
        &["embedded", "--rounds", "3", "--ack-interval", "5ms"],
        &out,
    );
    assert!(status.success(), "bench exited with {status}");
    let rounds: serde_json::Value = json_at(&out.join("embedded-rounds.json"));
    let each = rounds["rounds"].as_array().expect("rounds");
    assert_eq!(each.len(), 3);
    assert!(each.iter().all(|round| round["lost"] == 0));
    let mut ratios: Vec<f64> = each
        .iter()
        .filter_map(|round| round["throughput_ratio"].as_f64())
        .collect();
    ratios.sort_by(f64::total_cmp);
    assert_eq!(rounds["median_throughput_ratio"].as_f64(), Some(ratios[1]));
    // The full report written is the median round's.
    let standing: serde_json::Value = json_at(&out.join("embedded.json"));
    assert_eq!(standing["throughput_ratio"].as_f64(), Some(ratios[1]));
    assert_eq!(standing["ack_interval_ms"].as_f64(), Some(5.0));
    let markdown = std::fs::read_to_string(out.join("embedded-rounds.md")).expect("markdown");
    assert!(markdown.contains("| 3 |") && markdown.contains("median throughput ratio"));
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn an_ack_interval_that_is_not_a_duration_is_refused() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["embedded", "--ack-interval", "soon"])
        .output()
        .expect("run bench");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--ack-interval"), "{stderr}");
}

/// Every baseline publisher is connected before the clock starts, so each of 64 senders
/// publishes within a one-second open-loop run. Made on the clock, one after another, the
/// clients took ~45 ms each here: the later senders started past the run's end, and the
/// baseline was measured at a fraction of its offered rate.
#[tokio::test]
async fn every_baseline_sender_publishes_from_the_start() {
    let broker = bench::processes::start_mosquitto(&mosquitto_bin()).expect("mosquitto");
    let load = Load {
        senders: 64,
        rate: Some(640),
        ..tiny_load()
    };
    let outcome = bench::mqtt_load::run(&broker.addr, &load)
        .await
        .expect("baseline run");
    let senders: std::collections::BTreeSet<usize> = outcome
        .accepted
        .iter()
        .filter_map(|id| bench::sender_of(id))
        .collect();
    let missing: Vec<usize> = (0..64).filter(|s| !senders.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "senders that never published: {missing:?}"
    );
}

#[tokio::test]
async fn envelopes_queued_for_an_offline_user_count_as_late_not_lost() {
    let router = bench::processes::start_router(&router_bin(), &[]).expect("router");
    let user = "urn:bench:user:offline";
    let token = bench::router_load::token("urn:bench:user:s0").expect("token");
    let client = reqwest::Client::new();
    for id in ["t1-s0-1", "t1-s0-3"] {
        let status = client
            .post(format!("http://{}/send", router.addr))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(bench::router_load::send_body(user, id, "AAEC"))
            .send()
            .await
            .expect("send")
            .status();
        assert_eq!(status.as_u16(), 202);
    }
    let addrs = [router.addr.clone()];
    let users = [user.to_owned(), "urn:bench:user:nobody".to_owned()];
    let ids = |list: &[&str]| list.iter().map(|id| id.to_string()).collect::<HashSet<_>>();
    // Routing runs after the 202: wait until the store lists both.
    let both = ids(&["t1-s0-1", "t1-s0-3"]);
    let mut listed = 0;
    for _ in 0..100 {
        listed = bench::router_load::count_still_queued(&addrs, &users, &both).await;
        if listed == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listed, 2, "both envelopes are queued");
    let missing = ids(&["t1-s0-1", "t1-s0-2"]);
    assert_eq!(
        bench::router_load::count_still_queued(&addrs, &users, &missing).await,
        1,
        "only the missing id that is queued counts, not another queued one or one never sent"
    );
}
