//! `query SPACE/COLLECTION [--where JSON] [--sort FIELD[:desc]]... [--limit N]`: a query over
//! the local view, as a table, one JSON document, a count or SQLite's plan; `--watch` prints
//! each new result until interrupted.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Map, Value};
use tidesync_client::{Client, ClientConfig, Query, QueryPage, QueryUpdate, StaticToken};
use tidesync_protocol::{RecordId, SpaceName};

use super::output::Output;
use super::records::record_json;
use super::{db, keys, store_config};
use crate::table::table;

/// What `query` was asked.
#[derive(Debug)]
pub struct QueryArgs {
    /// `SPACE/COLLECTION`.
    pub collection: String,
    /// `--where`: a Mango selector.
    pub selector: Option<String>,
    /// `--sort FIELD[:asc|:desc]`, in order.
    pub sort: Vec<String>,
    /// `--limit`.
    pub limit: usize,
    /// `--after`: a `next` of the previous page.
    pub after: Option<String>,
    /// `--fields a,b.c`.
    pub fields: Option<String>,
}

/// What to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One page.
    Page,
    /// How many records match.
    Count,
    /// SQLite's plan.
    Explain,
}

/// A server to sync with while watching.
#[derive(Debug)]
pub struct Sync {
    /// Its URL.
    pub server: String,
    /// The token.
    pub token: String,
    /// The spaces.
    pub spaces: Vec<SpaceName>,
}

/// The query of `args`, through the same parser apps use (so errors name the same parts).
fn build(args: &QueryArgs) -> anyhow::Result<Query> {
    let (space, collection) = keys::collection(&args.collection)?;
    let mut form = Map::new();
    if let Some(text) = &args.selector {
        let (text, from) = keys::json_text(text, "--where selector")?;
        let selector: Value = serde_json::from_str(&text)
            .map_err(|e| anyhow!("invalid --where JSON{from}: {e} (e.g. '{{\"done\": false}}')"))?;
        form.insert("selector".into(), selector);
    }
    let mut sort = Vec::new();
    for key in &args.sort {
        let (field, dir) = match key.rsplit_once(':') {
            Some((field, dir)) => (field, dir),
            None => (key.as_str(), "asc"),
        };
        if dir != "asc" && dir != "desc" {
            bail!("invalid --sort {key:?}: the direction after ':' is asc or desc");
        }
        sort.push(json!({ field: dir }));
    }
    if !sort.is_empty() {
        form.insert("sort".into(), Value::Array(sort));
    }
    form.insert("limit".into(), json!(args.limit));
    if let Some(after) = &args.after {
        form.insert("after".into(), json!(after));
    }
    if let Some(fields) = &args.fields {
        let fields: Vec<&str> = fields.split(',').map(str::trim).collect();
        form.insert("fields".into(), json!(fields));
    }
    Ok(Query::from_json(space, collection, &Value::Object(form))?)
}

/// `query ...` once.
pub fn run(db: &Path, args: &QueryArgs, mode: Mode, out: Output) -> anyhow::Result<()> {
    let query = build(args)?;
    let store = db::read(db)?;
    match mode {
        Mode::Count => {
            let n = store.count(&query)?;
            out.emit(json!({ "count": n }), || format!("{n} record(s)"));
        }
        Mode::Explain => {
            let plan = store.explain(&query)?;
            out.emit(json!({ "plan": plan }), || plan.join("\n"));
        }
        Mode::Page => {
            let page = store.query(&query)?;
            out.emit(page_json(&page), || page_text(&page, &query));
        }
    }
    Ok(())
}

/// `query ... --watch`: each new result, until interrupted (or the database goes away).
pub fn watch(db: &Path, args: &QueryArgs, sync: Option<Sync>, out: Output) -> anyhow::Result<()> {
    let query = build(args)?;
    db::existing(db)?;
    let mut config = match sync {
        Some(Sync {
            server,
            token,
            spaces,
        }) => ClientConfig::new(db, server, spaces, Arc::new(StaticToken(token))),
        None => ClientConfig::local(db),
    };
    config.store = store_config();
    // Others write this file (the app, other commands): look for their commits.
    config.external_writes_poll = Some(Duration::from_millis(100));
    config.live_query_throttle = Duration::from_millis(20);
    let client = Client::open(config).with_context(|| format!("cannot open {}", db.display()))?;
    let live = client.watch(query.clone())?;
    for update in live.iter() {
        out.emit(update_json(&update), || update_text(&update, &query));
    }
    Ok(())
}

fn page_json(page: &QueryPage) -> Value {
    json!({
        "records": page.records.iter().map(record_json).collect::<Vec<_>>(),
        "next": page.next,
    })
}

fn update_json(update: &QueryUpdate) -> Value {
    fn ids(ids: &[RecordId]) -> Vec<&str> {
        ids.iter().map(RecordId::as_str).collect()
    }
    json!({
        "records": update.records.iter().map(record_json).collect::<Vec<_>>(),
        "next": update.next,
        "added": ids(&update.added),
        "removed": ids(&update.removed),
        "changed": ids(&update.changed),
    })
}

fn update_text(update: &QueryUpdate, query: &Query) -> String {
    let page = QueryPage {
        records: update.records.clone(),
        next: update.next.clone(),
    };
    format!(
        "-- {} (+{} -{} ~{})\n{}\n",
        crate::time::utc(crate::time::now_ms()),
        update.added.len(),
        update.removed.len(),
        update.changed.len(),
        page_text(&page, query)
    )
}

/// Widest a table cell gets before it is cut.
const CELL: usize = 40;
/// Most columns a table shows without `--fields`.
const COLUMNS: usize = 8;

/// A table: id (`*` when pending), then the projected fields, or the documents' top-level
/// fields in the order they first appear.
fn page_text(page: &QueryPage, query: &Query) -> String {
    let columns: Vec<String> = match &query.fields {
        Some(fields) => fields.iter().map(ToString::to_string).collect(),
        None => {
            let mut names: Vec<String> = Vec::new();
            for r in &page.records {
                for name in r.doc.keys() {
                    if !names.contains(name) {
                        names.push(name.clone());
                    }
                }
            }
            names.truncate(COLUMNS);
            names
        }
    };
    let mut rows = vec![std::iter::once("id".to_owned())
        .chain(columns.iter().cloned())
        .collect::<Vec<_>>()];
    for r in &page.records {
        let mut row = vec![format!("{}{}", r.key.id, if r.pending { " *" } else { "" })];
        for name in &columns {
            let path: Vec<&str> = name.split('.').collect();
            row.push(lookup(&r.doc, &path).map(cell).unwrap_or_default());
        }
        rows.push(row);
    }
    let mut text = table(&rows);
    text.push_str(&format!("{} record(s) (* = pending)", page.records.len()));
    if let Some(next) = &page.next {
        text.push_str(&format!("; more with --after {next}"));
    }
    text
}

fn lookup<'a>(doc: &'a Map<String, Value>, path: &[&str]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    rest.iter()
        .try_fold(doc.get(*first)?, |v, p| v.as_object()?.get(*p))
}

fn cell(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let text = text.replace(['\n', '\t'], " ");
    if text.chars().count() > CELL {
        let cut: String = text.chars().take(CELL - 1).collect();
        format!("{cut}…")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(selector: Option<&str>, sort: &[&str]) -> QueryArgs {
        QueryArgs {
            collection: "user:alice/todos".into(),
            selector: selector.map(str::to_owned),
            sort: sort.iter().map(|s| (*s).to_owned()).collect(),
            limit: 10,
            after: None,
            fields: None,
        }
    }

    #[test]
    fn sort_flags_become_sort_keys() {
        let q = build(&args(None, &["due:desc", "title"])).unwrap();
        assert_eq!(q.sort.len(), 2);
        assert!(q.sort[0].descending && !q.sort[1].descending);
        assert_eq!(q.sort[1].field.to_string(), "title");
    }

    #[test]
    fn bad_flags_name_what_is_wrong() {
        let err = build(&args(None, &["due:down"])).unwrap_err().to_string();
        assert!(
            err.contains("--sort") && err.contains("asc or desc"),
            "{err}"
        );
        let err = build(&args(Some("{nope"), &[])).unwrap_err().to_string();
        assert!(err.contains("--where"), "{err}");
        let err = build(&args(Some(r#"{"due": {"$near": 1}}"#), &[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("$near"), "{err}");
    }

    #[test]
    fn cells_are_one_short_line() {
        assert_eq!(cell(&json!("a\nb")), "a b");
        assert_eq!(cell(&json!(1.5)), "1.5");
        assert_eq!(cell(&json!("x".repeat(100))).chars().count(), CELL);
    }
}
