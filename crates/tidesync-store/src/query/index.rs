//! Declared indexes: expression indexes over the view, created and dropped at open so the
//! file holds exactly the declared ones.
//!
//! An index on fields `[f1, f2]` of collection `c` is `(space, collection, rank(f1),
//! value(f1), rank(f2), value(f2), id)` over `records`, the same expressions queries use,
//! so SQLite serves from it a query that filters `c` on `f1` (equality, a range, `$in`) and
//! sorts by `f2`, or sorts by `f1, f2`. Its name carries a hash of its definition: a changed
//! declaration is a new index (the old one is dropped), an unchanged one is kept as is.

use std::collections::BTreeSet;

use rusqlite::Connection;
use tidesync_protocol::CollectionName;

use super::sql::{rank, value};
use super::FieldPath;
use crate::{Result, StoreError};

/// One field of a declared index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IndexField {
    /// The field (dotted paths reach into nested objects).
    pub field: FieldPath,
    /// Descending (matters for sorts that mix directions).
    pub descending: bool,
}

/// An index the app declares for the queries it runs on a collection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IndexSpec {
    /// The collection (in every space).
    pub collection: CollectionName,
    /// Its fields, in order.
    pub fields: Vec<IndexField>,
}

impl IndexSpec {
    /// An ascending index on `fields` of `collection`.
    pub fn new(
        collection: CollectionName,
        fields: &[&str],
    ) -> std::result::Result<IndexSpec, super::QueryError> {
        Ok(IndexSpec {
            collection,
            fields: fields
                .iter()
                .map(|f| {
                    Ok(IndexField {
                        field: FieldPath::parse(f)?,
                        descending: false,
                    })
                })
                .collect::<std::result::Result<_, super::QueryError>>()?,
        })
    }

    /// The index of JSON `fields` (`["project", {"due": "desc"}]`, as a query's `sort`) on
    /// `collection`.
    pub fn from_json(
        collection: CollectionName,
        fields: &serde_json::Value,
    ) -> std::result::Result<IndexSpec, super::QueryError> {
        let keys = super::parse::sort_keys(fields, "fields")?;
        Ok(IndexSpec {
            collection,
            fields: keys
                .into_iter()
                .map(|k| IndexField {
                    field: k.field,
                    descending: k.descending,
                })
                .collect(),
        })
    }

    /// The index's column list.
    fn columns(&self) -> String {
        let mut columns = vec!["space".to_owned(), "collection".to_owned()];
        for f in &self.fields {
            let dir = if f.descending { " DESC" } else { "" };
            columns.push(format!("{}{dir}", rank(&f.field)));
            columns.push(format!("{}{dir}", value(&f.field)));
        }
        columns.push("id".into());
        columns.join(", ")
    }

    /// Its name: the collection and a hash of the definition.
    pub fn name(&self) -> String {
        let definition = format!("{}:{}", self.collection, self.columns());
        let hash = definition.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        format!("ts_idx_{}_{hash:016x}", self.collection)
    }
}

/// Which declared indexes a store keeps at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Indexes {
    /// Exactly these: missing ones are created, ones no longer declared are dropped. An app
    /// declares its indexes this way (the default declares none).
    Declared(Vec<IndexSpec>),
    /// Whatever the file has, untouched: for tools that open an app's database (the CLI),
    /// which must not drop the app's indexes.
    Keep,
}

impl Default for Indexes {
    fn default() -> Self {
        Indexes::Declared(Vec::new())
    }
}

/// Makes the file's declared indexes exactly `specs`: creates the missing ones, drops the
/// ones no longer declared. Creating an index on a large collection takes a while (about a
/// second per million records here); it happens once.
pub(crate) fn migrate_indexes(conn: &Connection, indexes: &Indexes) -> Result<()> {
    let specs = match indexes {
        Indexes::Declared(specs) => specs,
        Indexes::Keep => return Ok(()),
    };
    let wanted: BTreeSet<String> = specs.iter().map(IndexSpec::name).collect();
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'ts\\_idx\\_%' ESCAPE '\\'")
        .map_err(StoreError::sql("list declared indexes"))?;
    let existing: BTreeSet<String> = stmt
        .query_map([], |r| r.get(0))
        .map_err(StoreError::sql("list declared indexes"))?
        .collect::<rusqlite::Result<_>>()
        .map_err(StoreError::sql("list declared indexes"))?;
    drop(stmt);
    if wanted == existing {
        return Ok(());
    }
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)
        .map_err(StoreError::sql("begin an index migration"))?;
    for stale in existing.difference(&wanted) {
        tx.execute_batch(&format!("DROP INDEX IF EXISTS \"{stale}\""))
            .map_err(StoreError::sql("drop an index no longer declared"))?;
    }
    for spec in specs.iter().filter(|s| !existing.contains(&s.name())) {
        tx.execute_batch(&format!(
            "CREATE INDEX IF NOT EXISTS \"{}\" ON records ({})",
            spec.name(),
            spec.columns()
        ))
        .map_err(StoreError::sql("create a declared index"))?;
    }
    tx.commit()
        .map_err(StoreError::sql("commit an index migration"))
}
