//! What the sync engine feeds back into the store: push results and pulled changes.
//!
//! Both run in one SQLite transaction each, so a crash leaves either the old or the new state.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{params, Connection, OptionalExtension};
use tidesync_core::RecordState;
use tidesync_protocol::{
    ClientId, CollectionName, PullResponse, PushOutcome, PushResponse, RecordKey, SpaceName,
};

use crate::outbox::{ACKED, QUEUED, SENDING};
use crate::records::{key_from_row, key_params, recompute};
use crate::write::Counters;
use crate::{meta, Result, StoreError};

/// What [`crate::Store::apply_push_response`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushApplied {
    /// Seqs now acknowledged.
    pub acked: Vec<u64>,
    /// Seqs the server refused (moved to the rejections table, local effect rolled back).
    pub rejected: Vec<u64>,
    /// New conflict rows recorded.
    pub conflicts: usize,
}

/// What [`crate::Store::apply_pull`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullApplied {
    /// Records whose base changed, per (space, collection): for live queries.
    pub changed: BTreeMap<(SpaceName, CollectionName), usize>,
    /// Seqs confirmed by this pull (they left the outbox).
    pub confirmed: Vec<u64>,
}

/// Drops the base and the cursor: every record's view becomes its pending mutations alone
/// (records without any disappear until the next pull brings them back). For a cursor the
/// server can no longer serve.
pub(crate) fn reset_base(conn: &Connection, client: &ClientId) -> Result<()> {
    conn.execute_batch(
        "DELETE FROM cursor;
         DELETE FROM records WHERE pending = 0;
         UPDATE records SET base = NULL, base_version = 0;",
    )
    .map_err(StoreError::sql("reset the base"))?;
    let mut stmt = conn
        .prepare("SELECT space, collection, id FROM records")
        .map_err(StoreError::sql("reset the base"))?;
    let keys = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(StoreError::sql("reset the base"))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(StoreError::sql("reset the base"))?;
    drop(stmt);
    for (space, collection, id) in keys {
        recompute(conn, &key_from_row(&space, &collection, &id)?, client)?;
    }
    Ok(())
}

/// Marks queued mutations up to `through_seq` as being sent (attempts + 1).
pub(crate) fn mark_sending(conn: &Connection, from_seq: u64, through_seq: u64) -> Result<usize> {
    conn.prepare_cached(
        "UPDATE outbox SET state = ?1, attempts = attempts + 1
         WHERE seq BETWEEN ?2 AND ?3 AND state IN (?4, ?1)",
    )
    .and_then(|mut s| {
        s.execute(params![
            SENDING,
            from_seq as i64,
            through_seq as i64,
            QUEUED
        ])
    })
    .map_err(StoreError::sql("mark mutations as sending"))
}

/// Puts `sending` mutations back to `queued` (after a failed push; also done at open, since a
/// push in flight when the app died has no answer coming).
pub(crate) fn requeue(conn: &Connection) -> Result<usize> {
    conn.prepare_cached("UPDATE outbox SET state = ?1 WHERE state = ?2")
        .and_then(|mut s| s.execute(params![QUEUED, SENDING]))
        .map_err(StoreError::sql("requeue mutations"))
}

pub(crate) fn apply_push_response(
    conn: &Connection,
    client: &ClientId,
    response: &PushResponse,
    now_ms: u64,
) -> Result<PushApplied> {
    // Rejected rows leave the outbox: pin the counters in the clock row first.
    Counters::load(conn)?.save(conn)?;
    let mut applied = PushApplied::default();
    let mut touched = BTreeSet::new();
    for result in &response.results {
        let seq = result.seq as i64;
        match &result.outcome {
            PushOutcome::Applied { version } | PushOutcome::Merged { version, .. } => {
                let n = conn
                    .prepare_cached(
                        "UPDATE outbox SET state = ?1, acked_version = ?2 WHERE seq = ?3",
                    )
                    .and_then(|mut s| s.execute(params![ACKED, *version as i64, seq]))
                    .map_err(StoreError::sql("acknowledge a mutation"))?;
                if n == 0 {
                    continue; // already confirmed by a pull: nothing left to track
                }
                applied.acked.push(result.seq);
                if let PushOutcome::Merged { conflicts, .. } = &result.outcome {
                    if !conflicts.is_empty() {
                        let fields = serde_json::to_string(conflicts)
                            .map_err(StoreError::bad_json("conflict"))?;
                        conn.prepare_cached(
                            "INSERT INTO conflicts (seq, space, collection, record_id, version, fields, created_at)
                             SELECT seq, space, collection, id, ?2, ?3, ?4 FROM outbox WHERE seq = ?1",
                        )
                        .and_then(|mut s| s.execute(params![seq, *version as i64, fields, now_ms as i64]))
                        .map_err(StoreError::sql("record a conflict"))?;
                        applied.conflicts += 1;
                    }
                }
            }
            PushOutcome::Rejected { code, message } => {
                let key: Option<(String, String, String)> = conn
                    .prepare_cached("SELECT space, collection, id FROM outbox WHERE seq = ?1")
                    .and_then(|mut s| {
                        s.query_row([seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                            .optional()
                    })
                    .map_err(StoreError::sql("read a rejected mutation"))?;
                let Some((space, collection, id)) = key else {
                    continue;
                };
                conn.prepare_cached(
                    "INSERT INTO rejections (seq, tx, space, collection, id, op, hlc, base_version, code, message, rejected_at)
                     SELECT seq, tx, space, collection, id, op, hlc, base_version, ?2, ?3, ?4 FROM outbox WHERE seq = ?1",
                )
                .and_then(|mut s| s.execute(params![seq, code.as_str(), message, now_ms as i64]))
                .map_err(StoreError::sql("record a rejection"))?;
                conn.prepare_cached("DELETE FROM outbox WHERE seq = ?1")
                    .and_then(|mut s| s.execute([seq]))
                    .map_err(StoreError::sql("remove a rejected mutation"))?;
                touched.insert(key_from_row(&space, &collection, &id)?);
                applied.rejected.push(result.seq);
            }
        }
    }
    // Duplicates the server skipped (their first response was lost) are acknowledged too;
    // their version is unknown, so a complete pull will confirm them.
    conn.prepare_cached("UPDATE outbox SET state = ?1 WHERE seq <= ?2 AND state != ?1")
        .and_then(|mut s| s.execute(params![ACKED, response.acked_through as i64]))
        .map_err(StoreError::sql("acknowledge duplicates"))?;
    meta::raise_u64(conn, meta::ACKED_THROUGH, response.acked_through)?;
    for key in &touched {
        recompute(conn, key, client)?;
    }
    Ok(applied)
}

pub(crate) fn apply_pull(
    conn: &Connection,
    client: &ClientId,
    response: &PullResponse,
    now_ms: u64,
) -> Result<PullApplied> {
    let mut applied = PullApplied::default();
    let mut counters = Counters::load(conn)?;
    // Confirmed rows leave the outbox: pin the counters in the clock row first.
    counters.save(conn)?;
    for change in &response.changes {
        let state = RecordState::from_wire(change.doc.as_ref(), &change.stamps).map_err(|e| {
            StoreError::InvalidInput(format!(
                "the server sent an inconsistent change for {}/{}/{}: {e}",
                change.space, change.collection, change.id
            ))
        })?;
        if let Some(stamp) = state.max_stamp() {
            counters.clock.observe(stamp.hlc);
        }
        let key = RecordKey::new(
            change.space.clone(),
            change.collection.clone(),
            change.id.clone(),
        );
        // A deleted record without pending work leaves the table; anything else stores the
        // new base, keeps the view when local work is pending, and is rebased then.
        let pending = if change.doc.is_none() {
            let pending: i64 = conn
                .prepare_cached(
                    "SELECT pending FROM records WHERE space = ?1 AND collection = ?2 AND id = ?3",
                )
                .and_then(|mut s| s.query_row(key_params(&key), |r| r.get(0)).optional())
                .map_err(StoreError::sql("read a record"))?
                .unwrap_or(0);
            if pending == 0 {
                conn.prepare_cached(
                    "DELETE FROM records WHERE space = ?1 AND collection = ?2 AND id = ?3",
                )
                .and_then(|mut s| s.execute(key_params(&key)))
                .map_err(StoreError::sql("remove a deleted record"))?;
                None
            } else {
                Some(store_base(conn, &key, &state, None, change.version)?)
            }
        } else {
            let doc = serde_json::to_string(&change.doc)
                .map_err(StoreError::bad_json("record document"))?;
            Some(store_base(conn, &key, &state, Some(&doc), change.version)?)
        };
        if pending.is_some_and(|p| p > 0) {
            recompute(conn, &key, client)?; // rebase: view = new base + pending
        }
        *applied
            .changed
            .entry((change.space.clone(), change.collection.clone()))
            .or_default() += 1;
    }
    for (space, version) in &response.cursor {
        conn.prepare_cached(
            "INSERT INTO cursor (space, version) VALUES (?1, ?2)
             ON CONFLICT DO UPDATE SET version = max(version, excluded.version)",
        )
        .and_then(|mut s| s.execute(params![space.as_str(), *version as i64]))
        .map_err(StoreError::sql("advance the pull cursor"))?;
    }
    applied.confirmed = confirm(
        conn,
        client,
        (!response.has_more).then_some(response.acked_through),
    )?;
    counters.save(conn)?;
    meta::raise_u64(conn, meta::ACKED_THROUGH, response.acked_through)?;
    if !response.has_more {
        meta::set(conn, meta::LAST_SYNCED_AT, &now_ms.to_string())?;
        meta::set(conn, meta::HAS_SYNCED, "1")?;
    }
    Ok(applied)
}

/// Upserts a record's base (and its view, unless local work is pending); returns the
/// record's pending count, read by the same statement.
fn store_base(
    conn: &Connection,
    key: &RecordKey,
    state: &RecordState,
    doc: Option<&str>,
    version: u64,
) -> Result<i64> {
    let base = serde_json::to_string(state).map_err(StoreError::bad_json("record base"))?;
    conn.prepare_cached(
        "INSERT INTO records (space, collection, id, doc, base, base_version, pending)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)
         ON CONFLICT DO UPDATE SET base = excluded.base, base_version = excluded.base_version,
            doc = CASE WHEN pending = 0 THEN excluded.doc ELSE doc END
         RETURNING pending",
    )
    .and_then(|mut s| {
        s.query_row(
            params![
                key.space.as_str(),
                key.collection.as_str(),
                key.id.as_str(),
                doc,
                base,
                version as i64
            ],
            |r| r.get(0),
        )
    })
    .map_err(StoreError::sql("store a pulled record"))
}

/// Removes from the outbox every mutation the base now contains: acked at a version the
/// cursor has passed, or (after a complete pull) at or below the server's `acked_through`.
fn confirm(conn: &Connection, client: &ClientId, acked_through: Option<u64>) -> Result<Vec<u64>> {
    let through = acked_through.map_or(-1, |v| v as i64);
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, space, collection, id FROM outbox
             WHERE seq <= ?1
                OR (state = ?2 AND acked_version IS NOT NULL
                    AND acked_version <= (SELECT version FROM cursor WHERE cursor.space = outbox.space))
             ORDER BY seq",
        )
        .map_err(StoreError::sql("find confirmed mutations"))?;
    let rows = stmt
        .query_map(params![through, ACKED], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })
        .map_err(StoreError::sql("find confirmed mutations"))?;
    let mut seqs = Vec::new();
    let mut keys = BTreeSet::new();
    for row in rows {
        let (seq, space, collection, id) =
            row.map_err(StoreError::sql("find confirmed mutations"))?;
        seqs.push(seq as u64);
        keys.insert(key_from_row(&space, &collection, &id)?);
    }
    drop(stmt);
    let mut delete = conn
        .prepare_cached("DELETE FROM outbox WHERE seq = ?1")
        .map_err(StoreError::sql("remove confirmed mutations"))?;
    for seq in &seqs {
        delete
            .execute([*seq as i64])
            .map_err(StoreError::sql("remove confirmed mutations"))?;
    }
    for key in &keys {
        recompute(conn, key, client)?;
    }
    Ok(seqs)
}
