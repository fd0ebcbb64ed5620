//! The Redis adapters pass the same behaviour suites as the embedded ones, against a real
//! redis-server (`REDIS_URL`, started by `infra/test.sh`). A missing server is a failure.

use std::sync::Arc;
use std::time::Duration;

use adapters::redis::{
    RedisConfig, RedisDeviceTokenStore, RedisEnvelopeStore, RedisHandle, RedisPresenceStore,
    RedisRateLimiter,
};
use pipeline::clock::SystemClock;
use pipeline::ports::{DeviceTokenStore, EnvelopeStore, PresenceStore, RateDecision, RateLimiter};
use pipeline::testkit;

/// A unique key prefix, so suites run in parallel and can clean up after themselves.
fn prefix(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("er-test-{name}-{}-{nanos}:", std::process::id())
}

async fn connect(prefix: &str) -> RedisHandle {
    let url = std::env::var("REDIS_URL")
        .expect("REDIS_URL is not set: run ./infra/test.sh, which starts redis-server");
    RedisConfig {
        url,
        key_prefix: prefix.to_owned(),
        timeout: Duration::from_secs(2),
    }
    .connect()
    .await
    .unwrap_or_else(|e| panic!("redis at REDIS_URL: {e}"))
}

/// Deletes every key under `prefix`.
async fn cleanup(prefix: &str) {
    let url = std::env::var("REDIS_URL").expect("REDIS_URL");
    let client = redis::Client::open(url).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
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

#[tokio::test]
async fn redis_envelope_store_passes_the_suite() {
    let prefix = prefix("store");
    let redis = connect(&prefix).await;
    testkit::envelope_store_suite("redis", |retention| {
        let redis = redis.clone();
        async move {
            Arc::new(RedisEnvelopeStore::new(
                redis,
                retention,
                Arc::new(SystemClock),
            )) as Arc<dyn EnvelopeStore>
        }
    })
    .await;
    cleanup(&prefix).await;
}

#[tokio::test]
async fn redis_presence_passes_the_suite() {
    let prefix = prefix("presence");
    let redis = connect(&prefix).await;
    testkit::presence_suite("redis", || {
        let redis = redis.clone();
        async move {
            Arc::new(RedisPresenceStore::new(redis, Arc::new(SystemClock)))
                as Arc<dyn PresenceStore>
        }
    })
    .await;
    cleanup(&prefix).await;
}

#[tokio::test]
async fn redis_buckets_are_shared_and_refill() {
    let prefix = prefix("buckets");
    let redis = connect(&prefix).await;
    // Two limiters (two instances) share one bucket.
    let one = RedisRateLimiter::new(redis.clone(), 3, 5.0);
    let two = RedisRateLimiter::new(redis.clone(), 3, 5.0);
    assert_eq!(one.check("sender:a").await.unwrap(), RateDecision::Allowed);
    assert_eq!(two.check("sender:a").await.unwrap(), RateDecision::Allowed);
    assert_eq!(one.check("sender:a").await.unwrap(), RateDecision::Allowed);
    let RateDecision::Limited { retry_after } = two.check("sender:a").await.unwrap() else {
        panic!("the shared bucket is empty");
    };
    assert!(retry_after <= Duration::from_millis(250), "{retry_after:?}");
    assert_eq!(
        one.check("sender:b").await.unwrap(),
        RateDecision::Allowed,
        "buckets are per key"
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        two.check("sender:a").await.unwrap(),
        RateDecision::Allowed,
        "refilled"
    );
    cleanup(&prefix).await;
}

#[tokio::test]
async fn redis_device_tokens_pass_the_suite() {
    let prefix = prefix("devices");
    let redis = connect(&prefix).await;
    testkit::device_tokens_suite("redis", || {
        let redis = redis.clone();
        async move {
            Arc::new(RedisDeviceTokenStore::new(redis, Arc::new(SystemClock)))
                as Arc<dyn DeviceTokenStore>
        }
    })
    .await;
    cleanup(&prefix).await;
}
