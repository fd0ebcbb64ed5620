//! A Pub/Sub cluster of real processes: instances A and B (`api,delivery`) and one `processor`,
//! sharing Redis and Google's Pub/Sub emulator.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::{
    Next, SECRET, Server, WsClient, envelope, redis_profile, redis_url, token, unique, user,
};

const PROJECT: &str = "envelope-router-e2e";

fn emulator() -> Result<String> {
    std::env::var("PUBSUB_EMULATOR_HOST")
        .context("PUBSUB_EMULATOR_HOST is not set: run ./infra/test.sh, which starts the emulator")
}

/// One member's settings: shared Redis prefix and topics, its own roles and instance id.
fn member(shared: &[(String, String)], roles: &str, instance: &str) -> Vec<(String, String)> {
    let mut env = shared.to_vec();
    env.push(("ROLES".into(), roles.into()));
    env.push(("INSTANCE_ID".into(), instance.into()));
    env
}

fn shared_settings(run: &str) -> Result<Vec<(String, String)>> {
    let mut env = redis_profile(&redis_url()?, run);
    for (key, value) in [
        ("BUS", "pubsub".to_owned()),
        ("DELIVERY", "pubsub".to_owned()),
        ("PUBSUB_PROJECT", PROJECT.to_owned()),
        ("PUBSUB_EMULATOR_HOST", emulator()?),
        ("PUBSUB_INGRESS_TOPIC", format!("{run}-ingress")),
        ("PUBSUB_SUBSCRIPTION", format!("{run}-router")),
        ("PUBSUB_DEAD_LETTER_TOPIC", format!("{run}-dead")),
        ("CREATE_RESOURCES", "true".to_owned()),
        ("JWT_SECRET", SECRET.to_owned()),
        ("INSTANCE_BEAT", "300ms".to_owned()),
        ("INSTANCE_TTL", "1500ms".to_owned()),
        ("WAKEUP_WINDOW", "100ms".to_owned()),
        ("RATE_LIMIT_PAIR_BURST", "1000".to_owned()),
    ] {
        env.push((key.to_owned(), value));
    }
    Ok(env)
}

/// Whether the emulator still has `topic`.
async fn topic_exists(topic: &str) -> Result<bool> {
    let url = format!(
        "http://{}/v1/projects/{PROJECT}/topics/{topic}",
        emulator()?
    );
    Ok(reqwest::get(url).await?.status() == StatusCode::OK)
}

/// Reads envelopes until every id in `want` arrived; other ids may only repeat ones seen before.
async fn drain(session: &mut WsClient, want: &BTreeSet<String>) -> Result<()> {
    let mut seen = BTreeSet::new();
    while !want.is_subset(&seen) {
        match session.next(Duration::from_secs(15)).await? {
            Next::Json(frame) if frame["type"] == "envelope" => {
                let id = frame["messageId"].as_str().unwrap_or_default().to_owned();
                if !want.contains(&id) {
                    bail!("unexpected envelope {id}");
                }
                seen.insert(id.clone());
                session.ack(&[id]).await?;
            }
            other => bail!(
                "missing {:?}; got {other:?}",
                want.difference(&seen).collect::<Vec<_>>()
            ),
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_pubsub_cluster_routes_across_instances_and_survives_an_instance_crash() -> Result<()> {
    let run = unique("e2e");
    let shared = shared_settings(&run)?;
    let (a_id, b_id) = (unique("a-"), unique("b-"));
    // The processor creates the ingress resources; the instances create their delivery topics.
    let processor = Server::start_exact(member(&shared, "processor", &unique("p-"))).await?;
    let a = Server::start_exact(member(&shared, "api,delivery", &a_id)).await?;
    let b = Server::start_exact(member(&shared, "api,delivery", &b_id)).await?;
    assert!(topic_exists(&format!("delivery-{a_id}")).await?);

    let (on_a_user, on_b_user, sender) = (user("ua"), user("ub"), user("sender"));
    let registered = a
        .request(Method::POST, "/register-device")
        .bearer_auth(token(&on_b_user))
        .json(&json!({"token": "ub-phone", "platform": "fcm"}))
        .send()
        .await?;
    assert_eq!(registered.status(), StatusCode::NO_CONTENT);
    let mut session_a = a.connect(&token(&on_a_user)).await?;
    let mut session_b = b.connect(&token(&on_b_user)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Cross traffic: posted to A for a user on B, and to B for a user on A; each arrives once.
    let to_b = a.send_ok(&token(&sender), &envelope(&on_b_user)).await?;
    let to_a = b.send_ok(&token(&sender), &envelope(&on_a_user)).await?;
    assert_eq!(session_b.envelope().await?.0, to_b);
    assert_eq!(session_a.envelope().await?.0, to_a);
    session_b.ack(std::slice::from_ref(&to_b)).await?;
    session_a.ack(std::slice::from_ref(&to_a)).await?;
    session_a.expect_silence(Duration::from_millis(400)).await?;
    session_b.expect_silence(Duration::from_millis(100)).await?;

    // A stream to the user on B; B dies (kill -9) in the middle of it. The killed server's
    // handle lives to the end of the test: dropping it would delete the shared Redis prefix.
    let mut accepted = BTreeSet::new();
    let mut running_b = Some(b);
    let mut killed_b = None;
    for n in 0..30 {
        accepted.insert(a.send_ok(&token(&sender), &envelope(&on_b_user)).await?);
        if n == 10
            && let Some(b) = running_b.take()
        {
            killed_b = Some(b.kill9().await?);
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    drop(session_b);
    // Once B's liveness lapsed (INSTANCE_TTL), the user counts as offline: the next envelopes
    // make the processor send wake-ups. Until then they go to B's (dead) channel and stay stored.
    let woken = std::time::Instant::now();
    while processor
        .log_lines_with(&["wake-up push", &on_b_user])
        .is_empty()
    {
        if woken.elapsed() > Duration::from_secs(15) {
            bail!(
                "no wake-up after B died; processor logs:\n{}",
                processor.logs().join("\n")
            );
        }
        accepted.insert(a.send_ok(&token(&sender), &envelope(&on_b_user)).await?);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Reconnecting to A drains everything that was accepted: nothing lost.
    let mut back_on_a = a.connect(&token(&on_b_user)).await?;
    drain(&mut back_on_a, &accepted).await?;

    // A graceful stop of A deletes its delivery topic and subscription.
    let a = a.stop().await?;
    assert!(
        !topic_exists(&format!("delivery-{a_id}")).await?,
        "A's delivery topic is deleted"
    );
    let subscription = format!(
        "http://{}/v1/projects/{PROJECT}/subscriptions/delivery-{a_id}",
        emulator()?
    );
    assert_eq!(
        reqwest::get(subscription).await?.status(),
        StatusCode::NOT_FOUND
    );
    drop((a, processor, killed_b));
    Ok(())
}

#[tokio::test]
async fn missing_pubsub_resources_fail_fast_with_a_clear_message() -> Result<()> {
    let run = unique("e2e-missing");
    let mut env: Vec<(String, String)> = shared_settings(&run)?
        .into_iter()
        .filter(|(k, _)| k != "CREATE_RESOURCES")
        .collect();
    env.push(("ROLES".into(), "all".into()));
    let started = Server::start_exact(env).await;
    let Err(err) = started else {
        bail!("the router started although its topics do not exist");
    };
    let text = format!("{err:#}");
    assert!(
        text.contains(&format!("projects/{PROJECT}/topics/{run}-ingress")),
        "{text}"
    );
    assert!(
        text.contains("--create-resources") && text.contains("pubsub.topics.get"),
        "{text}"
    );
    Ok(())
}
