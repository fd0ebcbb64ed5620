//! Per-recipient queues in Redis, every step one atomic script on the recipient's slot.
//!
//! Keys (all tagged `{<urn>}`): `q` sorted set id → lane·2⁵² + seq (express lane 0 first, then
//! insertion order); `e` hash id → JSON; `x` sorted set id → expiry; `d` sorted set id → end of
//! dedupe window; `seq` counter. Ack is `ZREM`/`HDEL`: O(log n), no list scans. Expired entries
//! are removed by every enqueue and read (bounded batches), and every key carries a TTL, so an
//! idle queue disappears after its retention.

use std::sync::Arc;

use ::redis::Script;
use async_trait::async_trait;
use pipeline::clock::Clock;
use pipeline::error::StoreError;
use pipeline::ports::envelope_store::{
    BacklogCursor, BacklogPage, EnqueueOutcome, EnvelopeStore, QueuedEnvelope, Retention,
};
use pipeline::{MessageId, UserUrn};

use crate::redis::connection::RedisHandle;

/// Removes up to 100 expired envelopes of the queue: shared head of the scripts below.
const PURGE_EXPIRED: &str = r#"
local function purge(q, e, x, now)
  local old = redis.call('ZRANGEBYSCORE', x, '-inf', now, 'LIMIT', 0, 100)
  if #old > 0 then
    redis.call('ZREM', q, unpack(old))
    redis.call('HDEL', e, unpack(old))
    redis.call('ZREM', x, unpack(old))
  end
end
"#;

/// KEYS: q e x d seq. ARGV: id json lane now expires dedupe_until key_ttl. Returns 1 stored, 0 dup.
const ENQUEUE: &str = r#"
local q, e, x, d, seqk = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, json, lane, now = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
purge(q, e, x, now)
redis.call('ZREMRANGEBYSCORE', d, '-inf', now)
if redis.call('ZSCORE', d, id) then return 0 end
redis.call('ZADD', d, ARGV[6], id)
local seq = redis.call('INCR', seqk)
redis.call('ZADD', q, string.format('%d', lane * 4503599627370496 + seq), id)
redis.call('HSET', e, id, json)
redis.call('ZADD', x, ARGV[5], id)
for _, k in ipairs(KEYS) do redis.call('PEXPIRE', k, ARGV[7]) end
return 1
"#;

/// KEYS: q e x. ARGV: now after_score(or '-inf') limit. Returns flat [id, score, json|nil, …],
/// one row more than asked when there are more pages.
const BACKLOG: &str = r#"
local q, e, x = KEYS[1], KEYS[2], KEYS[3]
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[3])
purge(q, e, x, now)
local min = ARGV[2]
if min ~= '-inf' then min = '(' .. min end
local rows = redis.call('ZRANGEBYSCORE', q, min, '+inf', 'WITHSCORES', 'LIMIT', 0, limit + 1)
local out = {}
for i = 1, #rows, 2 do
  local id = rows[i]
  local expires = tonumber(redis.call('ZSCORE', x, id) or '0')
  local json = false
  if expires > now then json = redis.call('HGET', e, id) end
  -- An expired or half-written row keeps its place (nil body) so paging moves past it.
  table.insert(out, id)
  table.insert(out, rows[i + 1])
  table.insert(out, json)
end
return out
"#;

/// KEYS: q e x. ARGV: ids. Returns how many were queued.
const ACK: &str = r#"
local n = redis.call('ZREM', KEYS[1], unpack(ARGV))
redis.call('HDEL', KEYS[2], unpack(ARGV))
redis.call('ZREM', KEYS[3], unpack(ARGV))
return n
"#;

fn unavailable(err: ::redis::RedisError) -> StoreError {
    StoreError::Unavailable(err.to_string())
}

/// Lane 0 (express) sorts before lane 1.
const NORMAL_LANE: u64 = 1;

/// The Redis envelope store.
pub struct RedisEnvelopeStore {
    redis: RedisHandle,
    retention: Retention,
    clock: Arc<dyn Clock>,
    enqueue: Script,
    backlog: Script,
    ack: Script,
}

impl RedisEnvelopeStore {
    /// A store in `redis` keeping envelopes and ids as `retention` says.
    pub fn new(redis: RedisHandle, retention: Retention, clock: Arc<dyn Clock>) -> Self {
        Self {
            redis,
            retention,
            clock,
            enqueue: Script::new(&format!("{PURGE_EXPIRED}{ENQUEUE}")),
            backlog: Script::new(&format!("{PURGE_EXPIRED}{BACKLOG}")),
            ack: Script::new(ACK),
        }
    }
}

#[async_trait]
impl EnvelopeStore for RedisEnvelopeStore {
    async fn enqueue(&self, envelope: &QueuedEnvelope) -> Result<EnqueueOutcome, StoreError> {
        let now = self.clock.now_ms();
        let retention = self.retention.envelopes.as_millis() as u64;
        let dedupe = self.retention.dedupe.as_millis() as u64;
        let keys = &self.redis.keys;
        let user = &envelope.recipient;
        let stored: i64 = self
            .enqueue
            .key(keys.queue(user))
            .key(keys.envelopes(user))
            .key(keys.expiry(user))
            .key(keys.dedupe(user))
            .key(keys.sequence(user))
            .arg(envelope.message_id.as_str())
            .arg(envelope.json.as_ref())
            .arg(if envelope.express { 0 } else { NORMAL_LANE })
            .arg(now)
            .arg(now + retention)
            .arg(now + dedupe)
            .arg(retention.max(dedupe) + 60_000)
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(unavailable)?;
        Ok(if stored == 1 {
            EnqueueOutcome::Stored
        } else {
            EnqueueOutcome::Duplicate
        })
    }

    async fn backlog(
        &self,
        user: &UserUrn,
        after: Option<&BacklogCursor>,
        limit: usize,
    ) -> Result<BacklogPage, StoreError> {
        let after = match after {
            Some(cursor) => {
                let score: u64 = cursor.0.parse().map_err(|_| StoreError::InvalidCursor)?;
                score.to_string()
            }
            None => "-inf".to_owned(),
        };
        let limit = limit.max(1);
        let keys = &self.redis.keys;
        let rows: Vec<Option<String>> = self
            .backlog
            .key(keys.queue(user))
            .key(keys.envelopes(user))
            .key(keys.expiry(user))
            .arg(self.clock.now_ms())
            .arg(after)
            .arg(limit)
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(unavailable)?;
        let mut envelopes = Vec::new();
        let mut last_score = None;
        let rows: Vec<&[Option<String>]> = rows.chunks(3).collect();
        let more = rows.len() > limit;
        for row in rows.into_iter().take(limit) {
            let [Some(id), Some(score), json] = row else {
                return Err(StoreError::Corrupt("backlog row".into()));
            };
            let score: u64 = score
                .parse::<f64>()
                .map(|s| s as u64)
                .map_err(|_| StoreError::Corrupt("queue score".into()))?;
            last_score = Some(score);
            if let Some(json) = json {
                envelopes.push(QueuedEnvelope {
                    message_id: MessageId::parse(id)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    recipient: user.clone(),
                    express: score < (NORMAL_LANE << 52),
                    json: json.as_str().into(),
                });
            }
        }
        Ok(BacklogPage {
            envelopes,
            next: if more {
                last_score.map(|s| BacklogCursor(s.to_string()))
            } else {
                None
            },
        })
    }

    async fn ack(&self, user: &UserUrn, ids: &[MessageId]) -> Result<usize, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let keys = &self.redis.keys;
        let mut invocation = self.ack.key(keys.queue(user));
        invocation.key(keys.envelopes(user)).key(keys.expiry(user));
        for id in ids {
            invocation.arg(id.as_str());
        }
        let removed: i64 = invocation
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(unavailable)?;
        Ok(removed.max(0) as usize)
    }

    async fn contains(&self, user: &UserUrn, id: &MessageId) -> Result<bool, StoreError> {
        let expires: Option<f64> = ::redis::cmd("ZSCORE")
            .arg(self.redis.keys.expiry(user))
            .arg(id.as_str())
            .query_async(&mut self.redis.conn())
            .await
            .map_err(unavailable)?;
        Ok(expires.is_some_and(|at| at as u64 > self.clock.now_ms()))
    }

    async fn depth(&self, user: &UserUrn) -> Result<u64, StoreError> {
        let count: u64 = ::redis::cmd("ZCOUNT")
            .arg(self.redis.keys.expiry(user))
            .arg(format!("({}", self.clock.now_ms()))
            .arg("+inf")
            .query_async(&mut self.redis.conn())
            .await
            .map_err(unavailable)?;
        Ok(count)
    }

    async fn oldest_enqueued_ms(&self, user: &UserUrn) -> Result<Option<u64>, StoreError> {
        let first: Vec<(String, f64)> = ::redis::cmd("ZRANGE")
            .arg(self.redis.keys.expiry(user))
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .query_async(&mut self.redis.conn())
            .await
            .map_err(unavailable)?;
        let retention = self.retention.envelopes.as_millis() as u64;
        Ok(first
            .first()
            .map(|(_, expires)| (*expires as u64).saturating_sub(retention)))
    }

    /// Expiry is enforced per queue on every enqueue and read, and keys expire with their
    /// retention, so there is no global sweep to run.
    async fn purge_expired(&self) -> Result<u64, StoreError> {
        Ok(0)
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.redis.ping().await.map_err(unavailable)
    }
}
