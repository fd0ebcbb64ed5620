//! Picks the push sender of a device's platform (`PUSH=fcm,apns`); a platform without a
//! configured sender falls back to the log sender.

use std::sync::Arc;

use async_trait::async_trait;
use pipeline::error::PushError;
use pipeline::ports::push::{PushOutcome, PushSender};
use pipeline::{DeviceRegistration, Platform};

/// Routes each wake-up to the sender of its platform.
pub struct PlatformPushRouter {
    fcm: Arc<dyn PushSender>,
    apns: Arc<dyn PushSender>,
}

impl PlatformPushRouter {
    /// Routes FCM devices to `fcm` and APNs devices to `apns`.
    pub fn new(fcm: Arc<dyn PushSender>, apns: Arc<dyn PushSender>) -> Self {
        Self { fcm, apns }
    }

    fn sender(&self, platform: Platform) -> &Arc<dyn PushSender> {
        match platform {
            Platform::Fcm => &self.fcm,
            Platform::Apns => &self.apns,
        }
    }
}

#[async_trait]
impl PushSender for PlatformPushRouter {
    fn provider(&self, platform: Platform) -> &'static str {
        self.sender(platform).provider(platform)
    }

    async fn wake(&self, device: &DeviceRegistration) -> Result<PushOutcome, PushError> {
        self.sender(device.platform).wake(device).await
    }
}
