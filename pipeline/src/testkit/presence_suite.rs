//! What every presence store guarantees.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::instance_id::InstanceId;
use crate::ports::presence::{PresenceStore, Protocol, SessionInfo};
use crate::session_id::SessionId;
use crate::testkit::user;
use crate::urn::UserUrn;

fn session(who: &UserUrn, instance: &InstanceId, protocol: Protocol) -> SessionInfo {
    let now = SystemClock.now_ms();
    SessionInfo {
        session: SessionId::random(),
        user: who.clone(),
        instance: instance.clone(),
        protocol,
        connected_at_ms: now,
        last_seen_ms: now,
    }
}

/// Runs the presence behaviour suite against a fresh store from `make`.
pub async fn presence_suite<F, Fut>(namespace: &str, make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn PresenceStore>>,
{
    let presence = make().await;
    presence.check().await.expect("check");
    let long = Duration::from_secs(60);
    let alice = user(namespace, "alice");
    let bob = user(namespace, "bob");
    let one = InstanceId::new(&format!("{namespace}-one"));
    let two = InstanceId::new(&format!("{namespace}-two"));
    presence.instance_alive(&one, long).await.expect("alive");
    presence.instance_alive(&two, long).await.expect("alive");

    assert!(
        presence
            .sessions(&alice)
            .await
            .expect("sessions")
            .is_empty()
    );
    let a1 = session(&alice, &one, Protocol::WebSocket);
    let a2 = session(&alice, &two, Protocol::Mqtt);
    presence.register(&a1, long).await.expect("register");
    presence.register(&a2, long).await.expect("register");
    let mut found = presence.sessions(&alice).await.expect("sessions");
    found.sort_by(|x, y| x.session.cmp(&y.session));
    let mut want = vec![a1.clone(), a2.clone()];
    want.sort_by(|x, y| x.session.cmp(&y.session));
    assert_eq!(found.len(), 2);
    for (got, want) in found.iter().zip(&want) {
        assert_eq!(
            (&got.session, &got.instance, got.protocol),
            (&want.session, &want.instance, want.protocol)
        );
        assert_eq!(got.connected_at_ms, want.connected_at_ms);
    }

    // Batch lookup keeps the order of the question.
    let many = presence
        .sessions_many(&[bob.clone(), alice.clone()])
        .await
        .expect("many");
    assert_eq!(many.len(), 2);
    assert!(many[0].is_empty());
    assert_eq!(many[1].len(), 2);

    // Unregister removes one session.
    presence
        .unregister(&alice, &a1.session)
        .await
        .expect("unregister");
    let left = presence.sessions(&alice).await.expect("sessions");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].session, a2.session);

    // A heartbeat keeps a short-lived session; without one it expires.
    let short = Duration::from_millis(1200);
    let b1 = session(&bob, &one, Protocol::WebSocket);
    presence.register(&b1, short).await.expect("register");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        presence
            .heartbeat(&bob, &b1.session, short)
            .await
            .expect("heartbeat")
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let seen = presence.sessions(&bob).await.expect("sessions");
    assert_eq!(seen.len(), 1, "heartbeat must extend the session");
    assert!(
        seen[0].last_seen_ms >= b1.last_seen_ms + 600,
        "lastSeen follows the heartbeat"
    );
    tokio::time::sleep(Duration::from_millis(1400)).await;
    assert!(
        presence.sessions(&bob).await.expect("sessions").is_empty(),
        "session must expire"
    );
    assert_eq!(
        presence
            .sessions_many(std::slice::from_ref(&bob))
            .await
            .expect("many"),
        [Vec::<SessionInfo>::new()],
        "an expired session is gone from a batch lookup too"
    );
    assert!(
        !presence
            .heartbeat(&bob, &b1.session, short)
            .await
            .expect("heartbeat"),
        "expired session stays gone"
    );

    // Sessions of an instance whose liveness lapsed do not count (no ghost routing).
    let ghost = InstanceId::new(&format!("{namespace}-ghost"));
    presence
        .instance_alive(&ghost, Duration::from_millis(800))
        .await
        .expect("alive");
    let carol = user(namespace, "carol");
    presence
        .register(&session(&carol, &ghost, Protocol::WebSocket), long)
        .await
        .expect("register");
    assert_eq!(presence.sessions(&carol).await.expect("sessions").len(), 1);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        presence
            .sessions(&carol)
            .await
            .expect("sessions")
            .is_empty(),
        "dead instance's sessions must not count"
    );
    assert!(
        presence
            .sessions_many(&[carol.clone(), bob.clone()])
            .await
            .expect("many")
            .iter()
            .all(Vec::is_empty),
        "nor in a batch lookup"
    );

    // Graceful shutdown removes every session of the instance at once.
    let dave = user(namespace, "dave");
    presence
        .register(&session(&dave, &two, Protocol::WebSocket), long)
        .await
        .expect("register");
    presence
        .register(&session(&dave, &one, Protocol::WebSocket), long)
        .await
        .expect("register");
    presence.remove_instance(&two).await.expect("remove");
    assert!(
        !presence.instance_live(&two).await.expect("live"),
        "removed instance is not live"
    );
    let dave_left = presence.sessions(&dave).await.expect("sessions");
    assert_eq!(dave_left.len(), 1);
    assert_eq!(dave_left[0].instance, one);
    assert!(
        presence
            .sessions(&alice)
            .await
            .expect("sessions")
            .is_empty(),
        "alice's session on two is gone"
    );
    presence.remove_instance(&one).await.expect("remove");
}
