//! Token buckets in Redis, shared by every instance; refill uses the server's clock.

use std::time::Duration;

use ::redis::Script;
use async_trait::async_trait;
use pipeline::error::RateLimitError;
use pipeline::ports::rate_limit::{RateDecision, RateLimiter};

use crate::redis::connection::RedisHandle;

/// KEYS: bucket. ARGV: burst per_second. Returns {allowed, wait_ms}.
const TAKE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local burst, rate = tonumber(ARGV[1]), tonumber(ARGV[2])
local v = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(v[1]) or burst
local ts = tonumber(v[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) / 1000 * rate)
local allowed, wait = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return {allowed, wait}
"#;

/// Token buckets of `burst` tokens refilled at `per_second`, kept in Redis.
pub struct RedisRateLimiter {
    redis: RedisHandle,
    burst: u32,
    per_second: f64,
    take: Script,
}

impl RedisRateLimiter {
    /// Buckets in `redis` holding up to `burst` tokens, refilled at `per_second` a second.
    pub fn new(redis: RedisHandle, burst: u32, per_second: f64) -> Self {
        Self {
            redis,
            burst: burst.max(1),
            per_second: per_second.max(0.000_001),
            take: Script::new(TAKE),
        }
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, key: &str) -> Result<RateDecision, RateLimitError> {
        let (allowed, wait_ms): (i64, i64) = self
            .take
            .key(self.redis.keys.bucket(key))
            .arg(self.burst)
            .arg(self.per_second)
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(|e| RateLimitError::Unavailable(e.to_string()))?;
        Ok(if allowed == 1 {
            RateDecision::Allowed
        } else {
            RateDecision::Limited {
                retry_after: Duration::from_millis(wait_ms.max(1) as u64),
            }
        })
    }
}
