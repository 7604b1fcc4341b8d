//! The database schema and its numbered migrations.
//!
//! `PRAGMA user_version` holds the schema version; `PRAGMA application_id` marks the file as
//! tidesync's. Migration `n` (1-based) upgrades version `n - 1` to `n`; all pending
//! migrations run in one transaction, so an interrupted (or failed) upgrade leaves the old
//! version whole. A migration is a list of [`Step`]s: SQL, or Rust for data conversions SQL
//! cannot express. Never edit a released migration: append a new one, and add its fixture to
//! the migration tests (`tests/migrations.rs`), which open a database of every older version.
//!
//! The current meaning of the columns whose format changed since version 1:
//! - `records.base` (version 2): the confirmed server state in its wire form joined into one
//!   JSON object, `{"doc":…,"stamps":…}` (`tidesync_core::wire::join`): the document as the
//!   server sent it (`null` when deleted) and its `RecordStamps`. NULL if the server has not
//!   sent the record. Version 1 stored the JSON of `tidesync_core::RecordState` instead.

use std::fmt;

use rusqlite::Connection;

use crate::Result;

/// `PRAGMA application_id` of a tidesync client database ("TSYN").
pub const APPLICATION_ID: i32 = 0x5453_594e;

/// Migrations in order; index 0 creates version 1. Each runs its steps in order.
pub const MIGRATIONS: &[&[Step]] = &[
    &[Step::Sql(V1)],
    &[
        Step::Rust(Convert {
            what: "convert record bases to the wire form",
            run: crate::v2_bases::convert,
        }),
        Step::Sql(V2),
    ],
    &[Step::Sql(V3)],
];

/// The schema version this build writes.
pub const CURRENT_VERSION: i64 = MIGRATIONS.len() as i64;

/// One step of a migration, run inside the migration's transaction.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    /// A batch of SQL statements.
    Sql(&'static str),
    /// A data conversion written in Rust.
    Rust(Convert),
}

/// A migration step in Rust: reads and rewrites rows through the migration's connection.
#[derive(Clone, Copy)]
pub struct Convert {
    what: &'static str,
    run: fn(&Connection) -> Result<()>,
}

impl Convert {
    /// What the step does.
    pub fn what(&self) -> &'static str {
        self.what
    }

    pub(crate) fn run(&self, conn: &Connection) -> Result<()> {
        (self.run)(conn)
    }
}

impl fmt::Debug for Convert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Convert").field("what", &self.what).finish()
    }
}

const V1: &str = r#"
-- Small key/value facts: client_id, session_id, last_synced_at, has_synced.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- The write counters, one row. The live counters are the larger of this row and the newest
-- outbox row; the row is saved before outbox rows are deleted (confirmation, rejection) and
-- when pulled stamps move the clock, so seqs and stamps never repeat after a drain.
CREATE TABLE clock (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    last_seq INTEGER NOT NULL,
    last_tx  INTEGER NOT NULL,
    last_hlc INTEGER NOT NULL
);

-- Pull cursor: per space, the last server version received.
CREATE TABLE cursor (
    space   TEXT PRIMARY KEY,
    version INTEGER NOT NULL
) WITHOUT ROWID;

-- One row per known record. `doc` is the local view (base + pending mutations), NULL when
-- the record is absent or deleted in the view. `base` is the confirmed server state as
-- last-writer-wins registers (JSON of tidesync_core::RecordState), NULL if the server has
-- not sent this record. `pending` counts the record's mutations still in the outbox.
CREATE TABLE records (
    space        TEXT NOT NULL,
    collection   TEXT NOT NULL,
    id           TEXT NOT NULL,
    doc          TEXT,
    base         TEXT,
    base_version INTEGER NOT NULL DEFAULT 0,
    pending      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (space, collection, id)
) WITHOUT ROWID;

-- The outbox: local mutations not yet confirmed, in seq order.
-- state: 0 queued, 1 sending, 2 acked (acked_version may be NULL when the server
-- acknowledged a retried duplicate without telling the version).
CREATE TABLE outbox (
    seq           INTEGER PRIMARY KEY,
    tx            INTEGER NOT NULL,
    space         TEXT NOT NULL,
    collection    TEXT NOT NULL,
    id            TEXT NOT NULL,
    op            TEXT NOT NULL,
    hlc           INTEGER NOT NULL,
    base_version  INTEGER NOT NULL,
    state         INTEGER NOT NULL DEFAULT 0,
    acked_version INTEGER,
    attempts      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);
CREATE INDEX outbox_by_record ON outbox (space, collection, id, seq);
-- Only rows being sent: lets open requeue them without scanning the outbox.
CREATE INDEX outbox_sending ON outbox (state) WHERE state = 1;

-- Mutations the server refused, with the reason. Their local effect has been rolled back.
CREATE TABLE rejections (
    seq          INTEGER PRIMARY KEY,
    tx           INTEGER NOT NULL,
    space        TEXT NOT NULL,
    collection   TEXT NOT NULL,
    id           TEXT NOT NULL,
    op           TEXT NOT NULL,
    hlc          INTEGER NOT NULL,
    base_version INTEGER NOT NULL,
    code         TEXT NOT NULL,
    message      TEXT NOT NULL,
    rejected_at  INTEGER NOT NULL
);

-- Conflicts reported by the server for applied mutations, until the app resolves them.
CREATE TABLE conflicts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    seq         INTEGER NOT NULL,
    space       TEXT NOT NULL,
    collection  TEXT NOT NULL,
    record_id   TEXT NOT NULL,
    version     INTEGER NOT NULL,
    fields      TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

-- Restoration state entries (values in the restoration codec).
CREATE TABLE restoration (
    lifetime INTEGER NOT NULL,
    bucket   TEXT NOT NULL,
    key      TEXT NOT NULL,
    tag      TEXT NOT NULL,
    version  INTEGER NOT NULL,
    value    BLOB NOT NULL,
    PRIMARY KEY (lifetime, bucket, key)
) WITHOUT ROWID;

INSERT INTO clock (id, last_seq, last_tx, last_hlc) VALUES (1, 0, 0, 0);
"#;

/// Version 2 (after the Rust step that rewrites `records.base` to the joined wire form).
const V2: &str = r#"
-- Acknowledged mutations by space and version: a pull finds those its cursor confirms
-- through this index instead of scanning the outbox.
CREATE INDEX outbox_acked ON outbox (space, acked_version) WHERE acked_version IS NOT NULL;
"#;

/// Version 3: echoes (protocol 2).
const V3: &str = r#"
-- Records a pull sent as echoes this store could not rebuild from its own mutations: the
-- next pulls ask the server for them in full (`refetch`). Until then a complete pull does
-- not count as one.
CREATE TABLE refetch (
    space      TEXT NOT NULL,
    collection TEXT NOT NULL,
    id         TEXT NOT NULL,
    PRIMARY KEY (space, collection, id)
) WITHOUT ROWID;
"#;
