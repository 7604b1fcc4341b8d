//! What the client benches share: a server on loopback filled through its storage, the bench
//! clients' configuration, the A → server → B workload, and the table output.
#![allow(dead_code, clippy::expect_used)] // each bench uses part of it; setup failures abort

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tidesync_client::{
    Client, ClientConfig, ClientEvent, ClientId, CollectionName, Doc, Durability, Hlc, ListOptions,
    Mutation, Op, RecordKey, SpaceName, StaticToken,
};
use tidesync_server::auth::Grants;
use tidesync_server::storage::{PushInput, PushOrigin, Storage};
use tidesync_server::{EmbeddedServer, MergeRules};

/// A positive integer from the environment variable `name` (a bench's size knob), or
/// `default` when it is unset; anything else ends the bench with a message saying so.
pub fn env_count(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Err(std::env::VarError::NotPresent) => default,
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!("{name} must be a positive integer, got '{text}'");
                std::process::exit(2)
            }
        },
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::exit(2)
        }
    }
}

/// Batch size of the server fill.
pub const FILL_BATCH: u64 = 5_000;
/// Longest any single wait may take.
pub const WAIT: Duration = Duration::from_secs(300);
/// The collection every bench writes.
pub const COLLECTION: &str = "todos";

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn space(name: &str) -> SpaceName {
    SpaceName::new(name).expect("valid space")
}

pub fn collection() -> CollectionName {
    CollectionName::new(COLLECTION).expect("valid collection")
}

pub fn record_id(i: u64) -> String {
    format!("t{i:08}")
}

pub fn key(space: &SpaceName, i: u64) -> RecordKey {
    RecordKey::new(
        space.clone(),
        collection(),
        record_id(i).try_into().expect("valid id"),
    )
}

/// A tidesync server on a free loopback port of this process.
pub struct Server(pub EmbeddedServer);

impl Server {
    pub fn start(db: &Path) -> Server {
        Server(EmbeddedServer::sqlite(db, MergeRules::default()).expect("server"))
    }

    /// A token for user `bench`, writing `spaces`.
    pub fn token(&self, spaces: &[SpaceName]) -> String {
        let grants = Grants {
            user: "bench".into(),
            read: Default::default(),
            write: spaces.iter().cloned().collect(),
        };
        self.0.storage().create_token(&grants).expect("token")
    }

    /// Pushes `n` puts of records `0..n` (documents from `doc`) into `space` through the
    /// storage, in batches of [`FILL_BATCH`] (what a server receives from a busy writer,
    /// without HTTP), and says how long it took.
    pub fn fill(&self, space: &SpaceName, n: u64, doc: impl Fn(u64) -> Doc) {
        let started = Instant::now();
        let client = ClientId::new("filler").expect("valid client");
        for from in (0..n).step_by(FILL_BATCH as usize) {
            let mutations = (from..(from + FILL_BATCH).min(n))
                .map(|i| Mutation {
                    seq: i + 1,
                    tx: i + 1,
                    key: key(space, i),
                    op: Op::Put { doc: doc(i) },
                    hlc: Hlc::new(now_ms(), (i % 60_000) as u16).unwrap_or_default(),
                    base_version: 0,
                })
                .collect();
            let input = PushInput {
                user: "bench".into(),
                client_id: client.clone(),
                mutations,
                recover_from: None,
                origin: PushOrigin::Client,
            };
            self.0.run(self.0.storage().push(input)).expect("fill push");
        }
        eprintln!(
            "  filled the server with {n} records in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    pub fn url(&self) -> String {
        self.0.url()
    }

    pub fn stop(self) {
        if let Err(e) = self.0.stop() {
            eprintln!("server: {e}");
        }
    }
}

/// The bench clients' configuration: every default of [`ClientConfig::new`] (adaptive
/// batches up to the server's limits, default timers, `Durability::Full`), with a fixed
/// backoff seed so runs replay. `BENCH_COMPRESSION=off` turns compression off, to see
/// what it costs.
pub fn config(db: &Path, url: &str, space: &SpaceName, token: &str) -> ClientConfig {
    let mut config = default_config(db, url, space, token, Durability::Full);
    config.seed = Some(1);
    config.compression = std::env::var("BENCH_COMPRESSION").map_or(true, |v| v != "off");
    config
}

/// A client with every default of [`ClientConfig::new`] (adaptive push batches up to 5,000
/// and pages up to 10,000, default timers) but the store's `durability`: what an app gets
/// without tuning.
pub fn default_config(
    db: &Path,
    url: &str,
    space: &SpaceName,
    token: &str,
    durability: Durability,
) -> ClientConfig {
    let mut config = ClientConfig::new(
        db,
        url,
        vec![space.clone()],
        Arc::new(StaticToken(token.into())),
    );
    config.store.durability = durability;
    config
}

/// The small todo (~60 bytes of JSON) of record `i`, the same for every bench and path
/// that writes it: `{"title":"Buy milk #i","done":i%3==0,"priority":i%5}`.
pub fn small_todo(i: u64) -> Doc {
    match json!({"title": format!("Buy milk #{i}"), "done": i.is_multiple_of(3), "priority": i % 5})
    {
        Value::Object(doc) => doc,
        _ => unreachable!("an object literal"),
    }
}

/// A writes the A → server → B workload in local transactions of this many puts.
pub const LOCAL_TX: u64 = 1_000;

/// One A → server → B run, its clients still open.
pub struct AToB {
    /// From `A.resume()` until B had every record.
    pub secs: f64,
    /// When A's last mutation was acknowledged, from the same start.
    pub a_pushed: Option<f64>,
    pub a: Client,
    pub b: Client,
}

/// The A → server → B workload every client bench measures: A (opened from `a`, paused)
/// writes `n` [`small_todo`]s into `space` in local transactions of [`LOCAL_TX`]; B (opened
/// from `b`) is online and synced; `at_start` runs just before the clock starts at
/// `A.resume()`; the clock stops when B's `RecordsChanged` events add up to `n` (checked
/// through `Client::list` afterwards).
pub fn a_to_b(
    mut a: ClientConfig,
    b: ClientConfig,
    space: &SpaceName,
    n: u64,
    at_start: impl FnOnce(),
) -> AToB {
    a.start_online = false;
    let a = Client::open(a).expect("open A");
    for from in (0..n).step_by(LOCAL_TX as usize) {
        a.transaction(|tx| {
            for i in from..(from + LOCAL_TX).min(n) {
                tx.put(&key(space, i), small_todo(i))?;
            }
            Ok(())
        })
        .expect("A writes");
    }
    let b = Client::open(b).expect("open B");
    wait_synced(&b);
    let events = b.subscribe();
    // When A's last mutation is acknowledged (where the time goes).
    let a_events = a.subscribe();
    let pushed = std::thread::spawn(move || {
        let mut acked = 0u64;
        while acked < n {
            match a_events.recv_timeout(WAIT) {
                Ok(ClientEvent::Acked { seqs }) => acked += seqs.len() as u64,
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        Some(Instant::now())
    });

    at_start();
    let start = Instant::now();
    a.resume();
    let mut received = 0u64;
    let deadline = start + WAIT;
    while received < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(ClientEvent::RecordsChanged { count, .. }) => received += count as u64,
            Ok(_) => {}
            Err(e) => panic!("timed out: B received {received} of {n} records: {e}"),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let a_pushed = pushed
        .join()
        .ok()
        .flatten()
        .map(|at| at.duration_since(start).as_secs_f64());
    assert_eq!(count_records(&b, space), n, "B shows every record");
    AToB {
        secs,
        a_pushed,
        a,
        b,
    }
}

/// Waits (woken by each status, no polling delay) until `client` is synced.
pub fn wait_synced(client: &Client) {
    if let Err(e) = client.wait_synced(WAIT) {
        panic!("waiting for a client to sync: {e}");
    }
}

/// How many records `client` shows in `space`, through the public API.
pub fn count_records(client: &Client, space: &SpaceName) -> u64 {
    let mut options = ListOptions {
        after: None,
        limit: 10_000,
    };
    let mut n = 0;
    loop {
        let page = client.list(space, &collection(), &options).expect("list");
        n += page.records.len() as u64;
        match page.next {
            Some(next) => options.after = Some(next),
            None => return n,
        }
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn header(title: &str) {
    println!("{title}\n");
    println!("| benchmark                                                |   measured |       baseline |   ratio | target    | result |");
    println!("|----------------------------------------------------------|------------|----------------|---------|-----------|--------|");
}

pub fn row(name: &str, measured: String, baseline: String, ratio: f64, target: &str, pass: bool) {
    println!(
        "| {name:<56} | {measured:>10} | {baseline:>14} | {ratio:>6.2}× | {target:<9} | {:<6} |",
        if pass { "PASS" } else { "MISS" }
    );
}

/// A line without a target: reported, neither PASS nor MISS.
pub fn row_info(name: &str, measured: String, baseline: String, ratio: f64) {
    println!(
        "| {name:<56} | {measured:>10} | {baseline:>14} | {ratio:>6.2}× | {:<9} | {:<6} |",
        "—", "—"
    );
}
