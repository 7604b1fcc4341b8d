//! Conflicts the server reported for applied mutations, until the app resolves them.

use rusqlite::{Connection, OptionalExtension};
use tidesync_protocol::{Doc, FieldConflict, RecordKey, Winner};

use crate::records::key_from_row;
use crate::{Result, StoreError};

/// A record where a local mutation and someone else's change met.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// Its id, for [`crate::Store::resolve_conflict`].
    pub id: i64,
    /// The local mutation that met the concurrent change.
    pub seq: u64,
    /// The record.
    pub key: RecordKey,
    /// The server version that contains the merge.
    pub version: u64,
    /// The contested fields, both values, and who won each.
    pub fields: Vec<FieldConflict>,
    /// When it was recorded (ms since the epoch).
    pub created_at: u64,
}

/// How the app settles a conflict. Every choice is a new local mutation (unless nothing
/// needs to change), so it syncs like any other write.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// Make the local values win every contested field.
    KeepLocal,
    /// Make the server's values win every contested field.
    KeepServer,
    /// Replace the record with this document.
    Merged(Doc),
}

impl Resolution {
    /// The patch that enforces this resolution for the fields of `conflict`, if any.
    pub(crate) fn patch_for(&self, conflict: &Conflict) -> Option<Doc> {
        let (losing, pick): (Winner, fn(&FieldConflict) -> &Option<serde_json::Value>) = match self
        {
            Resolution::KeepLocal => (Winner::Server, |f| &f.local),
            Resolution::KeepServer => (Winner::Local, |f| &f.server),
            Resolution::Merged(_) => return None,
        };
        let patch: Doc = conflict
            .fields
            .iter()
            .filter(|f| f.winner == losing)
            .map(|f| {
                (
                    f.field.clone(),
                    pick(f).clone().unwrap_or(serde_json::Value::Null),
                )
            })
            .collect();
        (!patch.is_empty()).then_some(patch)
    }
}

const SELECT: &str =
    "SELECT id, seq, space, collection, record_id, version, fields, created_at FROM conflicts";

/// A conflicts row as read: id, seq, space, collection, record id, version, fields, created.
type ConflictRow = (i64, i64, String, String, String, i64, String, i64);

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ConflictRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

fn build(row: ConflictRow) -> Result<Conflict> {
    let (id, seq, space, collection, record_id, version, fields, created_at) = row;
    Ok(Conflict {
        id,
        seq: seq as u64,
        key: key_from_row(&space, &collection, &record_id)?,
        version: version as u64,
        fields: serde_json::from_str(&fields).map_err(StoreError::bad_json("conflict fields"))?,
        created_at: created_at as u64,
    })
}

pub(crate) fn list(conn: &Connection) -> Result<Vec<Conflict>> {
    let mut stmt = conn
        .prepare_cached(&format!("{SELECT} ORDER BY id"))
        .map_err(StoreError::sql("read conflicts"))?;
    let rows = stmt
        .query_map([], from_row)
        .map_err(StoreError::sql("read conflicts"))?;
    rows.map(|r| build(r.map_err(StoreError::sql("read conflicts"))?))
        .collect()
}

pub(crate) fn get(conn: &Connection, id: i64) -> Result<Conflict> {
    let row = conn
        .prepare_cached(&format!("{SELECT} WHERE id = ?1"))
        .and_then(|mut s| s.query_row([id], from_row).optional())
        .map_err(StoreError::sql("read a conflict"))?;
    build(row.ok_or_else(|| StoreError::NotFound(format!("conflict {id}")))?)
}

pub(crate) fn delete(conn: &Connection, id: i64) -> Result<()> {
    conn.prepare_cached("DELETE FROM conflicts WHERE id = ?1")
        .and_then(|mut s| s.execute([id]))
        .map_err(StoreError::sql("remove a conflict"))?;
    Ok(())
}
