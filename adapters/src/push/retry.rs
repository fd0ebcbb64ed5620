//! Retrying a provider call: `429` and `5xx` are retried with exponential backoff, honouring the
//! provider's `Retry-After` (seconds), up to a bounded number of attempts.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// How a provider call is retried.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in all (the first included).
    pub attempts: u32,
    /// Delay before the second attempt; doubles each time.
    pub first_backoff: Duration,
    /// Longest delay honoured, even when `Retry-After` asks for more.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// Whether `status` is worth another attempt.
    pub fn retryable(status: StatusCode) -> bool {
        status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
    }

    /// The delay before attempt `next` (2, 3, …): `Retry-After` when given, else backoff.
    pub fn delay(&self, next: u32, headers: &HeaderMap) -> Duration {
        let asked = headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let backoff = self
            .first_backoff
            .saturating_mul(1 << next.saturating_sub(2).min(16));
        asked.unwrap_or(backoff).min(self.max_backoff)
    }
}
