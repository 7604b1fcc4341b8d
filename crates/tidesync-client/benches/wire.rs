//! Bytes on the wire, with and without compression: real clients against a real server on
//! loopback, every byte counted by a `tidesync_testkit::FaultProxy` (passing traffic
//! untouched) between them.
//!
//! `cargo bench -p tidesync-client --bench wire` prints, for each run once with
//! `ClientConfig::compression` on and once off (the server has it on, as by default):
//! 1. **Bootstrap of N small records into a fresh client** with the default `ClientConfig`
//!    (pages of 1,000). The server is filled through its storage before the clock starts.
//!    The clock runs from `Client::open` until `wait_synced`; the count is checked after.
//!    Bytes: server → client (pull pages, the health probe, the event stream) and client →
//!    server (requests).
//! 2. **Client A → server → client B, 100k puts** (as in benches/sync.rs, but with the default
//!    `ClientConfig`: pushes of 1,000): A writes in local transactions of 1,000 while paused,
//!    B is synced and idle; the clock runs from `A.resume()` until B has applied all 100k.
//!    Bytes: A → server (pushes) and server → B (pulls), counted from the resume until both
//!    are synced.
//!
//! Each bootstrap runs once per mode (plain first); the A → B runs three times per mode, in
//! alternating order, and the medians are printed.
//!
//! Rows: measured = with compression, baseline = without, ratio = with ÷ without. The targets
//! are this bench's own: compressed pulls and pushes at most half the bytes; requests of a
//! bootstrap (pull requests, under the 1 KiB below which nothing is compressed) at most 20%
//! more bytes (what they gain is the `Accept-Encoding: gzip, zstd` header); no more than 25%
//! more time on loopback (where bandwidth is free, so time can only lose). A miss prints
//! `MISS`; nothing is asserted. `BENCH_WIRE_RECORDS` overrides N (default 1,000,000);
//! `BENCH_ONLY=bootstrap` or `BENCH_ONLY=e2e` runs one of the two.

#![allow(clippy::expect_used)] // a bench aborts on setup failures

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tidesync_client::{Client, ClientConfig, SpaceName, StaticToken};
use tidesync_testkit::{FaultProxy, ProxyStats};

/// Records in the bootstrap run (`BENCH_WIRE_RECORDS` overrides).
const BOOTSTRAP_RECORDS: u64 = 1_000_000;
/// Mutations in the A → B run.
const E2E_MUTATIONS: u64 = 100_000;
/// A's local transaction size.
/// A → B runs of each mode (medians are printed).
const E2E_REPS: usize = 3;
/// Longest a bootstrap of a million records at pages of 1,000 may take.
const LONG_WAIT: Duration = Duration::from_secs(1_800);

/// The default configuration, through `proxy`, with compression on or off.
fn default_config(
    db: &Path,
    proxy: &FaultProxy,
    space: &SpaceName,
    token: &str,
    compression: bool,
) -> ClientConfig {
    let mut config = ClientConfig::new(
        db,
        format!("http://{}", proxy.addr()),
        vec![space.clone()],
        Arc::new(StaticToken(token.into())),
    );
    config.compression = compression;
    config
}

/// What one run moved and how long it took.
#[derive(Debug, Clone, Copy)]
struct Run {
    to_client: u64,
    to_server: u64,
    secs: f64,
}

fn mode(compression: bool) -> &'static str {
    if compression {
        "compressed"
    } else {
        "plain"
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn since(now: ProxyStats, then: ProxyStats) -> (u64, u64) {
    (
        now.bytes_to_client - then.bytes_to_client,
        now.bytes_to_upstream - then.bytes_to_upstream,
    )
}

// ---- 1. bootstrap --------------------------------------------------------------------------

fn bootstrap(dir: &Path, server: &Server, token: &str, space: &SpaceName, n: u64, on: bool) -> Run {
    let proxy = FaultProxy::start(server.0.addr()).expect("proxy");
    let db = dir.join(format!("boot-{}.db", mode(on)));
    let start = Instant::now();
    let client = Client::open(default_config(&db, &proxy, space, token, on)).expect("open");
    if let Err(e) = client.wait_synced(LONG_WAIT) {
        panic!("bootstrap ({}): {e}", mode(on));
    }
    let secs = start.elapsed().as_secs_f64();
    let stats = proxy.stats();
    assert_eq!(count_records(&client, space), n, "every record arrived");
    client.close();
    Run {
        to_client: stats.bytes_to_client,
        to_server: stats.bytes_to_upstream,
        secs,
    }
}

fn bench_bootstrap(dir: &Path, server: &Server) {
    let n = env_count("BENCH_WIRE_RECORDS", BOOTSTRAP_RECORDS);
    let boot = space("wire");
    let token = server.token(std::slice::from_ref(&boot));
    server.fill(&boot, n, small_todo);
    let plain = bootstrap(dir, server, &token, &boot, n, false);
    let compressed = bootstrap(dir, server, &token, &boot, n, true);
    for (run, on) in [(plain, false), (compressed, true)] {
        eprintln!(
            "  bootstrap {:>10}: server → client {} B, client → server {} B, {:.2} s, {:.0} rec/s",
            mode(on),
            run.to_client,
            run.to_server,
            run.secs,
            n as f64 / run.secs
        );
    }
    let k = n / 1000;
    let ratio = compressed.to_client as f64 / plain.to_client as f64;
    row(
        &format!("bootstrap {k}k: bytes server → client"),
        mb(compressed.to_client),
        mb(plain.to_client),
        ratio,
        "≤ 0.5×",
        ratio <= 0.5,
    );
    let ratio = compressed.to_server as f64 / plain.to_server as f64;
    row(
        &format!("bootstrap {k}k: bytes client → server"),
        mb(compressed.to_server),
        mb(plain.to_server),
        ratio,
        "≤ 1.2×",
        ratio <= 1.2,
    );
    let ratio = compressed.secs / plain.secs;
    row(
        &format!("bootstrap {k}k: records per second"),
        format!("{:.0}k/s", n as f64 / compressed.secs / 1000.0),
        format!("{:.0}k/s", n as f64 / plain.secs / 1000.0),
        ratio,
        "≤ 1.25×",
        ratio <= 1.25,
    );
}

// ---- 2. A → server → B ---------------------------------------------------------------------

/// Each field's median over `runs` (bytes barely vary; time does).
fn median_run(runs: &[Run]) -> Run {
    let of = |f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
    Run {
        to_client: of(|r| r.to_client as f64) as u64,
        to_server: of(|r| r.to_server as f64) as u64,
        secs: of(|r| r.secs),
    }
}

/// One A → B run of `n` puts into `space`; bytes A → server and server → B.
fn a_to_b_bytes(
    dir: &Path,
    server: &Server,
    token: &str,
    space: &SpaceName,
    n: u64,
    on: bool,
) -> Run {
    let (proxy_a, proxy_b) = (
        FaultProxy::start(server.0.addr()).expect("proxy A"),
        FaultProxy::start(server.0.addr()).expect("proxy B"),
    );
    let at = |name: &str, proxy: &FaultProxy| {
        default_config(
            &dir.join(format!("{name}-{space}.db")),
            proxy,
            space,
            token,
            on,
        )
    };
    let mut before = None;
    let run = a_to_b(at("a", &proxy_a), at("b", &proxy_b), space, n, || {
        before = Some((proxy_a.stats(), proxy_b.stats()));
    });
    let (a_before, b_before) = before.expect("the run started");
    wait_synced(&run.a);
    wait_synced(&run.b);
    let (_, a_sent) = since(proxy_a.stats(), a_before);
    let (b_received, _) = since(proxy_b.stats(), b_before);
    run.a.close();
    run.b.close();
    Run {
        to_client: b_received,
        to_server: a_sent,
        secs: run.secs,
    }
}

fn bench_e2e(dir: &Path, server: &Server) {
    let n = E2E_MUTATIONS;
    let spaces: Vec<SpaceName> = (0..E2E_REPS)
        .flat_map(|rep| {
            [
                space(&format!("e2e-plain-{rep}")),
                space(&format!("e2e-on-{rep}")),
            ]
        })
        .collect();
    let token = server.token(&spaces);
    let (mut plain_runs, mut compressed_runs) = (Vec::new(), Vec::new());
    for (rep, pair) in spaces.chunks(2).enumerate() {
        // Alternating which goes first, so neither always meets the larger server file.
        let order = if rep % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for on in order {
            let space = &pair[usize::from(on)];
            let run = a_to_b_bytes(dir, server, &token, space, n, on);
            eprintln!(
                "  A → B rep {rep} {:>10}: A → server {} B, server → B {} B, {:.2} s",
                mode(on),
                run.to_server,
                run.to_client,
                run.secs
            );
            if on {
                compressed_runs.push(run);
            } else {
                plain_runs.push(run);
            }
        }
    }
    let (plain, compressed) = (median_run(&plain_runs), median_run(&compressed_runs));
    let ratio = compressed.to_server as f64 / plain.to_server as f64;
    row(
        "A → server → B, 100k puts: bytes A → server",
        mb(compressed.to_server),
        mb(plain.to_server),
        ratio,
        "≤ 0.5×",
        ratio <= 0.5,
    );
    let ratio = compressed.to_client as f64 / plain.to_client as f64;
    row(
        "A → server → B, 100k puts: bytes server → B",
        mb(compressed.to_client),
        mb(plain.to_client),
        ratio,
        "≤ 0.5×",
        ratio <= 0.5,
    );
    let ratio = compressed.secs / plain.secs;
    row(
        "A → server → B, 100k puts: time (median of 3)",
        format!("{:.2} s", compressed.secs),
        format!("{:.2} s", plain.secs),
        ratio,
        "≤ 1.25×",
        ratio <= 1.25,
    );
}

fn main() {
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let run = |name: &str| only.is_empty() || only.split(',').any(|o| o.trim() == name);
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("server.db"));
    header("tidesync-client bytes on the wire (measured: compression on; baseline: off; ratio = on ÷ off)");
    if run("bootstrap") {
        bench_bootstrap(dir.path(), &server);
    }
    if run("e2e") {
        bench_e2e(dir.path(), &server);
    }
    server.stop();
}
