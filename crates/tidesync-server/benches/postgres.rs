//! PostgreSQL backend benchmarks (issue 13, "Must show"), printed as one markdown table.
//!
//! `cargo bench -p tidesync-server --bench postgres` needs a PostgreSQL server:
//! `TIDESYNC_TEST_DATABASE_URL` (or `BENCH_DATABASE_URL`), e.g.
//! `postgres://postgres@127.0.0.1:5432/test`. Without one it says so and exits 0. It creates
//! schemas of its own ([`TestDatabase`]) and drops them at the end. Everything goes through
//! the public API (`Storage`, the HTTP app); no raw SQL writes.
//!
//! It prints:
//! 1. push throughput, batches of 1,000 new puts, every client writing its own space:
//!    - one node (one `PostgresStorage`), 4 concurrent clients; baseline: the same load on
//!      the SQLite storage (synchronous=FULL), measured in the same run;
//!    - three nodes (three `PostgresStorage` instances, each with its own pool and LISTEN
//!      connection, on one schema), 4 clients per node; baseline: one node;
//!    - for the reason when three nodes do not scale: one node with the same 12 clients,
//!      and the CPU the bench process and the PostgreSQL backends used per wall second
//!      during the three-node run (from `/proc`; the machine's cores are the ceiling).
//!
//!    Batches are built before the clock starts; median of 3 runs.
//! 2. the time to pull 100 changes from a space of 1M records vs from a space of 1k.
//! 3. bootstrap: the whole 1M-record space pulled in pages of 10,000 from cursor 0 (rec/s),
//!    next to the fill rate (4 writers pushing batches of 5,000 into the one space); then
//!    again after `ANALYZE ts_records` (the one raw SQL statement here: planner statistics,
//!    as autovacuum would gather them), to show what stale statistics cost.
//! 4. poke latency across nodes: two in-process HTTP servers, each with its own storage on
//!    the schema; a push of one mutation over HTTP to node A, the `poke` on an SSE stream
//!    (`GET /v1/events`) of node B, measured from sending the push; p50/p99 over 200 pushes.
//!
//! `BENCH_PG_RECORDS` overrides the 1M (e.g. 100000 for a quick run).

mod common;

use common::{info_row, median, mutation, pull_time, row};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tidesync_protocol::{ClientId, Cursor, PushRequest, SpaceName, PROTOCOL_VERSION};
use tidesync_server::auth::Grants;
use tidesync_server::storage::postgres::PostgresStorage;
use tidesync_server::storage::sqlite::SqliteStorage;
use tidesync_server::storage::{PullInput, PushInput, PushOrigin, Storage};
use tidesync_server::{AppState, Limits, MergeRules};
use tidesync_testkit::TestDatabase;

const BATCH: u64 = 1_000;
const CLIENTS_PER_NODE: u64 = 4;
const NODES: u64 = 3;
/// Mutations per push measurement (every configuration writes the same total).
const PUSHED: u64 = 120_000;
const FILL_BATCH: u64 = 5_000;
const FILLERS: u64 = 4;
const BOOTSTRAP_PAGE: u32 = 10_000;
const POKES: usize = 200;

fn space(name: &str) -> SpaceName {
    SpaceName::new(name).expect("valid space")
}

/// The pushes of one client: puts of records `ids`, seqs from 1, in batches of `batch`.
fn batches(space: &str, client: &str, ids: std::ops::Range<u64>, batch: u64) -> Vec<PushInput> {
    let client = ClientId::new(client).expect("valid client");
    let first = ids.start;
    ids.clone()
        .step_by(batch as usize)
        .map(|from| PushInput {
            user: "bench".into(),
            client_id: client.clone(),
            mutations: (from..(from + batch).min(ids.end))
                .map(|id| mutation(space, id - first + 1, id))
                .collect(),
            recover_from: None,
            origin: PushOrigin::Client,
        })
        .collect()
}

/// Every client's batches pushed concurrently, client `i` to `nodes[i % nodes.len()]`;
/// returns mutations/s.
async fn push_load(nodes: &[Arc<dyn Storage>], work: Vec<Vec<PushInput>>) -> f64 {
    let n: usize = work.iter().flatten().map(|b| b.mutations.len()).sum();
    let start = Instant::now();
    let tasks: Vec<_> = work
        .into_iter()
        .enumerate()
        .map(|(i, batches)| {
            let node = nodes[i % nodes.len()].clone();
            tokio::spawn(async move {
                for batch in batches {
                    node.push(batch).await.expect("push");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("pusher");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// `clients` clients, each writing `PUSHED / clients` new records into a space of its own.
fn push_work(tag: &str, clients: u64) -> Vec<Vec<PushInput>> {
    (0..clients)
        .map(|c| {
            batches(
                &format!("{tag}-{c}"),
                &format!("{tag}-c{c}"),
                0..PUSHED / clients,
                BATCH,
            )
        })
        .collect()
}

/// The median rate of 3 runs of `clients` clients over `nodes` (tags `tag0`, `tag1`, ...),
/// with the CPU this process and PostgreSQL used per wall second while they pushed (every
/// batch is built before the first run).
async fn push_median(
    nodes: &[Arc<dyn Storage>],
    tag: &str,
    clients: u64,
) -> (f64, Option<(f64, f64)>) {
    let works: Vec<_> = (0..3)
        .map(|rep| push_work(&format!("{tag}{rep}"), clients))
        .collect();
    let mut runs = Vec::new();
    let mut wall = 0.0;
    let before = cpu_seconds();
    for work in works {
        let start = Instant::now();
        runs.push(push_load(nodes, work).await);
        wall += start.elapsed().as_secs_f64();
    }
    let cpu = cpu_seconds()
        .zip(before)
        .map(|((me, pg), (me0, pg0))| ((me - me0) / wall, (pg - pg0) / wall));
    (median(runs), cpu)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn rate(per_s: f64) -> String {
    format!("{:.1}k/s", per_s / 1000.0)
}

/// CPU seconds (user + system) used so far by this process and by every `postgres`
/// process, from `/proc` (`None` where there is no `/proc`).
fn cpu_seconds() -> Option<(f64, f64)> {
    let ticks = 100.0; // USER_HZ on Linux
    let of = |stat: &str| -> Option<(String, f64)> {
        let (name, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (utime, stime): (f64, f64) =
            (fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?);
        Some((name.to_owned(), (utime + stime) / ticks))
    };
    let me = of(&std::fs::read_to_string("/proc/self/stat").ok()?)?.1;
    let mut pg = 0.0;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        if let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) {
            if let Some((name, secs)) = of(&stat) {
                if name == "postgres" {
                    pg += secs;
                }
            }
        }
    }
    Some((me, pg))
}

async fn pg_node(db: &TestDatabase) -> Arc<PostgresStorage> {
    Arc::new(
        PostgresStorage::connect(db.url(), MergeRules::default())
            .await
            .expect("connect to PostgreSQL"),
    )
}

/// Fills `name` with records `0..n` from [`FILLERS`] concurrent writers (batches of
/// [`FILL_BATCH`]); returns records/s.
async fn fill(storage: &Arc<dyn Storage>, name: &str, n: u64) -> f64 {
    let per = n.div_ceil(FILLERS);
    let work = (0..FILLERS)
        .map(|f| {
            let ids = (f * per).min(n)..((f + 1) * per).min(n);
            batches(name, &format!("fill-{name}-{f}"), ids, FILL_BATCH)
        })
        .collect();
    push_load(std::slice::from_ref(storage), work).await
}

/// Pulls all of `name` (at `version`) from cursor 0 in pages of [`BOOTSTRAP_PAGE`];
/// returns records/s.
async fn bootstrap(storage: &dyn Storage, name: &str, version: u64) -> f64 {
    let space = space(name);
    let mut cursor = Cursor::new();
    let mut records = 0u64;
    let start = Instant::now();
    loop {
        let page = storage
            .pull(PullInput {
                user: "bench".into(),
                client_id: ClientId::new("bootstrapper").expect("valid"),
                cursor: cursor.clone(),
                spaces: vec![space.clone()],
                limit: BOOTSTRAP_PAGE,
                echoes: false,
                refetch: Vec::new(),
            })
            .await
            .expect("bootstrap pull");
        records += page.changes.len() as u64;
        cursor = page.cursor;
        if !page.has_more {
            break;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(records, version, "bootstrap saw every record once");
    assert_eq!(cursor.get(&space).copied(), Some(version));
    records as f64 / elapsed
}

/// An HTTP server on a free loopback port serving `storage`; stops when `stop` fires.
async fn http_node(
    storage: Arc<dyn Storage>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (String, tokio::task::JoinHandle<std::io::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let state = AppState::new(storage, Limits::default());
    let mut stop = stop;
    let task = tokio::spawn(tidesync_server::serve(listener, state, async move {
        let _ = stop.wait_for(|s| *s).await;
    }));
    (url, task)
}

/// Push latency on A and push → poke latency on B, each sorted (seconds).
async fn poke_latency(db: &TestDatabase) -> (Vec<f64>, Vec<f64>) {
    let (a, b) = (pg_node(db).await, pg_node(db).await);
    let name = "pokes";
    let token = a
        .create_token(&Grants {
            user: "bench".into(),
            read: BTreeSet::new(),
            write: [space(name)].into_iter().collect(),
        })
        .await
        .expect("token");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (url_a, task_a) = http_node(a, stopped.clone()).await;
    let (url_b, task_b) = http_node(b, stopped).await;
    let http = reqwest::Client::new();
    let events = http
        .get(format!("{url_b}/v1/events?spaces={name}"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("open the event stream");
    assert!(events.status().is_success(), "{}", events.status());
    let (seen, mut pokes) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        let mut body = events.bytes_stream();
        let mut buffer = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            let at = Instant::now();
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find('\n') {
                let line: String = buffer.drain(..=end).collect();
                if line.trim_end() == "event: poke" && seen.send(at).is_err() {
                    return;
                }
            }
        }
    });
    let client = ClientId::new("poker").expect("valid");
    let (mut push_times, mut poke_times) = (Vec::new(), Vec::new());
    for seq in 1..=(POKES + 20) as u64 {
        let body = serde_json::to_vec(&PushRequest {
            client_id: client.clone(),
            protocol: PROTOCOL_VERSION,
            mutations: vec![mutation(name, seq, seq)],
            recover_from: None,
        })
        .expect("json");
        let sent = Instant::now();
        let response = http
            .post(format!("{url_a}/v1/push"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("push");
        assert!(response.status().is_success(), "{}", response.status());
        let pushed = sent.elapsed().as_secs_f64();
        let poked = tokio::time::timeout(Duration::from_secs(10), pokes.recv())
            .await
            .expect("a poke on node B within 10 s")
            .expect("the event stream is open");
        // The first 20 warm up connections and statement caches.
        if seq > 20 {
            push_times.push(pushed);
            poke_times.push(poked.duration_since(sent).as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    reader.abort();
    stop.send_replace(true);
    let _ = task_a.await;
    let _ = task_b.await;
    push_times.sort_by(|x, y| x.total_cmp(y));
    poke_times.sort_by(|x, y| x.total_cmp(y));
    (push_times, poke_times)
}

fn main() {
    let url = std::env::var("TIDESYNC_TEST_DATABASE_URL")
        .or_else(|_| std::env::var("BENCH_DATABASE_URL"))
        .ok();
    let Some(url) = url else {
        println!(
            "postgres bench skipped: set TIDESYNC_TEST_DATABASE_URL (or BENCH_DATABASE_URL) to a \
             PostgreSQL server, e.g. postgres://postgres@127.0.0.1:5432/test"
        );
        return;
    };
    // TestDatabase reads TIDESYNC_TEST_DATABASE_URL; set before any thread starts.
    std::env::set_var("TIDESYNC_TEST_DATABASE_URL", &url);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let big: u64 = std::env::var("BENCH_PG_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "tidesync-server PostgreSQL benchmarks (medians; ratios against baselines from this \
         run; {cores} cores, PostgreSQL on the same machine)\n"
    );
    println!("| benchmark                                                |   measured |         baseline | ratio | target    | result |");
    println!("|----------------------------------------------------------|------------|------------------|-------|-----------|--------|");

    // 1. Push throughput: SQLite, then PostgreSQL with one node and with three.
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite: Arc<dyn Storage> = Arc::new(
        SqliteStorage::open(&dir.path().join("push.db"), MergeRules::default()).expect("open"),
    );
    push_load(std::slice::from_ref(&sqlite), push_work("warm", 2)).await;
    let (on_sqlite, _) = push_median(std::slice::from_ref(&sqlite), "lite", CLIENTS_PER_NODE).await;
    sqlite.shutdown().await;
    drop(sqlite);

    let db = TestDatabase::create("benchpush").expect("the URL is set");
    let mut nodes: Vec<Arc<dyn Storage>> = Vec::new();
    for _ in 0..NODES {
        nodes.push(pg_node(&db).await);
    }
    push_load(&nodes, push_work("warm", 2 * NODES)).await;
    let (one, one_cpu) = push_median(&nodes[..1], "one", CLIENTS_PER_NODE).await;
    let (one_many, _) = push_median(&nodes[..1], "onemany", CLIENTS_PER_NODE * NODES).await;
    let (three, three_cpu) = push_median(&nodes, "three", CLIENTS_PER_NODE * NODES).await;
    for node in &nodes {
        node.shutdown().await;
    }
    drop(nodes);
    drop(db);
    row(
        "push PG, 1 node: 4 clients × batches of 1,000 (mut/s)",
        rate(one),
        format!("{} SQLite", rate(on_sqlite)),
        on_sqlite / one,
        "≥ 50k/s",
        one >= 50_000.0,
    );
    row(
        "push PG, 3 nodes: 4 clients each (mut/s)",
        rate(three),
        format!("{} 1 node", rate(one)),
        three / one,
        "≥ 1.5×",
        three >= 1.5 * one,
    );
    info_row(
        "push PG, 1 node with the same 12 clients (mut/s)",
        rate(one_many),
        format!("{} 3 nodes", rate(three)),
        three / one_many,
    );
    for (name, cpu) in [("1-node", one_cpu), ("3-node", three_cpu)] {
        if let Some((me, pg)) = cpu {
            info_row(
                &format!("CPU in the {name} run, cores: bench process vs PG"),
                format!("{me:.2}"),
                format!("{pg:.2} PostgreSQL"),
                (me + pg) / cores as f64,
            );
        }
    }

    // 2. Pull cost vs space size, 3. bootstrap.
    let db = TestDatabase::create("benchpull").expect("the URL is set");
    let storage: Arc<dyn Storage> = pg_node(&db).await;
    let filled = fill(&storage, "big", big).await;
    fill(&storage, "small", 1_000).await;
    eprintln!("filled {big} records at {}", rate(filled));
    let version = storage
        .space_versions(&[space("big")])
        .await
        .expect("version")[0];
    assert_eq!(version, big, "every fill write applied once");
    pull_time(storage.as_ref(), "big", big, 20).await;
    pull_time(storage.as_ref(), "small", 1_000, 20).await;
    let (mut b, mut s) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        b.push(pull_time(storage.as_ref(), "big", big, 20).await);
        s.push(pull_time(storage.as_ref(), "small", 1_000, 20).await);
    }
    let (b, s) = (median(b), median(s));
    row(
        &format!(
            "pull 100 changes PG: space of {}k vs 1k records",
            big / 1000
        ),
        format!("{:.0} µs", b * 1e6),
        format!("{:.0} µs at 1k", s * 1e6),
        b / s,
        "≤ 1.5×",
        b / s <= 1.5,
    );
    let boot = bootstrap(storage.as_ref(), "big", big).await;
    info_row(
        &format!(
            "bootstrap PG: {}k records, pages of 10,000 (rec/s)",
            big / 1000
        ),
        rate(boot),
        format!("{} fill", rate(filled)),
        boot / filled,
    );
    // The same once PostgreSQL has statistics of the filled table (what autovacuum gives it
    // within a minute or so; right after the fill the planner still believes the space is
    // small and may sort every remaining row for each page).
    db.execute("ANALYZE ts_records");
    let analyzed = bootstrap(storage.as_ref(), "big", big).await;
    info_row(
        "bootstrap PG, the same after ANALYZE (rec/s)",
        rate(analyzed),
        format!("{} before", rate(boot)),
        analyzed / boot,
    );
    storage.shutdown().await;
    drop(storage);
    drop(db);

    // 4. Pokes across nodes.
    let db = TestDatabase::create("benchpoke").expect("the URL is set");
    let (pushes, pokes) = poke_latency(&db).await;
    drop(db);
    let ms = |s: f64| format!("{:.1} ms", s * 1e3);
    info_row(
        "poke across nodes: push on A → SSE poke on B, p50",
        ms(percentile(&pokes, 0.5)),
        format!("{} push p50", ms(percentile(&pushes, 0.5))),
        percentile(&pokes, 0.5) / percentile(&pushes, 0.5),
    );
    let p99 = percentile(&pokes, 0.99);
    row(
        &format!("poke across nodes: p99 over {} pushes", pokes.len()),
        ms(p99),
        format!("{} push p99", ms(percentile(&pushes, 0.99))),
        p99 / percentile(&pushes, 0.99),
        "≤ 100 ms",
        p99 <= 0.100,
    );
}
