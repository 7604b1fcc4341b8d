//! The SQLite backend's logic without threads or async: one connection, every call on the
//! caller's thread, time passed in. What a deterministic simulation drives (it owns time and
//! scheduling); the server itself uses [`super::SqliteStorage`], which runs the same code on
//! its writer thread and reader pool.

use std::path::Path;

use rusqlite::Connection;
use tidesync_core::HlcClock;
use tidesync_protocol::{PullResponse, PushResponse, RawChange};

use crate::config::MergeRules;
use crate::storage::sqlite::{pull, schema, writer};
use crate::storage::{Poke, PullInput, PushInput, StorageError};

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
        pull::pull(&self.conn, input)
    }
}
