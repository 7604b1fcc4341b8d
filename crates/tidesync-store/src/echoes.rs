//! Echoes: pulled records this client wrote last, which the server sends as key, version
//! and seqs instead of document and stamps (protocol 2; docs/protocol.md, "Echoes"). The
//! store rebuilds the server's state from its base and its own acknowledged mutations; when
//! it cannot (its base is not the one the mutations were applied on, or it no longer holds
//! exactly those mutations), the record waits in `refetch` and the next pulls ask for it in
//! full.

use rusqlite::{params, Connection, OptionalExtension};
use tidesync_core::wire;
use tidesync_protocol::{ClientId, Echo, Hlc, Op, RecordKey, Stamp};

use crate::outbox::ACKED;
use crate::records::{decode_base, key_from_row, key_params};
use crate::{Result, StoreError};

/// Stores `echo` as the record's new base, rebuilt from this store's mutations; false (and
/// the record queued for a refetch) when they cannot rebuild it.
pub(crate) fn apply(conn: &Connection, client: &ClientId, echo: &Echo) -> Result<bool> {
    let key = echo.key();
    let keys = key_params(&key);
    let row: Option<(Option<String>, i64)> = conn
        .prepare_cached(
            "SELECT base, base_version FROM records WHERE space = ?1 AND collection = ?2 AND id = ?3",
        )
        .and_then(|mut s| s.query_row(keys, |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(StoreError::sql("read an echoed record"))?;
    // Already there: the same page carried the record in full (a refetch of it).
    if row.as_ref().is_some_and(|(_, v)| *v as u64 == echo.version) {
        return Ok(true);
    }
    let Some((base, _)) = row.filter(|(_, v)| *v as u64 == echo.from) else {
        queue(conn, &key)?;
        return Ok(false);
    };
    let mut stmt = conn
        .prepare_cached(
            "SELECT op, hlc FROM outbox
             WHERE space = ?1 AND collection = ?2 AND id = ?3 AND seq BETWEEN ?4 AND ?5
               AND state = ?6
             ORDER BY seq",
        )
        .map_err(StoreError::sql("read echoed mutations"))?;
    let ops = stmt
        .query_map(
            params![
                keys[0],
                keys[1],
                keys[2],
                echo.first_seq as i64,
                echo.last_seq as i64,
                ACKED
            ],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
        )
        .map_err(StoreError::sql("read echoed mutations"))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(StoreError::sql("read echoed mutations"))?;
    drop(stmt);
    if ops.len() as u64 != echo.count {
        queue(conn, &key)?;
        return Ok(false);
    }
    let mut state = decode_base(base.as_deref())?;
    for (op, hlc) in ops {
        let op: Op = serde_json::from_str(&op).map_err(StoreError::bad_json("outbox mutation"))?;
        state.apply(&op, &Stamp::new(Hlc::from_u64(hlc as u64), client.clone()));
    }
    let encoded = wire::encode(&state);
    let base = wire::join(encoded.doc.as_deref(), &encoded.stamps);
    conn.prepare_cached(
        "UPDATE records SET base = ?4, base_version = ?5
         WHERE space = ?1 AND collection = ?2 AND id = ?3",
    )
    .and_then(|mut s| {
        s.execute(params![
            keys[0],
            keys[1],
            keys[2],
            base,
            echo.version as i64
        ])
    })
    .map_err(StoreError::sql("store an echoed record"))?;
    Ok(true)
}

fn queue(conn: &Connection, key: &RecordKey) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO refetch (space, collection, id) VALUES (?1, ?2, ?3)",
    )
    .and_then(|mut s| s.execute(key_params(key)))
    .map_err(StoreError::sql("queue a record to refetch"))?;
    Ok(())
}

/// `keys` were asked for in full by the pull just applied: the server sent those it has.
pub(crate) fn fetched(conn: &Connection, keys: &[RecordKey]) -> Result<()> {
    let mut stmt = conn
        .prepare_cached("DELETE FROM refetch WHERE space = ?1 AND collection = ?2 AND id = ?3")
        .map_err(StoreError::sql("forget a refetched record"))?;
    for key in keys {
        stmt.execute(key_params(key))
            .map_err(StoreError::sql("forget a refetched record"))?;
    }
    Ok(())
}

/// Up to `limit` records waiting to be fetched in full, in key order.
pub(crate) fn waiting(conn: &Connection, limit: usize) -> Result<Vec<RecordKey>> {
    let mut stmt = conn
        .prepare_cached("SELECT space, collection, id FROM refetch ORDER BY 1, 2, 3 LIMIT ?1")
        .map_err(StoreError::sql("read the records to refetch"))?;
    let rows = stmt
        .query_map([limit as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(StoreError::sql("read the records to refetch"))?;
    let mut keys = Vec::new();
    for row in rows {
        let (space, collection, id) =
            row.map_err(StoreError::sql("read the records to refetch"))?;
        keys.push(key_from_row(&space, &collection, &id)?);
    }
    Ok(keys)
}

/// Whether any record waits to be fetched in full.
pub(crate) fn any_waiting(conn: &Connection) -> Result<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM refetch)")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(StoreError::sql("read the records to refetch"))
}
