//! Device tokens: where a user's push tokens are kept.

use async_trait::async_trait;

use crate::device::{DeviceRegistration, DeviceToken, Platform};
use crate::error::DeviceTokenError;
use crate::urn::UserUrn;

/// Keeps each user's registered push tokens, one record per token.
#[async_trait]
pub trait DeviceTokenStore: Send + Sync + 'static {
    /// Upserts `token` for `user`: a new record, or a refreshed `updated_at` (idempotent).
    async fn register(
        &self,
        user: &UserUrn,
        token: &DeviceToken,
        platform: Platform,
    ) -> Result<(), DeviceTokenError>;

    /// Removes `token` from `user`; returns whether it was there.
    async fn unregister(
        &self,
        user: &UserUrn,
        token: &DeviceToken,
    ) -> Result<bool, DeviceTokenError>;

    /// The user's registered devices.
    async fn devices(&self, user: &UserUrn) -> Result<Vec<DeviceRegistration>, DeviceTokenError>;

    /// Removes `token` reported dead by its provider, unless it was re-registered at or after
    /// `send_started_ms` (a fresh registration wins over a stale failure). Returns whether it was
    /// removed.
    async fn remove_dead(
        &self,
        user: &UserUrn,
        token: &DeviceToken,
        send_started_ms: u64,
    ) -> Result<bool, DeviceTokenError>;
}
