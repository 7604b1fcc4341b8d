//! Operational endpoints: `GET /healthz` and `GET /metrics`. Neither needs a token; neither
//! reveals user data.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

/// Content type of the OpenMetrics text format, which Prometheus scrapes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /healthz`: `200 {"status":"ok"}` when storage answers, `503 unavailable` when it
/// does not or the server is shutting down.
pub(crate) async fn healthz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    if state.is_shutting_down() {
        return Err(ApiError::unavailable("the server is shutting down"));
    }
    match state.storage().health().await {
        Ok(()) => Ok(Json(json!({"status": "ok"}))),
        Err(err) => {
            tracing::warn!(error = %err, "health check failed");
            Err(ApiError::unavailable("storage is not answering"))
        }
    }
}

/// `GET /metrics`: every metric in the OpenMetrics text format.
pub(crate) async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let body = state.metrics().encode().map_err(ApiError::internal)?;
    Ok(([(CONTENT_TYPE, OPENMETRICS)], body))
}
