//! `restore`: the restoration tree (drafts, navigation, form inputs) kept next to the data.

use std::path::Path;

use anyhow::{anyhow, bail};
use serde_json::{json, Map, Number, Value as Json};
use tidesync_store::restoration::{BucketPath, Entry, Lifetime, Value};

use super::output::Output;
use super::{open_store, Open};

fn lifetime_name(lifetime: Lifetime) -> &'static str {
    match lifetime {
        Lifetime::Session => "session",
        Lifetime::Persistent => "persistent",
    }
}

/// A restoration value as JSON: maps → objects, lists → arrays, bytes → `{"$bytes": hex}`.
pub fn to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => json!(i),
        Value::Float(f) => Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::String(s) => Json::String(s.clone()),
        Value::Bytes(b) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            json!({"$bytes": hex})
        }
        Value::List(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Map(map) => Json::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect::<Map<_, _>>(),
        ),
    }
}

/// JSON as a restoration value: integers stay integers, other numbers are floats.
pub fn from_json(json: &Json) -> Value {
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items) => Value::List(items.iter().map(from_json).collect()),
        Json::Object(map) => {
            Value::Map(map.iter().map(|(k, v)| (k.clone(), from_json(v))).collect())
        }
    }
}

/// `BUCKET/KEY` → (bucket, key); a bare `KEY` is in the root bucket.
fn entry_path(text: &str) -> anyhow::Result<(BucketPath, String)> {
    let (bucket, key) = match text.rsplit_once('/') {
        Some((bucket, key)) => (BucketPath::parse(bucket)?, key),
        None => (BucketPath::root(), text),
    };
    if key.is_empty() {
        bail!("invalid entry path {text:?}: expected BUCKET/KEY, e.g. checkout/draft");
    }
    Ok((bucket, key.to_owned()))
}

/// `restore`: every entry of both lifetimes.
pub fn show(db: &Path, out: Output) -> anyhow::Result<()> {
    let store = open_store(db, Open::Existing)?;
    let tree = store.restoration();
    let mut entries = Vec::new();
    for lifetime in Lifetime::ALL {
        for (path, key, entry) in tree.entries(lifetime) {
            entries.push((lifetime, path.to_owned(), key.to_owned(), entry.clone()));
        }
    }
    let json = json!({
        "entries": entries.iter().map(|(lifetime, path, key, entry)| json!({
            "lifetime": lifetime_name(*lifetime),
            "bucket": path,
            "key": key,
            "tag": entry.tag,
            "version": entry.version,
            "value": to_json(&entry.value),
        })).collect::<Vec<_>>(),
        "total_bytes": tree.total_bytes(),
        "session_id": store.session_id(),
    });
    out.emit(json, || {
        if entries.is_empty() {
            return "no restoration state".to_owned();
        }
        let mut text = String::new();
        for lifetime in Lifetime::ALL {
            let mine: Vec<_> = entries.iter().filter(|e| e.0 == lifetime).collect();
            if mine.is_empty() {
                continue;
            }
            text.push_str(&format!("{}:\n", lifetime_name(lifetime)));
            for (_, path, key, entry) in mine {
                let at = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}/{key}")
                };
                text.push_str(&format!(
                    "  {at}  [{} v{}]  {}\n",
                    entry.tag,
                    entry.version,
                    to_json(&entry.value)
                ));
            }
        }
        text.push_str(&format!(
            "{} entries, {} bytes",
            entries.len(),
            tree.total_bytes()
        ));
        text
    });
    Ok(())
}

fn lifetime(session: bool) -> Lifetime {
    if session {
        Lifetime::Session
    } else {
        Lifetime::Persistent
    }
}

/// `restore set BUCKET/KEY VALUE`.
pub fn set(
    db: &Path,
    path: &str,
    value: &str,
    session: bool,
    tag: &str,
    out: Output,
) -> anyhow::Result<()> {
    let (bucket, key) = entry_path(path)?;
    let json: Json = serde_json::from_str(value).map_err(|e| anyhow!("invalid JSON value: {e}"))?;
    let mut store = open_store(db, Open::Create)?;
    store.restore_write(
        lifetime(session),
        &bucket,
        &key,
        Entry::new(tag, 1, from_json(&json)),
    )?;
    out.emit(
        json!({"set": path, "lifetime": lifetime_name(lifetime(session))}),
        || format!("{} {path} written", lifetime_name(lifetime(session))),
    );
    Ok(())
}

/// `restore remove BUCKET/KEY`.
pub fn remove(db: &Path, path: &str, session: bool, out: Output) -> anyhow::Result<()> {
    let (bucket, key) = entry_path(path)?;
    let mut store = open_store(db, Open::Existing)?;
    store.restore_remove(lifetime(session), &bucket, &key)?;
    out.emit(json!({"removed": path}), || format!("{path} removed"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_through_restoration_values() {
        let json = json!({"a": [1, 2.5, "x", null, true], "b": {"c": -3}});
        assert_eq!(to_json(&from_json(&json)), json);
        assert!(matches!(from_json(&json!(7)), Value::Int(7)));
    }

    #[test]
    fn entry_paths() {
        let (bucket, key) = entry_path("checkout/form/draft").expect("valid");
        assert_eq!((bucket.as_str(), key.as_str()), ("checkout/form", "draft"));
        let (bucket, key) = entry_path("draft").expect("valid");
        assert_eq!((bucket.as_str(), key.as_str()), ("", "draft"));
        assert!(entry_path("checkout/").is_err());
    }
}
