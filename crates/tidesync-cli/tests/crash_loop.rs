//! Crash loops with real processes: the `tidesync serve` binary and several client
//! processes (this test binary re-executed, running `tidesync_client::Client`) are SIGKILLed
//! at random moments while the clients write and sync, round after round, and then
//! everything restarts and syncs.
//!
//! Each client child writes small transactions (puts, patches and deletes of its own
//! records, and patches of its own field of a few shared records) as fast as it can while
//! its sync thread pushes and pulls. Every mutation changes the server's state (a client
//! only writes its own records and its own field of the shared ones, with fresh stamps and
//! values, and deletes only live records), so the space version counts applications. The
//! child prints `begin` before each transaction and `done` once the call returned; at open it
//! prints the last seq of its outbox, which tells the parent whether a transaction in flight
//! at the kill committed (every transaction that committed printed `begin` first).
//!
//! A round starts whatever is down (the server sometimes late, so clients start offline),
//! lets them run 20–200 ms (or 0–15 ms, so that kills land during process start, database
//! open and recovery), then kills one client, the server, both, or every client, in a random
//! order with random gaps. After the last round every process is killed once more, the server restarts,
//! the parent reopens each client database as a `Client` and syncs to the end. Asserted:
//! - **exactly-once**: the server's space version equals the number of mutations the
//!   clients wrote (their outboxes' last seqs, added up), and the server's `acked_through`
//!   for each client is its last seq;
//! - **no loss**: every write a child reported as returned is in its outbox after the kill
//!   (seqs are exactly the ones reported, no torn transaction), and reached the server;
//! - **convergence**: the server's records equal every client's mutations replayed in seq
//!   order, and every replica's view equals the server; no conflicts, no rejections.
//!
//! Inputs: `TIDESYNC_CRASH_LOOP_SEED` replays a run (the kill plan, timings and each child's
//! writes; the exact kill points still depend on scheduling), `TIDESYNC_CRASH_LOOP_ROUNDS`
//! (default 40, about 10 s) and `TIDESYNC_CRASH_LOOP_CLIENTS` (default 3).
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{append, restartable_port, tail};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tidesync_client::{Client, ClientConfig, StaticToken, SyncConfig};
use tidesync_core::sync::BackoffPolicy;
use tidesync_protocol::{CollectionName, Doc, Op, PullResponse, RecordKey, SpaceName};
use tidesync_store::ListOptions;

const SEED_ENV: &str = "TIDESYNC_CRASH_LOOP_SEED";
const ROUNDS_ENV: &str = "TIDESYNC_CRASH_LOOP_ROUNDS";
const CLIENTS_ENV: &str = "TIDESYNC_CRASH_LOOP_CLIENTS";
const DEFAULT_ROUNDS: u64 = 40;
const DEFAULT_CLIENTS: usize = 3;

/// Child mode: the path of the child's database.
const CHILD_DB_ENV: &str = "TIDESYNC_CRASH_LOOP_CHILD_DB";
const CHILD_URL_ENV: &str = "TIDESYNC_CRASH_LOOP_CHILD_URL";
const CHILD_TOKEN_ENV: &str = "TIDESYNC_CRASH_LOOP_CHILD_TOKEN";
const CHILD_SEED_ENV: &str = "TIDESYNC_CRASH_LOOP_CHILD_SEED";
const CHILD_INDEX_ENV: &str = "TIDESYNC_CRASH_LOOP_CHILD_INDEX";
/// A child never outlives this, even if its parent vanished.
const CHILD_MAX_LIFE: Duration = Duration::from_secs(120);
/// Prefix of the child's report lines (the test harness prints to stdout too).
const PREFIX: &str = "CRASHLOOP ";

const SPACE: &str = "loop:1";
const OWN: &str = "own";
const SHARED: &str = "shared";
/// Records per client in `own`, and shared records.
const OWN_KEYS: usize = 12;
const SHARED_KEYS: usize = 4;
/// The signal `Child::kill` sends.
const SIGKILL: i32 = 9;
const T: Duration = Duration::from_secs(60);

/// A record's state by (collection, id): `Some(doc)` if live.
type Docs = BTreeMap<(String, String), Doc>;

fn key(collection: &str, id: &str) -> RecordKey {
    RecordKey::parse(SPACE, collection, id).unwrap()
}

fn doc(v: serde_json::Value) -> Doc {
    v.as_object().cloned().unwrap()
}

fn client_config(db: &Path, url: &str, token: &str, seed: u64) -> ClientConfig {
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
        idle_poll_ms: 500,
        stream_retry_ms: 200,
        offline_probe_ms: 250,
    };
    config.seed = Some(seed);
    config.request_timeout = Duration::from_secs(3);
    config
}

// ---- the child ----------------------------------------------------------------------------

/// What a child prints, one JSON line each.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Report {
    /// The client opened; its outbox's last seq, and the acknowledgements it knew of.
    Open { last_seq: u64, acked_through: u64 },
    /// A transaction is about to be written, as seqs `first..first + ops.len()`.
    Begin {
        first: u64,
        ops: Vec<(RecordKey, Op)>,
    },
    /// The transaction that began at `first` returned.
    Done { first: u64 },
}

fn report(r: &Report) {
    println!("{PREFIX}{}", serde_json::to_string(r).unwrap());
}

/// Child mode: does nothing unless the parent set [`CHILD_DB_ENV`]. Writes and syncs until
/// it is killed.
#[test]
fn crash_loop_child() {
    let Ok(db) = std::env::var(CHILD_DB_ENV) else {
        return;
    };
    let url = std::env::var(CHILD_URL_ENV).unwrap();
    let token = std::env::var(CHILD_TOKEN_ENV).unwrap();
    let seed: u64 = std::env::var(CHILD_SEED_ENV).unwrap().parse().unwrap();
    let me: usize = std::env::var(CHILD_INDEX_ENV).unwrap().parse().unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut config = client_config(Path::new(&db), &url, &token, seed);
    config.push_batch = rng.random_range(4..=40);
    let client = Client::open(config).expect("child: open the client");
    let mut last_seq = client.counts().unwrap().last_seq;
    let acked_through = client.counts().unwrap().acked_through;
    report(&Report::Open {
        last_seq,
        acked_through,
    });
    let started = Instant::now();
    while started.elapsed() < CHILD_MAX_LIFE {
        let first = last_seq + 1;
        let ops = next_transaction(&mut rng, me, first, &client);
        report(&Report::Begin {
            first,
            ops: ops.clone(),
        });
        let seqs = client
            .transaction(|w| {
                let mut seqs = Vec::new();
                for (k, op) in &ops {
                    let receipt = match op {
                        Op::Put { doc } => w.put(k, doc.clone())?,
                        Op::Patch { fields } => w.patch(k, fields.clone())?,
                        Op::Delete => w.delete(k)?,
                    };
                    seqs.push(receipt.seq);
                }
                Ok(seqs)
            })
            .expect("child: write a transaction");
        let expected: Vec<u64> = (first..first + ops.len() as u64).collect();
        assert_eq!(
            seqs, expected,
            "child: the store handed out unexpected seqs"
        );
        last_seq = *seqs.last().unwrap();
        report(&Report::Done { first });
        thread::sleep(Duration::from_micros(rng.random_range(0..3_000)));
    }
}

/// 1..=4 mutations, each of which changes the server's state: puts and patches carry the
/// mutation's seq (a value never written before), a delete only hits a live record, and a
/// shared record only gets this client's own field.
fn next_transaction(
    rng: &mut StdRng,
    me: usize,
    first: u64,
    client: &Client,
) -> Vec<(RecordKey, Op)> {
    let n = rng.random_range(1..=4u64);
    let mut live: HashMap<RecordKey, bool> = HashMap::new();
    let mut ops = Vec::new();
    for seq in first..first + n {
        let roll = rng.random_range(0..100);
        if roll < 30 {
            let k = key(SHARED, &format!("s{}", rng.random_range(0..SHARED_KEYS)));
            let mut fields = Doc::new();
            fields.insert(format!("c{me}"), json!(seq));
            ops.push((k, Op::Patch { fields }));
            continue;
        }
        let k = key(OWN, &format!("c{me}-r{}", rng.random_range(0..OWN_KEYS)));
        let is_live = *live
            .entry(k.clone())
            .or_insert_with(|| client.get(&k).unwrap().is_some());
        let op = if roll < 60 {
            Op::Put {
                doc: doc(json!({"by": me, "seq": seq, "text": format!("é🦀 {seq}")})),
            }
        } else if roll < 85 || !is_live {
            let mut fields = Doc::new();
            fields.insert(format!("p{}", seq % 3), json!(seq));
            Op::Patch { fields }
        } else {
            Op::Delete
        };
        live.insert(k.clone(), !matches!(op, Op::Delete));
        ops.push((k, op));
    }
    ops
}

// ---- the parent: processes ----------------------------------------------------------------

/// `tidesync serve` on a fixed port, so that clients find it again after a restart.
struct ServerProcess {
    child: Child,
    ready: mpsc::Receiver<()>,
}

fn start_server(data: &Path, port: u16, log: &Path) -> ServerProcess {
    let mut child = common::command()
        .args([
            "serve",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(append(log))
        .spawn()
        .expect("spawn tidesync serve");
    let stdout = child.stdout.take().unwrap();
    let (tx, ready) = mpsc::channel();
    thread::spawn(move || {
        // Read to the end, so that the server never writes to a closed pipe.
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("tidesync listening on") {
                let _ = tx.send(());
            }
        }
    });
    ServerProcess { child, ready }
}

/// Starts the server and waits until it listens, retrying while the port is still held.
fn start_server_ready(data: &Path, port: u16, log: &Path) -> ServerProcess {
    let deadline = Instant::now() + T;
    loop {
        let mut server = start_server(data, port, log);
        match server.ready.recv_timeout(T) {
            Ok(()) => return server,
            Err(_) => {
                let status = kill(&mut server.child);
                assert!(
                    Instant::now() < deadline,
                    "tidesync serve did not start ({status}); its log:\n{}",
                    tail(log)
                );
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

struct ClientProcess {
    child: Child,
    reports: JoinHandle<Vec<Report>>,
}

fn start_client(dir: &Path, index: usize, url: &str, token: &str, seed: u64) -> ClientProcess {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_loop_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB_ENV, client_db(dir, index))
        .env(CHILD_URL_ENV, url)
        .env(CHILD_TOKEN_ENV, token)
        .env(CHILD_SEED_ENV, seed.to_string())
        .env(CHILD_INDEX_ENV, index.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(append(&client_log(dir, index)))
        .spawn()
        .expect("spawn a client child");
    let stdout = child.stdout.take().unwrap();
    let reports = thread::spawn(move || {
        let mut reports = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest may print `test crash_loop_child ... ` in front of the first report;
            // a line cut by the kill does not parse and is not a report.
            if let Some((_, json)) = line.split_once(PREFIX) {
                if let Ok(r) = serde_json::from_str(json) {
                    reports.push(r);
                }
            }
        }
        reports
    });
    ClientProcess { child, reports }
}

fn client_db(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("client{index}.db"))
}

fn client_log(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("client{index}.log"))
}

fn kill(child: &mut Child) -> std::process::ExitStatus {
    // SIGKILL; fails only if the child was already reaped.
    let _ = child.kill();
    child.wait().unwrap()
}

/// Everything the parent has running; killed on drop, so a failing test leaves no process.
#[derive(Default)]
struct Processes {
    server: Option<ServerProcess>,
    clients: Vec<Option<ClientProcess>>,
}

impl Drop for Processes {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            kill(&mut s.child);
        }
        for c in self.clients.iter_mut().filter_map(Option::take) {
            let mut c = c;
            kill(&mut c.child);
        }
    }
}

// ---- the parent: what each client wrote ---------------------------------------------------

/// The parent's record of one client's writes, built from its children's reports.
#[derive(Default)]
struct Ledger {
    /// Every mutation known to be in the outbox, by seq (always `1..=n`).
    muts: BTreeMap<u64, (RecordKey, Op)>,
    /// The seqs whose call returned.
    returned: u64,
    /// A transaction that began but was not reported done.
    in_doubt: Option<(u64, Vec<(RecordKey, Op)>)>,
    /// Kills that found this transaction in flight and it committed / did not.
    in_doubt_committed: u64,
    in_doubt_lost: u64,
    /// Kills before the child reported its open.
    killed_before_open: u64,
    /// Mutations a reopened client had no acknowledgement for and pushes (again), summed
    /// over reopens; some of them the server had applied already (duplicates to skip).
    resent: u64,
}

impl Ledger {
    fn last_seq(&self) -> u64 {
        self.muts.keys().next_back().copied().unwrap_or(0)
    }

    /// Settles the transaction in doubt with the outbox's last seq after a reopen, and
    /// checks that exactly the known mutations are in the outbox.
    fn opened(&mut self, who: &str, last_seq: u64) {
        if let Some((first, ops)) = self.in_doubt.take() {
            let end = first + ops.len() as u64 - 1;
            assert_eq!(first, self.last_seq() + 1, "{who}: reports out of order");
            if last_seq >= end {
                for (i, m) in ops.into_iter().enumerate() {
                    self.muts.insert(first + i as u64, m);
                }
                self.in_doubt_committed += 1;
            } else {
                assert_eq!(
                    last_seq,
                    first - 1,
                    "{who}: a transaction of seqs {first}..={end} is torn in the outbox"
                );
                self.in_doubt_lost += 1;
            }
        }
        assert_eq!(
            last_seq,
            self.last_seq(),
            "{who}: the outbox does not end at the last write known to have committed \
             (returned through seq {})",
            self.returned
        );
    }

    fn absorb(&mut self, who: &str, reports: Vec<Report>) {
        if !matches!(reports.first(), Some(Report::Open { .. })) {
            self.killed_before_open += 1;
        }
        for r in reports {
            match r {
                Report::Open {
                    last_seq,
                    acked_through,
                } => {
                    self.opened(who, last_seq);
                    self.resent += last_seq - acked_through;
                }
                Report::Begin { first, ops } => {
                    assert!(self.in_doubt.is_none(), "{who}: two transactions at once");
                    assert_eq!(first, self.last_seq() + 1, "{who}: seqs skip");
                    self.in_doubt = Some((first, ops));
                }
                Report::Done { first } => {
                    let (begun, ops) = self.in_doubt.take().expect("done after begin");
                    assert_eq!(begun, first, "{who}: done for another transaction");
                    for (i, m) in ops.into_iter().enumerate() {
                        self.muts.insert(first + i as u64, m);
                    }
                    self.returned = self.last_seq();
                }
            }
        }
    }
}

/// The records every client's mutations make, replayed in seq order per client (clients
/// write disjoint records and fields, so the order across clients does not matter).
fn replay(ledgers: &[Ledger]) -> Docs {
    let mut docs: BTreeMap<(String, String), Option<Doc>> = BTreeMap::new();
    for ledger in ledgers {
        for (k, op) in ledger.muts.values() {
            let slot = docs
                .entry((k.collection.to_string(), k.id.to_string()))
                .or_default();
            *slot = tidesync_core::patch::apply_op(slot.take(), op);
        }
    }
    docs.into_iter()
        .filter_map(|(k, d)| d.map(|d| (k, d)))
        .collect()
}

// ---- the parent: the server's view over HTTP ----------------------------------------------

struct ServerView {
    version: u64,
    docs: Docs,
}

fn pull_pages(url: &str, token: &str, client_id: &str, limit: u32) -> Vec<PullResponse> {
    let url = format!("{url}/v1/pull");
    let token = token.to_owned();
    let client_id = client_id.to_owned();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let http = reqwest::Client::new();
            let mut cursor = serde_json::Map::new();
            let mut pages = Vec::new();
            loop {
                let body = json!({"client_id": client_id, "protocol": 1, "spaces": [SPACE],
                                  "cursor": cursor, "limit": limit});
                let response = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                    .expect("pull from the server");
                assert!(response.status().is_success(), "{}", response.status());
                let page: PullResponse = response.json().await.expect("a pull response");
                cursor = serde_json::to_value(&page.cursor)
                    .unwrap()
                    .as_object()
                    .cloned()
                    .unwrap();
                let more = page.has_more;
                pages.push(page);
                if !more || limit == 1 {
                    return pages;
                }
            }
        })
}

fn server_view(url: &str, token: &str) -> ServerView {
    let pages = pull_pages(url, token, "observer", 1_000);
    let space = SpaceName::new(SPACE).unwrap();
    let version = pages
        .last()
        .and_then(|p| p.cursor.get(&space).copied())
        .unwrap_or(0);
    let mut docs = Docs::new();
    for change in pages.into_iter().flat_map(|p| p.changes) {
        let k = (change.collection.to_string(), change.id.to_string());
        match change.doc {
            Some(d) if !change.deleted => {
                docs.insert(k, d);
            }
            _ => {
                docs.remove(&k);
            }
        }
    }
    ServerView { version, docs }
}

/// The server's `acked_through` for `client_id`, read through a one-change pull as that
/// client (pulls change nothing but the puller's cursor, which the server does not keep).
fn server_acked_through(url: &str, token: &str, client_id: &str) -> u64 {
    pull_pages(url, token, client_id, 1)[0].acked_through
}

fn client_docs(client: &Client) -> Docs {
    let space = SpaceName::new(SPACE).unwrap();
    let mut out = Docs::new();
    for collection in [OWN, SHARED] {
        let name = CollectionName::new(collection).unwrap();
        let mut options = ListOptions {
            after: None,
            limit: 10_000,
        };
        loop {
            let page = client.list(&space, &name, &options).unwrap();
            for record in page.records {
                out.insert(
                    (collection.to_owned(), record.key.id.to_string()),
                    record.doc,
                );
            }
            match page.next {
                Some(next) => options.after = Some(next),
                None => break,
            }
        }
    }
    out
}

// ---- the test -----------------------------------------------------------------------------

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {s:?}")),
        Err(_) => default,
    }
}

/// Prints how to replay the run if the test panics.
struct SeedGuard(u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "crash loop failed; replay with {SEED_ENV}={} cargo test -p tidesync-cli --test crash_loop",
                self.0
            );
        }
    }
}

fn token(data: &Path) -> String {
    let out = common::command()
        .args(["token", "create", "--data-dir", data.to_str().unwrap()])
        .args(["--user", "looper", "--space", SPACE])
        .env_remove("TIDESYNC_DATA_DIR")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("tsk_"))
        .unwrap()
        .to_owned()
}

#[derive(Debug, Default)]
struct Tally {
    server_kills: u64,
    server_kills_before_ready: u64,
    client_kills: u64,
    late_server_starts: u64,
    port_taken: u64,
}

#[test]
fn killed_servers_and_clients_lose_nothing_apply_everything_once_and_converge() {
    if std::env::var_os(CHILD_DB_ENV).is_some() {
        return;
    }
    let seed = env_or(SEED_ENV, rand::random::<u64>());
    let rounds: u64 = env_or(ROUNDS_ENV, DEFAULT_ROUNDS);
    let n_clients: usize = env_or(CLIENTS_ENV, DEFAULT_CLIENTS);
    eprintln!("crash loop: {SEED_ENV}={seed} {ROUNDS_ENV}={rounds} {CLIENTS_ENV}={n_clients}");
    let _guard = SeedGuard(seed);
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let server_log = dir.path().join("server.log");
    let token = token(&data);
    let port = restartable_port();
    let url = format!("http://127.0.0.1:{port}");

    let mut procs = Processes {
        server: None,
        clients: (0..n_clients).map(|_| None).collect(),
    };
    let mut ledgers: Vec<Ledger> = (0..n_clients).map(|_| Ledger::default()).collect();
    let mut tally = Tally::default();

    for _round in 0..rounds {
        // Bring up what is down; sometimes the server only after the clients (they start
        // offline and must find it later).
        let late = procs.server.is_none() && rng.random_bool(0.3);
        if procs.server.is_none() && !late {
            procs.server = Some(start_server(&data, port, &server_log));
        }
        for (i, slot) in procs.clients.iter_mut().enumerate() {
            if slot.is_none() {
                *slot = Some(start_client(dir.path(), i, &url, &token, rng.random()));
            }
        }
        if late {
            thread::sleep(Duration::from_millis(rng.random_range(0..150)));
            procs.server = Some(start_server(&data, port, &server_log));
            tally.late_server_starts += 1;
        }

        // Usually let them write and sync for a while; sometimes kill right away, while
        // processes are starting, opening their databases and recovering.
        let early = rng.random_bool(0.15);
        let run_ms = if early {
            rng.random_range(0..15)
        } else {
            rng.random_range(20..200)
        };
        thread::sleep(Duration::from_millis(run_ms));

        // Kill: one client, the server, the server and a client, or every client.
        let pick = rng.random_range(0..n_clients);
        let mut victims: Vec<Option<usize>> = match rng.random_range(0..10) {
            0..=3 => vec![Some(pick)],
            4 | 5 => vec![None],
            6 | 7 => vec![None, Some(pick)],
            _ => (0..n_clients).map(Some).collect(),
        };
        victims.shuffle(&mut rng);
        for victim in victims {
            match victim {
                None => {
                    let mut server = procs.server.take().unwrap();
                    let ready = server.ready.try_recv().is_ok();
                    let status = kill(&mut server.child);
                    if status.signal() != Some(SIGKILL) {
                        // The one way it may stop by itself: the port was taken while it was
                        // down (it is restarted next round).
                        let log = tail(&server_log);
                        assert!(
                            log.lines()
                                .last()
                                .is_some_and(|l| l.contains("cannot listen")),
                            "the server stopped on its own ({status}); its log:\n{log}"
                        );
                        tally.port_taken += 1;
                    }
                    tally.server_kills += 1;
                    tally.server_kills_before_ready += u64::from(!ready);
                }
                Some(i) => {
                    let mut c = procs.clients[i].take().unwrap();
                    let status = kill(&mut c.child);
                    assert_eq!(
                        status.signal(),
                        Some(SIGKILL),
                        "client {i} stopped on its own ({status}); its log:\n{}",
                        tail(&client_log(dir.path(), i))
                    );
                    let reports = c.reports.join().unwrap();
                    ledgers[i].absorb(&format!("client {i}"), reports);
                    tally.client_kills += 1;
                }
            }
            thread::sleep(Duration::from_millis(rng.random_range(0..15)));
        }
    }

    // The end: kill everything once more, restart the server, reopen every client here.
    for (i, (slot, ledger)) in procs.clients.iter_mut().zip(&mut ledgers).enumerate() {
        if let Some(mut c) = slot.take() {
            kill(&mut c.child);
            ledger.absorb(&format!("client {i}"), c.reports.join().unwrap());
            tally.client_kills += 1;
        }
    }
    if let Some(mut server) = procs.server.take() {
        kill(&mut server.child);
        tally.server_kills += 1;
    }
    let loop_time = started.elapsed();
    procs.server = Some(start_server_ready(&data, port, &server_log));

    let clients: Vec<Client> = (0..n_clients)
        .map(|i| {
            let client =
                Client::open(client_config(&client_db(dir.path(), i), &url, &token, seed)).unwrap();
            let last_seq = client.counts().unwrap().last_seq;
            ledgers[i].opened(&format!("client {i} (final)"), last_seq);
            client
        })
        .collect();
    let written: u64 = ledgers.iter().map(Ledger::last_seq).sum();

    // Everyone pushes everything, then pulls up to the server's (now final) version.
    let deadline = Instant::now() + T;
    let wait = |c: &Client| {
        c.wait_synced(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|e| panic!("waiting for {}: {e}", c.client_id()))
    };
    clients.iter().for_each(|c| {
        wait(c);
    });
    let server = server_view(&url, &token);
    let space = SpaceName::new(SPACE).unwrap();
    for (i, c) in clients.iter().enumerate() {
        c.sync_now();
        wait(c);
        let at = c.cursor().unwrap().get(&space).copied();
        assert!(
            at >= Some(server.version),
            "client {i} pulled to {at:?}, the server is at {}",
            server.version
        );
    }

    // Exactly once.
    assert_eq!(
        server.version, written,
        "the server applied {} mutations for {written} written (exactly once)",
        server.version
    );
    for (i, (client, ledger)) in clients.iter().zip(&ledgers).enumerate() {
        let acked = server_acked_through(&url, &token, client.client_id().as_str());
        assert_eq!(acked, ledger.last_seq(), "client {i}: server acked_through");
        assert_eq!(
            client.counts().unwrap().acked_through,
            ledger.last_seq(),
            "client {i}: its own acked_through"
        );
        // No loss: whatever returned is among the mutations the server acknowledged.
        assert!(
            ledger.returned <= acked,
            "client {i}: a returned write is missing"
        );
    }

    // Convergence: the server holds every mutation replayed, every replica equals it.
    let expected = replay(&ledgers);
    assert_eq!(
        server.docs, expected,
        "the server's records are not the clients' mutations replayed"
    );
    for (i, client) in clients.iter().enumerate() {
        assert_eq!(client_docs(client), server.docs, "client {i}'s view");
        assert!(
            client.conflicts().unwrap().is_empty(),
            "client {i}: conflicts"
        );
        assert!(
            client.rejections().unwrap().is_empty(),
            "client {i}: rejections"
        );
    }

    let in_doubt: (u64, u64) = ledgers.iter().fold((0, 0), |(c, l), g| {
        (c + g.in_doubt_committed, l + g.in_doubt_lost)
    });
    let before_open: u64 = ledgers.iter().map(|g| g.killed_before_open).sum();
    let resent: u64 = ledgers.iter().map(|g| g.resent).sum();
    let returned: u64 = ledgers.iter().map(|g| g.returned).sum();
    eprintln!(
        "crash loop: {rounds} rounds in {loop_time:?} ({:?} with the final sync): {tally:?}; \
         {written} mutations written ({returned} reported returned; kills mid-transaction: \
         {} committed, {} rolled back; {before_open} client kills before open; outbox backlog \
         summed over reopens: {resent}), {} records, server version {}",
        started.elapsed(),
        in_doubt.0,
        in_doubt.1,
        server.docs.len(),
        server.version,
    );
    for client in clients {
        client.close();
    }
}
