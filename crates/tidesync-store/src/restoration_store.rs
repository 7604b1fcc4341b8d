//! Persistence of restoration state in the `restoration` table. The in-memory tree and its
//! rules live in [`crate::restoration`]; this module only moves rows.

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection};

use crate::restoration::{
    IssueKind, Lifetime, Loaded, PlannedChange, Repair, RestorationIssue, RestorationLimits,
    RestorationSchema, RestorationTree, StoredEntry,
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
    let mut rows = stmt.query([]).map_err(StoreError::sql(ctx))?;
    let mut entries = Vec::new();
    let mut unreadable = Vec::new();
    while let Some(row) = rows.next().map_err(StoreError::sql(ctx))? {
        let raw = RawRow::read(row).map_err(StoreError::sql(ctx))?;
        match raw.to_entry() {
            Some(entry) => entries.push(entry),
            None => unreadable.push(raw),
        }
    }
    drop(rows);
    drop(stmt);
    let mut issues = Vec::new();
    for raw in unreadable {
        // Match the row by its raw bytes: its text may not even be UTF-8.
        conn.execute(
            "DELETE FROM restoration WHERE lifetime IS ?1
             AND CAST(bucket AS BLOB) IS ?2 AND CAST(key AS BLOB) IS ?3",
            params![raw.lifetime, raw.bucket, raw.key],
        )
        .map_err(StoreError::sql(ctx))?;
        issues.push(raw.issue());
    }
    let mut loaded = RestorationTree::load(entries, schema, limits);
    loaded.issues.splice(0..0, issues);
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

/// A restoration row exactly as stored, before any type is trusted.
struct RawRow {
    lifetime: rusqlite::types::Value,
    bucket: Vec<u8>,
    key: Vec<u8>,
    tag: Vec<u8>,
    version: rusqlite::types::Value,
    value: Vec<u8>,
}

impl RawRow {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
        let bytes = |i: usize| -> rusqlite::Result<Vec<u8>> {
            Ok(match row.get_ref(i)? {
                ValueRef::Text(b) | ValueRef::Blob(b) => b.to_vec(),
                ValueRef::Integer(n) => n.to_string().into_bytes(),
                ValueRef::Real(f) => f.to_string().into_bytes(),
                ValueRef::Null => Vec::new(),
            })
        };
        Ok(RawRow {
            lifetime: row.get(0)?,
            bucket: bytes(1)?,
            key: bytes(2)?,
            tag: bytes(3)?,
            version: row.get(4)?,
            value: bytes(5)?,
        })
    }

    /// The entry, if every column has the type tidesync writes.
    fn to_entry(&self) -> Option<StoredEntry> {
        let rusqlite::types::Value::Integer(lifetime) = self.lifetime else {
            return None;
        };
        let rusqlite::types::Value::Integer(version) = self.version else {
            return None;
        };
        Some(StoredEntry {
            lifetime: Lifetime::from_i64(lifetime)?,
            path: String::from_utf8(self.bucket.clone()).ok()?,
            key: String::from_utf8(self.key.clone()).ok()?,
            tag: String::from_utf8(self.tag.clone()).ok()?,
            version: u32::try_from(version).ok()?,
            bytes: self.value.clone(),
        })
    }

    fn issue(&self) -> RestorationIssue {
        let lifetime = match self.lifetime {
            rusqlite::types::Value::Integer(n) => Lifetime::from_i64(n),
            _ => None,
        };
        RestorationIssue {
            lifetime: lifetime.unwrap_or(Lifetime::Session),
            path: String::from_utf8_lossy(&self.bucket).into_owned(),
            key: String::from_utf8_lossy(&self.key).into_owned(),
            tag: String::from_utf8_lossy(&self.tag).into_owned(),
            kind: IssueKind::Unreadable,
            message: format!(
                "the row does not hold the column types tidesync writes (lifetime {:?}, version {:?}); it was modified outside tidesync",
                self.lifetime, self.version
            ),
        }
    }
}
