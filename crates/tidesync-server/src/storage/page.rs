//! The rules of a pull page, for every backend: who may pull as a client, when a cursor is
//! ahead of its space, where the new cursor goes, how `remaining` is counted or estimated,
//! and how a stored row becomes a change. A backend runs the reads in one snapshot and asks
//! these functions what they mean.

use serde_json::value::RawValue;
use tidesync_protocol::{
    CollectionName, Cursor, Echo, PullResponse, RawChange, RecordId, RecordKey, SpaceName,
};

use crate::storage::plan::ClientRow;
use crate::storage::{EchoChain, PullInput, StorageError};

/// `remaining` is counted exactly when a space's version distance (its version minus the new
/// cursor) is at most this; beyond it, it is estimated from the page just read, so a large
/// pull never pays for counting.
pub const EXACT_REMAINING: u64 = 1_000;

/// The pulling client's `acked_through`: its `last_seq`, 0 if it never pushed. A client id
/// registered to another user is refused.
pub(crate) fn acked_through(
    row: Option<ClientRow>,
    input: &PullInput,
) -> Result<u64, StorageError> {
    match row {
        Some(row) if row.user != input.user => {
            Err(StorageError::ForeignClient(input.client_id.clone()))
        }
        Some(row) => Ok(row.last_seq),
        None => Ok(0),
    }
}

/// Where a space stands when a pull reads it: its version, and its horizon (the newest
/// version of its pruned tombstones, 0 if none were pruned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpacePosition {
    pub version: u64,
    pub horizon: u64,
}

/// Whether a pull from `from` is behind the horizon, so that the backend must look up where
/// the pulling client's download of the space began ([`check_cursor`]'s `began_at`).
pub(crate) fn behind_horizon(from: u64, at: SpacePosition) -> bool {
    from > 0 && from < at.horizon
}

/// The horizon to record for the pulling client when it downloads a space from scratch
/// (`from` 0) past pruned history: the pages after this one may carry cursors below it.
pub(crate) fn download_begins(from: u64, at: SpacePosition) -> Option<u64> {
    (from == 0 && at.horizon > 0).then_some(at.horizon)
}

/// A cursor the space cannot serve means the client must bootstrap again: one ahead of its
/// space (a server restored from an older backup, another server), or one behind its
/// horizon (a delete after it was pruned, so the client may still hold the record).
///
/// A cursor behind the horizon is served all the same when it belongs to a download the
/// client began at this very horizon (`began_at`, recorded by [`download_begins`]): that
/// download read the space after every delete up to the horizon was pruned, so it never
/// held those records (its pages below the horizon are the old live records). Without that,
/// any download longer than a page would be reset at its second page, forever. A cursor of
/// 0 is such a download's start.
pub(crate) fn check_cursor(
    space: &SpaceName,
    from: u64,
    at: SpacePosition,
    began_at: Option<u64>,
) -> Result<(), StorageError> {
    if from > at.version {
        return Err(StorageError::CursorReset {
            space: space.clone(),
            cursor: from,
            current: at.version,
        });
    }
    if behind_horizon(from, at) && began_at != Some(at.horizon) {
        return Err(StorageError::CursorBehindHorizon {
            space: space.clone(),
            cursor: from,
            horizon: at.horizon,
        });
    }
    Ok(())
}

/// What one space's part of a page says, once its rows were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpaceRead {
    /// The space's new cursor.
    pub next: u64,
    /// Changes waiting after `next`.
    pub remaining: Remaining,
}

/// How many changes wait after a space's new cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Remaining {
    /// Known without reading: none, or this estimate.
    Known(u64),
    /// Close enough to count exactly: the backend counts rows with `version > next`.
    Count,
}

/// A space read from `from` (its version is `current`) with a budget of `budget` rows, which
/// gave `taken` rows, the last at version `last` (`from` if none).
///
/// If the page did not fill, everything up to `current` was read and the cursor skips the
/// gap. Beyond [`EXACT_REMAINING`] versions, counting would cost as much as reading the
/// changes, so the page just read (`taken` changes over its span of versions) gives the
/// density of live versions (a record changed twice keeps only its last version): the
/// estimate is exact when no record changed twice, and never above the distance.
pub(crate) fn after_read(from: u64, current: u64, budget: u64, taken: u64, last: u64) -> SpaceRead {
    let next = if taken < budget { current } else { last };
    let distance = current - next.min(current);
    let remaining = if distance == 0 {
        Remaining::Known(0)
    } else if distance > EXACT_REMAINING {
        let span = (last - from).max(1);
        let estimate = (u128::from(distance) * u128::from(taken)).div_ceil(u128::from(span));
        Remaining::Known((estimate as u64).clamp(1, distance))
    } else {
        Remaining::Count
    };
    SpaceRead { next, remaining }
}

/// The entries of one page as a backend reads them: changes, and (protocol 2) echoes of
/// the rows the pulling client wrote last.
pub(crate) struct Entries<'a> {
    input: &'a PullInput,
    changes: Vec<RawChange>,
    echoes: Vec<Echo>,
}

impl<'a> Entries<'a> {
    pub(crate) fn new(input: &'a PullInput) -> Entries<'a> {
        Entries {
            input,
            changes: Vec::new(),
            echoes: Vec::new(),
        }
    }

    /// One stored row of `space` in the cursor's range: an echo if the pulling client
    /// asked for echoes and wrote it last (its chain), else a change.
    pub(crate) fn row(&mut self, space: &SpaceName, row: StoredRow) -> Result<(), StorageError> {
        match row.echo.as_deref() {
            Some(text)
                if self.input.echoes && EchoChain::written_by(text, &self.input.client_id) =>
            {
                let chain = EchoChain::decode(text)?;
                if chain.at != row.version {
                    // Left behind by a write outside the chain rules: send the record.
                    return self.change(space, row);
                }
                let key = RecordKey::new(
                    space.clone(),
                    collection_name(space, row.version, row.collection)?,
                    record_id(space, row.version, row.id)?,
                );
                self.echoes.push(chain.echo(key, row.version));
                Ok(())
            }
            _ => self.change(space, row),
        }
    }

    /// A row to send in full (a row read for [`PullInput::refetch`] always is).
    pub(crate) fn change(&mut self, space: &SpaceName, row: StoredRow) -> Result<(), StorageError> {
        self.changes.push(raw_change(space, row)?);
        Ok(())
    }

    /// The response.
    pub(crate) fn finish(
        self,
        cursor: Cursor,
        remaining: u64,
        acked_through: u64,
    ) -> PullResponse<RawChange> {
        PullResponse {
            changes: self.changes,
            echoes: self.echoes,
            cursor,
            has_more: remaining > 0,
            remaining,
            acked_through,
        }
    }
}

/// One stored row as a backend reads it: `doc` is `None` for a deleted record, `echo` the
/// stored chain text ([`EchoChain`]).
pub(crate) struct StoredRow {
    pub collection: String,
    pub id: String,
    pub version: u64,
    pub doc: Option<String>,
    pub stamps: String,
    pub echo: Option<String>,
}

fn invalid(space: &SpaceName, version: u64, what: &str, e: &dyn std::fmt::Display) -> StorageError {
    StorageError::Internal(format!(
        "stored {what} of the record at version {version} of space {space} is invalid: {e}"
    ))
}

fn collection_name(
    space: &SpaceName,
    version: u64,
    name: String,
) -> Result<CollectionName, StorageError> {
    CollectionName::new(name).map_err(|e| invalid(space, version, "collection", &e))
}

fn record_id(space: &SpaceName, version: u64, id: String) -> Result<RecordId, StorageError> {
    RecordId::new(id).map_err(|e| invalid(space, version, "id", &e))
}

/// One stored row of `space` as a change. Documents and stamps are handed out as stored
/// (checked to be JSON, never parsed into a record state).
fn raw_change(space: &SpaceName, row: StoredRow) -> Result<RawChange, StorageError> {
    let version = row.version;
    let collection = collection_name(space, version, row.collection)?;
    let id = record_id(space, version, row.id)?;
    let bad = |what: &str, e: serde_json::Error| {
        StorageError::Internal(format!(
            "stored {what} of {space}/{collection}/{id} is not JSON: {e}"
        ))
    };
    // `from_string` checks the text is one JSON value and keeps the allocation (no copy).
    let doc = row
        .doc
        .map(RawValue::from_string)
        .transpose()
        .map_err(|e| bad("document", e))?;
    let stamps = RawValue::from_string(row.stamps).map_err(|e| bad("stamps", e))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_is_served_from_the_horizon_to_the_version_and_from_zero() {
        let space = SpaceName::new("s").expect("valid");
        let at = SpacePosition {
            version: 20,
            horizon: 10,
        };
        for ok in [0, 10, 15, 20] {
            assert!(check_cursor(&space, ok, at, None).is_ok(), "cursor {ok}");
        }
        assert!(matches!(
            check_cursor(&space, 9, at, None),
            Err(StorageError::CursorBehindHorizon {
                cursor: 9,
                horizon: 10,
                ..
            })
        ));
        assert!(matches!(
            check_cursor(&space, 21, at, None),
            Err(StorageError::CursorReset { cursor: 21, .. })
        ));
        // A download begun at this horizon goes on below it; one begun before it moved is
        // reset.
        assert_eq!(download_begins(0, at), Some(10));
        assert_eq!(download_begins(3, at), None);
        assert!(check_cursor(&space, 4, at, Some(10)).is_ok());
        assert!(check_cursor(&space, 4, at, Some(8)).is_err());
    }

    #[test]
    fn a_page_that_did_not_fill_skips_to_the_space_version() {
        let read = after_read(10, 50, 100, 3, 20);
        assert_eq!(
            read,
            SpaceRead {
                next: 50,
                remaining: Remaining::Known(0)
            }
        );
    }

    #[test]
    fn a_full_page_counts_when_close_and_estimates_when_far() {
        assert_eq!(
            after_read(0, 500, 100, 100, 100).remaining,
            Remaining::Count
        );
        // 100 rows over 200 versions: half the versions are live.
        let far = after_read(0, 10_200, 100, 100, 200);
        assert_eq!(
            far,
            SpaceRead {
                next: 200,
                remaining: Remaining::Known(5_000)
            }
        );
    }
}
