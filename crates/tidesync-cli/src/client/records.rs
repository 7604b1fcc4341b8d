//! `put`, `patch`, `delete`, `import`, `get`, `list`: the local view, written and read at
//! once.

use std::path::Path;

use anyhow::{anyhow, bail};
use serde_json::{json, Value};
use tidesync_protocol::{RecordId, RecordKey};
use tidesync_store::{ListOptions, Record, WriteReceipt};

use super::db::{self, Open};
use super::keys;
use super::output::Output;

/// A record as JSON (stable fields).
pub fn record_json(record: &Record) -> Value {
    json!({
        "key": record.key.to_string(),
        "space": record.key.space.as_str(),
        "collection": record.key.collection.as_str(),
        "id": record.key.id.as_str(),
        "doc": Value::Object(record.doc.clone()),
        "pending": record.pending,
    })
}

fn receipt_json(op: &str, key: &str, receipt: &WriteReceipt) -> Value {
    json!({"op": op, "key": key, "seq": receipt.seq, "tx": receipt.tx, "hlc": receipt.hlc.to_string()})
}

fn wrote(op: &str, key: &str, receipt: &WriteReceipt, out: Output) {
    out.emit(receipt_json(op, key, receipt), || {
        format!(
            "{op} {key}: queued as seq {} (tx {}); it syncs with `tidesync client sync`",
            receipt.seq, receipt.tx
        )
    });
}

/// `put KEY DOC` (DOC inline, `-` or `@FILE`).
pub fn put(db: &Path, key: &str, doc: &str, out: Output) -> anyhow::Result<()> {
    let key = keys::record_key(key)?;
    let doc = keys::document(doc, "document")?;
    let receipt = db::write(db, Open::Create, |store| Ok(store.put(&key, doc)?))?;
    wrote("put", &key.to_string(), &receipt, out);
    Ok(())
}

/// `patch KEY PATCH` (PATCH inline, `-` or `@FILE`).
pub fn patch(db: &Path, key: &str, patch: &str, out: Output) -> anyhow::Result<()> {
    let key = keys::record_key(key)?;
    let patch = keys::document(patch, "patch")?;
    let receipt = db::write(db, Open::Create, |store| Ok(store.patch(&key, patch)?))?;
    wrote("patch", &key.to_string(), &receipt, out);
    Ok(())
}

/// `delete KEY`.
pub fn delete(db: &Path, key: &str, out: Output) -> anyhow::Result<()> {
    let key = keys::record_key(key)?;
    let receipt = db::write(db, Open::Existing, |store| {
        if store.get(&key)?.is_none() {
            bail!("{key} does not exist in {}", db.display());
        }
        Ok(store.delete(&key)?)
    })?;
    wrote("delete", &key.to_string(), &receipt, out);
    Ok(())
}

/// Records per transaction of `import`: one commit per record would make a bulk load as
/// slow as that many `put`s (a minute for 10,000), and one transaction for everything could
/// exceed what one push carries (a transaction is pushed whole).
const IMPORT_TRANSACTION: usize = 1_000;

/// `import SPACE/COLLECTION LINES` (`-` or `@FILE`): a put per JSON line `{"id": ID, "doc":
/// {...}}`, in transactions of [`IMPORT_TRANSACTION`] records, all lines checked before the
/// first is written.
pub fn import(db: &Path, target: &str, lines: &str, out: Output) -> anyhow::Result<()> {
    let (space, collection) = keys::collection(target)?;
    if !(lines == "-" || lines.starts_with('@')) {
        bail!("give the JSON lines as - (standard input) or @FILE, not inline");
    }
    let (text, from) = keys::json_text(lines, "JSON lines")?;
    let mut records = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let bad = |why: String| anyhow!("line {}{from}: {why}", n + 1);
        let value: Value =
            serde_json::from_str(line).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let (Some(Value::String(id)), Some(Value::Object(doc))) =
            (value.get("id"), value.get("doc"))
        else {
            return Err(bad(r#"expected {"id": "ID", "doc": {...}}"#.to_owned()));
        };
        let id = RecordId::new(id.as_str()).map_err(|e| bad(format!("invalid id: {e}")))?;
        records.push((
            RecordKey::new(space.clone(), collection.clone(), id),
            doc.clone(),
        ));
    }
    if records.is_empty() {
        bail!("no records{from}: expected one JSON line {{\"id\": \"ID\", \"doc\": {{...}}}} per record");
    }
    let receipts = db::write(db, Open::Create, |store| {
        let mut receipts = Vec::with_capacity(records.len());
        for chunk in records.chunks(IMPORT_TRANSACTION) {
            store.transaction(|tx| {
                for (key, doc) in chunk {
                    receipts.push(tx.put(key, doc.clone())?);
                }
                Ok::<_, anyhow::Error>(())
            })?;
        }
        Ok(receipts)
    })?;
    let (first, last) = (&receipts[0], &receipts[receipts.len() - 1]);
    let json = json!({"op": "import", "collection": target, "records": receipts.len(),
                      "first_seq": first.seq, "last_seq": last.seq});
    out.emit(json, || {
        format!(
            "import {target}: {} record(s) queued as seq {}..{}; they sync with `tidesync client sync`",
            receipts.len(),
            first.seq,
            last.seq
        )
    });
    Ok(())
}

/// `get KEY`.
pub fn get(db: &Path, key: &str, out: Output) -> anyhow::Result<()> {
    let key = keys::record_key(key)?;
    let store = db::read(db)?;
    let Some(record) = store.get(&key)? else {
        bail!("{key} not found in {}", db.display());
    };
    out.emit(record_json(&record), || {
        format!(
            "{}{}\n{}",
            record.key,
            if record.pending { " (pending)" } else { "" },
            serde_json::to_string_pretty(&Value::Object(record.doc.clone())).unwrap_or_default()
        )
    });
    Ok(())
}

/// `list SPACE/COLLECTION [--after ID] [--limit N]`.
pub fn list(
    db: &Path,
    target: &str,
    after: Option<&str>,
    limit: usize,
    out: Output,
) -> anyhow::Result<()> {
    let (space, collection) = keys::collection(target)?;
    if limit == 0 {
        bail!("--limit must be at least 1");
    }
    let after = after
        .map(|a| RecordId::new(a).map_err(|e| anyhow!("invalid --after id: {e}")))
        .transpose()?;
    let store = db::read(db)?;
    let page = store.list(&space, &collection, &ListOptions { after, limit })?;
    let json = json!({
        "records": page.records.iter().map(record_json).collect::<Vec<_>>(),
        "next": page.next.as_ref().map(RecordId::as_str),
    });
    out.emit(json, || {
        let mut text = String::new();
        for r in &page.records {
            text.push_str(&format!(
                "{}{}  {}\n",
                r.key.id,
                if r.pending { " *" } else { "" },
                Value::Object(r.doc.clone())
            ));
        }
        text.push_str(&format!("{} record(s)", page.records.len()));
        if let Some(next) = &page.next {
            text.push_str(&format!("; more after --after {next}"));
        }
        text.push_str(" (* = pending)");
        text
    });
    Ok(())
}
