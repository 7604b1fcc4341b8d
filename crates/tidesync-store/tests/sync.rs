//! What the sync engine feeds back: push results, pulled changes, rebase, conflicts,
//! rejections.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{applied, doc, key, push_all, FakeServer, TestDb};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tidesync_protocol::{
    CollectionName, ErrorCode, FieldConflict, Hlc, Op, PullResponse, PushOutcome, PushResponse,
    PushResult, RawChange, RecordKey, SpaceName, Stamp, Winner,
};
use tidesync_store::{ListOptions, MutationState, Resolution, Store, StoreError};

fn view(store: &Store, id: &str) -> Option<Value> {
    store.get(&key(id)).unwrap().map(|r| Value::Object(r.doc))
}

#[test]
fn pulled_changes_land_in_the_view_and_mark_the_first_sync() {
    let db = TestDb::new();
    let mut store = db.open();
    assert!(!store.has_synced().unwrap());
    let mut server = FakeServer::new();
    server.write(
        &key("a"),
        Op::Put {
            doc: doc(json!({"title": "from bob"})),
        },
        10,
        "bob",
    );
    let applied = store.apply_pull(&server.pull(0, 0)).unwrap();
    assert_eq!(applied.changed.values().sum::<usize>(), 1);
    let record = store.get(&key("a")).unwrap().unwrap();
    assert!(!record.pending);
    assert_eq!(record.doc["title"], json!("from bob"));
    assert!(store.has_synced().unwrap());
    assert!(store.last_synced_at().unwrap().is_some());
    assert_eq!(
        store
            .cursor()
            .unwrap()
            .values()
            .copied()
            .collect::<Vec<_>>(),
        vec![1]
    );
}

#[test]
fn pending_mutations_are_rebased_onto_pulled_changes() {
    let db = TestDb::new();
    let mut store = db.open();
    let mut server = FakeServer::new();
    server.write(
        &key("a"),
        Op::Put {
            doc: doc(json!({"title": "t", "done": false})),
        },
        10,
        "bob",
    );
    store.apply_pull(&server.pull(0, 0)).unwrap();
    store.patch(&key("a"), doc(json!({"done": true}))).unwrap();
    // Meanwhile bob renames it on the server.
    server.write(
        &key("a"),
        Op::Patch {
            fields: doc(json!({"title": "renamed"})),
        },
        20,
        "bob",
    );
    store.apply_pull(&server.pull(1, 0)).unwrap();
    let record = store.get(&key("a")).unwrap().unwrap();
    assert!(record.pending);
    assert_eq!(
        Value::Object(record.doc),
        json!({"title": "renamed", "done": true})
    );
}

#[test]
fn a_remote_delete_does_not_erase_a_newer_local_edit_in_the_view() {
    let db = TestDb::new();
    let mut store = db.open();
    let mut server = FakeServer::new();
    server.write(
        &key("a"),
        Op::Put {
            doc: doc(json!({"n": 1})),
        },
        10,
        "bob",
    );
    store.apply_pull(&server.pull(0, 0)).unwrap();
    server.write(&key("a"), Op::Delete, 11, "bob");
    // The local clock has seen stamp 10 only through the pull; its wall clock is far ahead,
    // so the local edit is newer than bob's delete and resurrects the record.
    store.patch(&key("a"), doc(json!({"n": 2}))).unwrap();
    store.apply_pull(&server.pull(1, 0)).unwrap();
    assert_eq!(view(&store, "a"), Some(json!({"n": 2})));
}

#[test]
fn an_acked_mutation_stays_in_the_view_until_the_cursor_passes_its_version() {
    let db = TestDb::new();
    let mut store = db.open();
    let mut server = FakeServer::new();
    let r = store.put(&key("a"), doc(json!({"mine": true}))).unwrap();
    let ack = push_all(&mut store, &mut server);
    let PushOutcome::Applied { version } = ack.results[0].outcome else {
        panic!()
    };
    assert_eq!(
        store.mutation_state(r.seq).unwrap(),
        Some(MutationState::Acked {
            version: Some(version)
        })
    );
    // A pull page that stops before our version: the base has no record yet, the view keeps
    // the acked write (no flicker back to "absent").
    let mut early = server.pull(0, 0);
    early.changes.clear();
    for v in early.cursor.values_mut() {
        *v = version - 1;
    }
    early.has_more = true;
    store.apply_pull(&early).unwrap();
    assert_eq!(view(&store, "a"), Some(json!({"mine": true})));
    assert!(store.get(&key("a")).unwrap().unwrap().pending);
    // The pull that passes it confirms it.
    let full = server.pull(0, r.seq);
    let applied = store.apply_pull(&full).unwrap();
    assert_eq!(applied.confirmed, vec![r.seq]);
    assert_eq!(
        store.mutation_state(r.seq).unwrap(),
        Some(MutationState::Confirmed)
    );
    let record = store.get(&key("a")).unwrap().unwrap();
    assert!(!record.pending);
    assert_eq!(Value::Object(record.doc), json!({"mine": true}));
    assert_eq!(store.outbox_stats().unwrap().pending, 0);
}

/// Regression (simulation seed 1714): the answer to a push the server *rejected* was lost,
/// then a complete pull reported `acked_through` past it. The pull confirmed the mutation as
/// if applied: the write vanished with no rejection kept. A pull's `acked_through` says
/// "processed", not "applied"; only a push answer tells, so the mutation is pushed again.
#[test]
fn a_pull_never_confirms_a_mutation_whose_push_answer_was_lost() {
    let db = TestDb::new();
    let mut store = db.open();
    let server = FakeServer::new();
    let r = store.put(&key("a"), doc(json!({"v": 1}))).unwrap();
    store.mark_sending(1, r.seq).unwrap();
    // The server rejects it; the answer is lost. A complete pull reports it processed.
    store.requeue_sending().unwrap();
    let applied = store.apply_pull(&server.pull(0, r.seq)).unwrap();
    assert!(applied.confirmed.is_empty(), "{applied:?}");
    assert_eq!(
        store.mutation_state(r.seq).unwrap(),
        Some(MutationState::Queued)
    );
    // It is pushed again, and the server repeats the rejection for the duplicate.
    let batch = store.next_push_batch(10).unwrap();
    assert_eq!(
        batch.iter().map(|e| e.mutation.seq).collect::<Vec<_>>(),
        vec![r.seq]
    );
    store
        .apply_push_response(&PushResponse {
            acked_through: r.seq,
            results: vec![PushResult {
                seq: r.seq,
                outcome: PushOutcome::Rejected {
                    code: ErrorCode::RuleViolation,
                    message: "strict".into(),
                },
            }],
        })
        .unwrap();
    assert!(matches!(
        store.mutation_state(r.seq).unwrap(),
        Some(MutationState::Rejected { .. })
    ));
    assert_eq!(view(&store, "a"), None, "the local effect is rolled back");
}

#[test]
fn a_lost_push_response_is_recovered_by_acked_through() {
    let db = TestDb::new();
    let mut store = db.open();
    let mut server = FakeServer::new();
    let r = store.put(&key("a"), doc(json!({"v": 1}))).unwrap();
    store.mark_sending(1, r.seq).unwrap();
    // The server applies the push, but its response is lost on the way back.
    let m = &store.outbox_batch(0, 10).unwrap()[0].mutation;
    server.apply(&m.key, &m.op, &Stamp::new(m.hlc, store.client_id().clone()));
    // The retried push is a duplicate: no result, only acked_through.
    store
        .apply_push_response(&PushResponse {
            acked_through: r.seq,
            results: vec![],
        })
        .unwrap();
    assert_eq!(
        store.mutation_state(r.seq).unwrap(),
        Some(MutationState::Acked { version: None })
    );
    // An incomplete pull page cannot confirm by acked_through alone.
    let mut page = server.pull(0, r.seq);
    page.has_more = true;
    store.apply_pull(&page).unwrap();
    assert!(matches!(
        store.mutation_state(r.seq).unwrap(),
        Some(MutationState::Acked { .. })
    ));
    // A complete pull whose acked_through covers it confirms it.
    store.apply_pull(&server.pull(0, r.seq)).unwrap();
    assert_eq!(
        store.mutation_state(r.seq).unwrap(),
        Some(MutationState::Confirmed)
    );
    let record = store.get(&key("a")).unwrap().unwrap();
    assert!(!record.pending);
    assert_eq!(Value::Object(record.doc), json!({"v": 1}));
}

#[test]
fn a_rejected_transaction_is_rolled_back_locally_and_can_be_retried_or_discarded() {
    let db = TestDb::new();
    let mut store = db.open();
    let mut server = FakeServer::new();
    server.write(
        &key("a"),
        Op::Put {
            doc: doc(json!({"qty": 1})),
        },
        10,
        "bob",
    );
    store.apply_pull(&server.pull(0, 0)).unwrap();
    let (r1, r2) = store
        .transaction(|tx| {
            let r1 = tx.patch(&key("a"), doc(json!({"qty": -5})))?;
            let r2 = tx.put(&key("b"), doc(json!({"order": "a"})))?;
            Ok::<_, StoreError>((r1, r2))
        })
        .unwrap();
    let r3 = store
        .put(&key("c"), doc(json!({"unrelated": true})))
        .unwrap();
    assert_eq!(view(&store, "a"), Some(json!({"qty": -5})));
    let rejected = |seq, code| PushResult {
        seq,
        outcome: PushOutcome::Rejected {
            code,
            message: "qty must be positive".into(),
        },
    };
    let applied_push = store
        .apply_push_response(&PushResponse {
            acked_through: r3.seq,
            results: vec![
                rejected(r1.seq, ErrorCode::RuleViolation),
                rejected(r2.seq, ErrorCode::TransactionAborted),
                applied(r3.seq, 2),
            ],
        })
        .unwrap();
    assert_eq!(applied_push.rejected, vec![r1.seq, r2.seq]);
    // Local effect rolled back: view = base + remaining pending.
    assert_eq!(view(&store, "a"), Some(json!({"qty": 1})));
    assert!(!store.get(&key("a")).unwrap().unwrap().pending);
    assert_eq!(view(&store, "b"), None);
    assert_eq!(
        view(&store, "c"),
        Some(json!({"unrelated": true})),
        "later mutations flow on"
    );
    let rejections = store.rejections().unwrap();
    assert_eq!(rejections.len(), 2);
    assert_eq!(rejections[0].code, ErrorCode::RuleViolation);
    assert_eq!(rejections[0].message, "qty must be positive");
    assert!(matches!(
        store.mutation_state(r1.seq).unwrap(),
        Some(MutationState::Rejected {
            code: ErrorCode::RuleViolation,
            ..
        })
    ));

    // Retry: the whole transaction is queued again with new seqs, in one new tx.
    let retried = store.retry_rejection(r2.seq).unwrap();
    assert_eq!(retried.len(), 2);
    assert_eq!(retried[0].tx, retried[1].tx);
    assert!(retried[0].seq > r3.seq);
    assert_eq!(view(&store, "a"), Some(json!({"qty": -5})));
    assert!(store.rejections().unwrap().is_empty());

    // Rejected again, then discarded: gone for good.
    store
        .apply_push_response(&PushResponse {
            acked_through: retried[1].seq,
            results: vec![
                rejected(retried[0].seq, ErrorCode::RuleViolation),
                rejected(retried[1].seq, ErrorCode::TransactionAborted),
            ],
        })
        .unwrap();
    assert_eq!(store.discard_rejection(retried[0].seq).unwrap(), 2);
    assert!(store.rejections().unwrap().is_empty());
    assert_eq!(view(&store, "a"), Some(json!({"qty": 1})));
    let err = store.discard_rejection(12345).unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
}

#[test]
fn conflicts_are_listed_and_resolved_by_new_mutations() {
    let db = TestDb::new();
    let mut store = db.open();
    let r = store
        .put(&key("a"), doc(json!({"title": "mine", "n": 1})))
        .unwrap();
    let conflict = FieldConflict {
        field: "title".into(),
        local: Some(json!("mine")),
        server: Some(json!("theirs")),
        winner: Winner::Server,
    };
    let applied_push = store
        .apply_push_response(&PushResponse {
            acked_through: r.seq,
            results: vec![PushResult {
                seq: r.seq,
                outcome: PushOutcome::Merged {
                    version: 7,
                    conflicts: vec![conflict.clone()],
                },
            }],
        })
        .unwrap();
    assert_eq!(applied_push.conflicts, 1);
    let conflicts = store.conflicts().unwrap();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].key, key("a"));
    assert_eq!(conflicts[0].fields, vec![conflict]);
    assert_eq!(conflicts[0].version, 7);

    // Keep server: the server value already won, nothing to write.
    let id = conflicts[0].id;
    let mut copy = db.open();
    assert_eq!(
        copy.resolve_conflict(id, Resolution::KeepServer).unwrap(),
        None
    );
    assert!(copy.conflicts().unwrap().is_empty());
    drop(copy);

    // (Fresh conflict for the other resolutions.)
    let again = |store: &mut Store| {
        let r = store.put(&key("a"), doc(json!({"title": "mine"}))).unwrap();
        store
            .apply_push_response(&PushResponse {
                acked_through: r.seq,
                results: vec![PushResult {
                    seq: r.seq,
                    outcome: PushOutcome::Merged {
                        version: 9,
                        conflicts: vec![FieldConflict {
                            field: "title".into(),
                            local: Some(json!("mine")),
                            server: Some(json!("theirs")),
                            winner: Winner::Server,
                        }],
                    },
                }],
            })
            .unwrap();
        store.conflicts().unwrap()[0].id
    };
    let id = again(&mut store);
    let receipt = store
        .resolve_conflict(id, Resolution::KeepLocal)
        .unwrap()
        .unwrap();
    let batch = store.outbox_batch(receipt.seq - 1, 10).unwrap();
    assert_eq!(
        batch[0].mutation.op,
        Op::Patch {
            fields: doc(json!({"title": "mine"}))
        }
    );

    let id = again(&mut store);
    let receipt = store
        .resolve_conflict(
            id,
            Resolution::Merged(doc(json!({"title": "mine + theirs"}))),
        )
        .unwrap()
        .unwrap();
    assert_eq!(view(&store, "a"), Some(json!({"title": "mine + theirs"})));
    assert_eq!(
        store.mutation_state(receipt.seq).unwrap(),
        Some(MutationState::Queued)
    );
    assert!(store.conflicts().unwrap().is_empty());
    let err = store
        .resolve_conflict(999, Resolution::KeepLocal)
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
}

#[test]
fn an_inconsistent_change_from_the_server_is_refused_and_changes_nothing() {
    let db = TestDb::new();
    let mut store = db.open();
    store.put(&key("a"), doc(json!({"v": 1}))).unwrap();
    let mut server = FakeServer::new();
    server.write(
        &key("b"),
        Op::Put {
            doc: doc(json!({"x": 1})),
        },
        10,
        "bob",
    );
    let mut page = server.pull(0, 0);
    page.changes[0].stamps.fields.clear(); // a document field without a stamp
    let err = store.apply_pull(&page).unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput(_)), "{err}");
    assert_eq!(view(&store, "b"), None);
    assert!(store.cursor().unwrap().is_empty());
    assert!(!store.has_synced().unwrap());
}

#[test]
fn pulled_stamps_push_the_local_clock_forward() {
    let db = TestDb::new();
    let mut store = db.open();
    let mut server = FakeServer::new();
    let far_future = 40_000_000_000_000; // a device with a clock ~1200 years ahead
    server.write(
        &key("a"),
        Op::Put {
            doc: doc(json!({})),
        },
        far_future,
        "bob",
    );
    store.apply_pull(&server.pull(0, 0)).unwrap();
    let r = store.patch(&key("a"), doc(json!({"mine": 1}))).unwrap();
    assert!(
        r.hlc > Hlc::new(far_future, 0).unwrap(),
        "a local write after a pull is newer than it"
    );
}

#[test]
fn a_hundred_thousand_queued_changes_confirm_in_one_pull() {
    let db = TestDb::new();
    let mut store = db.open_with(tidesync_store::StoreConfig {
        durability: tidesync_store::Durability::Normal,
        ..Default::default()
    });
    let mut server = FakeServer::new();
    store
        .transaction(|tx| {
            for i in 0..100_000u32 {
                tx.put(&key(&format!("r{}", i % 5000)), doc(json!({"i": i})))?;
            }
            Ok::<_, StoreError>(())
        })
        .unwrap();
    let mut after = 0;
    let mut pushed = 0;
    let client = store.client_id().clone();
    loop {
        let batch = store.outbox_batch(after, 1000).unwrap();
        let Some(last) = batch.last().map(|e| e.mutation.seq) else {
            break;
        };
        // One transaction of 100k comes whole: the engine would send it in one push.
        let results = batch
            .iter()
            .map(|e| {
                let v = server.apply(
                    &e.mutation.key,
                    &e.mutation.op,
                    &Stamp::new(e.mutation.hlc, client.clone()),
                );
                applied(e.mutation.seq, v)
            })
            .collect();
        pushed += batch.len();
        store
            .apply_push_response(&PushResponse {
                acked_through: last,
                results,
            })
            .unwrap();
        after = last;
    }
    assert_eq!(pushed, 100_000);
    let applied = store.apply_pull(&server.pull(0, 100_000)).unwrap();
    assert_eq!(applied.confirmed.len(), 100_000);
    assert_eq!(store.outbox_stats().unwrap().pending, 0);
    assert_eq!(view(&store, "r4999"), Some(json!({"i": 99_999})));
    assert!(!store.get(&key("r0")).unwrap().unwrap().pending);
}

#[test]
fn seqs_and_stamps_continue_after_the_outbox_drains_by_confirmation_or_rejection() {
    let db = TestDb::new();
    let mut store = db.open();
    let mut server = FakeServer::new();
    store.put(&key("a"), doc(json!({}))).unwrap();
    let last = store.put(&key("b"), doc(json!({}))).unwrap();
    push_all(&mut store, &mut server);
    store.apply_pull(&server.pull(0, last.seq)).unwrap();
    assert_eq!(store.outbox_stats().unwrap().pending, 0);
    drop(store);
    let mut store = db.open();
    let next = store.put(&key("c"), doc(json!({}))).unwrap();
    assert_eq!(next.seq, last.seq + 1);
    assert_eq!(next.tx, last.tx + 1);
    assert!(next.hlc > last.hlc);
    store
        .apply_push_response(&PushResponse {
            acked_through: next.seq,
            results: vec![PushResult {
                seq: next.seq,
                outcome: PushOutcome::Rejected {
                    code: ErrorCode::RuleViolation,
                    message: "no".into(),
                },
            }],
        })
        .unwrap();
    assert_eq!(store.outbox_stats().unwrap().pending, 0);
    let after = store.put(&key("d"), doc(json!({}))).unwrap();
    assert_eq!(after.seq, next.seq + 1, "a rejected seq is never reused");
    assert!(after.hlc > next.hlc);
}

#[test]
fn the_next_push_batch_starts_after_what_the_server_acknowledged() {
    let db = TestDb::new();
    let mut store = db.open();
    let mut server = FakeServer::new();
    for i in 0..5 {
        store
            .put(&key(&format!("r{i}")), doc(json!({"i": i})))
            .unwrap();
    }
    assert_eq!(store.unpushed().unwrap().mutations, 5);
    assert!(store.unpushed().unwrap().bytes > 0);
    let first: Vec<u64> = store
        .next_push_batch(2)
        .unwrap()
        .iter()
        .map(|e| e.mutation.seq)
        .collect();
    assert_eq!(first, vec![1, 2]);
    // The server acknowledges 1..=2 (the rows stay in the outbox until a pull confirms them).
    let client = store.client_id().clone();
    let results = store
        .next_push_batch(2)
        .unwrap()
        .iter()
        .map(|e| {
            let v = server.apply(
                &e.mutation.key,
                &e.mutation.op,
                &Stamp::new(e.mutation.hlc, client.clone()),
            );
            applied(e.mutation.seq, v)
        })
        .collect();
    store
        .apply_push_response(&PushResponse {
            acked_through: 2,
            results,
        })
        .unwrap();
    assert_eq!(store.acked_through().unwrap(), 2);
    let next: Vec<u64> = store
        .next_push_batch(10)
        .unwrap()
        .iter()
        .map(|e| e.mutation.seq)
        .collect();
    assert_eq!(next, vec![3, 4, 5]);
    assert_eq!(store.unpushed().unwrap().mutations, 3);
    assert_eq!(
        store.outbox_stats().unwrap().pending,
        5,
        "acked rows are still pending"
    );
    assert_eq!(store.conflict_count().unwrap(), 0);
    assert_eq!(store.rejection_count().unwrap(), 0);
}

#[test]
fn a_server_that_forgot_history_gets_every_held_mutation_again_and_the_loss_is_counted() {
    let db = TestDb::new();
    let mut store = db.open();
    let mut server = FakeServer::new();
    // Seqs 1..=3 pushed and acknowledged; a pull confirms what it brings back (those leave
    // the outbox).
    for i in 1..=3 {
        store
            .put(&key(&format!("r{i}")), doc(json!({"i": i})))
            .unwrap();
    }
    push_all(&mut store, &mut server);
    let page = server.pull(0, 3);
    store.apply_pull(&page).unwrap();
    let held: Vec<u64> = store
        .outbox_batch(0, 10)
        .unwrap()
        .iter()
        .map(|e| e.mutation.seq)
        .collect();
    // Seq 4 is queued, never pushed.
    store.put(&key("r4"), doc(json!({"i": 4}))).unwrap();
    assert!(store.recovering_from().unwrap().is_none());

    // The server was restored from a backup that had processed seq 1 only.
    let loss = store.forget_server_history(1).unwrap();
    let still_held = held.len() as u64 + 1;
    assert_eq!(loss.server_last_seq, 1);
    assert_eq!(loss.local_last_seq, 4);
    assert_eq!(
        loss.resent,
        still_held - held.iter().filter(|s| **s <= 1).count() as u64
    );
    assert_eq!(
        loss.lost,
        4 - 1 - loss.resent,
        "confirmed after seq 1 and no longer held"
    );
    assert_eq!(store.acked_through().unwrap(), 1);
    assert_eq!(store.recovering_from().unwrap(), Some(1));
    let again: Vec<u64> = store
        .next_push_batch(10)
        .unwrap()
        .iter()
        .map(|e| e.mutation.seq)
        .collect();
    let expected: Vec<u64> = held.iter().copied().filter(|s| *s > 1).chain([4]).collect();
    assert_eq!(
        again, expected,
        "every held mutation after seq 1, gaps and all"
    );
    assert_eq!(store.unpushed().unwrap().mutations, expected.len() as u64);
    // Once the server has processed everything handed out, pushes are ordinary again.
    store
        .apply_push_response(&PushResponse {
            acked_through: 4,
            results: expected.iter().map(|seq| applied(*seq, 10 + seq)).collect(),
        })
        .unwrap();
    assert_eq!(store.recovering_from().unwrap(), None);
}

#[test]
fn a_base_reset_keeps_pending_work_and_the_next_pull_rebuilds_the_rest() {
    let db = TestDb::new();
    let mut store = db.open();
    let mut server = FakeServer::new();
    server.write(
        &key("a"),
        Op::Put {
            doc: doc(json!({"title": "t", "n": 1})),
        },
        10,
        "bob",
    );
    server.write(
        &key("b"),
        Op::Put {
            doc: doc(json!({"x": 1})),
        },
        11,
        "bob",
    );
    store.apply_pull(&server.pull(0, 0)).unwrap();
    store.patch(&key("a"), doc(json!({"n": 2}))).unwrap();
    store.reset_base().unwrap();
    assert!(store.cursor().unwrap().is_empty());
    assert_eq!(view(&store, "b"), None, "unsynced base state is gone");
    assert_eq!(
        view(&store, "a"),
        Some(json!({"n": 2})),
        "pending work stays, on an empty base"
    );
    store.apply_pull(&server.pull(0, 0)).unwrap();
    assert_eq!(view(&store, "a"), Some(json!({"title": "t", "n": 2})));
    assert_eq!(view(&store, "b"), Some(json!({"x": 1})));
    assert_eq!(store.outbox_stats().unwrap().pending, 1);
}

/// Every record of the stores' collections: (space, collection, id) → (view, pending).
fn all_views(store: &Store, places: &[(&str, &str)]) -> Vec<(String, Value, bool)> {
    let mut out = Vec::new();
    for (space, collection) in places {
        let page = store
            .list(
                &SpaceName::new(*space).unwrap(),
                &CollectionName::new(*collection).unwrap(),
                &ListOptions::default(),
            )
            .unwrap();
        for r in page.records {
            out.push((r.key.to_string(), Value::Object(r.doc), r.pending));
        }
    }
    out
}

#[test]
fn raw_changes_from_the_wire_apply_exactly_like_typed_ones() {
    let places = [
        ("user:alice", "todos"),
        ("user:alice", "notes"),
        ("team:x", "todos"),
    ];
    let at =
        |space: &str, collection: &str, id: &str| RecordKey::parse(space, collection, id).unwrap();
    let mut server = FakeServer::new();
    let put = |v: Value| Op::Put { doc: doc(v) };
    server.write(&key("a"), put(json!({"title": "t", "n": 1})), 10, "bob");
    server.write(
        &at("user:alice", "notes", "n1"),
        put(json!({"x": 1})),
        11,
        "bob",
    );
    server.write(&key("b"), put(json!({"keep": 1, "drop": 2})), 12, "bob");
    server.write(
        &key("b"),
        Op::Patch {
            fields: doc(json!({"drop": null})),
        },
        13,
        "bob",
    );
    server.write(&key("c"), put(json!({"gone": true})), 14, "bob");
    server.write(&key("c"), Op::Delete, 15, "bob");
    server.write(&key("d"), put(json!({"v": 1})), 16, "bob");
    server.write(&key("d"), Op::Delete, 17, "bob");
    server.write(
        &at("team:x", "todos", "z"),
        put(json!({"s": "é\"q"})),
        18,
        "bob",
    );
    server.write(
        &key("e"),
        put(json!({"nested": {"k": [1, 2.5, null]}})),
        19,
        "bob",
    );
    let typed = server.pull(0, 0);
    // What the client runtime gets: the same JSON (pretty-printed here, so the stored text
    // even keeps the server's whitespace), parsed with documents and stamps left as text.
    let raw: PullResponse<RawChange> =
        serde_json::from_str(&serde_json::to_string_pretty(&typed).unwrap()).unwrap();

    let (db_typed, db_raw) = (TestDb::new(), TestDb::new());
    let mut stores = [db_typed.open(), db_raw.open()];
    for store in &mut stores {
        store.patch(&key("a"), doc(json!({"mine": 1}))).unwrap(); // pending, rebased
        store.put(&key("d"), doc(json!({"local": 1}))).unwrap(); // pending, deleted remotely
        store.put(&key("e"), doc(json!({"mine": 2}))).unwrap(); // will be rejected
    }
    let [mut by_type, mut by_raw] = stores;
    let applied_typed = by_type.apply_pull(&typed).unwrap();
    let applied_raw = by_raw.apply_pull(&raw).unwrap();
    assert_eq!(applied_raw, applied_typed);
    let counts: Vec<_> = applied_raw
        .changed
        .iter()
        .map(|((s, c), n)| (s.as_str(), c.as_str(), *n))
        .collect();
    assert_eq!(
        counts,
        vec![
            ("team:x", "todos", 1),
            ("user:alice", "notes", 1),
            ("user:alice", "todos", 5)
        ]
    );
    let views = all_views(&by_raw, &places);
    assert_eq!(views, all_views(&by_type, &places));
    assert_eq!(
        view(&by_raw, "a"),
        Some(json!({"title": "t", "n": 1, "mine": 1}))
    );
    assert_eq!(view(&by_raw, "b"), Some(json!({"keep": 1})));
    assert_eq!(view(&by_raw, "c"), None);
    assert_eq!(view(&by_raw, "d"), Some(json!({"local": 1})));
    assert_eq!(by_raw.cursor().unwrap(), by_type.cursor().unwrap());
    assert!(by_raw.has_synced().unwrap());

    // The stored bases rebase the same way: rejecting the local writes recomputes the views.
    for store in [&mut by_type, &mut by_raw] {
        let seqs: Vec<u64> = store
            .outbox_batch(0, 10)
            .unwrap()
            .iter()
            .map(|e| e.mutation.seq)
            .collect();
        let results = seqs
            .iter()
            .map(|&seq| PushResult {
                seq,
                outcome: PushOutcome::Rejected {
                    code: ErrorCode::RuleViolation,
                    message: "no".into(),
                },
            })
            .collect();
        store
            .apply_push_response(&PushResponse {
                acked_through: seqs.last().copied().unwrap_or(0),
                results,
            })
            .unwrap();
    }
    assert_eq!(all_views(&by_raw, &places), all_views(&by_type, &places));
    assert_eq!(view(&by_raw, "a"), Some(json!({"title": "t", "n": 1})));
    assert_eq!(view(&by_raw, "d"), None, "deleted on the server");
    assert_eq!(
        view(&by_raw, "e"),
        Some(json!({"nested": {"k": [1, 2.5, null]}}))
    );
    assert_eq!(by_raw.outbox_stats().unwrap().pending, 0);
}

#[test]
fn an_inconsistent_raw_change_is_refused_by_name_and_changes_nothing() {
    let db = TestDb::new();
    let mut store = db.open();
    let mut server = FakeServer::new();
    for (i, id) in ["ok", "bad"].into_iter().enumerate() {
        server.write(
            &key(id),
            Op::Put {
                doc: doc(json!({"x": 1})),
            },
            10 + i as u64,
            "bob",
        );
    }
    let page = server.pull(0, 0);
    let bad = |edit: &dyn Fn(&mut RawChange)| {
        let mut raw: PullResponse<RawChange> =
            serde_json::from_str(&serde_json::to_string(&page).unwrap()).unwrap();
        edit(&mut raw.changes[1]);
        raw
    };
    let cases: [&dyn Fn(&mut RawChange); 3] = [
        &|c| c.deleted = true,
        &|c| c.doc = Some(RawValue::from_string(r#"{"x":1,"y":2}"#.into()).unwrap()),
        &|c| c.stamps = RawValue::from_string(r#"{"fields":{"x":"nope"}}"#.into()).unwrap(),
    ];
    for edit in cases {
        let err = store.apply_pull(&bad(edit)).unwrap_err();
        assert!(matches!(err, StoreError::InvalidInput(_)), "{err}");
        assert!(err.to_string().contains("user:alice/todos/bad"), "{err}");
        assert_eq!(
            view(&store, "ok"),
            None,
            "the page's other changes are undone too"
        );
        assert!(store.cursor().unwrap().is_empty());
        assert!(!store.has_synced().unwrap());
    }
    let raw: PullResponse<RawChange> =
        serde_json::from_str(&serde_json::to_string(&page).unwrap()).unwrap();
    store.apply_pull(&raw).unwrap();
    assert_eq!(view(&store, "bad"), Some(json!({"x": 1})));
}

/// A retry after a lost answer may carry fewer mutations than the first try (batches
/// adapt). The server's `acked_through` then runs past the request, and it says nothing of
/// the mutations it did not get (one may have been rejected): they are pushed again.
#[test]
fn a_push_answer_past_what_the_push_carried_moves_the_push_position_only_over_what_it_carried() {
    let db = TestDb::new();
    let mut store = db.open();
    for id in ["a", "b", "c"] {
        store.put(&key(id), doc(json!({"id": id}))).unwrap();
    }
    store.mark_sending(1, 1).unwrap();
    store
        .apply_push_answer(
            &PushResponse {
                acked_through: 3,
                results: Vec::new(),
            },
            1,
        )
        .unwrap();
    assert_eq!(store.acked_through().unwrap(), 1);
    assert_eq!(
        store.mutation_state(2).unwrap(),
        Some(MutationState::Queued)
    );
    let next: Vec<u64> = store
        .next_push_batch(10)
        .unwrap()
        .iter()
        .map(|e| e.mutation.seq)
        .collect();
    assert_eq!(next, [2, 3], "pushed again, to learn their outcome");
}
