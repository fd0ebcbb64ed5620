//! Enqueued envelopes held out of the queue tables until the open transaction commits.
//!
//! Most envelopes reach an online recipient and are acked within the commit interval; an ack
//! that finds its envelope here removes it, and the queue tables never see either write. Only
//! what is still unacked when the transaction commits is written, right before the commit,
//! with the last sequence number given out (so a restart goes on after it).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{EXPIRY, META, QUEUE, QUEUE_IDS, Record, SEQ_KEY, remove_record};
use crate::embedded::database::TxnSlot;
use foldhash::{HashMap, HashMapExt};
use pipeline::{MessageId, UserUrn};

/// One envelope waiting for the commit: where it goes in its recipient's queue.
struct PendingRecord {
    lane: u8,
    seq: u64,
    expires_at_ms: u64,
    json: Arc<str>,
}

/// Held envelopes by recipient and id.
type Held = HashMap<UserUrn, HashMap<MessageId, PendingRecord>>;

/// What the queue holds for the next commit.
struct State {
    held: Held,
    /// The last sequence number given out.
    seq: u64,
}

/// The envelopes enqueued since the last commit, by recipient and id, and the queue's
/// sequence numbers. Enqueues and acks touch it on their callers' tasks; the database's
/// writer thread empties it into each commit.
pub(super) struct PendingQueue(Mutex<State>);

impl PendingQueue {
    /// An empty queue whose next envelope gets the sequence number after `last_seq`.
    pub(super) fn new(last_seq: u64) -> Self {
        Self(Mutex::new(State {
            held: Held::new(),
            seq: last_seq,
        }))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds `user`'s envelope `id` in `lane` under the next sequence number; an earlier one
    /// with the same id is replaced, not doubled.
    pub(super) fn hold(
        &self,
        user: &UserUrn,
        id: &MessageId,
        lane: u8,
        expires_at_ms: u64,
        json: &Arc<str>,
    ) {
        let mut state = self.state();
        state.seq += 1;
        let seq = state.seq;
        state.held.entry(user.clone()).or_default().insert(
            id.clone(),
            PendingRecord {
                lane,
                seq,
                expires_at_ms,
                json: json.clone(),
            },
        );
    }

    /// Drops `user`'s envelopes `ids` that are held: how many were, and the ids that were not.
    pub(super) fn take_each<'a>(
        &self,
        user: &UserUrn,
        ids: &'a [MessageId],
    ) -> (usize, Vec<&'a MessageId>) {
        let records = &mut self.state().held;
        let Some(queue) = records.get_mut(user) else {
            return (0, ids.iter().collect());
        };
        let mut taken = 0;
        let mut rest = Vec::new();
        for id in ids {
            if queue.remove(id).is_some() {
                taken += 1;
            } else {
                rest.push(id);
            }
        }
        if queue.is_empty() {
            records.remove(user);
        }
        (taken, rest)
    }

    /// Drops every held envelope: the commit meant to write them was rolled back.
    pub(super) fn clear(&self) {
        self.state().held.clear();
    }

    /// Takes every held envelope out, with the last sequence number given out, for a commit
    /// to write.
    pub(super) fn cut(&self) -> HeldCut {
        let mut state = self.state();
        HeldCut {
            held: std::mem::take(&mut state.held),
            seq: state.seq,
        }
    }
}

/// Envelopes taken out of a [`PendingQueue`] for one commit, and the last sequence number
/// given out when they were.
pub(super) struct HeldCut {
    held: Held,
    seq: u64,
}

impl HeldCut {
    /// Whether the cut holds no envelope.
    pub(super) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Writes the envelopes into the queue tables of `slot`'s transaction (beginning it only
    /// if there are any), with the last sequence number.
    pub(super) fn write_into(self, slot: &mut TxnSlot<'_>) -> Result<(), redb::Error> {
        let Self { held, seq } = self;
        if held.is_empty() {
            return Ok(());
        }
        let txn = slot.begin()?;
        txn.open_table(META)?.insert(SEQ_KEY, seq)?;
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
