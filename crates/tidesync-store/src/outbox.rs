//! The outbox: reading queued mutations in seq order (in batches or streamed, never all at
//! once) and the states they move through.

use std::ops::ControlFlow;

use rusqlite::{params, Connection, OptionalExtension, Row};
use tidesync_protocol::{ErrorCode, Hlc, Mutation, Op};

use crate::records::key_from_row;
use crate::{Result, StoreError};

/// Where a mutation is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MutationState {
    /// Waiting to be pushed.
    Queued,
    /// Pushed; no answer yet (it may or may not have been applied).
    Sending,
    /// Applied by the server at `version` (unknown when a retried push was acknowledged as a
    /// duplicate). Still in the local view until a pull passes that version.
    Acked {
        /// The space version containing it, if known.
        version: Option<u64>,
    },
    /// Applied, and pulled back: the base contains it; it has left the outbox.
    Confirmed,
    /// Refused by the server; see [`crate::Store::rejections`].
    Rejected {
        /// Why.
        code: ErrorCode,
        /// Why, in words.
        message: String,
    },
}

/// One outbox row.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    /// The mutation as it will be pushed.
    pub mutation: Mutation,
    /// Its state (never `Confirmed` or `Rejected`: those have left the outbox).
    pub state: MutationState,
    /// How many times it was handed out for sending.
    pub attempts: u32,
    /// When it was made (wall clock, ms since the epoch).
    pub created_at: u64,
    /// The size of its operation as stored JSON (what upload progress counts in bytes).
    pub op_bytes: u64,
}

const COLUMNS: &str =
    "seq, tx, space, collection, id, op, hlc, base_version, state, acked_version, attempts, created_at";

pub(crate) const QUEUED: i64 = 0;
pub(crate) const SENDING: i64 = 1;
pub(crate) const ACKED: i64 = 2;

fn entry_from_row(row: &Row<'_>) -> Result<OutboxEntry> {
    let get = StoreError::sql("read the outbox");
    let cols = (|| {
        Ok::<_, rusqlite::Error>((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, String>(4)?,
            row.get::<_, String>(5)?,
            row.get::<_, i64>(6)?,
            row.get::<_, i64>(7)?,
            row.get::<_, i64>(8)?,
            row.get::<_, Option<i64>>(9)?,
            row.get::<_, i64>(10)?,
            row.get::<_, i64>(11)?,
        ))
    })()
    .map_err(get)?;
    let (seq, tx, space, collection, id, op, hlc, base_version, state, acked, attempts, created) =
        cols;
    let op_bytes = op.len() as u64;
    let op: Op = serde_json::from_str(&op).map_err(StoreError::bad_json("outbox mutation"))?;
    let state = match state {
        QUEUED => MutationState::Queued,
        SENDING => MutationState::Sending,
        _ => MutationState::Acked {
            version: acked.map(|v| v as u64),
        },
    };
    Ok(OutboxEntry {
        mutation: Mutation {
            seq: seq as u64,
            tx: tx as u64,
            key: key_from_row(&space, &collection, &id)?,
            op,
            hlc: Hlc::from_u64(hlc as u64),
            base_version: base_version as u64,
        },
        state,
        attempts: attempts as u32,
        created_at: created as u64,
        op_bytes,
    })
}

/// Up to `max` mutations after `after_seq`, cut at a transaction boundary so a batch holds
/// whole transactions only. A single transaction larger than `max` comes whole, alone.
pub(crate) fn batch(conn: &Connection, after_seq: u64, max: usize) -> Result<Vec<OutboxEntry>> {
    let max = max.max(1);
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2"
        ))
        .map_err(StoreError::sql("read the outbox"))?;
    let mut rows = stmt
        .query(params![after_seq as i64, max as i64 + 1])
        .map_err(StoreError::sql("read the outbox"))?;
    let mut out = Vec::with_capacity(max.min(4096));
    while let Some(row) = rows.next().map_err(StoreError::sql("read the outbox"))? {
        out.push(entry_from_row(row)?);
    }
    drop(rows);
    if out.len() <= max {
        return Ok(out);
    }
    let overflow = out.pop().map(|e| e.mutation.tx);
    let last_tx = out.last().map(|e| e.mutation.tx);
    if overflow != last_tx {
        return Ok(out);
    }
    let first_tx = out.first().map(|e| e.mutation.tx);
    if first_tx != last_tx {
        // Drop the trailing, incomplete transaction; it leads the next batch.
        out.retain(|e| Some(e.mutation.tx) != last_tx);
        return Ok(out);
    }
    // One transaction bigger than `max`: return it whole.
    let last_seq = out.last().map_or(after_seq, |e| e.mutation.seq);
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM outbox WHERE seq > ?1 AND tx = ?2 ORDER BY seq"
        ))
        .map_err(StoreError::sql("read the outbox"))?;
    let mut rows = stmt
        .query(params![last_seq as i64, last_tx.unwrap_or(0) as i64])
        .map_err(StoreError::sql("read the outbox"))?;
    while let Some(row) = rows.next().map_err(StoreError::sql("read the outbox"))? {
        out.push(entry_from_row(row)?);
    }
    Ok(out)
}

/// Streams the outbox in seq order, one row in memory at a time.
pub(crate) fn for_each(
    conn: &Connection,
    mut f: impl FnMut(OutboxEntry) -> ControlFlow<()>,
) -> Result<()> {
    let mut stmt = conn
        .prepare(&format!("SELECT {COLUMNS} FROM outbox ORDER BY seq"))
        .map_err(StoreError::sql("read the outbox"))?;
    let mut rows = stmt.query([]).map_err(StoreError::sql("read the outbox"))?;
    while let Some(row) = rows.next().map_err(StoreError::sql("read the outbox"))? {
        if f(entry_from_row(row)?).is_break() {
            break;
        }
    }
    Ok(())
}

pub(crate) fn state(conn: &Connection, seq: u64, last_seq: u64) -> Result<Option<MutationState>> {
    if seq == 0 || seq > last_seq {
        return Ok(None);
    }
    let row: Option<(i64, Option<i64>)> = conn
        .prepare_cached("SELECT state, acked_version FROM outbox WHERE seq = ?1")
        .and_then(|mut s| {
            s.query_row([seq as i64], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(StoreError::sql("read a mutation's state"))?;
    if let Some((state, version)) = row {
        return Ok(Some(match state {
            QUEUED => MutationState::Queued,
            SENDING => MutationState::Sending,
            _ => MutationState::Acked {
                version: version.map(|v| v as u64),
            },
        }));
    }
    let rejected: Option<(String, String)> = conn
        .prepare_cached("SELECT code, message FROM rejections WHERE seq = ?1")
        .and_then(|mut s| {
            s.query_row([seq as i64], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(StoreError::sql("read a mutation's state"))?;
    Ok(Some(match rejected {
        Some((code, message)) => MutationState::Rejected {
            code: crate::rejections::parse_code(&code),
            message,
        },
        None => MutationState::Confirmed,
    }))
}

/// Counters for status displays, answered from indexes (no outbox scan is kept in memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxStats {
    /// Mutations not yet confirmed.
    pub pending: u64,
    /// Wall-clock creation time of the oldest of them, ms since the epoch.
    pub oldest_created_at: Option<u64>,
    /// Highest seq handed out so far.
    pub last_seq: u64,
}

pub(crate) fn stats(conn: &Connection, last_seq: u64) -> Result<OutboxStats> {
    let (pending, oldest): (i64, Option<i64>) = conn
        .prepare_cached(
            "SELECT count(*), (SELECT created_at FROM outbox ORDER BY seq LIMIT 1) FROM outbox",
        )
        .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?))))
        .map_err(StoreError::sql("count the outbox"))?;
    Ok(OutboxStats {
        pending: pending as u64,
        oldest_created_at: oldest.map(|v| v as u64),
        last_seq,
    })
}

/// What is left to push: mutations after the server's `acked_through`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnpushedStats {
    /// How many.
    pub mutations: u64,
    /// Their size as JSON (the `op` bodies), an estimate of the bytes to upload.
    pub bytes: u64,
}

pub(crate) fn unpushed(conn: &Connection, acked_through: u64) -> Result<UnpushedStats> {
    conn.prepare_cached("SELECT count(*), coalesce(sum(length(op)), 0) FROM outbox WHERE seq > ?1")
        .and_then(|mut s| {
            s.query_row([acked_through as i64], |r| {
                Ok(UnpushedStats {
                    mutations: r.get::<_, i64>(0)? as u64,
                    bytes: r.get::<_, i64>(1)? as u64,
                })
            })
        })
        .map_err(StoreError::sql("count unpushed mutations"))
}
