//! Opening files: what is not ours is refused untouched; what is ours opens and migrates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{doc, file_bytes, key, TestDb};
use serde_json::json;
use tidesync_store::{Store, StoreConfig, StoreError, CURRENT_VERSION};

#[test]
fn a_new_database_gets_a_client_id_that_never_changes() {
    let db = TestDb::new();
    let id = db.open().client_id().clone();
    assert_eq!(id.as_str().len(), 32);
    assert_eq!(db.open().client_id(), &id);
    let other = TestDb::new();
    assert_ne!(other.open().client_id(), &id);
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_and_left_untouched() {
    let db = TestDb::new();
    let content = b"{\"this is\": \"a JSON file, not a database\"}\n".repeat(100);
    std::fs::write(&db.path, &content).unwrap();
    let err = Store::open(&db.path, StoreConfig::default()).unwrap_err();
    assert!(matches!(err, StoreError::NotADatabase { .. }), "{err}");
    assert_eq!(err.code(), "not_a_database");
    assert!(err.to_string().contains("nothing was changed"), "{err}");
    assert_eq!(file_bytes(&db.path), content);
    assert!(!db.path.with_extension("db-wal").exists());
}

#[test]
fn a_short_garbage_file_is_refused() {
    let db = TestDb::new();
    std::fs::write(&db.path, b"SQLite").unwrap();
    let err = Store::open(&db.path, StoreConfig::default()).unwrap_err();
    assert!(matches!(err, StoreError::NotADatabase { .. }), "{err}");
    assert_eq!(file_bytes(&db.path), b"SQLite");
}

#[test]
fn a_sqlite_header_followed_by_garbage_is_refused_untouched() {
    let db = TestDb::new();
    let mut content = b"SQLite format 3\0".to_vec();
    content.extend((0..8192u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    std::fs::write(&db.path, &content).unwrap();
    let err = Store::open(&db.path, StoreConfig::default()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NotADatabase { .. } | StoreError::Corrupt { .. }
        ),
        "{err}"
    );
    assert_eq!(file_bytes(&db.path), content);
}

#[test]
fn another_applications_database_is_refused_untouched() {
    let db = TestDb::new();
    {
        let conn = rusqlite::Connection::open(&db.path).unwrap();
        conn.execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL); INSERT INTO invoices VALUES (1, 9.5);")
            .unwrap();
    }
    let before = file_bytes(&db.path);
    let err = Store::open(&db.path, StoreConfig::default()).unwrap_err();
    assert!(matches!(err, StoreError::ForeignDatabase { .. }), "{err}");
    assert_eq!(file_bytes(&db.path), before);
}

#[test]
fn a_database_from_a_newer_schema_is_refused_untouched() {
    let db = TestDb::new();
    db.open().put(&key("a"), doc(json!({"x": 1}))).unwrap();
    {
        let conn = rusqlite::Connection::open(&db.path).unwrap();
        conn.execute_batch(&format!("PRAGMA user_version = {}", CURRENT_VERSION + 1))
            .unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
    }
    let before = file_bytes(&db.path);
    let err = Store::open(&db.path, StoreConfig::default()).unwrap_err();
    match &err {
        StoreError::TooNew {
            found, supported, ..
        } => {
            assert_eq!(*found, CURRENT_VERSION + 1);
            assert_eq!(*supported, CURRENT_VERSION);
        }
        other => panic!("expected TooNew, got {other}"),
    }
    assert!(err.to_string().contains("upgrade the app"), "{err}");
    assert_eq!(file_bytes(&db.path), before);
}

#[test]
fn a_corrupted_data_page_gives_a_corrupt_error_not_a_panic() {
    let db = TestDb::new();
    {
        let mut store = db.open();
        store
            .transaction(|tx| {
                for i in 0..2000 {
                    tx.put(
                        &key(&format!("r{i:05}")),
                        doc(json!({"n": i, "pad": "x".repeat(100)})),
                    )?;
                }
                Ok::<_, StoreError>(())
            })
            .unwrap();
    }
    {
        // Fold the WAL into the main file so the damage below hits live pages.
        let conn = rusqlite::Connection::open(&db.path).unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
    }
    let mut bytes = file_bytes(&db.path);
    let len = bytes.len();
    for b in &mut bytes[len / 2..len / 2 + 8192] {
        *b = 0xA5;
    }
    std::fs::write(&db.path, &bytes).unwrap();

    // Open may or may not notice (it does not scan the file); the integrity check and the
    // reads that touch the damage must report it cleanly.
    match Store::open(&db.path, StoreConfig::default()) {
        Err(err) => assert!(matches!(err, StoreError::Corrupt { .. }), "{err}"),
        Ok(store) => {
            let err = store.check_integrity().unwrap_err();
            assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
            assert!(
                err.to_string().contains("restore it from a backup"),
                "{err}"
            );
            let mut seen_error = false;
            for i in 0..2000 {
                if store.get(&key(&format!("r{i:05}"))).is_err() {
                    seen_error = true;
                }
            }
            let mut outbox_error = false;
            let _ = store
                .for_each_outbox(|_| std::ops::ControlFlow::Continue(()))
                .map_err(|_| outbox_error = true);
            assert!(
                seen_error || outbox_error,
                "the damage must surface somewhere"
            );
        }
    }
}

#[test]
fn a_directory_or_unwritable_place_gives_an_io_error() {
    let db = TestDb::new();
    let err = Store::open(db.dir.path(), StoreConfig::default()).unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err}");
    let err = Store::open(
        db.dir.path().join("missing/dir/app.db"),
        StoreConfig::default(),
    )
    .unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err}");
}

#[test]
fn two_handles_writing_concurrently_never_lose_or_duplicate_a_seq() {
    let db = TestDb::new();
    drop(db.open());
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let path = db.path.clone();
            std::thread::spawn(move || {
                let config = StoreConfig {
                    durability: tidesync_store::Durability::Normal,
                    ..StoreConfig::default()
                };
                let mut store = Store::open(&path, config).unwrap();
                let mut seqs = Vec::new();
                for i in 0..200 {
                    let receipt = store
                        .put(&key(&format!("t{t}-{i}")), doc(json!({"i": i})))
                        .unwrap();
                    seqs.push(receipt.seq);
                }
                seqs
            })
        })
        .collect();
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (1..=400).collect::<Vec<_>>());
    let store = db.open();
    assert_eq!(store.outbox_stats().unwrap().pending, 400);
    store.check_integrity().unwrap();
}

#[test]
fn a_writer_blocked_past_the_busy_timeout_gets_a_retryable_busy_error() {
    let db = TestDb::new();
    let config = StoreConfig {
        busy_timeout: std::time::Duration::from_millis(50),
        ..StoreConfig::default()
    };
    let mut store = db.open_with(config.clone());
    let blocker = rusqlite::Connection::open(&db.path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let err = Store::open(&db.path, config).unwrap_err();
    assert!(
        matches!(err, StoreError::Busy { .. }),
        "opening waits, then says busy: {err}"
    );
    let err = store.put(&key("a"), doc(json!({}))).unwrap_err();
    assert!(matches!(err, StoreError::Busy { .. }), "{err}");
    assert!(err.is_retryable());
    blocker.execute_batch("ROLLBACK").unwrap();
    let receipt = store.put(&key("a"), doc(json!({}))).unwrap();
    assert_eq!(receipt.seq, 1, "the failed write consumed no seq");
}

#[test]
fn a_store_can_move_to_a_background_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<Store>();
    let db = TestDb::new();
    let mut store = db.open();
    let handle = std::thread::spawn(move || store.put(&key("a"), doc(json!({}))).map(|r| r.seq));
    assert_eq!(handle.join().unwrap().unwrap(), 1);
}
