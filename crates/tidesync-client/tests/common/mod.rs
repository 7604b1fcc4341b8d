//! End-to-end harness: a real server on a loopback port (its own runtime and thread), real
//! clients, and polling helpers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tidesync_client::{
    Client, ClientConfig, ClientEvent, StaticToken, Status, SyncConfig, TokenProvider,
};
use tidesync_core::sync::BackoffPolicy;
use tidesync_protocol::{ClientId, Cursor, Doc, PullResponse, RecordKey, SpaceName};
use tidesync_server::auth::Grants;
use tidesync_server::storage::sqlite::SqliteStorage;
use tidesync_server::storage::{PullInput, Storage};
use tidesync_server::{EmbeddedServer, Limits, MergeRules};

pub const SPACE: &str = "team:1";

pub fn space() -> SpaceName {
    SpaceName::new(SPACE).unwrap()
}

pub fn key(collection: &str, id: &str) -> RecordKey {
    RecordKey::parse(SPACE, collection, id).unwrap()
}

pub fn doc(v: Value) -> Doc {
    v.as_object().cloned().unwrap()
}

/// A server on 127.0.0.1, restartable on the same port and database.
pub struct TestServer {
    pub addr: SocketAddr,
    pub db: PathBuf,
    rules: MergeRules,
    running: Option<EmbeddedServer>,
}

impl TestServer {
    pub fn start(dir: &Path, rules: MergeRules) -> TestServer {
        let mut server = TestServer {
            addr: "127.0.0.1:0".parse().unwrap(),
            db: dir.join("server.db"),
            rules,
            running: None,
        };
        server.boot();
        server
    }

    fn boot(&mut self) {
        let storage = Arc::new(SqliteStorage::open(&self.db, self.rules.clone()).unwrap());
        let listener = bind(self.addr);
        let server = EmbeddedServer::start(listener, storage, Limits::default()).unwrap();
        self.addr = server.addr();
        self.running = Some(server);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn storage(&self) -> Arc<SqliteStorage> {
        self.running.as_ref().expect("running").storage().clone()
    }

    /// An API token for `user`, writing the test space.
    pub fn token(&self, user: &str) -> String {
        self.storage()
            .create_token(&Grants {
                user: user.into(),
                read: Default::default(),
                write: [space()].into_iter().collect(),
            })
            .unwrap()
    }

    /// Graceful stop (in-flight requests finish).
    pub fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().unwrap();
        }
    }

    /// Stop, then start again on the same port and database.
    pub fn restart(&mut self) {
        self.stop();
        self.boot();
    }

    /// The value of counter `name` (e.g. `tidesync_echoes_pulled_total`) at `GET /metrics`.
    pub fn counter(&self, name: &str) -> u64 {
        let url = format!("{}/metrics", self.url());
        let text = block_on(async move { reqwest::get(url).await?.text().await }).unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no counter {name} in:\n{text}"))
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Everything in the test space, as the server holds it.
    pub fn snapshot(&self) -> PullResponse {
        let storage = self.storage();
        let input = PullInput {
            user: "observer".into(),
            client_id: ClientId::new("observer").unwrap(),
            cursor: Cursor::new(),
            spaces: vec![space()],
            limit: 1_000_000,
            echoes: false,
            refetch: Vec::new(),
        };
        block_on(async move { storage.pull(input).await.unwrap() })
            .parse()
            .unwrap()
    }

    /// The test space's version: one per applied (non-redundant) mutation.
    pub fn version(&self) -> u64 {
        let storage = self.storage();
        block_on(async move { storage.space_versions(&[space()]).await.unwrap()[0] })
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn bind(addr: SocketAddr) -> std::net::TcpListener {
    // After a restart the old socket may linger briefly.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => return l,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("cannot bind {addr}: {e}"),
        }
    }
}

pub fn block_on<T: Send + 'static>(f: impl std::future::Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    })
    .join()
    .unwrap()
}

/// Fast timers for tests: retries within tens of milliseconds, polls every second.
/// `orders` under the `strict` policy, everything else `lww`.
pub fn strict_orders() -> MergeRules {
    MergeRules {
        policies: tidesync_server::Policies {
            default: tidesync_server::Policy::Lww,
            per_collection: [(
                tidesync_protocol::CollectionName::new("orders").expect("valid"),
                tidesync_server::Policy::Strict,
            )]
            .into_iter()
            .collect(),
        },
        ..MergeRules::default()
    }
}

/// `todos` must have a non-empty string `title` (a JSON Schema on the server).
pub fn todo_schema() -> MergeRules {
    let mut schemas = tidesync_server::Schemas::new();
    schemas
        .insert(
            tidesync_protocol::CollectionName::new("todos").expect("valid"),
            &serde_json::json!({
                "type": "object",
                "required": ["title"],
                "properties": {"title": {"type": "string", "minLength": 1}}
            }),
        )
        .expect("a valid schema");
    MergeRules {
        schemas,
        ..MergeRules::default()
    }
}

pub fn fast_sync() -> SyncConfig {
    SyncConfig {
        backoff: BackoffPolicy {
            base_ms: 20,
            cap_ms: 400,
        },
        idle_poll_ms: 1_000,
        stream_retry_ms: 300,
        offline_probe_ms: 60_000,
    }
}

pub fn client_config(
    dir: &Path,
    name: &str,
    url: &str,
    tokens: Arc<dyn TokenProvider>,
) -> ClientConfig {
    let mut config = ClientConfig::new(dir.join(format!("{name}.db")), url, vec![space()], tokens);
    config.sync = fast_sync();
    config.seed = Some(7);
    config.request_timeout = Duration::from_secs(5);
    config
}

pub fn open_client(dir: &Path, name: &str, url: &str, token: &str) -> Client {
    Client::open(client_config(
        dir,
        name,
        url,
        Arc::new(StaticToken(token.into())),
    ))
    .unwrap()
}

/// Polls `cond` every 10 ms until it holds; panics with `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The document of `key` as `client` sees it.
pub fn view(client: &Client, key: &RecordKey) -> Option<Value> {
    client.get(key).unwrap().map(|r| Value::Object(r.doc))
}

/// The statuses among events received so far.
pub fn statuses(events: &std::sync::mpsc::Receiver<ClientEvent>) -> Vec<Status> {
    events
        .try_iter()
        .filter_map(|e| match e {
            ClientEvent::Status(s) => Some(s),
            _ => None,
        })
        .collect()
}

/// Drains events received so far.
pub fn drain(rx: &std::sync::mpsc::Receiver<ClientEvent>) -> Vec<ClientEvent> {
    rx.try_iter().collect()
}

// ---- more spaces, server-side reads, whole-state comparisons (restarts.rs, faults.rs) ------

/// A space by name (for tests that sync more than the test space).
pub fn space_named(name: &str) -> SpaceName {
    SpaceName::new(name).unwrap()
}

/// A record's state by (space, collection, id): `Some(doc)` if live, `None` if deleted.
pub type Docs = std::collections::BTreeMap<(String, String, String), Option<Doc>>;

impl TestServer {
    /// An API token for `user`, writing `spaces`.
    pub fn token_for(&self, user: &str, spaces: &[SpaceName]) -> String {
        self.storage()
            .create_token(&Grants {
                user: user.into(),
                read: Default::default(),
                write: spaces.iter().cloned().collect(),
            })
            .unwrap()
    }

    /// The version of `space`: one per applied (non-redundant) mutation in it.
    pub fn version_of(&self, space: &SpaceName) -> u64 {
        let storage = self.storage();
        let space = space.clone();
        block_on(async move { storage.space_versions(&[space]).await.unwrap()[0] })
    }

    /// Everything in `spaces`, as the server holds it (one consistent read).
    pub fn snapshot_of(&self, spaces: &[SpaceName]) -> PullResponse {
        let storage = self.storage();
        let input = PullInput {
            user: "observer".into(),
            client_id: ClientId::new("observer").unwrap(),
            cursor: Cursor::new(),
            spaces: spaces.to_vec(),
            limit: 1_000_000,
            echoes: false,
            refetch: Vec::new(),
        };
        block_on(async move { storage.pull(input).await.unwrap() })
            .parse()
            .unwrap()
    }

    /// The server's `last_seq` for `client` (owned by `user`): the highest seq it applied
    /// or skipped as a duplicate. Read through a pull, as the client would see it.
    pub fn acked_through(&self, user: &str, client: &ClientId) -> u64 {
        let storage = self.storage();
        let input = PullInput {
            user: user.into(),
            client_id: client.clone(),
            cursor: Cursor::new(),
            spaces: vec![space()],
            limit: 1,
            echoes: false,
            refetch: Vec::new(),
        };
        block_on(async move { storage.pull(input).await.unwrap().acked_through })
    }
}

/// The records of a snapshot, deleted ones as `None`.
pub fn server_docs(snapshot: &PullResponse) -> Docs {
    snapshot
        .changes
        .iter()
        .map(|c| {
            let key = (
                c.space.as_str().to_owned(),
                c.collection.as_str().to_owned(),
                c.id.as_str().to_owned(),
            );
            (key, if c.deleted { None } else { c.doc.clone() })
        })
        .collect()
}

/// Only the live records of `docs`.
pub fn live(docs: &Docs) -> Docs {
    docs.iter()
        .filter(|(_, d)| d.is_some())
        .map(|(k, d)| (k.clone(), d.clone()))
        .collect()
}

/// Every live record `client` has in `collections` of `space` (its local view), paging
/// through the whole collection.
pub fn client_docs(client: &Client, space: &SpaceName, collections: &[&str]) -> Docs {
    let mut out = Docs::new();
    for collection in collections {
        let name = tidesync_protocol::CollectionName::new(*collection).unwrap();
        let mut options = tidesync_store::ListOptions {
            after: None,
            limit: 10_000,
        };
        loop {
            let page = client.list(space, &name, &options).unwrap();
            for record in page.records {
                let key = (
                    space.as_str().to_owned(),
                    (*collection).to_owned(),
                    record.key.id.as_str().to_owned(),
                );
                out.insert(key, Some(record.doc));
            }
            match page.next {
                Some(next) => options.after = Some(next),
                None => break,
            }
        }
    }
    out
}

/// The status once it satisfies `cond` (polled every millisecond, so short phases are seen).
pub fn wait_status(
    client: &Client,
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut(&Status) -> bool,
) -> Status {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = client.status().filter(|s| cond(s)) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for: {what} (last status: {:?})",
            client.status()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}
