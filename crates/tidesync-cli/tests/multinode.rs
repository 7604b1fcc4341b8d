//! Several `tidesync serve --database-url` processes on one PostgreSQL schema (issue 13,
//! item 5): real nodes, killed with SIGKILL and restarted, and a node whose connections to
//! PostgreSQL go through a fault-injecting proxy.
//!
//! - **convergence**: three nodes, three `Client`s (each its own SQLite file) on different
//!   nodes, writing offline then online, end with the same records as the server; the last
//!   changes reach the other clients through pokes across nodes (the clients' safety-net
//!   poll is a minute, longer than the test);
//! - **exactly-once across nodes**: raw pushes of one client alternate between nodes, every
//!   batch re-sent to the next node (in turn, overlapping the next batch, or concurrently);
//!   every seq is answered once, the space version counts every mutation once, every record
//!   is pulled once at the version of its last mutation;
//! - **crash loop**: one of two nodes is killed at a random moment around a push (before it
//!   listens, before the request, during it, after it) and restarted, round after round; the
//!   client retries on any node until acknowledged; nothing is lost or applied twice;
//! - **PostgreSQL connections cut**: a node reaches PostgreSQL through a `FaultProxy` that
//!   kills its connections mid-push, cuts PostgreSQL's answers (COMMIT's among them) and goes
//!   offline; the node answers 200 or 503 with `Retry-After`, never 500, heals by itself, and
//!   a retrying client ends with every write applied once.
//!
//! Every test returns early (passes) when `TIDESYNC_TEST_DATABASE_URL` is not set.
//! Inputs: `TIDESYNC_MULTINODE_ROUNDS` (crash loop rounds, default 50) and
//! `TIDESYNC_MULTINODE_SEED` (replays the random choices; kill points still depend on timing).
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{append, restartable_port, tail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::json;
use tidesync_client::{Client, ClientConfig, StaticToken, SyncConfig};
use tidesync_core::sync::BackoffPolicy;
use tidesync_protocol::{
    ClientId, CollectionName, Doc, Hlc, Mutation, Op, PullResponse, PushOutcome, PushRequest,
    PushResponse, RecordKey, SpaceName, PROTOCOL_VERSION,
};
use tidesync_store::ListOptions;
use tidesync_testkit::{FaultProxy, TestDatabase};

const SPACE: &str = "team:1";
const COLLECTION: &str = "todos";
const ROUNDS_ENV: &str = "TIDESYNC_MULTINODE_ROUNDS";
const SEED_ENV: &str = "TIDESYNC_MULTINODE_SEED";
const DEFAULT_ROUNDS: u64 = 50;
/// Longest any wait may take.
const T: Duration = Duration::from_secs(30);

// ---- nodes --------------------------------------------------------------------------------

/// A `tidesync serve --database-url` process on a fixed port (so that it comes back where
/// clients expect it); killed on drop.
struct Node {
    db_url: String,
    port: u16,
    log: PathBuf,
    child: Option<Child>,
    /// Gets one message when the node prints its banner.
    ready: Option<mpsc::Receiver<()>>,
    listening: bool,
}

impl Node {
    /// Starts a node (without waiting for it to listen).
    fn start(db_url: &str, dir: &Path, name: &str) -> Node {
        let mut node = Node {
            db_url: db_url.to_owned(),
            port: restartable_port(),
            log: dir.join(format!("{name}.log")),
            child: None,
            ready: None,
            listening: false,
        };
        node.spawn();
        node
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "the node is running");
        let mut child = common::command()
            .args([
                "serve",
                "--database-url",
                &self.db_url,
                "--db-pool-size",
                "4",
            ])
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .env("RUST_LOG", "warn")
            .env_remove("TIDESYNC_DATABASE_URL")
            .env_remove("TIDESYNC_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(append(&self.log))
            .spawn()
            .expect("spawn tidesync serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, ready) = mpsc::channel();
        thread::spawn(move || {
            // Read to the end, so that the node never writes to a closed pipe.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("tidesync listening on") {
                    let _ = tx.send(());
                }
            }
        });
        self.child = Some(child);
        self.ready = Some(ready);
    }

    /// Waits until the node listens (and has connected to PostgreSQL), starting it again if
    /// it stopped (the port may have been taken while it was down: then on another port).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + T;
        while !self.listening {
            let ready = self.ready.as_ref().expect("started");
            match ready.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(()) => self.listening = true,
                Err(e) => {
                    let status = self.kill();
                    let log = tail(&self.log);
                    assert!(
                        Instant::now() < deadline && e == mpsc::RecvTimeoutError::Disconnected,
                        "tidesync serve did not start ({status:?}); its log:\n{log}"
                    );
                    if log.contains("cannot listen") {
                        self.port = restartable_port();
                    }
                    thread::sleep(Duration::from_millis(20));
                    self.spawn();
                }
            }
        }
    }

    /// Whether it printed its banner (is listening) by now.
    fn is_ready(&mut self) -> bool {
        if !self.listening {
            self.listening = self.ready.as_ref().is_some_and(|r| r.try_recv().is_ok());
        }
        self.listening
    }

    /// SIGKILL; the exit status, if it was running.
    fn kill(&mut self) -> Option<std::process::ExitStatus> {
        self.ready = None;
        self.listening = false;
        let mut child = self.child.take()?;
        let _ = child.kill();
        Some(child.wait().unwrap())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `tidesync token create --database-url` for user alice, space [`SPACE`].
fn token(db_url: &str) -> String {
    let out = common::tidesync(&[
        "token",
        "create",
        "--database-url",
        db_url,
        "--user",
        "alice",
        "--space",
        SPACE,
    ]);
    common::ok(&out)
        .lines()
        .find(|l| l.starts_with("tsk_"))
        .expect("the token on its own line")
        .to_owned()
}

// ---- raw HTTP -----------------------------------------------------------------------------

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn key(id: &str) -> RecordKey {
    RecordKey::parse(SPACE, COLLECTION, id).unwrap()
}

fn doc(v: serde_json::Value) -> Doc {
    v.as_object().cloned().unwrap()
}

fn mutation(seq: u64, id: &str, op: Op) -> Mutation {
    Mutation {
        seq,
        tx: seq,
        key: key(id),
        op,
        hlc: Hlc::new(now_ms(), (seq % 60_000) as u16).unwrap(),
        base_version: 0,
    }
}

/// What a node answered to a push.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    body: Option<PushResponse>,
    text: String,
}

async fn push(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    client: &str,
    mutations: &[Mutation],
) -> Result<Answer, reqwest::Error> {
    let body = PushRequest {
        client_id: ClientId::new(client).unwrap(),
        protocol: PROTOCOL_VERSION,
        mutations: mutations.to_vec(),
        recover_from: None,
    };
    let response = http
        .post(format!("{url}/v1/push"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.text().await?;
    let body = if status == StatusCode::OK {
        Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("push response {e}: {text}")))
    } else {
        None
    };
    Ok(Answer {
        status,
        retry_after,
        body,
        text,
    })
}

/// The whole space as pulled by `client` through `url`, page after page.
struct Pulled {
    /// Every change of every page, in order.
    changes: Vec<tidesync_protocol::Change>,
    version: u64,
    acked_through: u64,
}

/// Protocol 1: the writer's own records come back in full, not as echoes.
async fn pull_all(http: &reqwest::Client, url: &str, token: &str, client: &str) -> Pulled {
    let mut cursor = serde_json::Map::new();
    let mut changes = Vec::new();
    loop {
        let body = json!({"client_id": client, "protocol": 1, "spaces": [SPACE],
                          "cursor": cursor, "limit": 250});
        let response = http
            .post(format!("{url}/v1/pull"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("pull");
        assert_eq!(response.status(), StatusCode::OK, "pull through {url}");
        let page: PullResponse = response.json().await.expect("a pull response");
        cursor = serde_json::to_value(&page.cursor)
            .unwrap()
            .as_object()
            .cloned()
            .unwrap();
        changes.extend(page.changes);
        if !page.has_more {
            let version = page
                .cursor
                .get(&SpaceName::new(SPACE).unwrap())
                .copied()
                .unwrap_or(0);
            return Pulled {
                changes,
                version,
                acked_through: page.acked_through,
            };
        }
    }
}

/// A record by id as the server holds it: (version, doc).
type Served = BTreeMap<String, (u64, Doc)>;

/// `pulled` as records, asserting that each record came exactly once.
fn served(pulled: &Pulled) -> Served {
    let mut out = Served::new();
    for change in &pulled.changes {
        assert!(!change.deleted, "no test deletes: {change:?}");
        let previous = out.insert(
            change.id.to_string(),
            (change.version, change.doc.clone().unwrap()),
        );
        assert!(previous.is_none(), "record {} pulled twice", change.id);
    }
    out
}

async fn wait_healthy(http: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + T;
    loop {
        let ok = http
            .get(format!("{url}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK);
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url}/healthz never answered 200"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn seed() -> u64 {
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("{SEED_ENV}={seed}");
    seed
}

// ---- 1. convergence -----------------------------------------------------------------------

fn client_config(db: &Path, url: &str, token: &str) -> ClientConfig {
    let mut config = ClientConfig::new(
        db,
        url,
        vec![SpaceName::new(SPACE).unwrap()],
        Arc::new(StaticToken(token.to_owned())),
    );
    config.sync = SyncConfig {
        backoff: BackoffPolicy {
            base_ms: 10,
            cap_ms: 250,
        },
        // Longer than the test: what the others write arrives by pokes across nodes.
        idle_poll_ms: 60_000,
        stream_retry_ms: 200,
        offline_probe_ms: 60_000,
    };
    config.seed = Some(1);
    config.push_batch = 7;
    config.request_timeout = Duration::from_secs(5);
    config.start_online = false;
    config
}

fn client_docs(client: &Client) -> BTreeMap<String, Doc> {
    let space = SpaceName::new(SPACE).unwrap();
    let collection = CollectionName::new(COLLECTION).unwrap();
    let page = client
        .list(
            &space,
            &collection,
            &ListOptions {
                after: None,
                limit: 10_000,
            },
        )
        .unwrap();
    page.records
        .into_iter()
        .map(|r| (r.key.id.to_string(), r.doc))
        .collect()
}

#[test]
fn clients_on_three_nodes_write_offline_and_online_and_converge() {
    let Some(db) = TestDatabase::create("multiconverge") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let token = token(db.url());
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| Node::start(db.url(), dir.path(), &format!("node{i}")))
        .collect();
    nodes.iter_mut().for_each(Node::wait_ready);
    let clients: Vec<Client> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let db = dir.path().join(format!("client{i}.db"));
            Client::open(client_config(&db, &node.url(), &token)).unwrap()
        })
        .collect();

    // Offline (paused since open): own records, each client's own field of shared records,
    // and contested records everyone puts.
    let write = |phase: &str, n: usize| {
        for (i, c) in clients.iter().enumerate() {
            for r in 0..n {
                c.put(
                    &key(&format!("c{i}-{phase}{r}")),
                    doc(json!({"by": i, "phase": phase, "r": r})),
                )
                .unwrap();
            }
            for s in 0..4 {
                let mut fields = Doc::new();
                fields.insert(format!("c{i}"), json!(format!("{phase}{s}")));
                c.patch(&key(&format!("shared{s}")), fields).unwrap();
            }
            c.put(&key("contested"), doc(json!({"by": i, "phase": phase})))
                .unwrap();
        }
    };
    write("off", 12);
    for c in &clients {
        assert_eq!(
            c.counts().unwrap().acked_through,
            0,
            "nothing synced offline"
        );
    }
    for c in &clients {
        c.resume();
    }
    // Online: more writes while the first ones sync; one client drops off and comes back.
    write("on", 6);
    clients[1].set_network(tidesync_client::Reachability::Offline);
    write("late", 3);
    clients[1].set_network(tidesync_client::Reachability::Online);
    clients[1].sync_now();

    let deadline = Instant::now() + T;
    for c in &clients {
        c.wait_synced(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|e| panic!("{}: {e}", c.client_id()));
    }
    // The server's view, through a node; every client ends at it through its own node.
    let rt = runtime();
    let http = http();
    let pulled = rt.block_on(pull_all(&http, &nodes[0].url(), &token, "observer"));
    let server: BTreeMap<String, Doc> = served(&pulled)
        .into_iter()
        .map(|(id, (_, doc))| (id, doc))
        .collect();
    let converged =
        tidesync_testkit::wait_until(T, || clients.iter().all(|c| client_docs(c) == server));
    for (i, c) in clients.iter().enumerate() {
        assert!(
            converged,
            "client {i} (on node {i}) did not converge: {} records vs the server's {}",
            client_docs(c).len(),
            server.len()
        );
        // Only the record everyone puts is contested (each client patches its own field
        // of the shared ones).
        let conflicts = c.conflicts().unwrap();
        assert!(
            conflicts.iter().all(|x| x.key == key("contested")),
            "client {i}: conflicts {conflicts:?}"
        );
        assert!(c.rejections().unwrap().is_empty(), "client {i}: rejections");
    }
    // Every write is there: 3 clients × 21 own records, 4 shared records with every
    // client's last value, one contested record.
    assert_eq!(server.len(), 3 * 21 + 4 + 1, "{server:?}");
    for s in 0..4 {
        let shared = &server[&format!("shared{s}")];
        for i in 0..3 {
            assert_eq!(shared[&format!("c{i}")], json!(format!("late{s}")));
        }
    }
    let written: u64 = clients.iter().map(|c| c.counts().unwrap().last_seq).sum();
    assert_eq!(written, 3 * (21 + 3 * 4 + 3));
    for c in clients {
        c.close();
    }
}

// ---- 2. exactly-once with requests alternating between nodes ------------------------------

#[test]
fn pushes_alternating_between_nodes_apply_every_seq_once() {
    let Some(db) = TestDatabase::create("multialternate") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let token = token(db.url());
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| Node::start(db.url(), dir.path(), &format!("node{i}")))
        .collect();
    nodes.iter_mut().for_each(Node::wait_ready);
    let urls: Vec<String> = nodes.iter().map(Node::url).collect();
    let rt = runtime();
    let http = http();
    let client = "alternating";
    const BATCHES: u64 = 24;
    const PER: u64 = 10;

    // Puts and patches over 25 records, each a value never written before: every mutation
    // changes the space once, so mutation `seq` lands at space version `seq`.
    let mut all: Vec<Mutation> = Vec::new();
    let mut touched = BTreeSet::new();
    for seq in 1..=BATCHES * PER {
        let id = format!("r{}", (seq * 7) % 25);
        let op = if touched.insert(id.clone()) || seq % 3 == 0 {
            Op::Put {
                doc: doc(json!({"seq": seq, "text": format!("put {seq}")})),
            }
        } else {
            let mut fields = Doc::new();
            fields.insert(format!("p{}", seq % 4), json!(seq));
            Op::Patch { fields }
        };
        all.push(mutation(seq, &id, op));
    }
    let mut answered: BTreeMap<u64, usize> = BTreeMap::new();
    let mut note = |answer: &Answer, what: &str| {
        assert_eq!(answer.status, StatusCode::OK, "{what}: {}", answer.text);
        let body = answer.body.as_ref().unwrap();
        for r in &body.results {
            assert!(
                matches!(r.outcome, PushOutcome::Applied { version } if version == r.seq),
                "{what}: seq {} {:?}",
                r.seq,
                r.outcome
            );
            *answered.entry(r.seq).or_default() += 1;
        }
        body.acked_through
    };
    rt.block_on(async {
        for k in 0..BATCHES {
            let batch = &all[(k * PER) as usize..((k + 1) * PER) as usize];
            let end = (k + 1) * PER;
            let (here, next) = (&urls[k as usize % 3], &urls[(k as usize + 1) % 3]);
            match k % 4 {
                // The batch, then the same batch again on the next node.
                0 | 2 => {
                    let first = push(&http, here, &token, client, batch).await.unwrap();
                    assert_eq!(note(&first, "first send"), end);
                    let again = push(&http, next, &token, client, batch).await.unwrap();
                    assert_eq!(note(&again, "re-send"), end);
                    assert!(
                        again.body.unwrap().results.is_empty(),
                        "a re-send applies nothing"
                    );
                }
                // The previous batch's tail with this batch, on this node; then the same on
                // the next.
                1 => {
                    let from = (k * PER - PER / 2) as usize;
                    let overlapping = &all[from..end as usize];
                    let first = push(&http, here, &token, client, overlapping)
                        .await
                        .unwrap();
                    assert_eq!(note(&first, "overlapping send"), end);
                    let again = push(&http, next, &token, client, overlapping)
                        .await
                        .unwrap();
                    assert_eq!(note(&again, "overlapping re-send"), end);
                }
                // The batch on two nodes at once: one applies it, the other waits for the
                // client's row and finds it done.
                _ => {
                    let (a, b) = tokio::join!(
                        push(&http, here, &token, client, batch),
                        push(&http, next, &token, client, batch)
                    );
                    assert_eq!(note(&a.unwrap(), "concurrent send"), end);
                    assert_eq!(note(&b.unwrap(), "concurrent send"), end);
                }
            }
        }
    });
    let total = BATCHES * PER;
    let expected_seqs: BTreeMap<u64, usize> = (1..=total).map(|s| (s, 1)).collect();
    assert_eq!(answered, expected_seqs, "every seq answered exactly once");

    // What the mutations make, each record at the seq of its last mutation.
    let mut expected: BTreeMap<String, (u64, Option<Doc>)> = BTreeMap::new();
    for m in &all {
        let slot = expected.entry(m.key.id.to_string()).or_default();
        *slot = (m.seq, tidesync_core::patch::apply_op(slot.1.take(), &m.op));
    }
    let expected: Served = expected
        .into_iter()
        .map(|(id, (v, d))| (id, (v, d.unwrap())))
        .collect();
    for url in &urls {
        let pulled = rt.block_on(pull_all(&http, url, &token, client));
        assert_eq!(pulled.version, total, "space version through {url}");
        assert_eq!(pulled.acked_through, total, "acked_through through {url}");
        assert_eq!(served(&pulled), expected, "records through {url}");
    }
}

// ---- 3. crash loop ------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Tally {
    /// The node was killed before it listened (restarted in the round before).
    kills_before_ready: u64,
    /// The push was answered before the kill.
    acked_before_kill: u64,
    /// The push never reached the node (refused) / was cut by the kill.
    refused: u64,
    cut: u64,
    /// Cut pushes the killed node had committed (the retry found them applied).
    committed_unanswered: u64,
    retries: u64,
    retries_unavailable: u64,
}

#[test]
fn nodes_killed_mid_push_lose_nothing_and_apply_everything_once() {
    let Some(db) = TestDatabase::create("multicrash") else {
        return;
    };
    let rounds: u64 = std::env::var(ROUNDS_ENV)
        .ok()
        .map(|s| s.parse().expect("TIDESYNC_MULTINODE_ROUNDS is a number"))
        .unwrap_or(DEFAULT_ROUNDS);
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let token = token(db.url());
    let mut nodes: Vec<Node> = (0..2)
        .map(|i| Node::start(db.url(), dir.path(), &format!("node{i}")))
        .collect();
    nodes.iter_mut().for_each(Node::wait_ready);
    let rt = runtime();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let client = "crasher";
    const PER: u64 = 10;
    let mut tally = Tally::default();
    let batch_of = |round: u64| -> Vec<Mutation> {
        (round * PER + 1..=(round + 1) * PER)
            .map(|seq| {
                mutation(
                    seq,
                    &format!("r{seq:05}"),
                    Op::Put {
                        doc: doc(json!({"seq": seq})),
                    },
                )
            })
            .collect()
    };
    // Asserts a node's answer is one a client may see (200, or 503 with Retry-After) and
    // returns whether it acknowledged `end`.
    let acked = |answer: &Answer, end: u64| -> bool {
        match answer.status {
            StatusCode::OK => {
                let body = answer.body.as_ref().unwrap();
                assert!(body.acked_through >= end, "{answer:?}");
                assert!(
                    body.results
                        .iter()
                        .all(|r| matches!(r.outcome, PushOutcome::Applied { .. })),
                    "{answer:?}"
                );
                true
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(answer.retry_after.is_some(), "503 without Retry-After");
                false
            }
            other => panic!("a node answered {other}: {}", answer.text),
        }
    };
    for round in 0..rounds {
        let batch = batch_of(round);
        let end = (round + 1) * PER;
        let victim = rng.random_range(0..nodes.len());
        let url = nodes[victim].url();
        let ready = nodes[victim].is_ready();
        let delay = Duration::from_micros(rng.random_range(0..25_000));
        let done = rt.block_on(async {
            let pushing = tokio::spawn({
                let (http, token, batch) = (http.clone(), token.clone(), batch.clone());
                async move { push(&http, &url, &token, client, &batch).await }
            });
            tokio::time::sleep(delay).await;
            nodes[victim].kill();
            pushing.await.unwrap()
        });
        tally.kills_before_ready += u64::from(!ready);
        match &done {
            Ok(answer) if acked(answer, end) => tally.acked_before_kill += 1,
            Ok(_) => {}
            Err(e) if e.is_connect() => tally.refused += 1,
            Err(_) => tally.cut += 1,
        }
        let was_cut = matches!(&done, Err(e) if !e.is_connect());
        nodes[victim].spawn();
        // Retry on any node (the restarting one refuses or answers) until acknowledged;
        // sometimes even when the kill came after the answer.
        let mut retry =
            !matches!(&done, Ok(a) if a.status == StatusCode::OK) || rng.random_bool(0.2);
        let deadline = Instant::now() + T;
        while retry {
            assert!(
                Instant::now() < deadline,
                "round {round}: never acknowledged"
            );
            let url = nodes[rng.random_range(0..nodes.len())].url();
            tally.retries += 1;
            match rt.block_on(push(&http, &url, &token, client, &batch)) {
                Ok(answer) if acked(&answer, end) => {
                    let applied_now = !answer.body.unwrap().results.is_empty();
                    tally.committed_unanswered += u64::from(was_cut && !applied_now);
                    retry = false;
                }
                Ok(_) => tally.retries_unavailable += 1,
                Err(_) => {}
            }
            if retry {
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
    let loop_time = started.elapsed();
    nodes.iter_mut().for_each(Node::wait_ready);
    let total = rounds * PER;
    for node in &nodes {
        let pulled = rt.block_on(pull_all(&http, &node.url(), &token, client));
        assert_eq!(
            pulled.acked_through, total,
            "last_seq is the number of mutations"
        );
        assert_eq!(pulled.version, total, "each mutation applied once");
        let records = served(&pulled);
        assert_eq!(records.len() as u64, total, "every record, once");
        for (id, (version, doc)) in &records {
            let seq: u64 = id[1..].parse().unwrap();
            assert_eq!(doc["seq"], json!(seq), "{id}");
            assert!(*version >= 1 && *version <= total, "{id} at {version}");
        }
        let versions: BTreeSet<u64> = records.values().map(|(v, _)| *v).collect();
        assert_eq!(versions.len() as u64, total, "one version per record");
    }
    eprintln!(
        "multinode crash loop: {rounds} rounds in {loop_time:?} ({:?} in all), {total} \
         mutations: {tally:?}",
        started.elapsed()
    );
}

// ---- 4. the connections to PostgreSQL cut -------------------------------------------------

/// The test database URL with its host and port replaced by `proxy`, and PostgreSQL's
/// address (`None` unless it is a loopback TCP address the proxy can forward to).
fn through_proxy(url: &str) -> Option<(SocketAddr, impl Fn(SocketAddr) -> String + '_)> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((user, hostport)) => (Some(user), hostport),
        None => (None, authority),
    };
    let hostport = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:5432")
    };
    let upstream = hostport
        .to_socket_addrs()
        .ok()?
        .find(|a| a.ip().is_loopback())?;
    let rewrite = move |proxy: SocketAddr| match user {
        Some(user) => format!("{scheme}://{user}@{proxy}{path}"),
        None => format!("{scheme}://{proxy}{path}"),
    };
    Some((upstream, rewrite))
}

#[derive(Debug, Default)]
struct Faults {
    kills: u64,
    cuts: u64,
    offline: u64,
    ok: u64,
    unavailable: u64,
}

#[test]
fn a_node_whose_database_connections_are_cut_answers_503_heals_and_applies_everything_once() {
    let Some(db) = TestDatabase::create("multiproxy") else {
        return;
    };
    let Some((upstream, rewrite)) = through_proxy(db.url()) else {
        eprintln!("skipped: the test database is not on a loopback TCP address");
        return;
    };
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let proxy = FaultProxy::start(upstream).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token = token(db.url());
    let mut faulty = Node::start(&rewrite(proxy.addr()), dir.path(), "faulty");
    let mut direct = Node::start(db.url(), dir.path(), "direct");
    faulty.wait_ready();
    direct.wait_ready();
    let rt = runtime();
    let http = http();
    let client = "cut";
    const BATCHES: u64 = 40;
    const PER: u64 = 10;
    let mut seen = Faults::default();
    let faulty_url = faulty.url();
    rt.block_on(async {
        for k in 0..BATCHES {
            let batch: Vec<Mutation> = (k * PER + 1..=(k + 1) * PER)
                .map(|seq| {
                    let op = Op::Put {
                        doc: doc(json!({"seq": seq})),
                    };
                    mutation(seq, &format!("r{seq:05}"), op)
                })
                .collect();
            let end = (k + 1) * PER;
            // A fault for this batch's first attempt.
            let mut back_online = None;
            match rng.random_range(0..5) {
                0 => {}
                1 => {
                    // Every connection to PostgreSQL killed while the push runs.
                    let delay = Duration::from_micros(rng.random_range(0..4_000));
                    let proxy = &proxy;
                    seen.kills += 1;
                    let killer = async move {
                        tokio::time::sleep(delay).await;
                        proxy.kill_all();
                    };
                    let (answer, ()) =
                        tokio::join!(push(&http, &faulty_url, &token, client, &batch), killer);
                    note(&mut seen, &answer.expect("the node answers"), end);
                }
                2 | 3 => {
                    // PostgreSQL's next answers cut: BEGIN's, a lock's, the writes', COMMIT's.
                    proxy.cut_next_responses(rng.random_range(1..=6));
                    seen.cuts += 1;
                }
                _ => {
                    // PostgreSQL gone: connections killed and new ones refused for a while.
                    proxy.offline(true);
                    proxy.kill_all();
                    seen.offline += 1;
                    back_online = Some(Instant::now() + Duration::from_millis(300));
                }
            }
            let deadline = Instant::now() + T;
            loop {
                if back_online.is_some_and(|at| Instant::now() >= at) {
                    proxy.offline(false);
                    back_online = None;
                }
                let answer = push(&http, &faulty_url, &token, client, &batch)
                    .await
                    .expect("the node answers");
                if note(&mut seen, &answer, end) {
                    break;
                }
                assert!(Instant::now() < deadline, "batch {k} never acknowledged");
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            proxy.set_cut(tidesync_testkit::CutMode::Off);
            if back_online.is_some() {
                proxy.offline(false);
            }
        }
        // Healed by itself, without a restart.
        wait_healthy(&http, &faulty_url).await;
    });
    assert!(seen.unavailable > 0, "no fault reached a push: {seen:?}");
    let total = BATCHES * PER;
    for url in [faulty.url(), direct.url()] {
        let pulled = rt.block_on(pull_all(&http, &url, &token, client));
        assert_eq!(pulled.acked_through, total, "{url}: last_seq");
        assert_eq!(pulled.version, total, "{url}: each mutation applied once");
        let records = served(&pulled);
        assert_eq!(records.len() as u64, total, "{url}: every record, once");
    }
    eprintln!(
        "PostgreSQL connections cut: {seen:?}; proxy {:?}",
        proxy.stats()
    );
}

/// Checks one answer of the node behind the proxy: 200 acknowledging through `end`, or 503
/// with `Retry-After`; never anything else. Returns whether it acknowledged.
fn note(seen: &mut Faults, answer: &Answer, end: u64) -> bool {
    match answer.status {
        StatusCode::OK => {
            seen.ok += 1;
            assert!(
                answer.body.as_ref().unwrap().acked_through >= end,
                "{answer:?}"
            );
            true
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            seen.unavailable += 1;
            assert!(answer.retry_after.is_some(), "503 without Retry-After");
            false
        }
        other => panic!("the node answered {other} (never 500): {}", answer.text),
    }
}
