//! The embedded envelope store holds an enqueue out of its queue tables until the next commit
//! cuts its generation: an ack before then, a reopen after it, a roll-back, a purge, a read
//! and an enqueue during a commit all find the queue they should. Its dedupe window lives in a log of its own beside the
//! database: it survives reopening, a torn record, and an older version's tables, and its
//! files go when their window ends.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use adapters::embedded::database::{CommitHook, TxnSlot};
use adapters::embedded::{EmbeddedDb, EmbeddedEnvelopeStore};
use pipeline::clock::SystemClock;
use pipeline::ports::envelope_store::{
    Durability, EnqueueOutcome, EnvelopeStore, QueuedEnvelope, Retention,
};
use pipeline::{MessageId, UserUrn};
use redb::TableDefinition;

/// Long enough that only the commits a test asks for happen.
const NO_TIMED_COMMITS: Duration = Duration::from_secs(3600);

const HOUR: Retention = Retention {
    envelopes: Duration::from_secs(3600),
    dedupe: Duration::from_secs(3600),
};

/// A normal-lane envelope `id` for `recipient`.
fn queued(recipient: &UserUrn, id: &str) -> QueuedEnvelope {
    pipeline::testkit::queued(recipient, id, false)
}

fn id(text: &str) -> MessageId {
    MessageId::parse(text).unwrap_or_else(|e| panic!("{e}"))
}

/// Opens the store in `dir`, waiting while an earlier handle's writer thread still holds
/// the file.
async fn open_store(dir: &Path, retention: Retention) -> (EmbeddedDb, EmbeddedEnvelopeStore) {
    let path = dir.join("router.redb");
    let mut db = EmbeddedDb::open(&path, NO_TIMED_COMMITS);
    for _ in 0..50 {
        if db.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        db = EmbeddedDb::open(&path, NO_TIMED_COMMITS);
    }
    let db = db.expect("open database");
    let store = EmbeddedEnvelopeStore::new(db.clone(), retention, Arc::new(SystemClock))
        .await
        .expect("open store");
    (db, store)
}

async fn backlog_ids(store: &EmbeddedEnvelopeStore, user: &UserUrn) -> Vec<String> {
    let page = store.backlog(user, None, 100).await.expect("backlog");
    page.envelopes
        .iter()
        .map(|e| e.message_id.to_string())
        .collect()
}

/// Stages `envelopes`, checks that each is new, and returns the signal of their commit.
async fn stage_new(store: &EmbeddedEnvelopeStore, envelopes: &[QueuedEnvelope]) -> Durability {
    let staged = store.enqueue_staged(envelopes).await.expect("enqueue");
    assert_eq!(
        staged.outcomes,
        vec![EnqueueOutcome::Stored; envelopes.len()]
    );
    staged.durable
}

/// Enqueues `envelopes` and commits them at once (no timed commits happen in these tests).
async fn enqueue_committed(
    db: &EmbeddedDb,
    store: &EmbeddedEnvelopeStore,
    envelopes: &[QueuedEnvelope],
) -> Vec<EnqueueOutcome> {
    let staged = store.enqueue_staged(envelopes).await.expect("enqueue");
    db.flush().await.expect("flush");
    staged.durable.await.expect("durable");
    staged.outcomes
}

/// A store in a fresh directory named after `name`, and a user of its own.
async fn fresh(
    name: &str,
    retention: Retention,
) -> (PathBuf, UserUrn, EmbeddedDb, EmbeddedEnvelopeStore) {
    let dir = common::temp_dir(name);
    let user = pipeline::testkit::user(name, "user");
    let (db, store) = open_store(&dir, retention).await;
    (dir, user, db, store)
}

/// Closes the store and removes its directory.
fn close(dir: PathBuf, db: EmbeddedDb, store: EmbeddedEnvelopeStore) {
    drop((store, db));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_envelope_acked_before_its_commit_is_gone_and_its_id_still_deduped_after_a_reopen() {
    let (dir, user, db, store) = fresh("held-ack", HOUR).await;
    let mut durable = stage_new(&store, &[queued(&user, "m-acked"), queued(&user, "m-kept")]).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut durable)
            .await
            .is_err(),
        "nothing is durable before a commit"
    );
    assert_eq!(store.ack(&user, &[id("m-acked")]).await.expect("ack"), 1);
    assert_eq!(store.ack(&user, &[id("m-acked")]).await.expect("ack"), 0);
    db.flush().await.expect("flush");
    durable.await.expect("durable after the commit");
    assert_eq!(backlog_ids(&store, &user).await, ["m-kept"]);
    assert!(
        !store
            .contains(&user, &id("m-acked"))
            .await
            .expect("contains")
    );
    drop((store, db));

    let (db, store) = open_store(&dir, HOUR).await;
    assert_eq!(store.depth(&user).await.expect("depth"), 1);
    assert_eq!(backlog_ids(&store, &user).await, ["m-kept"]);
    assert_eq!(
        enqueue_committed(
            &db,
            &store,
            &[queued(&user, "m-acked"), queued(&user, "m-kept")]
        )
        .await,
        vec![EnqueueOutcome::Duplicate; 2],
        "both ids are remembered for dedupe"
    );
    // Sequence numbers go on after the reopen: a new envelope queues behind the kept one.
    enqueue_committed(&db, &store, &[queued(&user, "m-after")]).await;
    assert_eq!(backlog_ids(&store, &user).await, ["m-kept", "m-after"]);
    close(dir, db, store);
}

/// The dedupe log's files in `dir`.
fn dedupe_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("dedupe"))
        .map(|listing| {
            listing
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[tokio::test]
async fn a_torn_dedupe_record_is_cut_off_so_later_entries_survive() {
    let (dir, user, db, store) = fresh("dedupe-torn", HOUR).await;
    enqueue_committed(&db, &store, &[queued(&user, "m-1")]).await;
    drop((store, db));
    let files = dedupe_files(&dir);
    assert_eq!(files.len(), 1, "one bucket's file: {files:?}");
    // A crash in the middle of an append leaves part of a record.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&files[0])
        .expect("open the dedupe file");
    std::io::Write::write_all(&mut file, &[7; 11]).expect("append a torn record");
    drop(file);

    let (db, store) = open_store(&dir, HOUR).await;
    assert_eq!(
        enqueue_committed(&db, &store, &[queued(&user, "m-1"), queued(&user, "m-2")]).await,
        [EnqueueOutcome::Duplicate, EnqueueOutcome::Stored],
        "the whole record before the torn one is read back"
    );
    drop((store, db));
    let (db, store) = open_store(&dir, HOUR).await;
    assert_eq!(
        enqueue_committed(&db, &store, &[queued(&user, "m-2")]).await,
        [EnqueueOutcome::Duplicate],
        "an entry appended after the reopen is not hidden behind the torn record"
    );
    close(dir, db, store);
}

#[tokio::test]
async fn dedupe_files_are_deleted_once_their_window_ends() {
    let short = Retention {
        envelopes: Duration::from_secs(3600),
        dedupe: Duration::from_millis(300),
    };
    let (dir, user, db, store) = fresh("dedupe-expiry", short).await;
    enqueue_committed(&db, &store, &[queued(&user, "m-1")]).await;
    assert_eq!(dedupe_files(&dir).len(), 1);
    assert_eq!(store.purge_expired().await.expect("purge"), 0);
    assert_eq!(dedupe_files(&dir).len(), 1, "still within its window");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(store.purge_expired().await.expect("purge"), 0);
    assert_eq!(
        dedupe_files(&dir),
        Vec::<PathBuf>::new(),
        "the ended bucket's file is gone"
    );
    assert_eq!(
        enqueue_committed(&db, &store, &[queued(&user, "m-1")]).await,
        [EnqueueOutcome::Stored],
        "past its window the id is new again"
    );
    close(dir, db, store);
}

/// Where versions before the dedupe log kept the window (the table and its expiry index).
const LEGACY_DEDUPE: TableDefinition<(&str, &str), u64> = TableDefinition::new("dedupe");
const LEGACY_DEDUPE_EXPIRY: TableDefinition<(u64, &str, &str), ()> =
    TableDefinition::new("dedupe_expiry");

#[tokio::test]
async fn dedupe_entries_of_an_older_version_move_to_the_dedupe_log() {
    let dir = common::temp_dir("dedupe-legacy");
    let user = pipeline::testkit::user("dedupe-legacy", "user");
    std::fs::create_dir_all(&dir).expect("create dir");
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
        + 3_600_000;
    {
        // What an older version left: an id within its window, one past it.
        let legacy = redb::Database::create(dir.join("router.redb")).expect("create");
        let txn = legacy.begin_write().expect("begin");
        {
            let mut dedupe = txn.open_table(LEGACY_DEDUPE).expect("table");
            let mut expiry = txn.open_table(LEGACY_DEDUPE_EXPIRY).expect("table");
            dedupe
                .insert((user.as_str(), "m-old"), until)
                .expect("insert");
            expiry
                .insert((until, user.as_str(), "m-old"), ())
                .expect("insert");
            dedupe
                .insert((user.as_str(), "m-ended"), 1)
                .expect("insert");
            expiry
                .insert((1, user.as_str(), "m-ended"), ())
                .expect("insert");
        }
        txn.commit().expect("commit");
    }

    let (db, store) = open_store(&dir, HOUR).await;
    assert_eq!(
        enqueue_committed(
            &db,
            &store,
            &[queued(&user, "m-old"), queued(&user, "m-ended")]
        )
        .await,
        [EnqueueOutcome::Duplicate, EnqueueOutcome::Stored]
    );
    let tables_left = db
        .read(|txn| {
            Ok([
                txn.open_table(LEGACY_DEDUPE).is_ok(),
                txn.open_table(LEGACY_DEDUPE_EXPIRY).is_ok(),
            ])
        })
        .await
        .expect("read");
    assert_eq!(tables_left, [false, false], "the old tables are deleted");
    drop((store, db));

    let (db, store) = open_store(&dir, HOUR).await;
    assert_eq!(
        enqueue_committed(&db, &store, &[queued(&user, "m-old")]).await,
        [EnqueueOutcome::Duplicate],
        "the moved entry is in the log"
    );
    close(dir, db, store);
}

#[tokio::test]
async fn a_rolled_back_transaction_drops_the_envelopes_it_held() {
    let (dir, user, db, store) = fresh("held-rollback", HOUR).await;
    let durable = stage_new(&store, &[queued(&user, "m-lost")]).await;
    // A write that fails in the same open transaction: the queue table has other types.
    const WRONG_TYPES: TableDefinition<u64, u64> = TableDefinition::new("queue");
    let failed = db
        .write_lazy(|txn| {
            txn.open_table(WRONG_TYPES)?;
            Ok(())
        })
        .await;
    assert!(failed.is_err(), "opening a table with other types fails");
    assert!(
        durable.await.is_err(),
        "the staged enqueue hears it will never be durable"
    );
    db.flush().await.expect("flush");
    assert_eq!(
        store.depth(&user).await.expect("depth"),
        0,
        "a later commit does not write what the roll-back dropped"
    );
    // Its dedupe entry went with it: the redelivered envelope is stored.
    assert_eq!(
        enqueue_committed(&db, &store, &[queued(&user, "m-lost")]).await,
        vec![EnqueueOutcome::Stored]
    );
    assert_eq!(backlog_ids(&store, &user).await, ["m-lost"]);
    close(dir, db, store);
}

#[tokio::test]
async fn a_purge_finds_expired_envelopes_still_held_for_the_commit() {
    let short = Retention {
        envelopes: Duration::from_millis(50),
        dedupe: Duration::from_secs(3600),
    };
    let (dir, user, db, store) = fresh("held-purge", short).await;
    let durable = stage_new(&store, &[queued(&user, "m-old")]).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(store.purge_expired().await.expect("purge"), 1);
    db.flush().await.expect("flush");
    durable.await.expect("durable");
    assert_eq!(store.depth(&user).await.expect("depth"), 0);
    assert_eq!(store.purge_expired().await.expect("purge again"), 0);
    close(dir, db, store);
}

/// A commit hook registered after the store's: its `before_commit` runs once the store has
/// cut its generation, and enqueues `late` then (once), as a caller's task could while the
/// writer commits.
struct EnqueueDuringCommit {
    store: EmbeddedEnvelopeStore,
    late: QueuedEnvelope,
    staged: std::sync::Mutex<Option<Durability>>,
}

impl CommitHook for EnqueueDuringCommit {
    fn before_commit(&self, _txn: &mut TxnSlot<'_>) -> Result<bool, redb::Error> {
        let mut staged = self.staged.lock().unwrap_or_else(|e| e.into_inner());
        if staged.is_none() {
            let enqueue = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime")
                .block_on(self.store.enqueue_staged(std::slice::from_ref(&self.late)))
                .expect("late enqueue");
            *staged = Some(enqueue.durable);
        }
        Ok(false)
    }

    fn rolled_back(&self) {}
}

#[tokio::test]
async fn an_enqueue_during_a_commit_waits_for_the_next_one_with_its_dedupe_entry() {
    let (dir, user, db, store) = fresh("held-cut", HOUR).await;
    let early = stage_new(&store, &[queued(&user, "m-early")]).await;
    let hook = Arc::new(EnqueueDuringCommit {
        store: store.clone(),
        late: queued(&user, "m-late"),
        staged: std::sync::Mutex::new(None),
    });
    db.add_commit_hook(hook.clone());
    db.flush().await.expect("flush");
    early.await.expect("the enqueue before the cut is durable");
    let mut late = hook
        .staged
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .expect("the hook enqueued during the commit");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut late)
            .await
            .is_err(),
        "an enqueue after the cut is not durable with that commit"
    );
    let synced: u64 = dedupe_files(&dir)
        .iter()
        .map(|path| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0))
        .sum();
    assert_eq!(
        synced, 28,
        "only the cut enqueue's dedupe record is on disk"
    );
    db.flush().await.expect("second flush");
    late.await
        .expect("the late enqueue is durable with the next commit");
    assert_eq!(backlog_ids(&store, &user).await, ["m-early", "m-late"]);
    close(dir, db, store);
}

#[tokio::test]
async fn a_read_sees_an_enqueue_that_returned_before_it() {
    let (dir, user, db, store) = fresh("held-read", HOUR).await;
    for n in 0..20 {
        let id = format!("m-{n}");
        let _durable = stage_new(&store, &[queued(&user, &id)]).await;
        assert!(
            backlog_ids(&store, &user).await.contains(&id),
            "the backlog read after enqueue {n} shows it"
        );
    }
    assert_eq!(store.depth(&user).await.expect("depth"), 20);
    close(dir, db, store);
}
