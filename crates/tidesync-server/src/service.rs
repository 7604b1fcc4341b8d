//! [`SyncService`]: every push and pull from a wire request to a wire answer, in one place:
//! validation (protocol version, shapes, sizes, permissions), storage, and the mapping of
//! storage failures to [`ApiError`]s.
//!
//! The HTTP routes call it once they have authenticated the caller and parsed the body; the
//! deterministic simulation calls it directly, over a [`SyncEngine`](crate::storage::sqlite::EngineStorage)
//! it drives with simulated time. Every check runs before storage is called, so a refused
//! request changes nothing.

use std::sync::Arc;

use tidesync_protocol::{
    ClientId, Mutation, PullRequest, PullResponse, PushOutcome, PushRequest, PushResponse,
    RawChange,
};

use crate::auth::Grants;
use crate::config::Limits;
use crate::error::ApiError;
use crate::storage::{PushInput, PushOrigin, Storage};
use crate::validate;

/// Pushes and pulls over one storage backend, with its limits. Cheap to clone.
#[derive(Clone)]
pub struct SyncService {
    storage: Arc<dyn Storage>,
    limits: Limits,
}

impl std::fmt::Debug for SyncService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncService")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl SyncService {
    /// A service over `storage` with `limits`.
    pub fn new(storage: Arc<dyn Storage>, limits: Limits) -> SyncService {
        SyncService { storage, limits }
    }

    /// The storage backend.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The request limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// `POST /v1/push` for `grants`: the whole batch is checked, then applied exactly once.
    pub async fn push(
        &self,
        grants: &Grants,
        request: PushRequest,
    ) -> Result<PushResponse, ApiError> {
        let protocol = request.protocol;
        validate::protocol(protocol)?;
        validate::push(
            &request.mutations,
            request.recover_from.is_some(),
            grants,
            &self.limits,
        )?;
        let input = PushInput {
            user: grants.user.clone(),
            client_id: request.client_id,
            mutations: request.mutations,
            recover_from: request.recover_from,
            origin: PushOrigin::Client,
        };
        let mut response = self.storage.push(input).await?;
        for result in &mut response.results {
            if let PushOutcome::Rejected { code, .. } = &mut result.outcome {
                *code = code.for_protocol(protocol);
            }
        }
        Ok(response)
    }

    /// A push made by the server for an RxDB or WatermelonDB client (`crate::compat`): the
    /// same checks and the same storage path as [`SyncService::push`], every mutation a
    /// compare-and-swap on its `base_version`, stamped by the server
    /// ([`PushOrigin::Compat`]). `max_mutations` replaces `Limits::max_mutations_per_push`
    /// for a protocol that cannot split a push (WatermelonDB: the body limit bounds it).
    pub(crate) async fn push_compat(
        &self,
        grants: &Grants,
        client_id: ClientId,
        mutations: Vec<Mutation>,
        max_mutations: usize,
    ) -> Result<PushResponse, ApiError> {
        let limits = Limits {
            max_mutations_per_push: max_mutations,
            ..self.limits.clone()
        };
        validate::push(&mutations, false, grants, &limits)?;
        let input = PushInput {
            user: grants.user.clone(),
            client_id,
            mutations,
            recover_from: None,
            origin: PushOrigin::Compat,
        };
        Ok(self.storage.push(input).await?)
    }

    /// `POST /v1/pull` for `grants`: one page of changes in the readable spaces.
    pub async fn pull(
        &self,
        grants: &Grants,
        request: PullRequest,
    ) -> Result<PullResponse<RawChange>, ApiError> {
        validate::protocol(request.protocol)?;
        let input = validate::pull(request, grants, &self.limits)?;
        Ok(self.storage.pull(input).await?)
    }
}
