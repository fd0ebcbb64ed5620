//! The log push sender (`PUSH=log`): one log line per wake-up, for development.

use async_trait::async_trait;
use pipeline::error::PushError;
use pipeline::ports::push::{PushOutcome, PushSender};
use pipeline::{DeviceRegistration, Platform};
use tracing::info;

/// Logs wake-ups instead of sending them. Logs the token's fingerprint, never the token.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogPushSender;

#[async_trait]
impl PushSender for LogPushSender {
    fn provider(&self, _platform: Platform) -> &'static str {
        "log"
    }

    async fn wake(&self, device: &DeviceRegistration) -> Result<PushOutcome, PushError> {
        info!(
            recipient = %device.user,
            platform = device.platform.as_str(),
            device = %device.token,
            "wake-up push"
        );
        Ok(PushOutcome::Sent)
    }
}
