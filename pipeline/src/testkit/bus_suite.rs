//! What every envelope bus guarantees: at-least-once with ack, nack and redelivery.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::ports::bus::{BusMessage, EnvelopeBus};

/// Bus message `n`: payload `payload-{n}`, one attribute `n`.
pub fn bus_message(n: u32) -> BusMessage {
    let mut attributes = BTreeMap::new();
    attributes.insert("n".to_owned(), n.to_string());
    BusMessage::new(Bytes::from(format!("payload-{n}")), attributes)
}

/// Runs the bus behaviour suite; `make` builds a bus over fresh topics.
pub async fn bus_suite<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn EnvelopeBus>>,
{
    let bus = make().await;
    bus.check().await.expect("check");
    let mut sub = bus.subscribe().await.expect("subscribe");
    for n in 0..3 {
        bus.publish(bus_message(n)).await.expect("publish");
    }
    let wait = Duration::from_secs(20);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let received = tokio::time::timeout(wait, sub.next())
            .await
            .expect("message in time")
            .expect("open");
        assert_eq!(received.attempt, 1);
        seen.push(received);
    }
    let mut payloads: Vec<_> = seen.iter().map(|r| r.message.clone()).collect();
    payloads.sort_by(|a, b| a.data.cmp(&b.data));
    assert_eq!(
        payloads,
        vec![bus_message(0), bus_message(1), bus_message(2)]
    );

    // Nack one: it comes again with a higher attempt; acked ones do not come again.
    let mut nacked = None;
    for received in seen {
        if received.message == bus_message(1) {
            nacked = Some(received.message.clone());
            received.nack().await.expect("nack");
        } else {
            received.ack().await.expect("ack");
        }
    }
    let again = tokio::time::timeout(wait, sub.next())
        .await
        .expect("redelivery in time")
        .expect("open");
    assert_eq!(Some(again.message.clone()), nacked);
    assert!(again.attempt >= 2, "redelivery counts attempts");
    again.ack().await.expect("ack");
    assert!(
        tokio::time::timeout(Duration::from_secs(2), sub.next())
            .await
            .is_err(),
        "acked messages must not come back"
    );
    bus.dead_letter(bus_message(9), "test")
        .await
        .expect("dead letter");
}
