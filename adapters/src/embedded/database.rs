//! The embedded on-disk database: one redb file in `DATA_DIR`, written by one thread with group
//! commit, read from the blocking pool.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redb::{
    AccessGuard, Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};
use tokio::sync::{mpsc, oneshot};
use tracing::error;

use crate::embedded::linger::{LINGER, Look, linger};
use crate::error::AdapterError;

/// Most write operations the writer takes from its queue at once.
const MAX_BATCH: usize = 512;

/// Most deferred writes one open transaction holds before it commits regardless of its age.
const MAX_OPEN_WRITES: usize = 4096;

/// Write operations waiting for the writer thread; callers wait when it is full.
const WRITE_QUEUE: usize = 4096;

/// How long deferred writes may wait in the open transaction when `open` is given none.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_millis(20);

/// Reports a commit's (or an apply's) result to one operation's caller.
type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;

/// One queued write: applies itself to the open transaction and says whether it succeeded.
type WriteOp = Box<dyn FnOnce(&mut TxnSlot<'_>) -> (bool, Completion) + Send>;

/// The writer's open write transaction, begun when a write first needs a table: writes that
/// touch none (an enqueue that only holds its envelope, an ack of a held one) leave nothing to
/// commit in the database file.
pub struct TxnSlot<'a> {
    db: &'a Database,
    txn: &'a mut Option<WriteTransaction>,
}

impl TxnSlot<'_> {
    /// The open transaction, begun now if none is.
    pub fn begin(&mut self) -> Result<&WriteTransaction, redb::Error> {
        let txn = match self.txn.take() {
            Some(txn) => txn,
            None => self.db.begin_write()?,
        };
        Ok(self.txn.insert(txn))
    }
}

/// When a write's caller hears back, and what its commit must be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// After a durable commit, which happens at the end of the write's batch.
    Durable,
    /// Right after the write is applied; its commit may come up to the commit interval later
    /// and need not be durable.
    Lazy,
    /// Right after the write is applied, with a signal for when a durable commit holds it;
    /// that commit may come up to the commit interval later.
    Staged,
    /// After a commit (durable when staged writes are open), at the end of the batch: makes
    /// every write applied so far visible to readers.
    Sync,
}

/// A write with its mode, and the durability signal of a staged write.
struct WriteJob {
    mode: Mode,
    op: WriteOp,
    durable: Option<oneshot::Sender<Result<(), String>>>,
}

/// Work a user of the database keeps outside the open transaction until it commits: writes
/// that are often undone before the commit (an enqueue acked within the commit interval)
/// never touch the tables, and state kept in files of its own is synced with each commit.
pub trait CommitHook: Send + Sync {
    /// Writes what is held into the transaction (beginning it if needed); runs on the writer
    /// thread right before each commit. Answers whether what it cut must be made durable by
    /// this commit (the commit then is, whatever its writes asked). An error rolls the
    /// transaction back.
    fn before_commit(&self, _txn: &mut TxnSlot<'_>) -> Result<bool, redb::Error> {
        Ok(false)
    }

    /// Whether the hook holds work that returned to its callers but is not committed yet:
    /// a read then commits first, so it sees that work.
    fn holds_uncommitted(&self) -> bool {
        false
    }

    /// Makes what the hook keeps outside the database durable; runs on the writer thread
    /// after the database commit and before anyone waiting on it hears. An error fails the
    /// commit for its waiters (staged writes are redone by their callers).
    fn after_commit(&self) -> Result<(), String> {
        Ok(())
    }

    /// Drops what is held: the open transaction was rolled back, so it is lost with it.
    fn rolled_back(&self);
}

/// The hooks every commit runs, shared by the handles and the writer thread.
type Hooks = Arc<Mutex<Vec<Arc<dyn CommitHook>>>>;

/// Resolves once a staged write is on disk, or with the reason it never will be.
pub struct DurableSignal(oneshot::Receiver<Result<(), String>>);

/// What tells a [`DurableSignal`] its write's fate.
pub(crate) type DurableSender = oneshot::Sender<Result<(), String>>;

impl DurableSignal {
    /// A signal and the sender that resolves it.
    pub(crate) fn channel() -> (DurableSender, Self) {
        let (sender, receiver) = oneshot::channel();
        (sender, Self(receiver))
    }

    /// Waits until the staged write is durable.
    pub async fn wait(self) -> Result<(), AdapterError> {
        self.0
            .await
            .map_err(|_| AdapterError::Database("writer thread stopped".into()))?
            .map_err(AdapterError::Database)
    }
}

/// A cloneable handle on the embedded database.
///
/// One writer thread applies every write to an open transaction. Durable writes return after
/// the commit at the end of their batch (group commit: concurrent callers share one fsync).
/// Lazy and staged writes return as soon as they are applied, and the transaction holding them
/// commits within the commit interval, so many batches share one commit; a staged write's
/// caller learns separately when it is durable. Reads see every write that returned before
/// them: when applied writes wait uncommitted, a read first has them committed. Commit hooks
/// write what their owners held back right before each commit.
#[derive(Clone)]
pub struct EmbeddedDb {
    db: Arc<Database>,
    /// The folder holding the database file, where its users keep files of their own.
    dir: PathBuf,
    writer: mpsc::Sender<WriteJob>,
    /// Set while the open transaction holds applied writes that readers cannot see yet.
    uncommitted: Arc<AtomicBool>,
    hooks: Hooks,
}

impl EmbeddedDb {
    /// Opens (or creates) the database at `path` and starts its writer thread, which commits
    /// deferred writes at most `commit_interval` after the first of them.
    pub fn open(path: &Path, commit_interval: Duration) -> Result<Self, AdapterError> {
        let fail = |cause: String| AdapterError::OpenDatabase {
            path: path.display().to_string(),
            cause,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        }
        let db = Arc::new(Database::create(path).map_err(|e| fail(e.to_string()))?);
        let (writer, jobs) = mpsc::channel(WRITE_QUEUE);
        let uncommitted = Arc::new(AtomicBool::new(false));
        let hooks = Hooks::default();
        let clock = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let writer_state = Writer {
            db: db.clone(),
            uncommitted: uncommitted.clone(),
            hooks: hooks.clone(),
            commit_interval,
            open: None,
        };
        std::thread::Builder::new()
            .name("embedded-db-writer".into())
            .spawn(move || writer_state.run(&clock, jobs))
            .map_err(|e| fail(e.to_string()))?;
        Ok(Self {
            db,
            dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            writer,
            uncommitted,
            hooks,
        })
    }

    /// The folder holding the database file (`DATA_DIR`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Has every later commit run `hook` first (and every roll-back tell it).
    pub fn add_commit_hook(&self, hook: Arc<dyn CommitHook>) {
        self.hooks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(hook);
    }

    /// Runs `op` in a write transaction and returns its result once the transaction is durable.
    ///
    /// If an operation fails, the open transaction is rolled back and every caller still
    /// waiting on it gets an error (they retry; nothing half-written stays).
    pub async fn write<T, F>(&self, op: F) -> Result<T, AdapterError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, redb::Error> + Send + 'static,
    {
        self.submit(Mode::Durable, move |slot| op(slot.begin()?), None)
            .await
    }

    /// Like [`EmbeddedDb::write`], for an operation that begins the transaction only if it
    /// needs a table (the commit still runs the hooks and syncs what they keep).
    pub async fn write_in<T, F>(&self, op: F) -> Result<T, AdapterError>
    where
        T: Send + 'static,
        F: FnOnce(&mut TxnSlot<'_>) -> Result<T, redb::Error> + Send + 'static,
    {
        self.submit(Mode::Durable, op, None).await
    }

    /// Like [`EmbeddedDb::write`], but returns once applied: a crash, or a later write's
    /// failure, can lose it. For writes whose loss only causes a redelivery (acks, purges).
    pub async fn write_lazy<T, F>(&self, op: F) -> Result<T, AdapterError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, redb::Error> + Send + 'static,
    {
        self.write_lazy_in(move |slot| op(slot.begin()?)).await
    }

    /// Like [`EmbeddedDb::write_lazy`], for an operation that begins the transaction only if
    /// it needs a table.
    pub async fn write_lazy_in<T, F>(&self, op: F) -> Result<T, AdapterError>
    where
        T: Send + 'static,
        F: FnOnce(&mut TxnSlot<'_>) -> Result<T, redb::Error> + Send + 'static,
    {
        self.submit(Mode::Lazy, op, None).await
    }

    /// Applies `op` and returns its result at once, with the signal of its durable commit.
    /// Until the signal says so, a crash can lose the write: the caller keeps what it needs
    /// to redo it (for the envelope store: the unacked bus message).
    pub async fn write_staged<T, F>(&self, op: F) -> Result<(T, DurableSignal), AdapterError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, redb::Error> + Send + 'static,
    {
        let (durable, signal) = DurableSignal::channel();
        let value = self
            .submit(Mode::Staged, move |slot| op(slot.begin()?), Some(durable))
            .await?;
        Ok((value, signal))
    }

    async fn submit<T, F>(
        &self,
        mode: Mode,
        op: F,
        durable: Option<oneshot::Sender<Result<(), String>>>,
    ) -> Result<T, AdapterError>
    where
        T: Send + 'static,
        F: FnOnce(&mut TxnSlot<'_>) -> Result<T, redb::Error> + Send + 'static,
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
            .send(WriteJob { mode, op, durable })
            .await
            .map_err(|_| AdapterError::Database("writer thread stopped".into()))?;
        rx.await
            .map_err(|_| AdapterError::Database("writer thread stopped".into()))?
    }

    /// Has the writer commit within the commit interval, durably, without a write of its own:
    /// for work a commit hook holds outside the writer (see [`CommitHook::before_commit`]).
    /// Returns once the request is queued, not once it is committed.
    pub async fn request_commit(&self) -> Result<(), AdapterError> {
        let op: WriteOp = Box::new(|_| (true, Box::new(|_| {})));
        self.writer
            .send(WriteJob {
                mode: Mode::Staged,
                op,
                durable: None,
            })
            .await
            .map_err(|_| AdapterError::Database("writer thread stopped".into()))
    }

    /// Whether a commit hook holds work its callers saw returned but no commit holds yet.
    fn hooks_hold_uncommitted(&self) -> bool {
        self.hooks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|hook| hook.holds_uncommitted())
    }

    /// Makes every write so far durable (one durable commit persists the earlier ones).
    /// Called on graceful shutdown.
    pub async fn flush(&self) -> Result<(), AdapterError> {
        self.write(|_| Ok(())).await
    }

    /// Runs `op` in a read transaction on the blocking pool; it sees every write that returned
    /// before this call.
    pub async fn read<T, F>(&self, op: F) -> Result<T, AdapterError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T, redb::Error> + Send + 'static,
    {
        if self.uncommitted.load(Ordering::SeqCst) || self.hooks_hold_uncommitted() {
            self.submit(Mode::Sync, |_| Ok(()), None).await?;
        }
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

/// Every row of `table` in key order, mapped by `row`; `None` if the table does not exist.
/// For adopting what an older version left in a table of its own.
pub fn read_rows<K, V, T>(
    txn: &ReadTransaction,
    table: TableDefinition<K, V>,
    mut row: impl FnMut(&AccessGuard<'_, K>, &AccessGuard<'_, V>) -> T,
) -> Result<Option<Vec<T>>, redb::Error>
where
    K: redb::Key + 'static,
    V: redb::Value + 'static,
{
    let table = match txn.open_table(table) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(err) => return Err(err.into()),
    };
    let mut rows = Vec::new();
    for entry in table.iter()? {
        let (key, value) = entry?;
        rows.push(row(&key, &value));
    }
    Ok(Some(rows))
}

/// Group commit's intake: waits for one job (lingering before it sleeps, see [`linger`]),
/// then takes every job already queued behind it, up to `max`; `None` once every sender is
/// gone. Blocking: for writer threads only.
pub(crate) fn next_batch<T>(queue: &mut mpsc::Receiver<T>, max: usize) -> Option<Vec<T>> {
    let first = match linger(LINGER, || queue.try_recv().into()) {
        Look::Found(job) => job,
        Look::Closed => return None,
        Look::Empty => queue.blocking_recv()?,
    };
    Some(drain_behind(queue, first, max))
}

/// `first` and every job already queued behind it, up to `max`.
fn drain_behind<T>(queue: &mut mpsc::Receiver<T>, first: T, max: usize) -> Vec<T> {
    let mut batch = vec![first];
    while batch.len() < max {
        match queue.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    batch
}

/// The transaction the writer keeps open across batches, and who waits on its commit.
struct OpenTxn {
    /// The database's transaction, once a write or hook needed a table.
    txn: Option<WriteTransaction>,
    /// When its first write was applied: it commits by then plus the commit interval.
    since: Instant,
    /// Writes applied to it.
    writes: usize,
    /// Whether its commit must be durable (it holds durable or staged writes).
    durable: bool,
    /// Callers to answer with the commit's result.
    waiting: Vec<Completion>,
    /// Staged writes' durability signals.
    signals: Vec<oneshot::Sender<Result<(), String>>>,
}

/// The writer thread's state.
struct Writer {
    db: Arc<Database>,
    uncommitted: Arc<AtomicBool>,
    hooks: Hooks,
    commit_interval: Duration,
    open: Option<OpenTxn>,
}

impl Writer {
    /// Applies jobs as they come and commits when a batch asks for it, when the open
    /// transaction reaches its deadline or size, and when every sender is gone. Between
    /// batches it lingers (see [`linger`]), never past the open transaction's deadline.
    fn run(mut self, clock: &tokio::runtime::Runtime, mut jobs: mpsc::Receiver<WriteJob>) {
        loop {
            let batch = match self
                .open
                .as_ref()
                .map(|open| open.since + self.commit_interval)
            {
                None => next_batch(&mut jobs, MAX_BATCH),
                Some(deadline) => {
                    let lingered = linger(
                        LINGER.min(deadline.saturating_duration_since(Instant::now())),
                        || jobs.try_recv().into(),
                    );
                    let first = match lingered {
                        Look::Found(first) => Ok(Some(first)),
                        Look::Closed => Ok(None),
                        Look::Empty => {
                            let deadline = tokio::time::Instant::from_std(deadline);
                            clock.block_on(async {
                                tokio::time::timeout_at(deadline, jobs.recv()).await
                            })
                        }
                    };
                    match first {
                        Err(_elapsed) => {
                            self.commit();
                            continue;
                        }
                        Ok(first) => first.map(|first| drain_behind(&mut jobs, first, MAX_BATCH)),
                    }
                }
            };
            let Some(batch) = batch else {
                self.commit();
                return;
            };
            let mut commit_now = false;
            for job in batch {
                commit_now |= matches!(job.mode, Mode::Durable | Mode::Sync);
                self.apply(job);
            }
            let due = self.open.as_ref().is_some_and(|open| {
                open.writes >= MAX_OPEN_WRITES || open.since.elapsed() >= self.commit_interval
            });
            if commit_now || due {
                self.commit();
            }
        }
    }

    /// Applies `job` to the open transaction (which begins the database's transaction if it
    /// needs a table) and answers it now or queues it for the commit, by its mode. A failed
    /// write rolls the transaction back.
    fn apply(&mut self, job: WriteJob) {
        let open = self.open.get_or_insert_with(|| OpenTxn {
            txn: None,
            since: Instant::now(),
            writes: 0,
            durable: false,
            waiting: Vec::new(),
            signals: Vec::new(),
        });
        let mut slot = TxnSlot {
            db: &self.db,
            txn: &mut open.txn,
        };
        let (ok, completion) = (job.op)(&mut slot);
        if !ok {
            completion(Err("write failed".into()));
            self.roll_back("a write in the open transaction failed");
            return;
        }
        open.writes += 1;
        match job.mode {
            Mode::Durable | Mode::Sync => {
                open.durable |= job.mode == Mode::Durable;
                open.waiting.push(completion);
            }
            Mode::Lazy | Mode::Staged => {
                open.durable |= job.mode == Mode::Staged;
                open.signals.extend(job.durable);
                self.uncommitted.store(true, Ordering::SeqCst);
                completion(Ok(()));
            }
        }
    }

    /// The hooks registered so far.
    fn hooks(&self) -> Vec<Arc<dyn CommitHook>> {
        self.hooks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Runs the hooks, commits the open transaction, if any (the database's own only if a
    /// write or hook began it), lets the hooks sync what they keep outside, and answers
    /// everyone waiting on it. A failing hook rolls the transaction back instead.
    fn commit(&mut self) {
        let hooks = self.hooks();
        let Some(open) = &mut self.open else {
            return;
        };
        let mut slot = TxnSlot {
            db: &self.db,
            txn: &mut open.txn,
        };
        let mut hooks_durable = false;
        if let Err(err) = hooks.iter().try_for_each(|hook| {
            hooks_durable |= hook.before_commit(&mut slot)?;
            Ok::<(), redb::Error>(())
        }) {
            self.roll_back(&format!("a commit hook failed: {err}"));
            return;
        }
        let Some(open) = self.open.take() else {
            return;
        };
        let OpenTxn {
            txn,
            writes,
            durable,
            waiting,
            signals,
            ..
        } = open;
        let mut result = match txn {
            Some(txn) => commit_database(txn, writes, durable || hooks_durable),
            None => Ok(()),
        };
        self.uncommitted.store(false, Ordering::SeqCst);
        if let Err(cause) = &result {
            error!(%cause, "embedded database commit failed");
            for hook in &hooks {
                hook.rolled_back();
            }
        } else if let Err(cause) = hooks.iter().try_for_each(|hook| hook.after_commit()) {
            error!(%cause, "a commit hook could not sync");
            result = Err(cause);
        }
        answer(waiting, signals, &result);
    }

    /// Aborts the open transaction: everyone waiting on it hears `cause`, and the writes
    /// already answered are lost (staged writes' signals say so).
    fn roll_back(&mut self, cause: &str) {
        let Some(open) = self.open.take() else {
            return;
        };
        error!(%cause, "embedded database rolls back its open transaction");
        let OpenTxn {
            txn,
            waiting,
            signals,
            ..
        } = open;
        if let Some(txn) = txn {
            let _ = txn.abort();
        }
        for hook in self.hooks() {
            hook.rolled_back();
        }
        self.uncommitted.store(false, Ordering::SeqCst);
        answer(waiting, signals, &Err(cause.to_owned()));
    }
}

/// Commits `txn` (holding `writes` writes), durably if `durable`, and records how long it took.
fn commit_database(mut txn: WriteTransaction, writes: usize, durable: bool) -> Result<(), String> {
    if !durable && let Err(err) = txn.set_durability(redb::Durability::None) {
        error!(cause = %err, "cannot relax durability; committing durably");
    }
    let started = Instant::now();
    let result = txn.commit().map_err(|e| e.to_string());
    let kind = if durable { "durable" } else { "lazy" };
    metrics::histogram!("envelope_router_embedded_commit_seconds", "kind" => kind)
        .record(started.elapsed().as_secs_f64());
    metrics::histogram!("envelope_router_embedded_commit_writes", "kind" => kind)
        .record(writes as f64);
    result
}

/// Tells every caller waiting on a transaction, and every staged write's signal, `result`.
fn answer(
    waiting: Vec<Completion>,
    signals: Vec<oneshot::Sender<Result<(), String>>>,
    result: &Result<(), String>,
) {
    for completion in waiting {
        completion(result.clone());
    }
    for signal in signals {
        let _ = signal.send(result.clone());
    }
}
