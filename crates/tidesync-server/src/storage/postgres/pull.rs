//! One page of changes in one `REPEATABLE READ READ ONLY` transaction: the changes, the new
//! cursor, `remaining` and `acked_through` all come from one snapshot.

use tidesync_protocol::{Cursor, PullResponse, RawChange, SpaceName};
use tokio_postgres::IsolationLevel;

use crate::storage::page::{self, Entries, Remaining, SpacePosition, StoredRow};
use crate::storage::plan::ClientRow;
use crate::storage::postgres::db_error;
use crate::storage::{PullInput, StorageError};

/// Reads one page.
pub(crate) async fn pull(
    client: &mut deadpool_postgres::Client,
    input: &PullInput,
) -> Result<PullResponse<RawChange>, StorageError> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(db_error("begin a read"))?;
    // Ended explicitly either way (see `push`: a dropped transaction's ROLLBACK waits for
    // the connection task).
    match read(&tx, input).await {
        Ok((page, downloads)) => {
            tx.commit().await.map_err(db_error("end a read"))?;
            if !downloads.is_empty() {
                record_downloads(client, input, &downloads).await?;
            }
            Ok(page)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

/// Records, after the read, where the client began downloading spaces past pruned history
/// (answered only once recorded, so the next page finds it).
async fn record_downloads(
    client: &deadpool_postgres::Client,
    input: &PullInput,
    downloads: &[(SpaceName, u64)],
) -> Result<(), StorageError> {
    let spaces: Vec<&str> = downloads.iter().map(|(s, _)| s.as_str()).collect();
    let horizons: Vec<i64> = downloads.iter().map(|(_, h)| *h as i64).collect();
    client
        .execute(
            "INSERT INTO ts_downloads (client_id, space, horizon)
             SELECT $1, * FROM unnest($2::text[], $3::int8[])
             ON CONFLICT (client_id, space) DO UPDATE SET horizon = excluded.horizon",
            &[&input.client_id.as_str(), &spaces, &horizons],
        )
        .await
        .map_err(db_error("record where a download began"))?;
    Ok(())
}

/// The reads of one page, inside its transaction, and the downloads it began past pruned
/// history (space, horizon).
async fn read(
    tx: &deadpool_postgres::Transaction<'_>,
    input: &PullInput,
) -> Result<(PullResponse<RawChange>, Vec<(SpaceName, u64)>), StorageError> {
    let stmt = tx
        .prepare_cached("SELECT user_id, last_seq FROM ts_clients WHERE client_id = $1")
        .await
        .map_err(db_error("read the client"))?;
    let owner = tx
        .query_opt(&stmt, &[&input.client_id.as_str()])
        .await
        .map_err(db_error("read the client"))?
        .map(|r| ClientRow {
            user: r.get(0),
            last_seq: r.get::<_, i64>(1) as u64,
        });
    let acked_through = page::acked_through(owner, input)?;
    let version = tx
        .prepare_cached("SELECT version, horizon FROM ts_spaces WHERE space = $1")
        .await
        .map_err(db_error("read a space version"))?;
    let changes_stmt = tx
        .prepare_cached(
            "SELECT collection, id, version, doc, stamps, echo FROM ts_records
             WHERE space = $1 AND version > $2 ORDER BY version LIMIT $3",
        )
        .await
        .map_err(db_error("read changes"))?;
    let mut entries = Entries::new(input);
    let mut downloads = Vec::new();
    let mut cursor = Cursor::new();
    let mut remaining = 0u64;
    let mut budget = u64::from(input.limit.max(1));
    for space in &input.spaces {
        let at = tx
            .query_opt(&version, &[&space.as_str()])
            .await
            .map_err(db_error("read a space version"))?
            .map_or(
                SpacePosition {
                    version: 0,
                    horizon: 0,
                },
                |r| SpacePosition {
                    version: r.get::<_, i64>(0) as u64,
                    horizon: r.get::<_, i64>(1) as u64,
                },
            );
        let current = at.version;
        let from = input.cursor.get(space).copied().unwrap_or(0);
        let began_at = if page::behind_horizon(from, at) {
            let stmt = tx
                .prepare_cached(
                    "SELECT horizon FROM ts_downloads WHERE client_id = $1 AND space = $2",
                )
                .await
                .map_err(db_error("read where a download began"))?;
            tx.query_opt(&stmt, &[&input.client_id.as_str(), &space.as_str()])
                .await
                .map_err(db_error("read where a download began"))?
                .map(|r| r.get::<_, i64>(0) as u64)
        } else {
            None
        };
        page::check_cursor(space, from, at, began_at)?;
        downloads.extend(page::download_begins(from, at).map(|h| (space.clone(), h)));
        let rows = tx
            .query(
                &changes_stmt,
                &[&space.as_str(), &(from as i64), &(budget as i64)],
            )
            .await
            .map_err(db_error("read changes"))?;
        let taken = rows.len() as u64;
        let mut last = from;
        for row in rows {
            let row = stored_row(&row);
            last = row.version;
            entries.row(space, row)?;
        }
        let read = page::after_read(from, current, budget, taken, last);
        budget -= taken;
        cursor.insert(space.clone(), read.next);
        remaining += match read.remaining {
            Remaining::Known(n) => n,
            Remaining::Count => {
                let stmt = tx
                    .prepare_cached(
                        "SELECT count(*) FROM ts_records WHERE space = $1 AND version > $2",
                    )
                    .await
                    .map_err(db_error("count remaining changes"))?;
                let row = tx
                    .query_one(&stmt, &[&space.as_str(), &(read.next as i64)])
                    .await
                    .map_err(db_error("count remaining changes"))?;
                row.get::<_, i64>(0) as u64
            }
        };
    }
    if !input.refetch.is_empty() {
        let spaces: Vec<&str> = input.refetch.iter().map(|k| k.space.as_str()).collect();
        let collections: Vec<&str> = input
            .refetch
            .iter()
            .map(|k| k.collection.as_str())
            .collect();
        let ids: Vec<&str> = input.refetch.iter().map(|k| k.id.as_str()).collect();
        let stmt = tx
            .prepare_cached(
                "SELECT r.collection, r.id, r.version, r.doc, r.stamps, r.echo, r.space
                 FROM unnest($1::text[], $2::text[], $3::text[]) AS k(space, collection, id)
                 JOIN ts_records r USING (space, collection, id)",
            )
            .await
            .map_err(db_error("refetch records"))?;
        let rows = tx
            .query(&stmt, &[&spaces, &collections, &ids])
            .await
            .map_err(db_error("refetch records"))?;
        for row in rows {
            let space = SpaceName::new(row.get::<_, &str>(6)).map_err(|e| {
                StorageError::Internal(format!("a stored record's space is invalid: {e}"))
            })?;
            entries.change(&space, stored_row(&row))?;
        }
    }
    Ok((entries.finish(cursor, remaining, acked_through), downloads))
}

/// A row of `SELECT collection, id, version, doc, stamps, echo`.
fn stored_row(row: &tokio_postgres::Row) -> StoredRow {
    StoredRow {
        collection: row.get(0),
        id: row.get(1),
        version: row.get::<_, i64>(2) as u64,
        doc: row.get(3),
        stamps: row.get(4),
        echo: row.get(5),
    }
}
