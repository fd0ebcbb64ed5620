//! The Pub/Sub adapters against Google's emulator (`PUBSUB_EMULATOR_HOST`, started by
//! `infra/test.sh`). A missing emulator is a failure, never a skip.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use adapters::pubsub::admin::{SubscriptionSpec, ensure_subscription};
use adapters::pubsub::{PubSubBus, PubSubConfig, PubSubDeliveryChannel};
use bytes::Bytes;
use pipeline::error::DeliveryError;
use pipeline::ports::{BusMessage, DeliveryChannel, DeliveryItem, EnvelopeBus};
use pipeline::{InstanceId, MessageId, UserUrn, testkit};

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000_000
    )
}

/// Settings for fresh, uniquely named topics on the emulator.
fn config(max_outstanding: i64) -> PubSubConfig {
    let host = std::env::var("PUBSUB_EMULATOR_HOST")
        .expect("PUBSUB_EMULATOR_HOST is not set: run ./infra/test.sh, which starts the emulator");
    let ingress = unique("ingress");
    PubSubConfig {
        project: "envelope-router-test".into(),
        emulator_host: Some(host),
        ingress_subscription: format!("{ingress}-router"),
        dead_letter_topic: format!("{ingress}-dead"),
        ingress_topic: ingress,
        max_delivery_attempts: 5,
        max_outstanding_messages: max_outstanding,
        max_outstanding_bytes: 10 << 20,
        max_in_flight_publishes: 100,
        publish_timeout: Duration::from_secs(5),
        create_resources: true,
    }
}

fn message(n: u32) -> BusMessage {
    BusMessage::new(
        Bytes::from(format!("poison-{n}")),
        BTreeMap::from([("n".to_owned(), n.to_string())]),
    )
}

#[tokio::test]
async fn pubsub_bus_passes_the_suite() {
    testkit::bus_suite(|| async {
        Arc::new(PubSubBus::connect(config(100), true).await.expect("bus")) as Arc<dyn EnvelopeBus>
    })
    .await;
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_after_five_attempts() {
    let config = config(100);
    let bus = PubSubBus::connect(config.clone(), true).await.expect("bus");
    // Watch the dead-letter topic.
    let dead_sub = config.subscription_path(&format!("{}-watch", config.dead_letter_topic));
    let admin = config.subscription_admin().await.expect("admin");
    ensure_subscription(
        &admin,
        &SubscriptionSpec {
            path: &dead_sub,
            topic: &config.topic_path(&config.dead_letter_topic),
            dead_letter: None,
            expire_after: None,
            retention: None,
            retry_backoff: None,
        },
    )
    .await
    .expect("dead-letter watch");
    let mut sub = bus.subscribe().await.expect("subscribe");
    bus.publish(message(7)).await.expect("publish");
    let mut attempts = Vec::new();
    for _ in 0..5 {
        let received = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .expect("delivery in time")
            .expect("open");
        assert_eq!(received.message, message(7));
        attempts.push(received.attempt);
        received.nack().await.expect("nack");
    }
    assert_eq!(attempts, [1, 2, 3, 4, 5]);
    let subscriber = config.subscriber().await.expect("subscriber");
    let mut dead = subscriber.subscribe(dead_sub).build();
    let (parked, handler) = tokio::time::timeout(Duration::from_secs(30), dead.next())
        .await
        .expect("dead letter in time")
        .expect("open")
        .expect("message");
    handler.ack();
    assert_eq!(&parked.data[..], b"poison-7");
    assert!(
        tokio::time::timeout(Duration::from_secs(3), sub.next())
            .await
            .is_err(),
        "a dead-lettered message is not delivered again"
    );
}

#[tokio::test]
async fn flow_control_holds_back_messages_past_the_outstanding_limit() {
    let bus = PubSubBus::connect(config(2), true).await.expect("bus");
    let mut sub = bus.subscribe().await.expect("subscribe");
    for n in 0..4 {
        bus.publish(message(n)).await.expect("publish");
    }
    let first = tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .expect("first")
        .expect("open");
    let second = tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .expect("second")
        .expect("open");
    assert!(
        tokio::time::timeout(Duration::from_secs(2), sub.next())
            .await
            .is_err(),
        "a third message must wait while two are outstanding"
    );
    first.ack().await.expect("ack");
    let third = tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .expect("third after an ack")
        .expect("open");
    second.ack().await.expect("ack");
    third.ack().await.expect("ack");
}

#[tokio::test]
async fn delivery_topics_live_from_subscribe_to_unsubscribe() {
    let channel = PubSubDeliveryChannel::connect(config(100))
        .await
        .expect("channel");
    let instance = InstanceId::new(&unique("inst"));
    let mut receiver = channel.subscribe(&instance, 16).await.expect("subscribe");
    let item = DeliveryItem {
        recipient: UserUrn::parse("bob").expect("urn"),
        message_id: MessageId::parse("m-1").expect("id"),
        json: r#"{"messageId":"m-1","recipientId":"urn:sm:user:bob","encryptedData":"AA=="}"#
            .into(),
        ephemeral: false,
        ingested_at_ms: Some(1),
    };
    channel
        .publish(&instance, item.clone())
        .await
        .expect("publish");
    let got = tokio::time::timeout(Duration::from_secs(20), receiver.recv())
        .await
        .expect("in time")
        .expect("item");
    assert_eq!(got, item);
    channel.unsubscribe(&instance).await.expect("unsubscribe");
    let topics = config(100).topic_admin().await.expect("admin");
    let path = format!("projects/envelope-router-test/topics/delivery-{instance}");
    assert!(
        topics.get_topic().set_topic(path).send().await.is_err(),
        "the delivery topic is deleted"
    );
    assert!(matches!(
        channel.publish(&instance, item).await,
        Err(DeliveryError::UnknownInstance(_))
    ));
}

#[tokio::test]
async fn the_janitor_deletes_delivery_topics_of_dead_instances_only() {
    use adapters::pubsub::DeliveryJanitor;
    use adapters::redis::{RedisConfig, RedisPresenceStore};
    use pipeline::clock::SystemClock;
    use pipeline::ports::PresenceStore;

    let url = std::env::var("REDIS_URL").expect("REDIS_URL is not set: run ./infra/test.sh");
    let prefix = format!("{}:", unique("er-janitor"));
    let redis = RedisConfig {
        url,
        key_prefix: prefix.clone(),
        timeout: Duration::from_secs(2),
    }
    .connect()
    .await
    .expect("redis");
    let presence: Arc<dyn PresenceStore> = Arc::new(RedisPresenceStore::new(
        redis.clone(),
        Arc::new(SystemClock),
    ));
    // Its own project, so other tests' delivery topics are not swept.
    let mut config = config(100);
    config.project = unique("janitor-project");
    let channel = PubSubDeliveryChannel::connect(config.clone())
        .await
        .expect("channel");
    let (live, dead) = (
        InstanceId::new(&unique("live")),
        InstanceId::new(&unique("dead")),
    );
    presence
        .instance_alive(&live, Duration::from_secs(60))
        .await
        .expect("alive");
    let _live_rx = channel.subscribe(&live, 4).await.expect("live topic");
    let _dead_rx = channel.subscribe(&dead, 4).await.expect("dead topic");

    let janitor = DeliveryJanitor::new(config.clone(), presence.clone(), redis.clone());
    let other = DeliveryJanitor::new(config.clone(), presence, redis);
    let deleted = janitor
        .sweep_once(Duration::from_secs(5))
        .await
        .expect("sweep")
        .expect("lock");
    assert_eq!(deleted, vec![dead.to_string()]);
    assert!(
        other
            .sweep_once(Duration::from_secs(5))
            .await
            .expect("sweep")
            .is_none(),
        "one janitor at a time"
    );
    let topics = config.topic_admin().await.expect("admin");
    assert!(
        topics
            .get_topic()
            .set_topic(config.topic_path(&format!("delivery-{live}")))
            .send()
            .await
            .is_ok()
    );
    assert!(
        topics
            .get_topic()
            .set_topic(config.topic_path(&format!("delivery-{dead}")))
            .send()
            .await
            .is_err()
    );
    channel.unsubscribe(&live).await.expect("cleanup");
    let client = redis::Client::open(std::env::var("REDIS_URL").expect("url")).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .expect("keys");
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .expect("del");
    }
}
