//! [`StoreCounts`]: the figures a sync status shows, kept in memory and moved by the store's
//! own commits, so a status needs no query.
//!
//! Every write path works on a copy of the counts inside its SQLite transaction and hands it
//! back only after the commit succeeded: a rolled-back write leaves them as they were. Another
//! connection (a second process on the same file) may change the tables behind our back;
//! `PRAGMA data_version` tells, and the counts are then read again from the tables.

use rusqlite::Connection;

use crate::write::Counters;
use crate::{meta, Result, StoreError};

/// What the outbox, the conflicts and the rejections hold, and where sync stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreCounts {
    /// Mutations not yet confirmed (rows in the outbox).
    pub pending: u64,
    /// Creation time (ms since the epoch) of the oldest of them.
    pub oldest_pending_at_ms: Option<u64>,
    /// Mutations the server has not acknowledged yet (after `acked_through`).
    pub unpushed: u64,
    /// Their size as JSON (the `op` bodies): an estimate of the bytes still to upload.
    pub unpushed_bytes: u64,
    /// Unresolved conflicts.
    pub conflicts: u64,
    /// Rejected mutations awaiting retry or discard.
    pub rejections: u64,
    /// The highest seq handed out so far.
    pub last_seq: u64,
    /// The highest seq the server reported processed in a push answer.
    pub acked_through: u64,
    /// When the last complete pull finished (ms since the epoch).
    pub last_synced_at_ms: Option<u64>,
    /// Whether a complete pull ever finished.
    pub has_synced: bool,
}

impl StoreCounts {
    /// Reads every figure from the tables (at open, and when another connection committed).
    pub(crate) fn load(conn: &Connection) -> Result<StoreCounts> {
        let acked_through = meta::get_u64(conn, meta::ACKED_THROUGH)?;
        let count = |sql: &'static str| -> Result<u64> {
            conn.prepare_cached(sql)
                .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
                .map(|n| n as u64)
                .map_err(StoreError::sql("count rows"))
        };
        let (unpushed, unpushed_bytes): (i64, i64) = conn
            .prepare_cached(
                "SELECT count(*), coalesce(sum(length(op)), 0) FROM outbox WHERE seq > ?1",
            )
            .and_then(|mut s| s.query_row([acked_through as i64], |r| Ok((r.get(0)?, r.get(1)?))))
            .map_err(StoreError::sql("count unpushed mutations"))?;
        Ok(StoreCounts {
            pending: count("SELECT count(*) FROM outbox")?,
            oldest_pending_at_ms: oldest_pending(conn)?,
            unpushed: unpushed as u64,
            unpushed_bytes: unpushed_bytes as u64,
            conflicts: count("SELECT count(*) FROM conflicts")?,
            rejections: count("SELECT count(*) FROM rejections")?,
            last_seq: Counters::load(conn)?.last_seq,
            acked_through,
            last_synced_at_ms: meta::get(conn, meta::LAST_SYNCED_AT)?.and_then(|v| v.parse().ok()),
            has_synced: meta::get(conn, meta::HAS_SYNCED)?.is_some(),
        })
    }

    /// Mutations left the outbox (confirmed or rejected): the oldest one may have gone.
    pub(crate) fn removed_pending(&mut self, conn: &Connection, n: u64) -> Result<()> {
        if n > 0 {
            self.pending = self.pending.saturating_sub(n);
            self.oldest_pending_at_ms = oldest_pending(conn)?;
        }
        Ok(())
    }

    /// A local write appended a mutation of `op_bytes` at `created_at_ms`.
    pub(crate) fn appended(&mut self, seq: u64, op_bytes: usize, created_at_ms: u64) {
        if self.pending == 0 {
            self.oldest_pending_at_ms = Some(created_at_ms);
        }
        self.pending += 1;
        self.unpushed += 1;
        self.unpushed_bytes += op_bytes as u64;
        self.last_seq = self.last_seq.max(seq);
    }
}

/// The creation time of the oldest outbox row (one index seek).
fn oldest_pending(conn: &Connection) -> Result<Option<u64>> {
    conn.prepare_cached("SELECT (SELECT created_at FROM outbox ORDER BY seq LIMIT 1)")
        .and_then(|mut s| s.query_row([], |r| r.get::<_, Option<i64>>(0)))
        .map(|v| v.map(|v| v as u64))
        .map_err(StoreError::sql("read the oldest pending mutation"))
}

/// The counts as of the last commit of this connection, and the `data_version` they match.
#[derive(Debug)]
pub(crate) struct CountsCache {
    counts: StoreCounts,
    data_version: i64,
}

impl CountsCache {
    pub(crate) fn load(conn: &Connection) -> Result<CountsCache> {
        Ok(CountsCache {
            data_version: data_version(conn)?,
            counts: StoreCounts::load(conn)?,
        })
    }

    /// The counts, read again if another connection committed since we last looked.
    pub(crate) fn current(&mut self, conn: &Connection) -> Result<StoreCounts> {
        let version = data_version(conn)?;
        if version != self.data_version {
            self.counts = StoreCounts::load(conn)?;
            self.data_version = version;
        }
        Ok(self.counts)
    }

    /// After a commit of this connection (which does not move `data_version`).
    pub(crate) fn set(&mut self, counts: StoreCounts) {
        self.counts = counts;
    }
}

pub(crate) fn data_version(conn: &Connection) -> Result<i64> {
    conn.prepare_cached("PRAGMA data_version")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(StoreError::sql("read the data version"))
}
