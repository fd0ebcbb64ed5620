//! Per-recipient queues in the embedded database.
//!
//! Tables: `queue` (recipient, lane, seq) → record; `queue_ids` (recipient, id) → (lane, seq);
//! `expiry` indexes records by time for purges. Every operation is a B-tree lookup or range:
//! ack is O(log n), no scans. The dedupe window is a [`DedupeLog`] beside the database file.
//!
//! An enqueue touches no table and runs on its caller's task: it adds its dedupe entry and
//! holds the envelope in a [`PendingQueue`] until the next commit cuts its generation
//! ([`Staging`]); an ack within that time never touches the queue tables either.

mod dedupe;
mod pending;
mod staging;

use std::sync::Arc;

use async_trait::async_trait;
use pipeline::clock::Clock;
use pipeline::error::StoreError;
use pipeline::ports::envelope_store::{
    BacklogCursor, BacklogPage, EnqueueOutcome, EnvelopeStore, QueuedEnvelope, Retention,
    StagedEnqueue,
};
use pipeline::{MessageId, UserUrn};
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};

use self::dedupe::DedupeLog;
use self::pending::PendingQueue;
use self::staging::Staging;
use crate::embedded::database::{EmbeddedDb, read_rows};
use crate::error::AdapterError;

const QUEUE: TableDefinition<(&str, u8, u64), &[u8]> = TableDefinition::new("queue");
const QUEUE_IDS: TableDefinition<(&str, &str), (u8, u64)> = TableDefinition::new("queue_ids");
const EXPIRY: TableDefinition<(u64, &str, &str), ()> = TableDefinition::new("expiry");
/// Where versions before the [`DedupeLog`] kept the dedupe window; moved to it at open.
const LEGACY_DEDUPE: TableDefinition<(&str, &str), u64> = TableDefinition::new("dedupe");
const LEGACY_DEDUPE_EXPIRY: TableDefinition<(u64, &str, &str), ()> =
    TableDefinition::new("dedupe_expiry");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SEQ_KEY: &str = "queue_seq";

/// Lane numbers: the express lane sorts first.
const EXPRESS_LANE: u8 = 0;
const NORMAL_LANE: u8 = 1;

/// Purges delete at most this many entries per transaction.
const PURGE_BATCH: usize = 1000;

/// One stored envelope: when it expires, its id and its JSON.
struct Record<'a> {
    expires_at_ms: u64,
    message_id: &'a str,
    json: &'a str,
}

impl<'a> Record<'a> {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.message_id.len() + self.json.len());
        out.extend_from_slice(&self.expires_at_ms.to_be_bytes());
        out.push(self.message_id.len() as u8);
        out.extend_from_slice(self.message_id.as_bytes());
        out.extend_from_slice(self.json.as_bytes());
        out
    }

    fn decode(bytes: &'a [u8]) -> Result<Self, StoreError> {
        let corrupt = || StoreError::Corrupt("queue record".into());
        let (expiry, rest) = bytes.split_first_chunk::<8>().ok_or_else(corrupt)?;
        let (&id_len, rest) = rest.split_first().ok_or_else(corrupt)?;
        if rest.len() < usize::from(id_len) {
            return Err(corrupt());
        }
        let (id, json) = rest.split_at(usize::from(id_len));
        Ok(Self {
            expires_at_ms: u64::from_be_bytes(*expiry),
            message_id: std::str::from_utf8(id).map_err(|_| corrupt())?,
            json: std::str::from_utf8(json).map_err(|_| corrupt())?,
        })
    }
}

/// Removes `user`'s record `id` at `position` from the queue and its entry from the expiry
/// index; whether a record was there.
fn remove_record(
    queue: &mut redb::Table<'_, (&'static str, u8, u64), &'static [u8]>,
    expiry: &mut redb::Table<'_, (u64, &'static str, &'static str), ()>,
    user: &str,
    id: &str,
    (lane, seq): (u8, u64),
) -> Result<bool, redb::Error> {
    let Some(bytes) = queue.remove((user, lane, seq))? else {
        return Ok(false);
    };
    if let Ok(record) = Record::decode(bytes.value()) {
        expiry.remove((record.expires_at_ms, user, id))?;
    }
    Ok(true)
}

/// The folder of the dedupe log, beside the database file.
const DEDUPE_DIR: &str = "dedupe";

/// Up to [`PURGE_BATCH`] keys of the time-ordered `expiry` index due by `now`.
fn due_entries(
    index: &impl ReadableTable<(u64, &'static str, &'static str), ()>,
    now: u64,
) -> Result<Vec<(u64, String, String)>, redb::Error> {
    index
        .range((0, "", "")..(now + 1, "", ""))?
        .take(PURGE_BATCH)
        .map(|entry| {
            entry.map(|(key, _)| {
                let (at, user, id) = key.value();
                (at, user.to_owned(), id.to_owned())
            })
        })
        .collect::<Result<_, _>>()
        .map_err(redb::Error::from)
}

fn unavailable(err: AdapterError) -> StoreError {
    StoreError::Unavailable(err.to_string())
}

fn encode_cursor(lane: u8, seq: u64) -> BacklogCursor {
    BacklogCursor(format!("{lane}.{seq}"))
}

fn decode_cursor(cursor: &BacklogCursor) -> Result<(u8, u64), StoreError> {
    let (lane, seq) = cursor.0.split_once('.').ok_or(StoreError::InvalidCursor)?;
    let lane = lane.parse().map_err(|_| StoreError::InvalidCursor)?;
    let seq = seq.parse().map_err(|_| StoreError::InvalidCursor)?;
    Ok((lane, seq))
}

/// The clock readings one enqueue batch uses.
#[derive(Clone, Copy)]
struct EnqueueTimes {
    now: u64,
    expires_at: u64,
    dedupe_until: u64,
}

/// Enqueues `envelopes` in order: a known id within its dedupe window (also one earlier in
/// the same batch) is a duplicate; the others get their dedupe entries and wait in `pending`
/// for the commit. Touches no table.
fn enqueue_all(
    dedupe: &DedupeLog,
    pending: &PendingQueue,
    envelopes: &[QueuedEnvelope],
    times: EnqueueTimes,
) -> Vec<EnqueueOutcome> {
    let mut outcomes = Vec::with_capacity(envelopes.len());
    for envelope in envelopes {
        let user = envelope.recipient.as_str();
        let id = envelope.message_id.as_str();
        if !dedupe.insert_new(user, id, times.now, times.dedupe_until) {
            outcomes.push(EnqueueOutcome::Duplicate);
            continue;
        }
        let lane = if envelope.express {
            EXPRESS_LANE
        } else {
            NORMAL_LANE
        };
        pending.hold(
            &envelope.recipient,
            &envelope.message_id,
            lane,
            times.expires_at,
            &envelope.json,
        );
        outcomes.push(EnqueueOutcome::Stored);
    }
    outcomes
}

/// Moves the dedupe entries an older version kept in `db` into `dedupe` (synced), then deletes
/// their tables; a crash in between only moves them again. Without such tables, does nothing.
async fn adopt_legacy_dedupe(
    db: &EmbeddedDb,
    dedupe: &Arc<DedupeLog>,
    now: u64,
) -> Result<(), AdapterError> {
    let rows = db
        .read(|txn| {
            read_rows(txn, LEGACY_DEDUPE, |key, until| {
                let (user, id) = key.value();
                (user.to_owned(), id.to_owned(), until.value())
            })
        })
        .await?;
    let Some(rows) = rows else {
        return Ok(());
    };
    let dedupe = dedupe.clone();
    db.write_in(move |txn| {
        for (user, id, until) in &rows {
            if *until > now {
                dedupe.insert_new(user, id, now, *until);
            }
        }
        let txn = txn.begin()?;
        txn.delete_table(LEGACY_DEDUPE)?;
        txn.delete_table(LEGACY_DEDUPE_EXPIRY)?;
        Ok(())
    })
    .await
}

/// The embedded envelope store.
#[derive(Clone)]
pub struct EmbeddedEnvelopeStore {
    db: EmbeddedDb,
    /// Enqueued envelopes no commit has written yet.
    pending: Arc<PendingQueue>,
    /// The ids within their dedupe window.
    dedupe: Arc<DedupeLog>,
    /// Enqueues waiting for their generation's commit.
    staging: Arc<Staging>,
    retention: Retention,
    clock: Arc<dyn Clock>,
}

impl EmbeddedEnvelopeStore {
    /// A store in `db` keeping envelopes and ids as `retention` says; its dedupe log lives
    /// in `dedupe/` beside the database file.
    pub async fn new(
        db: EmbeddedDb,
        retention: Retention,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AdapterError> {
        let last_seq = db
            .write(|txn| {
                txn.open_table(QUEUE)?;
                txn.open_table(QUEUE_IDS)?;
                txn.open_table(EXPIRY)?;
                let meta = txn.open_table(META)?;
                let seq = meta.get(SEQ_KEY)?.map(|v| v.value()).unwrap_or(0);
                Ok(seq)
            })
            .await?;
        let now = clock.now_ms();
        let dir = db.dir().join(DEDUPE_DIR);
        let window = retention.dedupe.as_millis() as u64;
        let dedupe = tokio::task::spawn_blocking(move || DedupeLog::open(&dir, window, now))
            .await
            .map_err(|e| AdapterError::Database(e.to_string()))?
            .map_err(AdapterError::Database)?;
        let dedupe = Arc::new(dedupe);
        let pending = Arc::new(PendingQueue::new(last_seq));
        let staging = Arc::new(Staging::new(pending.clone(), dedupe.clone()));
        db.add_commit_hook(staging.clone());
        adopt_legacy_dedupe(&db, &dedupe, now).await?;
        Ok(Self {
            db,
            pending,
            dedupe,
            staging,
            retention,
            clock,
        })
    }
}

#[async_trait]
impl EnvelopeStore for EmbeddedEnvelopeStore {
    async fn enqueue(&self, envelope: &QueuedEnvelope) -> Result<EnqueueOutcome, StoreError> {
        let outcomes = self.enqueue_many(std::slice::from_ref(envelope)).await?;
        outcomes
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Unavailable("enqueue returned no outcome".into()))
    }

    async fn enqueue_many(
        &self,
        envelopes: &[QueuedEnvelope],
    ) -> Result<Vec<EnqueueOutcome>, StoreError> {
        let staged = self.enqueue_staged(envelopes).await?;
        staged.durable.await?;
        Ok(staged.outcomes)
    }

    async fn enqueue_staged(
        &self,
        envelopes: &[QueuedEnvelope],
    ) -> Result<StagedEnqueue, StoreError> {
        if envelopes.is_empty() {
            return Ok(StagedEnqueue::durable_now(Vec::new()));
        }
        let now = self.clock.now_ms();
        let times = EnqueueTimes {
            now,
            expires_at: now + self.retention.envelopes.as_millis() as u64,
            dedupe_until: now + self.retention.dedupe.as_millis() as u64,
        };
        let staged = self.staging.enqueue(envelopes, times);
        if staged.request_commit {
            self.db.request_commit().await.map_err(unavailable)?;
        }
        let signal = staged.durable;
        Ok(StagedEnqueue {
            outcomes: staged.outcomes,
            durable: Box::pin(async move { signal.wait().await.map_err(unavailable) }),
        })
    }

    async fn backlog(
        &self,
        user: &UserUrn,
        after: Option<&BacklogCursor>,
        limit: usize,
    ) -> Result<BacklogPage, StoreError> {
        let start = match after {
            Some(cursor) => {
                let (lane, seq) = decode_cursor(cursor)?;
                (lane, seq.checked_add(1).ok_or(StoreError::InvalidCursor)?)
            }
            None => (EXPRESS_LANE, 0),
        };
        let now = self.clock.now_ms();
        let owner = user.clone();
        let limit = limit.max(1);
        let rows = self
            .db
            .read(move |txn| {
                let queue = txn.open_table(QUEUE)?;
                let user = owner.as_str();
                let mut rows = Vec::new();
                let mut last = None;
                let mut more = false;
                for entry in
                    queue.range((user, start.0, start.1)..=(user, NORMAL_LANE, u64::MAX))?
                {
                    let (key, value) = entry?;
                    if rows.len() == limit {
                        more = true;
                        break;
                    }
                    let (_, lane, seq) = key.value();
                    last = Some((lane, seq));
                    rows.push((lane, value.value().to_vec()));
                }
                Ok((rows, last, more))
            })
            .await
            .map_err(unavailable)?;
        let (rows, last, more) = rows;
        let mut envelopes = Vec::with_capacity(rows.len());
        for (lane, bytes) in &rows {
            let record = Record::decode(bytes)?;
            if record.expires_at_ms <= now {
                continue;
            }
            envelopes.push(QueuedEnvelope {
                message_id: MessageId::parse(record.message_id)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                recipient: user.clone(),
                express: *lane == EXPRESS_LANE,
                json: record.json.into(),
            });
        }
        Ok(BacklogPage {
            envelopes,
            next: if more {
                last.map(|(lane, seq)| encode_cursor(lane, seq))
            } else {
                None
            },
        })
    }

    async fn ack(&self, user: &UserUrn, ids: &[MessageId]) -> Result<usize, StoreError> {
        // Envelopes still held for the commit leave without a table write, or the writer.
        let (held, stored) = self.pending.take_each(user, ids);
        if stored.is_empty() {
            return Ok(held);
        }
        let owner = user.clone();
        let stored: Vec<MessageId> = stored.into_iter().cloned().collect();
        // A lost ack only redelivers the envelope after a crash (at least once); no fsync needed.
        self.db
            .write_lazy_in(move |txn| {
                let mut removed = held;
                let txn = txn.begin()?;
                let user = owner.as_str();
                let mut index = txn.open_table(QUEUE_IDS)?;
                let mut queue = txn.open_table(QUEUE)?;
                let mut expiry = txn.open_table(EXPIRY)?;
                for id in &stored {
                    let Some(position) = index.remove((user, id.as_str()))? else {
                        continue;
                    };
                    if remove_record(&mut queue, &mut expiry, user, id.as_str(), position.value())?
                    {
                        removed += 1;
                    }
                }
                Ok(removed)
            })
            .await
            .map_err(unavailable)
    }

    async fn contains(&self, user: &UserUrn, id: &MessageId) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        let owner = user.clone();
        let id = id.clone();
        let record = self
            .db
            .read(move |txn| {
                let index = txn.open_table(QUEUE_IDS)?;
                let Some(position) = index.get((owner.as_str(), id.as_str()))? else {
                    return Ok(None);
                };
                let (lane, seq) = position.value();
                let queue = txn.open_table(QUEUE)?;
                Ok(queue
                    .get((owner.as_str(), lane, seq))?
                    .map(|v| v.value().to_vec()))
            })
            .await
            .map_err(unavailable)?;
        match record {
            Some(bytes) => Ok(Record::decode(&bytes)?.expires_at_ms > now),
            None => Ok(false),
        }
    }

    async fn depth(&self, user: &UserUrn) -> Result<u64, StoreError> {
        let now = self.clock.now_ms();
        let owner = user.clone();
        self.db
            .read(move |txn| {
                let queue = txn.open_table(QUEUE)?;
                let user = owner.as_str();
                let mut count = 0;
                for entry in queue.range((user, EXPRESS_LANE, 0)..=(user, NORMAL_LANE, u64::MAX))? {
                    let (_, value) = entry?;
                    let bytes = value.value();
                    let expires = bytes
                        .first_chunk::<8>()
                        .map(|b| u64::from_be_bytes(*b))
                        .unwrap_or(0);
                    if expires > now {
                        count += 1;
                    }
                }
                Ok(count)
            })
            .await
            .map_err(unavailable)
    }

    async fn oldest_enqueued_ms(&self, user: &UserUrn) -> Result<Option<u64>, StoreError> {
        let owner = user.clone();
        let retention = self.retention.envelopes.as_millis() as u64;
        let firsts = self
            .db
            .read(move |txn| {
                let queue = txn.open_table(QUEUE)?;
                let user = owner.as_str();
                let mut firsts = Vec::new();
                // Within a lane, sequence order is enqueue order: each lane's first is its oldest.
                for lane in [EXPRESS_LANE, NORMAL_LANE] {
                    if let Some(entry) = queue
                        .range((user, lane, 0)..=(user, lane, u64::MAX))?
                        .next()
                    {
                        let (_, value) = entry?;
                        firsts.push(value.value().to_vec());
                    }
                }
                Ok(firsts)
            })
            .await
            .map_err(unavailable)?;
        let mut oldest: Option<u64> = None;
        for bytes in &firsts {
            let enqueued = Record::decode(bytes)?
                .expires_at_ms
                .saturating_sub(retention);
            oldest = Some(oldest.map_or(enqueued, |o| o.min(enqueued)));
        }
        Ok(oldest)
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let now = self.clock.now_ms();
            let pending = self.pending.clone();
            let dedupe = self.dedupe.clone();
            let purged = self
                .db
                .write_lazy_in(move |slot| {
                    dedupe
                        .purge(now)
                        .map_err(|cause| redb::Error::Io(std::io::Error::other(cause)))?;
                    // Held envelopes go into the tables first, so the expiry index sees them
                    // (their generation's commit, durable, comes now or later).
                    pending.cut().write_into(slot)?;
                    let txn = slot.begin()?;
                    let mut purged = 0u64;
                    let mut expiry = txn.open_table(EXPIRY)?;
                    let mut index = txn.open_table(QUEUE_IDS)?;
                    let mut queue = txn.open_table(QUEUE)?;
                    let due = due_entries(&expiry, now)?;
                    for (at, user, id) in &due {
                        expiry.remove((*at, user.as_str(), id.as_str()))?;
                        if let Some(position) = index.remove((user.as_str(), id.as_str()))? {
                            let (lane, seq) = position.value();
                            queue.remove((user.as_str(), lane, seq))?;
                        }
                        purged += 1;
                    }
                    // Another round only while a batch came back full.
                    let more = due.len() == PURGE_BATCH;
                    Ok((purged, more))
                })
                .await
                .map_err(unavailable)?;
            total += purged.0;
            if !purged.1 {
                return Ok(total);
            }
        }
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.db
            .read(|txn| {
                txn.open_table(META)?.len()?;
                Ok(())
            })
            .await
            .map_err(unavailable)
    }
}
