//! The Firestore device-token store against Google's emulator (`FIRESTORE_EMULATOR_HOST`,
//! started by `infra/test.sh`). A missing emulator is a failure, never a skip.

use std::sync::Arc;
use std::time::Duration;

use adapters::firestore::{FirestoreConfig, FirestoreDeviceTokenStore};
use pipeline::clock::SystemClock;
use pipeline::ports::DeviceTokenStore;
use pipeline::{DeviceToken, Platform, UserUrn, testkit};

fn config(cache_ttl: Duration) -> FirestoreConfig {
    std::env::var("FIRESTORE_EMULATOR_HOST").expect(
        "FIRESTORE_EMULATOR_HOST is not set: run ./infra/test.sh, which starts the emulator",
    );
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    FirestoreConfig {
        project: format!("er-test-{}-{}", std::process::id(), nanos % 1_000_000_000),
        database: "(default)".into(),
        cache_ttl,
        cache_size: 100,
    }
}

#[tokio::test]
async fn firestore_device_tokens_pass_the_suite() {
    let config = config(Duration::ZERO);
    testkit::device_tokens_suite("firestore", || {
        let config = config.clone();
        async move {
            Arc::new(
                FirestoreDeviceTokenStore::connect(config, Arc::new(SystemClock))
                    .await
                    .expect("firestore"),
            ) as Arc<dyn DeviceTokenStore>
        }
    })
    .await;
}

#[tokio::test]
async fn the_device_cache_serves_bursts_and_is_invalidated_by_writes() {
    let config = config(Duration::from_secs(60));
    let cached = FirestoreDeviceTokenStore::connect(config.clone(), Arc::new(SystemClock))
        .await
        .expect("firestore");
    let other_instance = FirestoreDeviceTokenStore::connect(config, Arc::new(SystemClock))
        .await
        .expect("firestore");
    let user = UserUrn::parse("urn:cache:user:alice").expect("urn");
    let phone = DeviceToken::parse("phone-token").expect("token");
    cached
        .register(&user, &phone, Platform::Fcm)
        .await
        .expect("register");
    assert_eq!(cached.devices(&user).await.expect("devices").len(), 1);
    // Another instance removes the token: this instance still serves its cached list (short TTL) ...
    other_instance
        .unregister(&user, &phone)
        .await
        .expect("unregister");
    assert_eq!(
        cached.devices(&user).await.expect("devices").len(),
        1,
        "served from the cache"
    );
    // ... until a write on this instance invalidates it.
    cached
        .register(
            &user,
            &DeviceToken::parse("tablet-token").expect("token"),
            Platform::Apns,
        )
        .await
        .expect("register");
    let devices = cached.devices(&user).await.expect("devices");
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].platform, Platform::Apns);
}
