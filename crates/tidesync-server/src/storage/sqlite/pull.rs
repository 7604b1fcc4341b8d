//! Reading one page of changes, in one read transaction.

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::value::RawValue;
use tidesync_protocol::{CollectionName, Cursor, PullResponse, RawChange, RecordId, SpaceName};

use crate::storage::sqlite::push::space_version;
use crate::storage::{PullInput, StorageError};

/// `remaining` is counted exactly when a space's version distance (its version minus the new
/// cursor) is at most this; beyond it, it is estimated from the page just read, so a large
/// pull never pays for counting.
pub const EXACT_REMAINING: u64 = 1_000;

fn internal(context: &'static str) -> impl Fn(rusqlite::Error) -> StorageError {
    move |e| StorageError::Internal(format!("{context}: {e}"))
}

/// Reads one page. Documents and stamps are handed out as stored (checked to be JSON, never
/// parsed into a record state): the response serializes exactly like typed changes.
pub(crate) fn pull(
    conn: &Connection,
    input: &PullInput,
) -> Result<PullResponse<RawChange>, StorageError> {
    let tx = conn
        .unchecked_transaction()
        .map_err(internal("begin a read"))?;
    let owner: Option<(String, i64)> = tx
        .prepare_cached("SELECT user_id, last_seq FROM clients WHERE client_id = ?1")
        .and_then(|mut s| {
            s.query_row([input.client_id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(internal("read the client"))?;
    let acked_through = match owner {
        Some((user, _)) if user != input.user => {
            return Err(StorageError::ForeignClient(input.client_id.clone()))
        }
        Some((_, seq)) => seq as u64,
        None => 0,
    };
    let mut changes = Vec::new();
    let mut cursor = Cursor::new();
    let mut remaining = 0u64;
    let mut budget = u64::from(input.limit.max(1));
    for space in &input.spaces {
        let current = space_version(&tx, space)?;
        let from = input.cursor.get(space).copied().unwrap_or(0);
        if from > current {
            return Err(StorageError::CursorReset {
                space: space.clone(),
                cursor: from,
                current,
            });
        }
        let mut stmt = tx
            .prepare_cached(
                "SELECT collection, id, version, doc, stamps FROM records
                 WHERE space = ?1 AND version > ?2 ORDER BY version LIMIT ?3",
            )
            .map_err(internal("read changes"))?;
        let mut rows = stmt
            .query(params![space.as_str(), from as i64, budget as i64])
            .map_err(internal("read changes"))?;
        let mut taken = 0u64;
        let mut last = from;
        while let Some(row) = rows.next().map_err(internal("read changes"))? {
            let change = raw_change(space, row)?;
            last = change.version;
            changes.push(change);
            taken += 1;
        }
        // Everything up to `current` was read if the page did not fill: skip the gap.
        let next = if taken < budget { current } else { last };
        budget -= taken;
        cursor.insert(space.clone(), next);
        if next < current {
            remaining += remaining_after(&tx, space, next, current, taken, last - from)?;
        }
    }
    Ok(PullResponse {
        changes,
        cursor,
        has_more: remaining > 0,
        remaining,
        acked_through,
    })
}

/// How many changes of `space` wait after `next`. A version distance of at most
/// [`EXACT_REMAINING`] is counted (cheap at that size). Beyond it, counting would cost as much
/// as reading the changes, so the page just read (`taken` changes over `span` versions) gives
/// the density of live versions (a record changed twice keeps only its last version): the
/// estimate is exact when no record changed twice, and never above the distance.
fn remaining_after(
    tx: &rusqlite::Transaction<'_>,
    space: &SpaceName,
    next: u64,
    current: u64,
    taken: u64,
    span: u64,
) -> Result<u64, StorageError> {
    let distance = current - next;
    if distance > EXACT_REMAINING {
        let estimate = (u128::from(distance) * u128::from(taken)).div_ceil(u128::from(span.max(1)));
        return Ok((estimate as u64).clamp(1, distance));
    }
    let counted: i64 = tx
        .prepare_cached("SELECT count(*) FROM records WHERE space = ?1 AND version > ?2")
        .and_then(|mut s| s.query_row(params![space.as_str(), next as i64], |r| r.get(0)))
        .map_err(internal("count remaining changes"))?;
    Ok(counted as u64)
}

/// One stored row (`collection, id, version, doc, stamps`) of `space` as a change.
fn raw_change(space: &SpaceName, row: &rusqlite::Row<'_>) -> Result<RawChange, StorageError> {
    let collection: String = row.get(0).map_err(internal("read changes"))?;
    let id: String = row.get(1).map_err(internal("read changes"))?;
    let version = row.get::<_, i64>(2).map_err(internal("read changes"))? as u64;
    let doc: Option<String> = row.get(3).map_err(internal("read changes"))?;
    let stamps: String = row.get(4).map_err(internal("read changes"))?;
    let invalid = |what: &str, e: &dyn std::fmt::Display| {
        StorageError::Internal(format!(
            "stored {what} of the record at version {version} of space {space} is invalid: {e}"
        ))
    };
    let collection = CollectionName::new(collection).map_err(|e| invalid("collection", &e))?;
    let id = RecordId::new(id).map_err(|e| invalid("id", &e))?;
    let bad = |what: &str, e: serde_json::Error| {
        StorageError::Internal(format!(
            "stored {what} of {space}/{collection}/{id} is not JSON: {e}"
        ))
    };
    // `from_string` checks the text is one JSON value and keeps the allocation (no copy).
    let doc = doc
        .map(RawValue::from_string)
        .transpose()
        .map_err(|e| bad("document", e))?;
    let stamps = RawValue::from_string(stamps).map_err(|e| bad("stamps", e))?;
    Ok(RawChange {
        space: space.clone(),
        collection,
        id,
        version,
        deleted: doc.is_none(),
        doc,
        stamps,
    })
}
