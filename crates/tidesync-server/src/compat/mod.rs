//! The RxDB and WatermelonDB sync protocols served on tidesync's own data
//! (docs/compat.md): an app on either stack syncs with this server, and its writes are
//! ordinary tidesync mutations (stamps, space versions, pokes) that native clients see.
//!
//! - [`records`], what both protocols share: reading a space's changes and current records
//!   through [`SyncService::pull`](crate::SyncService::pull), writing documents through
//!   [`SyncService::push_compat`](crate::SyncService) (the one push path, every mutation a
//!   compare-and-swap), and the client id that makes a resent push a duplicate.
//! - [`rxdb`], the routes `/compat/rxdb/v1/{space}/{collection}/{pull,push,pullStream}`.
//! - [`watermelon`], the route `/compat/watermelon/v1/{space}/sync` (GET pulls, POST pushes).
//!
//! Nothing here reads or writes storage except through the service, so the native checks
//! (auth, grants, limits, document size and depth) apply unchanged.

pub(crate) mod records;
pub(crate) mod rxdb;
pub(crate) mod watermelon;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::routing::get;
use axum::Router;
use serde::de::DeserializeOwned;
use tidesync_protocol::{CollectionName, SpaceName};

use crate::error::ApiError;
use crate::state::AppState;

/// Every compat route, to be merged into the application's router.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/compat/rxdb/v1/{space}/{collection}/pull", get(rxdb::pull))
        .route(
            "/compat/rxdb/v1/{space}/{collection}/push",
            axum::routing::post(rxdb::push),
        )
        .route(
            "/compat/rxdb/v1/{space}/{collection}/pullStream",
            get(rxdb::pull_stream),
        )
        .route(
            "/compat/watermelon/v1/{space}/sync",
            get(watermelon::pull).post(watermelon::push),
        )
}

/// The space named by a path.
pub(crate) fn space_of(path: Result<Path<String>, PathRejection>) -> Result<SpaceName, ApiError> {
    let Path(space) = path.map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
    SpaceName::new(space).map_err(|e| ApiError::invalid(e.to_string()))
}

/// The space and collection named by a path.
pub(crate) fn collection_of(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(SpaceName, CollectionName), ApiError> {
    let Path((space, collection)) =
        path.map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
    let space = SpaceName::new(space).map_err(|e| ApiError::invalid(e.to_string()))?;
    let collection =
        CollectionName::new(collection).map_err(|e| ApiError::invalid(e.to_string()))?;
    Ok((space, collection))
}

/// A query string, or `400 invalid_input` saying what was expected.
pub(crate) fn query_of<T: DeserializeOwned>(
    query: Result<Query<T>, QueryRejection>,
    expected: &str,
) -> Result<T, ApiError> {
    query.map(|Query(query)| query).map_err(|rejection| {
        ApiError::invalid(format!("expected {expected} ({})", rejection.body_text()))
    })
}

/// A JSON number written in a query string as a space version (`last_pulled_at`), or
/// `None` for absent, empty or `null`.
pub(crate) fn version_param(name: &str, value: Option<&str>) -> Result<Option<u64>, ApiError> {
    match value {
        None | Some("") | Some("null") | Some("undefined") => Ok(None),
        Some(text) => text.parse::<u64>().map(Some).map_err(|_| {
            ApiError::invalid(format!(
                "{name}={text:?} is not a timestamp this server gave: send the `timestamp` of \
                 the last pull, or null on the first sync"
            ))
        }),
    }
}
