//! Restoration state through the store: atomic with data writes, lifetimes, migrations at
//! open, dropped entries reported, size limits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{doc, key, TestDb};
use serde_json::json;
use tidesync_store::restoration::{
    BucketPath, Entry, IssueKind, Lifetime, RestorationError, RestorationLimits, RestorationSchema,
    Value,
};
use tidesync_store::{SessionRestore, StoreConfig, StoreError};

fn checkout() -> BucketPath {
    BucketPath::root().child("checkout").unwrap()
}

fn draft(text: &str) -> Entry {
    Entry::new("checkout.draft", 1, Value::from(text))
}

#[test]
fn enqueue_the_order_and_clear_the_draft_commit_together() {
    let db = TestDb::new();
    let mut store = db.open();
    store
        .restore_write(
            Lifetime::Persistent,
            &checkout(),
            "draft",
            draft("2 apples"),
        )
        .unwrap();
    // A failing transaction leaves both the data and the draft as they were.
    let failed: Result<(), StoreError> = store.transaction(|tx| {
        tx.put(&key("order-1"), doc(json!({"items": 2})))?;
        tx.restore_remove(Lifetime::Persistent, &checkout(), "draft")?;
        Err(StoreError::InvalidInput("payment declined".into()))
    });
    assert!(failed.is_err());
    assert_eq!(store.get(&key("order-1")).unwrap(), None);
    let read = |s: &tidesync_store::Store| {
        s.restoration()
            .root(Lifetime::Persistent)
            .child("checkout")
            .read("draft")
            .map(|e| e.value.clone())
    };
    assert_eq!(read(&store), Some(Value::from("2 apples")));
    store
        .transaction(|tx| {
            tx.put(&key("order-1"), doc(json!({"items": 2})))?;
            tx.restore_remove(Lifetime::Persistent, &checkout(), "draft")
        })
        .unwrap();
    assert_eq!(read(&store), None);
    drop(store);
    let store = db.open();
    assert_eq!(read(&store), None);
    assert!(store.get(&key("order-1")).unwrap().is_some());
}

#[test]
fn every_value_kind_survives_a_restart() {
    let db = TestDb::new();
    let mut store = db.open();
    let value = Value::Map(
        [
            ("null".to_owned(), Value::Null),
            ("bool".to_owned(), Value::from(true)),
            ("int".to_owned(), Value::from(i64::MIN)),
            ("float".to_owned(), Value::from(f64::NAN)),
            ("text".to_owned(), Value::from("ünïcödé 🦀")),
            ("bytes".to_owned(), Value::from(vec![0u8, 255, 7])),
            (
                "list".to_owned(),
                Value::List(vec![Value::from(1i64), Value::Null]),
            ),
        ]
        .into_iter()
        .collect(),
    );
    let nav = BucketPath::root()
        .child("nav")
        .unwrap()
        .child("stack")
        .unwrap();
    store
        .restore_write(
            Lifetime::Persistent,
            &nav,
            "state",
            Entry::new("nav", 1, value.clone()),
        )
        .unwrap();
    drop(store);
    let store = db.open();
    let entry = store
        .restoration()
        .bucket(Lifetime::Persistent, &nav)
        .read("state")
        .cloned();
    assert_eq!(entry.map(|e| e.value), Some(value));
}

#[test]
fn session_state_survives_an_os_restore_but_not_a_fresh_start() {
    let db = TestDb::new();
    let mut store = db.open();
    let session = store.session_id().to_owned();
    store
        .restore_write(Lifetime::Session, &checkout(), "draft", draft("unsent"))
        .unwrap();
    store
        .restore_write(Lifetime::Persistent, &checkout(), "theme", draft("dark"))
        .unwrap();
    drop(store);

    // The OS killed the app and restores it with the id the app saved.
    let config = StoreConfig {
        session: SessionRestore::Restore(session.clone()),
        ..Default::default()
    };
    let store = db.open_with(config);
    assert_eq!(store.session_id(), session);
    assert!(store
        .restoration()
        .root(Lifetime::Session)
        .child("checkout")
        .read("draft")
        .is_some());
    drop(store);

    // A stale id (another session) does not restore.
    let config = StoreConfig {
        session: SessionRestore::Restore("stale".into()),
        ..Default::default()
    };
    let store = db.open_with(config);
    assert!(store
        .restoration()
        .root(Lifetime::Session)
        .child("checkout")
        .read("draft")
        .is_none());
    assert!(store
        .restoration()
        .root(Lifetime::Persistent)
        .child("checkout")
        .read("theme")
        .is_some());
    drop(store);

    let store = db.open();
    assert_ne!(
        store.session_id(),
        session,
        "a fresh start begins a new session"
    );
    assert!(store
        .restoration()
        .root(Lifetime::Persistent)
        .child("checkout")
        .read("theme")
        .is_some());
}

#[test]
fn old_entries_are_migrated_at_open_and_broken_ones_dropped_and_reported() {
    let db = TestDb::new();
    let mut store = db.open();
    store
        .restore_write(Lifetime::Persistent, &checkout(), "draft", draft("v1 text"))
        .unwrap();
    store
        .restore_write(
            Lifetime::Persistent,
            &checkout(),
            "coupon",
            Entry::new("coupon", 1, Value::from(5i64)),
        )
        .unwrap();
    store
        .restore_write(
            Lifetime::Persistent,
            &checkout(),
            "garbage",
            Entry::new("note", 1, Value::from("x")),
        )
        .unwrap();
    drop(store);
    {
        // Damage one entry on disk.
        let conn = rusqlite::Connection::open(&db.path).unwrap();
        conn.execute(
            "UPDATE restoration SET value = x'01ff' WHERE key = 'garbage'",
            [],
        )
        .unwrap();
    }
    // The app's next release: drafts are maps now; coupons can no longer be migrated.
    let schema = RestorationSchema::builder()
        .register("checkout.draft", 2)
        .migration("checkout.draft", 1, |v| {
            let text = v.as_str().ok_or("draft v1 must be a string")?.to_owned();
            Ok(Value::Map(
                [("text".to_owned(), Value::from(text))]
                    .into_iter()
                    .collect(),
            ))
        })
        .register("coupon", 2)
        .migration(
            "coupon",
            1,
            |_| Err("coupons changed completely".to_owned()),
        )
        .build()
        .unwrap();
    let config = StoreConfig {
        restoration_schema: Arc::new(schema),
        ..Default::default()
    };
    let store = db.open_with(config.clone());
    let bucket = store
        .restoration()
        .root(Lifetime::Persistent)
        .child("checkout");
    let migrated = bucket.read("draft").unwrap();
    assert_eq!(migrated.version, 2);
    assert_eq!(migrated.value.get("text"), Some(&Value::from("v1 text")));
    assert!(bucket.read("coupon").is_none());
    assert!(bucket.read("garbage").is_none());
    let mut kinds: Vec<_> = store
        .restoration_issues()
        .iter()
        .map(|i| (i.key.clone(), i.kind))
        .collect();
    kinds.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        kinds,
        vec![
            ("coupon".to_owned(), IssueKind::MigrationFailed),
            ("garbage".to_owned(), IssueKind::Undecodable)
        ]
    );
    drop(store);
    // Repairs were written back: the next open has nothing to report and the draft is v2.
    let store = db.open_with(config);
    assert!(store.restoration_issues().is_empty());
    assert_eq!(
        store
            .restoration()
            .root(Lifetime::Persistent)
            .child("checkout")
            .read("draft")
            .unwrap()
            .version,
        2
    );
}

#[test]
fn entries_and_trees_over_their_limits_are_refused_with_too_large() {
    let db = TestDb::new();
    let limits = RestorationLimits {
        max_entry_bytes: 1024,
        max_tree_bytes: 3000,
    };
    let mut store = db.open_with(StoreConfig {
        restoration_limits: limits,
        ..Default::default()
    });
    let big = Entry::new("blob", 1, Value::from(vec![0u8; 2000]));
    let err = store
        .restore_write(Lifetime::Persistent, &checkout(), "big", big)
        .unwrap_err();
    match &err {
        StoreError::Restoration(RestorationError::TooLarge { size, limit, .. }) => {
            assert!(*size > 1024);
            assert_eq!(*limit, 1024);
        }
        other => panic!("expected TooLarge, got {other}"),
    }
    assert!(
        err.to_string().contains("keep large data in records"),
        "{err}"
    );
    let part = |i: u8| Entry::new("blob", 1, Value::from(vec![i; 900]));
    store
        .restore_write(Lifetime::Persistent, &checkout(), "p1", part(1))
        .unwrap();
    store
        .restore_write(Lifetime::Persistent, &checkout(), "p2", part(2))
        .unwrap();
    store
        .restore_write(Lifetime::Persistent, &checkout(), "p3", part(3))
        .unwrap();
    let err = store
        .restore_write(Lifetime::Session, &checkout(), "p4", part(4))
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Restoration(RestorationError::TooLarge { .. })
        ),
        "{err}"
    );
    // A too-large restoration write aborts the data writes of its transaction too.
    let result = store.transaction(|tx| {
        tx.put(&key("x"), doc(json!({})))?;
        tx.restore_write(Lifetime::Persistent, &checkout(), "p5", part(5))
    });
    assert!(result.is_err());
    assert_eq!(store.get(&key("x")).unwrap(), None);
    drop(store);
    let store = db.open_with(StoreConfig {
        restoration_limits: limits,
        ..Default::default()
    });
    assert_eq!(store.restoration().entry_count(), 3);
}

#[test]
fn invalid_keys_and_versions_newer_than_the_schema_are_refused() {
    let db = TestDb::new();
    let schema = RestorationSchema::builder()
        .register("checkout.draft", 1)
        .build()
        .unwrap();
    let mut store = db.open_with(StoreConfig {
        restoration_schema: Arc::new(schema),
        ..Default::default()
    });
    assert!(store
        .restore_write(Lifetime::Persistent, &checkout(), "a/b", draft("x"))
        .is_err());
    assert!(store
        .restore_write(Lifetime::Persistent, &checkout(), "", draft("x"))
        .is_err());
    assert!(BucketPath::root().child("bad/segment").is_err());
    let too_new = Entry::new("checkout.draft", 2, Value::from("x"));
    assert!(store
        .restore_write(Lifetime::Persistent, &checkout(), "draft", too_new)
        .is_err());
    assert_eq!(store.restoration().entry_count(), 0);
}

#[test]
fn rows_damaged_outside_tidesync_are_dropped_and_reported_not_fatal() {
    let db = TestDb::new();
    let mut store = db.open();
    store
        .restore_write(Lifetime::Persistent, &checkout(), "draft", draft("keep me"))
        .unwrap();
    drop(store);
    {
        let conn = rusqlite::Connection::open(&db.path).unwrap();
        conn.execute_batch(
            "INSERT INTO restoration VALUES (1, 'checkout', CAST(x'ff00fe' AS TEXT), 'note', 1, x'0100');
             INSERT INTO restoration VALUES (7, 'checkout', 'alien', 'note', 1, x'0100');
             INSERT INTO restoration VALUES (1, 'checkout', 'textversion', 'note', 'one', x'0100');
             INSERT INTO restoration VALUES (1, 'checkout', 'toobig', 'note', 99999999999, x'0100');",
        )
        .unwrap();
    }
    let store = db.open();
    let issues = store.restoration_issues();
    assert_eq!(issues.len(), 4, "{issues:?}");
    assert!(
        issues.iter().all(|i| i.kind == IssueKind::Unreadable),
        "{issues:?}"
    );
    assert!(issues.iter().any(|i| i.key == "alien"));
    assert_eq!(store.restoration().entry_count(), 1);
    drop(store);
    let store = db.open();
    assert!(
        store.restoration_issues().is_empty(),
        "the damaged rows were deleted"
    );
    assert_eq!(store.restoration().entry_count(), 1);
}

#[test]
fn tools_can_open_a_database_without_clearing_its_session_state() {
    let db = TestDb::new();
    let mut store = db.open();
    store
        .restore_write(Lifetime::Session, &checkout(), "draft", draft("unsent"))
        .unwrap();
    let session = store.session_id().to_owned();
    drop(store);
    let store = db.open_with(StoreConfig {
        session: SessionRestore::Keep,
        ..Default::default()
    });
    assert_eq!(store.session_id(), session);
    assert!(store
        .restoration()
        .root(Lifetime::Session)
        .child("checkout")
        .read("draft")
        .is_some());
}
