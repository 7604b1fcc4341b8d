//! Small persisted facts (table `meta`).

use rusqlite::{params, Connection, OptionalExtension};

use crate::{Result, StoreError};

pub(crate) const CLIENT_ID: &str = "client_id";
pub(crate) const SESSION_ID: &str = "session_id";
pub(crate) const LAST_SYNCED_AT: &str = "last_synced_at";
pub(crate) const HAS_SYNCED: &str = "has_synced";

pub(crate) fn get(conn: &Connection, key: &str) -> Result<Option<String>> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")
        .and_then(|mut s| s.query_row([key], |r| r.get(0)).optional())
        .map_err(StoreError::sql("read metadata"))
}

pub(crate) fn set(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT DO UPDATE SET value = excluded.value",
    )
    .and_then(|mut s| s.execute(params![key, value]))
    .map_err(StoreError::sql("write metadata"))?;
    Ok(())
}
