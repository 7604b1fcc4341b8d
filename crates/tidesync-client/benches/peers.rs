//! tidesync against a peer: PouchDB ↔ express-pouchdb on the workload of the sync bench's
//! "A → server → B, 100k puts" line, measured in the same run and printed as a ratio.
//!
//! `cargo bench -p tidesync-client --bench peers` runs, one after the other:
//! 1. **tidesync**, with every client default (`ClientConfig::new`: `push_batch` and
//!    `pull_limit` 1,000, default timers): a server on loopback in this process; A writes N
//!    puts in local transactions of 1,000 while paused (before the clock starts); B is online,
//!    synced and idle. The clock runs from `A.resume()` until B's `RecordsChanged` events add
//!    up to N (checked afterwards through `Client::list`). Once with both clients on
//!    `Durability::Full` (the default) and once on `Durability::Normal`, the least durable
//!    setting the store has: tidesync has no in-memory store. The server is the same
//!    `EmbeddedServer` (SQLite, its own defaults) for both. Median of 3 runs each, after a
//!    warm-up of a tenth of the size, the two settings interleaved.
//! 2. **PouchDB**: `node bench/peers/pouchdb.mjs --adapter leveldb|memory --docs N`
//!    (express-pouchdb on loopback, clients A and B on the same adapter; A writes with
//!    `bulkDocs` in batches of 1,000 while not replicating, B replicates live from the server;
//!    the clock runs from the start of A's push replication until B holds N documents). It
//!    prints one JSON line, parsed here. Once per adapter (it is slow).
//!
//! The table pairs tidesync `Full` with PouchDB LevelDB (durable) and tidesync `Normal` with
//! PouchDB memory; the ratio is PouchDB's time ÷ tidesync's time.
//!
//! `BENCH_PEER_DOCS` overrides N (default 100,000); `BENCH_PEER_REPS` the PouchDB runs per
//! adapter (default 1; the median is taken). The npm packages live in
//! `bench/peers/node_modules`; if it is missing the bench runs `npm ci --prefix bench/peers`
//! and exits with a clear message if that fails or Node is missing. The bench never asserts a
//! target: a miss prints `MISS`.

#![allow(clippy::expect_used)] // a bench aborts on setup failures

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;
use tidesync_client::{Durability, SpaceName};

/// Documents per run (`BENCH_PEER_DOCS` overrides).
const DOCS: u64 = 100_000;
/// A's local transaction size, and PouchDB A's `bulkDocs` batch.
/// tidesync runs per durability setting (the median is reported).
const TIDESYNC_REPS: usize = 3;
/// PouchDB runs per adapter (`BENCH_PEER_REPS` overrides).
const PEER_REPS: usize = 1;
/// How many times faster than PouchDB LevelDB the durable tidesync line should be.
const DURABLE_TARGET: f64 = 20.0;

/// Prints `message` and exits: the bench cannot run.
fn exit_with(message: &str) -> ! {
    eprintln!("peers bench: {message}");
    std::process::exit(1);
}

/// Seconds with three significant digits' worth of decimals (0.023 s, 1.91 s, 46.1 s).
fn secs(s: f64) -> String {
    if s < 1.0 {
        format!("{s:.3} s")
    } else if s < 10.0 {
        format!("{s:.2} s")
    } else {
        format!("{s:.1} s")
    }
}

/// "100k" for 100,000, the number itself otherwise.
fn docs_label(n: u64) -> String {
    if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

// ---- tidesync ------------------------------------------------------------------------------

/// One A → B run of `n` puts into `space` with default clients on `durability`; seconds.
fn run_a_to_b(
    dir: &Path,
    server: &Server,
    token: &str,
    space: &SpaceName,
    n: u64,
    durability: Durability,
) -> f64 {
    let url = server.url();
    let at = |name: &str| {
        default_config(
            &dir.join(format!("{name}-{space}.db")),
            &url,
            space,
            token,
            durability,
        )
    };
    let run = a_to_b(at("a"), at("b"), space, n, || {});
    run.a.close();
    run.b.close();
    run.secs
}

/// Median seconds of tidesync on `Full` and on `Normal`, runs interleaved.
fn bench_tidesync(n: u64) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("server.db"));
    let spaces: Vec<SpaceName> = (0..=TIDESYNC_REPS * 2)
        .map(|r| space(&format!("peer{r}")))
        .collect();
    let token = server.token(&spaces);
    // Warm-up (connections, page cache, allocator), a tenth of the size.
    run_a_to_b(
        dir.path(),
        &server,
        &token,
        &spaces[0],
        (n / 10).max(1),
        Durability::Full,
    );
    let (mut full, mut normal) = (Vec::new(), Vec::new());
    for rep in 0..TIDESYNC_REPS {
        let f = run_a_to_b(
            dir.path(),
            &server,
            &token,
            &spaces[1 + 2 * rep],
            n,
            Durability::Full,
        );
        let m = run_a_to_b(
            dir.path(),
            &server,
            &token,
            &spaces[2 + 2 * rep],
            n,
            Durability::Normal,
        );
        eprintln!("  tidesync rep {rep}: Full {f:.3} s, Normal {m:.3} s");
        full.push(f);
        normal.push(m);
    }
    server.stop();
    (median(full), median(normal))
}

// ---- PouchDB -------------------------------------------------------------------------------

/// `bench/peers` at the repository root.
fn peers_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/peers");
    dir.canonicalize().unwrap_or_else(|e| {
        exit_with(&format!(
            "{} (the PouchDB side of this bench) is missing: {e}",
            dir.display()
        ))
    })
}

/// Checks that Node runs and that the npm packages are installed (running `npm ci` if
/// `node_modules` is missing).
fn prepare_node(dir: &Path) {
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {
            eprintln!("  node {}", String::from_utf8_lossy(&out.stdout).trim())
        }
        Ok(out) => exit_with(&format!(
            "`node --version` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => exit_with(&format!(
            "cannot run `node` (Node 18 or newer is needed for the PouchDB side): {e}"
        )),
    }
    if dir.join("node_modules").is_dir() {
        return;
    }
    eprintln!(
        "  {} is missing; installing the locked npm packages: npm ci --prefix bench/peers",
        dir.join("node_modules").display()
    );
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--prefix"])
        .arg(dir)
        .stdout(Stdio::from(std::io::stderr()))
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => exit_with(&format!(
            "`npm ci --prefix bench/peers` failed ({s}); run it by hand, then the bench again"
        )),
        Err(e) => exit_with(&format!(
            "cannot run `npm` ({e}); install the packages with `npm ci --prefix bench/peers`"
        )),
    }
}

/// What one `pouchdb.mjs` run reported.
struct PouchRun {
    seconds: f64,
    a_to_server_seconds: Option<f64>,
    versions: String,
}

/// Runs `pouchdb.mjs` once and parses its JSON line.
fn pouchdb(dir: &Path, adapter: &str, n: u64) -> PouchRun {
    let script = dir.join("pouchdb.mjs");
    let out = Command::new("node")
        .arg(&script)
        .args(["--adapter", adapter, "--docs", &n.to_string()])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| exit_with(&format!("cannot run node {}: {e}", script.display())));
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        exit_with(&format!(
            "node pouchdb.mjs --adapter {adapter} --docs {n} failed ({}); its output: {}",
            out.status,
            stdout.trim()
        ));
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| exit_with("pouchdb.mjs printed no result line"));
    let result: Value = serde_json::from_str(line).unwrap_or_else(|e| {
        exit_with(&format!(
            "pouchdb.mjs printed '{line}', not a JSON result: {e}"
        ))
    });
    if result["adapter"] != adapter || result["docs"].as_u64() != Some(n) {
        exit_with(&format!(
            "pouchdb.mjs answered for another run than --adapter {adapter} --docs {n}: {line}"
        ));
    }
    let seconds = result["seconds"]
        .as_f64()
        .unwrap_or_else(|| exit_with(&format!("pouchdb.mjs result without seconds: {line}")));
    let version = |name: &str| result[name].as_str().unwrap_or("?").to_owned();
    PouchRun {
        seconds,
        a_to_server_seconds: result["a_to_server_seconds"].as_f64(),
        versions: format!(
            "pouchdb {}, pouchdb-adapter-memory {}, express-pouchdb {}, express {}, node {}",
            version("pouchdb"),
            version("pouchdb_adapter_memory"),
            version("express_pouchdb"),
            version("express"),
            version("node")
        ),
    }
}

/// Median seconds of `reps` PouchDB runs on `adapter` (and of their push phase), with the
/// package versions.
fn bench_pouchdb(dir: &Path, adapter: &str, n: u64, reps: u64) -> (f64, Option<f64>, String) {
    let (mut total, mut push, mut versions) = (Vec::new(), Vec::new(), String::new());
    for rep in 0..reps {
        let run = pouchdb(dir, adapter, n);
        eprintln!(
            "  pouchdb {adapter} rep {rep}: {:.3} s (A → server {})",
            run.seconds,
            run.a_to_server_seconds
                .map_or("?".to_owned(), |s| format!("{s:.3} s"))
        );
        total.push(run.seconds);
        push.extend(run.a_to_server_seconds);
        versions = run.versions;
    }
    let push = (!push.is_empty()).then(|| median(push));
    (median(total), push, versions)
}

fn main() {
    let n = env_count("BENCH_PEER_DOCS", DOCS);
    let peer_reps = env_count("BENCH_PEER_REPS", PEER_REPS as u64);
    let dir = peers_dir();
    // Before tidesync's runs: a missing Node or package fails in seconds, not minutes.
    prepare_node(&dir);

    let (full, normal) = bench_tidesync(n);
    let (leveldb, leveldb_push, versions) = bench_pouchdb(&dir, "leveldb", n, peer_reps);
    let (memory, memory_push, _) = bench_pouchdb(&dir, "memory", n, peer_reps);

    // Lines go to stdout once measured; progress goes to stderr.
    let label = docs_label(n);
    header(&format!(
        "tidesync vs PouchDB ↔ express-pouchdb (tidesync: median of {TIDESYNC_REPS}, default \
         clients; PouchDB: median of {peer_reps}; ratio = PouchDB time ÷ tidesync time, same run)"
    ));
    let durable = leveldb / full;
    row(
        &format!("A → server → B, {label} docs, durable (Full / LevelDB)"),
        secs(full),
        format!("{} LevelDB", secs(leveldb)),
        durable,
        &format!("≥ {DURABLE_TARGET:.0}×"),
        durable >= DURABLE_TARGET,
    );
    row_info(
        &format!("A → server → B, {label} docs, Normal / PouchDB memory"),
        secs(normal),
        format!("{} memory", secs(memory)),
        memory / normal,
    );
    let push = |s: Option<f64>| s.map_or("?".to_owned(), secs);
    println!(
        "\nPouchDB's A → server push alone: {} LevelDB, {} memory. {versions}.",
        push(leveldb_push),
        push(memory_push)
    );
    println!(
        "tidesync has no in-memory store: the second line pairs its least durable setting \
         (Durability::Normal) with PouchDB's memory adapter."
    );
}
