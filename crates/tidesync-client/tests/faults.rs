//! The network misbehaving between clients and server: a [`FaultProxy`] cuts answers after
//! the server committed, refuses connections, adds latency, and runs seeded random fault
//! plans while several clients write. Every test ends with the network healed and checks
//! exactly-once (version counts), no loss and convergence.
//!
//! Inputs: `TIDESYNC_FAULT_SEED` replays one random run (its fault plan, the clients' writes
//! and backoff jitter; thread timing still varies), `TIDESYNC_FAULT_RUNS` changes the number
//! of random runs (default 6).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tidesync_client::{
    Client, ClientConfig, Connectivity, FailureKind, Phase, Reachability, StaticToken, Status,
};
use tidesync_protocol::{Doc, Op, PullResponse, RecordKey, SpaceName, Stamp};
use tidesync_server::MergeRules;
use tidesync_testkit::{Fault, FaultPlan, FaultProxy, SEED_ENV};

const T: Duration = Duration::from_secs(30);

fn proxied_config(
    dir: &std::path::Path,
    name: &str,
    proxy: &FaultProxy,
    token: &str,
) -> ClientConfig {
    client_config(
        dir,
        name,
        &format!("http://{}", proxy.addr()),
        Arc::new(StaticToken(token.into())),
    )
}

fn cuts(proxy: &FaultProxy) -> usize {
    proxy
        .events()
        .iter()
        .filter(|e| matches!(e.fault, Fault::ResponseCut { .. }))
        .count()
}

// ---- (a) a push answer cut after the server committed -----------------------------------

#[test]
fn a_push_answer_cut_after_the_commit_is_retried_and_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), MergeRules::default());
    let proxy = FaultProxy::start(server.addr).unwrap();
    let token = server.token("alice");
    let mut config = proxied_config(dir.path(), "a", &proxy, &token);
    // No idle poll may race the push for the cut; pokes and writes drive everything here.
    config.sync.idle_poll_ms = 600_000;
    let client = Client::open(config).unwrap();
    let mut written = 0u64;
    let mut seqs = Vec::new();
    // The cut hits whatever response begins next. That is the push unless the event stream
    // was (re)connecting just then; such an attempt is recognised and repeated.
    let mut hit = None;
    for attempt in 0..5 {
        client.wait_synced(T).unwrap();
        let events = client.subscribe();
        let before = server.version();
        let cuts_before = cuts(&proxy);
        proxy.cut_next_responses(1);
        // One transaction of five and three single writes: one push.
        client
            .transaction(|tx| {
                for i in 0..5 {
                    let id = format!("t{attempt}-{i}");
                    seqs.push(tx.put(&key("todos", &id), doc(json!({"i": i})))?.seq);
                }
                Ok(())
            })
            .unwrap();
        for i in 0..3 {
            let id = format!("s{attempt}-{i}");
            seqs.push(
                client
                    .put(&key("todos", &id), doc(json!({"i": i})))
                    .unwrap()
                    .seq,
            );
        }
        written += 8;
        wait_for("the proxy to cut a response", T, || {
            cuts(&proxy) > cuts_before
        });
        client.wait_synced(T).unwrap();
        assert_eq!(
            server.version(),
            before + 8,
            "attempt {attempt}: each of the 8 mutations applied once"
        );
        let seen = statuses(&events);
        let push_cut = seen.windows(2).any(|w| {
            w[0].phase == Phase::Uploading
                && w[1].phase == Phase::Backoff
                && w[1]
                    .last_error
                    .as_ref()
                    .is_some_and(|e| e.kind == FailureKind::Network)
        });
        if push_cut {
            hit = Some(attempt);
            break;
        }
        eprintln!("attempt {attempt}: the cut hit another response; again");
    }
    let attempt = hit.expect("no attempt in 5 had its push answer cut");
    eprintln!("push answer cut at attempt {attempt}");
    assert_eq!(server.version(), written, "nothing applied twice, ever");
    let last = *seqs.last().unwrap();
    assert_eq!(server.acked_through("alice", client.client_id()), last);
    assert_eq!(client.counts().unwrap().acked_through, last);
    assert_eq!(
        client_docs(&client, &space(), &["todos"]),
        live(&server_docs(&server.snapshot()))
    );
    assert_eq!(client.status().unwrap().pending, 0);
}

// ---- (b) connections refused, then back -------------------------------------------------

#[test]
fn refused_connections_are_one_offline_transition_and_the_queue_syncs_after() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), MergeRules::default());
    let proxy = FaultProxy::start(server.addr).unwrap();
    let token = server.token("alice");
    let client = Client::open(proxied_config(dir.path(), "a", &proxy, &token)).unwrap();
    client.wait_synced(T).unwrap();
    let events = client.subscribe();

    // The server "goes down": connects are refused and live connections die.
    proxy.offline(true);
    proxy.kill_all();
    wait_for("the proxy to refuse connects", T, || {
        std::net::TcpStream::connect(proxy.addr()).is_err()
    });
    for i in 0..5 {
        client
            .put(&key("todos", &format!("t{i}")), doc(json!({"i": i})))
            .unwrap();
    }
    // Several attempts while down: each is a Connecting phase that fails.
    let mut seen: Vec<Status> = Vec::new();
    wait_for("three failed attempts while refused", T, || {
        seen.extend(statuses(&events));
        let offline_at = seen
            .iter()
            .position(|s| s.connectivity == Connectivity::Offline);
        offline_at.is_some_and(|at| {
            seen[at..]
                .windows(2)
                .filter(|w| w[0].phase != Phase::Connecting && w[1].phase == Phase::Connecting)
                .count()
                >= 3
        })
    });
    let status = client.status().unwrap();
    assert_eq!(
        status.pending, 5,
        "writes queue while the server is unreachable"
    );
    assert_eq!(status.connectivity, Connectivity::Offline);
    assert_eq!(server.version(), 0);

    proxy.offline(false);
    client.wait_synced(T).unwrap();
    seen.extend(statuses(&events));
    assert_eq!(server.version(), 5);
    let mut connectivity: Vec<Connectivity> = seen.iter().map(|s| s.connectivity).collect();
    connectivity.dedup();
    assert_eq!(
        connectivity,
        [
            Connectivity::Online,
            Connectivity::Offline,
            Connectivity::Online
        ],
        "one Offline transition for the whole outage, not one per retry"
    );
    let attempts = seen
        .windows(2)
        .filter(|w| w[0].phase != Phase::Connecting && w[1].phase == Phase::Connecting)
        .count();
    assert!(attempts >= 3, "{attempts} attempts");
    assert_eq!(
        client_docs(&client, &space(), &["todos"]),
        live(&server_docs(&server.snapshot()))
    );
}

// ---- (c) latency ------------------------------------------------------------------------

#[test]
fn with_added_latency_sync_completes_and_shows_upload_progress() {
    const WRITES: u64 = 200;
    const DELAY: Duration = Duration::from_millis(100);
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), MergeRules::default());
    let proxy = FaultProxy::start(server.addr).unwrap();
    proxy.set_delay(DELAY, Duration::ZERO);
    let token = server.token("alice");
    let mut config = proxied_config(dir.path(), "a", &proxy, &token);
    config.start_online = false;
    config.push_batch = 50;
    let client = Client::open(config).unwrap();
    for i in 0..WRITES {
        client
            .put(&key("todos", &format!("t{i:03}")), doc(json!({"i": i})))
            .unwrap();
    }
    let events = client.subscribe();
    let started = Instant::now();
    client.resume();
    client.wait_synced(T).unwrap();
    let took = started.elapsed();
    assert_eq!(server.version(), WRITES);
    let seen = statuses(&events);
    let uploads: Vec<_> = seen
        .iter()
        .filter(|s| s.phase == Phase::Uploading)
        .filter_map(|s| s.upload)
        .collect();
    assert!(
        uploads.iter().any(|u| u.done > 0 && u.done < u.total),
        "n of N seen while uploading: {uploads:?}"
    );
    assert!(uploads.iter().all(|u| u.total == WRITES), "{uploads:?}");
    // Four pushes, each a round trip of at least 2 × DELAY: the latency was really there.
    assert!(took >= DELAY * 8, "synced in {took:?}");
    assert_eq!(
        client_docs(&client, &space(), &["todos"]),
        live(&server_docs(&server.snapshot()))
    );
}

// ---- (d) seeded random fault runs -------------------------------------------------------

const RUNS_ENV: &str = "TIDESYNC_FAULT_RUNS";
const DEFAULT_RUNS: usize = 6;
/// Records every client writes (contested).
const SHARED_COLLECTION: &str = "docs";
const SHARED_KEYS: usize = 6;
/// Records only one client writes (`c<client>-<n>`): there, every mutation changes state,
/// so the space version counts applications exactly.
const SOLO_COLLECTION: &str = "mine";
const SOLO_KEYS: usize = 3;

fn shared_space() -> SpaceName {
    space()
}

fn solo_space() -> SpaceName {
    space_named("team:2")
}

/// One local write whose call returned.
#[derive(Debug, Clone)]
struct Written {
    stamp: Stamp,
    seq: u64,
    tx: u64,
    key: RecordKey,
    op: Op,
}

/// Prints the seed if the run panics.
struct SeedGuard(u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("fault run failed; replay with {SEED_ENV}={}", self.0);
        }
    }
}

#[test]
fn random_fault_runs_converge_exactly_once_without_loss() {
    let seeds: Vec<u64> = match std::env::var(SEED_ENV) {
        Ok(s) => vec![s.trim().parse().expect("TIDESYNC_FAULT_SEED must be a u64")],
        Err(_) => {
            let runs = std::env::var(RUNS_ENV)
                .map(|s| s.parse().expect("TIDESYNC_FAULT_RUNS must be a number"))
                .unwrap_or(DEFAULT_RUNS);
            (0..runs).map(|_| rand::random()).collect()
        }
    };
    for (i, seed) in seeds.iter().enumerate() {
        eprintln!("fault run {i}: seed {seed} (replay with {SEED_ENV}={seed})");
        let _guard = SeedGuard(*seed);
        fault_run(*seed);
    }
}

fn fault_run(seed: u64) {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), MergeRules::default());
    let proxy = FaultProxy::start(server.addr).unwrap();
    proxy.set_plan(
        FaultPlan::new(seed)
            .refuse(0.05)
            .drop_mid_request(0.1)
            .cut(0.15)
            .delay(Duration::ZERO..Duration::from_millis(3)),
    );
    let spaces = [shared_space(), solo_space()];
    let token = server.token_for("alice", &spaces);
    let n_clients = rng.random_range(2..=3usize);
    let clients: Vec<Arc<Client>> = (0..n_clients)
        .map(|c| {
            let mut config = proxied_config(dir.path(), &format!("c{c}"), &proxy, &token);
            config.spaces = spaces.to_vec();
            config.push_batch = rng.random_range(3..=20);
            config.seed = Some(rng.random());
            Arc::new(Client::open(config).unwrap())
        })
        .collect();

    // Everyone writes at once while the faults run.
    let writers: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(c, client)| {
            let client = client.clone();
            let writer_seed = rng.random::<u64>();
            thread::spawn(move || write_randomly(&client, c, writer_seed))
        })
        .collect();
    let written: Vec<Vec<Written>> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    let injected = |p: &FaultProxy| {
        let s = p.stats();
        s.responses_cut + s.requests_dropped + s.refused
    };
    wait_for("the plan to inject faults", T, || injected(&proxy) > 0);

    // The network heals: no plan for new connections, and the connections accepted under
    // the plan are closed.
    proxy.clear_plan();
    proxy.kill_all();
    let faults_injected = proxy.stats();
    for client in &clients {
        client.sync_now();
    }

    // Convergence: everyone synced, every view equals the server.
    let collections = |space: &SpaceName| {
        if *space == solo_space() {
            SOLO_COLLECTION
        } else {
            SHARED_COLLECTION
        }
    };
    let deadline = Instant::now() + T;
    loop {
        let synced = clients
            .iter()
            .all(|c| c.status().is_some_and(|s| s.is_synced()));
        let on_server = live(&server_docs(&server.snapshot_of(&spaces)));
        let diverged = clients.iter().enumerate().find_map(|(i, c)| {
            let mut view = Docs::new();
            for space in &spaces {
                view.extend(client_docs(c, space, &[collections(space)]));
            }
            (view != on_server).then_some((i, view))
        });
        if synced && diverged.is_none() {
            break;
        }
        if Instant::now() >= deadline {
            let statuses: Vec<_> = clients.iter().map(|c| c.status()).collect();
            panic!(
                "no convergence in {T:?}: synced={synced}, first diverging client: {:?}\nserver: {on_server:?}\nstatuses: {statuses:?}",
                diverged
            );
        }
        thread::sleep(Duration::from_millis(20));
    }

    // No loss: the server state is every returned write merged by its stamp (last writer
    // wins per register, so the order the server happened to see them in does not matter).
    let mut all: Vec<&Written> = written.iter().flatten().collect();
    all.sort_by(|a, b| a.stamp.cmp(&b.stamp));
    let expected = merged(all.iter().copied());
    let snapshot = server.snapshot_of(&spaces);
    let on_server = server_docs(&snapshot);
    if on_server != expected {
        explain_difference(&snapshot, &expected, &all);
    }
    assert_eq!(
        on_server, expected,
        "the server state is not every write merged by stamp (details above)"
    );

    // Exactly once: in the solo space every mutation changes state, so its version counts
    // applications; and every client's last seq is acknowledged on both sides.
    let solo = all.iter().filter(|w| w.key.space == solo_space()).count() as u64;
    assert_eq!(
        server.version_of(&solo_space()),
        solo,
        "solo-space mutations applied exactly once"
    );
    for (client, writes) in clients.iter().zip(&written) {
        let last = writes.len() as u64; // seqs are 1..=N
        assert_eq!(server.acked_through("alice", client.client_id()), last);
        assert_eq!(client.counts().unwrap().acked_through, last);
        let status = client.status().unwrap();
        assert_eq!((status.pending, status.rejections), (0, 0));
    }
    eprintln!(
        "fault run {seed}: {n_clients} clients, {} writes ({solo} solo), faults {faults_injected:?}, {:?}",
        all.len(),
        started.elapsed()
    );
}

/// The writes applied in the given order, plainly.
fn merged<'a>(writes: impl IntoIterator<Item = &'a Written>) -> Docs {
    let mut docs = Docs::new();
    for w in writes {
        let k = (
            w.key.space.as_str().to_owned(),
            w.key.collection.as_str().to_owned(),
            w.key.id.as_str().to_owned(),
        );
        let doc = docs.entry(k).or_default();
        *doc = tidesync_core::patch::apply_op(doc.take(), &w.op);
    }
    docs
}

/// Prints, for each record the server holds differently from `expected`, its stamps, the
/// writes to it by stamp, and which single lost write would explain the server's state.
fn explain_difference(snapshot: &PullResponse, expected: &Docs, by_stamp: &[&Written]) {
    let on_server = server_docs(snapshot);
    for change in &snapshot.changes {
        let k = (
            change.space.as_str().to_owned(),
            change.collection.as_str().to_owned(),
            change.id.as_str().to_owned(),
        );
        let want = expected.get(&k).cloned().flatten();
        let got = on_server.get(&k).cloned().flatten();
        if got == want {
            continue;
        }
        eprintln!(
            "{k:?}: the server has {got:?} with {:?}\n  expected {want:?}; its writes by stamp:",
            change.stamps
        );
        let writes: Vec<&Written> = by_stamp
            .iter()
            .copied()
            .filter(|w| w.key.space == change.space && w.key.id == change.id)
            .collect();
        for w in &writes {
            eprintln!("  {} seq {} tx {} {:?}", w.stamp, w.seq, w.tx, w.op);
        }
        for skip in 0..writes.len() {
            let without = writes
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, w)| *w);
            if merged(without).into_values().next().flatten() == got {
                let w = writes[skip];
                eprintln!(
                    "  explained by losing {} (seq {} tx {})",
                    w.stamp, w.seq, w.tx
                );
            }
        }
    }
}

/// Random puts, patches and deletes (some in transactions of 2..=4) on the shared keys and
/// on this client's own keys, with the occasional offline/online hint; returns every write
/// with its stamp. Ends online.
fn write_randomly(client: &Client, c: usize, seed: u64) -> Vec<Written> {
    let mut rng = StdRng::seed_from_u64(seed);
    let me = client.client_id().clone();
    let mut out = Vec::new();
    let ops = rng.random_range(80..=150);
    let mut offline = false;
    for n in 0..ops {
        // Now and then the app's connectivity hint flips, mid-exchange or not.
        if rng.random_bool(0.03) {
            offline = !offline;
            client.set_network(if offline {
                Reachability::Offline
            } else {
                Reachability::Online
            });
        }
        let size = if rng.random_bool(0.15) {
            rng.random_range(2..=4)
        } else {
            1
        };
        let plan: Vec<(RecordKey, Op)> = (0..size)
            .map(|i| {
                let key = if rng.random_bool(0.6) {
                    let k = rng.random_range(0..SHARED_KEYS);
                    RecordKey::parse(shared_space().as_str(), SHARED_COLLECTION, &format!("k{k}"))
                } else {
                    let k = rng.random_range(0..SOLO_KEYS);
                    RecordKey::parse(solo_space().as_str(), SOLO_COLLECTION, &format!("c{c}-{k}"))
                }
                .unwrap();
                (key, random_op(&mut rng, c, n, i))
            })
            .collect();
        let receipts = client
            .transaction(|tx| {
                plan.iter()
                    .map(|(key, op)| match op {
                        Op::Put { doc } => tx.put(key, doc.clone()),
                        Op::Patch { fields } => tx.patch(key, fields.clone()),
                        Op::Delete => tx.delete(key),
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .unwrap();
        for ((key, op), receipt) in plan.into_iter().zip(receipts) {
            out.push(Written {
                stamp: Stamp::new(receipt.hlc, me.clone()),
                seq: receipt.seq,
                tx: receipt.tx,
                key,
                op,
            });
        }
        thread::sleep(Duration::from_micros(rng.random_range(0..3_000)));
    }
    client.set_network(Reachability::Online);
    out
}

/// Top-level scalar fields only, so a patch is queued exactly as written.
fn random_op(rng: &mut StdRng, c: usize, n: usize, i: usize) -> Op {
    let mut fields = Doc::new();
    fields.insert("by".into(), json!(format!("c{c}/{n}/{i}")));
    match rng.random_range(0..10) {
        0..=3 => {
            for f in 0..rng.random_range(0..3) {
                fields.insert(format!("f{f}"), json!(rng.random_range(0..100)));
            }
            Op::Put { doc: fields }
        }
        4..=8 => {
            let set = rng.random_range(0..3);
            fields.insert(format!("f{set}"), json!(rng.random_range(0..100)));
            let unset = rng.random_range(0..3);
            if unset != set {
                fields.insert(format!("f{unset}"), Value::Null);
            }
            Op::Patch { fields }
        }
        _ => Op::Delete,
    }
}

// ---- regressions found by the random runs -----------------------------------------------

/// Found by `random_fault_runs_converge_exactly_once_without_loss`: a delete that reaches the
/// server after a newer write to the same record loses the liveness register, but its clear
/// still voids the fields written before it. The merge computed that, yet reported "no
/// effect", so the server never stored it: an older field came back, and the outcome
/// depended on the order the server saw the writes in.
#[test]
fn a_late_delete_still_voids_the_fields_written_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), MergeRules::default());
    let token = server.token("alice");
    let a = open_client(dir.path(), "a", &server.url(), &token);
    let b = open_client(dir.path(), "b", &server.url(), &token);
    let k = key("todos", "x");
    a.put(&k, doc(json!({"old": 1}))).unwrap();
    a.wait_synced(T).unwrap();
    wait_for("b has the record", T, || view(&b, &k).is_some());
    b.set_network(Reachability::Offline);
    wait_status(&b, "b offline", T, |s| s.phase == Phase::Offline);
    let deleted = b.delete(&k).unwrap();
    // a's patch is stamped after b's delete...
    wait_for("a's clock passes b's delete", T, || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        now > deleted.hlc.millis()
    });
    let patched = a.patch(&k, doc(json!({"new": 2}))).unwrap();
    assert!(patched.hlc > deleted.hlc);
    a.wait_synced(T).unwrap();
    // ...but reaches the server first.
    b.set_network(Reachability::Online);
    b.wait_synced(T).unwrap();
    // Last writer wins per register: the patch resurrects the record with its own field
    // only; the delete, older than the patch but newer than "old", removed "old".
    let want = json!({"new": 2});
    assert_eq!(
        live(&server_docs(&server.snapshot()))
            .into_values()
            .next()
            .flatten(),
        Some(doc(want.clone())),
        "the server's record"
    );
    assert_eq!(view(&b, &k), Some(want.clone()));
    wait_for("a converges", T, || view(&a, &k) == Some(want.clone()));
}
