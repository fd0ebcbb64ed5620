//! In-memory token buckets (`RATE_LIMIT=memory`): per-process limits.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use foldhash::{HashMap, HashMapExt};
use pipeline::clock::Clock;
use pipeline::error::RateLimitError;
use pipeline::ports::rate_limit::{RateDecision, RateLimiter};

/// Buckets kept before idle full ones are dropped.
const MAX_BUCKETS: usize = 100_000;

struct Bucket {
    tokens: f64,
    updated_ms: u64,
}

/// Token buckets of `burst` tokens refilled at `per_second`.
pub struct MemoryRateLimiter {
    burst: f64,
    per_second: f64,
    clock: Arc<dyn Clock>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl MemoryRateLimiter {
    /// Buckets holding up to `burst` tokens, refilled at `per_second` tokens a second.
    pub fn new(burst: u32, per_second: f64, clock: Arc<dyn Clock>) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            per_second: per_second.max(f64::MIN_POSITIVE),
            clock,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Refills `bucket` up to `now` and takes a token from it, or says how long until one.
    fn take(&self, bucket: &mut Bucket, now: u64) -> RateDecision {
        let elapsed = now.saturating_sub(bucket.updated_ms) as f64 / 1000.0;
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.updated_ms = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            RateDecision::Allowed
        } else {
            let wait = (1.0 - bucket.tokens) / self.per_second;
            RateDecision::Limited {
                retry_after: Duration::from_secs_f64(wait.max(0.001)),
            }
        }
    }
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn check(&self, key: &str) -> Result<RateDecision, RateLimitError> {
        let now = self.clock.now_ms();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            let (burst, rate) = (self.burst, self.per_second);
            buckets.retain(|_, b| {
                b.tokens + (now.saturating_sub(b.updated_ms) as f64 / 1000.0) * rate < burst
            });
        }
        // A key is copied only when its bucket is new: most requests find theirs.
        if let Some(bucket) = buckets.get_mut(key) {
            return Ok(self.take(bucket, now));
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            updated_ms: now,
        });
        Ok(self.take(bucket, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline::clock::ManualClock;

    #[tokio::test]
    async fn bucket_allows_burst_then_refills() {
        let clock = ManualClock::new(1_000);
        let limiter = MemoryRateLimiter::new(3, 2.0, Arc::new(clock.clone()));
        for _ in 0..3 {
            assert_eq!(limiter.check("a").await.unwrap(), RateDecision::Allowed);
        }
        let RateDecision::Limited { retry_after } = limiter.check("a").await.unwrap() else {
            panic!("fourth request must be limited");
        };
        assert!(retry_after <= Duration::from_millis(500));
        assert_eq!(
            limiter.check("b").await.unwrap(),
            RateDecision::Allowed,
            "buckets are per key"
        );
        clock.advance(500);
        assert_eq!(limiter.check("a").await.unwrap(), RateDecision::Allowed);
        assert!(matches!(
            limiter.check("a").await.unwrap(),
            RateDecision::Limited { .. }
        ));
    }
}
