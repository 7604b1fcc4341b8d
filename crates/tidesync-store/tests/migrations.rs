//! Every released schema version opens and migrates to the current one, keeping its data.
//!
//! `fixtures/schema_vN.sql` is a database as schema version N wrote it. When a migration is
//! added, add the fixture of the version it upgrades *from* (a dump of a real database of
//! that version) — the test below fails until every older version has one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{doc, file_bytes, key, FakeServer, TestDb};
use serde_json::{json, Value};
use tidesync_core::{wire, RecordState};
use tidesync_protocol::{
    ClientId, ErrorCode, Hlc, Op, PushOutcome, PushResponse, PushResult, Stamp,
};
use tidesync_store::restoration::{Lifetime, Value as RValue};
use tidesync_store::{MutationState, Store, StoreConfig, StoreError, CURRENT_VERSION};

fn fixture(version: i64) -> String {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/schema_v{version}.sql"));
    std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "missing fixture {} for schema version {version}",
            path.display()
        )
    })
}

fn schema_of(path: &Path) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap();
    rows.map(|r| {
        let (name, sql) = r.unwrap();
        (name, sql.split_whitespace().collect::<Vec<_>>().join(" "))
    })
    .collect()
}

#[test]
fn every_released_schema_version_migrates_to_the_current_schema() {
    let fresh = TestDb::new();
    drop(fresh.open());
    let fresh_schema = schema_of(&fresh.path);
    for version in 1..=CURRENT_VERSION {
        let db = TestDb::new();
        rusqlite::Connection::open(&db.path)
            .unwrap()
            .execute_batch(&fixture(version))
            .unwrap();
        let store = Store::open(&db.path, StoreConfig::default())
            .unwrap_or_else(|e| panic!("schema v{version} does not open: {e}"));
        drop(store);
        assert_eq!(
            schema_of(&db.path),
            fresh_schema,
            "schema after migrating from v{version}"
        );
    }
}

#[test]
fn every_released_version_keeps_its_data_and_keeps_working() {
    for version in 1..=CURRENT_VERSION {
        keeps_its_data_and_keeps_working(version);
    }
}

fn keeps_its_data_and_keeps_working(version: i64) {
    let db = TestDb::new();
    rusqlite::Connection::open(&db.path)
        .unwrap()
        .execute_batch(&fixture(version))
        .unwrap();
    let config = StoreConfig {
        session: tidesync_store::SessionRestore::Restore("fixturesession".into()),
        ..StoreConfig::default()
    };
    let mut store = Store::open(&db.path, config).unwrap();
    assert_eq!(
        store.client_id().as_str(),
        "f1xture0client0id000000000000001"
    );
    assert!(store.has_synced().unwrap());
    assert_eq!(
        store
            .cursor()
            .unwrap()
            .values()
            .copied()
            .collect::<Vec<_>>(),
        vec![5]
    );
    let local = store.get(&key("local")).unwrap().unwrap();
    assert!(local.pending);
    assert_eq!(
        Value::Object(local.doc),
        json!({"title": "edited offline", "done": true})
    );
    assert_eq!(
        store.mutation_state(2).unwrap(),
        Some(MutationState::Queued)
    );
    assert_eq!(
        store.mutation_state(3).unwrap(),
        Some(MutationState::Queued),
        "sending is requeued"
    );
    assert!(matches!(
        store.mutation_state(1).unwrap(),
        Some(MutationState::Rejected { .. })
    ));
    assert_eq!(
        store.rejections().unwrap()[0].code,
        ErrorCode::RuleViolation
    );
    assert_eq!(store.conflicts().unwrap()[0].fields[0].field, "done");
    assert_eq!(
        store
            .restoration()
            .root(Lifetime::Persistent)
            .child("checkout")
            .read("draft")
            .map(|e| e.value.clone()),
        Some(RValue::from("hi"))
    );
    let batch = store.outbox_batch(0, 10).unwrap();
    assert_eq!(batch.len(), 2);
    assert_eq!(batch[0].mutation.tx, batch[1].mutation.tx);

    // New writes continue the old counters.
    let r = store
        .put(&key("synced"), doc(json!({"title": "mine"})))
        .unwrap();
    assert_eq!((r.seq, r.tx), (4, 3));
    assert!(r.hlc.as_u64() > 111_411_200_000_000_002);
    // Rejecting it recomputes the view from the stored base (converted from v1).
    store
        .apply_push_response(&PushResponse {
            acked_through: 4,
            results: vec![PushResult {
                seq: 4,
                outcome: PushOutcome::Rejected {
                    code: ErrorCode::RuleViolation,
                    message: "no".into(),
                },
            }],
        })
        .unwrap();
    let synced = store.get(&key("synced")).unwrap().unwrap();
    assert_eq!(Value::Object(synced.doc), json!({"title": "from server"}));
    assert!(!synced.pending);
    store.check_integrity().unwrap();
}

/// Server stamps of the records below: bob at 1 700 000 000 000 + `n` ms.
fn bob(n: u64) -> Stamp {
    Stamp::new(
        Hlc::new(1_700_000_000_000 + n, 0).unwrap(),
        ClientId::new("bob").unwrap(),
    )
}

/// A local stamp's `outbox.hlc`, newer than every server stamp above.
fn local_hlc(n: u16) -> i64 {
    Hlc::new(1_700_000_000_100, n).unwrap().as_u64() as i64
}

/// The fixture plus records whose bases are in the version 1 format (the JSON of a
/// `RecordState` as version 1 wrote it, spelled out), some with pending mutations.
fn version_1_with_bases(db: &TestDb) {
    let conn = rusqlite::Connection::open(&db.path).unwrap();
    conn.execute_batch(&fixture(1)).unwrap();
    let records = [
        // put {"title": "t", "note": "x"} @1, then patch {"note": null} @2: a removed field.
        (
            "live",
            Some(r#"{"title":"t"}"#),
            r#"{"fields":{"note":{"stamp":"018bcfe568020000@bob","value":null},"title":{"stamp":"018bcfe568010000@bob","value":"t"}},"liveness":["018bcfe568020000@bob",true],"cleared":"018bcfe568010000@bob"}"#,
            0,
        ),
        // put {"title": "old"} @1, then delete @3; a local patch {"n": 1} is pending.
        (
            "gone",
            Some(r#"{"n":1}"#),
            r#"{"fields":{},"liveness":["018bcfe568030000@bob",false],"cleared":"018bcfe568030000@bob"}"#,
            1,
        ),
        // put {"title": "server", "n": 1} @1; local patches {"n": 2} and {"m": 3} pending.
        (
            "edited",
            Some(r#"{"m":3,"n":2,"title":"server"}"#),
            r#"{"fields":{"n":{"stamp":"018bcfe568010000@bob","value":1},"title":{"stamp":"018bcfe568010000@bob","value":"server"}},"liveness":["018bcfe568010000@bob",true],"cleared":"018bcfe568010000@bob"}"#,
            2,
        ),
    ];
    for (id, doc, base, pending) in records {
        conn.execute(
            "INSERT INTO records (space, collection, id, doc, base, base_version, pending)
             VALUES ('user:alice', 'todos', ?1, ?2, ?3, 5, ?4)",
            rusqlite::params![id, doc, base, pending],
        )
        .unwrap();
    }
    let outbox = [
        (4, 3, "gone", r#"{"kind":"patch","fields":{"n":1}}"#, 1),
        (5, 4, "edited", r#"{"kind":"patch","fields":{"n":2}}"#, 2),
        (6, 5, "edited", r#"{"kind":"patch","fields":{"m":3}}"#, 3),
    ];
    for (seq, tx, id, op, hlc) in outbox {
        conn.execute(
            "INSERT INTO outbox (seq, tx, space, collection, id, op, hlc, base_version, created_at)
             VALUES (?1, ?2, 'user:alice', 'todos', ?3, ?4, ?5, 5, 1700000000100)",
            rusqlite::params![seq, tx, id, op, local_hlc(hlc)],
        )
        .unwrap();
    }
}

/// The base states the version 1 rows above describe, built with the merge rules.
fn expected_bases() -> Vec<(&'static str, RecordState)> {
    let mut live = RecordState::default();
    live.apply(
        &Op::Put {
            doc: doc(json!({"title": "t", "note": "x"})),
        },
        &bob(1),
    );
    live.apply(
        &Op::Patch {
            fields: doc(json!({"note": null})),
        },
        &bob(2),
    );
    let mut gone = RecordState::default();
    gone.apply(
        &Op::Put {
            doc: doc(json!({"title": "old"})),
        },
        &bob(1),
    );
    gone.apply(&Op::Delete, &bob(3));
    let mut edited = RecordState::default();
    edited.apply(
        &Op::Put {
            doc: doc(json!({"title": "server", "n": 1})),
        },
        &bob(1),
    );
    vec![("live", live), ("gone", gone), ("edited", edited)]
}

fn stored_base(path: &Path, id: &str) -> Option<String> {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row(
            "SELECT base FROM records WHERE space = 'user:alice' AND collection = 'todos' AND id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap()
}

fn user_version(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

fn view(store: &Store, id: &str) -> Option<(Value, bool)> {
    store
        .get(&key(id))
        .unwrap()
        .map(|r| (Value::Object(r.doc), r.pending))
}

#[test]
fn version_1_bases_are_converted_and_views_and_rebases_stay_right() {
    let db = TestDb::new();
    version_1_with_bases(&db);
    let mut store = db.open();
    drop(store);
    assert_eq!(user_version(&db.path), CURRENT_VERSION);
    // Every base is in the joined wire form now and describes the same state.
    for (id, state) in expected_bases() {
        let base = stored_base(&db.path, id).unwrap();
        assert!(base.starts_with(r#"{"doc":"#), "{id}: {base}");
        assert_eq!(wire::decode_joined(&base).unwrap(), state, "{id}");
    }
    let synced = wire::decode_joined(&stored_base(&db.path, "synced").unwrap()).unwrap();
    assert_eq!(
        synced.doc().map(Value::Object),
        Some(json!({"title": "from server"}))
    );
    assert_eq!(stored_base(&db.path, "local"), None);

    store = db.open();
    assert_eq!(view(&store, "live"), Some((json!({"title": "t"}), false)));
    assert_eq!(view(&store, "gone"), Some((json!({"n": 1}), true)));
    assert_eq!(
        view(&store, "edited"),
        Some((json!({"title": "server", "n": 2, "m": 3}), true))
    );

    // Rejections recompute the views from the converted bases.
    let reject = |seq| PushResult {
        seq,
        outcome: PushOutcome::Rejected {
            code: ErrorCode::RuleViolation,
            message: "no".into(),
        },
    };
    store
        .apply_push_response(&PushResponse {
            acked_through: 5,
            results: vec![reject(4), reject(5)],
        })
        .unwrap();
    assert_eq!(view(&store, "gone"), None, "deleted in the base");
    assert_eq!(
        view(&store, "edited"),
        Some((json!({"title": "server", "n": 1, "m": 3}), true)),
        "the converted base + seq 6"
    );

    // A later pull rebases the remaining mutation onto the new base.
    let mut server = FakeServer::new();
    server.version = 5;
    let (_, edited) = expected_bases().remove(2);
    server.records.insert(key("edited"), (edited, 5));
    server.apply(
        &key("edited"),
        &Op::Patch {
            fields: doc(json!({"title": "server 2", "n": 7})),
        },
        &bob(4),
    );
    store.apply_pull(&server.pull(5, 0)).unwrap();
    assert_eq!(
        view(&store, "edited"),
        Some((json!({"title": "server 2", "n": 7, "m": 3}), true))
    );
    assert_eq!(view(&store, "live"), Some((json!({"title": "t"}), false)));
    store.check_integrity().unwrap();
}

#[test]
fn an_unreadable_version_1_base_stops_the_upgrade_and_changes_nothing() {
    let db = TestDb::new();
    version_1_with_bases(&db);
    {
        let conn = rusqlite::Connection::open(&db.path).unwrap();
        conn.execute(
            "INSERT INTO records (space, collection, id, doc, base, base_version, pending)
             VALUES ('user:alice', 'todos', 'mangled', NULL, '{\"fields\":', 5, 0)",
            [],
        )
        .unwrap();
        // As the store leaves its files: in WAL mode, checkpointed on close.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }
    let before = file_bytes(&db.path);
    for _ in 0..2 {
        let err = Store::open(&db.path, StoreConfig::default()).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::BadStoredData {
                    what: "record base",
                    ..
                }
            ),
            "{err}"
        );
        let message = err.to_string();
        for part in [
            "user:alice/todos/mangled",
            "schema version 2",
            "changed nothing",
        ] {
            assert!(message.contains(part), "{message} lacks {part:?}");
        }
        assert_eq!(file_bytes(&db.path), before, "the file is unchanged");
        assert_eq!(user_version(&db.path), 1);
    }
    // The other bases are still in the version 1 format.
    assert!(stored_base(&db.path, "live")
        .unwrap()
        .starts_with(r#"{"fields":"#));
}
