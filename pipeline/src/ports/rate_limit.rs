//! Rate limits: token buckets per sender (and later per sender and recipient).

use std::time::Duration;

use async_trait::async_trait;

use crate::error::RateLimitError;

/// A rate limiter's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateDecision {
    /// Go ahead; one token was taken.
    Allowed,
    /// Too many; try again after this long (`Retry-After`).
    Limited {
        /// When a token will be available.
        retry_after: Duration,
    },
}

/// Token buckets keyed by a caller-chosen string (`sender:<urn>`).
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Takes one token from `key`'s bucket if there is one.
    async fn check(&self, key: &str) -> Result<RateDecision, RateLimitError>;
}
