//! `POST /v1/pull`: authenticate, check the spaces are readable, then read one page.

use std::time::Instant;

use axum::extract::State;
use axum::Json;
use tidesync_protocol::{PullRequest, PullResponse, RawChange};

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{Auth, JsonBody};
use crate::validate;

/// Handles `POST /v1/pull`.
pub async fn pull(
    State(state): State<AppState>,
    Auth(grants): Auth,
    JsonBody(request): JsonBody<PullRequest>,
) -> Result<Json<PullResponse<RawChange>>, ApiError> {
    let started = Instant::now();
    tracing::Span::current().record("client_id", request.client_id.as_str());
    validate::protocol(request.protocol)?;
    let input = validate::pull(request, &grants, state.limits())?;
    let response = state.storage().pull(input).await?;
    state.metrics().pull_done(&response, started.elapsed());
    tracing::debug!(
        changes = response.changes.len(),
        has_more = response.has_more,
        "pull served"
    );
    Ok(Json(response))
}
