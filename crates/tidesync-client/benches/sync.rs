//! End-to-end sync benchmarks: real clients against a real server on a loopback port, printed
//! as ratios against raw-SQLite baselines measured in the same run.
//!
//! `cargo bench -p tidesync-client` prints:
//! 1. **client A → server → client B, 100k mutations.** A writes 100k puts in local
//!    transactions of 1,000 while paused (before the clock starts); B is online, synced and
//!    idle. The clock runs from `A.resume()` until B has applied pulled changes for all 100k
//!    records (counted from B's `RecordsChanged` events; checked afterwards through
//!    `Client::list`). Baseline: raw rusqlite inserting the same 100k rows (same ids, same
//!    JSON documents) into one SQLite file, in one transaction, with the store's pragmas: the
//!    floor of any pipeline whose end is a row in a SQLite table. Target: < 1 s.
//! 2. **Bootstrap of 1M small records into a fresh client.** The server is filled before the
//!    clock starts, by pushing 1M puts through `SqliteStorage::push` in batches of 5,000. The
//!    clock runs from `Client::open` on a new file until the status says `has_synced` with
//!    nothing pending (only set once the last page is applied); the record count is checked
//!    afterwards. Baseline: raw rusqlite inserting 1M rows of the same size in one
//!    transaction. Targets: ≥ 400k records/s, and within 2× of raw.
//!
//! Both clients run with the defaults an app gets (`ClientConfig::new`): pushes and pages
//! start at 250 and grow ×4 while a backlog remains, up to 5,000 mutations and 10,000
//! changes (the server's limits), `Durability::Full`. A's own writes come back to it as
//! echoes (protocol 2), not as documents.
//!
//! `BENCH_BOOTSTRAP_RECORDS` overrides the 1M (e.g. 200000 for a quick run);
//! `BENCH_ONLY=e2e` or `BENCH_ONLY=bootstrap` runs one of the two. The bench never asserts
//! a target: a miss prints `MISS`. It panics (instead of hanging) if a wait times out.

#![allow(clippy::expect_used)] // a bench aborts on setup failures

mod common;

use std::path::Path;
use std::time::Instant;

use common::*;
use rusqlite::params;
use serde_json::Value;
use tidesync_client::{Client, SpaceName};

/// Mutations in the A → B run.
const E2E_MUTATIONS: u64 = 100_000;
/// A's local transaction size.
/// Records in the bootstrap run (`BENCH_BOOTSTRAP_RECORDS` overrides).
const BOOTSTRAP_RECORDS: u64 = 1_000_000;
/// Measured repetitions (after one warm-up).
const REPS: usize = 3;

// ---- raw SQLite baseline -----------------------------------------------------------------

/// Inserts records `0..n` (same ids, same JSON) into a fresh file in one transaction, with
/// the client store's pragmas and the shape of its `records` table. Returns seconds.
fn raw_insert(path: &Path, n: u64) -> f64 {
    // Built before the clock starts, like A's writes.
    let rows: Vec<(String, String)> = (0..n)
        .map(|i| (record_id(i), Value::Object(small_todo(i)).to_string()))
        .collect();
    let start = Instant::now();
    let mut conn = rusqlite::Connection::open(path).expect("raw open");
    conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
        .expect("wal");
    conn.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF; PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -16384;
         CREATE TABLE records (
             space TEXT NOT NULL, collection TEXT NOT NULL, id TEXT NOT NULL, doc TEXT,
             base TEXT, base_version INTEGER NOT NULL DEFAULT 0, pending INTEGER NOT NULL DEFAULT 0,
             PRIMARY KEY (space, collection, id)
         ) WITHOUT ROWID;",
    )
    .expect("raw schema");
    let tx = conn.transaction().expect("begin");
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO records (space, collection, id, doc, base_version) VALUES ('raw', ?1, ?2, ?3, ?4)",
            )
            .expect("prepare");
        for (version, (id, doc)) in rows.iter().enumerate() {
            insert
                .execute(params![COLLECTION, id, doc, version as i64 + 1])
                .expect("insert");
        }
    }
    tx.commit().expect("commit");
    start.elapsed().as_secs_f64()
}

// ---- 1. A → server → B -------------------------------------------------------------------

/// One A → B run of `n` mutations into `space`; returns seconds.
fn run_a_to_b(dir: &Path, server: &Server, token: &str, space: &SpaceName, n: u64) -> f64 {
    let at = |name: &str| {
        config(
            &dir.join(format!("{name}-{space}.db")),
            &server.url(),
            space,
            token,
        )
    };
    let run = a_to_b(at("a"), at("b"), space, n, || {});
    if let Some(pushed) = run.a_pushed {
        eprintln!(
            "    A's last push answered after {pushed:.3} s, B done after {:.3} s",
            run.secs
        );
    }
    run.a.close();
    run.b.close();
    run.secs
}

fn bench_e2e(dir: &Path, server: &Server) {
    let spaces: Vec<SpaceName> = (0..=REPS).map(|r| space(&format!("e2e{r}"))).collect();
    let token = server.token(&spaces);
    // Warm-up (connections, page cache, allocator), a tenth of the size.
    run_a_to_b(dir, server, &token, &spaces[0], E2E_MUTATIONS / 10);
    raw_insert(&dir.join("raw-e2e-warm.db"), E2E_MUTATIONS / 10);
    let (mut ours, mut raw, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for (rep, space) in spaces[1..].iter().enumerate() {
        let t = run_a_to_b(dir, server, &token, space, E2E_MUTATIONS);
        let r = raw_insert(&dir.join(format!("raw-e2e-{rep}.db")), E2E_MUTATIONS);
        eprintln!("  e2e rep {rep}: {t:.3} s (raw {r:.3} s)");
        ours.push(t);
        raw.push(r);
        ratios.push(t / r);
    }
    let (t, r) = (median(ours), median(raw));
    row(
        "A → server → B, 100k puts (A: tx of 1,000, paused)",
        format!("{:.2} s", t),
        format!("{:.2} s raw", r),
        median(ratios),
        "< 1 s",
        t < 1.0,
    );
}

// ---- 2. bootstrap --------------------------------------------------------------------------

/// One bootstrap of a fresh client from `space` (holding `n` records); returns seconds.
fn bootstrap(
    dir: &Path,
    server: &Server,
    token: &str,
    space: &SpaceName,
    n: u64,
    name: &str,
) -> f64 {
    let db = dir.join(format!("{name}.db"));
    let start = Instant::now();
    let client = Client::open(config(&db, &server.url(), space, token)).expect("open");
    wait_synced(&client);
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(
        count_records(&client, space),
        n,
        "the fresh client shows every record"
    );
    client.close();
    secs
}

fn bench_bootstrap(dir: &Path, server: &Server) {
    let n = env_count("BENCH_BOOTSTRAP_RECORDS", BOOTSTRAP_RECORDS);
    let boot = space("boot");
    let token = server.token(std::slice::from_ref(&boot));
    server.fill(&boot, n, small_todo);
    bootstrap(dir, server, &token, &boot, n, "boot-warm");
    let (mut ours, mut raw, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..REPS {
        let t = bootstrap(dir, server, &token, &boot, n, &format!("boot-{rep}"));
        let r = raw_insert(&dir.join(format!("raw-boot-{rep}.db")), n);
        eprintln!("  bootstrap rep {rep}: {t:.3} s (raw {r:.3} s)");
        ours.push(n as f64 / t);
        raw.push(n as f64 / r);
        ratios.push(t / r);
    }
    let (ours, raw, ratio) = (median(ours), median(raw), median(ratios));
    row(
        &format!(
            "bootstrap of {}k records into a fresh client (rec/s)",
            n / 1000
        ),
        format!("{:.0}k/s", ours / 1000.0),
        format!("{:.0}k/s raw", raw / 1000.0),
        ratio,
        "≥ 400k/s, ≤ 2×",
        ours >= 400_000.0 && ratio <= 2.0,
    );
}

fn main() {
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let run = |name: &str| only.is_empty() || only.split(',').any(|o| o.trim() == name);
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("server.db"));
    // Lines go to stdout once measured; progress goes to stderr.
    header(&format!(
        "tidesync-client benchmarks (medians of {REPS}; ratio = our time ÷ raw SQLite time, same run)"
    ));
    if run("e2e") {
        bench_e2e(dir.path(), &server);
    }
    if run("bootstrap") {
        bench_bootstrap(dir.path(), &server);
    }
    server.stop();
}
