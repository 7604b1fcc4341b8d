//! Helpers shared by the HTTP tests: a server over a fresh database of either backend
//! (an SQLite file in a temporary directory, or a PostgreSQL schema of its own), tokens,
//! request builders, and an SSE reader.
//!
//! A behavioural test is written once, as `async fn name(backend: Backend)`, and
//! [`on_both_backends!`] makes two tests of it, `sqlite::name` and `postgres::name`. The
//! PostgreSQL one needs `TIDESYNC_TEST_DATABASE_URL`; without it [`TestServer::new_on`]
//! returns `None`, the test passes without running, and the test binary says so once.
#![allow(dead_code)] // each test binary uses a different subset

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tidesync_protocol::{Hlc, PullResponse, PushResponse, RawChange, SpaceName};
use tidesync_server::auth::{Grants, TokenHash};
use tidesync_server::storage::postgres::PostgresStorage;
use tidesync_server::storage::sqlite::SqliteStorage;
use tidesync_server::storage::{
    Overview, OverviewRequest, Poke, Prune, Pruned, PullInput, PushInput, Storage, StorageError,
};
use tidesync_server::{app, AppState, CompatSettings, Limits, MergeRules};
use tidesync_testkit::TestDatabase;
use tower::ServiceExt;

/// Which storage backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: a fresh file in a temporary directory.
    Sqlite,
    /// A fresh schema in the database named by `TIDESYNC_TEST_DATABASE_URL`.
    Postgres,
}

/// For each `async fn name(backend: Backend)` listed, a module `sqlite` and a module
/// `postgres` each holding a `#[tokio::test] async fn name()` that runs it on that backend.
/// A name may be followed by the SQLite test attribute's arguments in parentheses, e.g.
/// `name(flavor = "multi_thread", worker_threads = 2)`; the PostgreSQL tests always run
/// multi-threaded.
#[allow(unused_macros)]
macro_rules! on_both_backends {
    ($($name:ident $(($($args:tt)*))?),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test $(($($args)*))?]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await;
                }
            )*
        }
        // Multi-threaded: the schema is dropped, blocking, when the test ends; the pool's
        // connection tasks keep running on the workers meanwhile, so nothing they still
        // have to send (a ROLLBACK that releases locks) waits for the blocked thread.
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await;
                }
            )*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_both_backends;

/// Either backend's storage as one type (the handlers see it as `dyn Storage`).
#[derive(Clone)]
pub enum AnyStorage {
    Sqlite(Arc<SqliteStorage>),
    Postgres(Arc<PostgresStorage>),
}

impl AnyStorage {
    fn inner(&self) -> &dyn Storage {
        match self {
            AnyStorage::Sqlite(s) => s.as_ref(),
            AnyStorage::Postgres(s) => s.as_ref(),
        }
    }
}

#[async_trait::async_trait]
impl Storage for AnyStorage {
    async fn push(&self, input: PushInput) -> Result<PushResponse, StorageError> {
        self.inner().push(input).await
    }
    async fn pull(&self, input: PullInput) -> Result<PullResponse<RawChange>, StorageError> {
        self.inner().pull(input).await
    }
    async fn authenticate(&self, token: TokenHash) -> Result<Option<Grants>, StorageError> {
        self.inner().authenticate(token).await
    }
    async fn space_versions(&self, spaces: &[SpaceName]) -> Result<Vec<u64>, StorageError> {
        self.inner().space_versions(spaces).await
    }
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Poke> {
        self.inner().subscribe()
    }
    async fn overview(&self, request: OverviewRequest) -> Result<Overview, StorageError> {
        self.inner().overview(request).await
    }

    async fn prune(&self, batch: Prune) -> Result<Pruned, StorageError> {
        self.inner().prune(batch).await
    }
    async fn health(&self) -> Result<(), StorageError> {
        self.inner().health().await
    }
    async fn shutdown(&self) {
        self.inner().shutdown().await
    }
}

/// A storage over a fresh database, and what keeps that database alive (dropping it removes
/// the temporary directory or drops the schema).
pub struct Store {
    /// The storage the handlers use.
    pub storage: Arc<AnyStorage>,
    home: Home,
}

enum Home {
    Sqlite {
        storage: Arc<SqliteStorage>,
        _dir: tempfile::TempDir,
    },
    // Field order matters: the storage (its pool) goes before the schema is dropped.
    Postgres {
        storage: Arc<PostgresStorage>,
        db: TestDatabase,
    },
}

impl Store {
    /// A fresh SQLite database.
    pub fn sqlite(rules: MergeRules) -> Store {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage =
            Arc::new(SqliteStorage::open(&dir.path().join("server.db"), rules).expect("open"));
        Store {
            storage: Arc::new(AnyStorage::Sqlite(storage.clone())),
            home: Home::Sqlite { storage, _dir: dir },
        }
    }

    /// A fresh database of `backend`; `None` for PostgreSQL when no test database is
    /// configured.
    pub async fn open(backend: Backend, rules: MergeRules) -> Option<Store> {
        match backend {
            Backend::Sqlite => Some(Store::sqlite(rules)),
            Backend::Postgres => {
                let db = TestDatabase::create("server")?;
                let storage = Arc::new(
                    PostgresStorage::connect(db.url(), rules)
                        .await
                        .expect("connect to the test database"),
                );
                Some(Store {
                    storage: Arc::new(AnyStorage::Postgres(storage.clone())),
                    home: Home::Postgres { storage, db },
                })
            }
        }
    }

    pub fn backend(&self) -> Backend {
        match self.home {
            Home::Sqlite { .. } => Backend::Sqlite,
            Home::Postgres { .. } => Backend::Postgres,
        }
    }

    /// A token for `user` writing `write` and reading `read`. Synchronous on both backends
    /// (PostgreSQL: issued on a connection of its own, on a thread of its own).
    pub fn token(&self, user: &str, write: &[&str], read: &[&str]) -> String {
        let grants = grants(user, write, read);
        match &self.home {
            Home::Sqlite { storage, .. } => storage.create_token(&grants).expect("create token"),
            Home::Postgres { db, .. } => {
                let url = db.url().to_owned();
                std::thread::spawn(move || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime")
                        .block_on(PostgresStorage::create_token_at(&url, &grants))
                })
                .join()
                .expect("token thread")
                .expect("create token")
            }
        }
    }

    /// Deletes `token`'s row, below the API (a token revoked behind the server's back).
    pub fn delete_token(&self, token: &str) {
        let hash = TokenHash::of(token).0;
        match &self.home {
            Home::Sqlite { storage, .. } => {
                let conn = rusqlite::Connection::open(storage.path()).expect("open");
                let deleted = conn
                    .execute("DELETE FROM tokens WHERE hash = ?1", [hash.to_vec()])
                    .expect("delete the token");
                assert_eq!(deleted, 1);
            }
            Home::Postgres { db, .. } => {
                let deleted = db.query(&format!(
                    "DELETE FROM ts_tokens WHERE hash = '\\x{}'::bytea RETURNING 1",
                    hex(&hash)
                ));
                assert_eq!(deleted.len(), 1);
            }
        }
    }

    /// Runs one statement below the API: `sqlite` on SQLite, `postgres` on PostgreSQL
    /// (which must return rows, e.g. `INSERT … RETURNING 1`).
    pub fn execute(&self, sqlite: &str, postgres: &str) {
        match &self.home {
            Home::Sqlite { storage, .. } => {
                let conn = rusqlite::Connection::open(storage.path()).expect("open");
                conn.execute_batch(sqlite).expect("execute");
            }
            Home::Postgres { db, .. } => {
                db.query(postgres);
            }
        }
    }

    /// Every row of every table of the server database (the same set on both backends:
    /// spaces, clients, records, rejected mutations, tokens; on SQLite also `meta`), in key
    /// order, each value as text (`None` for NULL): what "no data changed" compares, below
    /// the HTTP API. Values are comparable within one backend, not across them.
    pub fn dump_tables(&self) -> Vec<(&'static str, Vec<Vec<Option<String>>>)> {
        match &self.home {
            Home::Sqlite { storage, .. } => dump_sqlite(storage),
            Home::Postgres { db, .. } => [
                ("spaces", "SELECT * FROM ts_spaces ORDER BY space"),
                ("clients", "SELECT * FROM ts_clients ORDER BY client_id"),
                (
                    "records",
                    "SELECT * FROM ts_records ORDER BY space, collection, id",
                ),
                (
                    "rejected",
                    "SELECT * FROM ts_rejected ORDER BY client_id, seq",
                ),
                ("tokens", "SELECT * FROM ts_tokens ORDER BY hash"),
            ]
            .into_iter()
            .map(|(table, sql)| (table, db.query(sql)))
            .collect(),
        }
    }
}

fn dump_sqlite(storage: &SqliteStorage) -> Vec<(&'static str, Vec<Vec<Option<String>>>)> {
    use rusqlite::types::Value as Sql;
    let conn = rusqlite::Connection::open_with_flags(
        storage.path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the database read-only");
    [
        ("meta", "SELECT * FROM meta ORDER BY key"),
        ("spaces", "SELECT * FROM spaces ORDER BY space"),
        ("clients", "SELECT * FROM clients ORDER BY client_id"),
        (
            "records",
            "SELECT * FROM records ORDER BY space, collection, id",
        ),
        ("rejected", "SELECT * FROM rejected ORDER BY client_id, seq"),
        ("tokens", "SELECT * FROM tokens ORDER BY hash"),
    ]
    .into_iter()
    .map(|(table, sql)| {
        let mut stmt = conn.prepare(sql).expect("prepare");
        let columns = stmt.column_count();
        let rows = stmt
            .query_map([], |row| {
                (0..columns)
                    .map(|i| {
                        row.get::<_, Sql>(i).map(|v| match v {
                            Sql::Null => None,
                            Sql::Integer(n) => Some(n.to_string()),
                            Sql::Real(x) => Some(x.to_string()),
                            Sql::Text(s) => Some(s),
                            Sql::Blob(b) => Some(format!("\\x{}", hex(&b))),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .expect("query")
            .collect::<Result<Vec<_>, _>>()
            .expect("rows");
        (table, rows)
    })
    .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A server over a fresh database.
pub struct TestServer {
    pub state: AppState,
    pub router: Router,
    /// The storage the handlers use.
    pub storage: Arc<AnyStorage>,
    store: Store,
}

impl TestServer {
    /// A server over SQLite with default limits and rules.
    pub fn new() -> TestServer {
        TestServer::with(Limits::default(), MergeRules::default())
    }

    /// A server over SQLite.
    pub fn with(limits: Limits, rules: MergeRules) -> TestServer {
        TestServer::over(Store::sqlite(rules), limits)
    }

    /// A server over `backend` with default limits and rules; `None` when PostgreSQL is
    /// asked for and not configured.
    pub async fn new_on(backend: Backend) -> Option<TestServer> {
        TestServer::with_on(backend, Limits::default(), MergeRules::default()).await
    }

    /// A server over `backend`; `None` when PostgreSQL is asked for and not configured.
    pub async fn with_on(
        backend: Backend,
        limits: Limits,
        rules: MergeRules,
    ) -> Option<TestServer> {
        Some(TestServer::over(Store::open(backend, rules).await?, limits))
    }

    /// A server over `backend` with default limits, `rules` and `compat` settings; `None`
    /// when PostgreSQL is asked for and not configured.
    pub async fn compat_on(
        backend: Backend,
        rules: MergeRules,
        compat: CompatSettings,
    ) -> Option<TestServer> {
        let store = Store::open(backend, rules).await?;
        Some(TestServer::over_with(store, Limits::default(), compat))
    }

    fn over(store: Store, limits: Limits) -> TestServer {
        TestServer::over_with(store, limits, CompatSettings::default())
    }

    fn over_with(store: Store, limits: Limits, compat: CompatSettings) -> TestServer {
        let state = AppState::new(store.storage.clone(), limits).with_compat(compat);
        TestServer {
            router: app(state.clone()),
            state,
            storage: store.storage.clone(),
            store,
        }
    }

    pub fn backend(&self) -> Backend {
        self.store.backend()
    }

    /// A token for `user` writing `write` and reading `read`.
    pub fn token(&self, user: &str, write: &[&str], read: &[&str]) -> String {
        self.store.token(user, write, read)
    }

    /// Deletes `token`'s row from the database, below the API.
    pub fn delete_token(&self, token: &str) {
        self.store.delete_token(token);
    }

    /// See [`Store::execute`].
    pub fn execute(&self, sqlite: &str, postgres: &str) {
        self.store.execute(sqlite, postgres);
    }

    /// This server with the admin dashboard on, behind `token`.
    pub fn with_admin(mut self, token: &str) -> TestServer {
        let token = tidesync_server::admin::AdminToken::new(token).expect("a valid admin token");
        self.state = self.state.with_admin(token);
        self.router = app(self.state.clone());
        self
    }

    /// See [`Store::dump_tables`].
    pub fn dump_tables(&self) -> Vec<(&'static str, Vec<Vec<Option<String>>>)> {
        self.store.dump_tables()
    }

    /// Sends a request through the router (no socket).
    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Body) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        self.send(request.body(body).expect("request")).await
    }

    /// Sends any request through the router (no socket).
    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            json,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Reply {
        self.call(
            Method::POST,
            path,
            Some(token),
            Body::from(body.to_string()),
        )
        .await
    }

    pub async fn push(&self, token: &str, client: &str, mutations: Vec<Value>) -> Reply {
        self.post("/v1/push", token, &push_body(client, mutations))
            .await
    }

    /// Pulls `spaces` from scratch with a large page and returns the changes (as a client
    /// of its own, named after the token).
    pub async fn pull_all(&self, token: &str, spaces: &[&str]) -> Vec<Value> {
        let client: String = token
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(24)
            .collect();
        let reply = self
            .post(
                "/v1/pull",
                token,
                &json!({"client_id": client, "protocol": 1, "spaces": spaces, "limit": 10000}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(reply.json["has_more"], false);
        reply.json["changes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
    pub text: String,
}

impl Reply {
    /// Asserts an error response with `status` and `code`.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        assert_eq!(self.json["code"], code, "{}", self.text);
        assert!(
            self.json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            self.text
        );
        assert_eq!(
            self.headers[header::CONTENT_TYPE],
            "application/json",
            "{}",
            self.text
        );
    }
}

pub fn grants(user: &str, write: &[&str], read: &[&str]) -> Grants {
    let spaces = |names: &[&str]| {
        names
            .iter()
            .map(|s| SpaceName::new(*s).expect("valid space"))
            .collect()
    };
    Grants {
        user: user.into(),
        read: spaces(read),
        write: spaces(write),
    }
}

pub fn push_body(client: &str, mutations: Vec<Value>) -> Value {
    json!({"client_id": client, "protocol": 1, "mutations": mutations})
}

/// A current HLC reading with `counter`.
pub fn hlc(counter: u16) -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64;
    Hlc::new(ms, counter).expect("fits").to_string()
}

/// A `put` mutation.
pub fn put(seq: u64, tx: u64, space: &str, collection: &str, id: &str, doc: Value) -> Value {
    put_on(seq, tx, space, collection, id, doc, 0)
}

/// A `put` mutation made on `base_version`.
pub fn put_on(
    seq: u64,
    tx: u64,
    space: &str,
    collection: &str,
    id: &str,
    doc: Value,
    base_version: u64,
) -> Value {
    json!({
        "seq": seq, "tx": tx, "space": space, "collection": collection, "id": id,
        "kind": "put", "doc": doc, "hlc": hlc(seq as u16), "base_version": base_version
    })
}

/// Reads the next SSE event (skipping heartbeat comments) from a streaming body, as
/// (event name, data); `None` when the stream ends; panics after `timeout`.
pub struct SseReader {
    body: Body,
    buffer: String,
}

impl SseReader {
    pub fn new(body: Body) -> SseReader {
        SseReader {
            body,
            buffer: String::new(),
        }
    }

    pub async fn next(&mut self, timeout: Duration) -> Option<(String, String)> {
        tokio::time::timeout(timeout, self.next_event())
            .await
            .expect("an SSE event in time")
    }

    /// Waits at most `timeout` for an event; `Err(())` if none came.
    pub async fn try_next(&mut self, timeout: Duration) -> Result<Option<(String, String)>, ()> {
        tokio::time::timeout(timeout, self.next_event())
            .await
            .map_err(|_| ())
    }

    async fn next_event(&mut self) -> Option<(String, String)> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data = Some(v.trim().to_string());
                    }
                }
                // An event without a name is a `message` (the SSE default).
                if let Some(data) = data {
                    return Some((event.unwrap_or_else(|| "message".to_owned()), data));
                }
            }
            let frame = self.body.frame().await?.expect("body frame");
            if let Ok(bytes) = frame.into_data() {
                self.buffer.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
}
