//! The admin overview on SQLite, in one read transaction (the bounds are
//! [`overview`](crate::storage::overview)'s).

use rusqlite::{params, Connection, OptionalExtension};

use crate::storage::overview::{
    merge_clients, ClientSummary, Overview, OverviewRequest, RecordCounts, SpaceSummary,
    StoredRejection, RECORD_COUNT_CAP,
};
use crate::storage::StorageError;

fn internal(context: &'static str) -> impl Fn(rusqlite::Error) -> StorageError {
    move |e| StorageError::Internal(format!("{context}: {e}"))
}

/// Reads the overview.
pub(crate) fn overview(
    conn: &Connection,
    request: &OverviewRequest,
) -> Result<Overview, StorageError> {
    let tx = conn
        .unchecked_transaction()
        .map_err(internal("begin a read"))?;
    let limit = request.limit as i64;
    let count = |sql: &str| -> Result<u64, StorageError> {
        tx.query_row(sql, [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(internal("count rows"))
    };
    let space_count = count("SELECT count(*) FROM spaces")?;
    let client_count = count("SELECT count(*) FROM clients")?;

    let mut spaces = tx
        .prepare_cached("SELECT space, version FROM spaces ORDER BY version DESC, space LIMIT ?1")
        .and_then(|mut s| {
            s.query_map([limit], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()
        })
        .map_err(internal("read the spaces"))?
        .into_iter()
        .map(|(space, version)| SpaceSummary {
            space,
            version: version as u64,
            records: RecordCounts::default(),
        })
        .collect::<Vec<_>>();
    {
        // Over the space's range of the primary key (space, version), stopping after the cap.
        let mut counts = tx
            .prepare_cached(
                "SELECT count(*), count(doc) FROM
                   (SELECT doc FROM records WHERE space = ?1 LIMIT ?2)",
            )
            .map_err(internal("count records"))?;
        for space in &mut spaces {
            let (rows, live) = counts
                .query_row(params![space.space, RECORD_COUNT_CAP as i64 + 1], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                })
                .map_err(internal("count records"))?;
            space.records = RecordCounts::of(rows as u64, live as u64);
        }
    }

    let client_row = |r: &rusqlite::Row<'_>| {
        Ok(ClientSummary {
            client_id: r.get(0)?,
            user: r.get(1)?,
            last_seq: r.get::<_, i64>(2)? as u64,
        })
    };
    let mut requested = Vec::new();
    {
        let mut one = tx
            .prepare_cached("SELECT client_id, user_id, last_seq FROM clients WHERE client_id = ?1")
            .map_err(internal("read a client"))?;
        for id in request.clients.iter().take(request.limit) {
            if let Some(row) = one
                .query_row([id.as_str()], client_row)
                .optional()
                .map_err(internal("read a client"))?
            {
                requested.push(row);
            }
        }
    }
    let top = tx
        .prepare_cached(
            "SELECT client_id, user_id, last_seq FROM clients
             ORDER BY last_seq DESC, client_id LIMIT ?1",
        )
        .and_then(|mut s| {
            s.query_map([limit], client_row)?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(internal("read the clients"))?;
    let clients = merge_clients(request.limit, requested, top);

    let mut rejections = Vec::new();
    {
        // Over the client's range of the primary key (client_id, seq), newest first.
        let mut newest = tx
            .prepare_cached(
                "SELECT seq, code, message FROM rejected WHERE client_id = ?1
                 ORDER BY seq DESC LIMIT ?2",
            )
            .map_err(internal("read the rejections"))?;
        for client in &clients {
            let room = request.limit - rejections.len();
            if room == 0 {
                break;
            }
            let rows = newest
                .query_map(params![client.client_id, room as i64], |r| {
                    Ok(StoredRejection {
                        client_id: client.client_id.clone(),
                        seq: r.get::<_, i64>(0)? as u64,
                        code: r.get(1)?,
                        message: r.get(2)?,
                    })
                })
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(internal("read the rejections"))?;
            rejections.extend(rows);
        }
    }
    tx.finish().map_err(internal("end a read"))?;
    Ok(Overview {
        space_count,
        spaces,
        client_count,
        clients,
        rejections,
    })
}
