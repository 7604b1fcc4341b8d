//! [`AppState`]: what every request handler shares.

use std::sync::Arc;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::config::{CompatSettings, Limits};
use crate::metrics::Metrics;
use crate::service::SyncService;
use crate::storage::Storage;

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    service: SyncService,
    compat: CompatSettings,
    metrics: Metrics,
    /// One permit per allowed concurrent event stream.
    streams: Arc<Semaphore>,
    /// `true` once shutdown began: event streams end, `/healthz` answers 503.
    shutdown: watch::Sender<bool>,
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
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State over `storage` with `limits`, fresh metrics and no shutdown requested.
    pub fn new(storage: Arc<dyn Storage>, limits: Limits) -> AppState {
        AppState::with_compat(storage, limits, CompatSettings::default())
    }

    /// [`AppState::new`] with settings for the RxDB and WatermelonDB protocols.
    pub fn with_compat(
        storage: Arc<dyn Storage>,
        limits: Limits,
        compat: CompatSettings,
    ) -> AppState {
        let permits = limits.max_event_streams.min(Semaphore::MAX_PERMITS);
        let streams = Arc::new(Semaphore::new(permits));
        let (shutdown, _) = watch::channel(false);
        AppState {
            inner: Arc::new(Shared {
                service: SyncService::new(storage, limits),
                compat,
                metrics: Metrics::new(),
                streams,
                shutdown,
            }),
        }
    }

    /// Validation, storage and error mapping of pushes and pulls.
    pub fn service(&self) -> &SyncService {
        &self.inner.service
    }

    /// Settings of the RxDB and WatermelonDB protocols.
    pub fn compat(&self) -> &CompatSettings {
        &self.inner.compat
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
