//! The axum application: the router ([`app`]) over the shared [`AppState`].
//!
//! Routes (documented in docs/protocol.md):
//!
//! | route | handler |
//! |---|---|
//! | `POST /v1/push` | [`crate::routes::push`] |
//! | `POST /v1/pull` | [`crate::routes::pull`] |
//! | `GET /v1/events` | [`crate::routes::events`] |
//! | `GET /healthz`, `GET /metrics` | [`crate::routes::ops`] |
//! | `GET /admin`, `POST /admin/login`, `POST /admin/logout`, `GET /admin/metrics.json` | [`crate::admin`] |
//! | `/compat/rxdb/v1/…`, `/compat/watermelon/v1/…` | [`crate::compat`] (docs/compat.md) |
//!
//! Unknown paths answer `404 not_found`, known paths with the wrong method
//! `405 method_not_allowed`, both as JSON. A middleware opens one tracing span per request
//! (method, path, and the `user` and `client_id` the handlers fill in), logs its outcome, and
//! counts error responses by code. Inside it, unless `Limits::compression` is off, request
//! bodies are decompressed and responses compressed ([`crate::compression`]).

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tidesync_protocol::ErrorCode;
use tracing::Instrument;

use crate::admin;
use crate::compat;
use crate::compression;
use crate::error::ApiError;
use crate::routes;
use crate::state::AppState;

/// The router with every route, the body limit, compression, and the logging/metrics
/// middleware.
pub fn app(state: AppState) -> Router {
    let router = Router::new()
        .route("/v1/push", post(routes::push::push))
        .route("/v1/pull", post(routes::pull::pull))
        .route("/v1/events", get(routes::events::events))
        .route("/healthz", get(routes::ops::healthz))
        .route("/metrics", get(routes::ops::metrics))
        .merge(admin::router())
        .merge(compat::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Counted where a handler reads the body: inside the decompression, so the limit is
        // on decompressed bytes.
        .layer(DefaultBodyLimit::max(state.limits().max_body_bytes));
    let router = if state.limits().compression {
        router
            .layer(compression::request_layer())
            .layer(compression::response_layer())
    } else {
        router
    };
    router
        .layer(middleware::from_fn_with_state(
            state.clone(),
            compression::negotiate,
        ))
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
