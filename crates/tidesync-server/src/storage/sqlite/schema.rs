//! The server database: schema, migrations, and the safe open sequence.

use std::io::Read;
use std::path::Path;

use rusqlite::{params, Connection, OpenFlags};
use tidesync_core::{wire, RecordState};

use crate::storage::StorageError;

/// How much of the database file readers map into memory (`PRAGMA mmap_size`): SQLite's
/// largest (its compile-time `SQLITE_MAX_MMAP_SIZE`, just under 2 GiB); pages beyond it are
/// read with `read()` as usual.
pub const MMAP_BYTES: u64 = 0x7fff_0000;

/// `PRAGMA application_id` of a tidesync server database ("TSSV").
pub const APPLICATION_ID: i32 = 0x5453_5356;

/// One step of a migration. Every step of every pending migration runs in one transaction,
/// so a failing step (SQL or Rust) leaves the file as it was.
enum Step {
    /// SQL run as a batch.
    Sql(&'static str),
    /// Rust code, for what SQL cannot do (converting stored JSON); `Err` says what is wrong.
    Rust(fn(&Connection) -> Result<(), String>),
}

/// Migration `i` takes the schema from version `i` to `i + 1`. Released migrations never
/// change: add a new one.
const MIGRATIONS: &[&[Step]] = &[
    &[Step::Sql(V1)],
    &[
        Step::Sql(V2_CREATE),
        Step::Rust(v2_copy_records),
        Step::Sql(V2_SWAP),
    ],
    &[Step::Sql(V3)],
    &[Step::Sql(V4), Step::Rust(v4_start_the_clocks)],
];

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

// V2: `records` holds each record's wire form (what a pull hands out, spliced without
// parsing) instead of `tidesync_core::RecordState` JSON. `doc` is the document as JSON text,
// NULL when the record is deleted (its liveness register says dead); `stamps` is
// its `RecordStamps` JSON (removed fields keep their stamp there); `versions` the space
// version at which each register last changed, `version` when anything last changed.
// Deleted records stay as tombstones so pulls can hand out the delete.
//
// Rows are keyed by (space, version), the order pulls read them in: a pull page is one range
// of the table, read in storage order, whatever other spaces hold, and a space's new writes
// are appended to its range. Each write of a record gets a new version of its space, so the
// key is unique; a write moves the record's row (delete at the old version, insert at the
// new). `records_by_key` finds a record by name for pushes.
const V2_CREATE: &str = r#"
CREATE TABLE records_v2 (
    space      TEXT NOT NULL,
    version    INTEGER NOT NULL,
    collection TEXT NOT NULL,
    id         TEXT NOT NULL,
    doc        TEXT,
    stamps     TEXT NOT NULL,
    versions   TEXT NOT NULL,
    PRIMARY KEY (space, version)
) WITHOUT ROWID;
"#;

const V2_SWAP: &str = r#"
DROP TABLE records;
ALTER TABLE records_v2 RENAME TO records;
CREATE UNIQUE INDEX records_by_key ON records (space, collection, id);
"#;

// V3: each record's echo chain (`storage::echo`): whose faithful writes its state is, so a
// pull can send it back to that writer as an echo. NULL: no chain (also for every record
// written before V3: they are sent in full, as before).
const V3: &str = "ALTER TABLE records ADD COLUMN echo TEXT;";

// V4: the history horizon (`storage::prune`) and the time of each client's last push.
// - `records.deleted_at`: when the record last changed while deleted (ms since the epoch),
//   NULL while it is live; old tombstones are pruned by it, through a partial index that
//   holds only tombstones.
// - `rejected.rejected_at`: when the rejection was remembered (ms); pruned by it.
// - `spaces.horizon`: the newest version of the space's pruned tombstones (0: none). A pull
//   from a cursor above 0 and below it is answered `cursor_reset`.
// - `clients.last_push_at`: the time of the client's last push transaction (ms), NULL until
//   its first push after V4.
// - `downloads`: per client and space, the horizon at which the client began downloading
//   the space from scratch (recorded only when the space had pruned history). Its later
//   pages carry cursors below that horizon and are served while the horizon has not moved
//   (`storage::page::check_cursor`).
// Tombstones and rejections from before V4 get the time of the migration (in the Rust step),
// so they are kept `retain_deleted` from the upgrade, never pruned early.
const V4: &str = r#"
ALTER TABLE records ADD COLUMN deleted_at INTEGER;
CREATE INDEX records_by_deleted_at ON records (deleted_at) WHERE deleted_at IS NOT NULL;
ALTER TABLE rejected ADD COLUMN rejected_at INTEGER NOT NULL DEFAULT 0;
CREATE INDEX rejected_by_time ON rejected (rejected_at);
ALTER TABLE spaces ADD COLUMN horizon INTEGER NOT NULL DEFAULT 0;
ALTER TABLE clients ADD COLUMN last_push_at INTEGER;
CREATE TABLE downloads (
    client_id TEXT NOT NULL,
    space     TEXT NOT NULL,
    horizon   INTEGER NOT NULL,
    PRIMARY KEY (client_id, space)
) WITHOUT ROWID;
"#;

/// Dates the tombstones and rejections stored before V4 at the time of the migration.
fn v4_start_the_clocks(conn: &Connection) -> Result<(), String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    conn.execute(
        "UPDATE records SET deleted_at = ?1 WHERE doc IS NULL",
        [now],
    )
    .and_then(|_| conn.execute("UPDATE rejected SET rejected_at = ?1", [now]))
    .map(|_| ())
    .map_err(|e| format!("date the existing tombstones and rejections: {e}"))
}

/// Copies every V1 record into `records_v2`, converting its `state` to the wire form.
fn v2_copy_records(conn: &Connection) -> Result<(), String> {
    let sql = |e: rusqlite::Error| format!("copy the records: {e}");
    let mut read = conn
        .prepare("SELECT space, collection, id, version, state, versions FROM records")
        .map_err(sql)?;
    let mut write = conn
        .prepare(
            "INSERT INTO records_v2 (space, collection, id, version, doc, stamps, versions)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(sql)?;
    let mut rows = read.query([]).map_err(sql)?;
    while let Some(row) = rows.next().map_err(sql)? {
        let text = |i: usize| -> Result<&str, String> {
            row.get_ref(i)
                .and_then(|v| v.as_str().map_err(Into::into))
                .map_err(sql)
        };
        let (space, collection, id) = (text(0)?, text(1)?, text(2)?);
        let version: i64 = row.get(3).map_err(sql)?;
        let state: RecordState = serde_json::from_str(text(4)?).map_err(|e| {
            format!(
                "the stored state of record {space}/{collection}/{id} is not a record state ({e})"
            )
        })?;
        let wire = wire::encode(&state);
        write
            .execute(params![
                space,
                collection,
                id,
                version,
                wire.doc,
                wire.stamps,
                text(5)?
            ])
            .map_err(sql)?;
    }
    Ok(())
}

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
    // Reads go through a memory map of up to MMAP_BYTES of the file: pull pages are random
    // lookups in `records`, and mapped pages cost no read() call, no copy into SQLite's
    // cache and no cache mutex (a bootstrap pull ran ~35% faster). Writes still go through
    // the WAL.
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -65536; PRAGMA wal_autocheckpoint = 10000;
         PRAGMA mmap_size = {MMAP_BYTES};"
    ))
    .map_err(internal("set pragmas"))?;
    if migrate {
        let tx =
            rusqlite::Transaction::new_unchecked(&conn, rusqlite::TransactionBehavior::Immediate)
                .map_err(internal("begin the migration"))?;
        let now: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(internal("read the schema version"))?;
        for (i, steps) in MIGRATIONS.iter().enumerate().skip(now as usize) {
            for step in *steps {
                let result = match step {
                    Step::Sql(sql) => tx.execute_batch(sql).map_err(|e| e.to_string()),
                    Step::Rust(run) => run(&tx),
                };
                // Dropping `tx` on the way out rolls every step back.
                result.map_err(|e| {
                    StorageError::Internal(format!(
                        "cannot migrate {} to server schema version {}: {e}; the database was not changed",
                        path.display(),
                        i + 1
                    ))
                })?;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v1_fixture_is_the_released_v1_migration() {
        let fixture = include_str!("../../../tests/fixtures/schema_v1.sql");
        let (_, sql) = fixture
            .split_once("--- V1 ---")
            .unwrap_or_else(|| unreachable!("the fixture has its marker"));
        assert_eq!(sql, V1, "V1 is released: never edit it (or its fixture)");
    }

    /// Tables and indexes as SQLite keeps them.
    fn master(conn: &Connection) -> Vec<(String, String, Option<String>)> {
        let mut stmt = conn
            .prepare("SELECT type, name, sql FROM sqlite_master ORDER BY name")
            .expect("prepare");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .and_then(|rows| rows.collect())
            .expect("read sqlite_master")
    }

    #[test]
    fn the_v3_fixture_is_what_the_released_migrations_made() {
        let fixture = include_str!("../../../tests/fixtures/schema_v3.sql");
        let (_, sql) = fixture
            .split_once("--- V3 ---")
            .unwrap_or_else(|| unreachable!("the fixture has its marker"));
        let from_fixture = Connection::open_in_memory().expect("memory");
        from_fixture.execute_batch(sql).expect("the fixture runs");
        let migrated = Connection::open_in_memory().expect("memory");
        for steps in &MIGRATIONS[..3] {
            for step in *steps {
                match step {
                    Step::Sql(sql) => migrated.execute_batch(sql).expect("a released step"),
                    Step::Rust(run) => run(&migrated).expect("a released step"),
                }
            }
        }
        assert_eq!(
            master(&from_fixture),
            master(&migrated),
            "V1 to V3 are released: never edit them (or the fixture)"
        );
    }
}
