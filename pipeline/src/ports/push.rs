//! Push senders: content-free wake-ups through FCM, APNs or the log.

use async_trait::async_trait;

use crate::device::{DeviceRegistration, Platform};
use crate::error::PushError;

/// What the provider said of one wake-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// Accepted by the provider.
    Sent,
    /// The token is dead (unregistered, invalid): delete it.
    TokenInvalid,
}

/// Sends one content-free wake-up to one device: no ciphertext, no sender, nothing identifying.
#[async_trait]
pub trait PushSender: Send + Sync + 'static {
    /// The provider that serves `platform`, for logs and metrics (`log`, `fcm`, `apns`).
    fn provider(&self, platform: Platform) -> &'static str;

    /// Wakes `device`.
    async fn wake(&self, device: &DeviceRegistration) -> Result<PushOutcome, PushError>;
}
