//! The embedded database's deferred commits: what callers see before and after a commit.

use std::time::Duration;

use adapters::embedded::EmbeddedDb;
use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};

mod common;

const TABLE: TableDefinition<&str, u64> = TableDefinition::new("t");

fn temp_path(name: &str) -> std::path::PathBuf {
    common::temp_dir(&format!("db-{name}")).join("router.redb")
}

async fn value_of(db: &EmbeddedDb, key: &'static str) -> Option<u64> {
    db.read(move |txn| match txn.open_table(TABLE) {
        Ok(table) => Ok(table.get(key)?.map(|v| v.value())),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(err) => Err(err.into()),
    })
    .await
    .expect("read")
}

#[tokio::test]
async fn a_staged_write_is_readable_at_once_and_durable_only_once_committed() {
    let path = temp_path("staged");
    // An hour: only the read below commits in this test.
    let db = EmbeddedDb::open(&path, Duration::from_secs(3600)).expect("open");
    let ((), durable) = db
        .write_staged(|txn| {
            txn.open_table(TABLE)?.insert("k", 7)?;
            Ok(())
        })
        .await
        .expect("staged write");
    let mut durable = Box::pin(durable.wait());
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut durable)
            .await
            .is_err(),
        "not durable before a durable commit"
    );
    // A read sees it: it has the open transaction committed, durably since that holds a
    // staged write.
    assert_eq!(value_of(&db, "k").await, Some(7));
    tokio::time::timeout(Duration::from_secs(5), durable)
        .await
        .expect("durable after the read's commit")
        .expect("durable");
    // Dropping the last handle stops the writer thread, which lets go of the file.
    drop(db);
    let mut reopened = redb::Database::open(&path);
    for _ in 0..50 {
        if reopened.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        reopened = redb::Database::open(&path);
    }
    let reopened = reopened.expect("reopen");
    let txn = reopened.begin_read().expect("read");
    let table = txn.open_table(TABLE).expect("table");
    assert_eq!(table.get("k").expect("get").map(|v| v.value()), Some(7));
    drop((table, txn, reopened));
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[tokio::test]
async fn lazy_writes_are_readable_at_once_and_seen_by_later_writes() {
    let path = temp_path("lazy");
    let db = EmbeddedDb::open(&path, Duration::from_millis(50)).expect("open");
    db.write_lazy(|txn| {
        txn.open_table(TABLE)?.insert("k", 1)?;
        Ok(())
    })
    .await
    .expect("lazy write");
    assert_eq!(value_of(&db, "k").await, Some(1));
    db.write_lazy(|txn| {
        txn.open_table(TABLE)?.insert("k", 2)?;
        Ok(())
    })
    .await
    .expect("lazy write");
    // Past the interval the writer has committed them by itself; a durable write sees them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = db
        .write(|txn| Ok(txn.open_table(TABLE)?.get("k")?.map(|v| v.value())))
        .await
        .expect("durable write");
    assert_eq!(seen, Some(2));
    drop(db);
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}
