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
const MIGRATIONS: &[&str] = &[V1, V2, V3];

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

// The history horizon (`storage::prune`) and the time of each client's last push, as in the
// SQLite schema's V4: `deleted_at` (ms; NULL while live) with a partial index holding only
// tombstones, `rejected_at` (ms), `horizon` (the newest version of the space's pruned
// tombstones), `last_push_at` (ms; NULL until the client's first push after this) and
// `ts_downloads` (per client and space, the horizon at which the client began downloading
// the space from scratch).
// Tombstones and rejections from before are dated at the migration, so they are kept
// `retain_deleted` from the upgrade.
const V3: &str = r#"
ALTER TABLE ts_records ADD COLUMN deleted_at bigint;
UPDATE ts_records SET deleted_at = (extract(epoch FROM now()) * 1000)::bigint WHERE doc IS NULL;
CREATE INDEX ts_records_by_deleted_at ON ts_records (deleted_at) WHERE deleted_at IS NOT NULL;
ALTER TABLE ts_rejected ADD COLUMN rejected_at bigint NOT NULL DEFAULT 0;
UPDATE ts_rejected SET rejected_at = (extract(epoch FROM now()) * 1000)::bigint;
CREATE INDEX ts_rejected_by_time ON ts_rejected (rejected_at);
ALTER TABLE ts_spaces ADD COLUMN horizon bigint NOT NULL DEFAULT 0;
ALTER TABLE ts_clients ADD COLUMN last_push_at bigint;
CREATE TABLE ts_downloads (
    client_id text NOT NULL,
    space     text NOT NULL,
    horizon   bigint NOT NULL,
    PRIMARY KEY (client_id, space)
);
"#;

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::storage::{Prune, PullInput, Storage};
    use tidesync_protocol::{ClientId, Cursor, SpaceName};

    const FIXTURE_V2: &str = include_str!("../../../tests/fixtures/pg_schema_v2.sql");

    /// The fixture's migrations (after the header), each as released.
    fn fixture() -> (&'static str, &'static str) {
        let (_, rest) = FIXTURE_V2
            .split_once("--- V1 ---")
            .unwrap_or_else(|| unreachable!("the fixture has its V1 marker"));
        let (v1, v2) = rest
            .split_once("--- V2 ---\n")
            .unwrap_or_else(|| unreachable!("the fixture has its V2 marker"));
        (v1, v2.trim_end_matches('\n'))
    }

    #[test]
    fn the_v2_fixture_is_the_released_migrations() {
        assert_eq!(
            fixture(),
            (V1, V2),
            "V1 and V2 are released: never edit them (or the fixture)"
        );
    }

    /// A version 2 schema, as a version 2 node left it: a live record and a tombstone, a
    /// client, a remembered rejection.
    fn build_v2(db: &tidesync_testkit::TestDatabase) {
        let (v1, v2) = fixture();
        db.execute(&format!(
            "{v1}{v2};
             CREATE TABLE ts_migrations (
                 version    integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );
             INSERT INTO ts_migrations (version) VALUES (1), (2);
             INSERT INTO ts_spaces VALUES ('team:1', 2);
             INSERT INTO ts_clients VALUES ('old', 'alice', 3);
             INSERT INTO ts_records (space, collection, id, version, doc, stamps, versions)
             VALUES ('team:1', 'todos', 'live', 1, '{{\"n\":1}}', '{{}}', '{{}}'),
                    ('team:1', 'todos', 'gone', 2, NULL, '{{}}', '{{}}');
             INSERT INTO ts_rejected VALUES ('old', 3, 'stale_base', 'no');"
        ));
    }

    fn now_ms() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_version_2_schema_is_dated_at_the_migration_and_then_pruned() {
        let Some(db) = tidesync_testkit::TestDatabase::create("pg_v2_to_v3") else {
            return;
        };
        build_v2(&db);
        let before = now_ms();
        let storage = crate::storage::postgres::PostgresStorage::connect(
            db.url(),
            crate::config::MergeRules::default(),
        )
        .await
        .expect("a version 2 schema migrates");
        let after = now_ms();
        let version = db.query("SELECT max(version) FROM ts_migrations");
        assert_eq!(version[0][0].as_deref(), Some("3"));
        let dated = |sql: &str| -> Option<u64> {
            db.query(sql)[0][0]
                .as_deref()
                .map(|v| v.parse().expect("a number"))
        };
        // The tombstone and the rejection are dated at the migration; the live record and
        // the client carry no time; nothing was pruned yet.
        let gone = dated("SELECT deleted_at FROM ts_records WHERE id = 'gone'").expect("dated");
        assert!(
            (before..=after).contains(&gone),
            "{before} <= {gone} <= {after}"
        );
        assert_eq!(
            dated("SELECT deleted_at FROM ts_records WHERE id = 'live'"),
            None
        );
        let rejected = dated("SELECT rejected_at FROM ts_rejected").expect("dated");
        assert!((before..=after).contains(&rejected));
        assert_eq!(dated("SELECT last_push_at FROM ts_clients"), None);
        assert_eq!(dated("SELECT horizon FROM ts_spaces"), Some(0));

        // Pruned once they are older than the cutoff, which moves the horizon past the
        // tombstone: a cursor before it is reset, one at it is served.
        let kept = storage
            .prune(Prune {
                cutoff_ms: before - 1,
                rejections_cutoff_ms: before - 1,
                batch: 10,
            })
            .await
            .expect("prune");
        assert_eq!(kept, crate::storage::Pruned::default());
        let pruned = storage
            .prune(Prune {
                cutoff_ms: after,
                rejections_cutoff_ms: after,
                batch: 10,
            })
            .await
            .expect("prune");
        assert_eq!((pruned.tombstones, pruned.rejections), (1, 1));
        assert_eq!(dated("SELECT horizon FROM ts_spaces"), Some(2));
        let space = SpaceName::new("team:1").expect("valid");
        let pull = |from: u64| PullInput {
            user: "alice".into(),
            client_id: ClientId::new("reader").expect("valid"),
            cursor: Cursor::from([(space.clone(), from)]),
            spaces: vec![space.clone()],
            limit: 100,
            echoes: false,
            refetch: Vec::new(),
        };
        let err = storage.pull(pull(1)).await.expect_err("behind the horizon");
        assert!(
            matches!(err, StorageError::CursorBehindHorizon { horizon: 2, .. }),
            "{err}"
        );
        assert!(storage.pull(pull(2)).await.is_ok());
        let fresh = storage.pull(pull(0)).await.expect("a bootstrap is served");
        assert_eq!(fresh.changes.len(), 1, "the live record alone");
        storage.shutdown().await;
    }
}
