//! The storage contract (storage/mod.rs), without HTTP, on every backend.
//!
//! Each contract test is written once, as `async fn name(backend: Backend)`, and
//! [`contract!`] makes two tests of it: `sqlite::name` (a fresh file in a temporary
//! directory) and `postgres::name` (a fresh schema in the database named by
//! `TIDESYNC_TEST_DATABASE_URL`; without it the test passes without running, and the test
//! binary says so once). What only SQLite has (its file, its synchronous engine) is tested
//! in [`sqlite_only`].
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tidesync_protocol::{
    ClientId, CollectionName, Cursor, Doc, ErrorCode, Hlc, Mutation, Op, PullResponse, PushOutcome,
    RecordKey, SpaceName, Winner,
};
use tidesync_server::auth::Grants;
use tidesync_server::storage::postgres::PostgresStorage;
use tidesync_server::storage::sqlite::SqliteStorage;
use tidesync_server::storage::{PullInput, PushInput, PushOrigin, Storage, StorageError};
use tidesync_server::{MergeRules, Policies, Policy, Schemas};
use tidesync_testkit::TestDatabase;

/// For each `async fn name(backend: Backend)` listed, `sqlite::name` and `postgres::name`.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await;
                }
            )*
        }
        // Multi-threaded: the schema is dropped, blocking, when the test ends; the pool's
        // connection tasks keep running on the workers meanwhile, so nothing they still
        // have to send (a ROLLBACK that releases locks) waits for the blocked thread.
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await;
                }
            )*
        }
    };
}

/// Which backend a contract test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A storage under test over a fresh database, which lives as long as this.
struct Server {
    storage: Arc<dyn Storage>,
    home: Home,
}

// Field order matters: the storage (for PostgreSQL, its pool) goes before its database.
enum Home {
    Sqlite {
        storage: Arc<SqliteStorage>,
        path: PathBuf,
        _dir: tempfile::TempDir,
    },
    Postgres {
        storage: Arc<PostgresStorage>,
        db: TestDatabase,
    },
}

impl Server {
    /// A fresh storage on `backend` with `rules`; `None` for PostgreSQL when no test
    /// database is configured.
    async fn open(backend: Backend, rules: MergeRules) -> Option<Server> {
        Some(match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("server.db");
                let storage = Arc::new(SqliteStorage::open(&path, rules).unwrap());
                Server {
                    storage: storage.clone(),
                    home: Home::Sqlite {
                        storage,
                        path,
                        _dir: dir,
                    },
                }
            }
            Backend::Postgres => {
                let db = TestDatabase::create("storage")?;
                let storage = Arc::new(PostgresStorage::connect(db.url(), rules).await.unwrap());
                Server {
                    storage: storage.clone(),
                    home: Home::Postgres { storage, db },
                }
            }
        })
    }

    /// Another storage over the same data, as after a restart of the server: the SQLite
    /// file opened again, or a new connection to the same PostgreSQL schema.
    async fn reopen(&self, rules: MergeRules) -> Box<dyn Storage> {
        match &self.home {
            Home::Sqlite { path, .. } => Box::new(SqliteStorage::open(path, rules).unwrap()),
            Home::Postgres { db, .. } => {
                Box::new(PostgresStorage::connect(db.url(), rules).await.unwrap())
            }
        }
    }

    async fn create_token(&self, grants: &Grants) -> String {
        match &self.home {
            Home::Sqlite { storage, .. } => storage.create_token(grants).unwrap(),
            Home::Postgres { storage, .. } => storage.create_token(grants).await.unwrap(),
        }
    }

    /// Whether `needle` appears anywhere in what the database stores: the SQLite file and
    /// its WAL, or every row of every table (as text, byte strings as hex).
    fn stores(&self, needle: &str) -> bool {
        match &self.home {
            Home::Sqlite { path, .. } => {
                let mut raw = std::fs::read(path).unwrap();
                raw.extend(std::fs::read(path.with_extension("db-wal")).unwrap_or_default());
                raw.windows(needle.len()).any(|w| w == needle.as_bytes())
            }
            Home::Postgres { db, .. } => {
                let hex: String = needle.bytes().map(|b| format!("{b:02x}")).collect();
                [
                    "ts_spaces",
                    "ts_clients",
                    "ts_records",
                    "ts_rejected",
                    "ts_tokens",
                ]
                .iter()
                .flat_map(|table| db.query(&format!("SELECT t::text FROM {table} t")))
                .flatten()
                .flatten()
                .any(|row| row.contains(needle) || row.contains(&hex))
            }
        }
    }

    /// Runs `sql` on the records table, below the storage (`{records}` names the table).
    fn tamper(&self, sql: &str) {
        match &self.home {
            Home::Sqlite { path, .. } => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.execute(&sql.replace("{records}", "records"), [])
                    .unwrap();
            }
            Home::Postgres { db, .. } => db.execute(&sql.replace("{records}", "ts_records")),
        }
    }
}

/// [`Server::open`] with the default rules.
async fn server(backend: Backend) -> Option<Server> {
    Server::open(backend, MergeRules::default()).await
}

fn doc(v: serde_json::Value) -> Doc {
    v.as_object().cloned().unwrap()
}

fn space() -> SpaceName {
    SpaceName::new("team:1").unwrap()
}

fn key(id: &str) -> RecordKey {
    RecordKey::parse("team:1", "todos", id).unwrap()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn m(seq: u64, tx: u64, id: &str, op: Op, base_version: u64) -> Mutation {
    Mutation {
        seq,
        tx,
        key: key(id),
        op,
        hlc: Hlc::new(now_ms(), seq as u16).unwrap(),
        base_version,
    }
}

fn put(v: serde_json::Value) -> Op {
    Op::Put { doc: doc(v) }
}

fn patch(v: serde_json::Value) -> Op {
    Op::Patch { fields: doc(v) }
}

/// `todos` under the `strict` policy, everything else `lww`.
fn strict_todos() -> MergeRules {
    MergeRules {
        policies: Policies {
            default: Policy::Lww,
            per_collection: [(CollectionName::new("todos").unwrap(), Policy::Strict)]
                .into_iter()
                .collect(),
        },
        ..MergeRules::default()
    }
}

async fn push(
    s: &dyn Storage,
    user: &str,
    client: &str,
    mutations: Vec<Mutation>,
) -> Result<tidesync_protocol::PushResponse, StorageError> {
    s.push(PushInput {
        user: user.into(),
        client_id: ClientId::new(client).unwrap(),
        mutations,
        recover_from: None,
        origin: PushOrigin::Client,
    })
    .await
}

async fn pull(s: &dyn Storage, client: &str, cursor: Cursor, limit: u32) -> PullResponse {
    s.pull(PullInput {
        user: "alice".into(),
        client_id: ClientId::new(client).unwrap(),
        cursor,
        spaces: vec![space()],
        limit,
        echoes: false,
        refetch: Vec::new(),
    })
    .await
    .unwrap()
    .parse()
    .unwrap()
}

async fn the_same_push_twice_is_applied_once(backend: Backend) {
    let Some(s) = server(backend).await else {
        return;
    };
    let batch = vec![
        m(1, 1, "a", put(json!({"n": 1})), 0),
        m(2, 2, "a", patch(json!({"n": 2})), 0),
    ];
    let first = push(&*s.storage, "alice", "c1", batch.clone())
        .await
        .unwrap();
    assert_eq!(first.acked_through, 2);
    assert_eq!(first.results.len(), 2);
    assert!(matches!(
        first.results[1].outcome,
        PushOutcome::Applied { version: 2 }
    ));
    // The response was lost; the client sends the same batch again.
    let again = push(&*s.storage, "alice", "c1", batch).await.unwrap();
    assert_eq!(again.acked_through, 2);
    assert!(
        again.results.is_empty(),
        "duplicates are skipped and acknowledged"
    );
    let page = pull(&*s.storage, "c1", Cursor::new(), 100).await;
    assert_eq!(page.cursor[&space()], 2, "two versions, not four");
    assert_eq!(page.changes[0].doc.as_ref().unwrap()["n"], json!(2));
    assert_eq!(page.acked_through, 2);
}

async fn a_push_that_overlaps_what_was_applied_applies_only_the_new_part(backend: Backend) {
    let Some(s) = server(backend).await else {
        return;
    };
    push(
        &*s.storage,
        "alice",
        "c1",
        vec![m(1, 1, "a", put(json!({"n": 1})), 0)],
    )
    .await
    .unwrap();
    let r = push(
        &*s.storage,
        "alice",
        "c1",
        vec![
            m(1, 1, "a", put(json!({"n": 1})), 0),
            m(2, 2, "b", put(json!({"n": 2})), 0),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.results.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2]);
    assert_eq!(r.acked_through, 2);
}

async fn a_gap_is_refused_and_changes_nothing(backend: Backend) {
    let Some(s) = server(backend).await else {
        return;
    };
    push(
        &*s.storage,
        "alice",
        "c1",
        vec![m(1, 1, "a", put(json!({})), 0)],
    )
    .await
    .unwrap();
    let err = push(
        &*s.storage,
        "alice",
        "c1",
        vec![m(3, 3, "b", put(json!({})), 0)],
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::SeqGap {
                last_seq: 1,
                first_seq: 3
            }
        ),
        "{err}"
    );
    let page = pull(&*s.storage, "c1", Cursor::new(), 100).await;
    assert_eq!(page.changes.len(), 1);
    assert_eq!(page.acked_through, 1);
}

async fn a_refused_mutation_rejects_its_whole_transaction_and_the_queue_moves_on(backend: Backend) {
    let Some(s) = Server::open(backend, strict_todos()).await else {
        return;
    };
    push(
        &*s.storage,
        "bob",
        "bob1",
        vec![m(1, 1, "a", put(json!({"n": 0})), 0)],
    )
    .await
    .unwrap();
    // alice's transaction: a fresh record (fine) and a stale edit of `a` (refused).
    let r = push(
        &*s.storage,
        "alice",
        "c1",
        vec![
            m(1, 1, "b", put(json!({"n": 1})), 0),
            m(2, 1, "a", patch(json!({"n": 9})), 0),
            m(3, 2, "c", put(json!({"n": 3})), 1),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.acked_through, 3, "last_seq advances past the rejection");
    let outcome = |seq: u64| {
        r.results
            .iter()
            .find(|x| x.seq == seq)
            .unwrap()
            .outcome
            .clone()
    };
    assert!(matches!(
        outcome(1),
        PushOutcome::Rejected {
            code: ErrorCode::TransactionAborted,
            ..
        }
    ));
    assert!(matches!(
        outcome(2),
        PushOutcome::Rejected {
            code: ErrorCode::StaleBase,
            ..
        }
    ));
    assert!(matches!(outcome(3), PushOutcome::Applied { version: 2 }));
    let page = pull(&*s.storage, "c1", Cursor::new(), 100).await;
    let ids: BTreeSet<String> = page.changes.iter().map(|c| c.id.to_string()).collect();
    assert_eq!(
        ids,
        ["a", "c"].into_iter().map(String::from).collect(),
        "b was rolled back"
    );
    assert_eq!(
        page.changes
            .iter()
            .find(|c| c.id.as_str() == "a")
            .unwrap()
            .doc
            .as_ref()
            .unwrap()["n"],
        json!(0)
    );
}

async fn concurrent_edits_report_conflicts_and_converge(backend: Backend) {
    let Some(s) = server(backend).await else {
        return;
    };
    push(
        &*s.storage,
        "alice",
        "c1",
        vec![m(1, 1, "a", put(json!({"title": "t", "done": false})), 0)],
    )
    .await
    .unwrap();
    push(
        &*s.storage,
        "bob",
        "c2",
        vec![m(1, 1, "a", patch(json!({"title": "bob"})), 1)],
    )
    .await
    .unwrap();
    let mut late = m(2, 2, "a", patch(json!({"title": "alice", "done": true})), 1);
    late.hlc = Hlc::new(now_ms() + 1000, 0).unwrap();
    let r = push(&*s.storage, "alice", "c1", vec![late]).await.unwrap();
    let PushOutcome::Merged { conflicts, .. } = &r.results[0].outcome else {
        panic!("{r:?}")
    };
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].field, "title");
    assert_eq!(conflicts[0].server, Some(json!("bob")));
    assert_eq!(conflicts[0].winner, Winner::Local);
    let page = pull(&*s.storage, "reader", Cursor::new(), 100).await;
    assert_eq!(
        page.changes[0].doc.clone().map(serde_json::Value::Object),
        Some(json!({"title": "alice", "done": true}))
    );
}

async fn a_clock_far_ahead_is_restamped_and_cannot_win_every_race(backend: Backend) {
    let Some(s) = Server::open(
        backend,
        MergeRules {
            max_clock_skew: Duration::from_secs(60),
            ..MergeRules::default()
        },
    )
    .await
    else {
        return;
    };
    let mut future = m(1, 1, "a", put(json!({"v": "from the future"})), 0);
    future.hlc = Hlc::new(now_ms() + 365 * 24 * 3600 * 1000, 0).unwrap();
    push(&*s.storage, "alice", "skewed", vec![future])
        .await
        .unwrap();
    let page = pull(&*s.storage, "skewed", Cursor::new(), 10).await;
    let stamp = page.changes[0].stamps.fields["v"].clone();
    assert!(
        stamp.hlc.millis() < now_ms() + 60_000,
        "re-stamped to server time: {stamp}"
    );
    // An honest later write wins.
    tokio::time::sleep(Duration::from_millis(5)).await;
    push(
        &*s.storage,
        "bob",
        "honest",
        vec![m(1, 1, "a", patch(json!({"v": "later"})), 1)],
    )
    .await
    .unwrap();
    let page = pull(&*s.storage, "reader", Cursor::new(), 10).await;
    assert_eq!(page.changes[0].doc.as_ref().unwrap()["v"], json!("later"));
}

async fn a_client_id_cannot_be_used_by_another_user(backend: Backend) {
    let Some(s) = server(backend).await else {
        return;
    };
    push(
        &*s.storage,
        "alice",
        "c1",
        vec![m(1, 1, "a", put(json!({})), 0)],
    )
    .await
    .unwrap();
    let err = push(
        &*s.storage,
        "mallory",
        "c1",
        vec![m(2, 2, "a", put(json!({})), 0)],
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StorageError::ForeignClient(_)), "{err}");
    let err = s
        .storage
        .pull(PullInput {
            user: "mallory".into(),
            client_id: ClientId::new("c1").unwrap(),
            cursor: Cursor::new(),
            spaces: vec![space()],
            limit: 10,
            echoes: false,
            refetch: Vec::new(),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::ForeignClient(_)), "{err}");
}

async fn pull_pages_hand_out_every_change_once_and_count_what_remains(backend: Backend) {
    let Some(s) = server(backend).await else {
        return;
    };
    let batch: Vec<_> = (1..=25)
        .map(|i| m(i, i, &format!("r{i}"), put(json!({"i": i})), 0))
        .collect();
    push(&*s.storage, "alice", "c1", batch).await.unwrap();
    let mut cursor = Cursor::new();
    let mut seen = Vec::new();
    let mut remaining_seen = Vec::new();
    loop {
        let page = pull(&*s.storage, "c2", cursor.clone(), 10).await;
        seen.extend(page.changes.iter().map(|c| c.version));
        remaining_seen.push(page.remaining);
        cursor = page.cursor;
        if !page.has_more {
            break;
        }
    }
    assert_eq!(seen, (1..=25).collect::<Vec<_>>());
    assert_eq!(remaining_seen, vec![15, 5, 0]);
    let empty = pull(&*s.storage, "c2", cursor.clone(), 10).await;
    assert!(empty.changes.is_empty());
    assert_eq!(empty.cursor, cursor);
}

async fn remaining_is_counted_near_the_end_and_estimated_from_the_page_before(backend: Backend) {
    let Some(s) = server(backend).await else {
        return;
    };
    let puts = |from: u64, to: u64, seq0: u64| -> Vec<Mutation> {
        (from..=to)
            .map(|i| {
                m(
                    seq0 + i,
                    seq0 + i,
                    &format!("r{i}"),
                    put(json!({"i": i})),
                    0,
                )
            })
            .collect()
    };
    push(&*s.storage, "alice", "c1", puts(1, 3000, 0))
        .await
        .unwrap();
    // Dense versions: the estimate is exact.
    let page = pull(&*s.storage, "c2", Cursor::new(), 1000).await;
    assert_eq!(page.remaining, 2000);
    // Records changed twice leave gaps: r1..r1000 move to versions 3001..4000.
    push(&*s.storage, "alice", "c1", puts(1, 1000, 3000))
        .await
        .unwrap();
    let first = pull(&*s.storage, "c2", Cursor::new(), 1000).await;
    assert_eq!(first.changes.first().map(|c| c.version), Some(1001));
    // 2000 wait; the estimate (from a page that skipped 1000 versions) stays within the
    // version distance and above zero.
    assert!((1..=2000).contains(&first.remaining), "{}", first.remaining);
    assert!(first.has_more);
    // Within EXACT_REMAINING of the end: counted.
    let second = pull(&*s.storage, "c2", first.cursor, 1000).await;
    assert_eq!(second.remaining, 1000);
    let third = pull(&*s.storage, "c2", second.cursor, 1000).await;
    assert_eq!(
        (third.changes.len(), third.remaining, third.has_more),
        (1000, 0, false)
    );
}

async fn a_cursor_from_the_future_must_rebootstrap(backend: Backend) {
    let Some(s) = server(backend).await else {
        return;
    };
    push(
        &*s.storage,
        "alice",
        "c1",
        vec![m(1, 1, "a", put(json!({})), 0)],
    )
    .await
    .unwrap();
    let err = s
        .storage
        .pull(PullInput {
            user: "alice".into(),
            client_id: ClientId::new("c1").unwrap(),
            cursor: [(space(), 99)].into_iter().collect(),
            spaces: vec![space()],
            limit: 10,
            echoes: false,
            refetch: Vec::new(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::CursorReset {
                cursor: 99,
                current: 1,
                ..
            }
        ),
        "{err}"
    );
}

async fn deletes_travel_as_tombstones(backend: Backend) {
    let Some(s) = server(backend).await else {
        return;
    };
    push(
        &*s.storage,
        "alice",
        "c1",
        vec![
            m(1, 1, "a", put(json!({"x": 1})), 0),
            m(2, 2, "a", Op::Delete, 1),
        ],
    )
    .await
    .unwrap();
    let page = pull(&*s.storage, "c9", Cursor::new(), 10).await;
    assert_eq!(page.changes.len(), 1);
    assert!(page.changes[0].deleted);
    assert_eq!(page.changes[0].doc, None);
    assert!(page.changes[0].stamps.liveness.is_some());
}

async fn many_clients_pushing_at_once_are_each_applied_exactly_once_in_order(backend: Backend) {
    let Some(s) = server(backend).await else {
        return;
    };
    let s = Arc::new(s);
    let mut tasks = Vec::new();
    for c in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..10u64 {
                let batch: Vec<_> = (1..=20u64)
                    .map(|i| {
                        let seq = round * 20 + i;
                        m(
                            seq,
                            seq,
                            &format!("c{c}-r{}", i % 5),
                            patch(json!({"last": seq})),
                            0,
                        )
                    })
                    .collect();
                let r = push(&*s.storage, "alice", &format!("client{c}"), batch)
                    .await
                    .unwrap();
                assert_eq!(r.acked_through, (round + 1) * 20);
                assert_eq!(r.results.len(), 20);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let page = pull(&*s.storage, "reader", Cursor::new(), 10_000).await;
    assert_eq!(
        page.cursor[&space()],
        8 * 200,
        "one version per mutation, none lost or doubled"
    );
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for c in &page.changes {
        last.insert(
            c.id.to_string(),
            c.doc.as_ref().unwrap()["last"].as_i64().unwrap(),
        );
    }
    for c in 0..8 {
        assert_eq!(
            last[&format!("c{c}-r0")],
            200,
            "per-client order: the last write wins"
        );
    }
}

async fn state_survives_a_restart_and_shutdown_refuses_new_pushes(backend: Backend) {
    let Some(s) = server(backend).await else {
        return;
    };
    push(
        &*s.storage,
        "alice",
        "c1",
        vec![m(1, 1, "a", put(json!({"n": 1})), 0)],
    )
    .await
    .unwrap();
    s.storage.shutdown().await;
    let err = push(
        &*s.storage,
        "alice",
        "c1",
        vec![m(2, 2, "a", put(json!({})), 0)],
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StorageError::Unavailable(_)), "{err}");
    assert!(s.storage.health().await.is_err());
    let reopened = s.reopen(MergeRules::default()).await;
    let dup = push(
        &*reopened,
        "alice",
        "c1",
        vec![m(1, 1, "a", put(json!({"n": 1})), 0)],
    )
    .await
    .unwrap();
    assert!(dup.results.is_empty(), "last_seq survived the restart");
    let r = push(
        &*reopened,
        "alice",
        "c1",
        vec![m(2, 2, "a", patch(json!({"n": 2})), 1)],
    )
    .await
    .unwrap();
    assert!(matches!(
        r.results[0].outcome,
        PushOutcome::Applied { version: 2 }
    ));
}

async fn pokes_announce_each_moved_space_after_commit(backend: Backend) {
    let Some(s) = server(backend).await else {
        return;
    };
    let mut pokes = s.storage.subscribe();
    push(
        &*s.storage,
        "alice",
        "c1",
        vec![
            m(1, 1, "a", put(json!({})), 0),
            m(2, 1, "b", put(json!({})), 0),
        ],
    )
    .await
    .unwrap();
    let poke = tokio::time::timeout(Duration::from_secs(5), pokes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(poke.space, space());
    assert_eq!(poke.version, 2);
    assert_eq!(
        s.storage
            .space_versions(&[space(), SpaceName::new("empty").unwrap()])
            .await
            .unwrap(),
        vec![2, 0]
    );
}

async fn tokens_are_stored_hashed_and_map_to_their_grants(backend: Backend) {
    use tidesync_server::auth::{Grants, TokenHash};
    let Some(s) = server(backend).await else {
        return;
    };
    let grants = Grants {
        user: "alice".into(),
        read: BTreeSet::new(),
        write: [space()].into_iter().collect(),
    };
    let token = s.create_token(&grants).await;
    assert!(token.starts_with("tsk_"));
    assert_eq!(
        s.storage.authenticate(TokenHash::of(&token)).await.unwrap(),
        Some(grants)
    );
    assert_eq!(
        s.storage
            .authenticate(TokenHash::of("tsk_forged"))
            .await
            .unwrap(),
        None
    );
    assert!(!s.stores(&token), "the plaintext token is never stored");
}

async fn a_retried_push_gets_its_rejections_again_not_a_bare_acknowledgement(backend: Backend) {
    let Some(s) = Server::open(backend, strict_todos()).await else {
        return;
    };
    push(
        &*s.storage,
        "bob",
        "bob1",
        vec![m(1, 1, "a", put(json!({"n": 0})), 0)],
    )
    .await
    .unwrap();
    let batch = vec![
        m(1, 1, "a", patch(json!({"n": 9})), 0), // stale: rejected
        m(2, 2, "b", put(json!({"n": 1})), 1),   // fine
    ];
    let first = push(&*s.storage, "alice", "c1", batch.clone())
        .await
        .unwrap();
    assert!(matches!(
        first.results[0].outcome,
        PushOutcome::Rejected {
            code: ErrorCode::StaleBase,
            ..
        }
    ));
    // The answer was lost; the client sends the same batch again.
    let again = push(&*s.storage, "alice", "c1", batch).await.unwrap();
    assert_eq!(again.acked_through, 2);
    assert_eq!(
        again.results.len(),
        1,
        "only the rejection is repeated: {again:?}"
    );
    assert_eq!(again.results[0].seq, 1);
    assert!(matches!(
        again.results[0].outcome,
        PushOutcome::Rejected {
            code: ErrorCode::StaleBase,
            ..
        }
    ));
}

async fn a_stored_document_or_stamps_that_is_not_json_is_an_internal_error_naming_the_record(
    backend: Backend,
) {
    for column in ["doc", "stamps"] {
        let Some(s) = server(backend).await else {
            return;
        };
        push(
            &*s.storage,
            "alice",
            "c1",
            vec![
                m(1, 1, "ok", put(json!({"n": 1})), 0),
                m(2, 2, "bad", put(json!({"n": 2})), 0),
            ],
        )
        .await
        .unwrap();
        s.tamper(&format!(
            "UPDATE {{records}} SET {column} = '{{\"n\": 2' WHERE id = 'bad'"
        ));
        let input = PullInput {
            user: "alice".into(),
            client_id: ClientId::new("c2").unwrap(),
            cursor: Cursor::new(),
            spaces: vec![space()],
            limit: 10,
            echoes: false,
            refetch: Vec::new(),
        };
        let err = s.storage.pull(input.clone()).await.unwrap_err();
        assert!(matches!(err, StorageError::Internal(_)), "{err}");
        assert!(err.to_string().contains("team:1/todos/bad"), "{err}");
        // The page before the damaged record is still served.
        let page = s
            .storage
            .pull(PullInput { limit: 1, ..input })
            .await
            .unwrap();
        assert_eq!(page.changes.len(), 1);
        // A push onto the damaged record is refused without touching it.
        let err = push(
            &*s.storage,
            "alice",
            "c1",
            vec![m(3, 3, "bad", patch(json!({"n": 3})), 2)],
        )
        .await
        .unwrap_err();
        assert!(matches!(err, StorageError::Internal(_)), "{err}");
        assert!(err.to_string().contains("team:1/todos/bad"), "{err}");
    }
}

/// Under every policy, a base above the space's version (0 would be stale; 1000, 2^63 and
/// u64::MAX are from a server state this one never had) is refused with its own code, and
/// the queue keeps flowing.
async fn a_base_from_the_future_is_refused_under_every_policy(backend: Backend) {
    for policy in [Policy::Strict, Policy::Lww, Policy::ServerWins] {
        let rules = MergeRules {
            policies: Policies {
                default: policy,
                per_collection: Default::default(),
            },
            ..MergeRules::default()
        };
        let Some(s) = Server::open(backend, rules).await else {
            return;
        };
        // The space is at version 2; another client changed "a" at version 2.
        push(
            &*s.storage,
            "alice",
            "c1",
            vec![m(1, 1, "a", put(json!({"n": 1})), 0)],
        )
        .await
        .unwrap();
        push(
            &*s.storage,
            "alice",
            "c2",
            vec![m(1, 1, "a", put(json!({"n": 2})), 1)],
        )
        .await
        .unwrap();
        let bases = [1000, 1 << 63, u64::MAX];
        let mut batch: Vec<Mutation> = bases
            .iter()
            .enumerate()
            .map(|(i, base)| m(2 + i as u64, 2 + i as u64, "a", put(json!({"n": 9})), *base))
            .collect();
        batch.push(m(5, 5, "b", put(json!({"n": 5})), 0));
        let r = push(&*s.storage, "alice", "c1", batch).await.unwrap();
        assert_eq!(r.acked_through, 5, "{policy:?}");
        for result in &r.results[..3] {
            match &result.outcome {
                PushOutcome::Rejected { code, message } => {
                    assert_eq!(*code, ErrorCode::BaseAhead, "{policy:?}");
                    assert!(message.contains("above the space's version 2"), "{message}");
                }
                other => panic!("{policy:?}: seq {} was {other:?}", result.seq),
            }
        }
        assert!(
            matches!(r.results[3].outcome, PushOutcome::Applied { version: 3 }),
            "{policy:?}: the queue keeps flowing: {:?}",
            r.results[3]
        );
        let page = pull(&*s.storage, "c3", Cursor::new(), 100).await;
        let a = page.changes.iter().find(|c| c.id.as_str() == "a").unwrap();
        assert_eq!(
            a.doc.as_ref().unwrap()["n"],
            json!(2),
            "{policy:?}: a is c2's"
        );
    }
}

/// A client that learned from `seq_gap` where the server stands (a server restored from an
/// older backup) pushes what it still holds with seqs missing after `last_seq`; a base from
/// the lost history counts as the space's version. A stale `recover_from` is an ordinary
/// push (the gap refused); a retried recovery push is answered as duplicates.
async fn a_recovery_push_may_skip_seqs_the_client_no_longer_holds(backend: Backend) {
    let Some(s) = Server::open(backend, strict_todos()).await else {
        return;
    };
    push(
        &*s.storage,
        "alice",
        "c1",
        vec![m(1, 1, "a", put(json!({"n": 1})), 0)],
    )
    .await
    .unwrap();
    let recovery = |from: u64, mutations: Vec<Mutation>| PushInput {
        user: "alice".into(),
        client_id: ClientId::new("c1").unwrap(),
        mutations,
        recover_from: Some(from),
        origin: PushOrigin::Client,
    };
    // Held: seq 5 (a put on "a" made on version 7 of the lost history) and seq 8.
    let held = vec![
        m(5, 5, "a", put(json!({"n": 5})), 7),
        m(8, 8, "b", put(json!({"n": 8})), 0),
    ];
    let stale = s.storage.push(recovery(3, held.clone())).await.unwrap_err();
    assert!(
        matches!(
            stale,
            StorageError::SeqGap {
                last_seq: 1,
                first_seq: 5
            }
        ),
        "{stale:?}"
    );
    let r = s.storage.push(recovery(1, held.clone())).await.unwrap();
    assert_eq!(r.acked_through, 8);
    assert!(
        r.results
            .iter()
            .all(|x| matches!(x.outcome, PushOutcome::Applied { .. })),
        "strict accepts the base from the lost history as current: {:?}",
        r.results
    );
    // Its answer lost, the same recovery push again: duplicates, nothing applied twice.
    let again = s.storage.push(recovery(1, held)).await.unwrap();
    assert_eq!((again.acked_through, again.results.len()), (8, 0));
    // Then ordinary pushes continue after 8.
    let next = push(
        &*s.storage,
        "alice",
        "c1",
        vec![m(9, 9, "c", put(json!({"n": 9})), 0)],
    )
    .await
    .unwrap();
    assert_eq!(next.acked_through, 9);
    let page = pull(&*s.storage, "c2", Cursor::new(), 100).await;
    let ids: Vec<&str> = page.changes.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert_eq!(page.changes[0].doc.as_ref().unwrap()["n"], json!(5));
}

/// A pull as `client` from `cursor`, asking for echoes and for `refetch` in full.
async fn pull_echoes(
    s: &dyn Storage,
    client: &str,
    cursor: Cursor,
    refetch: Vec<RecordKey>,
) -> PullResponse {
    s.pull(PullInput {
        user: "alice".into(),
        client_id: ClientId::new(client).unwrap(),
        cursor,
        spaces: vec![space()],
        limit: 100,
        echoes: true,
        refetch,
    })
    .await
    .unwrap()
    .parse()
    .unwrap()
}

fn at(version: u64) -> Cursor {
    [(space(), version)].into_iter().collect()
}

async fn a_writer_gets_its_own_writes_back_as_echoes_and_everyone_else_in_full(backend: Backend) {
    let Some(s) = server(backend).await else {
        return;
    };
    let st = &*s.storage;
    push(
        st,
        "alice",
        "c1",
        vec![
            m(1, 1, "a", put(json!({"n": 1})), 0),
            m(2, 2, "b", put(json!({"n": 1})), 0),
            m(3, 3, "a", patch(json!({"m": 2})), 0),
        ],
    )
    .await
    .unwrap();
    let own = pull_echoes(st, "c1", Cursor::new(), Vec::new()).await;
    assert!(own.changes.is_empty(), "{:?}", own.changes);
    let echoes: Vec<(&str, u64, u64, u64, u64, u64)> = own
        .echoes
        .iter()
        .map(|e| {
            (
                e.id.as_str(),
                e.version,
                e.from,
                e.first_seq,
                e.last_seq,
                e.count,
            )
        })
        .collect();
    assert_eq!(echoes, [("b", 2, 0, 2, 2, 1), ("a", 3, 0, 1, 3, 2)]);
    assert_eq!((own.cursor[&space()], own.acked_through), (3, 3));
    // A protocol-1 pull of the writer, and anyone else's, gets documents.
    assert_eq!(pull(st, "c1", Cursor::new(), 100).await.changes.len(), 2);
    let other = pull_echoes(st, "c2", Cursor::new(), Vec::new()).await;
    assert_eq!((other.changes.len(), other.echoes.len()), (2, 0));

    // c2 writes `a` having seen it: the chain is c2's now, from version 3.
    push(
        st,
        "alice",
        "c2",
        vec![m(1, 1, "a", patch(json!({"n": 5})), 3)],
    )
    .await
    .unwrap();
    let page = pull_echoes(st, "c1", at(3), Vec::new()).await;
    assert_eq!(page.changes.len(), 1, "c1 gets c2's write in full");
    assert_eq!(page.changes[0].doc.as_ref().unwrap()["n"], json!(5));
    let page = pull_echoes(st, "c2", at(3), Vec::new()).await;
    assert_eq!(
        (
            page.echoes[0].from,
            page.echoes[0].first_seq,
            page.echoes[0].count
        ),
        (3, 1, 1)
    );

    // c1 writes `a` on a base that predates c2's write: only the server has that state.
    push(
        st,
        "alice",
        "c1",
        vec![m(4, 4, "a", patch(json!({"m": 3})), 3)],
    )
    .await
    .unwrap();
    let page = pull_echoes(st, "c1", at(4), Vec::new()).await;
    assert_eq!((page.changes.len(), page.echoes.len()), (1, 0));
    assert_eq!(page.changes[0].doc.as_ref().unwrap()["n"], json!(5));
}

async fn a_restamped_write_goes_back_to_its_writer_in_full(backend: Backend) {
    let Some(s) = Server::open(
        backend,
        MergeRules {
            max_clock_skew: Duration::from_secs(60),
            ..MergeRules::default()
        },
    )
    .await
    else {
        return;
    };
    let mut future = m(1, 1, "a", put(json!({"v": 1})), 0);
    future.hlc = Hlc::new(now_ms() + 365 * 24 * 3600 * 1000, 0).unwrap();
    push(&*s.storage, "alice", "skewed", vec![future])
        .await
        .unwrap();
    let page = pull_echoes(&*s.storage, "skewed", Cursor::new(), Vec::new()).await;
    assert_eq!(
        (page.changes.len(), page.echoes.len()),
        (1, 0),
        "the client cannot rebuild a stamp it did not give"
    );
}

async fn refetch_sends_the_named_records_in_full_whatever_the_cursor(backend: Backend) {
    let Some(s) = server(backend).await else {
        return;
    };
    let st = &*s.storage;
    push(
        st,
        "alice",
        "c1",
        vec![
            m(1, 1, "a", put(json!({"n": 1})), 0),
            m(2, 2, "b", put(json!({"n": 2})), 0),
        ],
    )
    .await
    .unwrap();
    let page = pull_echoes(st, "c1", at(2), vec![key("a"), key("never-written")]).await;
    let ids: Vec<&str> = page.changes.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        ["a"],
        "the record asked for, in full, and nothing else"
    );
    assert!(page.echoes.is_empty());
    assert_eq!(page.changes[0].version, 1);
    assert!(!page.has_more);
}

async fn a_chain_left_behind_by_a_write_outside_its_rules_is_not_echoed(backend: Backend) {
    let Some(s) = server(backend).await else {
        return;
    };
    let st = &*s.storage;
    push(
        st,
        "alice",
        "c1",
        vec![m(1, 1, "a", put(json!({"n": 1})), 0)],
    )
    .await
    .unwrap();
    // What a node of the previous version does when it rewrites the record: new version
    // and document, the echo column untouched.
    s.tamper(r#"UPDATE {records} SET version = 2, doc = '{"n":9}' WHERE id = 'a'"#);
    let page = pull_echoes(st, "c1", Cursor::new(), Vec::new()).await;
    assert!(page.echoes.is_empty(), "{:?}", page.echoes);
    assert_eq!(page.changes[0].doc.as_ref().unwrap()["n"], json!(9));
}

/// `todos` must have a non-empty string `title` and may have a boolean `done`; other
/// collections have no schema.
fn todo_schema() -> MergeRules {
    let mut schemas = Schemas::new();
    schemas
        .insert(
            CollectionName::new("todos").unwrap(),
            &json!({
                "type": "object",
                "required": ["title"],
                "properties": {
                    "title": {"type": "string", "minLength": 1},
                    "done": {"type": "boolean"}
                }
            }),
        )
        .unwrap();
    MergeRules {
        schemas,
        ..MergeRules::default()
    }
}

/// The outcome of `seq` in `r`.
fn outcome_of(r: &tidesync_protocol::PushResponse, seq: u64) -> PushOutcome {
    r.results
        .iter()
        .find(|x| x.seq == seq)
        .unwrap_or_else(|| panic!("no result for seq {seq}: {r:?}"))
        .outcome
        .clone()
}

/// The rejection of `seq` in `r`, as (code, message).
fn rejection_of(r: &tidesync_protocol::PushResponse, seq: u64) -> (ErrorCode, String) {
    match outcome_of(r, seq) {
        PushOutcome::Rejected { code, message } => (code, message),
        other => panic!("seq {seq} was not rejected: {other:?}"),
    }
}

/// The documents a fresh pull sees, by id (`None`: a tombstone).
async fn docs(s: &dyn Storage) -> BTreeMap<String, Option<Doc>> {
    pull(s, "reader", Cursor::new(), 1_000)
        .await
        .changes
        .into_iter()
        .map(|c| (c.id.to_string(), c.doc))
        .collect()
}

async fn a_put_or_patch_that_leaves_a_record_off_its_schema_is_rejected_and_the_queue_moves_on(
    backend: Backend,
) {
    let Some(s) = Server::open(backend, todo_schema()).await else {
        return;
    };
    let r = push(
        &*s.storage,
        "alice",
        "c1",
        vec![
            m(1, 1, "a", put(json!({"title": "milk"})), 0),
            m(2, 2, "b", put(json!({"title": ""})), 0),
            // A patch whose fields are fine alone but leave `a` without a title.
            m(3, 3, "a", patch(json!({"title": null})), 1),
            m(4, 4, "a", patch(json!({"done": "yes"})), 1),
            m(5, 5, "a", patch(json!({"done": true})), 1),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.acked_through, 5, "last_seq advances past the rejections");
    assert!(matches!(
        outcome_of(&r, 1),
        PushOutcome::Applied { version: 1 }
    ));
    assert_eq!(
        rejection_of(&r, 2),
        (
            ErrorCode::SchemaViolation,
            "the record does not match the schema of collection todos: \
             /title: \"\" is shorter than 1 character"
                .to_owned()
        )
    );
    let (code, message) = rejection_of(&r, 3);
    assert_eq!(code, ErrorCode::SchemaViolation);
    assert!(
        message.ends_with("(root): \"title\" is a required property"),
        "{message}"
    );
    let (code, message) = rejection_of(&r, 4);
    assert_eq!(code, ErrorCode::SchemaViolation);
    assert!(
        message.ends_with("/done: \"yes\" is not of type \"boolean\""),
        "{message}"
    );
    assert!(matches!(
        outcome_of(&r, 5),
        PushOutcome::Applied { version: 2 }
    ));
    assert_eq!(
        docs(&*s.storage).await,
        [(
            "a".to_owned(),
            Some(doc(json!({"title": "milk", "done": true})))
        )]
        .into_iter()
        .collect(),
        "nothing rejected left a trace"
    );
}

async fn only_the_transaction_that_breaks_a_schema_is_rejected_and_its_result_is_what_counts(
    backend: Backend,
) {
    let Some(s) = Server::open(backend, todo_schema()).await else {
        return;
    };
    let notes = |id: &str, op: Op, seq: u64, tx: u64| Mutation {
        key: RecordKey::parse("team:1", "notes", id).unwrap(),
        ..m(seq, tx, id, op, 0)
    };
    let r = push(
        &*s.storage,
        "alice",
        "c1",
        vec![
            // One transaction, one record off its schema: all of it is rejected.
            m(1, 1, "a", put(json!({"title": "fine"})), 0),
            m(2, 1, "b", put(json!({"title": 7})), 0),
            // Its neighbours land.
            m(3, 2, "c", put(json!({"title": "fine"})), 0),
            // A record off its schema on the way, right when the transaction ends: lands.
            m(4, 3, "d", put(json!({})), 0),
            m(5, 3, "d", patch(json!({"title": "later"})), 0),
            // Right on the way, off at the end: rejected, blamed on the last write.
            m(6, 4, "e", put(json!({"title": "x"})), 0),
            m(7, 4, "e", patch(json!({"done": 0})), 0),
            // A collection without a schema takes anything.
            notes("n", put(json!({"title": ""})), 8, 5),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.acked_through, 8);
    let (code, message) = rejection_of(&r, 1);
    assert_eq!(code, ErrorCode::TransactionAborted);
    assert!(message.contains("schema_violation"), "{message}");
    let (code, message) = rejection_of(&r, 2);
    assert_eq!(code, ErrorCode::SchemaViolation);
    assert!(
        message.ends_with("/title: 7 is not of type \"string\""),
        "{message}"
    );
    assert!(matches!(outcome_of(&r, 3), PushOutcome::Applied { .. }));
    assert!(matches!(outcome_of(&r, 4), PushOutcome::Applied { .. }));
    assert!(matches!(outcome_of(&r, 5), PushOutcome::Applied { .. }));
    assert_eq!(rejection_of(&r, 6).0, ErrorCode::TransactionAborted);
    let (code, message) = rejection_of(&r, 7);
    assert_eq!(code, ErrorCode::SchemaViolation);
    assert!(
        message.ends_with("/done: 0 is not of type \"boolean\""),
        "{message}"
    );
    assert!(matches!(outcome_of(&r, 8), PushOutcome::Applied { .. }));
    let ids: Vec<String> = docs(&*s.storage).await.into_keys().collect();
    assert_eq!(ids, ["c", "d", "n"]);
}

async fn a_retried_push_gets_its_schema_violation_again(backend: Backend) {
    let Some(s) = Server::open(backend, todo_schema()).await else {
        return;
    };
    let batch = vec![
        m(1, 1, "a", put(json!({"title": ""})), 0),
        m(2, 2, "b", put(json!({"title": "ok"})), 0),
    ];
    let first = push(&*s.storage, "alice", "c1", batch.clone())
        .await
        .unwrap();
    let rejected = rejection_of(&first, 1);
    assert_eq!(rejected.0, ErrorCode::SchemaViolation);
    // The answer was lost; the client sends the same batch again, and later a restarted
    // server gets it once more.
    let again = push(&*s.storage, "alice", "c1", batch.clone())
        .await
        .unwrap();
    assert_eq!(again.acked_through, 2);
    assert_eq!(
        again.results.len(),
        1,
        "only the rejection is repeated: {again:?}"
    );
    assert_eq!(rejection_of(&again, 1), rejected);
    let restarted = s.reopen(todo_schema()).await;
    let third = push(&*restarted, "alice", "c1", batch).await.unwrap();
    assert_eq!(rejection_of(&third, 1), rejected);
    assert_eq!(docs(&*restarted).await.len(), 1);
}

async fn a_record_stored_before_its_schema_may_be_deleted_or_fixed_but_not_kept_off_it(
    backend: Backend,
) {
    let Some(s) = server(backend).await else {
        return;
    };
    push(
        &*s.storage,
        "alice",
        "c1",
        vec![
            m(1, 1, "a", put(json!({"n": 1})), 0),
            m(2, 2, "b", put(json!({"n": 2})), 0),
        ],
    )
    .await
    .unwrap();
    // The operator adds a schema those records do not match.
    let with_schema = s.reopen(todo_schema()).await;
    let r = push(
        &*with_schema,
        "alice",
        "c1",
        vec![
            m(3, 3, "a", patch(json!({"n": 3})), 2),
            m(4, 4, "a", Op::Delete, 2),
            m(5, 5, "b", patch(json!({"title": "fixed"})), 2),
        ],
    )
    .await
    .unwrap();
    assert_eq!(rejection_of(&r, 3).0, ErrorCode::SchemaViolation);
    assert!(
        matches!(outcome_of(&r, 4), PushOutcome::Applied { .. }),
        "deletes always pass"
    );
    assert!(matches!(outcome_of(&r, 5), PushOutcome::Applied { .. }));
    assert_eq!(
        docs(&*with_schema).await,
        [
            ("a".to_owned(), None),
            ("b".to_owned(), Some(doc(json!({"n": 2, "title": "fixed"})))),
        ]
        .into_iter()
        .collect()
    );
}

contract! {
    a_put_or_patch_that_leaves_a_record_off_its_schema_is_rejected_and_the_queue_moves_on,
    only_the_transaction_that_breaks_a_schema_is_rejected_and_its_result_is_what_counts,
    a_retried_push_gets_its_schema_violation_again,
    a_record_stored_before_its_schema_may_be_deleted_or_fixed_but_not_kept_off_it,
    a_base_from_the_future_is_refused_under_every_policy,
    a_recovery_push_may_skip_seqs_the_client_no_longer_holds,
    the_same_push_twice_is_applied_once,
    a_push_that_overlaps_what_was_applied_applies_only_the_new_part,
    a_gap_is_refused_and_changes_nothing,
    a_refused_mutation_rejects_its_whole_transaction_and_the_queue_moves_on,
    concurrent_edits_report_conflicts_and_converge,
    a_clock_far_ahead_is_restamped_and_cannot_win_every_race,
    a_client_id_cannot_be_used_by_another_user,
    pull_pages_hand_out_every_change_once_and_count_what_remains,
    remaining_is_counted_near_the_end_and_estimated_from_the_page_before,
    a_cursor_from_the_future_must_rebootstrap,
    deletes_travel_as_tombstones,
    many_clients_pushing_at_once_are_each_applied_exactly_once_in_order,
    state_survives_a_restart_and_shutdown_refuses_new_pushes,
    pokes_announce_each_moved_space_after_commit,
    tokens_are_stored_hashed_and_map_to_their_grants,
    a_retried_push_gets_its_rejections_again_not_a_bare_acknowledgement,
    a_stored_document_or_stamps_that_is_not_json_is_an_internal_error_naming_the_record,
    a_writer_gets_its_own_writes_back_as_echoes_and_everyone_else_in_full,
    a_restamped_write_goes_back_to_its_writer_in_full,
    refetch_sends_the_named_records_in_full_whatever_the_cursor,
    a_chain_left_behind_by_a_write_outside_its_rules_is_not_echoed,
}

/// What only the SQLite backend has: its file and its synchronous engine.
mod sqlite_only {
    use super::*;

    #[test]
    fn a_file_that_is_not_a_database_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.db");
        std::fs::write(&path, b"not a database at all, just text").unwrap();
        let err = SqliteStorage::open(&path, MergeRules::default()).unwrap_err();
        assert!(err.to_string().contains("not an SQLite database"), "{err}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"not a database at all, just text"
        );
    }

    #[test]
    fn the_synchronous_engine_runs_the_same_logic_and_survives_a_restart() {
        use tidesync_server::storage::sqlite::SyncEngine;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engine.db");
        let input = |mutations| PushInput {
            user: "alice".into(),
            client_id: ClientId::new("c1").unwrap(),
            mutations,
            recover_from: None,
            origin: PushOrigin::Client,
        };
        let mut engine = SyncEngine::open(&path, MergeRules::default()).unwrap();
        let (r, pokes) = engine
            .push(
                &input(vec![m(1, 1, "a", put(json!({"n": 1})), 0)]),
                now_ms(),
            )
            .unwrap();
        assert_eq!(r.acked_through, 1);
        assert_eq!(pokes.len(), 1);
        drop(engine); // the server "crashes"
        let mut engine = SyncEngine::open(&path, MergeRules::default()).unwrap();
        let (dup, pokes) = engine
            .push(
                &input(vec![m(1, 1, "a", put(json!({"n": 1})), 0)]),
                now_ms(),
            )
            .unwrap();
        assert!(
            dup.results.is_empty() && pokes.is_empty(),
            "exactly-once across the restart"
        );
        let err = engine
            .push(&input(vec![m(5, 5, "a", put(json!({})), 0)]), now_ms())
            .unwrap_err();
        assert!(matches!(err, StorageError::SeqGap { .. }));
        let page = engine
            .pull(&PullInput {
                user: "alice".into(),
                client_id: ClientId::new("c1").unwrap(),
                cursor: Cursor::new(),
                spaces: vec![space()],
                limit: 10,
                echoes: false,
                refetch: Vec::new(),
            })
            .unwrap();
        assert_eq!(page.changes.len(), 1);
        assert_eq!(page.acked_through, 1);
    }
}
