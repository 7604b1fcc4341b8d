//! The store's error type: one enum, stable codes, context at the I/O site.

use std::path::PathBuf;

use tidesync_protocol::ValidationError;

use crate::restoration::RestorationError;

/// Everything that can go wrong in the store. Each message says what happened and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file exists but is not an SQLite database. It was not modified.
    #[error("{path} is not an SQLite database (its header is wrong); nothing was changed. Open a different path, or move the file away if it is not needed")]
    NotADatabase {
        /// The file.
        path: PathBuf,
    },
    /// The file is an SQLite database that belongs to another application.
    #[error("{path} is an SQLite database of another application (application_id {application_id:#x}); tidesync will not modify it. Use a separate file for tidesync")]
    ForeignDatabase {
        /// The file.
        path: PathBuf,
        /// Its `PRAGMA application_id`.
        application_id: i32,
    },
    /// The file was written by a newer tidesync with a schema this version does not know.
    #[error("{path} uses tidesync schema version {found}, but this build supports up to {supported}; upgrade the app (the file was not changed)")]
    TooNew {
        /// The file.
        path: PathBuf,
        /// Schema version in the file.
        found: i64,
        /// Newest schema version this build knows.
        supported: i64,
    },
    /// SQLite reports the file as damaged.
    #[error("the database file is corrupt ({detail}) while trying to {context}; restore it from a backup or delete it to resync from the server (unsynced changes in it are lost)")]
    Corrupt {
        /// What the store was doing.
        context: &'static str,
        /// SQLite's words.
        detail: String,
    },
    /// Another handle or process held the database lock longer than the busy timeout.
    #[error("the database is locked by another connection (while trying to {context}); retry, or make sure only one process writes to it at a time")]
    Busy {
        /// What the store was doing.
        context: &'static str,
    },
    /// The disk (or the database's size cap) is full. Nothing was written; the call can be
    /// retried once space is freed.
    #[error("the disk is full (while trying to {context}); nothing was written and nothing is lost: free some space on the device, and retry")]
    DiskFull {
        /// What the store was doing.
        context: &'static str,
    },
    /// The database file cannot be written (opened read-only, or the file or its folder
    /// lost write permission). Nothing was written.
    #[error("the database file is read-only ({detail}) while trying to {context}; nothing was written: make the file and its folder writable again, and retry")]
    ReadOnly {
        /// What the store was doing.
        context: &'static str,
        /// SQLite's words.
        detail: String,
    },
    /// The operating system failed a read or write of the database file (storage removed,
    /// permissions changed under an open file, a failing device). The transaction was
    /// rolled back.
    #[error("the device failed to read or write the database file ({detail}) while trying to {context}; nothing was written: check that the storage is present and writable, and retry")]
    DiskIo {
        /// What the store was doing.
        context: &'static str,
        /// SQLite's words.
        detail: String,
    },
    /// A name, id or stamp broke a protocol rule.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A query cannot run (the error names the offending part).
    #[error(transparent)]
    InvalidQuery(#[from] crate::query::QueryError),
    /// An argument is not acceptable, for the reason given.
    #[error("{0}")]
    InvalidInput(String),
    /// A document or value is larger than allowed.
    #[error("{what} is {size} bytes; the limit is {limit} bytes")]
    TooLarge {
        /// What was too large.
        what: String,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Something referred to by id does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// Restoration state could not be written.
    #[error(transparent)]
    Restoration(#[from] RestorationError),
    /// The hybrid logical clock cannot advance.
    #[error(transparent)]
    Clock(#[from] tidesync_core::ClockError),
    /// Stored data does not parse: the file was modified outside tidesync.
    #[error("stored {what} does not parse ({detail}); the file was modified outside tidesync")]
    BadStoredData {
        /// What was being read.
        what: &'static str,
        /// Parser's words.
        detail: String,
    },
    /// Any other SQLite failure.
    #[error("SQLite failed to {context}: {}", one_line(.source))]
    Sqlite {
        /// What the store was doing.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
    /// A file system operation failed.
    #[error("could not {context} {path}: {source}")]
    Io {
        /// What the store was doing.
        context: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// Maps a rusqlite error at the place it happened: `.map_err(StoreError::sql("append to outbox"))`.
    pub(crate) fn sql(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
        move |source| {
            use rusqlite::ErrorCode as C;
            match source.sqlite_error_code() {
                Some(C::DatabaseBusy | C::DatabaseLocked) => StoreError::Busy { context },
                Some(C::DiskFull) => StoreError::DiskFull { context },
                Some(C::ReadOnly) => StoreError::ReadOnly {
                    context,
                    detail: one_line(&source),
                },
                Some(C::SystemIoFailure) => StoreError::DiskIo {
                    context,
                    detail: one_line(&source),
                },
                Some(C::DatabaseCorrupt | C::NotADatabase) => StoreError::Corrupt {
                    context,
                    detail: one_line(&source),
                },
                _ => StoreError::Sqlite { context, source },
            }
        }
    }

    pub(crate) fn bad_json(what: &'static str) -> impl FnOnce(serde_json::Error) -> StoreError {
        move |e| StoreError::BadStoredData {
            what,
            detail: e.to_string(),
        }
    }

    /// Whether trying the same call again later may succeed without anyone changing the
    /// data: the lock was held, the disk was full, the file was not writable or the device
    /// failed for a while. Corrupt or foreign files, bad input and unreadable stored data
    /// stay as they are until someone acts.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Busy { .. }
                | StoreError::DiskFull { .. }
                | StoreError::ReadOnly { .. }
                | StoreError::DiskIo { .. }
        )
    }

    /// A stable machine-readable code (for FFI and logs).
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::NotADatabase { .. } => "not_a_database",
            StoreError::ForeignDatabase { .. } => "foreign_database",
            StoreError::TooNew { .. } => "schema_too_new",
            StoreError::Corrupt { .. } => "corrupt",
            StoreError::Busy { .. } => "busy",
            StoreError::DiskFull { .. } => "disk_full",
            StoreError::ReadOnly { .. } => "read_only",
            StoreError::DiskIo { .. } => "disk_io",
            StoreError::Invalid(_) | StoreError::InvalidInput(_) | StoreError::InvalidQuery(_) => {
                "invalid_input"
            }
            StoreError::TooLarge { .. } => "too_large",
            StoreError::NotFound(_) => "not_found",
            StoreError::Restoration(_) => "restoration",
            StoreError::Clock(_) => "clock",
            StoreError::BadStoredData { .. } => "bad_stored_data",
            StoreError::Sqlite { .. } => "sqlite",
            StoreError::Io { .. } => "io",
        }
    }
}

/// `error` on one line: SQLite quotes SQL (a damaged schema's `CREATE TABLE`, a failed
/// query) newlines and all, and the CLI promises exactly one `error:` line.
fn one_line(error: &impl std::fmt::Display) -> String {
    error
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The store's result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
