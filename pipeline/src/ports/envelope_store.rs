//! The envelope store: one queue per recipient, the source of truth for "nothing accepted is lost".

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::StoreError;
use crate::message_id::MessageId;
use crate::urn::UserUrn;

/// An envelope waiting in its recipient's queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedEnvelope {
    /// Dedupe key and ack handle.
    pub message_id: MessageId,
    /// Whose queue holds it.
    pub recipient: UserUrn,
    /// Express lane: served before normal envelopes.
    pub express: bool,
    /// The canonical envelope JSON.
    pub json: Arc<str>,
}

/// Whether an enqueue stored a new envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// Stored: deliver it.
    Stored,
    /// Its id was seen before within the dedupe window: nothing changed.
    Duplicate,
}

/// Resolves once staged envelopes would survive a crash, or with why they never will.
pub type Durability = futures_util::future::BoxFuture<'static, Result<(), StoreError>>;

/// The answer of [`EnvelopeStore::enqueue_staged`].
pub struct StagedEnqueue {
    /// One outcome per envelope, final: the store's reads already see the stored ones.
    pub outcomes: Vec<EnqueueOutcome>,
    /// When the stored envelopes are durable.
    pub durable: Durability,
}

impl StagedEnqueue {
    /// Outcomes of envelopes that are durable already.
    pub fn durable_now(outcomes: Vec<EnqueueOutcome>) -> Self {
        Self {
            outcomes,
            durable: Box::pin(std::future::ready(Ok(()))),
        }
    }
}

/// Where a backlog page ends, to read the next one. Opaque; only the issuing store reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BacklogCursor(pub String);

/// One page of a recipient's backlog, in delivery order.
#[derive(Clone, Debug, Default)]
pub struct BacklogPage {
    /// Express lane first, then oldest first.
    pub envelopes: Vec<QueuedEnvelope>,
    /// Cursor of the next page; `None` when this page reached the end.
    pub next: Option<BacklogCursor>,
}

/// Per-recipient queues with dedupe, lanes, retention and delete-on-ack.
///
/// Guarantees every implementation keeps (checked by `testkit::envelope_store_suite`):
/// an envelope stays readable until acked or until its retention ends; enqueue of a known id
/// within the dedupe window is a no-op; the backlog is express lane first, insertion order
/// within a lane; ack deletes exactly the named envelopes of that recipient.
#[async_trait]
pub trait EnvelopeStore: Send + Sync + 'static {
    /// Adds `envelope` to its recipient's queue unless its id is already known (one atomic step).
    async fn enqueue(&self, envelope: &QueuedEnvelope) -> Result<EnqueueOutcome, StoreError>;

    /// Enqueues `envelopes` in order, as [`EnvelopeStore::enqueue`] would one by one (a repeated
    /// id within the batch is a duplicate), in one write where the backend allows.
    ///
    /// On an error, any prefix may have been stored; the caller retries the whole batch and
    /// the dedupe window makes the retry idempotent.
    async fn enqueue_many(
        &self,
        envelopes: &[QueuedEnvelope],
    ) -> Result<Vec<EnqueueOutcome>, StoreError> {
        let mut outcomes = Vec::with_capacity(envelopes.len());
        for envelope in envelopes {
            outcomes.push(self.enqueue(envelope).await?);
        }
        Ok(outcomes)
    }

    /// Like [`EnvelopeStore::enqueue_many`], but may answer before the envelopes are
    /// durable: the caller may deliver them at once and must keep what it needs to redo the
    /// enqueue (the unacked bus message) until `durable` resolves. Default: `enqueue_many`,
    /// durable on return.
    async fn enqueue_staged(
        &self,
        envelopes: &[QueuedEnvelope],
    ) -> Result<StagedEnqueue, StoreError> {
        Ok(StagedEnqueue::durable_now(
            self.enqueue_many(envelopes).await?,
        ))
    }

    /// Reads up to `limit` envelopes of `user`'s queue after `after` (from the start when `None`).
    async fn backlog(
        &self,
        user: &UserUrn,
        after: Option<&BacklogCursor>,
        limit: usize,
    ) -> Result<BacklogPage, StoreError>;

    /// Deletes the named envelopes from `user`'s queue; returns how many were there.
    async fn ack(&self, user: &UserUrn, ids: &[MessageId]) -> Result<usize, StoreError>;

    /// Whether `user`'s queue still holds `id` (not acked, not expired).
    async fn contains(&self, user: &UserUrn, id: &MessageId) -> Result<bool, StoreError>;

    /// How many envelopes wait in `user`'s queue.
    async fn depth(&self, user: &UserUrn) -> Result<u64, StoreError>;

    /// When the oldest envelope still in `user`'s queue was enqueued (ms since the epoch).
    async fn oldest_enqueued_ms(&self, user: &UserUrn) -> Result<Option<u64>, StoreError>;

    /// Deletes envelopes past their retention and dedupe entries past their window.
    async fn purge_expired(&self) -> Result<u64, StoreError>;

    /// Whether the store is reachable (for `/readyz`).
    async fn check(&self) -> Result<(), StoreError>;
}

/// How long a store keeps envelopes and remembers their ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// An unacked envelope is deleted after this long (`RETENTION`, default 30 days).
    pub envelopes: std::time::Duration,
    /// A `messageId` is remembered for dedupe this long after its enqueue (`DEDUPE_WINDOW`).
    pub dedupe: std::time::Duration,
}
