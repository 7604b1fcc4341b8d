//! `POST /v1/push`: authenticate, then hand the request to the [`SyncService`]
//! (validation, exactly-once application; see [`crate::storage`] for the contract).
//!
//! [`SyncService`]: crate::SyncService

use std::time::Instant;

use axum::extract::State;
use axum::Json;
use tidesync_protocol::{PushRequest, PushResponse};

use crate::admin::Request;
use crate::error::ApiError;
use crate::extract::{Auth, JsonBody};
use crate::state::AppState;

/// Handles `POST /v1/push`.
pub(crate) async fn push(
    State(state): State<AppState>,
    Auth(grants): Auth,
    JsonBody(request): JsonBody<PushRequest>,
) -> Result<Json<PushResponse>, ApiError> {
    let started = Instant::now();
    tracing::Span::current().record("client_id", request.client_id.as_str());
    let count = request.mutations.len();
    let seen = state.activity().map(|activity| {
        activity.saw(&request.client_id, &grants.user, Request::Push);
        (activity, request.client_id.clone())
    });
    let response = state.service().push(&grants, request).await?;
    if let Some((activity, client_id)) = seen {
        activity.answered(&client_id, &grants.user, &response);
    }
    state.metrics().push_done(&response, started.elapsed());
    tracing::debug!(
        mutations = count,
        acked_through = response.acked_through,
        "push applied"
    );
    Ok(Json(response))
}
