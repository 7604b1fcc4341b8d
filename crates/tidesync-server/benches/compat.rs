//! The compat protocols next to the native one, in one run (`cargo bench -p tidesync-server
//! --bench compat`): 10,000 documents pushed to an empty space, then pulled from scratch by
//! another reader, through `POST /v1/push` + `POST /v1/pull`, RxDB's `…/push` + `…/pull`,
//! and WatermelonDB's `POST …/sync` + `GET …/sync`, as raw HTTP on loopback (reqwest, one
//! keep-alive connection, no compression) against `serve()` over a fresh SQLite file each
//! time. Bodies are built before the clock starts; each answer is read whole and parsed.
//!
//! Batches: native and RxDB push 1,000 documents per request and pull pages of 1,000;
//! WatermelonDB pushes everything in one request and pulls everything in one answer (its
//! protocol has no batches). Each line is the median of `BENCH_REPS` (default 5) runs, the
//! protocols interleaved within a repetition; the ratio is to the native line of the same
//! direction. `BENCH_DOCS` overrides the 10,000.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};
use tidesync_protocol::{Hlc, SpaceName};
use tidesync_server::auth::Grants;
use tidesync_server::storage::sqlite::SqliteStorage;
use tidesync_server::storage::Storage;
use tidesync_server::{serve, AppState, Limits, MergeRules};

const BATCH: usize = 1_000;
const SPACE: &str = "bench";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Native,
    Rxdb,
    Watermelon,
}

impl Protocol {
    const ALL: [Protocol; 3] = [Protocol::Native, Protocol::Rxdb, Protocol::Watermelon];

    fn name(self) -> &'static str {
        match self {
            Protocol::Native => "native (/v1/push, /v1/pull)",
            Protocol::Rxdb => "RxDB (…/push, …/pull)",
            Protocol::Watermelon => "WatermelonDB (POST/GET …/sync)",
        }
    }
}

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

fn document(i: usize) -> Value {
    json!({"title": format!("Buy milk #{i}"), "done": i.is_multiple_of(3), "priority": i % 5})
}

fn id(i: usize) -> String {
    format!("t{i:08}")
}

/// The request bodies of one push of `docs` documents (built before the clock starts).
fn push_bodies(protocol: Protocol, docs: usize) -> Vec<Vec<u8>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let body = |v: Value| serde_json::to_vec(&v).expect("json");
    match protocol {
        Protocol::Native => (0..docs)
            .step_by(BATCH)
            .map(|from| {
                let mutations: Vec<Value> = (from..(from + BATCH).min(docs))
                    .map(|i| {
                        json!({"seq": i + 1, "tx": i + 1, "space": SPACE, "collection": "todos",
                               "id": id(i), "kind": "put", "doc": document(i),
                               "hlc": Hlc::new(now, (i % 60_000) as u16).expect("hlc").to_string(),
                               "base_version": 0})
                    })
                    .collect();
                body(json!({"client_id": "writer", "protocol": 2, "mutations": mutations}))
            })
            .collect(),
        Protocol::Rxdb => (0..docs)
            .step_by(BATCH)
            .map(|from| {
                let rows: Vec<Value> = (from..(from + BATCH).min(docs))
                    .map(|i| {
                        let mut doc = document(i);
                        doc["id"] = json!(id(i));
                        doc["_deleted"] = json!(false);
                        doc["_meta"] = json!({"lwt": now});
                        doc["_rev"] = json!("1-abcdef");
                        json!({"assumedMasterState": null, "newDocumentState": doc})
                    })
                    .collect();
                body(json!(rows))
            })
            .collect(),
        Protocol::Watermelon => {
            let created: Vec<Value> = (0..docs)
                .map(|i| {
                    let mut raw = document(i);
                    raw["id"] = json!(id(i));
                    raw["_status"] = json!("created");
                    raw["_changed"] = json!("");
                    raw
                })
                .collect();
            vec![body(
                json!({"todos": {"created": created, "updated": [], "deleted": []}}),
            )]
        }
    }
}

/// A server on a loopback port over a fresh SQLite file, and a token for it.
struct Server {
    url: String,
    token: String,
    state: AppState,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = Arc::new(
            SqliteStorage::open(&dir.path().join("server.db"), MergeRules::default())
                .expect("open"),
        );
        let grants = Grants {
            user: "bench".into(),
            read: Default::default(),
            write: [SpaceName::new(SPACE).expect("space")].into(),
        };
        let token = storage.create_token(&grants).expect("token");
        let limits = Limits {
            compression: false,
            ..Limits::default()
        };
        let storage: Arc<dyn Storage> = storage;
        let state = AppState::new(storage, limits);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let serving = state.clone();
        let task = tokio::spawn(async move {
            let _ = serve(listener, serving, std::future::pending::<()>()).await;
        });
        Server {
            url,
            token,
            state,
            task,
            _dir: dir,
        }
    }

    async fn stop(self) {
        self.state.begin_shutdown();
        self.state.storage().shutdown().await;
        self.task.abort();
    }
}

async fn send(request: reqwest::RequestBuilder) -> Value {
    let response = request.send().await.expect("send");
    let status = response.status();
    let bytes = response.bytes().await.expect("body");
    assert!(
        status.is_success(),
        "{status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    serde_json::from_slice(&bytes).expect("JSON answer")
}

/// Pushes the bodies; returns the seconds taken.
async fn push(
    client: &reqwest::Client,
    server: &Server,
    protocol: Protocol,
    bodies: Vec<Vec<u8>>,
) -> f64 {
    let url = match protocol {
        Protocol::Native => format!("{}/v1/push", server.url),
        Protocol::Rxdb => format!("{}/compat/rxdb/v1/{SPACE}/todos/push", server.url),
        Protocol::Watermelon => format!(
            // The timestamp of a pull of the empty space (its version 0, plus one).
            "{}/compat/watermelon/v1/{SPACE}/sync?last_pulled_at=1",
            server.url
        ),
    };
    let start = Instant::now();
    for body in bodies {
        let answer = send(client.post(&url).bearer_auth(&server.token).body(body)).await;
        if protocol == Protocol::Rxdb {
            assert_eq!(answer, json!([]), "no conflicts");
        }
    }
    start.elapsed().as_secs_f64()
}

/// Pulls everything from scratch; returns the seconds taken.
async fn pull(client: &reqwest::Client, server: &Server, protocol: Protocol, docs: usize) -> f64 {
    let start = Instant::now();
    let mut got = 0;
    match protocol {
        Protocol::Native => {
            let mut cursor = json!({});
            loop {
                let body = json!({"client_id": "reader", "protocol": 2, "cursor": cursor,
                                  "spaces": [SPACE], "limit": BATCH});
                let page = send(
                    client
                        .post(format!("{}/v1/pull", server.url))
                        .bearer_auth(&server.token)
                        .json(&body),
                )
                .await;
                got += page["changes"].as_array().map_or(0, Vec::len);
                cursor = page["cursor"].clone();
                if page["has_more"] != true {
                    break;
                }
            }
        }
        Protocol::Rxdb => {
            let url = format!("{}/compat/rxdb/v1/{SPACE}/todos/pull", server.url);
            let mut checkpoint: Option<String> = None;
            loop {
                let mut query = vec![("limit", BATCH.to_string())];
                query.extend(checkpoint.take().map(|c| ("checkpoint", c)));
                let page = send(client.get(&url).query(&query).bearer_auth(&server.token)).await;
                let n = page["documents"].as_array().map_or(0, Vec::len);
                got += n;
                checkpoint = Some(page["checkpoint"].to_string());
                if n < BATCH {
                    break;
                }
            }
        }
        Protocol::Watermelon => {
            let url = format!(
                "{}/compat/watermelon/v1/{SPACE}/sync?last_pulled_at=null&schema_version=1&migration=null",
                server.url
            );
            let answer = send(client.get(url).bearer_auth(&server.token)).await;
            got += answer["changes"]["todos"]["updated"]
                .as_array()
                .map_or(0, Vec::len);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(got, docs, "{protocol:?} pulled every document");
    elapsed
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let docs = env_count("BENCH_DOCS", 10_000);
    let reps = env_count("BENCH_REPS", 5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let client = reqwest::Client::builder()
        .no_gzip()
        .no_zstd()
        .pool_max_idle_per_host(1)
        .build()
        .expect("client");
    let mut pushes = vec![Vec::new(); 3];
    let mut pulls = vec![Vec::new(); 3];
    runtime.block_on(async {
        // One warm-up round, not counted.
        for rep in 0..=reps {
            for (p, protocol) in Protocol::ALL.into_iter().enumerate() {
                let bodies = push_bodies(protocol, docs);
                let server = Server::start().await;
                let push_s = push(&client, &server, protocol, bodies).await;
                let pull_s = pull(&client, &server, protocol, docs).await;
                server.stop().await;
                if rep > 0 {
                    pushes[p].push(push_s);
                    pulls[p].push(pull_s);
                }
            }
        }
    });
    println!("{docs} documents, median of {reps} runs, raw HTTP on loopback, SQLite");
    println!();
    println!(
        "| protocol                         | push (docs/s) | ratio | pull (docs/s) | ratio |"
    );
    println!(
        "|----------------------------------|---------------|-------|---------------|-------|"
    );
    let native_push = median(pushes[0].clone());
    let native_pull = median(pulls[0].clone());
    for (p, protocol) in Protocol::ALL.into_iter().enumerate() {
        let push_s = median(pushes[p].clone());
        let pull_s = median(pulls[p].clone());
        let rate = |s: f64| format!("{:.0}k/s", docs as f64 / s / 1000.0);
        println!(
            "| {:<32} | {:>13} | {:>4.2}× | {:>13} | {:>4.2}× |",
            protocol.name(),
            rate(push_s),
            push_s / native_push,
            rate(pull_s),
            pull_s / native_pull,
        );
    }
    println!();
    println!("ratio: the protocol's time over the native protocol's (above 1: slower)");
}
