//! Persistence of restoration state in the `restoration` table. The in-memory tree and its
//! rules live in [`crate::restoration`]; this module only moves rows.

use rusqlite::{params, Connection};

use crate::restoration::{
    Lifetime, Loaded, PlannedChange, Repair, RestorationLimits, RestorationSchema, RestorationTree,
    StoredEntry,
};
use crate::{Result, StoreError};

/// Writes one planned change inside the caller's transaction.
pub(crate) fn persist(conn: &Connection, change: &PlannedChange) -> Result<()> {
    let ctx = "persist restoration state";
    let result = match change {
        PlannedChange::Write(w) => conn
            .prepare_cached(
                "INSERT INTO restoration (lifetime, bucket, key, tag, version, value)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT DO UPDATE SET tag = excluded.tag, version = excluded.version, value = excluded.value",
            )
            .and_then(|mut s| {
                s.execute(params![
                    w.lifetime().as_i64(),
                    w.path(),
                    w.key(),
                    w.tag(),
                    w.version(),
                    w.bytes()
                ])
            }),
        PlannedChange::Remove {
            lifetime,
            path,
            key,
        } => conn
            .prepare_cached("DELETE FROM restoration WHERE lifetime = ?1 AND bucket = ?2 AND key = ?3")
            .and_then(|mut s| s.execute(params![lifetime.as_i64(), path.as_str(), key.as_str()])),
        PlannedChange::RemoveBucket { lifetime, path } if path.is_root() => {
            clear_rows(conn, *lifetime)
        }
        PlannedChange::RemoveBucket { lifetime, path } => {
            // The bucket itself and every path in ["p/", "p0"): '0' is the byte after '/'.
            let p = path.as_str();
            conn.prepare_cached(
                "DELETE FROM restoration WHERE lifetime = ?1
                 AND (bucket = ?2 OR (bucket >= ?3 AND bucket < ?4))",
            )
            .and_then(|mut s| {
                s.execute(params![lifetime.as_i64(), p, format!("{p}/"), format!("{p}0")])
            })
        }
        PlannedChange::ClearLifetime(lifetime) => clear_rows(conn, *lifetime),
    };
    result.map_err(StoreError::sql(ctx))?;
    Ok(())
}

fn clear_rows(conn: &Connection, lifetime: Lifetime) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM restoration WHERE lifetime = ?1")
        .and_then(|mut s| s.execute([lifetime.as_i64()]))
}

/// Session state is dropped when the app starts fresh.
pub(crate) fn clear_session(conn: &Connection) -> Result<()> {
    clear_rows(conn, Lifetime::Session)
        .map_err(StoreError::sql("clear session restoration state"))?;
    Ok(())
}

/// Reads every row, builds the tree, and writes back the repairs (dropped rows deleted,
/// migrated rows rewritten) in the caller's transaction.
pub(crate) fn load(
    conn: &Connection,
    schema: &RestorationSchema,
    limits: RestorationLimits,
) -> Result<Loaded> {
    let ctx = "load restoration state";
    let mut stmt = conn
        .prepare(
            "SELECT lifetime, bucket, key, tag, version, value FROM restoration
             ORDER BY lifetime, bucket, key",
        )
        .map_err(StoreError::sql(ctx))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, Vec<u8>>(5)?,
            ))
        })
        .map_err(StoreError::sql(ctx))?;
    let mut entries = Vec::new();
    let mut unknown_lifetimes = Vec::new();
    for row in rows {
        let (lifetime, path, key, tag, version, bytes) = row.map_err(StoreError::sql(ctx))?;
        match (Lifetime::from_i64(lifetime), u32::try_from(version)) {
            (Some(lifetime), Ok(version)) => entries.push(StoredEntry {
                lifetime,
                path,
                key,
                tag,
                version,
                bytes,
            }),
            // Rows no version of tidesync writes: drop them rather than fail the open.
            _ => unknown_lifetimes.push((lifetime, path, key)),
        }
    }
    drop(stmt);
    for (lifetime, path, key) in unknown_lifetimes {
        conn.execute(
            "DELETE FROM restoration WHERE lifetime = ?1 AND bucket = ?2 AND key = ?3",
            params![lifetime, path, key],
        )
        .map_err(StoreError::sql(ctx))?;
    }
    let loaded = RestorationTree::load(entries, schema, limits);
    for repair in &loaded.repairs {
        match repair {
            Repair::Delete {
                lifetime,
                path,
                key,
            } => conn
                .prepare_cached(
                    "DELETE FROM restoration WHERE lifetime = ?1 AND bucket = ?2 AND key = ?3",
                )
                .and_then(|mut s| s.execute(params![lifetime.as_i64(), path, key])),
            Repair::Rewrite {
                lifetime,
                path,
                key,
                tag,
                version,
                bytes,
            } => conn
                .prepare_cached(
                    "UPDATE restoration SET tag = ?4, version = ?5, value = ?6
                     WHERE lifetime = ?1 AND bucket = ?2 AND key = ?3",
                )
                .and_then(|mut s| {
                    s.execute(params![lifetime.as_i64(), path, key, tag, version, bytes])
                }),
        }
        .map_err(StoreError::sql(ctx))?;
    }
    Ok(loaded)
}
