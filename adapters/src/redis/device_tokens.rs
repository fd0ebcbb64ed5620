//! Device tokens in Redis (`DEVICE_TOKENS=redis`): per user a hash of token fingerprint →
//! `{token, platform, createdAt, updatedAt}`, shared by every instance.

use std::sync::Arc;

use ::redis::Script;
use async_trait::async_trait;
use pipeline::clock::Clock;
use pipeline::error::DeviceTokenError;
use pipeline::ports::device_tokens::DeviceTokenStore;
use pipeline::{DeviceRegistration, DeviceToken, Platform, UserUrn};
use serde::{Deserialize, Serialize};

use crate::redis::connection::RedisHandle;

/// A device as stored.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredDevice {
    token: String,
    platform: Platform,
    created_at: u64,
    updated_at: u64,
}

/// KEYS: devices. ARGV: fingerprint token platform now. Upsert keeping createdAt.
const REGISTER: &str = r#"
local created = tonumber(ARGV[4])
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then created = cjson.decode(old).createdAt end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode({token = ARGV[2], platform = ARGV[3], createdAt = created, updatedAt = tonumber(ARGV[4])}))
return 1
"#;

/// KEYS: devices. ARGV: fingerprint send_started. Deletes unless re-registered since.
const REMOVE_DEAD: &str = r#"
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return 0 end
if cjson.decode(old).updatedAt < tonumber(ARGV[2]) then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
"#;

fn unavailable(err: ::redis::RedisError) -> DeviceTokenError {
    DeviceTokenError::Unavailable(err.to_string())
}

/// Device tokens shared through Redis.
pub struct RedisDeviceTokenStore {
    redis: RedisHandle,
    clock: Arc<dyn Clock>,
    register: Script,
    remove_dead: Script,
}

impl RedisDeviceTokenStore {
    /// Device tokens in `redis`.
    pub fn new(redis: RedisHandle, clock: Arc<dyn Clock>) -> Self {
        Self {
            redis,
            clock,
            register: Script::new(REGISTER),
            remove_dead: Script::new(REMOVE_DEAD),
        }
    }
}

#[async_trait]
impl DeviceTokenStore for RedisDeviceTokenStore {
    async fn register(
        &self,
        user: &UserUrn,
        token: &DeviceToken,
        platform: Platform,
    ) -> Result<(), DeviceTokenError> {
        self.register
            .key(self.redis.keys.devices(user))
            .arg(token.fingerprint())
            .arg(token.expose())
            .arg(platform.as_str())
            .arg(self.clock.now_ms())
            .invoke_async::<i64>(&mut self.redis.conn())
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn unregister(
        &self,
        user: &UserUrn,
        token: &DeviceToken,
    ) -> Result<bool, DeviceTokenError> {
        let removed: i64 = ::redis::cmd("HDEL")
            .arg(self.redis.keys.devices(user))
            .arg(token.fingerprint())
            .query_async(&mut self.redis.conn())
            .await
            .map_err(unavailable)?;
        Ok(removed == 1)
    }

    async fn devices(&self, user: &UserUrn) -> Result<Vec<DeviceRegistration>, DeviceTokenError> {
        let all: std::collections::HashMap<String, String> = ::redis::cmd("HGETALL")
            .arg(self.redis.keys.devices(user))
            .query_async(&mut self.redis.conn())
            .await
            .map_err(unavailable)?;
        Ok(all
            .values()
            .filter_map(|raw| serde_json::from_str::<StoredDevice>(raw).ok())
            .filter_map(|stored| {
                Some(DeviceRegistration {
                    user: user.clone(),
                    token: DeviceToken::parse(&stored.token).ok()?,
                    platform: stored.platform,
                    created_at_ms: stored.created_at,
                    updated_at_ms: stored.updated_at,
                })
            })
            .collect())
    }

    async fn remove_dead(
        &self,
        user: &UserUrn,
        token: &DeviceToken,
        send_started_ms: u64,
    ) -> Result<bool, DeviceTokenError> {
        let removed: i64 = self
            .remove_dead
            .key(self.redis.keys.devices(user))
            .arg(token.fingerprint())
            .arg(send_started_ms)
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(unavailable)?;
        Ok(removed == 1)
    }
}
