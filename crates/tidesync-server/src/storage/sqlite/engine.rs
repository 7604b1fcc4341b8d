//! The SQLite backend's logic without threads or async: one connection, every call on the
//! caller's thread, time passed in. What a deterministic simulation drives (it owns time and
//! scheduling); the server itself uses [`super::SqliteStorage`], which runs the same code on
//! its writer thread and reader pool.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use rusqlite::Connection;
use tidesync_core::HlcClock;
use tidesync_protocol::{PullResponse, PushResponse, RawChange, SpaceName};
use tokio::sync::broadcast;

use crate::auth::{Grants, TokenHash};
use crate::config::MergeRules;
use crate::storage::sqlite::{overview, prune, pull, push, schema, writer};
use crate::storage::{
    Overview, OverviewRequest, Poke, Prune, Pruned, PullInput, PushInput, Storage, StorageError,
};

/// A synchronous server engine over one SQLite file.
#[derive(Debug)]
pub struct SyncEngine {
    conn: Connection,
    rules: MergeRules,
    clock: HlcClock,
}

impl SyncEngine {
    /// Opens (creating and migrating if needed) the database at `path`. Safe to call again
    /// after dropping a previous engine on the same file: that is a server restart.
    pub fn open(path: &Path, rules: MergeRules) -> Result<SyncEngine, StorageError> {
        let conn = schema::open(path, true)?;
        let clock = HlcClock::resume(writer::load_clock(&conn));
        Ok(SyncEngine { conn, rules, clock })
    }

    /// Applies one push in its own transaction at server time `now_ms`; returns the response
    /// and the pokes for the spaces that moved.
    pub fn push(
        &mut self,
        input: &PushInput,
        now_ms: u64,
    ) -> Result<(PushResponse, Vec<Poke>), StorageError> {
        let (mut results, pokes) =
            writer::commit_pushes(&self.conn, &[input], &self.rules, &mut self.clock, now_ms)?;
        let result = results
            .pop()
            .ok_or_else(|| StorageError::Internal("no result for the push".into()))?;
        Ok((result?, pokes))
    }

    /// Reads one page of changes (documents and stamps as stored JSON text).
    pub fn pull(&self, input: &PullInput) -> Result<PullResponse<RawChange>, StorageError> {
        let (page, downloads) = pull::pull(&self.conn, input)?;
        pull::record_downloads(&self.conn, &input.client_id, &downloads)?;
        Ok(page)
    }

    /// Runs one prune batch in its own transaction (see [`Storage::prune`]).
    pub fn prune(&self, batch: Prune) -> Result<Pruned, StorageError> {
        prune::prune_batch(&self.conn, batch)
    }
}

/// Where an [`EngineStorage`] reads the server's time (ms since the epoch).
pub type EngineClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// A [`SyncEngine`] behind the [`Storage`] trait: every call runs on the caller's thread and
/// completes without waiting (the futures never suspend), with time from `clock`. What the
/// deterministic simulation puts behind the same [`SyncService`](crate::SyncService) the
/// routes use; pokes go to [`Storage::subscribe`] receivers as they do from
/// [`super::SqliteStorage`].
pub struct EngineStorage {
    engine: Mutex<SyncEngine>,
    clock: EngineClock,
    pokes: broadcast::Sender<Poke>,
}

impl std::fmt::Debug for EngineStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineStorage").finish_non_exhaustive()
    }
}

impl EngineStorage {
    /// Opens the engine on `path` (see [`SyncEngine::open`]).
    pub fn open(
        path: &Path,
        rules: MergeRules,
        clock: EngineClock,
    ) -> Result<EngineStorage, StorageError> {
        let (pokes, _) = broadcast::channel(1024);
        Ok(EngineStorage {
            engine: Mutex::new(SyncEngine::open(path, rules)?),
            clock,
            pokes,
        })
    }

    fn engine(&self) -> Result<MutexGuard<'_, SyncEngine>, StorageError> {
        self.engine
            .lock()
            .map_err(|_| StorageError::Internal("engine lock poisoned".into()))
    }
}

#[async_trait]
impl Storage for EngineStorage {
    async fn push(&self, input: PushInput) -> Result<PushResponse, StorageError> {
        let now = (self.clock)();
        let (response, pokes) = self.engine()?.push(&input, now)?;
        for poke in pokes {
            let _ = self.pokes.send(poke);
        }
        Ok(response)
    }

    async fn pull(&self, input: PullInput) -> Result<PullResponse<RawChange>, StorageError> {
        self.engine()?.pull(&input)
    }

    async fn authenticate(&self, token: TokenHash) -> Result<Option<Grants>, StorageError> {
        super::lookup_token(&self.engine()?.conn, &token)
    }

    async fn space_versions(&self, spaces: &[SpaceName]) -> Result<Vec<u64>, StorageError> {
        let engine = self.engine()?;
        spaces
            .iter()
            .map(|s| push::space_version(&engine.conn, s))
            .collect()
    }

    fn subscribe(&self) -> broadcast::Receiver<Poke> {
        self.pokes.subscribe()
    }

    async fn overview(&self, request: OverviewRequest) -> Result<Overview, StorageError> {
        overview::overview(&self.engine()?.conn, &request)
    }

    async fn prune(&self, batch: Prune) -> Result<Pruned, StorageError> {
        self.engine()?.prune(batch)
    }

    async fn health(&self) -> Result<(), StorageError> {
        self.engine().map(|_| ())
    }

    async fn shutdown(&self) {}
}
