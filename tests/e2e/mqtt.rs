//! IoT devices publishing envelopes over MQTT, against a real Mosquitto broker.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use reqwest::Method;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::harness::{
    CIPHERTEXT_B64, SECRET, Server, envelope, redis_profile, redis_url, token, unique, user,
};

fn broker_url() -> Result<String> {
    std::env::var("MQTT_BROKER_URL")
        .context("MQTT_BROKER_URL is not set: run ./infra/test.sh, which starts mosquitto")
}

fn port_of(url: &str) -> Result<u16> {
    url.rsplit(':')
        .next()
        .context("port")?
        .trim_end_matches('/')
        .parse()
        .context("port")
}

/// A device: an MQTT v5 client that publishes and collects replies on its response topic.
struct Device {
    client: AsyncClient,
    replies: mpsc::Receiver<Value>,
    reply_topic: String,
}

impl Device {
    async fn connect(port: u16) -> Result<Self> {
        let id = unique("device-");
        let mut options = MqttOptions::new(id.clone(), "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(10));
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let reply_topic = format!("replies/{id}");
        let (sender, replies) = mpsc::channel(64);
        let (ready_tx, mut ready_rx) = mpsc::channel(1);
        let subscriber = client.clone();
        let topic = reply_topic.clone();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = subscriber.try_subscribe(topic.clone(), QoS::AtMostOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.try_send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Ok(value) = serde_json::from_slice(&p.payload) {
                            let _ = sender.send(value).await;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx.recv())
            .await
            .context("device connect")?;
        Ok(Self {
            client,
            replies,
            reply_topic,
        })
    }

    /// Publishes QoS 1 with the JWT as the `authorization` user property (MQTT v5).
    async fn send(&self, topic: &str, bearer: Option<&str>, payload: Vec<u8>) -> Result<()> {
        let mut properties = PublishProperties {
            response_topic: Some(self.reply_topic.clone()),
            correlation_data: Some(Bytes::from_static(b"corr-1")),
            ..PublishProperties::default()
        };
        if let Some(bearer) = bearer {
            properties
                .user_properties
                .push(("authorization".into(), format!("Bearer {bearer}")));
        }
        self.client
            .publish_with_properties(topic, QoS::AtLeastOnce, false, payload, properties)
            .await?;
        Ok(())
    }

    async fn reply(&mut self) -> Result<Value> {
        tokio::time::timeout(Duration::from_secs(10), self.replies.recv())
            .await
            .context("no reply on the response topic")?
            .context("closed")
    }
}

/// A router ingesting `topic` from the broker at `url`.
async fn router(url: &str, topic: &str, extra: &[(&str, &str)]) -> Result<Server> {
    let group = unique("group-");
    let mut env = vec![
        ("MQTT_URL", url),
        ("MQTT_INGEST_TOPIC", topic),
        ("MQTT_SHARE_GROUP", group.as_str()),
    ];
    env.extend_from_slice(extra);
    Server::start(&env).await
}

#[tokio::test]
async fn a_device_publishes_and_a_websocket_user_receives() -> Result<()> {
    let url = broker_url()?;
    let topic = format!("e2e/{}/send", unique("t"));
    let server = router(&url, &topic, &[]).await?;
    let (sensor, bob) = (user("sensor"), user("bob"));
    let mut session = server.connect(&token(&bob)).await?;
    let mut device = Device::connect(port_of(&url)?).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut body = envelope(&bob);
    body["senderId"] = json!(sensor);
    device
        .send(&topic, Some(&token(&sensor)), body.to_string().into_bytes())
        .await?;
    let (id, received) = session.envelope().await?;
    assert_eq!(received["senderId"], sensor.as_str());
    assert_eq!(received["encryptedData"], CIPHERTEXT_B64);
    assert_eq!(
        device.reply().await?,
        json!({"messageId": id}),
        "accepted: the reply names the id"
    );

    // MQTT 3.1.1 devices put the token in the payload.
    let wrapped = json!({"token": token(&sensor), "envelope": envelope(&bob)});
    device
        .send(&topic, None, wrapped.to_string().into_bytes())
        .await?;
    let (second, _) = session.envelope().await?;
    assert_ne!(second, id);
    server.assert_not_logged(&[CIPHERTEXT_B64, &token(&sensor)]);
    Ok(())
}

#[tokio::test]
async fn bad_mqtt_messages_are_acknowledged_counted_and_answered() -> Result<()> {
    let url = broker_url()?;
    let topic = format!("e2e/{}/send", unique("t"));
    let server = router(&url, &topic, &[("MAX_BODY_BYTES", "2048")]).await?;
    let (sensor, bob) = (user("sensor"), user("bob"));
    let mut device = Device::connect(port_of(&url)?).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let good = envelope(&bob).to_string().into_bytes();
    let mut forged = envelope(&bob);
    forged["senderId"] = json!(user("someone-else"));
    let cases: Vec<(Option<String>, Vec<u8>, &str)> = vec![
        (Some("not-a-jwt".into()), good.clone(), "invalid token"),
        (None, good.clone(), "missing token"),
        (
            Some(token(&sensor)),
            b"{not json".to_vec(),
            "malformed JSON",
        ),
        (
            Some(token(&sensor)),
            json!({"recipientId": bob}).to_string().into_bytes(),
            "encryptedData",
        ),
        (Some(token(&sensor)), vec![b' '; 4096], "larger than 2048"),
        (
            Some(token(&sensor)),
            forged.to_string().into_bytes(),
            "senderId",
        ),
    ];
    for (bearer, payload, needle) in &cases {
        device
            .send(&topic, bearer.as_deref(), payload.clone())
            .await?;
        let reply = device.reply().await?;
        assert!(
            reply["error"].as_str().unwrap_or("").contains(needle),
            "{needle}: {reply}"
        );
    }
    // Acknowledged: none comes back, and each is counted once by reason.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = server.metrics_text().await?;
    for (reason, count) in [
        ("unauthenticated", 2),
        ("malformed", 2),
        ("oversized", 1),
        ("forbidden", 1),
    ] {
        let line = format!(
            r#"envelope_router_envelopes_total{{stage="ingest",source="mqtt",outcome="{reason}"}} {count}"#
        );
        assert!(metrics.contains(&line), "missing {line}");
    }
    assert!(
        server.pending_ids(&token(&bob)).await?.is_empty(),
        "nothing refused was stored"
    );
    Ok(())
}

#[tokio::test]
async fn two_ingestors_share_the_load_and_each_message_is_processed_once() -> Result<()> {
    let url = broker_url()?;
    let topic = format!("e2e/{}/send", unique("t"));
    // Two instances over one Redis: each ingests its share and routes to the session's holder.
    let mut shared = redis_profile(&redis_url()?, &unique("er-mqtt-"));
    shared.push(("DELIVERY".into(), "redis".into()));
    shared.push(("JWT_SECRET".into(), SECRET.into()));
    shared.push(("RATE_LIMIT_PAIR_BURST".into(), "1000".into()));
    shared.push(("MQTT_URL".into(), url.clone()));
    shared.push(("MQTT_INGEST_TOPIC".into(), topic.clone()));
    shared.push(("MQTT_SHARE_GROUP".into(), "e2e-group".into()));
    let with_id = |id: &str| {
        let mut env = shared.clone();
        env.push(("INSTANCE_ID".into(), id.into()));
        env
    };
    let a = Server::start_exact(with_id(&unique("ma-"))).await?;
    let b = Server::start_exact(with_id(&unique("mb-"))).await?;
    let (sensor, bob) = (user("sensor"), user("bob"));
    let mut session = a.connect(&token(&bob)).await?;
    let device = Device::connect(port_of(&url)?).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..20 {
        device
            .send(
                &topic,
                Some(&token(&sensor)),
                envelope(&bob).to_string().into_bytes(),
            )
            .await?;
    }
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(session.envelope().await?.0);
    }
    session.expect_silence(Duration::from_millis(500)).await?;
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20, "each message processed once");
    let accepted = |text: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(r#"envelope_router_envelopes_total{stage="ingest",source="mqtt",outcome="accepted"}"#))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let on_a = accepted(&a.metrics_text().await?);
    let on_b = accepted(&b.metrics_text().await?);
    assert_eq!(on_a + on_b, 20);
    assert!(
        on_a > 0 && on_b > 0,
        "both ingestors took a share: {on_a} + {on_b}"
    );
    Ok(())
}

/// A mosquitto of this test's own, to restart it.
struct OwnBroker {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl OwnBroker {
    fn start(port: u16, dir: &std::path::Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let config = dir.join("mosquitto.conf");
        let whoami = String::from_utf8(Command::new("id").arg("-un").output()?.stdout)?;
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nuser {}\n",
                whoami.trim()
            ),
        )?;
        let bin = std::env::var("MOSQUITTO_BIN").unwrap_or_else(|_| "/usr/sbin/mosquitto".into());
        let child = Command::new(bin)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("own mosquitto did not start");
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
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn after_a_broker_restart_the_ingestor_reconnects_and_resubscribes_by_itself() -> Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = std::env::temp_dir().join(unique("er-own-mosquitto-"));
    let mut broker = OwnBroker::start(port, &dir)?;
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let topic = format!("e2e/{}/send", unique("t"));
    let server = router(&url, &topic, &[]).await?;
    let (sensor, bob) = (user("sensor"), user("bob"));
    let mut session = server.connect(&token(&bob)).await?;
    {
        let device = Device::connect(port).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        device
            .send(
                &topic,
                Some(&token(&sensor)),
                envelope(&bob).to_string().into_bytes(),
            )
            .await?;
        session.envelope().await?;
    }
    // The broker restarts with no memory of anyone (persistence off).
    broker.stop()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _broker = OwnBroker::start(port, &dir)?;
    server
        .wait_for_log(
            &["mqtt connected; subscribing", &topic],
            2,
            Duration::from_secs(15),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let device = Device::connect(port).await?;
    device
        .send(
            &topic,
            Some(&token(&sensor)),
            envelope(&bob).to_string().into_bytes(),
        )
        .await?;
    session.envelope().await?;
    Ok(())
}

/// An MQTT-connected client of the router: announces itself, receives, acks; its Last Will says
/// when it is gone.
struct MqttUser {
    client: AsyncClient,
    poller: tokio::task::JoinHandle<()>,
    envelopes: mpsc::Receiver<Value>,
    urn: String,
}

impl MqttUser {
    async fn connect(port: u16, urn: &str) -> Result<Self> {
        use rumqttc::v5::mqttbytes::v5::LastWill;
        let mut options = MqttOptions::new(unique("client-"), "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(10));
        options.set_last_will(LastWill::new(
            format!("clients/{urn}/disconnect"),
            "gone",
            QoS::AtLeastOnce,
            false,
            None,
        ));
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let (sender, envelopes) = mpsc::channel(64);
        let (ready_tx, mut ready_rx) = mpsc::channel(1);
        let subscriber = client.clone();
        let receive = format!("clients/{urn}/receive");
        let poller = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = subscriber.try_subscribe(receive.clone(), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.try_send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Ok(value) = serde_json::from_slice(&p.payload) {
                            let _ = sender.send(value).await;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx.recv())
            .await
            .context("mqtt user connect")?;
        // Announce with the JWT (QoS 1); repeated, it is the session's heartbeat.
        client
            .publish(
                format!("clients/{urn}/connect"),
                QoS::AtLeastOnce,
                false,
                token(urn),
            )
            .await?;
        Ok(Self {
            client,
            poller,
            envelopes,
            urn: urn.to_owned(),
        })
    }

    async fn envelope(&mut self) -> Result<Value> {
        tokio::time::timeout(Duration::from_secs(10), self.envelopes.recv())
            .await
            .context("no envelope on clients/<urn>/receive")?
            .context("closed")
    }

    async fn ack(&self, ids: &[String]) -> Result<()> {
        let payload = json!({"messageIds": ids}).to_string();
        self.client
            .publish(
                format!("clients/{}/ack", self.urn),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await?;
        Ok(())
    }

    /// Drops the connection without DISCONNECT: the broker publishes the Last Will.
    fn vanish(self) {
        self.poller.abort();
    }
}

#[tokio::test]
async fn a_websocket_user_sends_and_an_mqtt_client_receives_and_acks() -> Result<()> {
    let url = broker_url()?;
    let topic = format!("e2e/{}/send", unique("t"));
    let server = router(&url, &topic, &[]).await?;
    let (alice, thermostat) = (user("alice"), user("thermostat"));
    // Stored before the device connects: it arrives as backlog.
    let early = server
        .send_ok(&token(&alice), &envelope(&thermostat))
        .await?;
    let mut device = MqttUser::connect(port_of(&url)?, &thermostat).await?;
    let first = device.envelope().await?;
    assert_eq!(first["messageId"], early.as_str());
    assert_eq!(first["envelope"]["encryptedData"], CIPHERTEXT_B64);
    let live = server
        .send_ok(&token(&alice), &envelope(&thermostat))
        .await?;
    assert_eq!(device.envelope().await?["messageId"], live.as_str());
    device.ack(&[early, live]).await?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.pending_ids(&token(&thermostat)).await?.is_empty() {
        if Instant::now() > deadline {
            bail!("acked envelopes are still queued");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        server
            .log_lines_with(&["wake-up push", &thermostat])
            .is_empty(),
        "online: no wake-up"
    );
    Ok(())
}

#[tokio::test]
async fn the_last_will_ends_the_session_and_the_next_envelope_wakes_the_device() -> Result<()> {
    let url = broker_url()?;
    let topic = format!("e2e/{}/send", unique("t"));
    let server = router(&url, &topic, &[("WAKEUP_WINDOW", "100ms")]).await?;
    let (alice, lock) = (user("alice"), user("lock"));
    let registered = server
        .request(Method::POST, "/register-device")
        .bearer_auth(token(&lock))
        .json(&json!({"token": "lock-push-token", "platform": "fcm"}))
        .send()
        .await?;
    assert_eq!(registered.status(), reqwest::StatusCode::NO_CONTENT);
    let mut device = MqttUser::connect(port_of(&url)?, &lock).await?;
    server
        .wait_for_log(&["mqtt session opened", &lock], 1, Duration::from_secs(5))
        .await?;
    let id = server.send_ok(&token(&alice), &envelope(&lock)).await?;
    assert_eq!(device.envelope().await?["messageId"], id.as_str());
    device.ack(&[id]).await?;
    device.vanish();
    server
        .wait_for_log(&["mqtt session closed", &lock], 1, Duration::from_secs(10))
        .await?;
    server.send_ok(&token(&alice), &envelope(&lock)).await?;
    server
        .wait_for_log(&["wake-up push", &lock], 1, Duration::from_secs(5))
        .await?;
    Ok(())
}

/// A Pub/Sub emulator of this test's own, to pause it (SIGSTOP) like an outage.
struct OwnEmulator {
    dir: std::path::PathBuf,
    host: String,
}

impl OwnEmulator {
    fn start() -> Result<Self> {
        let dir = std::env::temp_dir().join(unique("er-own-pubsub-"));
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/infra/dev/pubsub-emulator.sh");
        let out = Command::new(script).arg("start").arg(&dir).output()?;
        if !out.status.success() {
            bail!("emulator: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(Self {
            dir,
            host: String::from_utf8(out.stdout)?.trim().to_owned(),
        })
    }

    fn signal(&self, which: &str) -> Result<()> {
        let pgid = std::fs::read_to_string(self.dir.join("pubsub.pgid"))?;
        let status = Command::new("kill")
            .arg(which)
            .arg("--")
            .arg(format!("-{}", pgid.trim()))
            .status()?;
        anyhow::ensure!(status.success(), "kill {which} failed");
        Ok(())
    }
}

impl Drop for OwnEmulator {
    fn drop(&mut self) {
        let _ = self.signal("-CONT");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/infra/dev/pubsub-emulator.sh");
        let _ = Command::new(script).arg("stop").arg(&self.dir).status();
    }
}

#[tokio::test]
async fn while_the_bus_is_down_nothing_is_acknowledged_and_the_broker_redelivers_later()
-> Result<()> {
    let url = broker_url()?;
    let emulator = OwnEmulator::start()?;
    let run = unique("busdown");
    let topic = format!("e2e/{run}/send");
    let mut env = redis_profile(&redis_url()?, &run);
    for (key, value) in [
        ("BUS", "pubsub".to_owned()),
        ("PUBSUB_PROJECT", "envelope-router-e2e".to_owned()),
        ("PUBSUB_EMULATOR_HOST", emulator.host.clone()),
        ("PUBSUB_INGRESS_TOPIC", format!("{run}-ingress")),
        ("PUBSUB_SUBSCRIPTION", format!("{run}-router")),
        ("PUBSUB_DEAD_LETTER_TOPIC", format!("{run}-dead")),
        ("CREATE_RESOURCES", "true".to_owned()),
        ("JWT_SECRET", SECRET.to_owned()),
        ("MQTT_URL", url.clone()),
        ("MQTT_INGEST_TOPIC", topic.clone()),
        ("MQTT_SHARE_GROUP", run.clone()),
        ("MQTT_CLIENT_ID", format!("{run}-ingestor")),
    ] {
        env.push((key.to_owned(), value));
    }
    // A is only the MQTT sidecar (no streaming pull of its own that could hold the message
    // when it dies); B, started later with the same MQTT client id, runs every role.
    let mut sidecar = env.clone();
    sidecar.push(("ROLES".into(), "ingest-mqtt".into()));
    let routing = env;
    let server = Server::start_exact(sidecar).await?;
    let (sensor, bob) = (user("sensor"), user("bob"));
    let mut device = Device::connect(port_of(&url)?).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The bus stops answering: the message is received but not acknowledged.
    emulator.signal("-STOP")?;
    // The device names its message: a copy the dead ingestor may still have handed to the bus,
    // and the broker's redelivery, are the same envelope (dedupe by messageId).
    let mut body = envelope(&bob);
    let chosen = unique("device-msg-");
    body["messageId"] = json!(chosen);
    device
        .send(&topic, Some(&token(&sensor)), body.to_string().into_bytes())
        .await?;
    assert!(
        tokio::time::timeout(Duration::from_secs(2), device.replies.recv())
            .await
            .is_err(),
        "no PUBACK (and no reply) while the bus is down"
    );
    // The ingestor dies holding it; the bus comes back; a new ingestor with the same client id
    // resumes the broker session, which delivers the unacknowledged message again.
    let server = server.kill9().await?;
    emulator.signal("-CONT")?;
    let server = server.restart_with(routing).await?;
    let reply = tokio::time::timeout(Duration::from_secs(30), device.replies.recv())
        .await
        .context("no reply after the bus came back")?
        .context("closed")?;
    assert_eq!(
        reply["messageId"],
        chosen.as_str(),
        "accepted after the restart"
    );
    let mut session = server.connect(&token(&bob)).await?;
    match session.next(Duration::from_secs(30)).await? {
        crate::harness::Next::Json(frame) => {
            assert_eq!(frame["messageId"], chosen.as_str(), "nothing lost")
        }
        other => bail!(
            "the envelope did not arrive: {other:?}; logs:\n{}",
            server.logs().join("\n")
        ),
    }
    session.expect_silence(Duration::from_secs(1)).await?;
    Ok(())
}
