//! What every device-token store guarantees.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::device::{DeviceToken, Platform};
use crate::ports::device_tokens::DeviceTokenStore;
use crate::testkit::user;

/// Runs the device-token behaviour suite against a fresh store from `make`.
pub async fn device_tokens_suite<F, Fut>(namespace: &str, make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn DeviceTokenStore>>,
{
    let tokens = make().await;
    let alice = user(namespace, "alice");
    let bob = user(namespace, "bob");
    let phone = DeviceToken::parse("fcm-token-phone").expect("token");
    let tablet = DeviceToken::parse("apns-token-tablet").expect("token");

    assert!(tokens.devices(&alice).await.expect("devices").is_empty());
    tokens
        .register(&alice, &phone, Platform::Fcm)
        .await
        .expect("register");
    tokens
        .register(&alice, &tablet, Platform::Apns)
        .await
        .expect("register");
    tokens
        .register(&bob, &phone, Platform::Fcm)
        .await
        .expect("register");
    let mut devices = tokens.devices(&alice).await.expect("devices");
    devices.sort_by_key(|d| d.platform.as_str());
    assert_eq!(devices.len(), 2);
    assert_eq!(
        (devices[0].platform, &devices[0].token),
        (Platform::Apns, &tablet)
    );
    assert_eq!(
        (devices[1].platform, &devices[1].token),
        (Platform::Fcm, &phone)
    );
    let first = devices[1].clone();

    // Re-registering is an idempotent upsert that keeps createdAt and refreshes updatedAt.
    tokio::time::sleep(Duration::from_millis(5)).await;
    tokens
        .register(&alice, &phone, Platform::Fcm)
        .await
        .expect("register");
    let again: Vec<_> = tokens
        .devices(&alice)
        .await
        .expect("devices")
        .into_iter()
        .filter(|d| d.token == phone)
        .collect();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].created_at_ms, first.created_at_ms);
    assert!(again[0].updated_at_ms > first.updated_at_ms);

    // Unregister deletes one token of one user.
    assert!(
        tokens
            .unregister(&alice, &tablet)
            .await
            .expect("unregister")
    );
    assert!(
        !tokens
            .unregister(&alice, &tablet)
            .await
            .expect("unregister")
    );
    assert_eq!(tokens.devices(&alice).await.expect("devices").len(), 1);
    assert_eq!(tokens.devices(&bob).await.expect("devices").len(), 1);

    // A dead-token report loses against a registration made after the send started.
    let send_started = SystemClock.now_ms();
    tokio::time::sleep(Duration::from_millis(5)).await;
    tokens
        .register(&alice, &phone, Platform::Fcm)
        .await
        .expect("register");
    assert!(
        !tokens
            .remove_dead(&alice, &phone, send_started)
            .await
            .expect("remove_dead")
    );
    assert_eq!(tokens.devices(&alice).await.expect("devices").len(), 1);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let later = SystemClock.now_ms();
    assert!(
        tokens
            .remove_dead(&alice, &phone, later)
            .await
            .expect("remove_dead")
    );
    assert!(tokens.devices(&alice).await.expect("devices").is_empty());
    tokens.unregister(&bob, &phone).await.expect("cleanup");
}
