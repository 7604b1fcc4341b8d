//! [`Reader`]: a read-only connection to a store's file, for queries that must not wait for
//! (or hold up) the handle that writes: the live queries of a client run on one.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::config::StoreConfig;
use crate::query::{self, Query, QueryPage};
use crate::{Result, StoreError};

/// Reads committed state only; never writes. Open it after the [`crate::Store`] (which
/// creates and migrates the file).
#[derive(Debug)]
pub struct Reader {
    conn: Connection,
}

impl Reader {
    /// A read-only connection to the store at `path`.
    pub fn open(path: impl AsRef<Path>, config: &StoreConfig) -> Result<Reader> {
        let conn = Connection::open_with_flags(
            path.as_ref(),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(StoreError::sql("open a reader"))?;
        conn.busy_timeout(config.busy_timeout)
            .map_err(StoreError::sql("set the busy timeout"))?;
        conn.execute_batch("PRAGMA query_only = ON; PRAGMA cache_size = -8192;")
            .map_err(StoreError::sql("set reader pragmas"))?;
        Ok(Reader { conn })
    }

    /// One page of a query.
    pub fn query(&self, query: &Query) -> Result<QueryPage> {
        query::page(&self.conn, query)
    }

    /// A number that changes whenever another connection (this process's store, or another
    /// process) commits to the file (`PRAGMA data_version`).
    pub fn data_version(&self) -> Result<i64> {
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(StoreError::sql("read the data version"))
    }

    /// How many records a query selects.
    pub fn count(&self, query: &Query) -> Result<u64> {
        query::count(&self.conn, query)
    }
}
