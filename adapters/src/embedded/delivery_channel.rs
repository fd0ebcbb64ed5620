//! The in-process delivery channel (`DELIVERY=local`): instances are channels in this process.

use std::sync::{Mutex, Weak};

use async_trait::async_trait;
use foldhash::HashMap;
use pipeline::InstanceId;
use pipeline::error::DeliveryError;
use pipeline::ports::delivery_channel::{
    DeliveryChannel, DeliveryItem, DeliveryReceiver, DeliverySink,
};
use tokio::sync::mpsc;

/// How items reach one instance.
#[derive(Clone)]
enum Route {
    /// Through the receiver the instance consumes.
    Channel(mpsc::Sender<DeliveryItem>),
    /// Straight to the instance's sink, on the publisher's task.
    Direct(Weak<dyn DeliverySink>),
}

/// Delivery channels between roles of one process.
#[derive(Default)]
pub struct LocalDeliveryChannel {
    routes: Mutex<HashMap<InstanceId, Route>>,
}

impl LocalDeliveryChannel {
    /// No channel open yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, HashMap<InstanceId, Route>> {
        self.routes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl DeliveryChannel for LocalDeliveryChannel {
    async fn publish(
        &self,
        instance: &InstanceId,
        item: DeliveryItem,
    ) -> Result<(), DeliveryError> {
        let unknown = || DeliveryError::UnknownInstance(instance.to_string());
        let route = self.routes().get(instance).cloned().ok_or_else(unknown)?;
        match route {
            Route::Channel(sender) => sender.send(item).await.map_err(|_| unknown()),
            Route::Direct(sink) => {
                sink.upgrade().ok_or_else(unknown)?.deliver(item);
                Ok(())
            }
        }
    }

    async fn subscribe(
        &self,
        instance: &InstanceId,
        capacity: usize,
    ) -> Result<DeliveryReceiver, DeliveryError> {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        self.routes()
            .insert(instance.clone(), Route::Channel(sender));
        Ok(receiver)
    }

    async fn unsubscribe(&self, instance: &InstanceId) -> Result<(), DeliveryError> {
        self.routes().remove(instance);
        Ok(())
    }

    fn attach(&self, instance: &InstanceId, sink: Weak<dyn DeliverySink>) -> bool {
        self.routes().insert(instance.clone(), Route::Direct(sink));
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pipeline::{MessageId, UserUrn};

    use super::*;

    /// Records what it is handed.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<MessageId>>);

    impl DeliverySink for Recorder {
        fn deliver(&self, item: DeliveryItem) {
            self.0.lock().unwrap().push(item.message_id);
        }
    }

    fn item(id: &str) -> DeliveryItem {
        DeliveryItem {
            recipient: UserUrn::parse("bob").unwrap(),
            message_id: MessageId::parse(id).unwrap(),
            json: Arc::from("{}"),
            ephemeral: false,
            ingested_at_ms: None,
        }
    }

    #[tokio::test]
    async fn an_attached_sink_gets_items_directly_until_unsubscribed() {
        let channel = LocalDeliveryChannel::new();
        let instance = InstanceId::new("a");
        let mut receiver = channel.subscribe(&instance, 4).await.unwrap();
        channel.publish(&instance, item("m-1")).await.unwrap();
        assert_eq!(receiver.recv().await.unwrap().message_id.as_str(), "m-1");

        let recorder = Arc::new(Recorder::default());
        let sink = Arc::downgrade(&recorder) as Weak<dyn DeliverySink>;
        assert!(channel.attach(&instance, sink));
        channel.publish(&instance, item("m-2")).await.unwrap();
        let ids: Vec<String> = recorder
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|id| id.as_str().to_owned())
            .collect();
        assert_eq!(ids, ["m-2"]);
        assert!(
            receiver.try_recv().is_err(),
            "nothing goes through the receiver"
        );

        channel.unsubscribe(&instance).await.unwrap();
        assert!(matches!(
            channel.publish(&instance, item("m-3")).await,
            Err(DeliveryError::UnknownInstance(_))
        ));
    }

    #[tokio::test]
    async fn a_dropped_sink_is_an_unknown_instance() {
        let channel = LocalDeliveryChannel::new();
        let instance = InstanceId::new("a");
        let recorder = Arc::new(Recorder::default());
        channel.attach(
            &instance,
            Arc::downgrade(&recorder) as Weak<dyn DeliverySink>,
        );
        drop(recorder);
        assert!(matches!(
            channel.publish(&instance, item("m-1")).await,
            Err(DeliveryError::UnknownInstance(_))
        ));
    }
}
