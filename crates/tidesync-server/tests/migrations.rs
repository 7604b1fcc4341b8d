//! Released schema versions open with the current code: a version 1 database (built from
//! `fixtures/schema_v1.sql`, records stored as `RecordState` JSON) is migrated to the wire
//! form, pulls hand out exactly what they handed out before, pushes keep merging onto the
//! migrated records, and a damaged row stops the migration without changing the file. A
//! version 3 database (`fixtures/schema_v3.sql`) gets the history horizon's columns, its
//! tombstones and rejections dated at the migration, so they are pruned only once that is
//! older than the retention.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use serde_json::json;
use tidesync_core::RecordState;
use tidesync_protocol::{
    Change, ClientId, CollectionName, Cursor, Doc, Hlc, Mutation, Op, PullResponse, RecordId,
    RecordKey, SpaceName, Stamp,
};
use tidesync_server::rules::RegisterVersions;
use tidesync_server::storage::sqlite::{SqliteStorage, APPLICATION_ID};
use tidesync_server::storage::{
    Prune, Pruned, PullInput, PushInput, PushOrigin, Storage, StorageError,
};
use tidesync_server::MergeRules;

const SCHEMA_V1: &str = include_str!("fixtures/schema_v1.sql");
const SCHEMA_V3: &str = include_str!("fixtures/schema_v3.sql");

fn doc(v: serde_json::Value) -> Doc {
    v.as_object().cloned().unwrap()
}

fn space() -> SpaceName {
    SpaceName::new("team:1").unwrap()
}

fn old_stamp(n: u16) -> Stamp {
    Stamp::new(Hlc::new(1_000, n).unwrap(), ClientId::new("old").unwrap())
}

/// A record as version 1 stored it: id, version, state, register versions.
struct V1Record {
    id: &'static str,
    version: u64,
    state: RecordState,
    versions: RegisterVersions,
}

/// A live record, a live record with a removed field, and a deleted one.
fn v1_records() -> Vec<V1Record> {
    let mut live = RecordState::default();
    live.apply(
        &Op::Put {
            doc: doc(json!({"title": "milk \"2%\"", "n": 1.5, "tags": ["a", {"b": null}]})),
        },
        &old_stamp(1),
    );
    let mut removed = RecordState::default();
    removed.apply(
        &Op::Put {
            doc: doc(json!({"a": 1, "b": 2})),
        },
        &old_stamp(2),
    );
    removed.apply(
        &Op::Patch {
            fields: doc(json!({"b": null})),
        },
        &old_stamp(3),
    );
    let mut deleted = RecordState::default();
    deleted.apply(
        &Op::Put {
            doc: doc(json!({"x": 1})),
        },
        &old_stamp(4),
    );
    deleted.apply(&Op::Delete, &old_stamp(5));
    let versions = |v: u64, fields: &[&str]| RegisterVersions {
        fields: fields.iter().map(|f| ((*f).to_owned(), v)).collect(),
        liveness: v,
        cleared: v,
    };
    vec![
        V1Record {
            id: "live",
            version: 1,
            state: live,
            versions: versions(1, &["n", "tags", "title"]),
        },
        V1Record {
            id: "removed",
            version: 2,
            state: removed,
            versions: versions(2, &["a", "b"]),
        },
        V1Record {
            id: "gone",
            version: 3,
            state: deleted,
            versions: versions(3, &[]),
        },
    ]
}

/// Writes a version 1 database at `path` as a version 1 server left it, plus `extra` rows
/// (id, state text) stored verbatim.
fn build_v1(path: &Path, extra: &[(&str, &str)]) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL").unwrap();
    conn.execute_batch(SCHEMA_V1).unwrap();
    conn.execute_batch(&format!(
        "PRAGMA user_version = 1; PRAGMA application_id = {APPLICATION_ID};"
    ))
    .unwrap();
    let records = v1_records();
    let mut insert = conn
        .prepare(
            "INSERT INTO records (space, collection, id, version, state, versions)
             VALUES ('team:1', 'todos', ?1, ?2, ?3, ?4)",
        )
        .unwrap();
    for r in &records {
        insert
            .execute(rusqlite::params![
                r.id,
                r.version as i64,
                serde_json::to_string(&r.state).unwrap(),
                serde_json::to_string(&r.versions).unwrap(),
            ])
            .unwrap();
    }
    for (i, (id, state)) in extra.iter().enumerate() {
        insert
            .execute(rusqlite::params![id, 4 + i as i64, state, "{}"])
            .unwrap();
    }
    drop(insert);
    let top = 3 + extra.len() as i64;
    conn.execute(
        "INSERT INTO spaces (space, version) VALUES ('team:1', ?1)",
        [top],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO clients (client_id, user_id, last_seq) VALUES ('old', 'alice', 5)",
        [],
    )
    .unwrap();
}

/// What version 1 handed out for its records: the state's wire form.
fn v1_changes() -> Vec<Change> {
    v1_records()
        .into_iter()
        .map(|r| {
            let (doc, stamps) = r.state.to_wire();
            Change {
                space: space(),
                collection: CollectionName::new("todos").unwrap(),
                id: RecordId::new(r.id).unwrap(),
                version: r.version,
                deleted: doc.is_none(),
                doc,
                stamps,
            }
        })
        .collect()
}

fn pull_input(client: &str) -> PullInput {
    PullInput {
        user: "alice".into(),
        client_id: ClientId::new(client).unwrap(),
        cursor: Cursor::new(),
        spaces: vec![space()],
        limit: 100,
        echoes: false,
        refetch: Vec::new(),
    }
}

fn schema_version(path: &Path) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn a_version_1_database_pulls_the_same_changes_after_migration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    build_v1(&path, &[]);

    let storage = SqliteStorage::open(&path, MergeRules::default()).unwrap();
    let pulled = storage.pull(pull_input("reader")).await.unwrap();
    let expected = PullResponse {
        changes: v1_changes(),
        echoes: Vec::new(),
        cursor: [(space(), 3)].into_iter().collect(),
        has_more: false,
        remaining: 0,
        acked_through: 0,
    };
    assert_eq!(pulled.parse().unwrap(), expected);
    assert_eq!(
        serde_json::to_string(&pulled).unwrap(),
        serde_json::to_string(&expected).unwrap(),
        "the same bytes on the wire"
    );
    assert_eq!(
        storage.pull(pull_input("old")).await.unwrap().acked_through,
        5
    );

    // Pushes merge onto migrated records: the removed field stays removed (its stamp is
    // newer than the put), a new field lands, the tombstone comes back to life.
    let hlc = Hlc::new(2_000, 0).unwrap();
    let mutations = vec![
        Mutation {
            seq: 6,
            tx: 6,
            key: RecordKey::parse("team:1", "todos", "removed").unwrap(),
            op: Op::Patch {
                fields: doc(json!({"c": 3})),
            },
            hlc,
            base_version: 2,
        },
        Mutation {
            seq: 7,
            tx: 7,
            key: RecordKey::parse("team:1", "todos", "gone").unwrap(),
            op: Op::Patch {
                fields: doc(json!({"y": 2})),
            },
            hlc: Hlc::new(2_000, 1).unwrap(),
            base_version: 3,
        },
    ];
    let pushed = storage
        .push(PushInput {
            user: "alice".into(),
            client_id: ClientId::new("old").unwrap(),
            mutations,
            recover_from: None,
            origin: PushOrigin::Client,
        })
        .await
        .unwrap();
    assert_eq!(pushed.acked_through, 7);
    let after = storage
        .pull(PullInput {
            cursor: [(space(), 3)].into_iter().collect(),
            ..pull_input("reader")
        })
        .await
        .unwrap()
        .parse()
        .unwrap();
    let docs: Vec<_> = after
        .changes
        .iter()
        .map(|c| (c.id.as_str().to_owned(), c.version, c.doc.clone()))
        .collect();
    assert_eq!(
        docs,
        vec![
            ("removed".to_owned(), 4, Some(doc(json!({"a": 1, "c": 3})))),
            ("gone".to_owned(), 5, Some(doc(json!({"y": 2})))),
        ]
    );
    assert!(after.changes[0].stamps.fields.contains_key("b"));
    storage.shutdown().await;
    drop(storage);
    assert_eq!(schema_version(&path), 4);

    // Reopening a migrated file migrates nothing and changes nothing.
    let storage = SqliteStorage::open(&path, MergeRules::default()).unwrap();
    let again = storage.pull(pull_input("reader")).await.unwrap();
    assert_eq!(again.changes.len(), 3);
    storage.shutdown().await;
}

#[tokio::test]
async fn a_damaged_state_stops_the_migration_and_leaves_the_file_as_it_was() {
    for damaged in ["{not json", r#"{"fields": 7}"#, "[1, 2]"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.db");
        build_v1(&path, &[("bad", damaged)]);
        let before = std::fs::read(&path).unwrap();

        let err = SqliteStorage::open(&path, MergeRules::default())
            .expect_err("a damaged state must not migrate")
            .to_string();
        assert!(err.contains("team:1/todos/bad"), "{err}");
        assert!(err.contains("schema version 2"), "{err}");
        assert!(err.contains("not changed"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");

        assert_eq!(std::fs::read(&path).unwrap(), before, "{damaged}");
        assert_eq!(schema_version(&path), 1);
        let conn = rusqlite::Connection::open(&path).unwrap();
        let states: i64 = conn
            .query_row("SELECT count(state) FROM records", [], |r| r.get(0))
            .unwrap();
        assert_eq!(states, 4);
    }
}

/// A version 3 database as a version 3 server left it: a live record, a tombstone, a client
/// and a remembered rejection.
fn build_v3(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL").unwrap();
    conn.execute_batch(SCHEMA_V3).unwrap();
    conn.execute_batch(&format!(
        "PRAGMA user_version = 3; PRAGMA application_id = {APPLICATION_ID};
         INSERT INTO spaces VALUES ('team:1', 2);
         INSERT INTO clients VALUES ('old', 'alice', 3);
         INSERT INTO records VALUES
             ('team:1', 1, 'todos', 'live', '{{\"n\":1}}', '{{}}', '{{}}', NULL),
             ('team:1', 2, 'todos', 'gone', NULL, '{{}}', '{{}}', NULL);
         INSERT INTO rejected VALUES ('old', 3, 'stale_base', 'no');"
    ))
    .unwrap();
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn a_version_3_database_is_dated_at_the_migration_and_then_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    build_v3(&path);
    let before = now_ms();
    let storage = SqliteStorage::open(&path, MergeRules::default()).unwrap();
    let after = now_ms();
    assert_eq!(schema_version(&path), 4);
    let read = |sql: &str| -> Option<i64> {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    };
    let dated = |v: Option<i64>| v.is_some_and(|t| (before..=after).contains(&(t as u64)));
    assert!(dated(read(
        "SELECT deleted_at FROM records WHERE id = 'gone'"
    )));
    assert_eq!(
        read("SELECT deleted_at FROM records WHERE id = 'live'"),
        None
    );
    assert!(dated(read("SELECT rejected_at FROM rejected")));
    assert_eq!(read("SELECT last_push_at FROM clients"), None);
    assert_eq!(read("SELECT horizon FROM spaces"), Some(0));

    // A pull hands out what it did before the migration.
    let pulled = storage.pull(pull_input("reader")).await.unwrap();
    let ids: Vec<_> = pulled
        .changes
        .iter()
        .map(|c| (c.id.as_str(), c.deleted))
        .collect();
    assert_eq!(ids, [("live", false), ("gone", true)]);

    // Nothing is older than the migration: nothing goes. Then both go and the horizon moves.
    let early = Prune {
        cutoff_ms: before - 1,
        rejections_cutoff_ms: before - 1,
        batch: 10,
    };
    assert_eq!(storage.prune(early).await.unwrap(), Pruned::default());
    let late = Prune {
        cutoff_ms: after,
        rejections_cutoff_ms: after,
        batch: 10,
    };
    assert_eq!(
        storage.prune(late).await.unwrap(),
        Pruned {
            tombstones: 1,
            rejections: 1
        }
    );
    assert_eq!(read("SELECT horizon FROM spaces"), Some(2));
    let behind = PullInput {
        cursor: [(space(), 1)].into_iter().collect(),
        ..pull_input("reader")
    };
    let err = storage.pull(behind).await.expect_err("behind the horizon");
    assert!(
        matches!(
            err,
            StorageError::CursorBehindHorizon {
                cursor: 1,
                horizon: 2,
                ..
            }
        ),
        "{err}"
    );

    // The old client's next push records its time.
    let pushed = storage
        .push(PushInput {
            user: "alice".into(),
            client_id: ClientId::new("old").unwrap(),
            mutations: vec![Mutation {
                seq: 4,
                tx: 4,
                key: RecordKey::parse("team:1", "todos", "new").unwrap(),
                op: Op::Put {
                    doc: doc(json!({"x": 1})),
                },
                hlc: Hlc::new(2_000, 0).unwrap(),
                base_version: 2,
            }],
            recover_from: None,
            origin: PushOrigin::Client,
        })
        .await
        .unwrap();
    assert_eq!(pushed.acked_through, 4);
    storage.shutdown().await;
    assert!(read("SELECT last_push_at FROM clients").is_some_and(|t| t as u64 >= after));
}
