//! One prune batch on the writing connection, in one transaction (what it means is
//! [`prune`](crate::storage::prune)'s). Run by the writer between group commits, so it holds
//! the writer for one bounded batch.

use rusqlite::{params, Connection};

use crate::storage::prune::{self, Prune, Pruned};
use crate::storage::StorageError;

fn internal(context: &'static str) -> impl Fn(rusqlite::Error) -> StorageError {
    move |e| StorageError::Internal(format!("{context}: {e}"))
}

/// Deletes the oldest tombstones and rejections at or before the cutoff (at most
/// `prune.batch` rows) and raises the horizons, in one transaction.
pub(crate) fn prune_batch(conn: &Connection, prune: Prune) -> Result<Pruned, StorageError> {
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)
        .map_err(internal("begin a prune"))?;
    let cutoff = prune.cutoff_ms.min(i64::MAX as u64) as i64;
    let rejections_cutoff = prune.rejections_cutoff_ms.min(i64::MAX as u64) as i64;
    // Oldest first, through the partial index of tombstones.
    let doomed: Vec<(String, u64)> = tx
        .prepare_cached(
            "SELECT space, version FROM records WHERE deleted_at <= ?1
             ORDER BY deleted_at LIMIT ?2",
        )
        .and_then(|mut s| {
            s.query_map(params![cutoff, prune.tombstone_budget() as i64], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })?
            .collect()
        })
        .map_err(internal("find old tombstones"))?;
    {
        let mut delete = tx
            .prepare_cached("DELETE FROM records WHERE space = ?1 AND version = ?2")
            .map_err(internal("prune a tombstone"))?;
        for (space, version) in &doomed {
            delete
                .execute(params![space, *version as i64])
                .map_err(internal("prune a tombstone"))?;
        }
    }
    let horizons = prune::horizons(doomed.iter().map(|(s, v)| (s.as_str(), *v)))?;
    for (space, horizon) in &horizons {
        tx.prepare_cached("UPDATE spaces SET horizon = max(horizon, ?2) WHERE space = ?1")
            .and_then(|mut s| s.execute(params![space.as_str(), *horizon as i64]))
            .map_err(internal("raise a horizon"))?;
    }
    let tombstones = doomed.len() as u64;
    let rejections = match prune.rejection_budget(tombstones) {
        0 => 0,
        budget => tx
            .prepare_cached(
                "DELETE FROM rejected WHERE (client_id, seq) IN (
                     SELECT client_id, seq FROM rejected WHERE rejected_at <= ?1
                     ORDER BY rejected_at LIMIT ?2)",
            )
            .and_then(|mut s| s.execute(params![rejections_cutoff, budget as i64]))
            .map_err(internal("prune old rejections"))? as u64,
    };
    tx.commit().map_err(internal("commit a prune"))?;
    Ok(Pruned {
        tombstones,
        rejections,
    })
}
