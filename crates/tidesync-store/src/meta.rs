//! Small persisted facts (table `meta`).

use rusqlite::{params, Connection, OptionalExtension};

use crate::{Result, StoreError};

pub(crate) const CLIENT_ID: &str = "client_id";
pub(crate) const SESSION_ID: &str = "session_id";
pub(crate) const LAST_SYNCED_AT: &str = "last_synced_at";
pub(crate) const HAS_SYNCED: &str = "has_synced";
/// The highest seq of this client the server reported processed (push or pull).
pub(crate) const ACKED_THROUGH: &str = "acked_through";
/// While `acked_through` is below it, pushes are recovery pushes (see
/// [`crate::Store::forget_server_history`]): the highest seq handed out when the server was
/// found to have forgotten history.
pub(crate) const RECOVER_THROUGH: &str = "recover_through";

pub(crate) fn get_u64(conn: &Connection, key: &str) -> Result<u64> {
    Ok(get(conn, key)?.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Raises a numeric fact to `value` (never lowers it).
pub(crate) fn set_u64(conn: &Connection, key: &str, value: u64) -> Result<()> {
    set(conn, key, &value.to_string())
}

pub(crate) fn raise_u64(conn: &Connection, key: &str, value: u64) -> Result<()> {
    if value > get_u64(conn, key)? {
        set(conn, key, &value.to_string())?;
    }
    Ok(())
}

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
