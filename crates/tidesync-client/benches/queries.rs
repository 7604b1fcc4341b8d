//! Query and live-query benchmarks over 1M local records, printed as ratios against
//! baselines measured in the same run.
//!
//! `cargo bench -p tidesync-client --bench queries` prints:
//! 1. **Bootstrap of 1M records with 100 live queries open vs none.** The server is filled
//!    before the clock starts (1M tasks in 1,000 projects). Each run opens a fresh client
//!    paused, with the index on `[project, done, due]` declared; the live run then opens 100
//!    live queries ("open tasks of project k by due date, 50 rows", 100 projects) and takes
//!    their first (empty) results. The clock runs from `resume()` until the client is synced.
//!    Runs alternate (none, live, none, live, ...). Target: ≤ 1.2×.
//! 2. **An indexed query returning 50 rows** on the 1M-record file (one of the 100 queries,
//!    over 200 projects in turn), through `Client::query`. Baseline: the same lookup written
//!    by hand in rusqlite on the same file: `json_extract` filters on project and done,
//!    `ORDER BY` due and id, `LIMIT 50`, served by a hand-made expression index on the same
//!    columns, rows parsed into JSON maps like the client does. Target: ≤ 1 ms.
//! 3. **An unindexed scan** (`priority = 3`, sorted by title, 50 rows: a full scan and a
//!    sort of 200k matches), reported against the same SQL by hand, also without an index.
//! 4. **Watch latency after a pulled page of 1,000 changes.** The bootstrapped client watches
//!    one project; a second client puts 1,000 tasks into that project (earlier due dates, so
//!    the result changes) in one transaction, pushed in one push and pulled in one page. The
//!    latency runs from the `RecordsChanged` event of the applied page to the delivery of
//!    the live query's update (so it includes the 5 ms throttle window). Baseline: the query
//!    run once. Target: ≤ 10 ms.
//!
//! `BENCH_QUERY_RECORDS` overrides the 1M (e.g. 200000 for a quick run). The bench never
//! asserts a target: a miss prints `MISS`.

#![allow(clippy::expect_used)] // a bench aborts on setup failures

mod common;

use std::path::Path;
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tidesync_client::{
    Client, ClientConfig, ClientEvent, Doc, IndexSpec, Indexes, LiveQuery, Query, SpaceName,
};

const RECORDS: u64 = 1_000_000;
const PROJECTS: u64 = 1_000;
const LIVE_QUERIES: u64 = 100;
/// Bootstrap repetitions of each kind (after one warm-up of each).
const REPS: usize = 3;
const QUERY_RUNS: u64 = 200;
const SCAN_RUNS: usize = 5;
const WATCH_RUNS: u64 = 15;
const PAGE: u64 = 1_000;

/// A task: ~100 bytes of JSON.
fn task(i: u64) -> Doc {
    let doc = json!({
        "title": format!("Task {i}"),
        "project": project(i % PROJECTS),
        "done": i.is_multiple_of(3),
        "due": (i * 7_919) % 100_000,
        "priority": i % 5,
    });
    match doc {
        Value::Object(doc) => doc,
        _ => unreachable!("an object literal"),
    }
}

fn project(k: u64) -> String {
    format!("p{k:03}")
}

fn indexes() -> Indexes {
    Indexes::Declared(vec![IndexSpec::new(
        collection(),
        &["project", "done", "due"],
    )
    .expect("valid index")])
}

/// Open tasks of project `k`, by due date, 50 rows.
fn open_tasks(space: &SpaceName, k: u64) -> Query {
    let form = json!({
        "selector": {"project": project(k), "done": false},
        "sort": ["due"],
        "limit": 50,
    });
    Query::from_json(space.clone(), collection(), &form).expect("valid query")
}

fn client_config(db: &Path, server: &Server, space: &SpaceName, token: &str) -> ClientConfig {
    let mut config = config(db, &server.url(), space, token);
    config.store.indexes = indexes();
    config
}

// ---- 1. bootstrap with and without live queries ---------------------------------------------

/// One bootstrap of a fresh client, with `live` live queries open; returns seconds.
fn bootstrap(db: &Path, server: &Server, space: &SpaceName, token: &str, live: u64) -> f64 {
    let mut config = client_config(db, server, space, token);
    config.start_online = false;
    let client = Client::open(config).expect("open");
    let watches: Vec<LiveQuery> = (0..live)
        .map(|k| {
            client
                .watch(open_tasks(space, k * 7 % PROJECTS))
                .expect("watch")
        })
        .collect();
    for w in &watches {
        w.recv_timeout(WAIT).expect("a first result");
    }
    let start = Instant::now();
    client.resume();
    wait_synced(&client);
    let secs = start.elapsed().as_secs_f64();
    if live > 0 {
        let stats = client.live_query_stats();
        eprintln!(
            "    live queries: {} passes, {} evaluations, {} deliveries",
            stats.passes, stats.evaluations, stats.deliveries
        );
    }
    drop(watches);
    client.close();
    secs
}

fn bench_bootstrap(dir: &Path, server: &Server, space: &SpaceName, token: &str, n: u64) {
    let run = |name: &str, live| {
        let db = dir.join(format!("{name}.db"));
        let secs = bootstrap(&db, server, space, token, live);
        eprintln!("  {name}: {secs:.2} s");
        secs
    };
    run("boot-warm-none", 0);
    run("boot-warm-live", LIVE_QUERIES);
    let (mut none, mut live, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..REPS {
        let a = run(&format!("boot-none-{rep}"), 0);
        let b = run(&format!("boot-live-{rep}"), LIVE_QUERIES);
        none.push(a);
        live.push(b);
        ratios.push(b / a);
    }
    let ratio = median(ratios);
    row(
        &format!(
            "bootstrap {}k records, {LIVE_QUERIES} live queries vs none",
            n / 1000
        ),
        format!("{:.2} s", median(live)),
        format!("{:.2} s none", median(none)),
        ratio,
        "≤ 1.20×",
        ratio <= 1.2,
    );
}

// ---- 2. and 3. one query: indexed, and a scan -----------------------------------------------

/// The hand-written lookup: SQL, its parameters, and an index for it (if any).
struct ByHand {
    sql: &'static str,
    index: Option<&'static str>,
}

const OPEN_TASKS_BY_HAND: ByHand = ByHand {
    sql: "SELECT id, doc, pending FROM records
          WHERE space = ?1 AND collection = ?2 AND doc IS NOT NULL
            AND json_extract(doc, '$.project') = ?3 AND json_extract(doc, '$.done') = 0
          ORDER BY json_extract(doc, '$.due'), id LIMIT 50",
    index: Some(
        "CREATE INDEX IF NOT EXISTS by_hand ON records (space, collection,
           json_extract(doc, '$.project'), json_extract(doc, '$.done'), json_extract(doc, '$.due'), id)",
    ),
};

const SCAN_BY_HAND: ByHand = ByHand {
    sql: "SELECT id, doc, pending FROM records
          WHERE space = ?1 AND collection = ?2 AND doc IS NOT NULL
            AND json_extract(doc, '$.priority') = ?3
          ORDER BY json_extract(doc, '$.title'), id LIMIT 50",
    index: None,
};

/// Runs the hand-written lookup; returns the ids (documents parsed, like the client).
fn by_hand(conn: &rusqlite::Connection, q: &ByHand, space: &SpaceName, arg: &Value) -> Vec<String> {
    let mut stmt = conn.prepare_cached(q.sql).expect("prepare");
    let arg = match arg {
        Value::String(s) => rusqlite::types::Value::Text(s.clone()),
        Value::Number(n) => rusqlite::types::Value::Integer(n.as_i64().expect("an integer")),
        _ => unreachable!("text or integer"),
    };
    let rows = stmt
        .query_map(rusqlite::params![space.as_str(), COLLECTION, arg], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .expect("query");
    rows.map(|row| {
        let (id, doc, _pending) = row.expect("row");
        let _doc: serde_json::Map<String, Value> = serde_json::from_str(&doc).expect("json");
        id
    })
    .collect()
}

fn time<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let start = Instant::now();
    let out = f();
    (start.elapsed().as_secs_f64(), out)
}

fn bench_queries(db: &Path, space: &SpaceName) {
    let mut config = ClientConfig::local(db);
    config.store.indexes = indexes();
    config.store.session = tidesync_client::SessionRestore::Keep;
    let client = Client::open(config).expect("open");
    let conn = rusqlite::Connection::open(db).expect("raw open");
    if let Some(index) = OPEN_TASKS_BY_HAND.index {
        let (secs, ()) = time(|| conn.execute_batch(index).expect("raw index"));
        eprintln!("  built the hand-made index in {secs:.1} s");
    }
    let plan = client
        .explain(&open_tasks(space, 0))
        .expect("explain")
        .join("; ");
    eprintln!("  plan: {plan}");

    // Warm both (page cache, statement caches).
    for k in 0..20 {
        client.query(&open_tasks(space, k)).expect("query");
        by_hand(&conn, &OPEN_TASKS_BY_HAND, space, &json!(project(k)));
    }
    let (mut ours, mut raw, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..QUERY_RUNS {
        let q = open_tasks(space, k * 3 % PROJECTS);
        let (t, page) = time(|| client.query(&q).expect("query"));
        let (r, ids) = time(|| {
            by_hand(
                &conn,
                &OPEN_TASKS_BY_HAND,
                space,
                &json!(project(k * 3 % PROJECTS)),
            )
        });
        let got: Vec<&str> = page.records.iter().map(|r| r.key.id.as_str()).collect();
        assert_eq!(got, ids, "the client and the hand-written lookup agree");
        assert_eq!(got.len(), 50, "50 rows");
        ours.push(t);
        raw.push(r);
        ratios.push(t / r);
    }
    let t = median(ours);
    row(
        "indexed query, 50 of 1M rows (Client::query)",
        format!("{:.3} ms", t * 1e3),
        format!("{:.3} ms hand", median(raw) * 1e3),
        median(ratios),
        "≤ 1 ms",
        t <= 1e-3,
    );

    let scan = Query::from_json(
        space.clone(),
        collection(),
        &json!({"selector": {"priority": 3}, "sort": ["title"], "limit": 50}),
    )
    .expect("valid query");
    let (mut ours, mut raw, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..SCAN_RUNS {
        let (t, page) = time(|| client.query(&scan).expect("scan"));
        let (r, ids) = time(|| by_hand(&conn, &SCAN_BY_HAND, space, &json!(3)));
        let got: Vec<&str> = page.records.iter().map(|r| r.key.id.as_str()).collect();
        assert_eq!(got, ids, "the scan agrees with the hand-written one");
        ours.push(t);
        raw.push(r);
        ratios.push(t / r);
    }
    row(
        "unindexed scan, 1M rows, sort 200k matches, 50 rows",
        format!("{:.0} ms", median(ours) * 1e3),
        format!("{:.0} ms hand", median(raw) * 1e3),
        median(ratios),
        "(report)",
        true,
    );
    drop(conn);
    client.close();
}

// ---- 4. watch latency after a pulled page ---------------------------------------------------

fn bench_watch(dir: &Path, db: &Path, server: &Server, space: &SpaceName, token: &str) {
    let reader = Client::open(client_config(db, server, space, token)).expect("open reader");
    wait_synced(&reader);
    let writer = Client::open(client_config(&dir.join("writer.db"), server, space, token))
        .expect("open writer");
    wait_synced(&writer);

    let watched = 42;
    let query = open_tasks(space, watched);
    let (applied_tx, applied) = channel();
    let events = reader.subscribe();
    std::thread::spawn(move || {
        for event in events {
            if let ClientEvent::RecordsChanged { count, .. } = event {
                if count as u64 >= PAGE && applied_tx.send(Instant::now()).is_err() {
                    return;
                }
            }
        }
    });
    let (delivered_tx, delivered) = channel();
    let _watch = reader
        .watch_with(query.clone(), move |update| {
            delivered_tx.send((Instant::now(), update)).is_ok()
        })
        .expect("watch");
    delivered.recv_timeout(WAIT).expect("the first result");

    let (mut latencies, mut evals, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..WATCH_RUNS {
        // 1,000 new open tasks of the watched project, due before everything it has.
        writer
            .transaction(|tx| {
                for j in 0..PAGE {
                    let i = RECORDS * 10 + rep * PAGE + j;
                    let mut doc = task(i);
                    doc.insert("project".into(), json!(project(watched)));
                    doc.insert("done".into(), json!(false));
                    doc.insert("due".into(), json!(-((rep * PAGE + j) as i64)));
                    tx.put(&key(space, i), doc)?;
                }
                Ok(())
            })
            .expect("writer");
        let at = applied.recv_timeout(WAIT).expect("the page applied");
        let (when, update) = delivered.recv_timeout(WAIT).expect("the update");
        assert_eq!(update.records.len(), 50);
        assert!(!update.added.is_empty(), "the page changed the result");
        let latency = when.saturating_duration_since(at).as_secs_f64();
        let (eval, _) = time(|| reader.query(&query).expect("query"));
        latencies.push(latency);
        evals.push(eval);
        ratios.push(latency / eval);
        // Let the writer's confirmation pull settle before the next page.
        wait_synced(&writer);
        std::thread::sleep(Duration::from_millis(50));
        while delivered.try_recv().is_ok() {}
        while applied.try_recv().is_ok() {}
    }
    let t = median(latencies);
    row(
        "watch latency, pulled page of 1,000 changes → result",
        format!("{:.2} ms", t * 1e3),
        format!("{:.2} ms query", median(evals) * 1e3),
        median(ratios),
        "≤ 10 ms",
        t <= 10e-3,
    );
    writer.close();
    reader.close();
}

fn main() {
    let n = env_count("BENCH_QUERY_RECORDS", RECORDS);
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("server.db"));
    let space = space("tasks");
    let token = server.token(std::slice::from_ref(&space));
    server.fill(&space, n, task);

    header(&format!(
        "tidesync-client query benchmarks ({}k records; medians; ratio = measured ÷ baseline, same run)",
        n / 1000
    ));
    bench_bootstrap(dir.path(), &server, &space, &token, n);
    let db = dir.path().join(format!("boot-none-{}.db", REPS - 1));
    bench_queries(&db, &space);
    bench_watch(dir.path(), &db, &server, &space, &token);
    server.stop();
}
