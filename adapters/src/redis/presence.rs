//! Presence in Redis: per user a hash of live sessions, per instance a liveness key.
//!
//! A session field carries its own expiry (`expiresAt`); the hash key's TTL follows the
//! longest-lived session. A lookup keeps only unexpired sessions whose instance's liveness key
//! exists, so a crashed instance stops receiving envelopes within one instance TTL.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ::redis::Script;
use async_trait::async_trait;
use pipeline::clock::Clock;
use pipeline::error::PresenceError;
use pipeline::ports::presence::{PresenceStore, Protocol, SessionInfo};
use pipeline::{InstanceId, SessionId, UserUrn};
use serde::{Deserialize, Serialize};

use crate::redis::connection::RedisHandle;

/// A session as stored in the user's hash.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredSession {
    instance_id: String,
    protocol: String,
    connected_at: u64,
    last_seen: u64,
    expires_at: u64,
}

/// Writes one session and stretches the hash's TTL to cover it.
const REGISTER: &str = r#"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local ttl = tonumber(ARGV[3])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"#;

/// Refreshes one unexpired session; returns 0 when it is gone.
const HEARTBEAT: &str = r#"
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local s = cjson.decode(raw)
local now = tonumber(ARGV[2])
if s.expiresAt <= now then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 0
end
s.lastSeen = now
s.expiresAt = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(s))
local ttl = tonumber(ARGV[3])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"#;

fn unavailable(err: ::redis::RedisError) -> PresenceError {
    PresenceError::Unavailable(err.to_string())
}

/// Presence shared by every instance through Redis.
pub struct RedisPresenceStore {
    redis: RedisHandle,
    clock: Arc<dyn Clock>,
    register: Script,
    heartbeat: Script,
}

impl RedisPresenceStore {
    /// Presence in `redis`.
    pub fn new(redis: RedisHandle, clock: Arc<dyn Clock>) -> Self {
        Self {
            redis,
            clock,
            register: Script::new(REGISTER),
            heartbeat: Script::new(HEARTBEAT),
        }
    }

    fn index_entry(user: &UserUrn, session: &SessionId) -> String {
        format!("{user}\t{session}")
    }
}

#[async_trait]
impl PresenceStore for RedisPresenceStore {
    async fn register(&self, session: &SessionInfo, ttl: Duration) -> Result<(), PresenceError> {
        let now = self.clock.now_ms();
        let ttl_ms = ttl.as_millis() as u64;
        let stored = StoredSession {
            instance_id: session.instance.to_string(),
            protocol: session.protocol.as_str().to_owned(),
            connected_at: session.connected_at_ms,
            last_seen: now,
            expires_at: now + ttl_ms,
        };
        let json = serde_json::to_string(&stored)
            .map_err(|e| PresenceError::Unavailable(e.to_string()))?;
        let keys = &self.redis.keys;
        let mut conn = self.redis.conn();
        self.register
            .key(keys.sessions(&session.user))
            .arg(session.session.as_str())
            .arg(json)
            .arg(ttl_ms)
            .invoke_async::<i64>(&mut conn)
            .await
            .map_err(unavailable)?;
        let index = keys.instance_sessions(&session.instance);
        ::redis::pipe()
            .cmd("SADD")
            .arg(&index)
            .arg(Self::index_entry(&session.user, &session.session))
            .ignore()
            .cmd("PEXPIRE")
            .arg(&index)
            .arg(ttl_ms)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn heartbeat(
        &self,
        user: &UserUrn,
        session: &SessionId,
        ttl: Duration,
    ) -> Result<bool, PresenceError> {
        let found: i64 = self
            .heartbeat
            .key(self.redis.keys.sessions(user))
            .arg(session.as_str())
            .arg(self.clock.now_ms())
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(unavailable)?;
        Ok(found == 1)
    }

    async fn unregister(&self, user: &UserUrn, session: &SessionId) -> Result<(), PresenceError> {
        let raw: Option<String> = ::redis::cmd("HGET")
            .arg(self.redis.keys.sessions(user))
            .arg(session.as_str())
            .query_async(&mut self.redis.conn())
            .await
            .map_err(unavailable)?;
        let mut pipe = ::redis::pipe();
        pipe.cmd("HDEL")
            .arg(self.redis.keys.sessions(user))
            .arg(session.as_str())
            .ignore();
        if let Some(stored) = raw.and_then(|r| serde_json::from_str::<StoredSession>(&r).ok()) {
            let instance = InstanceId::new(&stored.instance_id);
            pipe.cmd("SREM")
                .arg(self.redis.keys.instance_sessions(&instance))
                .arg(Self::index_entry(user, session))
                .ignore();
        }
        pipe.query_async::<()>(&mut self.redis.conn())
            .await
            .map_err(unavailable)
    }

    async fn sessions(&self, user: &UserUrn) -> Result<Vec<SessionInfo>, PresenceError> {
        let mut all = self.sessions_many(std::slice::from_ref(user)).await?;
        Ok(all.pop().unwrap_or_default())
    }

    async fn sessions_many(
        &self,
        users: &[UserUrn],
    ) -> Result<Vec<Vec<SessionInfo>>, PresenceError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.clock.now_ms();
        let mut conn = self.redis.conn();
        // Round trip 1: every user's sessions.
        let mut pipe = ::redis::pipe();
        for user in users {
            pipe.cmd("HGETALL").arg(self.redis.keys.sessions(user));
        }
        let hashes: Vec<HashMap<String, String>> =
            pipe.query_async(&mut conn).await.map_err(unavailable)?;
        let mut candidates: Vec<Vec<SessionInfo>> = Vec::with_capacity(users.len());
        let mut instances = BTreeSet::new();
        for (user, hash) in users.iter().zip(hashes) {
            let mut live = Vec::new();
            for (session, raw) in hash {
                let Ok(stored) = serde_json::from_str::<StoredSession>(&raw) else {
                    continue;
                };
                let Some(protocol) = Protocol::parse(&stored.protocol) else {
                    continue;
                };
                if stored.expires_at <= now {
                    continue;
                }
                let instance = InstanceId::new(&stored.instance_id);
                instances.insert(instance.clone());
                live.push(SessionInfo {
                    session: SessionId::from_stored(&session),
                    user: user.clone(),
                    instance,
                    protocol,
                    connected_at_ms: stored.connected_at,
                    last_seen_ms: stored.last_seen,
                });
            }
            candidates.push(live);
        }
        if instances.is_empty() {
            return Ok(candidates);
        }
        // Round trip 2: which of their instances are alive.
        let instances: Vec<InstanceId> = instances.into_iter().collect();
        let mut pipe = ::redis::pipe();
        for instance in &instances {
            pipe.cmd("EXISTS")
                .arg(self.redis.keys.instance_alive(instance));
        }
        let alive: Vec<bool> = pipe.query_async(&mut conn).await.map_err(unavailable)?;
        let alive: BTreeSet<&InstanceId> = instances
            .iter()
            .zip(alive)
            .filter_map(|(instance, up)| up.then_some(instance))
            .collect();
        for sessions in &mut candidates {
            sessions.retain(|s| alive.contains(&s.instance));
        }
        Ok(candidates)
    }

    async fn instance_alive(
        &self,
        instance: &InstanceId,
        ttl: Duration,
    ) -> Result<(), PresenceError> {
        let ttl_ms = ttl.as_millis() as u64;
        ::redis::pipe()
            .cmd("SET")
            .arg(self.redis.keys.instance_alive(instance))
            .arg(self.clock.now_ms())
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .cmd("PEXPIRE")
            .arg(self.redis.keys.instance_sessions(instance))
            .arg(ttl_ms.max(1))
            .ignore()
            .query_async::<()>(&mut self.redis.conn())
            .await
            .map_err(unavailable)
    }

    async fn instance_live(&self, instance: &InstanceId) -> Result<bool, PresenceError> {
        ::redis::cmd("EXISTS")
            .arg(self.redis.keys.instance_alive(instance))
            .query_async(&mut self.redis.conn())
            .await
            .map_err(unavailable)
    }

    async fn remove_instance(&self, instance: &InstanceId) -> Result<(), PresenceError> {
        let index = self.redis.keys.instance_sessions(instance);
        let mut conn = self.redis.conn();
        let entries: Vec<String> = ::redis::cmd("SMEMBERS")
            .arg(&index)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let mut pipe = ::redis::pipe();
        for entry in &entries {
            let Some((user, session)) = entry.split_once('\t') else {
                continue;
            };
            let Ok(user) = UserUrn::parse(user) else {
                continue;
            };
            pipe.cmd("HDEL")
                .arg(self.redis.keys.sessions(&user))
                .arg(session)
                .ignore();
        }
        pipe.cmd("DEL").arg(&index).ignore();
        pipe.cmd("DEL")
            .arg(self.redis.keys.instance_alive(instance))
            .ignore();
        pipe.query_async::<()>(&mut conn).await.map_err(unavailable)
    }

    async fn check(&self) -> Result<(), PresenceError> {
        self.redis.ping().await.map_err(unavailable)
    }
}
