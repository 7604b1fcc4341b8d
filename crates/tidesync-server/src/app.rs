//! The axum application: shared state ([`AppState`]) and the router ([`app`]).
//!
//! Routes (documented in docs/protocol.md):
//!
//! | route | handler |
//! |---|---|
//! | `POST /v1/push` | [`crate::routes::push`] |
//! | `POST /v1/pull` | [`crate::routes::pull`] |
//! | `GET /v1/events` | [`crate::routes::events`] |
//! | `GET /healthz`, `GET /metrics` | [`crate::routes::ops`] |
//!
//! Unknown paths answer `404 not_found`, known paths with the wrong method
//! `405 method_not_allowed`, both as JSON. A middleware opens one tracing span per request
//! (method, path, and the `user` and `client_id` the handlers fill in), logs its outcome, and
//! counts error responses by code.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tidesync_protocol::ErrorCode;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::config::Limits;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::routes;
use crate::storage::Storage;

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    storage: Arc<dyn Storage>,
    limits: Limits,
    metrics: Metrics,
    /// One permit per allowed concurrent event stream.
    streams: Arc<Semaphore>,
    /// `true` once shutdown began: event streams end, `/healthz` answers 503.
    shutdown: watch::Sender<bool>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("limits", &self.inner.limits)
            .field(
                "free_stream_permits",
                &self.inner.streams.available_permits(),
            )
            .field("shutting_down", &self.is_shutting_down())
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State over `storage` with `limits`, fresh metrics and no shutdown requested.
    pub fn new(storage: Arc<dyn Storage>, limits: Limits) -> AppState {
        let permits = limits.max_event_streams.min(Semaphore::MAX_PERMITS);
        let streams = Arc::new(Semaphore::new(permits));
        let (shutdown, _) = watch::channel(false);
        AppState {
            inner: Arc::new(Shared {
                storage,
                limits,
                metrics: Metrics::new(),
                streams,
                shutdown,
            }),
        }
    }

    /// The storage backend.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.storage
    }

    /// The request limits.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Signals shutdown: every open event stream ends and `/healthz` answers 503. Requests
    /// already running are not interrupted.
    pub fn begin_shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Whether [`AppState::begin_shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    /// A receiver that sees `true` once shutdown begins.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    /// A permit for one event stream, or `None` when `max_event_streams` are open.
    pub fn try_open_stream(&self) -> Option<OwnedSemaphorePermit> {
        self.inner.streams.clone().try_acquire_owned().ok()
    }
}

/// The router with every route, the body limit, and the logging/metrics middleware.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v1/push", post(routes::push::push))
        .route("/v1/pull", post(routes::pull::pull))
        .route("/v1/events", get(routes::events::events))
        .route("/healthz", get(routes::ops::healthz))
        .route("/metrics", get(routes::ops::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.limits().max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("no endpoint at {}", request.uri().path()),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// One span per request; logs the outcome and counts errors by code.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        user = tracing::field::Empty,
        client_id = tracing::field::Empty,
    );
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    match response.extensions().get::<ErrorCode>() {
        Some(code) => {
            state.metrics().error(*code);
            span.in_scope(|| tracing::info!(status, %code, elapsed_ms, "request failed"));
        }
        None => span.in_scope(|| tracing::info!(status, elapsed_ms, "request handled")),
    }
    response
}
