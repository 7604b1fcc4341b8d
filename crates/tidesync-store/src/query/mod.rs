//! Queries over the local view, run in SQLite (never by loading a collection into memory).
//!
//! A [`Query`] selects the live records of one collection with a [`Selector`] (the subset of
//! the Mango selector RxDB, PouchDB and CouchDB users know), sorts them by fields (each
//! ascending or descending, ties broken by id), pages through them with an opaque cursor,
//! and can project fields. Its JSON form is `{"selector": {...}, "sort": [...], "limit": n,
//! "fields": [...], "after": "..."}` ([`Query::from_json`]); docs/queries.md lists exactly
//! what is supported.
//!
//! How values compare, in one rule: a field's value has a **type class**, ordered
//! `missing < null < false < true < numbers < strings < arrays < objects`. Sorting orders by
//! class, then within a class by value (numbers numerically, strings by their UTF-8 bytes,
//! arrays and objects by their JSON text). A comparison (`$gt`, `$lt`, ...) only matches
//! values of its operand's class: `{"due": {"$lt": 5}}` never matches a string or a missing
//! `due`. `$eq`/`$ne`/`$in`/`$nin` compare class and value (`1` equals `1.0`, not `true`).
//!
//! What it does not do: joins, full-text search, regular expressions, array element matching
//! (`$elemMatch`), or computed fields.

mod eval;
mod index;
mod parse;
mod sql;

use tidesync_protocol::{CollectionName, RecordId, SpaceName};

use crate::records::Record;

pub use eval::{matches, sort_order};
pub(crate) use index::migrate_indexes;
pub use index::{IndexField, IndexSpec, Indexes};
pub use sql::{count, explain, page};

/// Nesting of `$and`/`$or`/`$not` a selector may use.
pub const MAX_DEPTH: usize = 16;
/// Operands of one `$in`/`$nin`.
pub const MAX_IN: usize = 1_000;
/// Segments of a dotted field path (`a.b.c` has 3).
pub const MAX_PATH_SEGMENTS: usize = 16;
/// Sort keys of one query.
pub const MAX_SORT_KEYS: usize = 8;
/// Most records in one page (and the default is 100).
pub const MAX_LIMIT: usize = 10_000;

/// A field of a document: its top-level name, or a dotted path into nested objects
/// (`address.city`). Array elements are not addressed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath(Vec<String>);

impl FieldPath {
    /// Parses `a.b.c`: 1 to [`MAX_PATH_SEGMENTS`] segments of 1 to 128 bytes, without `"`,
    /// `\` or control characters.
    pub fn parse(text: &str) -> Result<FieldPath, QueryError> {
        let segments: Vec<String> = text.split('.').map(str::to_owned).collect();
        if segments.len() > MAX_PATH_SEGMENTS {
            return Err(QueryError::at(
                text,
                format!("a field path has at most {MAX_PATH_SEGMENTS} segments"),
            ));
        }
        for s in &segments {
            if s.is_empty() || s.len() > 128 {
                return Err(QueryError::at(
                    text,
                    "each segment of a field path is 1 to 128 bytes (no empty segment, no leading or trailing dot)",
                ));
            }
            if s.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
                return Err(QueryError::at(
                    text,
                    "a field name may not contain a double quote, a backslash or a control character",
                ));
            }
        }
        Ok(FieldPath(segments))
    }

    /// The segments.
    pub fn segments(&self) -> &[String] {
        &self.0
    }

    /// The SQLite JSON path (`$."a"."b"`).
    pub(crate) fn json_path(&self) -> String {
        let mut path = String::from("$");
        for s in &self.0 {
            path.push_str(".\"");
            path.push_str(s);
            path.push('"');
        }
        path
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// A condition on one field.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// `$eq`: same class and value.
    Eq(serde_json::Value),
    /// `$ne`: not `$eq` (a missing field matches).
    Ne(serde_json::Value),
    /// `$gt`: a number or string greater than the operand (same class only).
    Gt(serde_json::Value),
    /// `$gte`.
    Gte(serde_json::Value),
    /// `$lt`.
    Lt(serde_json::Value),
    /// `$lte`.
    Lte(serde_json::Value),
    /// `$in`: `$eq` one of them.
    In(Vec<serde_json::Value>),
    /// `$nin`: `$eq` none of them (a missing field matches).
    Nin(Vec<serde_json::Value>),
    /// `$exists`: the field is there (a `null` value counts as there) or not.
    Exists(bool),
    /// `$beginsWith`: a string starting with the operand (by characters).
    BeginsWith(String),
    /// `$not` on a field: the condition does not hold.
    Not(Box<Cond>),
    /// Several conditions on one field (`{"due": {"$gte": 1, "$lt": 9}}`): all hold.
    All(Vec<Cond>),
}

/// Which records a query selects.
#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    /// Every record (`{}`).
    All,
    /// A condition on a field.
    Field(FieldPath, Cond),
    /// `$and`: every one.
    And(Vec<Selector>),
    /// `$or`: at least one.
    Or(Vec<Selector>),
    /// `$not`: not this one.
    Not(Box<Selector>),
}

/// One sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    /// The field.
    pub field: FieldPath,
    /// Descending instead of ascending.
    pub descending: bool,
}

/// A query over one collection of one space.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// The space.
    pub space: SpaceName,
    /// The collection.
    pub collection: CollectionName,
    /// Which records.
    pub selector: Selector,
    /// Their order (ties, and the whole order when empty, by id; the id follows the direction
    /// of the last key).
    pub sort: Vec<SortKey>,
    /// At most this many per page (default 100, at most [`MAX_LIMIT`]).
    pub limit: Option<usize>,
    /// Continue after this page's `next`.
    pub after: Option<String>,
    /// Return only these fields (default: the whole document).
    pub fields: Option<Vec<FieldPath>>,
}

impl Query {
    /// Every record of a collection, by id.
    pub fn all(space: SpaceName, collection: CollectionName) -> Query {
        Query {
            space,
            collection,
            selector: Selector::All,
            sort: Vec::new(),
            limit: None,
            after: None,
            fields: None,
        }
    }

    /// The query of the JSON form `{"selector", "sort", "limit", "fields", "after"}` (each
    /// optional) over `space`/`collection`.
    pub fn from_json(
        space: SpaceName,
        collection: CollectionName,
        json: &serde_json::Value,
    ) -> Result<Query, QueryError> {
        parse::query(space, collection, json)
    }

    /// Checks what parsing cannot: the limit and the `after` cursor (running it checks the
    /// same; this is for a query kept to run later, like a live one).
    pub fn validate(&self) -> Result<(), QueryError> {
        self.page_size()?;
        if let Some(after) = &self.after {
            sql::decode_after(after, self.sort.len())?;
        }
        Ok(())
    }

    pub(crate) fn page_size(&self) -> Result<usize, QueryError> {
        match self.limit {
            None => Ok(100),
            Some(0) => Err(QueryError::at("limit", "the limit is at least 1")),
            Some(n) if n > MAX_LIMIT => Err(QueryError::at(
                "limit",
                format!("the limit is at most {MAX_LIMIT}; page through with \"after\""),
            )),
            Some(n) => Ok(n),
        }
    }
}

/// One page of a query's result.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryPage {
    /// The records, in the query's order (projected if it asked for fields).
    pub records: Vec<Record>,
    /// Pass as the query's `after` for the next page; `None` when this was the last.
    pub next: Option<String>,
}

impl QueryPage {
    /// The ids, in order.
    pub fn ids(&self) -> Vec<&RecordId> {
        self.records.iter().map(|r| &r.key.id).collect()
    }
}

/// A query that cannot run: what is wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid query at {at}: {problem}")]
pub struct QueryError {
    /// The offending part (`selector.due.$gt`, `sort[1]`, `limit`, ...).
    pub at: String,
    /// What is wrong with it, and what is accepted.
    pub problem: String,
}

impl QueryError {
    pub(crate) fn at(at: impl Into<String>, problem: impl Into<String>) -> QueryError {
        QueryError {
            at: at.into(),
            problem: problem.into(),
        }
    }
}
