//! The server's history horizon against real clients on loopback: a device offline past it
//! with pending writes comes back, is answered `cursor_reset`, downloads the space again and
//! keeps its writes; a create/delete churn under a tiny horizon leaves the server's tables
//! no larger than the live data. Time is an input: prunes run at a cutoff read from the
//! clock, or by the server's own pruner on a 200 ms horizon, and the tests wait for counts,
//! never for time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::json;
use tidesync_client::{Client, ClientEvent, Phase, Reachability};
use tidesync_server::auth::Grants;
use tidesync_server::horizon::HorizonConfig;
use tidesync_server::storage::sqlite::SqliteStorage;
use tidesync_server::storage::{Prune, Pruned, Storage};
use tidesync_server::{AppState, EmbeddedServer, Limits, MergeRules};

const T: Duration = Duration::from_secs(30);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn go_offline(client: &Client) {
    client.set_network(Reachability::Offline);
    wait_for("offline", T, || {
        client.status().is_some_and(|s| s.phase == Phase::Offline)
    });
}

/// The record rows of the server database: (tombstones, live).
fn record_rows(db: &std::path::Path) -> (u64, u64) {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row(
        "SELECT count(*) FILTER (WHERE doc IS NULL), count(*) FILTER (WHERE doc IS NOT NULL)
         FROM records",
        [],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
    )
    .unwrap()
}

#[test]
fn a_client_offline_past_the_horizon_downloads_again_and_keeps_its_pending_writes() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), MergeRules::default());
    let token = server.token("alice");
    let a = open_client(dir.path(), "a", &server.url(), &token);
    // b downloads two records a page: its download after the reset spans several pages,
    // each below the horizon.
    let mut config = client_config(
        dir.path(),
        "b",
        &server.url(),
        Arc::new(tidesync_client::StaticToken(token.clone())),
    );
    config.pull_limit = 2;
    let b = Client::open(config).unwrap();
    for i in 0..10 {
        a.put(&key("todos", &format!("t{i}")), doc(json!({"n": i})))
            .unwrap();
    }
    a.wait_synced(T).unwrap();
    wait_for("b has a's todos", T, || {
        view(&b, &key("todos", "t9")).is_some()
    });
    b.wait_synced(T).unwrap();

    // b goes away with writes of its own; meanwhile a deletes two records, and the server
    // forgets those deletes.
    go_offline(&b);
    b.put(&key("todos", "b1"), doc(json!({"by": "b"}))).unwrap();
    b.patch(&key("todos", "t1"), doc(json!({"done": true})))
        .unwrap();
    b.delete(&key("todos", "t4")).unwrap();
    a.delete(&key("todos", "t0")).unwrap();
    a.delete(&key("todos", "t2")).unwrap();
    a.put(&key("todos", "t10"), doc(json!({"n": 10}))).unwrap();
    a.wait_synced(T).unwrap();
    let storage = server.storage();
    let pruned = block_on(async move {
        storage
            .prune(Prune {
                cutoff_ms: now_ms(),
                rejections_cutoff_ms: now_ms(),
                batch: 1_000,
            })
            .await
            .unwrap()
    });
    assert_eq!(
        pruned,
        Pruned {
            tombstones: 2,
            rejections: 0
        }
    );
    assert_eq!(b.status().unwrap().pending, 3);
    assert!(view(&b, &key("todos", "t0")).is_some(), "b never saw it go");

    // Back online: its writes are pushed, its pull is reset, it downloads the space again.
    let events = b.subscribe();
    b.set_network(Reachability::Online);
    b.wait_synced(T).unwrap();
    assert!(
        drain(&events)
            .iter()
            .any(|e| matches!(e, ClientEvent::BaseReset)),
        "b was told to download its base again"
    );
    assert_eq!(b.status().unwrap().pending, 0);
    assert_eq!(
        view(&b, &key("todos", "t0")),
        None,
        "the pruned delete reached b"
    );
    assert_eq!(view(&b, &key("todos", "t2")), None);
    assert_eq!(view(&b, &key("todos", "t4")), None, "b's own delete holds");
    assert_eq!(
        view(&b, &key("todos", "t1")),
        Some(json!({"n": 1, "done": true}))
    );
    assert_eq!(view(&b, &key("todos", "b1")), Some(json!({"by": "b"})));
    assert_eq!(view(&b, &key("todos", "t10")), Some(json!({"n": 10})));
    assert_eq!(view(&b, &key("todos", "t3")), Some(json!({"n": 3})));

    // Nothing b wrote was lost, and both devices hold what the server holds.
    wait_for("a has b's writes", T, || {
        view(&a, &key("todos", "b1")).is_some()
    });
    a.wait_synced(T).unwrap();
    let server_view = live(&server_docs(&server.snapshot()));
    assert_eq!(server_view.len(), 9, "{server_view:?}");
    assert_eq!(client_docs(&a, &space(), &["todos"]), server_view);
    assert_eq!(client_docs(&b, &space(), &["todos"]), server_view);
    assert!(b.rejections().unwrap().is_empty());
}

#[test]
fn a_churn_under_a_tiny_horizon_keeps_the_database_at_its_live_size() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("server.db");
    let storage = Arc::new(SqliteStorage::open(&db, MergeRules::default()).unwrap());
    let horizon = HorizonConfig {
        retain_deleted: Duration::from_millis(200),
        prune_interval: Duration::from_millis(20),
        prune_batch: 25,
    };
    horizon.validate().unwrap();
    let state = AppState::with_horizon(storage.clone(), Limits::default(), Some(horizon));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = EmbeddedServer::start_state(listener, storage.clone(), state).unwrap();
    let token = storage
        .create_token(&Grants {
            user: "alice".into(),
            read: Default::default(),
            write: [space()].into_iter().collect(),
        })
        .unwrap();
    let a = open_client(dir.path(), "a", &server.url(), &token);
    let b = open_client(dir.path(), "b", &server.url(), &token);
    a.put(&key("todos", "keep"), doc(json!({"kept": true})))
        .unwrap();

    // Round after round, a creates records and deletes them. Without the horizon every
    // round would leave 20 more tombstones; with it the table returns to the live record.
    const ROUNDS: usize = 12;
    const PER_ROUND: usize = 20;
    let mut after_each = Vec::new();
    for round in 0..ROUNDS {
        let keys: Vec<_> = (0..PER_ROUND)
            .map(|i| key("todos", &format!("r{round}-{i}")))
            .collect();
        for k in &keys {
            a.put(k, doc(json!({"round": round}))).unwrap();
        }
        a.wait_synced(T).unwrap();
        for k in &keys {
            a.delete(k).unwrap();
        }
        a.wait_synced(T).unwrap();
        wait_for("the pruner catches up", T, || record_rows(&db).0 == 0);
        after_each.push(record_rows(&db));
    }
    assert_eq!(after_each, vec![(0, 1); ROUNDS], "the table stops growing");

    // The other device converges on the same single record, whether it saw the deletes or
    // was reset past them.
    b.sync_now();
    wait_for("b converges", T, || {
        b.wait_synced(T).is_ok() && client_docs(&b, &space(), &["todos"]).len() == 1
    });
    let server_view = live(&server_docs(&server_snapshot(&server)));
    assert_eq!(client_docs(&a, &space(), &["todos"]), server_view);
    assert_eq!(client_docs(&b, &space(), &["todos"]), server_view);
    assert_eq!(a.status().unwrap().pending, 0);
    drop((a, b));
    server.stop().unwrap();
}

/// Everything the embedded server holds in the test space.
fn server_snapshot(server: &EmbeddedServer) -> tidesync_protocol::PullResponse {
    let input = tidesync_server::storage::PullInput {
        user: "observer".into(),
        client_id: tidesync_protocol::ClientId::new("observer").unwrap(),
        cursor: Default::default(),
        spaces: vec![space()],
        limit: 1_000_000,
        echoes: false,
        refetch: Vec::new(),
    };
    server
        .run(server.storage().pull(input))
        .unwrap()
        .parse()
        .unwrap()
}
