//! Reading one page of changes, in one read transaction (the rules are
//! [`page`](crate::storage::page)'s).

use rusqlite::{params, Connection, OptionalExtension};
use tidesync_protocol::{Cursor, PullResponse, RawChange};

use crate::storage::page::{self, Entries, Remaining, SpacePosition, StoredRow};
use crate::storage::plan::ClientRow;
use crate::storage::{PullInput, StorageError};
use tidesync_protocol::{ClientId, SpaceName};

fn internal(context: &'static str) -> impl Fn(rusqlite::Error) -> StorageError {
    move |e| StorageError::Internal(format!("{context}: {e}"))
}

/// A page, and the downloads it began past pruned history (space, horizon), which the
/// caller records with [`record_downloads`] before answering.
pub(crate) type Page = (PullResponse<RawChange>, Vec<(SpaceName, u64)>);

/// Reads one page.
pub(crate) fn pull(conn: &Connection, input: &PullInput) -> Result<Page, StorageError> {
    let tx = conn
        .unchecked_transaction()
        .map_err(internal("begin a read"))?;
    let owner = tx
        .prepare_cached("SELECT user_id, last_seq FROM clients WHERE client_id = ?1")
        .and_then(|mut s| {
            s.query_row([input.client_id.as_str()], |r| {
                Ok(ClientRow {
                    user: r.get(0)?,
                    last_seq: r.get::<_, i64>(1)? as u64,
                })
            })
            .optional()
        })
        .map_err(internal("read the client"))?;
    let acked_through = page::acked_through(owner, input)?;
    let mut entries = Entries::new(input);
    let mut cursor = Cursor::new();
    let mut remaining = 0u64;
    let mut budget = u64::from(input.limit.max(1));
    let mut downloads = Vec::new();
    for space in &input.spaces {
        let at = position(&tx, space)?;
        let current = at.version;
        let from = input.cursor.get(space).copied().unwrap_or(0);
        let began_at = if page::behind_horizon(from, at) {
            download_began(&tx, input, space)?
        } else {
            None
        };
        page::check_cursor(space, from, at, began_at)?;
        downloads.extend(page::download_begins(from, at).map(|h| (space.clone(), h)));
        let mut stmt = tx
            .prepare_cached(
                "SELECT collection, id, version, doc, stamps, echo FROM records
                 WHERE space = ?1 AND version > ?2 ORDER BY version LIMIT ?3",
            )
            .map_err(internal("read changes"))?;
        let mut rows = stmt
            .query(params![space.as_str(), from as i64, budget as i64])
            .map_err(internal("read changes"))?;
        let mut taken = 0u64;
        let mut last = from;
        while let Some(row) = rows.next().map_err(internal("read changes"))? {
            let row = stored_row(row).map_err(internal("read changes"))?;
            last = row.version;
            entries.row(space, row)?;
            taken += 1;
        }
        let read = page::after_read(from, current, budget, taken, last);
        budget -= taken;
        cursor.insert(space.clone(), read.next);
        remaining += match read.remaining {
            Remaining::Known(n) => n,
            Remaining::Count => {
                tx.prepare_cached("SELECT count(*) FROM records WHERE space = ?1 AND version > ?2")
                    .and_then(|mut s| {
                        s.query_row(params![space.as_str(), read.next as i64], |r| {
                            r.get::<_, i64>(0)
                        })
                    })
                    .map_err(internal("count remaining changes"))? as u64
            }
        };
    }
    let mut refetch = tx
        .prepare_cached(
            "SELECT collection, id, version, doc, stamps, echo FROM records
             WHERE space = ?1 AND collection = ?2 AND id = ?3",
        )
        .map_err(internal("refetch records"))?;
    for key in &input.refetch {
        let row = refetch
            .query_row(
                [key.space.as_str(), key.collection.as_str(), key.id.as_str()],
                stored_row,
            )
            .optional()
            .map_err(internal("refetch records"))?;
        if let Some(row) = row {
            entries.change(&key.space, row)?;
        }
    }
    Ok((entries.finish(cursor, remaining, acked_through), downloads))
}

/// The horizon at which the pulling client began downloading `space`, if it did.
fn download_began(
    conn: &Connection,
    input: &PullInput,
    space: &SpaceName,
) -> Result<Option<u64>, StorageError> {
    conn.prepare_cached("SELECT horizon FROM downloads WHERE client_id = ?1 AND space = ?2")
        .and_then(|mut s| {
            s.query_row([input.client_id.as_str(), space.as_str()], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
        })
        .map(|h| h.map(|h| h as u64))
        .map_err(internal("read where a download began"))
}

/// Records that `client` began downloading each of `downloads` (space, horizon) from
/// scratch (on the writing connection).
pub(crate) fn record_downloads(
    conn: &Connection,
    client: &ClientId,
    downloads: &[(SpaceName, u64)],
) -> Result<(), StorageError> {
    for (space, horizon) in downloads {
        conn.prepare_cached(
            "INSERT INTO downloads (client_id, space, horizon) VALUES (?1, ?2, ?3)
             ON CONFLICT DO UPDATE SET horizon = excluded.horizon",
        )
        .and_then(|mut s| s.execute(params![client.as_str(), space.as_str(), *horizon as i64]))
        .map_err(internal("record where a download began"))?;
    }
    Ok(())
}

/// The space's version and horizon (both 0 for a space never written).
fn position(conn: &Connection, space: &SpaceName) -> Result<SpacePosition, StorageError> {
    let at = conn
        .prepare_cached("SELECT version, horizon FROM spaces WHERE space = ?1")
        .and_then(|mut s| {
            s.query_row([space.as_str()], |r| {
                Ok(SpacePosition {
                    version: r.get::<_, i64>(0)? as u64,
                    horizon: r.get::<_, i64>(1)? as u64,
                })
            })
            .optional()
        })
        .map_err(internal("read a space version"))?;
    Ok(at.unwrap_or(SpacePosition {
        version: 0,
        horizon: 0,
    }))
}

/// A row of `SELECT collection, id, version, doc, stamps, echo`.
fn stored_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRow> {
    Ok(StoredRow {
        collection: row.get(0)?,
        id: row.get(1)?,
        version: row.get::<_, i64>(2)? as u64,
        doc: row.get(3)?,
        stamps: row.get(4)?,
        echo: row.get(5)?,
    })
}
