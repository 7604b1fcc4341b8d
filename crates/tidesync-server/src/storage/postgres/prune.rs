//! One prune batch in one PostgreSQL transaction (what it means is
//! [`prune`](crate::storage::prune)'s), safe to run on every node at once.
//!
//! Lock order is the push's (spaces, then their records): the batch finds its tombstones
//! without locks, locks their spaces in sorted order (`FOR UPDATE`, as a push does), then
//! deletes the rows that are still tombstones old enough, and raises the horizons under the
//! same locks. Two nodes pruning at once serialize on the spaces; the second finds the rows
//! gone and deletes nothing. Rejections are taken with `SKIP LOCKED`, so a batch never
//! waits for them and no row is deleted twice.

use deadpool_postgres::Transaction;

use crate::storage::postgres::db_error;
use crate::storage::prune::{self, Prune, Pruned};
use crate::storage::StorageError;

/// Runs one batch on `client` in its own transaction.
pub(crate) async fn prune_batch(
    client: &mut deadpool_postgres::Client,
    batch: Prune,
) -> Result<Pruned, StorageError> {
    let tx = client
        .transaction()
        .await
        .map_err(db_error("begin a prune"))?;
    // Ended explicitly either way (see `push`: a dropped transaction's ROLLBACK waits for
    // the connection task, holding the space locks until then).
    match run(&tx, batch).await {
        Ok(pruned) => {
            tx.commit().await.map_err(db_error("commit a prune"))?;
            Ok(pruned)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

async fn run(tx: &Transaction<'_>, batch: Prune) -> Result<Pruned, StorageError> {
    let cutoff = batch.cutoff_ms.min(i64::MAX as u64) as i64;
    let rejections_cutoff = batch.rejections_cutoff_ms.min(i64::MAX as u64) as i64;
    let candidates = tx
        .query(
            "SELECT space, version FROM ts_records WHERE deleted_at <= $1
             ORDER BY deleted_at LIMIT $2",
            &[&cutoff, &(batch.tombstone_budget() as i64)],
        )
        .await
        .map_err(db_error("find old tombstones"))?;
    let mut tombstones = 0;
    if !candidates.is_empty() {
        let spaces: Vec<&str> = candidates.iter().map(|r| r.get(0)).collect();
        let versions: Vec<i64> = candidates.iter().map(|r| r.get(1)).collect();
        tx.query(
            "SELECT 1 FROM ts_spaces WHERE space = ANY($1) ORDER BY space FOR UPDATE",
            &[&spaces],
        )
        .await
        .map_err(db_error("lock the spaces to prune"))?;
        // What a push changed between the search and the locks stays: a record rewritten
        // since is at another version, or no longer a tombstone.
        let deleted = tx
            .query(
                "DELETE FROM ts_records r
                 USING unnest($1::text[], $2::int8[]) AS d(space, version)
                 WHERE r.space = d.space AND r.version = d.version AND r.deleted_at <= $3
                 RETURNING r.space, r.version",
                &[&spaces, &versions, &cutoff],
            )
            .await
            .map_err(db_error("prune the tombstones"))?;
        tombstones = deleted.len() as u64;
        let horizons = prune::horizons(
            deleted
                .iter()
                .map(|r| (r.get::<_, &str>(0), r.get::<_, i64>(1) as u64)),
        )?;
        if !horizons.is_empty() {
            let spaces: Vec<&str> = horizons.keys().map(|s| s.as_str()).collect();
            let values: Vec<i64> = horizons.values().map(|v| *v as i64).collect();
            tx.execute(
                "UPDATE ts_spaces AS s SET horizon = greatest(s.horizon, h.horizon)
                 FROM unnest($1::text[], $2::int8[]) AS h(space, horizon)
                 WHERE s.space = h.space",
                &[&spaces, &values],
            )
            .await
            .map_err(db_error("raise the horizons"))?;
        }
    }
    let rejections = match batch.rejection_budget(tombstones) {
        0 => 0,
        budget => tx
            .execute(
                "DELETE FROM ts_rejected WHERE (client_id, seq) IN (
                     SELECT client_id, seq FROM ts_rejected WHERE rejected_at <= $1
                     ORDER BY rejected_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
                &[&rejections_cutoff, &(budget as i64)],
            )
            .await
            .map_err(db_error("prune old rejections"))?,
    };
    Ok(Pruned {
        tombstones,
        rejections,
    })
}
