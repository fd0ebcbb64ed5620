//! Enqueued envelopes held out of the queue tables until the open transaction commits.
//!
//! Most envelopes reach an online recipient and are acked within the commit interval; an ack
//! that finds its envelope here removes it, and the queue tables never see either write. Only
//! what is still unacked when the transaction commits is written, right before the commit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use pipeline::{MessageId, UserUrn};
use redb::WriteTransaction;

use super::{EXPIRY, QUEUE, QUEUE_IDS, Record, remove_record};
use crate::embedded::database::CommitHook;

/// One envelope waiting for the commit: where it goes in its recipient's queue.
struct PendingRecord {
    lane: u8,
    seq: u64,
    expires_at_ms: u64,
    json: Arc<str>,
}

/// The envelopes enqueued since the last commit, by recipient and id. Touched only by
/// operations running on the writer thread, so its lock is never contended.
#[derive(Default)]
pub(super) struct PendingQueue(Mutex<HashMap<UserUrn, HashMap<MessageId, PendingRecord>>>);

impl PendingQueue {
    fn records(&self) -> MutexGuard<'_, HashMap<UserUrn, HashMap<MessageId, PendingRecord>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds `user`'s envelope `id` at (`lane`, `seq`); an earlier one with the same id is
    /// replaced, not doubled.
    pub(super) fn hold(
        &self,
        user: &UserUrn,
        id: &MessageId,
        (lane, seq): (u8, u64),
        expires_at_ms: u64,
        json: &Arc<str>,
    ) {
        self.records().entry(user.clone()).or_default().insert(
            id.clone(),
            PendingRecord {
                lane,
                seq,
                expires_at_ms,
                json: json.clone(),
            },
        );
    }

    /// Drops `user`'s envelope `id` if it is held; whether it was.
    pub(super) fn take(&self, user: &UserUrn, id: &MessageId) -> bool {
        let mut records = self.records();
        let Some(queue) = records.get_mut(user) else {
            return false;
        };
        let held = queue.remove(id).is_some();
        if queue.is_empty() {
            records.remove(user);
        }
        held
    }

    /// Writes every held envelope into the queue tables of `txn` and forgets it.
    pub(super) fn write_into(&self, txn: &WriteTransaction) -> Result<(), redb::Error> {
        let held = std::mem::take(&mut *self.records());
        if held.is_empty() {
            return Ok(());
        }
        let mut ids = txn.open_table(QUEUE_IDS)?;
        let mut queue = txn.open_table(QUEUE)?;
        let mut expiry = txn.open_table(EXPIRY)?;
        for (user, records) in &held {
            let user = user.as_str();
            for (id, pending) in records {
                let id = id.as_str();
                // An id past its dedupe window but still queued is replaced, not doubled.
                if let Some(old) = ids.insert((user, id), (pending.lane, pending.seq))? {
                    remove_record(&mut queue, &mut expiry, user, id, old.value())?;
                }
                let record = Record {
                    expires_at_ms: pending.expires_at_ms,
                    message_id: id,
                    json: &pending.json,
                };
                queue.insert(
                    (user, pending.lane, pending.seq),
                    record.encode().as_slice(),
                )?;
                expiry.insert((pending.expires_at_ms, user, id), ())?;
            }
        }
        Ok(())
    }
}

impl CommitHook for PendingQueue {
    fn before_commit(&self, txn: &WriteTransaction) -> Result<(), redb::Error> {
        self.write_into(txn)
    }

    fn rolled_back(&self) {
        self.records().clear();
    }
}
