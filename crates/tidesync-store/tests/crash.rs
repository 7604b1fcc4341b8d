//! Crash recovery with real processes (after sled's `tests/test_crash_recovery.rs`).
//!
//! The parent test re-runs this test binary as a child that writes to one database file as
//! fast as it can (single puts, patches and deletes on a small key space, and transactions of
//! 2..=8 mutations, some with a restoration entry, some deliberately rolled back), reporting
//! each write on stdout once its call has returned. The parent kills the child with SIGKILL
//! at a random moment, reopens the file and checks that:
//! - the file opens and passes `quick_check`;
//! - every reported write is in the outbox, exactly as reported, and nothing seen by an
//!   earlier round was lost;
//! - outbox seqs are exactly `1..=N`, transaction ids never go down, every transaction is
//!   whole, and no rolled-back write is anywhere;
//! - the view equals the outbox replayed in seq order over empty documents (nothing is ever
//!   pulled or confirmed here, so base + pending is just pending);
//! - a transaction's restoration entry exists iff the transaction is in the outbox.
//!
//! The same file is reused by every round, so later rounds open a database killed before.
//!
//! Inputs: `TIDESYNC_CRASH_SEED` replays a run (the op mix and the kill delays; the exact kill
//! point still depends on scheduling), `TIDESYNC_CRASH_ROUNDS` changes the number of rounds
//! (default 40).
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::ops::ControlFlow;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};
use tidesync_protocol::{Doc, Mutation, Op, RecordKey};
use tidesync_store::restoration::{BucketPath, Entry, Lifetime};
use tidesync_store::{
    Durability, MutationState, Store, StoreConfig, StoreError, WriteReceipt, WriteTx,
};

/// Selects child mode; holds the database path.
const CHILD_ENV: &str = "TIDESYNC_CRASH_CHILD";
const CHILD_SEED_ENV: &str = "TIDESYNC_CRASH_CHILD_SEED";
const CHILD_ROUND_ENV: &str = "TIDESYNC_CRASH_CHILD_ROUND";
const CHILD_DURABILITY_ENV: &str = "TIDESYNC_CRASH_CHILD_DURABILITY";
const SEED_ENV: &str = "TIDESYNC_CRASH_SEED";
const ROUNDS_ENV: &str = "TIDESYNC_CRASH_ROUNDS";
const DEFAULT_ROUNDS: u64 = 40;
/// The signal `Child::kill` sends (9 on every Unix).
const SIGKILL: i32 = 9;

/// Prefix of the child's report lines; the test harness prints its own lines to stdout too.
const PREFIX: &str = "CRASHLOG ";
const SPACE: &str = "crash";
const COLLECTION: &str = "docs";
const KEYS: usize = 12;
/// The restoration bucket holding one entry per transaction that asked for one.
const TX_BUCKET: &str = "tx";
const TX_TAG: &str = "crash.tx";
/// The tag a rolled-back transaction writes; it must never be seen.
const ABORTED_TAG: &str = "crash.aborted";
/// A child never outlives this, even if its parent vanished without closing the pipe.
const CHILD_MAX_LIFE: Duration = Duration::from_secs(120);
/// How long the parent waits for the child's first report.
const FIRST_REPORT_TIMEOUT: Duration = Duration::from_secs(60);

/// One committed local transaction, as the child reports it after the call returned.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Report {
    round: u64,
    tx: u64,
    /// Whether the transaction wrote restoration entry `tx/<tx>`.
    restore: bool,
    muts: Vec<ReportedMutation>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ReportedMutation {
    seq: u64,
    id: String,
    op: Op,
}

fn key(i: usize) -> RecordKey {
    RecordKey::parse(SPACE, COLLECTION, &format!("k{i}")).unwrap()
}

fn tx_bucket() -> BucketPath {
    BucketPath::root().child(TX_BUCKET).unwrap()
}

// ---- child ------------------------------------------------------------------------------

/// Child mode: does nothing unless the parent set [`CHILD_ENV`].
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let seed: u64 = std::env::var(CHILD_SEED_ENV).unwrap().parse().unwrap();
    let round: u64 = std::env::var(CHILD_ROUND_ENV).unwrap().parse().unwrap();
    let durability = match std::env::var(CHILD_DURABILITY_ENV).unwrap().as_str() {
        "full" => Durability::Full,
        "normal" => Durability::Normal,
        other => panic!("unknown durability {other:?}"),
    };
    let config = StoreConfig {
        durability,
        ..StoreConfig::default()
    };
    let mut store = Store::open(&path, config).expect("child: open the store");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = std::io::stdout().lock();
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < CHILD_MAX_LIFE {
        n += 1;
        let Some(report) = child_step(&mut store, &mut rng, round, n) else {
            continue;
        };
        let line = format!("{PREFIX}{}\n", serde_json::to_string(&report).unwrap());
        // A write error means the parent is gone: stop.
        if out
            .write_all(line.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            return;
        }
    }
}

/// One random write. `None` for a transaction that was rolled back on purpose.
fn child_step(store: &mut Store, rng: &mut StdRng, round: u64, n: u64) -> Option<Report> {
    let roll = rng.random_range(0..100);
    if roll < 50 {
        let k = rng.random_range(0..KEYS);
        let op = random_op(rng, round, n, 1, false);
        let receipt = match &op {
            Op::Put { doc } => store.put(&key(k), doc.clone()),
            Op::Patch { fields } => store.patch(&key(k), fields.clone()),
            Op::Delete => store.delete(&key(k)),
        }
        .expect("child: single write");
        return Some(Report {
            round,
            tx: receipt.tx,
            restore: false,
            muts: vec![ReportedMutation {
                seq: receipt.seq,
                id: format!("k{k}"),
                op,
            }],
        });
    }
    let size = rng.random_range(2..=8usize);
    let aborted = roll >= 95;
    let restore = aborted || rng.random_bool(0.5);
    // The first mutation always carries the size (a delete carries nothing).
    let plan: Vec<(usize, Op)> = (0..size)
        .map(|i| {
            let op = loop {
                let op = random_op(rng, round, n, size, restore);
                if i > 0 || !matches!(op, Op::Delete) {
                    break op;
                }
            };
            let op = match (aborted, op) {
                (true, Op::Put { mut doc }) => {
                    doc.insert("aborted".into(), json!(true));
                    Op::Put { doc }
                }
                (true, Op::Patch { mut fields }) => {
                    fields.insert("aborted".into(), json!(true));
                    Op::Patch { fields }
                }
                (_, op) => op,
            };
            (rng.random_range(0..KEYS), op)
        })
        .collect();
    let result = store.transaction(|tx: &mut WriteTx<'_>| {
        let mut muts = Vec::with_capacity(size);
        let mut receipt: Option<WriteReceipt> = None;
        for (k, op) in &plan {
            let r = match op {
                Op::Put { doc } => tx.put(&key(*k), doc.clone())?,
                Op::Patch { fields } => tx.patch(&key(*k), fields.clone())?,
                Op::Delete => tx.delete(&key(*k))?,
            };
            receipt = Some(r);
            muts.push(ReportedMutation {
                seq: r.seq,
                id: format!("k{k}"),
                op: op.clone(),
            });
        }
        let tx_id = receipt.expect("at least two mutations").tx;
        if restore {
            let tag = if aborted { ABORTED_TAG } else { TX_TAG };
            let entry = Entry::new(tag, 1, size as i64);
            tx.restore_write(
                Lifetime::Persistent,
                &tx_bucket(),
                &tx_id.to_string(),
                entry,
            )?;
        }
        if aborted {
            return Err(StoreError::InvalidInput("deliberate rollback".into()));
        }
        Ok((tx_id, muts))
    });
    match result {
        Ok((tx, muts)) => Some(Report {
            round,
            tx,
            restore,
            muts,
        }),
        Err(StoreError::InvalidInput(msg)) if aborted && msg == "deliberate rollback" => None,
        Err(e) => panic!("child: transaction failed: {e}"),
    }
}

/// A put, patch or delete whose documents say which transaction size they belong to.
fn random_op(rng: &mut StdRng, round: u64, n: u64, size: usize, restore: bool) -> Op {
    let mut doc = Doc::new();
    doc.insert("tx_size".into(), json!(size));
    doc.insert("restore".into(), json!(restore));
    doc.insert("r".into(), json!(round));
    doc.insert("n".into(), json!(n));
    match rng.random_range(0..10) {
        0..=3 => {
            for f in 0..rng.random_range(0..4) {
                doc.insert(format!("f{f}"), json!(rng.random_range(0..1000)));
            }
            Op::Put { doc }
        }
        4..=7 => {
            // Set one field and remove (null) another, so patches both add and delete.
            let set = rng.random_range(0..4);
            doc.insert(format!("f{set}"), json!(rng.random_range(0..1000)));
            let unset = rng.random_range(0..4);
            if unset != set {
                doc.insert(format!("f{unset}"), Json::Null);
            }
            Op::Patch { fields: doc }
        }
        _ => Op::Delete,
    }
}

// ---- parent -----------------------------------------------------------------------------

/// Prints the seed if the test panics, so the failure can be replayed.
struct SeedGuard(u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "crash test failed; replay with {SEED_ENV}={} (rounds: {ROUNDS_ENV})",
                self.0
            );
        }
    }
}

#[test]
fn killed_writers_lose_nothing_that_returned_and_tear_nothing() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let seed = match std::env::var(SEED_ENV) {
        Ok(s) => s.parse().expect("TIDESYNC_CRASH_SEED must be a u64"),
        Err(_) => rand::random::<u64>(),
    };
    let rounds = match std::env::var(ROUNDS_ENV) {
        Ok(s) => s.parse().expect("TIDESYNC_CRASH_ROUNDS must be a number"),
        Err(_) => DEFAULT_ROUNDS,
    };
    eprintln!("crash test: {SEED_ENV}={seed} {ROUNDS_ENV}={rounds}");
    let _guard = SeedGuard(seed);
    let mut rng = StdRng::seed_from_u64(seed);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let mut reported: BTreeMap<u64, (u64, ReportedMutation)> = BTreeMap::new();
    let mut reported_txs: BTreeMap<u64, Report> = BTreeMap::new();
    let mut previous: Vec<Mutation> = Vec::new();
    let started = Instant::now();
    for round in 0..rounds {
        let durability = if round % 2 == 0 { "full" } else { "normal" };
        let child_seed = rng.random::<u64>();
        // Every fifth round kills the child early, 0..=15 ms after it was started, without
        // waiting for a report: the kill then lands during process start, open (WAL recovery,
        // requeue, restoration load) or the first writes.
        let kill_at = if round % 5 == 4 {
            KillAt::AfterStart(Duration::from_millis(rng.random_range(0..=15)))
        } else {
            KillAt::AfterFirstReport(Duration::from_millis(rng.random_range(5..=60)))
        };
        let reports = run_child(&path, round, child_seed, durability, kill_at);
        assert!(
            !reports.is_empty() || matches!(kill_at, KillAt::AfterStart(_)),
            "round {round}: the child reported nothing"
        );
        for report in reports {
            assert_eq!(report.round, round);
            for m in &report.muts {
                let old = reported.insert(m.seq, (report.tx, m.clone()));
                assert!(old.is_none(), "round {round}: seq {} reported twice", m.seq);
            }
            let old = reported_txs.insert(report.tx, report);
            assert!(
                old.is_none(),
                "round {round}: a transaction id was reported twice"
            );
        }
        previous = check_store(&path, round, &reported, &reported_txs, &previous);
    }
    eprintln!(
        "crash test: {rounds} rounds, {} reported writes, {} mutations in the outbox, {:?}",
        reported.len(),
        previous.len(),
        started.elapsed()
    );
}

/// When the parent kills a child.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// This long after the child's first report.
    AfterFirstReport(Duration),
    /// This long after spawning it, reported or not.
    AfterStart(Duration),
}

/// Runs one child, kills it at `kill_at`, and returns its reports.
fn run_child(path: &Path, round: u64, seed: u64, durability: &str, kill_at: KillAt) -> Vec<Report> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, path)
        .env(CHILD_SEED_ENV, seed.to_string())
        .env(CHILD_ROUND_ENV, round.to_string())
        .env(CHILD_DURABILITY_ENV, durability)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel::<Report>();
    let reader = thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match stdout.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            // A line cut by the kill was never fully reported: its write may or may not have
            // committed, which the checks allow for any unreported write.
            let Some(body) = line.strip_prefix(PREFIX).and_then(|l| l.strip_suffix('\n')) else {
                continue;
            };
            let report: Report = serde_json::from_str(body)
                .unwrap_or_else(|e| panic!("bad report line {body:?}: {e}"));
            if lines_tx.send(report).is_err() {
                break;
            }
        }
    });
    let errors = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let first = match kill_at {
        KillAt::AfterStart(delay) => {
            thread::sleep(delay);
            None
        }
        KillAt::AfterFirstReport(delay) => {
            let Ok(first) = lines_rx.recv_timeout(FIRST_REPORT_TIMEOUT) else {
                kill(&mut child);
                let _ = reader.join();
                let stderr = errors.join().unwrap();
                panic!("round {round}: the child wrote nothing; its stderr:\n{stderr}");
            };
            thread::sleep(delay);
            Some(first)
        }
    };
    let status = kill(&mut child);
    reader.join().expect("the report reader panicked");
    let stderr = errors.join().unwrap();
    assert_eq!(
        status.signal(),
        Some(SIGKILL),
        "round {round}: the child stopped on its own ({status}) before it was killed; its stderr:\n{stderr}"
    );
    let mut reports: Vec<Report> = first.into_iter().collect();
    reports.extend(lines_rx.try_iter());
    reports
}

fn kill(child: &mut Child) -> std::process::ExitStatus {
    // `Child::kill` sends SIGKILL on Unix; it fails only if the child was already reaped.
    let _ = child.kill();
    child.wait().expect("wait for the child")
}

/// One transaction's mutations in the outbox, and the (size, restore) its documents declare.
#[derive(Default)]
struct TxGroup<'a> {
    muts: Vec<&'a Mutation>,
    declared: Option<(u64, bool)>,
}

/// Reopens the store after a kill and checks everything; returns the outbox for the next round.
fn check_store(
    path: &Path,
    round: u64,
    reported: &BTreeMap<u64, (u64, ReportedMutation)>,
    reported_txs: &BTreeMap<u64, Report>,
    previous: &[Mutation],
) -> Vec<Mutation> {
    let store = Store::open(path, StoreConfig::default())
        .unwrap_or_else(|e| panic!("round {round}: reopening after the kill failed: {e}"));
    store
        .check_integrity()
        .unwrap_or_else(|e| panic!("round {round}: integrity check failed: {e}"));
    assert!(
        store.restoration_issues().is_empty(),
        "round {round}: restoration entries dropped at open: {:?}",
        store.restoration_issues()
    );

    let mut outbox: Vec<Mutation> = Vec::new();
    store
        .for_each_outbox(|entry| {
            assert_eq!(
                entry.state,
                MutationState::Queued,
                "round {round}: {entry:?}"
            );
            outbox.push(entry.mutation);
            ControlFlow::Continue(())
        })
        .unwrap();
    let n = outbox.len() as u64;

    // Seqs are exactly 1..=N, and N covers every write that returned.
    for (i, m) in outbox.iter().enumerate() {
        assert_eq!(
            m.seq,
            i as u64 + 1,
            "round {round}: outbox seqs have a gap or a duplicate"
        );
    }
    let highest = reported.keys().next_back().copied().unwrap_or(0);
    assert!(
        n >= highest,
        "round {round}: the outbox ends at seq {n} but seq {highest} was reported committed"
    );
    let stats = store.outbox_stats().unwrap();
    assert_eq!(stats.pending, n, "round {round}: outbox_stats().pending");
    assert_eq!(stats.last_seq, n, "round {round}: outbox_stats().last_seq");

    // What an earlier round saw after its kill is still there, unchanged.
    assert!(
        outbox.len() >= previous.len() && outbox[..previous.len()] == *previous,
        "round {round}: the outbox lost or changed mutations seen after the previous kill"
    );

    // Every write that returned is there, exactly as written.
    for (seq, (tx, m)) in reported {
        let got = &outbox[*seq as usize - 1];
        assert_eq!(
            got.tx, *tx,
            "round {round}: seq {seq} has the wrong transaction id"
        );
        assert_eq!(
            got.key.id.as_str(),
            m.id,
            "round {round}: seq {seq} has the wrong key"
        );
        assert_eq!(got.op, m.op, "round {round}: seq {seq} has the wrong op");
    }

    // Transaction ids never go down, so each transaction is contiguous; each is whole.
    let mut txs: BTreeMap<u64, TxGroup<'_>> = BTreeMap::new();
    for pair in outbox.windows(2) {
        assert!(
            pair[0].tx <= pair[1].tx,
            "round {round}: tx ids go down from seq {} (tx {}) to seq {} (tx {})",
            pair[0].seq,
            pair[0].tx,
            pair[1].seq,
            pair[1].tx
        );
    }
    for m in &outbox {
        let group = txs.entry(m.tx).or_default();
        group.muts.push(m);
        let doc = match &m.op {
            Op::Put { doc } => doc,
            Op::Patch { fields } => fields,
            Op::Delete => continue,
        };
        assert!(
            !doc.contains_key("aborted"),
            "round {round}: seq {} comes from a rolled-back transaction",
            m.seq
        );
        let size = doc["tx_size"].as_u64().unwrap();
        let restore = doc["restore"].as_bool().unwrap();
        match &group.declared {
            None => group.declared = Some((size, restore)),
            Some(d) => assert_eq!(
                *d,
                (size, restore),
                "round {round}: tx {} mixes declarations",
                m.tx
            ),
        }
    }
    for (tx, TxGroup { muts, declared }) in &txs {
        // Only a single delete declares nothing; a bigger transaction starts with a put/patch.
        let (size, _) = declared.unwrap_or((1, false));
        assert_eq!(
            muts.len() as u64,
            size,
            "round {round}: tx {tx} is torn: {} of its {size} mutations are in the outbox (seqs {:?})",
            muts.len(),
            muts.iter().map(|m| m.seq).collect::<Vec<_>>()
        );
    }
    for (tx, report) in reported_txs {
        let muts = &txs
            .get(tx)
            .unwrap_or_else(|| panic!("round {round}: reported tx {tx} is not in the outbox"))
            .muts;
        let seqs: Vec<u64> = muts.iter().map(|m| m.seq).collect();
        let want: Vec<u64> = report.muts.iter().map(|m| m.seq).collect();
        assert_eq!(
            seqs, want,
            "round {round}: tx {tx} holds other seqs than reported"
        );
    }

    // The view is the outbox replayed in seq order (nothing was pulled or confirmed).
    let mut replayed: BTreeMap<String, Option<Doc>> = BTreeMap::new();
    for m in &outbox {
        let doc = replayed.entry(m.key.id.as_str().to_owned()).or_default();
        *doc = tidesync_core::patch::apply_op(doc.take(), &m.op);
    }
    for k in 0..KEYS {
        let want = replayed.get(&format!("k{k}")).cloned().flatten();
        let got = store.get(&key(k)).unwrap();
        assert_eq!(
            got.as_ref().map(|r| &r.doc),
            want.as_ref(),
            "round {round}: the view of k{k} differs from its outbox replayed"
        );
        if let Some(record) = got {
            assert!(record.pending, "round {round}: k{k} is not marked pending");
        }
    }

    // A transaction's restoration entry exists iff the transaction committed.
    let bucket = store
        .restoration()
        .root(Lifetime::Persistent)
        .child(TX_BUCKET);
    for (tx, group) in &txs {
        let (size, restore) = group.declared.unwrap_or((1, false));
        let entry = bucket.read(&tx.to_string());
        if restore {
            let entry = entry.unwrap_or_else(|| {
                panic!("round {round}: tx {tx} committed but its restoration entry is missing")
            });
            assert_eq!(entry.tag, TX_TAG, "round {round}: tx {tx}'s entry");
            assert_eq!(
                entry.value.as_i64(),
                Some(size as i64),
                "round {round}: tx {tx}'s entry"
            );
        } else {
            assert!(
                entry.is_none(),
                "round {round}: tx {tx} wrote no restoration entry, yet one exists: {entry:?}"
            );
        }
    }
    let committed: BTreeSet<String> = txs.keys().map(u64::to_string).collect();
    for stored in bucket.keys() {
        assert!(
            committed.contains(stored),
            "round {round}: restoration entry tx/{stored} belongs to no committed transaction"
        );
    }
    for (tx, report) in reported_txs {
        if report.restore {
            assert!(
                bucket.read(&tx.to_string()).is_some(),
                "round {round}: reported tx {tx}'s restoration entry is missing"
            );
        }
    }
    outbox
}
