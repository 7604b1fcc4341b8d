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
use tidesync_server::storage::{PullInput, PushInput, PushOrigin, Storage, StorageError};
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
        recover_from: None,
        origin: PushOrigin::Client,
    }
}

fn pull_all(client: &str) -> PullInput {
    PullInput {
        user: "alice".into(),
        client_id: ClientId::new(client).unwrap(),
        cursor: Cursor::new(),
        spaces: vec![SpaceName::new("team:1").unwrap()],
        limit: 10_000,
        echoes: false,
        refetch: Vec::new(),
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
        vec![vec![Some(
            tidesync_server::storage::postgres::SCHEMA_VERSION.to_string()
        )]]
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

/// `url` with its `host:port` replaced by `addr` (a fault proxy in front of PostgreSQL), and
/// the address it named.
fn through(url: &str, addr: std::net::SocketAddr) -> (String, std::net::SocketAddr) {
    let at = url.find('@').expect("the test URL names a user") + 1;
    let end = at + url[at..].find('/').expect("the test URL names a database");
    let upstream = url[at..end]
        .parse()
        .expect("the test URL's host is an IP:port");
    (format!("{}{addr}{}", &url[..at], &url[end..]), upstream)
}

async fn proxied_node(db: &TestDatabase) -> (Arc<PostgresStorage>, tidesync_testkit::FaultProxy) {
    let (_, upstream) = through(db.url(), "127.0.0.1:1".parse().unwrap());
    let proxy = tidesync_testkit::FaultProxy::start(upstream).unwrap();
    let (url, _) = through(db.url(), proxy.addr());
    let options = PostgresOptions {
        poll: Duration::from_millis(200),
        pool_wait: Duration::from_secs(2),
        ..PostgresOptions::default()
    };
    let storage = PostgresStorage::connect_with(&url, MergeRules::default(), options)
        .await
        .unwrap();
    (Arc::new(storage), proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lost_mid_operation_is_unavailable_then_reconnected_without_loss() {
    let Some(db) = TestDatabase::create("lost") else {
        return;
    };
    let (node, proxy) = proxied_node(&db).await;
    node.push(push("c1", vec![put(1, "a", 1)])).await.unwrap();
    // Every connection cut, new ones refused: a push and a pull are unavailable (503 with
    // Retry-After over HTTP), never internal.
    proxy.offline(true);
    proxy.kill_all();
    let err = node
        .push(push("c1", vec![put(2, "b", 2)]))
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Unavailable(_)), "{err:?}");
    let err = node.pull(pull_all("c1")).await.unwrap_err();
    assert!(matches!(err, StorageError::Unavailable(_)), "{err:?}");
    assert!(node.health().await.is_err());
    // Back: the pool reconnects by itself; the retried push applies once.
    proxy.offline(false);
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        match node.push(push("c1", vec![put(2, "b", 2)])).await {
            Ok(answer) => break answer,
            Err(StorageError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    assert_eq!(answer.acked_through, 2);
    let page = node.pull(pull_all("c1")).await.unwrap();
    assert_eq!(page.changes.len(), 2);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_listen_connection_was_cut_catches_up_on_reconnect() {
    let Some(db) = TestDatabase::create("relisten") else {
        return;
    };
    let writer = node(&db).await;
    let (listener, proxy) = proxied_node(&db).await;
    let space = SpaceName::new("team:1").unwrap();
    listener
        .space_versions(std::slice::from_ref(&space))
        .await
        .unwrap();
    let mut pokes = listener.subscribe();
    proxy.offline(true);
    proxy.kill_all();
    // Committed while the listener cannot hear it: the notification is lost for it.
    writer.push(push("c1", vec![put(1, "a", 1)])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.offline(false);
    let poke = tokio::time::timeout(Duration::from_secs(10), pokes.recv())
        .await
        .expect("the re-read after reconnecting pokes")
        .unwrap();
    assert_eq!((poke.space, poke.version), (space, 1));
    writer.shutdown().await;
    listener.shutdown().await;
}

/// Several clients push concurrently through three nodes picked at random; a push whose
/// answer is "lost" is retried through another node at the same time; one node's link to
/// PostgreSQL is cut now and then. Seeded (`TIDESYNC_FAULT_SEED` replays a run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_concurrent_pushes_through_three_nodes_apply_each_mutation_once() {
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;
    use tidesync_protocol::Stamp;

    let Some(db) = TestDatabase::create("seeded") else {
        return;
    };
    let seed = std::env::var(tidesync_testkit::SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!(
        "seed {seed} ({}={seed} replays it)",
        tidesync_testkit::SEED_ENV
    );
    let (cut_node, proxy) = proxied_node(&db).await;
    let nodes = Arc::new(vec![node(&db).await, node(&db).await, cut_node]);
    let proxy = Arc::new(proxy);
    const CLIENTS: u64 = 4;
    const PUSHES: u64 = 25;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let nodes = nodes.clone();
        let proxy = proxy.clone();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (c + 1));
        tasks.push(tokio::spawn(async move {
            let client = format!("client{c}");
            let mut seq = 0;
            let mut sent = Vec::new();
            // Seqs some answer reported applied: never twice. (An answer lost after its
            // commit reports nothing for those seqs again: the retry sees duplicates.)
            let mut applied = std::collections::HashSet::new();
            for p in 0..PUSHES {
                let size = rng.random_range(1..=5u64);
                let tx = seq + 1;
                let batch: Vec<Mutation> = (0..size)
                    .map(|i| {
                        seq += 1;
                        let mut m = put(
                            seq,
                            &format!("k{}", rng.random_range(0..12)),
                            (c * 1000 + seq) as i64,
                        );
                        m.tx = if rng.random_bool(0.3) { tx } else { seq };
                        m.hlc = Hlc::new(now_ms(), (p * 8 + i) as u16).unwrap();
                        m
                    })
                    .collect();
                // Keep each tx id contiguous: a tx is the run of equal ids.
                let batch = contiguous(batch);
                sent.extend(batch.iter().cloned());
                if rng.random_bool(0.1) {
                    proxy.kill_all();
                }
                let first = rng.random_range(0..3);
                let retry = rng
                    .random_bool(0.3)
                    .then(|| (first + rng.random_range(1..3)) % 3);
                loop {
                    let one = nodes[first].push(push(&client, batch.clone()));
                    let answers = match retry {
                        Some(second) => {
                            let (a, b) =
                                tokio::join!(one, nodes[second].push(push(&client, batch.clone())));
                            vec![a, b]
                        }
                        None => vec![one.await],
                    };
                    let mut done = false;
                    for answer in answers {
                        match answer {
                            Ok(r) => {
                                assert_eq!(r.acked_through, seq);
                                for x in &r.results {
                                    assert!(
                                        matches!(
                                            x.outcome,
                                            PushOutcome::Applied { .. }
                                                | PushOutcome::Merged { .. }
                                        ),
                                        "seed {seed}: {x:?}"
                                    );
                                    assert!(
                                        applied.insert(x.seq),
                                        "seed {seed}: seq {} of {client} applied twice",
                                        x.seq
                                    );
                                }
                                done = true;
                            }
                            Err(StorageError::Unavailable(_)) => {}
                            Err(e) => panic!("seed {seed}: {e:?}"),
                        }
                    }
                    if done {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            (client, sent, applied)
        }));
    }
    let mut expected: BTreeMap<String, (Stamp, i64)> = BTreeMap::new();
    let mut total = 0;
    let mut last_seqs = Vec::new();
    for task in tasks {
        let (client, sent, applied) = task.await.unwrap();
        assert!(applied.len() <= sent.len(), "seed {seed}: {client}");
        total += sent.len();
        last_seqs.push((client.clone(), sent.len()));
        for m in sent {
            let stamp = Stamp::new(m.hlc, ClientId::new(&client).unwrap());
            let Op::Put { doc } = &m.op else {
                unreachable!()
            };
            let n = doc["n"].as_i64().unwrap();
            let entry = expected
                .entry(m.key.id.as_str().to_owned())
                .or_insert((stamp.clone(), n));
            if stamp > entry.0 {
                *entry = (stamp, n);
            }
        }
    }
    assert!(total as u64 >= CLIENTS * PUSHES);
    // Every client's last_seq is its last mutation: nothing skipped, nothing pending.
    for (client, n) in last_seqs {
        let rows = db.query(&format!(
            "SELECT last_seq FROM ts_clients WHERE client_id = '{client}'"
        ));
        assert_eq!(
            rows,
            vec![vec![Some(n.to_string())]],
            "seed {seed}: {client}"
        );
    }
    let page = nodes[0].pull(pull_all("reader")).await.unwrap();
    let pulled: BTreeMap<String, i64> = page
        .changes
        .iter()
        .map(|c| {
            let doc: serde_json::Value =
                serde_json::from_str(c.doc.as_ref().unwrap().get()).unwrap();
            (c.id.as_str().to_owned(), doc["n"].as_i64().unwrap())
        })
        .collect();
    let want: BTreeMap<String, i64> = expected.into_iter().map(|(k, (_, n))| (k, n)).collect();
    assert_eq!(
        pulled, want,
        "seed {seed}: every record holds its last writer's document"
    );
    for n in nodes.iter() {
        n.shutdown().await;
    }
}

/// Makes equal tx ids contiguous runs (a mutation joins the previous tx or starts its own).
fn contiguous(mut batch: Vec<Mutation>) -> Vec<Mutation> {
    for i in 1..batch.len() {
        if batch[i].tx != batch[i - 1].tx {
            batch[i].tx = batch[i].seq;
        }
    }
    batch
}
