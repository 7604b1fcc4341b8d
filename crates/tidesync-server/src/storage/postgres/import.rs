//! Copying an embedded server's SQLite database into PostgreSQL (what `tidesync
//! migrate-storage` runs), so clients carry on against the new backend with the cursors and
//! sequence numbers they have.
//!
//! What is copied: every space's version and horizon, every client's owner, `last_seq` and
//! `last_push_at`, every record at its version (document, stamps and register versions as
//! stored, the same wire form on both backends, and a tombstone's `deleted_at`), the
//! remembered rejections with their `rejected_at`, the tokens (by hash), and where clients
//! began downloading spaces past pruned history. What is not: the
//! server HLC in `meta` (PostgreSQL nodes observe the stored stamps of every record they
//! plan over, so the clock needs no seed).
//!
//! - **Nothing changed on bad input**: the source is opened read-only and must be a tidesync
//!   server database at the current schema; the target must hold no tidesync data. Both are
//!   checked before a row is written.
//! - **All or nothing**: the rows are inserted in ONE PostgreSQL transaction (the tables
//!   locked against writers), so a failure part way leaves the target as empty as it was.
//! - **One snapshot of the source**: every row is read in one SQLite read transaction, on a
//!   thread of its own (SQLite stays off the async executor), batches handed over a bounded
//!   channel.
//!
//! What it does not do: copy from a server that is still writing to the file (stop it first;
//! a write after the snapshot would be missing from the target), or merge into a target that
//! already has data.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_postgres::NoTls;

use crate::storage::postgres::{db_error, describe, parse_url, schema, with_causes};
use crate::storage::sqlite::APPLICATION_ID;
use crate::storage::StorageError;

/// The server database inside a data directory.
const DATABASE_FILE: &str = "server.db";

/// The SQLite server schema (`PRAGMA user_version`) this import reads. The SQLite backend
/// migrates its file to this version on open; the test `the_import_reads_the_current_sqlite_schema`
/// fails when a new SQLite migration makes this stale.
const SQLITE_SCHEMA_VERSION: i64 = 4;

/// Rows per `INSERT … SELECT * FROM unnest(…)` statement.
const BATCH_ROWS: usize = 5_000;

/// How long the connection may take to roll back and close after the copy.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Batches read ahead of the PostgreSQL writes.
const READ_AHEAD: usize = 2;

/// One table of the copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImportTable {
    /// Space versions (`spaces` → `ts_spaces`).
    Spaces,
    /// Clients with their owner and `last_seq` (`clients` → `ts_clients`).
    Clients,
    /// Records (`records` → `ts_records`).
    Records,
    /// Remembered rejections (`rejected` → `ts_rejected`).
    Rejected,
    /// API tokens (`tokens` → `ts_tokens`).
    Tokens,
    /// Where clients began downloading spaces past pruned history (`downloads` →
    /// `ts_downloads`).
    Downloads,
}

impl ImportTable {
    /// Every table, in copy order.
    pub const ALL: [ImportTable; 6] = [
        ImportTable::Spaces,
        ImportTable::Clients,
        ImportTable::Records,
        ImportTable::Rejected,
        ImportTable::Tokens,
        ImportTable::Downloads,
    ];

    /// A plural noun for messages ("records").
    pub fn noun(self) -> &'static str {
        match self {
            ImportTable::Spaces => "spaces",
            ImportTable::Clients => "clients",
            ImportTable::Records => "records",
            ImportTable::Rejected => "rejections",
            ImportTable::Tokens => "tokens",
            ImportTable::Downloads => "download horizons",
        }
    }

    fn spec(self) -> &'static TableSpec {
        match self {
            ImportTable::Spaces => &SPACES,
            ImportTable::Clients => &CLIENTS,
            ImportTable::Records => &RECORDS,
            ImportTable::Rejected => &REJECTED,
            ImportTable::Tokens => &TOKENS,
            ImportTable::Downloads => &DOWNLOADS,
        }
    }
}

/// How far the copy is, after each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportProgress {
    /// The table being copied.
    pub table: ImportTable,
    /// Rows of every table copied so far.
    pub done: u64,
    /// Rows of every table to copy.
    pub total: u64,
}

/// What was copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// The SQLite file read.
    pub source: PathBuf,
    /// The PostgreSQL database written (`user@host:port/db`, no password).
    pub target: String,
    /// Space versions copied.
    pub spaces: u64,
    /// Clients copied.
    pub clients: u64,
    /// Records copied (tombstones included).
    pub records: u64,
    /// Remembered rejections copied.
    pub rejected: u64,
    /// Tokens copied.
    pub tokens: u64,
    /// Download horizons copied.
    pub downloads: u64,
}

impl ImportReport {
    /// The rows copied of `table`.
    pub fn count(&self, table: ImportTable) -> u64 {
        match table {
            ImportTable::Spaces => self.spaces,
            ImportTable::Clients => self.clients,
            ImportTable::Records => self.records,
            ImportTable::Rejected => self.rejected,
            ImportTable::Tokens => self.tokens,
            ImportTable::Downloads => self.downloads,
        }
    }

    fn set(&mut self, table: ImportTable, n: u64) {
        match table {
            ImportTable::Spaces => self.spaces = n,
            ImportTable::Clients => self.clients = n,
            ImportTable::Records => self.records = n,
            ImportTable::Rejected => self.rejected = n,
            ImportTable::Tokens => self.tokens = n,
            ImportTable::Downloads => self.downloads = n,
        }
    }
}

/// The SQLite type of a column, and so the PostgreSQL array it goes into.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Text,
    NullableText,
    Int,
    NullableInt,
    Bytes,
}

/// Where one table's rows come from and go to.
#[derive(Debug)]
struct TableSpec {
    source: &'static str,
    target: &'static str,
    select: &'static str,
    insert: &'static str,
    kinds: &'static [Kind],
}

// Each SELECT reads in primary-key order (storage order of these WITHOUT ROWID tables); each
// INSERT takes one array per column.
const SPACES: TableSpec = TableSpec {
    source: "spaces",
    target: "ts_spaces",
    select: "SELECT space, version, horizon FROM spaces ORDER BY space",
    insert: "INSERT INTO ts_spaces (space, version, horizon)
             SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[])",
    kinds: &[Kind::Text, Kind::Int, Kind::Int],
};

const CLIENTS: TableSpec = TableSpec {
    source: "clients",
    target: "ts_clients",
    select: "SELECT client_id, user_id, last_seq, last_push_at FROM clients ORDER BY client_id",
    insert: "INSERT INTO ts_clients (client_id, user_id, last_seq, last_push_at)
             SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[])",
    kinds: &[Kind::Text, Kind::Text, Kind::Int, Kind::NullableInt],
};

const RECORDS: TableSpec = TableSpec {
    source: "records",
    target: "ts_records",
    select: "SELECT space, collection, id, version, doc, stamps, versions, echo, deleted_at
             FROM records ORDER BY space, version",
    insert: "INSERT INTO ts_records
                 (space, collection, id, version, doc, stamps, versions, echo, deleted_at)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[],
                                  $5::text[], $6::text[], $7::text[], $8::text[], $9::int8[])",
    kinds: &[
        Kind::Text,
        Kind::Text,
        Kind::Text,
        Kind::Int,
        Kind::NullableText,
        Kind::Text,
        Kind::Text,
        Kind::NullableText,
        Kind::NullableInt,
    ],
};

const REJECTED: TableSpec = TableSpec {
    source: "rejected",
    target: "ts_rejected",
    select: "SELECT client_id, seq, code, message, rejected_at FROM rejected
             ORDER BY client_id, seq",
    insert: "INSERT INTO ts_rejected (client_id, seq, code, message, rejected_at)
             SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::int8[])",
    kinds: &[Kind::Text, Kind::Int, Kind::Text, Kind::Text, Kind::Int],
};

const TOKENS: TableSpec = TableSpec {
    source: "tokens",
    target: "ts_tokens",
    select: "SELECT hash, user_id, grants, created_at FROM tokens ORDER BY hash",
    insert: "INSERT INTO ts_tokens (hash, user_id, grants, created_at)
             SELECT * FROM unnest($1::bytea[], $2::text[], $3::text[], $4::int8[])",
    kinds: &[Kind::Bytes, Kind::Text, Kind::Text, Kind::Int],
};

const DOWNLOADS: TableSpec = TableSpec {
    source: "downloads",
    target: "ts_downloads",
    select: "SELECT client_id, space, horizon FROM downloads ORDER BY client_id, space",
    insert: "INSERT INTO ts_downloads (client_id, space, horizon)
             SELECT * FROM unnest($1::text[], $2::text[], $3::int8[])",
    kinds: &[Kind::Text, Kind::Text, Kind::Int],
};

/// One column of a batch.
#[derive(Debug)]
enum Column {
    Text(Vec<String>),
    NullableText(Vec<Option<String>>),
    Int(Vec<i64>),
    NullableInt(Vec<Option<i64>>),
    Bytes(Vec<Vec<u8>>),
}

impl Column {
    fn new(kind: Kind) -> Column {
        match kind {
            Kind::Text => Column::Text(Vec::with_capacity(BATCH_ROWS)),
            Kind::NullableText => Column::NullableText(Vec::with_capacity(BATCH_ROWS)),
            Kind::Int => Column::Int(Vec::with_capacity(BATCH_ROWS)),
            Kind::NullableInt => Column::NullableInt(Vec::with_capacity(BATCH_ROWS)),
            Kind::Bytes => Column::Bytes(Vec::with_capacity(BATCH_ROWS)),
        }
    }

    fn push(&mut self, row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<()> {
        match self {
            Column::Text(v) => v.push(row.get(i)?),
            Column::NullableText(v) => v.push(row.get(i)?),
            Column::Int(v) => v.push(row.get(i)?),
            Column::NullableInt(v) => v.push(row.get(i)?),
            Column::Bytes(v) => v.push(row.get(i)?),
        }
        Ok(())
    }

    fn as_param(&self) -> &(dyn ToSql + Sync) {
        match self {
            Column::Text(v) => v,
            Column::NullableText(v) => v,
            Column::Int(v) => v,
            Column::NullableInt(v) => v,
            Column::Bytes(v) => v,
        }
    }
}

/// What the reader thread hands over.
#[derive(Debug)]
enum Read {
    /// Rows of `table`; `rows` of them in each column.
    Batch {
        table: ImportTable,
        rows: usize,
        columns: Vec<Column>,
    },
    /// The reader failed; nothing after this.
    Failed(StorageError),
}

/// Copies the tidesync server database `from` (a data directory, or the `server.db` in it)
/// into the PostgreSQL database at `to_url` (migrated first if needed), calling `progress`
/// after every batch. Refuses, changing neither, a source that is not a tidesync server
/// database at the current schema and a target that already holds tidesync data.
pub async fn import_sqlite(
    from: &Path,
    to_url: &str,
    mut progress: impl FnMut(ImportProgress),
) -> Result<ImportReport, StorageError> {
    let source = source_file(from)?;
    let (conn, counts) = {
        let source = source.clone();
        tokio::task::spawn_blocking(move || open_source(&source))
            .await
            .map_err(|e| StorageError::Internal(format!("the SQLite reader failed: {e}")))??
    };

    let config = parse_url(to_url)?;
    let target = describe(&config);
    let (mut client, connection) = config.connect(NoTls).await.map_err(|e| {
        StorageError::Unavailable(format!(
            "cannot connect to PostgreSQL at {target}: {}",
            with_causes(&e)
        ))
    })?;
    let driver = tokio::spawn(connection);
    let result = copy(&mut client, conn, &counts, &target, &mut progress).await;
    if result.is_ok() {
        // Fresh statistics for the planner after a bulk load; the data is committed, so a
        // failure here is only a warning (autovacuum analyzes later anyway).
        if let Err(e) = client
            .batch_execute(
                "ANALYZE ts_spaces, ts_clients, ts_records, ts_rejected, ts_tokens, ts_downloads",
            )
            .await
        {
            tracing::warn!(error = %e, "ANALYZE after the import failed");
        }
    }
    // A failed copy's transaction was dropped, which queues its ROLLBACK; dropping the client
    // lets the connection send it and close. Waiting here means that when this returns the
    // table locks are released (a caller that goes on using the database would otherwise
    // wait on them).
    drop(client);
    let mut driver = driver;
    if tokio::time::timeout(CLOSE_WAIT, &mut driver).await.is_err() {
        driver.abort();
    }
    let mut report = ImportReport {
        source,
        target,
        spaces: 0,
        clients: 0,
        records: 0,
        rejected: 0,
        tokens: 0,
        downloads: 0,
    };
    for (table, n) in result? {
        report.set(table, n);
    }
    Ok(report)
}

/// The database file of `from`: the `server.db` of a data directory, or a file named directly.
fn source_file(from: &Path) -> Result<PathBuf, StorageError> {
    let meta = std::fs::metadata(from).map_err(|e| {
        StorageError::Internal(format!(
            "cannot read {}: {e}; give the data directory of the embedded server (--data-dir)",
            from.display()
        ))
    })?;
    let file = if meta.is_dir() {
        from.join(DATABASE_FILE)
    } else {
        from.to_owned()
    };
    if !file.is_file() {
        return Err(StorageError::Internal(format!(
            "{} holds no tidesync server database ({DATABASE_FILE} is missing); give the \
             data directory of the embedded server (--data-dir)",
            from.display()
        )));
    }
    Ok(file)
}

/// Opens `path` read-only, checks it is a tidesync server database at the current schema,
/// begins the read transaction the whole copy reads in and counts the rows.
fn open_source(path: &Path) -> Result<(Connection, Vec<(ImportTable, u64)>), StorageError> {
    let not_ours = |detail: String| {
        StorageError::Internal(format!(
            "{} is not a tidesync server database ({detail}); nothing was copied",
            path.display()
        ))
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| not_ours(e.to_string()))?;
    let _ = conn.busy_timeout(std::time::Duration::from_secs(5));
    let pragma = |name: &str| -> Result<i64, StorageError> {
        conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .map_err(|e| not_ours(e.to_string()))
    };
    let app_id = pragma("application_id")?;
    if app_id as i32 != APPLICATION_ID {
        return Err(not_ours(format!(
            "its application id is {app_id:#x}, a tidesync server's is {APPLICATION_ID:#x}"
        )));
    }
    let version = pragma("user_version")?;
    if version < SQLITE_SCHEMA_VERSION {
        return Err(StorageError::Internal(format!(
            "{} uses server schema version {version}, older than this build's \
             ({SQLITE_SCHEMA_VERSION}); start `tidesync serve --data-dir` on it once (that \
             migrates it), stop it, then run migrate-storage again",
            path.display()
        )));
    }
    if version > SQLITE_SCHEMA_VERSION {
        return Err(StorageError::Internal(format!(
            "{} uses server schema version {version}, newer than this build supports \
             ({SQLITE_SCHEMA_VERSION}); upgrade tidesync",
            path.display()
        )));
    }
    // Every count and row below comes from this one snapshot (WAL readers see the database
    // as of their first read).
    conn.execute_batch("BEGIN DEFERRED")
        .map_err(|e| sqlite_error(path, "begin a read", e))?;
    let mut counts = Vec::with_capacity(ImportTable::ALL.len());
    for table in ImportTable::ALL {
        let spec = table.spec();
        let n: i64 = conn
            .query_row(&format!("SELECT count(*) FROM {}", spec.source), [], |r| {
                r.get(0)
            })
            .map_err(|e| sqlite_error(path, spec.source, e))?;
        counts.push((table, n as u64));
    }
    Ok((conn, counts))
}

fn sqlite_error(path: &Path, what: &str, e: rusqlite::Error) -> StorageError {
    StorageError::Internal(format!(
        "cannot read {what} from {}: {e}; nothing was copied",
        path.display()
    ))
}

/// Reads every table of `conn` in batches into `tx`, stopping when the receiver is gone.
fn read_all(path: &Path, conn: &Connection, tx: &mpsc::Sender<Read>) {
    for table in ImportTable::ALL {
        if let Err(e) = read_table(conn, table, tx) {
            let _ = tx.blocking_send(Read::Failed(sqlite_error(path, table.spec().source, e)));
            return;
        }
    }
}

fn read_table(
    conn: &Connection,
    table: ImportTable,
    tx: &mpsc::Sender<Read>,
) -> rusqlite::Result<()> {
    let spec = table.spec();
    let mut stmt = conn.prepare(spec.select)?;
    let mut rows = stmt.query([])?;
    let fresh = || {
        spec.kinds
            .iter()
            .map(|k| Column::new(*k))
            .collect::<Vec<_>>()
    };
    let mut columns = fresh();
    let mut n = 0;
    loop {
        let row = rows.next()?;
        if let Some(row) = row {
            for (i, column) in columns.iter_mut().enumerate() {
                column.push(row, i)?;
            }
            n += 1;
        }
        if n == BATCH_ROWS || (row.is_none() && n > 0) {
            let batch = Read::Batch {
                table,
                rows: n,
                columns: std::mem::replace(&mut columns, fresh()),
            };
            if tx.blocking_send(batch).is_err() {
                return Ok(()); // the writer gave up; its error is the one reported
            }
            n = 0;
        }
        if row.is_none() {
            return Ok(());
        }
    }
}

/// The copy itself, in one PostgreSQL transaction; returns the rows copied per table.
async fn copy(
    client: &mut tokio_postgres::Client,
    conn: Connection,
    counts: &[(ImportTable, u64)],
    target: &str,
    progress: &mut impl FnMut(ImportProgress),
) -> Result<Vec<(ImportTable, u64)>, StorageError> {
    schema::migrate(client).await?;
    let tx = client
        .transaction()
        .await
        .map_err(db_error("begin the import"))?;
    // Writers (a node started too early) wait for the import; readers are not blocked.
    tx.batch_execute(
        "LOCK TABLE ts_spaces, ts_clients, ts_records, ts_rejected, ts_tokens, ts_downloads
         IN EXCLUSIVE MODE",
    )
    .await
    .map_err(db_error("lock the tables"))?;
    let mut occupied = Vec::new();
    for table in ImportTable::ALL {
        let spec = table.spec();
        let sql = format!("SELECT EXISTS (SELECT 1 FROM {})", spec.target);
        let any: bool = tx
            .query_one(&sql, &[])
            .await
            .map_err(db_error("check that the target is empty"))?
            .get(0);
        if any {
            occupied.push(spec.target);
        }
    }
    if !occupied.is_empty() {
        return Err(StorageError::Internal(format!(
            "PostgreSQL at {target} already holds tidesync data (rows in {}); migrate-storage \
             only copies into an empty database: give --to a new database or schema \
             (?options=-csearch_path%3DNAME); nothing was changed",
            occupied.join(", ")
        )));
    }

    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    let (sender, mut batches) = mpsc::channel(READ_AHEAD);
    let reader = tokio::task::spawn_blocking(move || {
        let path = conn.path().map(PathBuf::from).unwrap_or_default();
        read_all(&path, &conn, &sender);
        // Dropping `conn` ends the read transaction.
    });
    let mut statements = std::collections::HashMap::new();
    for table in ImportTable::ALL {
        let stmt = tx
            .prepare(table.spec().insert)
            .await
            .map_err(db_error("prepare the import"))?;
        statements.insert(table, stmt);
    }
    let mut copied: Vec<(ImportTable, u64)> = ImportTable::ALL.iter().map(|t| (*t, 0)).collect();
    let mut done = 0u64;
    // Returning early drops `batches` (the reader stops) and `tx` (rolled back).
    while let Some(read) = batches.recv().await {
        let (table, rows, columns) = match read {
            Read::Batch {
                table,
                rows,
                columns,
            } => (table, rows, columns),
            Read::Failed(e) => return Err(e),
        };
        let spec = table.spec();
        let stmt = statements.get(&table).ok_or_else(|| {
            StorageError::Internal(format!("no statement prepared for {}", spec.source))
        })?;
        let params: Vec<&(dyn ToSql + Sync)> = columns.iter().map(Column::as_param).collect();
        let inserted = tx.execute(stmt, &params).await.map_err(|e| {
            StorageError::Internal(format!(
                "cannot copy {} into {}: {}; nothing was changed",
                spec.source,
                spec.target,
                with_causes(&e)
            ))
        })?;
        if inserted != rows as u64 {
            return Err(StorageError::Internal(format!(
                "PostgreSQL inserted {inserted} of {rows} rows of {}; nothing was changed",
                spec.source
            )));
        }
        if let Some((_, n)) = copied.iter_mut().find(|(t, _)| *t == table) {
            *n += inserted;
        }
        done += inserted;
        progress(ImportProgress { table, done, total });
    }
    reader
        .await
        .map_err(|e| StorageError::Internal(format!("the SQLite reader failed: {e}")))?;
    if copied != counts {
        return Err(StorageError::Internal(format!(
            "the copy is incomplete ({copied:?} of {counts:?}); nothing was changed"
        )));
    }
    tx.commit().await.map_err(db_error("commit the import"))?;
    Ok(copied)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn the_import_reads_the_current_sqlite_schema() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(DATABASE_FILE);
        let storage = crate::storage::sqlite::SqliteStorage::open(
            &path,
            crate::config::MergeRules::default(),
        )
        .expect("open");
        drop(storage);
        let conn = Connection::open(&path).expect("open");
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("user_version");
        assert_eq!(
            version, SQLITE_SCHEMA_VERSION,
            "the SQLite schema moved on: update the import (its SELECTs and \
             SQLITE_SCHEMA_VERSION) to read it"
        );
        let (_, counts) = open_source(&path).expect("a fresh server database is importable");
        assert!(counts.iter().all(|(_, n)| *n == 0), "{counts:?}");
    }

    #[test]
    fn a_missing_source_and_a_foreign_file_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("nope");
        let err = source_file(&missing).expect_err("missing").to_string();
        assert!(err.contains("cannot read"), "{err}");
        let err = source_file(dir.path()).expect_err("empty dir").to_string();
        assert!(err.contains("server.db is missing"), "{err}");

        let other = dir.path().join("other.db");
        Connection::open(&other)
            .and_then(|c| c.execute_batch("CREATE TABLE t (x); PRAGMA user_version = 2"))
            .expect("another app's database");
        let err = open_source(&other).expect_err("foreign").to_string();
        assert!(err.contains("is not a tidesync server database"), "{err}");

        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, vec![0x5a; 4096]).expect("write");
        let err = open_source(&junk).expect_err("junk").to_string();
        assert!(err.contains("is not a tidesync server database"), "{err}");
    }

    #[test]
    fn an_older_schema_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(DATABASE_FILE);
        Connection::open(&path)
            .and_then(|c| {
                c.execute_batch(&format!(
                    "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = 1"
                ))
            })
            .expect("a v1 header");
        let err = open_source(&path).expect_err("v1").to_string();
        assert!(err.contains("start `tidesync serve --data-dir`"), "{err}");
    }

    /// A server database with `records` records over two spaces (every third a tombstone),
    /// three clients, two rejections and two tokens, written straight with SQL.
    fn fill(path: &Path, records: usize) {
        let storage =
            crate::storage::sqlite::SqliteStorage::open(path, crate::config::MergeRules::default())
                .expect("open");
        drop(storage);
        let mut conn = Connection::open(path).expect("open");
        let tx = conn.transaction().expect("begin");
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO records
                         (space, version, collection, id, doc, stamps, versions, deleted_at)
                     VALUES (?1, ?2, 'todos', ?3, ?4, '{}', '{}', ?5)",
                )
                .expect("prepare");
            for i in 0..records {
                let space = if i % 2 == 0 { "a" } else { "b" };
                let doc = (i % 3 != 0).then(|| format!("{{\"n\":{i}}}"));
                let deleted_at = doc.is_none().then_some(1_000 + i as i64);
                insert
                    .execute(rusqlite::params![
                        space,
                        i as i64 / 2 + 1,
                        format!("r{i}"),
                        doc,
                        deleted_at
                    ])
                    .expect("insert");
            }
        }
        let half = records.div_ceil(2);
        tx.execute_batch(&format!(
            "INSERT INTO spaces VALUES ('a', {half}, 3), ('b', {}, 0);
             INSERT INTO clients VALUES ('c1', 'alice', 9, 77), ('c2', 'alice', 1, NULL), ('c3', 'bob', 4, 78);
             INSERT INTO rejected VALUES ('c1', 3, 'stale_base', 'no', 5), ('c3', 4, 'rule_violation', 'no', 6);
             INSERT INTO tokens VALUES (x'00ff10', 'alice', '{{}}', 1), (x'ab', 'bob', '{{}}', 2);
             INSERT INTO downloads VALUES ('c2', 'a', 3);",
            records as i64 / 2
        ))
        .expect("fill");
        tx.commit().expect("commit");
    }

    fn pg_counts(db: &tidesync_testkit::TestDatabase) -> Vec<String> {
        ImportTable::ALL
            .iter()
            .map(|t| {
                let sql = format!("SELECT count(*) FROM {}", t.spec().target);
                db.query(&sql)[0][0].clone().unwrap_or_default()
            })
            .collect()
    }

    #[tokio::test]
    async fn a_copy_over_several_batches_is_exact_and_reports_progress() {
        let Some(db) = tidesync_testkit::TestDatabase::create("import_batches") else {
            return;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let records = BATCH_ROWS * 2 + 11;
        fill(&dir.path().join(DATABASE_FILE), records);
        let mut seen = Vec::new();
        let report = import_sqlite(dir.path(), db.url(), |p| seen.push(p))
            .await
            .expect("import");
        assert_eq!(
            (
                report.spaces,
                report.clients,
                report.records,
                report.rejected,
                report.tokens,
                report.downloads
            ),
            (2, 3, records as u64, 2, 2, 1)
        );
        assert!(!report.target.contains("search_path"), "{}", report.target);
        let total = 2 + 3 + records as u64 + 2 + 2 + 1;
        assert!(seen.iter().all(|p| p.total == total), "{seen:?}");
        assert!(seen.windows(2).all(|w| w[0].done < w[1].done), "{seen:?}");
        assert_eq!(seen.last().map(|p| p.done), Some(total));
        let record_batches = seen
            .iter()
            .filter(|p| p.table == ImportTable::Records)
            .count();
        assert_eq!(record_batches, 3, "{seen:?}");
        // Values arrive as stored: NULL documents stay NULL, token hashes byte for byte.
        let rows = db.query(
            "SELECT count(*) FILTER (WHERE doc IS NULL), max(version) FROM ts_records WHERE space = 'a'",
        );
        let tombstones = (0..records).filter(|i| i % 2 == 0 && i % 3 == 0).count();
        assert_eq!(rows[0][0].as_deref(), Some(tombstones.to_string().as_str()));
        assert_eq!(
            rows[0][1].as_deref(),
            Some(records.div_ceil(2).to_string().as_str())
        );
        let rows = db.query("SELECT encode(hash, 'hex'), user_id FROM ts_tokens ORDER BY hash");
        assert_eq!(rows[0][0].as_deref(), Some("00ff10"));
        assert_eq!(rows[1][1].as_deref(), Some("bob"));
        let rows = db.query(
            "SELECT last_seq, last_push_at FROM ts_clients WHERE client_id IN ('c1', 'c2') ORDER BY client_id",
        );
        assert_eq!(rows[0][0].as_deref(), Some("9"));
        assert_eq!(rows[0][1].as_deref(), Some("77"));
        assert_eq!(rows[1][1], None);
        // The horizon's columns arrive as stored.
        let rows = db.query("SELECT horizon FROM ts_spaces ORDER BY space");
        assert_eq!(rows, [[Some("3".to_owned())], [Some("0".to_owned())]]);
        let rows = db.query("SELECT rejected_at FROM ts_rejected ORDER BY client_id");
        assert_eq!(rows, [[Some("5".to_owned())], [Some("6".to_owned())]]);
        let rows = db.query(
            "SELECT count(*) FROM ts_records WHERE (doc IS NULL) <> (deleted_at IS NOT NULL)",
        );
        assert_eq!(
            rows[0][0].as_deref(),
            Some("0"),
            "deleted_at is kept per tombstone"
        );

        // A second copy into the same target is refused and changes nothing.
        let before = pg_counts(&db);
        let err = import_sqlite(dir.path(), db.url(), |_| {})
            .await
            .expect_err("a target with data")
            .to_string();
        assert!(err.contains("already holds tidesync data"), "{err}");
        assert!(err.contains("ts_records"), "{err}");
        assert_eq!(pg_counts(&db), before);
    }

    #[tokio::test]
    async fn a_failure_part_way_leaves_the_target_empty() {
        let Some(db) = tidesync_testkit::TestDatabase::create("import_rollback") else {
            return;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(DATABASE_FILE);
        fill(&path, BATCH_ROWS + 10);
        // The last record read has a version that is not a number (SQLite lets a column hold
        // anything): the batches before it are already in PostgreSQL when the read fails.
        Connection::open(&path)
            .and_then(|c| {
                c.execute(
                    "INSERT INTO records VALUES ('zz', 'not a number', 'todos', 'bad', NULL, '{}', '{}', NULL, NULL)",
                    [],
                )
            })
            .expect("a bad row");
        let mut progressed = 0;
        let err = import_sqlite(dir.path(), db.url(), |_| progressed += 1)
            .await
            .expect_err("a bad row fails the copy")
            .to_string();
        assert!(err.contains("nothing was copied"), "{err}");
        assert!(progressed >= 2, "rows were written before the failure");
        assert_eq!(pg_counts(&db), ["0", "0", "0", "0", "0", "0"]);
    }

    #[test]
    fn batches_split_at_batch_rows() {
        let conn = Connection::open_in_memory().expect("memory");
        conn.execute_batch(
            "CREATE TABLE spaces (space TEXT PRIMARY KEY, version INTEGER NOT NULL,
                                  horizon INTEGER NOT NULL DEFAULT 0)",
        )
        .expect("table");
        let n = BATCH_ROWS * 2 + 7;
        {
            let mut insert = conn
                .prepare("INSERT INTO spaces (space, version) VALUES (?1, ?2)")
                .expect("prepare");
            for i in 0..n {
                insert
                    .execute(rusqlite::params![format!("s{i:06}"), i as i64])
                    .expect("insert");
            }
        }
        let (tx, mut rx) = mpsc::channel(16);
        read_table(&conn, ImportTable::Spaces, &tx).expect("read");
        drop(tx);
        let mut sizes = Vec::new();
        while let Ok(read) = rx.try_recv() {
            match read {
                Read::Batch { rows, columns, .. } => {
                    match &columns[0] {
                        Column::Text(v) => assert_eq!(v.len(), rows),
                        other => panic!("spaces are text: {other:?}"),
                    }
                    sizes.push(rows);
                }
                Read::Failed(e) => panic!("{e}"),
            }
        }
        assert_eq!(sizes, [BATCH_ROWS, BATCH_ROWS, 7]);
    }
}
