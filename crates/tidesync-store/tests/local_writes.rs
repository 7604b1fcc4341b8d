//! Local writes: view and outbox move together; seqs and transactions; bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{doc, key, TestClock, TestDb};
use serde_json::json;
use tidesync_protocol::{CollectionName, Op, RecordId, RecordKey, SpaceName};
use tidesync_store::{ListOptions, MutationState, StoreConfig, StoreError};

#[test]
fn a_write_updates_the_view_and_the_outbox_and_marks_the_record_pending() {
    let db = TestDb::new();
    let mut store = db.open();
    let k = key("t1");
    let r1 = store
        .put(
            &k,
            doc(json!({"title": "Buy milk", "tags": {"a": 1, "b": 2}})),
        )
        .unwrap();
    let r2 = store
        .patch(&k, doc(json!({"done": true, "tags": {"b": null, "c": 3}})))
        .unwrap();
    assert_eq!((r1.seq, r2.seq), (1, 2));
    assert_ne!(r1.tx, r2.tx);
    assert!(r2.hlc > r1.hlc);
    let record = store.get(&k).unwrap().unwrap();
    assert!(record.pending);
    assert_eq!(
        serde_json::Value::Object(record.doc),
        json!({"title": "Buy milk", "done": true, "tags": {"a": 1, "c": 3}})
    );
    let batch = store.outbox_batch(0, 10).unwrap();
    assert_eq!(batch.len(), 2);
    assert_eq!(batch[0].mutation.op.kind(), "put");
    assert_eq!(batch[0].state, MutationState::Queued);
    // The patch travels resolved: the nested object arrives whole.
    assert_eq!(
        batch[1].mutation.op,
        Op::Patch {
            fields: doc(json!({"done": true, "tags": {"a": 1, "c": 3}}))
        }
    );
    store.delete(&k).unwrap();
    assert_eq!(store.get(&k).unwrap(), None);
    assert_eq!(store.outbox_stats().unwrap().pending, 3);
}

#[test]
fn a_transaction_commits_whole_or_not_at_all() {
    let db = TestDb::new();
    let mut store = db.open();
    let receipts = store
        .transaction(|tx| {
            let a = tx.put(&key("a"), doc(json!({"n": 1})))?;
            let b = tx.patch(&key("b"), doc(json!({"n": 2})))?;
            assert_eq!(
                tx.get(&key("a"))?.unwrap().doc["n"],
                json!(1),
                "reads see own writes"
            );
            Ok::<_, StoreError>((a, b))
        })
        .unwrap();
    assert_eq!(receipts.0.tx, receipts.1.tx);
    assert_eq!((receipts.0.seq, receipts.1.seq), (1, 2));

    let failed: Result<(), StoreError> = store.transaction(|tx| {
        tx.put(&key("c"), doc(json!({"n": 3})))?;
        tx.put(&key("a"), doc(json!({"n": 99})))?;
        Err(StoreError::InvalidInput("the app changed its mind".into()))
    });
    assert!(failed.is_err());
    assert_eq!(store.get(&key("c")).unwrap(), None);
    assert_eq!(store.get(&key("a")).unwrap().unwrap().doc["n"], json!(1));
    // The rolled-back transaction consumed no seq and no tx id.
    let next = store.put(&key("d"), doc(json!({}))).unwrap();
    assert_eq!(next.seq, 3);
    assert_eq!(next.tx, receipts.0.tx + 1);
}

#[test]
fn a_panicking_transaction_rolls_back() {
    let db = TestDb::new();
    let mut store = db.open();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = store.transaction(|tx| {
            tx.put(&key("a"), doc(json!({})))?;
            panic!("app bug");
            #[allow(unreachable_code)]
            Ok::<_, StoreError>(())
        });
    }));
    assert!(result.is_err());
    assert_eq!(store.get(&key("a")).unwrap(), None);
    assert_eq!(store.put(&key("b"), doc(json!({}))).unwrap().seq, 1);
}

#[test]
fn seqs_and_stamps_keep_increasing_across_reopen_even_when_the_clock_goes_back() {
    let db = TestDb::new();
    let clock = TestClock::new(1_000_000);
    let config = || StoreConfig {
        wall_clock: clock.wall(),
        ..StoreConfig::default()
    };
    let last = {
        let mut store = db.open_with(config());
        store.put(&key("a"), doc(json!({}))).unwrap();
        store.put(&key("a"), doc(json!({}))).unwrap()
    };
    clock.set(5_000); // the wall clock jumped back by ~16 minutes
    let mut store = db.open_with(config());
    let next = store.put(&key("a"), doc(json!({}))).unwrap();
    assert_eq!(next.seq, last.seq + 1);
    assert!(next.hlc > last.hlc, "{} > {}", next.hlc, last.hlc);
    assert_eq!(next.hlc.millis(), 1_000_000);
}

#[test]
fn oversized_documents_are_refused_and_change_nothing() {
    let db = TestDb::new();
    let mut store = db.open_with(StoreConfig {
        max_doc_bytes: 1000,
        ..StoreConfig::default()
    });
    store.put(&key("a"), doc(json!({"v": 1}))).unwrap();
    let err = store
        .put(&key("a"), doc(json!({"v": "x".repeat(2000)})))
        .unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err}");
    assert_eq!(err.code(), "too_large");
    let err = store
        .patch(&key("a"), doc(json!({"w": "y".repeat(2000)})))
        .unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err}");
    assert_eq!(store.get(&key("a")).unwrap().unwrap().doc["v"], json!(1));
    assert_eq!(store.outbox_stats().unwrap().pending, 1);
}

#[test]
fn bad_names_never_reach_the_store() {
    assert!(RecordKey::parse("user:alice", "todos", "").is_err());
    assert!(RecordKey::parse("user:alice", "todos", &"x".repeat(257)).is_err());
    assert!(RecordKey::parse("no spaces allowed", "todos", "a").is_err());
    assert!(RecordKey::parse("user:alice", "9lives", "a").is_err());
    let err = RecordKey::parse("user:alice", "todos", "tab\there").unwrap_err();
    assert!(err.to_string().contains("control characters"), "{err}");
}

#[test]
fn list_pages_through_a_collection_in_id_order_and_skips_deleted_records() {
    let db = TestDb::new();
    let mut store = db.open();
    store
        .transaction(|tx| {
            for i in 0..25 {
                tx.put(&key(&format!("r{i:02}")), doc(json!({"i": i})))?;
            }
            tx.delete(&key("r03"))?;
            tx.put(
                &RecordKey::parse("user:alice", "notes", "n1").unwrap(),
                doc(json!({})),
            )?;
            Ok::<_, StoreError>(())
        })
        .unwrap();
    let space = SpaceName::new("user:alice").unwrap();
    let todos = CollectionName::new("todos").unwrap();
    let mut ids = Vec::new();
    let mut after: Option<RecordId> = None;
    loop {
        let page = store
            .list(
                &space,
                &todos,
                &ListOptions {
                    after: after.clone(),
                    limit: 10,
                },
            )
            .unwrap();
        assert!(page.records.len() <= 10);
        ids.extend(page.records.iter().map(|r| r.key.id.to_string()));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25)
        .filter(|i| *i != 3)
        .map(|i| format!("r{i:02}"))
        .collect();
    assert_eq!(ids, expected);
    let err = store
        .list(
            &space,
            &todos,
            &ListOptions {
                after: None,
                limit: 1_000_000,
            },
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput(_)), "{err}");
}

#[test]
fn outbox_batches_hold_whole_transactions() {
    let db = TestDb::new();
    let mut store = db.open();
    // tx1: 3 mutations, tx2: 4, tx3: 1
    for size in [3, 4, 1] {
        store
            .transaction(|tx| {
                for i in 0..size {
                    tx.put(&key(&format!("k{i}")), doc(json!({"size": size})))?;
                }
                Ok::<_, StoreError>(())
            })
            .unwrap();
    }
    let seqs =
        |b: &[tidesync_store::OutboxEntry]| b.iter().map(|e| e.mutation.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(&store.outbox_batch(0, 5).unwrap()),
        vec![1, 2, 3],
        "tx2 does not fit: cut before it"
    );
    assert_eq!(
        seqs(&store.outbox_batch(3, 2).unwrap()),
        vec![4, 5, 6, 7],
        "a tx larger than max comes whole"
    );
    assert_eq!(
        seqs(&store.outbox_batch(3, 5).unwrap()),
        vec![4, 5, 6, 7, 8]
    );
    assert_eq!(seqs(&store.outbox_batch(8, 5).unwrap()), Vec::<u64>::new());
}

#[test]
fn mutation_states_move_from_queued_to_sending_and_back_after_a_restart() {
    let db = TestDb::new();
    let mut store = db.open();
    let r = store.put(&key("a"), doc(json!({}))).unwrap();
    assert_eq!(
        store.mutation_state(r.seq).unwrap(),
        Some(MutationState::Queued)
    );
    store.mark_sending(1, r.seq).unwrap();
    assert_eq!(
        store.mutation_state(r.seq).unwrap(),
        Some(MutationState::Sending)
    );
    assert_eq!(store.outbox_batch(0, 10).unwrap()[0].attempts, 1);
    assert_eq!(store.mutation_state(99).unwrap(), None);
    drop(store);
    // The app died mid-push: no answer is coming, so the mutation is queued again.
    let store = db.open();
    assert_eq!(
        store.mutation_state(r.seq).unwrap(),
        Some(MutationState::Queued)
    );
}

#[test]
fn a_store_opened_with_normal_durability_keeps_its_data_across_reopen() {
    let db = TestDb::new();
    let config = StoreConfig {
        durability: tidesync_store::Durability::Normal,
        ..StoreConfig::default()
    };
    let mut store = db.open_with(config.clone());
    store.put(&key("a"), doc(json!({"x": 1}))).unwrap();
    drop(store);
    let store = db.open_with(config);
    assert_eq!(store.get(&key("a")).unwrap().unwrap().doc["x"], json!(1));
}
