//! The server over a real loopback socket (reqwest): a lost response retried, live pokes,
//! graceful shutdown, `/healthz` and `/metrics`.
//!
//! Each test runs on SQLite and on PostgreSQL (`sqlite::…`, `postgres::…`, see
//! `common::on_both_backends`).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::{json, Value};
use tidesync_protocol::{PullResponse, PushResponse, RawChange, SpaceName};
use tidesync_server::auth::{Grants, TokenHash};
use tidesync_server::storage::{
    Overview, OverviewRequest, Poke, Prune, Pruned, PullInput, PushInput, Storage, StorageError,
};
use tidesync_server::{serve, AppState, Limits, MergeRules};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

use common::{on_both_backends, push_body, put, Backend, Store};

/// When the wrapped storage holds a push.
#[derive(Debug, Clone, Copy)]
enum Hold {
    /// Never.
    Never,
    /// The first push waits for `release` before it reaches storage.
    BeforeCommit,
    /// The first push is committed, then its reply waits for `release`.
    AfterCommit,
}

/// A storage seam: either backend, with a push that can be held before or after its commit.
struct Hooked {
    inner: Arc<dyn Storage>,
    hold: Hold,
    held: AtomicBool,
    /// Notified when the held push reached its hold point.
    reached: Notify,
    /// Notify to let the held push go on.
    release: Notify,
}

#[async_trait]
impl Storage for Hooked {
    async fn push(&self, input: PushInput) -> Result<PushResponse, StorageError> {
        let first = !self.held.swap(true, Ordering::SeqCst);
        match self.hold {
            Hold::BeforeCommit if first => {
                self.reached.notify_one();
                self.release.notified().await;
                self.inner.push(input).await
            }
            Hold::AfterCommit if first => {
                let response = self.inner.push(input).await;
                self.reached.notify_one();
                self.release.notified().await;
                response
            }
            _ => self.inner.push(input).await,
        }
    }
    async fn pull(&self, input: PullInput) -> Result<PullResponse<RawChange>, StorageError> {
        self.inner.pull(input).await
    }
    async fn authenticate(&self, token: TokenHash) -> Result<Option<Grants>, StorageError> {
        self.inner.authenticate(token).await
    }
    async fn space_versions(&self, spaces: &[SpaceName]) -> Result<Vec<u64>, StorageError> {
        self.inner.space_versions(spaces).await
    }
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Poke> {
        self.inner.subscribe()
    }
    async fn overview(&self, request: OverviewRequest) -> Result<Overview, StorageError> {
        self.inner.overview(request).await
    }

    async fn prune(&self, batch: Prune) -> Result<Pruned, StorageError> {
        self.inner.prune(batch).await
    }
    async fn health(&self) -> Result<(), StorageError> {
        self.inner.health().await
    }
    async fn shutdown(&self) {
        self.inner.shutdown().await
    }
}

/// A server on 127.0.0.1:0 over a [`Hooked`] storage.
struct Running {
    base: String,
    addr: SocketAddr,
    token: String,
    hooks: Arc<Hooked>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    http: reqwest::Client,
    _store: Store,
}

/// `None` when PostgreSQL is asked for and not configured.
async fn start(backend: Backend, hold: Hold) -> Option<Running> {
    let store = Store::open(backend, MergeRules::default()).await?;
    let token = store.token("alice", &["user:alice"], &[]);
    let hooks = Arc::new(Hooked {
        inner: store.storage.clone(),
        hold,
        held: AtomicBool::new(false),
        reached: Notify::new(),
        release: Notify::new(),
    });
    let state = AppState::new(hooks.clone(), Limits::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, state, async move {
        let _ = stopped.await;
    }));
    Some(Running {
        base: format!("http://{addr}"),
        addr,
        token,
        hooks,
        stop: Some(stop),
        task,
        http: reqwest::Client::new(),
        _store: store,
    })
}

impl Running {
    async fn post(&self, path: &str, body: &Value) -> reqwest::Result<(u16, Value)> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await?))
    }

    async fn pull(&self) -> Value {
        let (status, body) = self
            .post(
                "/v1/pull",
                &json!({"client_id": "reader", "protocol": 1, "spaces": ["user:alice"]}),
            )
            .await
            .expect("pull");
        assert_eq!(status, 200, "{body}");
        body
    }
}

async fn a_response_lost_after_commit_then_retried_is_applied_once(backend: Backend) {
    let Some(server) = start(backend, Hold::AfterCommit).await else {
        return;
    };
    let body = push_body(
        "c1",
        vec![put(1, 1, "user:alice", "todos", "t1", json!({"n": 1}))],
    );

    // The push commits, then the connection dies before the response arrives.
    let lost = {
        let (http, url, token, body) = (
            server.http.clone(),
            format!("{}/v1/push", server.base),
            server.token.clone(),
            body.clone(),
        );
        tokio::spawn(async move { http.post(url).bearer_auth(token).json(&body).send().await })
    };
    tokio::time::timeout(Duration::from_secs(5), server.hooks.reached.notified())
        .await
        .expect("the push was committed");
    lost.abort();
    let _ = lost.await;

    // The client retries the same push.
    let (status, retried) = server.post("/v1/push", &body).await.expect("retry");
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["acked_through"], 1);
    assert_eq!(
        retried["results"],
        json!([]),
        "already applied: not applied again"
    );

    let pulled = server.pull().await;
    assert_eq!(pulled["changes"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        pulled["cursor"],
        json!({"user:alice": 1}),
        "one version bump"
    );
    server.hooks.release.notify_one();
}

async fn graceful_shutdown_lets_an_in_flight_push_finish_and_ends_event_streams(backend: Backend) {
    let Some(mut server) = start(backend, Hold::BeforeCommit).await else {
        return;
    };
    let events = server
        .http
        .get(format!("{}/v1/events?spaces=user:alice", server.base))
        .bearer_auth(&server.token)
        .send()
        .await
        .expect("events");
    assert_eq!(events.status(), 200);
    let mut stream = events.bytes_stream();

    let in_flight = {
        let (http, url, token) = (
            server.http.clone(),
            format!("{}/v1/push", server.base),
            server.token.clone(),
        );
        let body = push_body(
            "c1",
            vec![put(1, 1, "user:alice", "todos", "t1", json!({}))],
        );
        tokio::spawn(async move {
            let response = http.post(url).bearer_auth(token).json(&body).send().await?;
            let status = response.status().as_u16();
            Ok::<_, reqwest::Error>((status, response.json::<Value>().await?))
        })
    };
    tokio::time::timeout(Duration::from_secs(5), server.hooks.reached.notified())
        .await
        .expect("the push is in flight");

    // Shutdown begins while the push is held.
    server
        .stop
        .take()
        .expect("once")
        .send(())
        .expect("server running");
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(chunk) = stream.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the event stream ended on shutdown");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tokio::net::TcpStream::connect(server.addr).await.is_err(),
        "no new connections once shutdown began"
    );
    assert!(
        !server.task.is_finished(),
        "the push in flight holds the server"
    );

    server.hooks.release.notify_one();
    let (status, body) = in_flight.await.expect("task").expect("push answered");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["outcome"], "applied");
    let served = tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .expect("the server stopped")
        .expect("task");
    assert!(served.is_ok(), "{served:?}");
    assert!(
        server.hooks.health().await.is_err(),
        "the storage was shut down after the last request"
    );
}

async fn pokes_arrive_over_the_socket(backend: Backend) {
    let Some(server) = start(backend, Hold::Never).await else {
        return;
    };
    let events = server
        .http
        .get(format!("{}/v1/events?spaces=user:alice", server.base))
        .bearer_auth(&server.token)
        .send()
        .await
        .expect("events");
    assert_eq!(events.status(), 200);
    let mut stream = events.bytes_stream();
    let body = push_body(
        "c1",
        vec![put(1, 1, "user:alice", "todos", "t1", json!({}))],
    );
    assert_eq!(server.post("/v1/push", &body).await.expect("push").0, 200);
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !text.contains("\n\n") {
            let chunk = stream.next().await.expect("open").expect("chunk");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("a poke in time");
    assert_eq!(text, "event: poke\ndata: user:alice\n\n");
}

async fn healthz_and_metrics_respond(backend: Backend) {
    let Some(server) = start(backend, Hold::Never).await else {
        return;
    };
    let health = server
        .http
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    assert_eq!(
        health.json::<Value>().await.expect("json"),
        json!({"status": "ok"})
    );

    let body = push_body(
        "c1",
        vec![
            put(1, 1, "user:alice", "todos", "t1", json!({})),
            put(2, 2, "user:alice", "todos", "t2", json!({})),
        ],
    );
    assert_eq!(server.post("/v1/push", &body).await.expect("push").0, 200);
    server.pull().await;
    let unauthorized = server
        .http
        .post(format!("{}/v1/pull", server.base))
        .json(&json!({}))
        .send()
        .await
        .expect("pull");
    assert_eq!(unauthorized.status(), 401);

    let metrics = server
        .http
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .expect("metrics");
    assert_eq!(metrics.status(), 200);
    assert!(metrics.headers()["content-type"]
        .to_str()
        .is_ok_and(|t| t.starts_with("application/openmetrics-text")));
    let text = metrics.text().await.expect("text");
    for line in [
        "tidesync_pushes_total 1",
        "tidesync_mutations_applied_total 2",
        "tidesync_mutations_rejected_total 0",
        "tidesync_pulls_total 1",
        "tidesync_changes_pulled_total 2",
        "tidesync_echoes_pulled_total 0",
        "tidesync_auth_failures_total 1",
        "tidesync_errors_total{code=\"unauthorized\"} 1",
        "tidesync_open_event_streams 0",
        "tidesync_push_duration_seconds_count 1",
        "tidesync_pull_duration_seconds_count 1",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}

on_both_backends! {
    a_response_lost_after_commit_then_retried_is_applied_once,
    graceful_shutdown_lets_an_in_flight_push_finish_and_ends_event_streams,
    pokes_arrive_over_the_socket,
    healthz_and_metrics_respond,
}
