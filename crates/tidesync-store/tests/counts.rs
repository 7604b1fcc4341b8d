//! The counts a status shows (`Store::counts`) are kept in memory by the store's own commits:
//! they must equal a fresh count from the tables after every kind of write, stay put when a
//! write fails, and follow another connection's commits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{doc, key, FakeServer, TestClock, TestDb};
use serde_json::json;
use tidesync_protocol::{
    ErrorCode, FieldConflict, PushOutcome, PushResponse, PushResult, Stamp, Winner,
};
use tidesync_store::{Resolution, Store, StoreConfig, StoreCounts, StoreError};

/// `counts()` (no query when nothing else wrote) against a recount from the tables.
#[track_caller]
fn check(store: &mut Store, what: &str) -> StoreCounts {
    let kept = store.counts().unwrap();
    assert_eq!(kept, store.recount().unwrap(), "after {what}");
    kept
}

#[test]
fn counts_follow_every_write_path_and_equal_a_recount() {
    let db = TestDb::new();
    let clock = TestClock::new(1_000);
    let mut store = db.open_with(StoreConfig {
        wall_clock: clock.wall(),
        ..StoreConfig::default()
    });
    let mut server = FakeServer::new();
    let fresh = check(&mut store, "open");
    assert_eq!(fresh, StoreCounts::default());

    store.put(&key("a"), doc(json!({"n": 1}))).unwrap();
    clock.set(2_000);
    store.patch(&key("b"), doc(json!({"n": 2}))).unwrap();
    store
        .transaction(|tx| {
            tx.put(&key("c"), doc(json!({"n": 3})))?;
            tx.delete(&key("d"))?;
            tx.put(&key("e"), doc(json!({"n": 5})))
        })
        .unwrap();
    let counts = check(&mut store, "local writes");
    assert_eq!(
        (counts.pending, counts.unpushed, counts.last_seq),
        (5, 5, 5)
    );
    assert_eq!(counts.oldest_pending_at_ms, Some(1_000));
    assert!(counts.unpushed_bytes > 0);

    // A failed transaction changes nothing.
    let failed = store.transaction(|tx| {
        tx.put(&key("z"), doc(json!({})))?;
        Err::<(), _>(StoreError::InvalidInput("the app changed its mind".into()))
    });
    assert!(failed.is_err());
    assert_eq!(check(&mut store, "a rolled-back transaction"), counts);

    // The server applies 1, merges 2 with a conflict, rejects the transaction 3..=5.
    let batch = store.next_push_batch(100).unwrap();
    store.mark_sending(1, 5).unwrap();
    let client = store.client_id().clone();
    let mut results = Vec::new();
    for e in &batch {
        let outcome = match e.mutation.seq {
            1 => {
                let stamp = Stamp::new(e.mutation.hlc, client.clone());
                PushOutcome::Applied {
                    version: server.apply(&e.mutation.key, &e.mutation.op, &stamp),
                }
            }
            2 => {
                let stamp = Stamp::new(e.mutation.hlc, client.clone());
                PushOutcome::Merged {
                    version: server.apply(&e.mutation.key, &e.mutation.op, &stamp),
                    conflicts: vec![FieldConflict {
                        field: "n".into(),
                        local: Some(json!(2)),
                        server: Some(json!(9)),
                        winner: Winner::Local,
                    }],
                }
            }
            _ => PushOutcome::Rejected {
                code: ErrorCode::RuleViolation,
                message: "no".into(),
            },
        };
        results.push(PushResult {
            seq: e.mutation.seq,
            outcome,
        });
    }
    store
        .apply_push_response(&PushResponse {
            acked_through: 5,
            results,
        })
        .unwrap();
    let counts = check(&mut store, "a push answer");
    assert_eq!(
        (counts.pending, counts.unpushed, counts.unpushed_bytes),
        (2, 0, 0)
    );
    assert_eq!(
        (counts.conflicts, counts.rejections, counts.acked_through),
        (1, 3, 5)
    );

    // A complete pull confirms both applied mutations.
    store.apply_pull(&server.pull(0, 5)).unwrap();
    let counts = check(&mut store, "a pull");
    assert_eq!((counts.pending, counts.oldest_pending_at_ms), (0, None));
    assert!(counts.has_synced && counts.last_synced_at_ms.is_some());

    // The app settles things.
    let conflict = store.conflicts().unwrap().remove(0);
    store
        .resolve_conflict(conflict.id, Resolution::KeepServer)
        .unwrap();
    check(&mut store, "resolving a conflict");
    let rejected = store.rejections().unwrap();
    let receipts = store.retry_rejection(rejected[0].seq).unwrap();
    assert_eq!(receipts.len(), 3);
    let counts = check(&mut store, "retrying a rejection");
    assert_eq!(counts.rejections, 0);
    assert!(counts.unpushed >= 3);
    store.reset_base().unwrap();
    check(&mut store, "a base reset");
    store.put(&key("f"), doc(json!({}))).unwrap();
    check(&mut store, "another write");
}

#[test]
fn discarding_a_rejection_and_another_connections_writes_are_counted() {
    let db = TestDb::new();
    let mut store = db.open();
    store.put(&key("a"), doc(json!({"n": 1}))).unwrap();
    store
        .apply_push_response(&PushResponse {
            acked_through: 1,
            results: vec![PushResult {
                seq: 1,
                outcome: PushOutcome::Rejected {
                    code: ErrorCode::StaleBase,
                    message: "stale".into(),
                },
            }],
        })
        .unwrap();
    assert_eq!(check(&mut store, "a rejection").rejections, 1);
    store.discard_rejection(1).unwrap();
    assert_eq!(check(&mut store, "a discard").rejections, 0);

    // A second handle (another process, the CLI) writes to the same file.
    let mut other = db.open_with(StoreConfig {
        session: tidesync_store::SessionRestore::Keep,
        ..StoreConfig::default()
    });
    other.put(&key("b"), doc(json!({}))).unwrap();
    other.put(&key("c"), doc(json!({}))).unwrap();
    let counts = check(&mut store, "another connection's writes");
    assert_eq!((counts.pending, counts.last_seq), (2, 3));
}
