//! The in-process delivery channel (`DELIVERY=local`): instances are channels in this process.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use pipeline::InstanceId;
use pipeline::error::DeliveryError;
use pipeline::ports::delivery_channel::{DeliveryChannel, DeliveryItem, DeliveryReceiver};
use tokio::sync::mpsc;

/// Delivery channels between roles of one process.
#[derive(Default)]
pub struct LocalDeliveryChannel {
    channels: Mutex<HashMap<InstanceId, mpsc::Sender<DeliveryItem>>>,
}

impl LocalDeliveryChannel {
    /// No channel open yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn sender(&self, instance: &InstanceId) -> Option<mpsc::Sender<DeliveryItem>> {
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(instance)
            .cloned()
    }
}

#[async_trait]
impl DeliveryChannel for LocalDeliveryChannel {
    async fn publish(
        &self,
        instance: &InstanceId,
        item: DeliveryItem,
    ) -> Result<(), DeliveryError> {
        let sender = self
            .sender(instance)
            .ok_or_else(|| DeliveryError::UnknownInstance(instance.to_string()))?;
        sender
            .send(item)
            .await
            .map_err(|_| DeliveryError::UnknownInstance(instance.to_string()))
    }

    async fn subscribe(
        &self,
        instance: &InstanceId,
        capacity: usize,
    ) -> Result<DeliveryReceiver, DeliveryError> {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(instance.clone(), sender);
        Ok(receiver)
    }

    async fn unsubscribe(&self, instance: &InstanceId) -> Result<(), DeliveryError> {
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(instance);
        Ok(())
    }
}
