//! The admin overview on PostgreSQL, in one `REPEATABLE READ READ ONLY` transaction (the
//! bounds are [`overview`](crate::storage::overview)'s).

use tokio_postgres::IsolationLevel;

use crate::storage::overview::{
    merge_clients, ClientSummary, Overview, OverviewRequest, RecordCounts, SpaceSummary,
    StoredRejection, RECORD_COUNT_CAP,
};
use crate::storage::postgres::db_error;
use crate::storage::StorageError;

/// Reads the overview.
pub(crate) async fn overview(
    client: &mut deadpool_postgres::Client,
    request: &OverviewRequest,
) -> Result<Overview, StorageError> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(db_error("begin a read"))?;
    // Ended explicitly either way (see `pull`).
    match read(&tx, request).await {
        Ok(overview) => {
            tx.commit().await.map_err(db_error("end a read"))?;
            Ok(overview)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

async fn read(
    tx: &deadpool_postgres::Transaction<'_>,
    request: &OverviewRequest,
) -> Result<Overview, StorageError> {
    let limit = request.limit as i64;
    let counts = tx
        .query_one(
            "SELECT (SELECT count(*) FROM ts_spaces), (SELECT count(*) FROM ts_clients)",
            &[],
        )
        .await
        .map_err(db_error("count rows"))?;
    let (space_count, client_count) = (counts.get::<_, i64>(0), counts.get::<_, i64>(1));

    // Each space's records over its range of the primary key (space, collection, id),
    // stopping after the cap.
    let spaces = tx
        .query(
            "SELECT s.space, s.version, c.total, c.live
             FROM (SELECT space, version FROM ts_spaces
                   ORDER BY version DESC, space LIMIT $1) s
             CROSS JOIN LATERAL (
                 SELECT count(*) AS total, count(doc) AS live
                 FROM (SELECT doc FROM ts_records r WHERE r.space = s.space LIMIT $2) x
             ) c
             ORDER BY s.version DESC, s.space",
            &[&limit, &(RECORD_COUNT_CAP as i64 + 1)],
        )
        .await
        .map_err(db_error("read the spaces"))?
        .into_iter()
        .map(|r| SpaceSummary {
            space: r.get(0),
            version: r.get::<_, i64>(1) as u64,
            records: RecordCounts::of(r.get::<_, i64>(2) as u64, r.get::<_, i64>(3) as u64),
        })
        .collect();

    let client_row = |r: tokio_postgres::Row| ClientSummary {
        client_id: r.get(0),
        user: r.get(1),
        last_seq: r.get::<_, i64>(2) as u64,
    };
    let wanted: Vec<&str> = request
        .clients
        .iter()
        .take(request.limit)
        .map(|c| c.as_str())
        .collect();
    let found: Vec<ClientSummary> = tx
        .query(
            "SELECT client_id, user_id, last_seq FROM ts_clients WHERE client_id = ANY($1)",
            &[&wanted],
        )
        .await
        .map_err(db_error("read the clients"))?
        .into_iter()
        .map(client_row)
        .collect();
    // In the requested order.
    let requested = wanted
        .iter()
        .filter_map(|id| found.iter().find(|c| c.client_id == *id).cloned())
        .collect();
    let top = tx
        .query(
            "SELECT client_id, user_id, last_seq FROM ts_clients
             ORDER BY last_seq DESC, client_id LIMIT $1",
            &[&limit],
        )
        .await
        .map_err(db_error("read the clients"))?
        .into_iter()
        .map(client_row)
        .collect();
    let clients = merge_clients(request.limit, requested, top);

    // Each client's newest over its range of the primary key (client_id, seq), clients in
    // the order above.
    let ids: Vec<&str> = clients.iter().map(|c| c.client_id.as_str()).collect();
    let rejections = tx
        .query(
            "SELECT r.client_id, r.seq, r.code, r.message
             FROM unnest($1::text[]) WITH ORDINALITY AS c(id, n)
             CROSS JOIN LATERAL (
                 SELECT client_id, seq, code, message FROM ts_rejected
                 WHERE client_id = c.id ORDER BY seq DESC LIMIT $2
             ) r
             ORDER BY c.n, r.seq DESC
             LIMIT $2",
            &[&ids, &limit],
        )
        .await
        .map_err(db_error("read the rejections"))?
        .into_iter()
        .map(|r| StoredRejection {
            client_id: r.get(0),
            seq: r.get::<_, i64>(1) as u64,
            code: r.get(2),
            message: r.get(3),
        })
        .collect();
    Ok(Overview {
        space_count: space_count as u64,
        spaces,
        client_count: client_count as u64,
        clients,
        rejections,
    })
}
