//! `POST /v1/pull`: authenticate, then read one page through the [`SyncService`] (which
//! checks the spaces are readable).
//!
//! [`SyncService`]: crate::SyncService

use std::time::Instant;

use axum::extract::State;
use axum::Json;
use tidesync_protocol::{PullRequest, PullResponse, RawChange};

use crate::admin::Request;
use crate::error::ApiError;
use crate::extract::{Auth, JsonBody};
use crate::state::AppState;

/// Handles `POST /v1/pull`.
pub(crate) async fn pull(
    State(state): State<AppState>,
    Auth(grants): Auth,
    JsonBody(request): JsonBody<PullRequest>,
) -> Result<Json<PullResponse<RawChange>>, ApiError> {
    let started = Instant::now();
    tracing::Span::current().record("client_id", request.client_id.as_str());
    if let Some(activity) = state.activity() {
        activity.saw(&request.client_id, &grants.user, Request::Pull);
    }
    let response = state.service().pull(&grants, request).await?;
    state.metrics().pull_done(&response, started.elapsed());
    tracing::debug!(
        changes = response.changes.len(),
        has_more = response.has_more,
        "pull served"
    );
    Ok(Json(response))
}
