//! Enqueues staged on their callers' tasks, committed in generations.
//!
//! An enqueue adds its dedupe entries and holds its envelopes in memory on the caller's own
//! task, with no round trip to the database's writer thread; the first enqueue of a
//! generation asks the writer for a commit within the commit interval. Right before that
//! commit, the generation's held envelopes, dedupe entries and waiting callers are cut
//! together under one lock, so a dedupe entry is never synced without its envelope: the
//! envelopes go into the transaction, the commit is made durable, the entries are synced, and
//! only then do the callers hear that their envelopes are durable. What is enqueued after the
//! cut waits for the next commit. A roll-back drops every generation not yet durable and
//! tells its callers, who enqueue again (their bus messages are still unacked).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use pipeline::ports::envelope_store::{EnqueueOutcome, QueuedEnvelope};

use super::dedupe::DedupeLog;
use super::pending::PendingQueue;
use super::{EnqueueTimes, enqueue_all};
use crate::embedded::database::{CommitHook, DurableSender, DurableSignal, TxnSlot};

/// The open generation and the one cut for the commit in progress.
struct Generations {
    /// The open generation's number (the first is 1).
    number: u64,
    /// Whether the writer was asked for a commit since the last cut.
    requested: bool,
    /// The open generation's callers.
    waiting: Vec<DurableSender>,
    /// The callers of the generation cut for the commit in progress, with its number.
    cut: Option<(u64, Vec<DurableSender>)>,
}

/// What an enqueue staged: its outcomes, its signal, and whether the caller must ask the
/// writer for a commit.
pub(super) struct Staged {
    /// One outcome per envelope, in order.
    pub(super) outcomes: Vec<EnqueueOutcome>,
    /// Resolves once the generation holding the enqueue is durable.
    pub(super) durable: DurableSignal,
    /// Whether this was the generation's first enqueue: the caller asks for the commit.
    pub(super) request_commit: bool,
}

/// The embedded store's staged enqueues: the held envelopes, the dedupe log, and the callers
/// waiting for their commit, cut as one by each commit (a commit hook of the database).
pub(super) struct Staging {
    pending: Arc<PendingQueue>,
    dedupe: Arc<DedupeLog>,
    generations: Mutex<Generations>,
    /// The newest generation an enqueue went into.
    held: AtomicU64,
    /// The newest generation whose commit is over (or that was dropped).
    committed: AtomicU64,
}

impl Staging {
    /// Staging over the store's held envelopes and dedupe log.
    pub(super) fn new(pending: Arc<PendingQueue>, dedupe: Arc<DedupeLog>) -> Self {
        Self {
            pending,
            dedupe,
            generations: Mutex::new(Generations {
                number: 1,
                requested: false,
                waiting: Vec::new(),
                cut: None,
            }),
            held: AtomicU64::new(0),
            committed: AtomicU64::new(0),
        }
    }

    fn generations(&self) -> MutexGuard<'_, Generations> {
        self.generations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Enqueues `envelopes` into the open generation (see [`enqueue_all`]). Even an enqueue
    /// of duplicates waits for the generation: its first copy may be in it.
    pub(super) fn enqueue(&self, envelopes: &[QueuedEnvelope], times: EnqueueTimes) -> Staged {
        let mut generations = self.generations();
        let outcomes = enqueue_all(&self.dedupe, &self.pending, envelopes, times);
        let (signal, durable) = DurableSignal::channel();
        generations.waiting.push(signal);
        self.held.store(generations.number, Ordering::SeqCst);
        let request_commit = !std::mem::replace(&mut generations.requested, true);
        Staged {
            outcomes,
            durable,
            request_commit,
        }
    }

    /// Drops every generation not yet durable and tells its callers `cause`.
    fn drop_all(&self, cause: &str) {
        let mut generations = self.generations();
        self.pending.clear();
        self.dedupe.undo_unsynced();
        let mut signals = std::mem::take(&mut generations.waiting);
        if let Some((_, cut)) = generations.cut.take() {
            signals.extend(cut);
        }
        generations.number += 1;
        generations.requested = false;
        self.committed
            .store(self.held.load(Ordering::SeqCst), Ordering::SeqCst);
        drop(generations);
        for signal in signals {
            let _ = signal.send(Err(cause.to_owned()));
        }
    }
}

impl CommitHook for Staging {
    /// Cuts the open generation and writes its held envelopes into the transaction; the
    /// commit must be durable when the generation holds anything.
    fn before_commit(&self, txn: &mut TxnSlot<'_>) -> Result<bool, redb::Error> {
        let (held, entries_or_callers) = {
            let mut generations = self.generations();
            let held = self.pending.cut();
            let entries = self.dedupe.cut();
            let waiting = std::mem::take(&mut generations.waiting);
            let callers = !waiting.is_empty();
            let number = generations.number;
            match &mut generations.cut {
                // A cut whose commit never ended (cannot happen: every commit ends in
                // `after_commit` or `rolled_back`); its callers wait for this one instead.
                Some((cut, signals)) => {
                    *cut = number;
                    signals.extend(waiting);
                }
                None => generations.cut = Some((number, waiting)),
            }
            generations.number += 1;
            generations.requested = false;
            (held, entries || callers)
        };
        let durable = entries_or_callers || !held.is_empty();
        held.write_into(txn)?;
        Ok(durable)
    }

    /// Syncs the cut dedupe entries, then tells the cut generation's callers.
    fn after_commit(&self) -> Result<(), String> {
        let synced = self.dedupe.sync_cut();
        let cut = self.generations().cut.take();
        if let Some((number, signals)) = cut {
            self.committed.fetch_max(number, Ordering::SeqCst);
            for signal in signals {
                let _ = signal.send(synced.clone());
            }
        }
        synced
    }

    fn holds_uncommitted(&self) -> bool {
        self.held.load(Ordering::SeqCst) > self.committed.load(Ordering::SeqCst)
    }

    fn rolled_back(&self) {
        self.drop_all("the embedded database rolled back the commit of this enqueue");
    }
}
