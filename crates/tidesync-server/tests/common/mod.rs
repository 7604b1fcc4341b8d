//! Helpers shared by the HTTP tests: a server over a fresh SQLite file, tokens, request
//! builders, and an SSE reader.
#![allow(dead_code)] // each test binary uses a different subset

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tidesync_protocol::{Hlc, SpaceName};
use tidesync_server::auth::Grants;
use tidesync_server::storage::sqlite::SqliteStorage;
use tidesync_server::storage::Storage;
use tidesync_server::{app, AppState, Limits, MergeRules};
use tower::ServiceExt;

/// A server over a fresh database in a temporary directory.
pub struct TestServer {
    pub state: AppState,
    pub router: Router,
    pub storage: Arc<SqliteStorage>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub fn new() -> TestServer {
        TestServer::with(Limits::default(), MergeRules::default())
    }

    pub fn with(limits: Limits, rules: MergeRules) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage =
            Arc::new(SqliteStorage::open(&dir.path().join("server.db"), rules).expect("open"));
        TestServer::over(storage.clone(), storage, limits, dir)
    }

    /// A server whose handlers use `handler_storage` (e.g. a wrapper around `storage`).
    pub fn over(
        storage: Arc<SqliteStorage>,
        handler_storage: Arc<dyn Storage>,
        limits: Limits,
        dir: tempfile::TempDir,
    ) -> TestServer {
        let state = AppState::new(handler_storage, limits);
        TestServer {
            router: app(state.clone()),
            state,
            storage,
            _dir: dir,
        }
    }

    /// A token for `user` writing `write` and reading `read`.
    pub fn token(&self, user: &str, write: &[&str], read: &[&str]) -> String {
        self.storage
            .create_token(&grants(user, write, read))
            .expect("create token")
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

    /// Every row of every table of the server database, in key order, each row as the
    /// `Debug` form of its values: what "no data changed" compares, below the HTTP API.
    pub fn dump_tables(&self) -> Vec<(&'static str, Vec<Vec<String>>)> {
        let conn = rusqlite::Connection::open_with_flags(
            self.storage.path(),
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
                            row.get::<_, rusqlite::types::Value>(i)
                                .map(|v| format!("{v:?}"))
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
                if let (Some(event), Some(data)) = (event, data) {
                    return Some((event, data));
                }
            }
            let frame = self.body.frame().await?.expect("body frame");
            if let Ok(bytes) = frame.into_data() {
                self.buffer.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
}
