//! The embedded on-disk database: one redb file in `DATA_DIR`, written by one thread with group
//! commit, read from the blocking pool.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadTransaction, ReadableDatabase, WriteTransaction};
use tokio::sync::{mpsc, oneshot};
use tracing::error;

use crate::error::AdapterError;

/// Most write operations folded into one transaction (one fsync).
const MAX_BATCH: usize = 512;

/// Write operations waiting for the writer thread; callers wait when it is full.
const WRITE_QUEUE: usize = 4096;

/// Reports a batch's commit result to one operation's caller.
type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;

/// One queued write: applies itself to the batch's transaction, then waits for the commit.
type WriteOp = Box<dyn FnOnce(&WriteTransaction) -> (bool, Completion) + Send>;

/// A write and whether it must be on disk when its caller hears back.
struct WriteJob {
    durable: bool,
    op: WriteOp,
}

/// A cloneable handle on the embedded database.
///
/// Writes are durable when they return: they are applied by a single writer thread that commits
/// every queued write in one transaction (group commit), so concurrent callers share one fsync.
/// Lazy writes (acks) skip the fsync when their batch holds no durable write.
#[derive(Clone)]
pub struct EmbeddedDb {
    db: Arc<Database>,
    writer: mpsc::Sender<WriteJob>,
}

impl EmbeddedDb {
    /// Opens (or creates) the database at `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<Self, AdapterError> {
        let fail = |cause: String| AdapterError::OpenDatabase {
            path: path.display().to_string(),
            cause,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        }
        let db = Arc::new(Database::create(path).map_err(|e| fail(e.to_string()))?);
        let (writer, jobs) = mpsc::channel(WRITE_QUEUE);
        let for_thread = db.clone();
        std::thread::Builder::new()
            .name("embedded-db-writer".into())
            .spawn(move || write_loop(&for_thread, jobs))
            .map_err(|e| fail(e.to_string()))?;
        Ok(Self { db, writer })
    }

    /// Runs `op` in a write transaction and returns its result once the transaction is durable.
    ///
    /// If any operation of a batch fails, the whole batch is rolled back and every caller of the
    /// batch gets an error (they retry; nothing half-written stays).
    pub async fn write<T, F>(&self, op: F) -> Result<T, AdapterError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, redb::Error> + Send + 'static,
    {
        self.submit(true, op).await
    }

    /// Like [`EmbeddedDb::write`], but may return before the write reaches the disk: a crash can
    /// lose it. For writes whose loss only causes a redelivery (acks, purges), which saves an
    /// fsync when a batch holds nothing else.
    pub async fn write_lazy<T, F>(&self, op: F) -> Result<T, AdapterError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, redb::Error> + Send + 'static,
    {
        self.submit(false, op).await
    }

    async fn submit<T, F>(&self, durable: bool, op: F) -> Result<T, AdapterError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, redb::Error> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T, AdapterError>>();
        let op: WriteOp = Box::new(move |txn| match op(txn) {
            Ok(value) => (
                true,
                Box::new(move |committed| {
                    let _ = tx.send(committed.map(|()| value).map_err(AdapterError::Database));
                }),
            ),
            Err(err) => {
                let cause = err.to_string();
                (
                    false,
                    Box::new(move |_| {
                        let _ = tx.send(Err(AdapterError::Database(cause)));
                    }),
                )
            }
        });
        self.writer
            .send(WriteJob { durable, op })
            .await
            .map_err(|_| AdapterError::Database("writer thread stopped".into()))?;
        rx.await
            .map_err(|_| AdapterError::Database("writer thread stopped".into()))?
    }

    /// Makes every lazy write so far durable (one durable commit persists the non-durable ones
    /// before it). Called on graceful shutdown.
    pub async fn flush(&self) -> Result<(), AdapterError> {
        self.write(|_| Ok(())).await
    }

    /// Runs `op` in a read transaction on the blocking pool.
    pub async fn read<T, F>(&self, op: F) -> Result<T, AdapterError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T, redb::Error> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(redb::Error::from)?;
            op(&txn)
        })
        .await
        .map_err(|e| AdapterError::Database(e.to_string()))?
        .map_err(|e| AdapterError::Database(e.to_string()))
    }
}

/// Group commit's intake: waits for one job, then takes every job already queued behind it,
/// up to `max`; `None` once every sender is gone. Blocking: for writer threads only.
pub(crate) fn next_batch<T>(queue: &mut mpsc::Receiver<T>, max: usize) -> Option<Vec<T>> {
    let first = queue.blocking_recv()?;
    let mut batch = vec![first];
    while batch.len() < max {
        match queue.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// The writer thread: takes every queued job, applies them in one transaction, commits once.
fn write_loop(db: &Database, mut jobs: mpsc::Receiver<WriteJob>) {
    while let Some(batch) = next_batch(&mut jobs, MAX_BATCH) {
        let durable = batch.iter().any(|job| job.durable);
        let mut txn = match db.begin_write() {
            Ok(txn) => txn,
            Err(err) => {
                error!(cause = %err, "embedded database cannot begin a write");
                // Jobs dropped unrun: their callers see "writer thread stopped"-like errors.
                continue;
            }
        };
        if !durable && let Err(err) = txn.set_durability(redb::Durability::None) {
            error!(cause = %err, "cannot relax durability; committing durably");
        }
        let started = std::time::Instant::now();
        let batch_len = batch.len();
        let mut all_ok = true;
        let mut completions = Vec::with_capacity(batch.len());
        for job in batch {
            let (ok, completion) = (job.op)(&txn);
            all_ok &= ok;
            completions.push(completion);
        }
        let result = if all_ok {
            txn.commit().map_err(|e| e.to_string())
        } else {
            let _ = txn.abort();
            Err("batch rolled back after a failed write".into())
        };
        if let Err(cause) = &result {
            error!(%cause, "embedded database write failed");
        }
        let kind = if durable { "durable" } else { "lazy" };
        metrics::histogram!("envelope_router_embedded_commit_seconds", "kind" => kind)
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("envelope_router_embedded_commit_writes", "kind" => kind)
            .record(batch_len as f64);
        for completion in completions {
            completion(result.clone());
        }
    }
}
