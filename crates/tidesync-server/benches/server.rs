//! Server benchmarks, printed as ratios against baselines measured in the same run.
//!
//! `cargo bench -p tidesync-server` prints:
//! 1. push throughput through the SQLite storage: 4 clients pushing concurrently (as a server
//!    sees them) in batches of 1,000 puts, synchronous=FULL; baseline: raw rusqlite writing
//!    the same rows (record upserts, space version, client last_seq) in one transaction per
//!    batch with the same pragmas. Batches and rows are built before the clock starts.
//!    The same load again through the HTTP app (`app().oneshot`, bodies serialized before the
//!    clock starts): JSON parsing, auth, validation and response serialization included.
//!    For information, one run of the same load over existing records (updates), and the
//!    same load of new records into a collection under a JSON Schema.
//! 2. the time to pull 100 changes from a space of 1M records vs from a space of 1k records;
//!    then the same page of the big space through the HTTP app, response JSON included
//!    (for information: no target).
//!
//! `BENCH_PULL_RECORDS` overrides the 1M (e.g. 200000 for a quick run).

mod common;

use common::{info_row, median, mutation, pull_time, row};
use std::time::Instant;

use rusqlite::params;
use serde_json::json;
use std::sync::Arc;
use tidesync_protocol::{ClientId, CollectionName, SpaceName, Stamp};
use tidesync_server::rules::{land, ServerRecord};
use tidesync_server::storage::sqlite::SqliteStorage;
use tidesync_server::storage::{PushInput, PushOrigin, Storage};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use tidesync_protocol::{PushRequest, PROTOCOL_VERSION};
use tidesync_server::auth::Grants;
use tidesync_server::{app, AppState, Limits, MergeRules, Schemas};
use tower::ServiceExt;

const BATCH: u64 = 1_000;
const CLIENTS: u64 = 4;

/// The pushes of one client: `n` puts on records `seq % ids`, in batches of `BATCH`.
fn batches(space: &str, client: &str, n: u64, ids: u64) -> Vec<PushInput> {
    let client = ClientId::new(client).expect("valid client");
    (1..=n)
        .step_by(BATCH as usize)
        .map(|from| PushInput {
            user: "bench".into(),
            client_id: client.clone(),
            mutations: (from..(from + BATCH).min(n + 1))
                .map(|s| mutation(space, s, s % ids))
                .collect(),
            recover_from: None,
            origin: PushOrigin::Client,
        })
        .collect()
}

async fn push_all(storage: &SqliteStorage, batches: Vec<PushInput>) {
    for batch in batches {
        storage.push(batch).await.expect("push");
    }
}

/// `n` new mutations pushed by `CLIENTS` clients at once, each into its own space (round
/// `rep`: fresh spaces and client ids), in mutations per second.
async fn concurrent_push_rate(storage: &SqliteStorage, rep: u64, n: u64) -> f64 {
    let work: Vec<_> = (0..CLIENTS)
        .map(|c| {
            batches(
                &format!("s{rep}-{c}"),
                &format!("c{rep}-{c}"),
                n / CLIENTS,
                n,
            )
        })
        .collect();
    let start = Instant::now();
    futures::future::join_all(work.into_iter().map(|b| push_all(storage, b))).await;
    n as f64 / start.elapsed().as_secs_f64()
}

type RawRow = (String, i64, Option<String>, String, String);

/// The rows a push of `n` new puts writes, serialized exactly as the storage does (same
/// document, stamps and versions JSON), built before the clock starts.
fn raw_rows(from_seq: u64, n: u64) -> Vec<RawRow> {
    let client = ClientId::new("raw").expect("valid client");
    (from_seq..from_seq + n)
        .map(|s| {
            let m = mutation("raw", s, s);
            let mut record = ServerRecord::default();
            let stamp = Stamp::new(m.hlc, client.clone());
            land(&mut record, &m.op, &stamp, s, &mut []);
            let wire = tidesync_core::wire::encode(&record.state);
            let versions = serde_json::to_string(&record.versions).expect("json");
            (
                format!("t{s:08}"),
                s as i64,
                wire.doc,
                wire.stamps,
                versions,
            )
        })
        .collect()
}

fn raw_push(conn: &mut rusqlite::Connection, rows: &[RawRow]) {
    for chunk in rows.chunks(BATCH as usize) {
        let end = chunk.last().map_or(0, |r| r.1);
        let tx = conn.transaction().expect("begin");
        {
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO records (space, collection, id, version, doc, stamps, versions)
                     VALUES (?1, 'todos', ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT DO UPDATE SET version = excluded.version, doc = excluded.doc,
                        stamps = excluded.stamps, versions = excluded.versions",
                )
                .expect("prepare");
            for (id, version, doc, stamps, versions) in chunk {
                upsert
                    .execute(params!["raw", id, version, doc, stamps, versions])
                    .expect("upsert");
            }
            tx.execute(
                "INSERT INTO spaces (space, version) VALUES ('raw', ?1)
                 ON CONFLICT DO UPDATE SET version = excluded.version",
                [end],
            )
            .expect("space");
            tx.execute(
                "INSERT INTO clients (client_id, user_id, last_seq) VALUES ('raw', 'bench', ?1)
                 ON CONFLICT DO UPDATE SET last_seq = excluded.last_seq",
                [end],
            )
            .expect("client");
        }
        tx.commit().expect("commit");
    }
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    println!("tidesync-server benchmarks (medians; ratios against baselines from this run)\n");
    println!("| benchmark                                                |   measured |       baseline | ratio | target    | result |");
    println!("|----------------------------------------------------------|------------|----------------|-------|-----------|--------|");

    // 1. Push throughput.
    let path = dir.path().join("push.db");
    let storage = SqliteStorage::open(&path, MergeRules::default()).expect("open");
    let mut raw = rusqlite::Connection::open(&path).expect("raw connection");
    raw.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA cache_size = -65536; PRAGMA wal_autocheckpoint = 10000;",
    )
    .expect("pragma");
    let n = 100_000u64;
    push_all(&storage, batches("warm", "warm", 10_000, 10_000)).await;
    raw_push(&mut raw, &raw_rows(1, 10_000));
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for rep in 0..3u64 {
        ours.push(concurrent_push_rate(&storage, rep, n).await);
        let rows = raw_rows(10_001 + rep * n, n);
        let start = Instant::now();
        raw_push(&mut raw, &rows);
        base.push(n as f64 / start.elapsed().as_secs_f64());
    }
    let (ours, base) = (median(ours), median(base));
    row(
        "push: 4 clients × batches of 1,000 puts, FULL (mut/s)",
        format!("{:.0}k/s", ours / 1000.0),
        format!("{:.0}k/s raw", base / 1000.0),
        base / ours,
        "≥ 100k/s",
        ours >= 100_000.0,
    );
    // 1a. Updates: the first repetition's records written again by other clients (each
    // write moves the record's row to its new version).
    let work: Vec<_> = (0..CLIENTS)
        .map(|c| batches(&format!("s0-{c}"), &format!("u-{c}"), n / CLIENTS, n))
        .collect();
    let storage_ref = &storage;
    let start = Instant::now();
    futures::future::join_all(work.into_iter().map(|b| push_all(storage_ref, b))).await;
    let updates = n as f64 / start.elapsed().as_secs_f64();
    info_row(
        "push: the same 100k records written again (mut/s)",
        format!("{:.0}k/s", updates / 1000.0),
        format!("{:.0}k/s new", ours / 1000.0),
        ours / updates,
    );
    storage.shutdown().await;

    // 1c. The same load of new records into `todos` under a JSON Schema (for information:
    // what validating each record costs).
    let mut schemas = Schemas::new();
    schemas
        .insert(
            CollectionName::new("todos").expect("valid"),
            &json!({
                "type": "object",
                "required": ["title", "done"],
                "properties": {
                    "title": {"type": "string", "minLength": 1, "maxLength": 200},
                    "done": {"type": "boolean"},
                    "priority": {"type": "integer", "minimum": 0, "maximum": 4}
                },
                "additionalProperties": false
            }),
        )
        .expect("a valid schema");
    let rules = MergeRules {
        schemas,
        ..MergeRules::default()
    };
    let storage = SqliteStorage::open(&dir.path().join("schema.db"), rules).expect("open");
    push_all(&storage, batches("warm", "warm", 10_000, 10_000)).await;
    let mut checked = Vec::new();
    for rep in 0..3u64 {
        checked.push(concurrent_push_rate(&storage, rep, n).await);
    }
    let checked = median(checked);
    info_row(
        "push: the same, `todos` under a JSON Schema (mut/s)",
        format!("{:.0}k/s", checked / 1000.0),
        format!("{:.0}k/s without", ours / 1000.0),
        ours / checked,
    );
    storage.shutdown().await;

    // 1b. The same through the HTTP app.
    let path = dir.path().join("http.db");
    let storage = Arc::new(SqliteStorage::open(&path, MergeRules::default()).expect("open"));
    let spaces: Vec<String> = (0..3)
        .flat_map(|rep| (0..CLIENTS).map(move |c| format!("h{rep}-{c}")))
        .chain(["hwarm".to_owned()])
        .collect();
    let token = storage
        .create_token(&Grants {
            user: "bench".into(),
            read: Default::default(),
            write: spaces
                .iter()
                .map(|s| SpaceName::new(s.as_str()).expect("valid"))
                .collect(),
        })
        .expect("token");
    let router = app(AppState::new(storage.clone(), Limits::default()));
    let bodies = |space: &str, client: &str, n: u64| -> Vec<Vec<u8>> {
        batches(space, client, n, n)
            .into_iter()
            .map(|b| {
                serde_json::to_vec(&PushRequest {
                    client_id: b.client_id,
                    protocol: PROTOCOL_VERSION,
                    mutations: b.mutations,
                    recover_from: None,
                })
                .expect("json")
            })
            .collect()
    };
    let send_all = |bodies: Vec<Vec<u8>>| {
        let router = router.clone();
        let token = token.clone();
        async move {
            for body in bodies {
                let request = Request::post("/v1/push")
                    .header(header::AUTHORIZATION, format!("Bearer {token}"))
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(body))
                    .expect("request");
                let response = router.clone().oneshot(request).await.expect("response");
                assert_eq!(response.status(), StatusCode::OK);
            }
        }
    };
    send_all(bodies("hwarm", "hwarm", 10_000)).await;
    let mut http = Vec::new();
    for rep in 0..3u64 {
        let work: Vec<_> = (0..CLIENTS)
            .map(|c| bodies(&format!("h{rep}-{c}"), &format!("hc{rep}-{c}"), n / CLIENTS))
            .collect();
        let start = Instant::now();
        futures::future::join_all(work.into_iter().map(&send_all)).await;
        http.push(n as f64 / start.elapsed().as_secs_f64());
    }
    let http = median(http);
    row(
        "push over the HTTP app (same load, JSON included)",
        format!("{:.0}k/s", http / 1000.0),
        format!("{:.0}k/s storage", ours / 1000.0),
        ours / http,
        "≥ 100k/s",
        http >= 100_000.0,
    );
    storage.shutdown().await;

    // 2. Pull cost vs space size.
    let big: u64 = std::env::var("BENCH_PULL_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let path = dir.path().join("pull.db");
    let storage = Arc::new(SqliteStorage::open(&path, MergeRules::default()).expect("open"));
    let fill = Instant::now();
    push_all(&storage, batches("big", "filler-big", big, big)).await;
    push_all(&storage, batches("small", "filler-small", 1_000, 1_000)).await;
    eprintln!("filled {big} + 1000 records in {:?}", fill.elapsed());
    pull_time(storage.as_ref(), "big", big, 20).await;
    pull_time(storage.as_ref(), "small", 1_000, 20).await;
    let (mut b, mut s) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        b.push(pull_time(storage.as_ref(), "big", big, 20).await);
        s.push(pull_time(storage.as_ref(), "small", 1_000, 20).await);
    }
    let (b, s) = (median(b), median(s));
    row(
        &format!("pull 100 changes: space of {}k vs 1k records", big / 1000),
        format!("{:.0} µs", b * 1e6),
        format!("{:.0} µs at 1k", s * 1e6),
        b / s,
        "≤ 1.5×",
        b / s <= 1.5,
    );

    // 2b. The same page of the big space through the HTTP app: response JSON included.
    let token = storage
        .create_token(&Grants {
            user: "bench".into(),
            read: [SpaceName::new("big").expect("valid")]
                .into_iter()
                .collect(),
            write: Default::default(),
        })
        .expect("token");
    let router = app(AppState::new(storage.clone(), Limits::default()));
    let body = serde_json::to_vec(&json!({
        "client_id": "reader",
        "protocol": PROTOCOL_VERSION,
        "cursor": {"big": big - 100},
        "spaces": ["big"],
        "limit": 100,
    }))
    .expect("json");
    let http_pull = || {
        let request = Request::post("/v1/pull")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.clone()))
            .expect("request");
        let router = router.clone();
        async move {
            let start = Instant::now();
            let response = router.oneshot(request).await.expect("response");
            assert_eq!(response.status(), StatusCode::OK);
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("body");
            let elapsed = start.elapsed().as_secs_f64();
            assert!(bytes.len() > 100 * 50, "a page of 100 changes");
            elapsed
        }
    };
    for _ in 0..20 {
        http_pull().await;
    }
    let mut h = Vec::new();
    for _ in 0..100 {
        h.push(http_pull().await);
    }
    let h = median(h);
    info_row(
        "pull 100 changes over the HTTP app (JSON included)",
        format!("{:.0} µs", h * 1e6),
        format!("{:.0} µs storage", b * 1e6),
        h / b,
    );
    storage.shutdown().await;
}
