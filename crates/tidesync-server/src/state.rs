//! [`AppState`]: what every request handler shares.

use std::sync::Arc;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::admin::{Activity, Admin, AdminToken};
use crate::auth::jwt::JwtVerifier;
use crate::auth::{Grants, TokenHash, TOKEN_PREFIX};
use crate::config::{CompatSettings, Limits};
use crate::error::ApiError;
use crate::horizon::HorizonConfig;
use crate::metrics::Metrics;
use crate::service::SyncService;
use crate::storage::Storage;

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
    /// The admin dashboard, when an admin token is configured.
    admin: Option<Arc<Admin>>,
    /// Verifies bearers that are not API tokens, when JWT auth is configured.
    jwt: Option<JwtVerifier>,
    /// Settings of the RxDB and WatermelonDB protocols.
    compat: Arc<CompatSettings>,
}

struct Shared {
    service: SyncService,
    metrics: Metrics,
    /// One permit per allowed concurrent event stream.
    streams: Arc<Semaphore>,
    /// `true` once shutdown began: event streams end, `/healthz` answers 503.
    shutdown: watch::Sender<bool>,
    /// The history horizon [`crate::serve`] prunes by (`None`: history is kept forever).
    horizon: Option<HorizonConfig>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("limits", self.limits())
            .field(
                "free_stream_permits",
                &self.inner.streams.available_permits(),
            )
            .field("shutting_down", &self.is_shutting_down())
            .field("admin", &self.admin.is_some())
            .field("jwt", &self.jwt)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State over `storage` with `limits`, fresh metrics, no shutdown requested and the
    /// default history horizon ([`HorizonConfig::default`]: 30 days).
    pub fn new(storage: Arc<dyn Storage>, limits: Limits) -> AppState {
        AppState::with_horizon(storage, limits, Some(HorizonConfig::default()))
    }

    /// [`AppState::new`] with the history horizon `horizon` (`None`: nothing is ever
    /// pruned). Check it first with [`HorizonConfig::validate`].
    pub fn with_horizon(
        storage: Arc<dyn Storage>,
        limits: Limits,
        horizon: Option<HorizonConfig>,
    ) -> AppState {
        let permits = limits.max_event_streams.min(Semaphore::MAX_PERMITS);
        let streams = Arc::new(Semaphore::new(permits));
        let (shutdown, _) = watch::channel(false);
        AppState {
            inner: Arc::new(Shared {
                service: SyncService::new(storage, limits),
                metrics: Metrics::new(),
                streams,
                shutdown,
                horizon,
            }),
            admin: None,
            compat: Arc::new(CompatSettings::default()),
            jwt: None,
        }
    }

    /// The same state, also accepting bearer JWTs verified by `verifier`: a bearer that is
    /// not an API token (`tsk_…`) goes to it. API tokens keep working as before.
    pub fn with_jwt(mut self, verifier: JwtVerifier) -> AppState {
        self.jwt = Some(verifier);
        self
    }

    /// The JWT verifier, when JWT auth is configured.
    pub fn jwt(&self) -> Option<&JwtVerifier> {
        self.jwt.as_ref()
    }

    /// The grants of a bearer token: an API token (`tsk_…`) is looked up in storage; any
    /// other bearer is verified as a JWT when JWT auth is configured. A refusal is a `401`
    /// whose code names why (`unauthorized` for API tokens, the JWT checks' own codes).
    pub async fn authenticate(&self, bearer: &str) -> Result<Grants, ApiError> {
        if let (Some(jwt), false) = (&self.jwt, bearer.starts_with(TOKEN_PREFIX)) {
            return jwt.verify(bearer).await;
        }
        match self.storage().authenticate(TokenHash::of(bearer)).await? {
            Some(grants) => Ok(grants),
            None if self.jwt.is_none() && bearer.starts_with("eyJ") => Err(ApiError::unauthorized(
                "the bearer token looks like a JWT, but this server has no JWT auth \
                     configured ([auth.jwt], docs/operations.md); send an API token (tsk_…)",
            )),
            None => Err(ApiError::unauthorized(
                "the bearer token is unknown or revoked",
            )),
        }
    }

    /// This state with the admin dashboard at `/admin` turned on, behind `token` (see
    /// [`crate::admin`]). Off by default: `/admin` answers `404`.
    pub fn with_admin(mut self, token: AdminToken) -> AppState {
        self.admin = Some(Arc::new(Admin::new(token)));
        self
    }

    /// The admin dashboard's state, when it is on.
    pub(crate) fn admin(&self) -> Option<&Admin> {
        self.admin.as_deref()
    }

    /// What this node saw of its clients, kept only while the dashboard is on.
    pub(crate) fn activity(&self) -> Option<&Activity> {
        self.admin().map(Admin::activity)
    }

    /// The history horizon the server prunes by, if any.
    pub fn horizon(&self) -> Option<HorizonConfig> {
        self.inner.horizon
    }

    /// Validation, storage and error mapping of pushes and pulls.
    pub fn service(&self) -> &SyncService {
        &self.inner.service
    }

    /// This state with `compat` as the settings of the RxDB and WatermelonDB protocols
    /// (docs/compat.md).
    pub fn with_compat(mut self, compat: CompatSettings) -> AppState {
        self.compat = Arc::new(compat);
        self
    }

    /// Settings of the RxDB and WatermelonDB protocols.
    pub fn compat(&self) -> &CompatSettings {
        &self.compat
    }

    /// The storage backend.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        self.inner.service.storage()
    }

    /// The request limits.
    pub fn limits(&self) -> &Limits {
        self.inner.service.limits()
    }

    /// The metrics.
    pub(crate) fn metrics(&self) -> &Metrics {
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
    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    /// A permit for one event stream, or `None` when `max_event_streams` are open.
    pub(crate) fn try_open_stream(&self) -> Option<OwnedSemaphorePermit> {
        self.inner.streams.clone().try_acquire_owned().ok()
    }
}
