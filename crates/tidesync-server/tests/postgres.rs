//! What only the PostgreSQL backend has: several nodes on one database (pokes across nodes,
//! concurrent pushes of one client through two nodes), its migrations, and PostgreSQL lost
//! and back. The storage contract itself runs against both backends in `storage.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tidesync_protocol::{ClientId, Cursor, Hlc, Mutation, Op, PushOutcome, RecordKey, SpaceName};
use tidesync_server::auth::Grants;
use tidesync_server::storage::postgres::{PostgresOptions, PostgresStorage};
use tidesync_server::storage::{PullInput, PushInput, Storage, StorageError};
use tidesync_server::MergeRules;
use tidesync_testkit::TestDatabase;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn put(seq: u64, id: &str, n: i64) -> Mutation {
    Mutation {
        seq,
        tx: seq,
        key: RecordKey::parse("team:1", "todos", id).unwrap(),
        op: Op::Put {
            doc: json!({"n": n}).as_object().cloned().unwrap(),
        },
        hlc: Hlc::new(now_ms(), 0).unwrap(),
        base_version: 0,
    }
}

fn push(client: &str, mutations: Vec<Mutation>) -> PushInput {
    PushInput {
        user: "alice".into(),
        client_id: ClientId::new(client).unwrap(),
        mutations,
    }
}

fn pull_all(client: &str) -> PullInput {
    PullInput {
        user: "alice".into(),
        client_id: ClientId::new(client).unwrap(),
        cursor: Cursor::new(),
        spaces: vec![SpaceName::new("team:1").unwrap()],
        limit: 10_000,
    }
}

async fn node(db: &TestDatabase) -> Arc<PostgresStorage> {
    let options = PostgresOptions {
        poll: Duration::from_millis(200),
        ..PostgresOptions::default()
    };
    Arc::new(
        PostgresStorage::connect_with(db.url(), MergeRules::default(), options)
            .await
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_on_one_node_is_pulled_and_poked_on_another() {
    let Some(db) = TestDatabase::create("twonodes") else {
        return;
    };
    let (a, b) = (node(&db).await, node(&db).await);
    let space = SpaceName::new("team:1").unwrap();
    let mut pokes = b.subscribe();
    // B must know the space (an event stream on B read its version).
    assert_eq!(
        b.space_versions(std::slice::from_ref(&space))
            .await
            .unwrap(),
        vec![0]
    );
    let started = Instant::now();
    let answer = a
        .push(push("c1", vec![put(1, "x", 1), put(2, "y", 2)]))
        .await
        .unwrap();
    assert_eq!(answer.acked_through, 2);
    let poke = tokio::time::timeout(Duration::from_secs(5), pokes.recv())
        .await
        .expect("B is poked")
        .unwrap();
    assert_eq!((poke.space, poke.version), (space, 2));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the notification, not the poll"
    );
    let page = b.pull(pull_all("c2")).await.unwrap();
    assert_eq!(page.changes.len(), 2);
    assert!(!page.has_more);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_pushing_the_same_batch_through_two_nodes_at_once_is_applied_once() {
    let Some(db) = TestDatabase::create("sameclient") else {
        return;
    };
    let (a, b) = (node(&db).await, node(&db).await);
    for round in 0..20u64 {
        let batch: Vec<Mutation> = (1..=50)
            .map(|i| put(round * 50 + i, &format!("r{round}-{i}"), i as i64))
            .collect();
        let (ra, rb) = tokio::join!(a.push(push("c1", batch.clone())), b.push(push("c1", batch)));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(ra.acked_through, (round + 1) * 50);
        assert_eq!(rb.acked_through, (round + 1) * 50);
        // Exactly one of them applied the batch; the other saw duplicates.
        let applied = |r: &tidesync_protocol::PushResponse| {
            r.results
                .iter()
                .filter(|x| matches!(x.outcome, PushOutcome::Applied { .. }))
                .count()
        };
        assert_eq!(applied(&ra) + applied(&rb), 50, "round {round}");
    }
    let page = a.pull(pull_all("reader")).await.unwrap();
    assert_eq!(page.changes.len(), 1_000);
    let versions: Vec<u64> = page.changes.iter().map(|c| c.version).collect();
    assert_eq!(
        versions,
        (1..=1_000).collect::<Vec<_>>(),
        "one version per write, no gaps"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_live_in_postgres_and_migrations_run_once_for_concurrent_nodes() {
    let Some(db) = TestDatabase::create("tokens") else {
        return;
    };
    let url = db.url().to_owned();
    let nodes = futures::future::join_all(
        (0..3).map(|_| PostgresStorage::connect(&url, MergeRules::default())),
    )
    .await;
    let nodes: Vec<_> = nodes.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        db.query("SELECT count(*) FROM ts_migrations"),
        vec![vec![Some("1".to_owned())]]
    );
    let grants = Grants {
        user: "alice".into(),
        read: Default::default(),
        write: [SpaceName::new("team:1").unwrap()].into_iter().collect(),
    };
    let token = PostgresStorage::create_token_at(&url, &grants)
        .await
        .unwrap();
    let hash = tidesync_server::auth::TokenHash::of(&token);
    for n in &nodes {
        assert_eq!(n.authenticate(hash).await.unwrap(), Some(grants.clone()));
    }
    let stored = db.query("SELECT encode(hash, 'hex') FROM ts_tokens");
    assert!(!stored
        .iter()
        .flatten()
        .flatten()
        .any(|h| h.contains(&token)));
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_unavailable_with_a_clear_message() {
    let port = tidesync_testkit::free_port().unwrap();
    let url = format!("postgres://postgres@127.0.0.1:{port}/test?connect_timeout=2");
    let err = PostgresStorage::connect(&url, MergeRules::default())
        .await
        .unwrap_err();
    match err {
        StorageError::Unavailable(message) => {
            assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    let err = PostgresStorage::connect("mysql://nope", MergeRules::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("postgres://"), "{err}");
}
