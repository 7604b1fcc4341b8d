//! Every released schema version opens and migrates to the current one, keeping its data.
//!
//! `fixtures/schema_vN.sql` is a database as schema version N wrote it. When a migration is
//! added, add the fixture of the version it upgrades *from* (a dump of a real database of
//! that version) — the test below fails until every older version has one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{doc, key, TestDb};
use serde_json::{json, Value};
use tidesync_protocol::{ErrorCode, PushOutcome, PushResponse, PushResult};
use tidesync_store::restoration::{Lifetime, Value as RValue};
use tidesync_store::{MutationState, Store, StoreConfig, CURRENT_VERSION};

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
fn a_version_1_database_keeps_its_data_and_keeps_working() {
    let db = TestDb::new();
    rusqlite::Connection::open(&db.path)
        .unwrap()
        .execute_batch(&fixture(1))
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
    // Rejecting it recomputes the view from the stored v1 base.
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
