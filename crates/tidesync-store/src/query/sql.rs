//! A query as SQL over `records`, and running it.
//!
//! Every field appears through two expressions, the same in queries and in declared indexes
//! (so SQLite matches them): its class, [`rank`], and its value, [`value`]. A condition
//! compares both (`rank = 4 AND value > ?` is "a number greater than"), which also keeps
//! every condition two-valued (never SQL NULL), so `$not` and `$ne` are plain `NOT`.
//! Keyset pagination compares (rank, value) of each sort key with the last row's, then ids.

use std::fmt::Write as _;

use rusqlite::types::Value as Sql;
use rusqlite::Connection;
use serde_json::Value;
use tidesync_protocol::{RecordId, RecordKey};

use super::eval::{class, project};
use super::{Cond, FieldPath, Query, QueryError, QueryPage, Selector};
use crate::records::{parse_doc, Record};
use crate::{Result, StoreError};

/// The class expression of `path` (missing 0, null 1, false 2, true 3, number 4, string 5,
/// array 6, object 7).
pub(crate) fn rank(path: &FieldPath) -> String {
    let p = literal(&path.json_path());
    format!(
        "(CASE json_type(doc, {p}) WHEN 'null' THEN 1 WHEN 'false' THEN 2 WHEN 'true' THEN 3 \
         WHEN 'integer' THEN 4 WHEN 'real' THEN 4 WHEN 'text' THEN 5 WHEN 'array' THEN 6 \
         WHEN 'object' THEN 7 ELSE 0 END)"
    )
}

/// The value expression of `path`.
pub(crate) fn value(path: &FieldPath) -> String {
    format!("json_extract(doc, {})", literal(&path.json_path()))
}

/// `text` as an SQL string literal. Field paths are embedded, not bound, so that SQLite can
/// match the expressions of declared indexes.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A JSON operand as the SQL value `json_extract` would give for it.
fn bind(value: &Value) -> Sql {
    match value {
        Value::Null => Sql::Null,
        Value::Bool(b) => Sql::Integer(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) if !n.is_f64() => Sql::Integer(i),
            _ => Sql::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Sql::Text(s.clone()),
        // Containers compare by their JSON text.
        other => Sql::Text(other.to_string()),
    }
}

struct Compiler {
    sql: String,
    params: Vec<Sql>,
}

impl Compiler {
    fn param(&mut self, value: Sql) -> String {
        self.params.push(value);
        format!("?{}", self.params.len())
    }

    /// Same class and value as `x`.
    fn eq(&mut self, path: &FieldPath, x: &Value) -> String {
        let k = class(Some(x));
        match k {
            // Classes of one value each: the class is the value. The value is named too
            // (redundantly: what `json_extract` gives for null, false, true) so that an
            // index on this field and a later one can serve the query past this column.
            1 => format!("({} = 1 AND {} IS NULL)", rank(path), value(path)),
            2 | 3 => format!("({} = {k} AND {} = {})", rank(path), value(path), k - 2),
            _ => {
                let p = self.param(bind(x));
                format!("({} = {k} AND {} = {p})", rank(path), value(path))
            }
        }
    }

    fn ordered(&mut self, path: &FieldPath, x: &Value, op: &str) -> String {
        let p = self.param(bind(x));
        format!(
            "({} = {} AND {} {op} {p})",
            rank(path),
            class(Some(x)),
            value(path)
        )
    }

    fn any(&mut self, path: &FieldPath, xs: &[Value]) -> String {
        if xs.is_empty() {
            return "0".into();
        }
        // Numbers and strings each as one `IN` (an index can serve it); the rest one by one.
        let mut parts = Vec::new();
        for k in [4u8, 5] {
            let same: Vec<&Value> = xs.iter().filter(|x| class(Some(x)) == k).collect();
            if !same.is_empty() {
                let list: Vec<String> = same.iter().map(|x| self.param(bind(x))).collect();
                parts.push(format!(
                    "({} = {k} AND {} IN ({}))",
                    rank(path),
                    value(path),
                    list.join(", ")
                ));
            }
        }
        for x in xs.iter().filter(|x| !matches!(class(Some(x)), 4 | 5)) {
            parts.push(self.eq(path, x));
        }
        format!("({})", parts.join(" OR "))
    }

    fn cond(&mut self, path: &FieldPath, cond: &Cond) -> String {
        match cond {
            Cond::Eq(x) => self.eq(path, x),
            Cond::Ne(x) => format!("NOT {}", self.eq(path, x)),
            Cond::Gt(x) => self.ordered(path, x, ">"),
            Cond::Gte(x) => self.ordered(path, x, ">="),
            Cond::Lt(x) => self.ordered(path, x, "<"),
            Cond::Lte(x) => self.ordered(path, x, "<="),
            Cond::In(xs) => self.any(path, xs),
            Cond::Nin(xs) => format!("NOT {}", self.any(path, xs)),
            Cond::Exists(true) => format!("{} > 0", rank(path)),
            Cond::Exists(false) => format!("{} = 0", rank(path)),
            Cond::BeginsWith(prefix) => {
                let p = self.param(Sql::Text(prefix.clone()));
                format!(
                    "({} = 5 AND substr({}, 1, length({p})) = {p})",
                    rank(path),
                    value(path)
                )
            }
            Cond::Not(inner) => format!("NOT ({})", self.cond(path, inner)),
            Cond::All(conds) if conds.is_empty() => "1".into(),
            Cond::All(conds) => {
                let parts: Vec<String> = conds.iter().map(|c| self.cond(path, c)).collect();
                format!("({})", parts.join(" AND "))
            }
        }
    }

    fn selector(&mut self, s: &Selector) -> String {
        match s {
            Selector::All => "1".into(),
            Selector::Field(path, cond) => self.cond(path, cond),
            Selector::And(parts) => {
                let parts: Vec<String> = parts.iter().map(|p| self.selector(p)).collect();
                format!("({})", parts.join(" AND "))
            }
            Selector::Or(parts) => {
                let parts: Vec<String> = parts.iter().map(|p| self.selector(p)).collect();
                format!("({})", parts.join(" OR "))
            }
            Selector::Not(inner) => format!("NOT ({})", self.selector(inner)),
        }
    }
}

/// The base statement: the collection's live records that the selector selects.
fn compile(query: &Query, columns: &str) -> Compiler {
    let mut c = Compiler {
        sql: String::new(),
        params: vec![
            Sql::Text(query.space.as_str().to_owned()),
            Sql::Text(query.collection.as_str().to_owned()),
        ],
    };
    let filter = c.selector(&query.selector);
    c.sql = format!(
        "SELECT {columns} FROM records WHERE space = ?1 AND collection = ?2 AND doc IS NOT NULL AND {filter}"
    );
    c
}

/// How many records the query selects (its sort, limit and cursor do not matter).
pub fn count(conn: &Connection, query: &Query) -> Result<u64> {
    let c = compile(query, "count(*)");
    conn.prepare_cached(&c.sql)
        .and_then(|mut s| {
            s.query_row(rusqlite::params_from_iter(c.params.iter()), |r| {
                r.get::<_, i64>(0)
            })
        })
        .map(|n| n as u64)
        .map_err(StoreError::sql("count a query"))
}

/// Where a page ended: each sort key's (class, value) of the last row, and its id.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct After {
    keys: Vec<(u8, Value)>,
    id: String,
}

pub(super) fn decode_after(text: &str, keys: usize) -> std::result::Result<After, QueryError> {
    let bad = || {
        QueryError::at(
            "after",
            "not a \"next\" of this query (it was changed, or is not one)",
        )
    };
    if !text.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes: Option<Vec<u8>> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect();
    let after: After = serde_json::from_slice(&bytes.ok_or_else(bad)?).map_err(|_| bad())?;
    if after.keys.len() != keys {
        return Err(bad());
    }
    Ok(after)
}

fn encode_after(after: &After) -> String {
    serde_json::to_vec(after)
        .unwrap_or_default()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// SQLite's plan for one page of the query (`EXPLAIN QUERY PLAN`, one line per step): shows
/// whether a declared index serves it.
pub fn explain(conn: &Connection, query: &Query) -> Result<Vec<String>> {
    let c = page_statement(query)?;
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {}", c.sql))
        .map_err(StoreError::sql("explain a query"))?;
    let lines = stmt
        .query_map(rusqlite::params_from_iter(c.params.iter()), |r| {
            r.get::<_, String>(3)
        })
        .map_err(StoreError::sql("explain a query"))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(StoreError::sql("explain a query"))?;
    Ok(lines)
}

/// The statement of one page: filter, keyset, order, limit + 1.
fn page_statement(query: &Query) -> Result<Compiler> {
    let limit = query.page_size().map_err(invalid)?;
    let mut c = compile(query, "id, doc, pending");
    let id_desc = query.sort.last().is_some_and(|k| k.descending);
    if let Some(text) = &query.after {
        let after = decode_after(text, query.sort.len()).map_err(invalid)?;
        let condition = keyset(&mut c, query, &after, id_desc);
        c.sql.push_str(" AND ");
        c.sql.push_str(&condition);
    }
    c.sql.push_str(" ORDER BY ");
    for key in &query.sort {
        let dir = if key.descending { "DESC" } else { "ASC" };
        let _ = write!(
            c.sql,
            "{} {dir}, {} {dir}, ",
            rank(&key.field),
            value(&key.field)
        );
    }
    let _ = write!(c.sql, "id {}", if id_desc { "DESC" } else { "ASC" });
    let limit_param = c.param(Sql::Integer(limit as i64 + 1));
    let _ = write!(c.sql, " LIMIT {limit_param}");
    Ok(c)
}

/// One page of the query.
pub fn page(conn: &Connection, query: &Query) -> Result<QueryPage> {
    let limit = query.page_size().map_err(invalid)?;
    let c = page_statement(query)?;
    let mut stmt = conn
        .prepare_cached(&c.sql)
        .map_err(StoreError::sql("run a query"))?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(c.params.iter()), |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(StoreError::sql("run a query"))?;
    let mut records = Vec::with_capacity(limit.min(1024));
    let mut more = false;
    for row in rows {
        let (id, doc, pending) = row.map_err(StoreError::sql("run a query"))?;
        if records.len() == limit {
            more = true;
            break;
        }
        let id = RecordId::new(id).map_err(|e| StoreError::BadStoredData {
            what: "record id",
            detail: e.to_string(),
        })?;
        records.push(Record {
            key: RecordKey::new(query.space.clone(), query.collection.clone(), id),
            doc: parse_doc(&doc)?,
            pending: pending > 0,
        });
    }
    let next = match (more, records.last()) {
        (true, Some(last)) => Some(encode_after(&After {
            keys: query
                .sort
                .iter()
                .map(|k| {
                    let v = super::eval::get(&last.doc, &k.field);
                    (class(v), v.cloned().unwrap_or(Value::Null))
                })
                .collect(),
            id: last.key.id.as_str().to_owned(),
        })),
        _ => None,
    };
    if let Some(fields) = &query.fields {
        for record in &mut records {
            record.doc = project(&record.doc, fields);
        }
    }
    Ok(QueryPage { records, next })
}

/// Rows strictly after `after` in the query's order.
fn keyset(c: &mut Compiler, query: &Query, after: &After, id_desc: bool) -> String {
    let mut alternatives = Vec::new();
    let mut equal_prefix: Vec<String> = Vec::new();
    for (key, (k, v)) in query.sort.iter().zip(&after.keys) {
        let (r, x) = (rank(&key.field), value(&key.field));
        let beyond = if key.descending { "<" } else { ">" };
        let rp = c.param(Sql::Integer(i64::from(*k)));
        // Classes 0..=3 hold one value each: the class alone orders and equates them.
        let (later, same) = if *k <= 3 {
            (format!("{r} {beyond} {rp}"), format!("{r} = {rp}"))
        } else {
            let vp = c.param(bind(v));
            (
                format!("({r} {beyond} {rp} OR ({r} = {rp} AND {x} {beyond} {vp}))"),
                format!("({r} = {rp} AND {x} = {vp})"),
            )
        };
        let mut alt = equal_prefix.clone();
        alt.push(later);
        alternatives.push(format!("({})", alt.join(" AND ")));
        equal_prefix.push(same);
    }
    let idp = c.param(Sql::Text(after.id.clone()));
    let mut last = equal_prefix;
    last.push(format!("id {} {idp}", if id_desc { "<" } else { ">" }));
    alternatives.push(format!("({})", last.join(" AND ")));
    format!("({})", alternatives.join(" OR "))
}

fn invalid(e: QueryError) -> StoreError {
    StoreError::InvalidQuery(e)
}
