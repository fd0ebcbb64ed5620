//! Several instances sharing Redis (`DELIVERY=redis`), instance death, and a Redis restart.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::harness::{Server, envelope, redis_profile, redis_url, token, unique, user};

/// Settings of one cluster member: shared Redis prefix, its own instance id and data dir.
fn member(
    url: &str,
    prefix: &str,
    instance: &str,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut env = redis_profile(url, prefix);
    env.push(("DELIVERY".into(), "redis".into()));
    env.push(("INSTANCE_ID".into(), instance.into()));
    env.push(("JWT_SECRET".into(), crate::harness::SECRET.into()));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

#[tokio::test]
async fn an_envelope_posted_to_one_instance_reaches_a_session_on_another_once() -> Result<()> {
    let url = redis_url()?;
    let prefix = unique("er-cluster-");
    let a = Server::start_exact(member(&url, &prefix, &unique("a-"), &[])).await?;
    let b = Server::start_exact(member(&url, &prefix, &unique("b-"), &[])).await?;
    let (alice, bob) = (user("alice"), user("bob"));
    let mut on_a = a.connect(&token(&bob)).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let id = b.send_ok(&token(&alice), &envelope(&bob)).await?;
    assert_eq!(on_a.envelope().await?.0, id);
    on_a.expect_silence(Duration::from_millis(500)).await?;
    // The queue is shared: B's pull path sees what A's session has not acked yet.
    assert_eq!(
        b.pending_ids(&token(&bob)).await?,
        std::slice::from_ref(&id)
    );
    on_a.ack(std::slice::from_ref(&id)).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(b.pending_ids(&token(&bob)).await?.is_empty());
    // No wake-up: bob was online.
    assert!(b.log_lines_with(&["wake-up", &bob]).is_empty());
    Ok(())
}

#[tokio::test]
async fn a_killed_instance_stops_counting_within_its_ttl_and_the_recipient_is_woken() -> Result<()>
{
    let url = redis_url()?;
    let prefix = unique("er-cluster-");
    let fast = [
        ("INSTANCE_BEAT", "300ms"),
        ("INSTANCE_TTL", "1500ms"),
        ("WAKEUP_WINDOW", "100ms"),
    ];
    let a = Server::start_exact(member(&url, &prefix, &unique("a-"), &fast)).await?;
    let b = Server::start_exact(member(&url, &prefix, &unique("b-"), &fast)).await?;
    let (alice, bob) = (user("alice"), user("bob"));
    let registered = b
        .request(Method::POST, "/register-device")
        .bearer_auth(token(&bob))
        .json(&serde_json::json!({"token": "bob-phone", "platform": "fcm"}))
        .send()
        .await?;
    assert_eq!(registered.status(), StatusCode::NO_CONTENT);
    let _session = a.connect(&token(&bob)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _a = a.kill9().await?;

    // Within the instance TTL B still routes to A (the session is a ghost only until then) ...
    let started = Instant::now();
    let mut woken_after = None;
    while started.elapsed() < Duration::from_secs(6) {
        b.send_ok(&token(&alice), &envelope(&bob)).await?;
        tokio::time::sleep(Duration::from_millis(250)).await;
        if !b.log_lines_with(&["wake-up push", &bob]).is_empty() {
            woken_after = Some(started.elapsed());
            break;
        }
    }
    let woken_after = woken_after.context("bob was never woken after his instance died")?;
    // ... and after it, bob counts as offline: a wake-up is sent.
    assert!(
        woken_after <= Duration::from_millis(1500 + 1000),
        "woken after {woken_after:?}"
    );
    // Every envelope stayed stored: bob gets them all from B. (`a` lives to the end of the test:
    // dropping a server deletes the Redis prefix the members share.)
    let pending = b.pending_ids(&token(&bob)).await?;
    assert!(!pending.is_empty());
    let mut on_b = b.connect(&token(&bob)).await?;
    for id in &pending {
        assert_eq!(&on_b.envelope().await?.0, id);
    }
    Ok(())
}

/// A redis-server of this test's own, with an append-only file so a restart keeps data.
struct OwnRedis {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl OwnRedis {
    fn start(port: u16, dir: &std::path::Path) -> Result<Self> {
        let bin = std::env::var("REDIS_SERVER_BIN")
            .ok()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| "redis-server".into());
        std::fs::create_dir_all(dir)?;
        let child = Command::new(bin)
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start redis-server (set REDIS_SERVER_BIN or install redis-server)")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("own redis-server did not start on {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            port,
            dir: dir.to_owned(),
            child: Some(child),
        })
    }

    fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            crate::harness::signal(child.id(), "-TERM")?;
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn ready_status(server: &Server) -> Result<StatusCode> {
    Ok(server
        .request(Method::GET, "/readyz")
        .send()
        .await?
        .status())
}

async fn wait_ready(server: &Server, want: StatusCode) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while ready_status(server).await? != want {
        if Instant::now() > deadline {
            bail!("/readyz never became {want}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test]
async fn redis_restart_mid_test_means_503_while_down_then_recovery_with_nothing_lost() -> Result<()>
{
    let port = free_port()?;
    let dir = std::env::temp_dir().join(unique("er-own-redis-"));
    let mut redis = OwnRedis::start(port, &dir)?;
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    let server = Server::start_exact(member(
        &url,
        &unique("er-restart-"),
        &unique("r-"),
        &[("HEALTH_INTERVAL", "200ms"), ("REDIS_TIMEOUT", "500ms")],
    ))
    .await?;
    let (alice, bob) = (user("alice"), user("bob"));
    let mut accepted = Vec::new();
    for _ in 0..5 {
        accepted.push(server.send_ok(&token(&alice), &envelope(&bob)).await?);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // These may still be on the bus when Redis goes away: routing retries them after recovery.
    for _ in 0..5 {
        accepted.push(server.send_ok(&token(&alice), &envelope(&bob)).await?);
    }

    redis.stop()?;
    wait_ready(&server, StatusCode::SERVICE_UNAVAILABLE).await?;
    let ready: Value = server
        .request(Method::GET, "/readyz")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(ready["components"]["store"]["status"], "down", "{ready}");
    let refused = server.send(&token(&alice), &envelope(&bob)).await?;
    assert_eq!(
        refused.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "no 202 for what cannot be stored"
    );

    let mut redis = OwnRedis::start(port, &dir)?;
    wait_ready(&server, StatusCode::OK).await?;
    // Accepting again, without a restart of the router.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match server.send(&token(&alice), &envelope(&bob)).await?.status() {
            StatusCode::ACCEPTED => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            other => bail!("still {other} after Redis came back"),
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pending = server.pending_ids(&token(&bob)).await?;
    for id in &accepted {
        assert!(
            pending.contains(id),
            "accepted {id} was lost across the Redis restart"
        );
    }
    assert_eq!(pending.len(), accepted.len() + 1);
    drop(server);
    redis.stop()?;
    Ok(())
}

#[tokio::test]
async fn the_instance_id_comes_from_the_metadata_server() -> Result<()> {
    let app = axum::Router::new().route(
        "/computeMetadata/v1/instance/id",
        axum::routing::get(|headers: axum::http::HeaderMap| async move {
            if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) == Some("Google") {
                (StatusCode::OK, "00bf4bf02dcafe1234567890abcdef".to_owned())
            } else {
                (StatusCode::FORBIDDEN, String::new())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let host = listener.local_addr()?.to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let server = Server::start(&[("GCE_METADATA_HOST", host.as_str())]).await?;
    assert!(
        !server
            .log_lines_with(&["listening", "instance=00bf4bf02dcafe1234567890abcdef"])
            .is_empty(),
        "{:?}",
        server.logs()
    );
    Ok(())
}
