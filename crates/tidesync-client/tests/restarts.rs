//! Restarts in the middle of an upload: the server (graceful stop, start again on the same
//! port and database) and the client process (SIGKILL, reopen the same database).
//!
//! Every write here changes the server's state (one client, fresh stamps, every patch sets a
//! new value), so the space version counts applications: `version == mutations` is
//! exactly-once, and the server state after `v` versions must equal the first `v` mutations
//! replayed in seq order (order, atomicity, nothing skipped).
//!
//! Inputs: `TIDESYNC_KILL_SEED` replays the SIGKILL test (its write plans and kill points;
//! the exact kill moment still depends on scheduling), `TIDESYNC_KILL_ROUNDS` changes its
//! number of rounds (default 5).
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tidesync_client::{Client, ClientEvent, Phase, StaticToken};
use tidesync_protocol::{Op, RecordKey};
use tidesync_server::MergeRules;

const T: Duration = Duration::from_secs(30);

/// Plain replay of `(key, op)`s in order, as the server must hold them (single writer).
fn replay<'a>(muts: impl IntoIterator<Item = &'a (RecordKey, Op)>) -> Docs {
    let mut docs = Docs::new();
    for (key, op) in muts {
        let k = (
            key.space.as_str().to_owned(),
            key.collection.as_str().to_owned(),
            key.id.as_str().to_owned(),
        );
        let doc = docs.entry(k).or_default();
        *doc = tidesync_core::patch::apply_op(doc.take(), op);
    }
    docs
}

// ---- the server restarted mid-push ------------------------------------------------------

#[test]
fn a_server_restarted_mid_push_is_recovered_from_without_loss_or_duplicates() {
    const WRITES: u64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(dir.path(), MergeRules::default());
    let token = server.token("alice");
    let mut config = client_config(dir.path(), "a", &server.url(), Arc::new(StaticToken(token)));
    config.start_online = false;
    config.push_batch = 50;
    let client = Client::open(config).unwrap();

    // Single-mutation writes: puts to distinct records, and every tenth a patch that sets a
    // new counter value on one of five shared records. Each changes the server state.
    let mut written = Vec::new();
    for i in 0..WRITES {
        let (k, op) = if i % 10 == 9 {
            let k = key("counters", &format!("c{}", i % 5));
            (
                k,
                Op::Patch {
                    fields: doc(json!({"n": i, "last": format!("w{i}")})),
                },
            )
        } else {
            (
                key("items", &format!("i{i:04}")),
                Op::Put {
                    doc: doc(json!({"i": i, "title": format!("item {i}")})),
                },
            )
        };
        let receipt = match &op {
            Op::Put { doc } => client.put(&k, doc.clone()),
            Op::Patch { fields } => client.patch(&k, fields.clone()),
            Op::Delete => unreachable!(),
        }
        .unwrap();
        assert_eq!(receipt.seq, i + 1);
        written.push((k, op));
    }
    assert_eq!(server.version(), 0, "nothing leaves a paused client");

    let events = client.subscribe();
    client.resume();
    let during = wait_status(&client, "an upload in progress", T, |s| {
        s.phase == Phase::Uploading && s.upload.is_some_and(|u| u.done > 0)
    });
    let at_restart = server.version();
    server.restart();
    let upload = during.upload.unwrap();
    assert!(
        upload.done < upload.total && upload.total == WRITES,
        "the restart must come mid-upload: {upload:?}"
    );
    assert!(
        at_restart > 0 && at_restart < WRITES,
        "the server had {at_restart} of {WRITES} mutations when it was restarted"
    );

    // No nudge from the test: backoff, probe and reconnect are the client's own.
    client.wait_synced(T).unwrap();

    assert_eq!(
        server.version(),
        WRITES,
        "every mutation applied exactly once (each one changes state)"
    );
    assert_eq!(server.acked_through("alice", client.client_id()), WRITES);
    assert_eq!(client.counts().unwrap().acked_through, WRITES);
    let on_server = server_docs(&server.snapshot());
    assert_eq!(on_server, replay(&written), "the server holds every write");
    assert_eq!(
        client_docs(&client, &space(), &["items", "counters"]),
        live(&on_server),
        "the client's view equals the server"
    );
    let status = client.status().unwrap();
    assert_eq!(
        (status.pending, status.rejections, status.conflicts),
        (0, 0, 0)
    );
    let errors: Vec<_> = drain(&events)
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::Status(s) => s.last_error,
            _ => None,
        })
        .collect();
    eprintln!(
        "server restart: at {at_restart} of {WRITES}; the client saw {} error statuses: {:?}",
        errors.len(),
        errors.first()
    );
}

// ---- the client process killed mid-push -------------------------------------------------

/// Selects child mode; holds the directory of the child's database.
const CHILD_ENV: &str = "TIDESYNC_KILL_CHILD_DIR";
const CHILD_URL_ENV: &str = "TIDESYNC_KILL_CHILD_URL";
const CHILD_TOKEN_ENV: &str = "TIDESYNC_KILL_CHILD_TOKEN";
const CHILD_SEED_ENV: &str = "TIDESYNC_KILL_CHILD_SEED";
const SEED_ENV: &str = "TIDESYNC_KILL_SEED";
const ROUNDS_ENV: &str = "TIDESYNC_KILL_ROUNDS";
const DEFAULT_ROUNDS: u64 = 5;
/// Mutations the child writes.
const KILL_WRITES: usize = 3_000;
/// The signal `Child::kill` sends.
const SIGKILL: i32 = 9;
/// A child never outlives this, even if its parent vanished.
const CHILD_MAX_LIFE: Duration = Duration::from_secs(60);
const CHILD_NAME: &str = "child";
const SHARED: usize = 5;

/// One child's writes, transaction by transaction, and its push batch size.
struct KillPlan {
    txs: Vec<Vec<(RecordKey, Op)>>,
    push_batch: usize,
}

impl KillPlan {
    /// The same plan for the same seed, in the child and in the parent.
    fn new(seed: u64) -> KillPlan {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut txs = Vec::new();
        let mut seq = 0usize;
        let mut live: Vec<usize> = Vec::new();
        while seq < KILL_WRITES {
            let size = rng.random_range(1..=10).min(KILL_WRITES - seq);
            let t = txs.len();
            let mut muts = Vec::with_capacity(size);
            for _ in 0..size {
                seq += 1;
                let roll = rng.random_range(0..100);
                // Every document names its transaction and that transaction's size, so a
                // torn transaction is visible in any server snapshot.
                let m = if roll < 70 || live.is_empty() {
                    live.push(seq);
                    (
                        key("items", &format!("r{seq:05}")),
                        Op::Put {
                            doc: doc(json!({"seq": seq, "tx": t, "size": size})),
                        },
                    )
                } else if roll < 93 {
                    let k = rng.random_range(0..SHARED);
                    (
                        key("shared", &format!("s{k}")),
                        Op::Patch {
                            fields: doc(json!({"n": seq, "tx": t})),
                        },
                    )
                } else {
                    let victim = live.swap_remove(rng.random_range(0..live.len()));
                    (key("items", &format!("r{victim:05}")), Op::Delete)
                };
                muts.push(m);
            }
            txs.push(muts);
        }
        KillPlan {
            txs,
            push_batch: rng.random_range(20..=80),
        }
    }

    fn mutations(&self) -> impl Iterator<Item = &(RecordKey, Op)> {
        self.txs.iter().flatten()
    }

    /// Whether `n` mutations end on a transaction boundary.
    fn is_boundary(&self, n: u64) -> bool {
        let mut at = 0u64;
        for tx in &self.txs {
            if at == n {
                return true;
            }
            at += tx.len() as u64;
        }
        at == n
    }
}

/// Child mode: does nothing unless the parent set [`CHILD_ENV`]. Writes the plan while
/// paused, then syncs until it is killed.
#[test]
fn kill_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let url = std::env::var(CHILD_URL_ENV).unwrap();
    let token = std::env::var(CHILD_TOKEN_ENV).unwrap();
    let seed: u64 = std::env::var(CHILD_SEED_ENV).unwrap().parse().unwrap();
    let plan = KillPlan::new(seed);
    let mut config = client_config(
        Path::new(&dir),
        CHILD_NAME,
        &url,
        Arc::new(StaticToken(token)),
    );
    config.start_online = false;
    config.push_batch = plan.push_batch;
    let client = Client::open(config).expect("child: open the client");
    for tx in &plan.txs {
        client
            .transaction(|w| {
                for (k, op) in tx {
                    match op {
                        Op::Put { doc } => w.put(k, doc.clone())?,
                        Op::Patch { fields } => w.patch(k, fields.clone())?,
                        Op::Delete => w.delete(k)?,
                    };
                }
                Ok(())
            })
            .expect("child: write a transaction");
    }
    client.resume();
    let started = Instant::now();
    while started.elapsed() < CHILD_MAX_LIFE {
        thread::sleep(Duration::from_millis(20));
    }
}

/// Prints the seed if the test panics, so the failure can be replayed.
struct SeedGuard(u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("kill test failed; replay with {SEED_ENV}={}", self.0);
        }
    }
}

#[test]
fn a_client_killed_mid_push_resumes_from_its_outbox_exactly_once() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let seed = match std::env::var(SEED_ENV) {
        Ok(s) => s.parse().expect("TIDESYNC_KILL_SEED must be a u64"),
        Err(_) => rand::random::<u64>(),
    };
    let rounds = match std::env::var(ROUNDS_ENV) {
        Ok(s) => s.parse().expect("TIDESYNC_KILL_ROUNDS must be a number"),
        Err(_) => DEFAULT_ROUNDS,
    };
    eprintln!("kill test: {SEED_ENV}={seed} {ROUNDS_ENV}={rounds}");
    let _guard = SeedGuard(seed);
    let mut rng = StdRng::seed_from_u64(seed);
    for round in 0..rounds {
        let child_seed = rng.random::<u64>();
        // Where to kill: once the server holds at least this share of the writes, then
        // 0..=3 ms later (so some kills land while a push is in flight).
        let share = rng.random_range(0.02..0.8);
        let extra = Duration::from_micros(rng.random_range(0..=3_000));
        kill_round(round, child_seed, share, extra);
    }
}

fn kill_round(round: u64, child_seed: u64, share: f64, extra: Duration) {
    let started = Instant::now();
    let plan = KillPlan::new(child_seed);
    let n = plan.mutations().count() as u64;
    let target = ((n as f64 * share) as u64).max(1);
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), MergeRules::default());
    let token = server.token("alice");

    let mut child = spawn_child(dir.path(), &server.url(), &token, child_seed);
    let deadline = Instant::now() + T;
    loop {
        if server.version() >= target {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "round {round}: the child exited on its own ({status}); its stderr:\n{}",
                child_stderr(&mut child)
            );
        }
        assert!(
            Instant::now() < deadline,
            "round {round}: timed out waiting for the server to receive {target} of {n} mutations (it has {})",
            server.version()
        );
        thread::sleep(Duration::from_micros(500));
    }
    thread::sleep(extra);
    let _ = child.kill();
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(SIGKILL),
        "round {round}: the child stopped on its own ({status}); its stderr:\n{}",
        child_stderr(&mut child)
    );

    // Right after the kill, the server holds a prefix of whole transactions, each once:
    // its state after `k` versions is the first `k` mutations replayed (the newest record
    // version of the snapshot is the space version it was read at).
    let snapshot = server.snapshot();
    let k = snapshot
        .changes
        .iter()
        .map(|c| c.version)
        .max()
        .unwrap_or(0);
    assert!(
        k < n,
        "round {round}: the kill came too late ({k} of {n} already on the server)"
    );
    assert!(
        plan.is_boundary(k),
        "round {round}: the server holds a torn transaction: {k} mutations applied"
    );
    let muts: Vec<&(RecordKey, Op)> = plan.mutations().collect();
    assert_eq!(
        server_docs(&snapshot),
        replay(muts[..k as usize].iter().copied()),
        "round {round}: the server state after the kill is not the first {k} mutations"
    );

    // The same database, the same client id, the same outbox.
    let mut config = client_config(
        dir.path(),
        CHILD_NAME,
        &server.url(),
        Arc::new(StaticToken(token)),
    );
    config.start_online = false;
    let client = Client::open(config).unwrap();
    let last_seq = client.counts().unwrap().last_seq;
    assert_eq!(
        last_seq, n,
        "round {round}: every returned write survived the kill"
    );
    // When the kill fell between the server's commit and the client's record of the answer,
    // the first push after the reopen is (partly) a duplicate.
    let known = client.counts().unwrap().acked_through;
    let committed = server.acked_through("alice", client.client_id());
    assert!(
        known <= committed,
        "round {round}: the client knows acks the server never gave"
    );
    client.resume();
    client.wait_synced(T).unwrap();

    assert_eq!(
        server.version(),
        n,
        "round {round}: every mutation applied exactly once (killed at {k} of {n})"
    );
    assert_eq!(server.acked_through("alice", client.client_id()), n);
    assert_eq!(client.counts().unwrap().acked_through, n);
    let on_server = server_docs(&server.snapshot());
    assert_eq!(
        on_server,
        replay(plan.mutations()),
        "round {round}: the server holds the whole outbox, in order"
    );
    assert_eq!(
        client_docs(&client, &space(), &["items", "shared"]),
        live(&on_server),
        "round {round}: the reopened client's view equals the server"
    );
    eprintln!(
        "kill test round {round}: killed with {k} of {n} on the server (push batch {}), \
         the client knew acks through {known} of the server's {committed}, {:?}",
        plan.push_batch,
        started.elapsed()
    );
}

fn spawn_child(dir: &Path, url: &str, token: &str, seed: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["kill_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .env(CHILD_URL_ENV, url)
        .env(CHILD_TOKEN_ENV, token)
        .env(CHILD_SEED_ENV, seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child")
}

fn child_stderr(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}
