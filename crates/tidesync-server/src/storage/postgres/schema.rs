//! The server's tables in PostgreSQL and their numbered migrations.
//!
//! Every table is prefixed `ts_` so the backend can share a database (better: a schema of
//! its own, `?options=-csearch_path%3Dtidesync`) with an application's tables. Migrations run
//! in one transaction under an advisory lock, so several nodes starting at once migrate once
//! and the others wait, then find the schema current.

use tokio_postgres::Client;

use crate::storage::postgres::db_error;
use crate::storage::StorageError;

/// Migration `i` takes the schema from version `i` to `i + 1`. Released migrations never
/// change: add a new one.
const MIGRATIONS: &[&str] = &[V1, V2];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

// Records keep the wire form a pull hands out (document and stamps as JSON text, spliced
// into responses without parsing; `text`, not `jsonb`, so nothing reorders or re-encodes
// them). `doc` is NULL for a deleted record (a tombstone, kept so pulls hand out the
// delete). `version` is the space version of the record's last change: unique within the
// space, the order pulls read in (`ts_records_by_version`).
const V1: &str = r#"
CREATE TABLE ts_spaces (
    space   text PRIMARY KEY,
    version bigint NOT NULL
);

CREATE TABLE ts_clients (
    client_id text PRIMARY KEY,
    user_id   text NOT NULL,
    last_seq  bigint NOT NULL
);

CREATE TABLE ts_records (
    space      text NOT NULL,
    collection text NOT NULL,
    id         text NOT NULL,
    version    bigint NOT NULL,
    doc        text,
    stamps     text NOT NULL,
    versions   text NOT NULL,
    PRIMARY KEY (space, collection, id)
);
CREATE UNIQUE INDEX ts_records_by_version ON ts_records (space, version);

CREATE TABLE ts_rejected (
    client_id text NOT NULL,
    seq       bigint NOT NULL,
    code      text NOT NULL,
    message   text NOT NULL,
    PRIMARY KEY (client_id, seq)
);

CREATE TABLE ts_tokens (
    hash       bytea PRIMARY KEY,
    user_id    text NOT NULL,
    grants     text NOT NULL,
    created_at bigint NOT NULL
);
"#;

// Each record's echo chain (`storage::echo`), NULL for none (and for records written before
// V2, which are sent in full as before).
const V2: &str = "ALTER TABLE ts_records ADD COLUMN echo text;";

/// Brings the schema up to [`SCHEMA_VERSION`]; refuses, changing nothing, a schema written
/// by a newer build.
pub(crate) async fn migrate(client: &mut Client) -> Result<(), StorageError> {
    let tx = client
        .transaction()
        .await
        .map_err(db_error("begin the migration"))?;
    // One migration at a time per schema, across every node.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.tidesync_migrations'))",
        &[],
    )
    .await
    .map_err(db_error("take the migration lock"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS ts_migrations (
             version    integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(db_error("create the migrations table"))?;
    let now: i64 = tx
        .query_one(
            "SELECT coalesce(max(version), 0)::int8 FROM ts_migrations",
            &[],
        )
        .await
        .map_err(db_error("read the schema version"))?
        .get(0);
    if now > SCHEMA_VERSION {
        return Err(StorageError::Internal(format!(
            "the PostgreSQL schema is at tidesync version {now}, newer than this build supports \
             ({SCHEMA_VERSION}); upgrade tidesync"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(now as usize) {
        let version = i as i32 + 1;
        tx.batch_execute(sql).await.map_err(|e| {
            StorageError::Internal(format!(
                "cannot migrate the PostgreSQL schema to tidesync version {version}: {e}; \
                 nothing was changed"
            ))
        })?;
        tx.execute(
            "INSERT INTO ts_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(db_error("record the schema version"))?;
    }
    tx.commit().await.map_err(db_error("commit the migration"))
}
