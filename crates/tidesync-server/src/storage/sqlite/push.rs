//! Applying one push inside the writer's transaction: SQLite's reads and writes around
//! [`plan`](crate::storage::plan).

use std::collections::BTreeMap;

use rusqlite::{params, Connection, OptionalExtension};
use tidesync_core::HlcClock;
use tidesync_protocol::{PushResponse, PushResult, RecordKey, SpaceName};

use crate::config::MergeRules;
use crate::rules::ServerRecord;
use crate::storage::plan::{self, ClientRow, Loaded, RecordWrite, Stamping, StoredRecord};
use crate::storage::{PushInput, StorageError};

fn internal(context: &'static str) -> impl Fn(rusqlite::Error) -> StorageError {
    move |e| StorageError::Internal(format!("{context}: {e}"))
}

/// What the writer keeps between pushes of one group commit.
pub(crate) struct WriterContext<'a> {
    pub rules: &'a MergeRules,
    pub clock: &'a mut HlcClock,
    pub now_ms: u64,
    /// Spaces whose version moved in this push, with the newest version (also the cache of
    /// their current versions: the `spaces` rows are written once, at the end of the push).
    pub moved: &'a mut BTreeMap<SpaceName, u64>,
}

/// Applies `input` on `conn` (inside a transaction and a savepoint the caller owns): reads
/// what the push needs, lets [`plan`] decide, writes the plan. On `Err` the caller rolls the
/// savepoint back.
pub(crate) fn apply_push(
    conn: &Connection,
    input: &PushInput,
    ctx: &mut WriterContext<'_>,
) -> Result<PushResponse, StorageError> {
    let client = input.client_id.as_str();
    let row = conn
        .prepare_cached("SELECT user_id, last_seq FROM clients WHERE client_id = ?1")
        .and_then(|mut s| {
            s.query_row([client], |r| {
                Ok(ClientRow {
                    user: r.get(0)?,
                    last_seq: r.get::<_, i64>(1)? as u64,
                })
            })
            .optional()
        })
        .map_err(internal("read the client"))?;
    let standing = plan::standing(row, input)?;
    let needs = plan::needs(input, standing);
    let mut loaded = Loaded {
        rejected_again: match needs.retried {
            Some((low, high)) => rejected_again(conn, input, low, high)?,
            None => Vec::new(),
        },
        ..Loaded::default()
    };
    for key in &needs.records {
        if let Some(record) = load(conn, key)? {
            loaded.records.insert(key.clone(), record);
        }
    }
    for space in &needs.spaces {
        loaded
            .versions
            .insert(space.clone(), space_version(conn, space)?);
    }
    let mut stamping = Stamping {
        clock: ctx.clock,
        now_ms: ctx.now_ms,
    };
    let planned = plan::plan(input, standing, loaded, ctx.rules, &mut stamping);
    if planned.register {
        conn.prepare_cached(
            "INSERT INTO clients (client_id, user_id, last_seq) VALUES (?1, ?2, 0)",
        )
        .and_then(|mut s| s.execute(params![client, input.user]))
        .map_err(internal("register the client"))?;
    }
    for write in &planned.writes {
        store(conn, write, planned.at_ms)?;
    }
    for refusal in &planned.refusals {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO rejected (client_id, seq, code, message, rejected_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut s| {
            s.execute(params![
                client,
                refusal.seq as i64,
                refusal.code.as_str(),
                refusal.message,
                planned.at_ms as i64
            ])
        })
        .map_err(internal("remember a rejection"))?;
    }
    conn.prepare_cached("UPDATE clients SET last_seq = ?2, last_push_at = ?3 WHERE client_id = ?1")
        .and_then(|mut s| {
            s.execute(params![
                client,
                planned.last_seq() as i64,
                planned.at_ms as i64
            ])
        })
        .map_err(internal("advance last_seq"))?;
    for (space, version) in &planned.moved {
        conn.prepare_cached(
            "INSERT INTO spaces (space, version) VALUES (?1, ?2)
             ON CONFLICT DO UPDATE SET version = excluded.version",
        )
        .and_then(|mut s| s.execute(params![space.as_str(), *version as i64]))
        .map_err(internal("bump the space version"))?;
        ctx.moved.insert(space.clone(), *version);
    }
    Ok(planned.response)
}

/// The remembered rejections of the retried mutations (`seq` in `low..=high`).
fn rejected_again(
    conn: &Connection,
    input: &PushInput,
    low: u64,
    high: u64,
) -> Result<Vec<PushResult>, StorageError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, code, message FROM rejected
             WHERE client_id = ?1 AND seq BETWEEN ?2 AND ?3 ORDER BY seq",
        )
        .map_err(internal("read remembered rejections"))?;
    let rows = stmt
        .query_map(
            params![input.client_id.as_str(), low as i64, high as i64],
            |r| {
                Ok(plan::remembered(
                    r.get::<_, i64>(0)? as u64,
                    &r.get::<_, String>(1)?,
                    r.get(2)?,
                ))
            },
        )
        .map_err(internal("read remembered rejections"))?;
    rows.collect::<Result<_, _>>()
        .map_err(internal("read remembered rejections"))
}

pub(crate) fn space_version(conn: &Connection, space: &SpaceName) -> Result<u64, StorageError> {
    let v: Option<i64> = conn
        .prepare_cached("SELECT version FROM spaces WHERE space = ?1")
        .and_then(|mut s| s.query_row([space.as_str()], |r| r.get(0)).optional())
        .map_err(internal("read a space version"))?;
    Ok(v.unwrap_or(0) as u64)
}

/// Reads a record (decoded straight from SQLite's buffers); `None` for a record never
/// written.
fn load(conn: &Connection, key: &RecordKey) -> Result<Option<ServerRecord>, StorageError> {
    let bad = |e: rusqlite::types::FromSqlError| {
        StorageError::Internal(format!("stored record {key} is invalid: {e}"))
    };
    let mut stmt = conn
        .prepare_cached(
            "SELECT version, doc, stamps, versions, echo FROM records
             WHERE space = ?1 AND collection = ?2 AND id = ?3",
        )
        .map_err(internal("read a record"))?;
    let mut rows = stmt
        .query([key.space.as_str(), key.collection.as_str(), key.id.as_str()])
        .map_err(internal("read a record"))?;
    let Some(row) = rows.next().map_err(internal("read a record"))? else {
        return Ok(None);
    };
    let text = |i: usize| row.get_ref(i).map_err(internal("read a record"));
    let version: i64 = row.get(0).map_err(internal("read a record"))?;
    let stored = StoredRecord {
        version: version as u64,
        doc: text(1)?.as_str_or_null().map_err(bad)?,
        stamps: text(2)?.as_str().map_err(bad)?,
        versions: text(3)?.as_str().map_err(bad)?,
        echo: text(4)?.as_str_or_null().map_err(bad)?,
    };
    plan::decode_record(key, stored).map(Some)
}

/// Writes a record back in its wire form, at its new version, by a push at `at_ms`. Rows are
/// keyed by (space, version), so the row stored at `stored_at` (0: none) moves.
fn store(conn: &Connection, write: &RecordWrite, at_ms: u64) -> Result<(), StorageError> {
    let RecordWrite {
        key,
        record,
        stored_at,
    } = write;
    let encoded = plan::encode_record(key, record)?;
    if *stored_at > 0 {
        conn.prepare_cached("DELETE FROM records WHERE space = ?1 AND version = ?2")
            .and_then(|mut s| s.execute(params![key.space.as_str(), *stored_at as i64]))
            .map_err(internal("move a record"))?;
    }
    conn.prepare_cached(
        "INSERT INTO records
             (space, version, collection, id, doc, stamps, versions, echo, deleted_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut s| {
        s.execute(params![
            key.space.as_str(),
            record.version as i64,
            key.collection.as_str(),
            key.id.as_str(),
            encoded.wire.doc,
            encoded.wire.stamps,
            encoded.versions,
            encoded.echo,
            plan::deleted_at(record, at_ms)
        ])
    })
    .map_err(internal("write a record"))?;
    Ok(())
}
