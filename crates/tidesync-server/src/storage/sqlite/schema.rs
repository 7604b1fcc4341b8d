//! The server database: schema, migrations, and the safe open sequence.

use std::io::Read;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::storage::StorageError;

/// `PRAGMA application_id` of a tidesync server database ("TSSV").
pub const APPLICATION_ID: i32 = 0x5453_5356;

const MIGRATIONS: &[&str] = &[V1];

const V1: &str = r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- Per space, the version of its last committed change.
CREATE TABLE spaces (
    space   TEXT PRIMARY KEY,
    version INTEGER NOT NULL
) WITHOUT ROWID;

-- Per client: its owner and the last seq processed (applied or rejected). Updated in the same
-- transaction as the mutations it covers: that is the exactly-once guarantee.
CREATE TABLE clients (
    client_id TEXT PRIMARY KEY,
    user_id   TEXT NOT NULL,
    last_seq  INTEGER NOT NULL
) WITHOUT ROWID;

-- Current state of every record. `state` is tidesync_core::RecordState (JSON: the registers
-- with their values, so the document is derived from it), `versions` the space version at
-- which each register last changed. Deleted records stay as tombstones so pulls can hand
-- out the delete.
CREATE TABLE records (
    space      TEXT NOT NULL,
    collection TEXT NOT NULL,
    id         TEXT NOT NULL,
    version    INTEGER NOT NULL,
    state      TEXT NOT NULL,
    versions   TEXT NOT NULL,
    PRIMARY KEY (space, collection, id)
) WITHOUT ROWID;
CREATE INDEX records_by_version ON records (space, version);

-- Mutations the server refused, per client: a retried push (its first answer lost) gets
-- these rejections again instead of a bare acknowledgement.
CREATE TABLE rejected (
    client_id TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    code      TEXT NOT NULL,
    message   TEXT NOT NULL,
    PRIMARY KEY (client_id, seq)
) WITHOUT ROWID;

-- API tokens, by SHA-256 of the token; the token itself is never stored.
CREATE TABLE tokens (
    hash       BLOB PRIMARY KEY,
    user_id    TEXT NOT NULL,
    grants     TEXT NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
"#;

fn internal(context: &'static str) -> impl Fn(rusqlite::Error) -> StorageError {
    move |e| StorageError::Internal(format!("{context}: {e}"))
}

/// Opens a connection with the server's pragmas. The first call (`migrate = true`) also
/// checks the file and migrates it.
pub(crate) fn open(path: &Path, migrate: bool) -> Result<Connection, StorageError> {
    if migrate {
        check_header(path)?;
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StorageError::Internal(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(internal("set the busy timeout"))?;
    if migrate {
        let app_id: i64 = conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(|e| not_a_db(path, e))?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| not_a_db(path, e))?;
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(|e| not_a_db(path, e))?;
        if app_id as i32 != APPLICATION_ID && (app_id != 0 || version != 0 || tables != 0) {
            return Err(StorageError::Internal(format!(
                "{} is an SQLite database of another application; use a separate data directory",
                path.display()
            )));
        }
        if version > MIGRATIONS.len() as i64 {
            return Err(StorageError::Internal(format!(
                "{} uses server schema version {version}, newer than this build supports ({}); upgrade tidesync",
                path.display(),
                MIGRATIONS.len()
            )));
        }
    }
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -65536; PRAGMA wal_autocheckpoint = 10000;",
    )
    .map_err(internal("set pragmas"))?;
    if migrate {
        let tx =
            rusqlite::Transaction::new_unchecked(&conn, rusqlite::TransactionBehavior::Immediate)
                .map_err(internal("begin the migration"))?;
        let now: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(internal("read the schema version"))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(now as usize) {
            tx.execute_batch(sql)
                .map_err(internal("migrate the schema"))?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
                .map_err(internal("record the schema version"))?;
        }
        tx.execute_batch(&format!("PRAGMA application_id = {APPLICATION_ID}"))
            .map_err(internal("mark the database"))?;
        tx.commit().map_err(internal("commit the migration"))?;
    }
    Ok(conn)
}

fn not_a_db(path: &Path, e: rusqlite::Error) -> StorageError {
    StorageError::Internal(format!(
        "{} is not a usable SQLite database ({e}); it was not changed",
        path.display()
    ))
}

fn check_header(path: &Path) -> Result<(), StorageError> {
    let mut header = Vec::new();
    match std::fs::File::open(path) {
        Ok(f) => {
            f.take(16).read_to_end(&mut header).map_err(|e| {
                StorageError::Internal(format!("cannot read {}: {e}", path.display()))
            })?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(StorageError::Internal(format!(
                "cannot open {}: {e}",
                path.display()
            )))
        }
    }
    if header.is_empty() || header == b"SQLite format 3\0" {
        Ok(())
    } else {
        Err(StorageError::Internal(format!(
            "{} is not an SQLite database; it was not changed. Point the server at another data directory",
            path.display()
        )))
    }
}
