//! Opening a database file safely: refuse what is not ours before writing a single byte,
//! then switch to WAL and migrate.

use std::io::Read;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::config::{Durability, StoreConfig};
use crate::schema::{Step, APPLICATION_ID, CURRENT_VERSION, MIGRATIONS};
use crate::{Result, StoreError};

const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Opens (creating if needed) and migrates the database at `path`.
pub(crate) fn open_connection(path: &Path, config: &StoreConfig) -> Result<Connection> {
    check_header(path)?;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|source| match source.sqlite_error_code() {
        Some(rusqlite::ErrorCode::CannotOpen) => StoreError::Io {
            context: "open",
            path: path.to_owned(),
            source: std::io::Error::other(source.to_string()),
        },
        _ => StoreError::sql("open the database")(source),
    })?;
    conn.busy_timeout(config.busy_timeout)
        .map_err(StoreError::sql("set the busy timeout"))?;

    // Read-only checks first: nothing below writes until the file is known to be ours.
    let app_id = pragma(&conn, "application_id", path)? as i32;
    let version: i64 = pragma(&conn, "user_version", path)?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(|e| not_a_db(e, path))?;
    if app_id != APPLICATION_ID && (app_id != 0 || version != 0 || tables != 0) {
        return Err(StoreError::ForeignDatabase {
            path: path.to_owned(),
            application_id: app_id,
        });
    }
    if version > CURRENT_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found: version,
            supported: CURRENT_VERSION,
        });
    }

    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(StoreError::sql("switch to WAL mode"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::InvalidInput(format!(
            "{} cannot use write-ahead logging (journal mode stays {mode}); put it on a local file system",
            path.display()
        )));
    }
    let sync = match config.durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA foreign_keys = OFF; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -16384;"
    ))
    .map_err(StoreError::sql("set pragmas"))?;
    migrate(&conn, version)?;
    crate::query::migrate_indexes(&conn, &config.indexes)?;
    crate::planner::at_open(&conn);
    Ok(conn)
}

/// Runs migrations `from + 1 ..= CURRENT_VERSION` in one transaction: a step that fails
/// rolls every one of them back.
fn migrate(conn: &Connection, from: i64) -> Result<()> {
    if from == CURRENT_VERSION {
        return Ok(());
    }
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)
        .map_err(StoreError::sql("begin the migration"))?;
    // Re-read inside the transaction: another process may have migrated meanwhile.
    let now: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(StoreError::sql("read the schema version"))?;
    for (i, steps) in MIGRATIONS.iter().enumerate().skip(now as usize) {
        for step in *steps {
            match step {
                Step::Sql(sql) => tx
                    .execute_batch(sql)
                    .map_err(StoreError::sql("apply a schema migration"))?,
                Step::Rust(convert) => convert.run(&tx)?,
            }
        }
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
            .map_err(StoreError::sql("record the schema version"))?;
    }
    tx.execute_batch(&format!("PRAGMA application_id = {APPLICATION_ID}"))
        .map_err(StoreError::sql("mark the file as tidesync's"))?;
    tx.commit().map_err(StoreError::sql("commit the migration"))
}

fn pragma(conn: &Connection, name: &str, path: &Path) -> Result<i64> {
    conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
        .map_err(|e| not_a_db(e, path))
}

fn not_a_db(e: rusqlite::Error, path: &Path) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => StoreError::NotADatabase {
            path: path.to_owned(),
        },
        _ => StoreError::sql("read the database header")(e),
    }
}

/// A non-empty file must start with SQLite's magic string; checked before SQLite touches it.
fn check_header(path: &Path) -> Result<()> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StoreError::Io {
                context: "open",
                path: path.to_owned(),
                source,
            })
        }
    };
    let mut header = Vec::with_capacity(16);
    file.by_ref()
        .take(16)
        .read_to_end(&mut header)
        .map_err(|source| StoreError::Io {
            context: "read",
            path: path.to_owned(),
            source,
        })?;
    if header.is_empty() || header == SQLITE_HEADER {
        Ok(())
    } else {
        Err(StoreError::NotADatabase {
            path: path.to_owned(),
        })
    }
}
