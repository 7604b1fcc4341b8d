//! Reading one page of changes, in one read transaction.

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::value::RawValue;
use tidesync_protocol::{CollectionName, Cursor, PullResponse, RawChange, RecordId, SpaceName};

use crate::storage::sqlite::push::space_version;
use crate::storage::{PullInput, StorageError};

/// `remaining` is counted exactly up to this many changes per space; beyond it, the space's
/// version distance is reported (an upper bound), so counting never costs more than a page.
pub const EXACT_REMAINING: u64 = 10_000;

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
            let counted: i64 = tx
                .prepare_cached(
                    "SELECT count(*) FROM (SELECT 1 FROM records WHERE space = ?1 AND version > ?2 LIMIT ?3)",
                )
                .and_then(|mut s| s.query_row(params![space.as_str(), next as i64, EXACT_REMAINING as i64 + 1], |r| r.get(0)))
                .map_err(internal("count remaining changes"))?;
            remaining += if counted as u64 > EXACT_REMAINING {
                current - next
            } else {
                counted as u64
            };
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
