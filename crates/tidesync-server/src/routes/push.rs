//! `POST /v1/push`: authenticate, validate the whole batch, then hand it to storage.
//!
//! Every check happens before storage is called, so a push refused for its shape, size or
//! permissions changes nothing. Exactly-once, gaps and whole transactions are storage's
//! contract (see [`crate::storage`]).

use std::time::Instant;

use axum::extract::State;
use axum::Json;
use tidesync_protocol::{PushRequest, PushResponse};

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{Auth, JsonBody};
use crate::storage::PushInput;
use crate::validate;

/// Handles `POST /v1/push`.
pub async fn push(
    State(state): State<AppState>,
    Auth(grants): Auth,
    JsonBody(request): JsonBody<PushRequest>,
) -> Result<Json<PushResponse>, ApiError> {
    let started = Instant::now();
    tracing::Span::current().record("client_id", request.client_id.as_str());
    validate::protocol(request.protocol)?;
    validate::push(&request.mutations, &grants, state.limits())?;
    let count = request.mutations.len();
    let response = state
        .storage()
        .push(PushInput {
            user: grants.user,
            client_id: request.client_id,
            mutations: request.mutations,
        })
        .await?;
    state.metrics().push_done(&response, started.elapsed());
    tracing::debug!(
        mutations = count,
        acked_through = response.acked_through,
        "push applied"
    );
    Ok(Json(response))
}
