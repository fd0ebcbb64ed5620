//! What every envelope store guarantees.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::message_id::MessageId;
use crate::ports::envelope_store::{EnqueueOutcome, EnvelopeStore, Retention};
use crate::testkit::{queued, user};
use crate::urn::UserUrn;

async fn all_ids(store: &dyn EnvelopeStore, who: &UserUrn, page: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor = None;
    loop {
        let batch = store
            .backlog(who, cursor.as_ref(), page)
            .await
            .expect("backlog");
        assert!(batch.envelopes.len() <= page, "page larger than its limit");
        ids.extend(batch.envelopes.iter().map(|e| e.message_id.to_string()));
        match batch.next {
            Some(next) => cursor = Some(next),
            None => return ids,
        }
    }
}

/// Runs the envelope-store behaviour suite; `make` builds a fresh store with a retention.
pub async fn envelope_store_suite<F, Fut>(namespace: &str, make: F)
where
    F: Fn(Retention) -> Fut,
    Fut: Future<Output = Arc<dyn EnvelopeStore>>,
{
    let long = Retention {
        envelopes: Duration::from_secs(3600),
        dedupe: Duration::from_secs(3600),
    };
    let store = make(long).await;
    store.check().await.expect("check");
    let alice = user(namespace, "alice");
    let bob = user(namespace, "bob");

    // A batch enqueues in order as one-by-one would: a repeated id in it is a duplicate, and
    // retrying the whole batch (after a failed write) changes nothing.
    let carol = user(namespace, "carol");
    let batch = [
        queued(&carol, "b1", false),
        queued(&carol, "b2", true),
        queued(&carol, "b1", false),
        queued(&carol, "b3", false),
    ];
    assert_eq!(
        store.enqueue_many(&batch).await.expect("enqueue_many"),
        vec![
            EnqueueOutcome::Stored,
            EnqueueOutcome::Stored,
            EnqueueOutcome::Duplicate,
            EnqueueOutcome::Stored
        ]
    );
    assert_eq!(
        store.enqueue_many(&batch).await.expect("retry"),
        vec![EnqueueOutcome::Duplicate; 4]
    );
    assert!(
        store
            .enqueue_many(&[])
            .await
            .expect("empty batch")
            .is_empty()
    );
    assert_eq!(
        all_ids(store.as_ref(), &carol, 10).await,
        ["b2", "b1", "b3"]
    );
    let carol_ids: Vec<MessageId> = ["b1", "b2", "b3"]
        .iter()
        .map(|id| MessageId::parse(id).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    assert_eq!(store.ack(&carol, &carol_ids).await.expect("ack"), 3);

    // A staged enqueue's outcomes are final and its envelopes readable before it is durable,
    // and acking them then works as for any stored envelope.
    let staged = store
        .enqueue_staged(&[queued(&carol, "s1", false), queued(&carol, "s1", false)])
        .await
        .expect("enqueue_staged");
    assert_eq!(
        staged.outcomes,
        vec![EnqueueOutcome::Stored, EnqueueOutcome::Duplicate]
    );
    assert_eq!(all_ids(store.as_ref(), &carol, 10).await, ["s1"]);
    staged.durable.await.expect("durable");
    let s1 = MessageId::parse("s1").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.ack(&carol, &[s1]).await.expect("ack staged"), 1);

    // Empty queue.
    assert!(all_ids(store.as_ref(), &alice, 10).await.is_empty());
    assert_eq!(store.depth(&alice).await.expect("depth"), 0);
    assert_eq!(
        store.oldest_enqueued_ms(&alice).await.expect("oldest"),
        None
    );
    let before = crate::clock::Clock::now_ms(&crate::clock::SystemClock);

    // Express lane first, insertion order within each lane; other users untouched.
    for (id, express) in [
        ("n1", false),
        ("e1", true),
        ("n2", false),
        ("e2", true),
        ("n3", false),
    ] {
        assert_eq!(
            store
                .enqueue(&queued(&alice, id, express))
                .await
                .expect("enqueue"),
            EnqueueOutcome::Stored
        );
    }
    store
        .enqueue(&queued(&bob, "b1", false))
        .await
        .expect("enqueue");
    assert_eq!(
        all_ids(store.as_ref(), &alice, 2).await,
        ["e1", "e2", "n1", "n2", "n3"]
    );
    assert_eq!(
        all_ids(store.as_ref(), &alice, 100).await,
        ["e1", "e2", "n1", "n2", "n3"]
    );
    assert_eq!(all_ids(store.as_ref(), &bob, 10).await, ["b1"]);
    assert_eq!(store.depth(&alice).await.expect("depth"), 5);
    let oldest = store
        .oldest_enqueued_ms(&alice)
        .await
        .expect("oldest")
        .expect("queued");
    let after = crate::clock::Clock::now_ms(&crate::clock::SystemClock);
    assert!(
        (before.saturating_sub(5)..=after + 5).contains(&oldest),
        "{before} <= {oldest} <= {after}"
    );

    // The stored JSON comes back byte for byte.
    let page = store.backlog(&bob, None, 10).await.expect("backlog");
    assert_eq!(page.envelopes[0], queued(&bob, "b1", false));

    // Dedupe: a second enqueue of a known id is a no-op, even after it was acked.
    assert_eq!(
        store
            .enqueue(&queued(&alice, "n1", true))
            .await
            .expect("enqueue"),
        EnqueueOutcome::Duplicate
    );
    assert_eq!(store.depth(&alice).await.expect("depth"), 5);
    // The same id for another recipient is another envelope.
    assert_eq!(
        store
            .enqueue(&queued(&bob, "n1", false))
            .await
            .expect("enqueue"),
        EnqueueOutcome::Stored
    );

    // Ack deletes exactly the named envelopes of that recipient.
    let n1 = MessageId::parse("n1").expect("id");
    let e2 = MessageId::parse("e2").expect("id");
    let unknown = MessageId::parse("nope").expect("id");
    assert!(store.contains(&alice, &n1).await.expect("contains"));
    assert_eq!(
        store
            .ack(&alice, &[n1.clone(), e2.clone(), unknown])
            .await
            .expect("ack"),
        2
    );
    assert!(!store.contains(&alice, &n1).await.expect("contains"));
    assert!(
        store.contains(&bob, &n1).await.expect("contains"),
        "bob's n1 must survive alice's ack"
    );
    assert_eq!(
        all_ids(store.as_ref(), &alice, 10).await,
        ["e1", "n2", "n3"]
    );
    assert_eq!(
        store
            .ack(&alice, std::slice::from_ref(&n1))
            .await
            .expect("ack"),
        0,
        "ack is idempotent"
    );
    assert_eq!(
        store
            .enqueue(&queued(&alice, "n1", false))
            .await
            .expect("enqueue"),
        EnqueueOutcome::Duplicate
    );

    // Paging survives acks between pages.
    let first = store.backlog(&alice, None, 1).await.expect("backlog");
    store
        .ack(&alice, &[first.envelopes[0].message_id.clone()])
        .await
        .expect("ack");
    let rest = store
        .backlog(&alice, first.next.as_ref(), 10)
        .await
        .expect("backlog");
    let rest: Vec<_> = rest
        .envelopes
        .iter()
        .map(|e| e.message_id.to_string())
        .collect();
    assert_eq!(rest, ["n2", "n3"]);

    // Dedupe holds under concurrent enqueues of one id: exactly one is stored.
    let erin = user(namespace, "erin");
    let racers: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            let envelope = queued(&erin, "raced", false);
            tokio::spawn(async move { store.enqueue(&envelope).await })
        })
        .collect();
    let mut stored = 0;
    for racer in racers {
        if racer.await.expect("join").expect("enqueue") == EnqueueOutcome::Stored {
            stored += 1;
        }
    }
    assert_eq!(stored, 1, "exactly one concurrent enqueue stores");
    assert_eq!(store.depth(&erin).await.expect("depth"), 1);

    // Many envelopes: order holds across pages.
    let carol = user(namespace, "carol");
    for i in 0..120 {
        store
            .enqueue(&queued(&carol, &format!("m{i:03}"), i % 7 == 0))
            .await
            .expect("enqueue");
    }
    let ids = all_ids(store.as_ref(), &carol, 50).await;
    let mut expected: Vec<String> = (0..120)
        .filter(|i| i % 7 == 0)
        .map(|i| format!("m{i:03}"))
        .collect();
    expected.extend((0..120).filter(|i| i % 7 != 0).map(|i| format!("m{i:03}")));
    assert_eq!(ids, expected);

    // Retention: an expired envelope is gone from reads and from the store after a purge.
    let short = make(Retention {
        envelopes: Duration::from_millis(1500),
        dedupe: Duration::from_millis(1500),
    })
    .await;
    let dave = user(namespace, "dave");
    short
        .enqueue(&queued(&dave, "old", false))
        .await
        .expect("enqueue");
    assert_eq!(all_ids(short.as_ref(), &dave, 10).await, ["old"]);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    short
        .enqueue(&queued(&dave, "new", false))
        .await
        .expect("enqueue");
    assert_eq!(all_ids(short.as_ref(), &dave, 10).await, ["new"]);
    assert!(
        !short
            .contains(&dave, &MessageId::parse("old").expect("id"))
            .await
            .expect("contains")
    );
    short.purge_expired().await.expect("purge");
    assert_eq!(short.depth(&dave).await.expect("depth"), 1);
    // Past the dedupe window, the id is new again.
    assert_eq!(
        short
            .enqueue(&queued(&dave, "old", false))
            .await
            .expect("enqueue"),
        EnqueueOutcome::Stored
    );
}
