//! `restore`: the restoration tree (drafts, navigation, form inputs) kept next to the data.

use std::path::Path;

use anyhow::bail;
use serde_json::{json, Value as Json};
use tidesync_store::restoration::json::{from_json, to_json};
use tidesync_store::restoration::{BucketPath, Entry, Lifetime};

use super::db::{self, Open};
use super::keys;
use super::output::Output;

fn lifetime_name(lifetime: Lifetime) -> &'static str {
    match lifetime {
        Lifetime::Session => "session",
        Lifetime::Persistent => "persistent",
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
    let store = db::read(db)?;
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
    let json: Json = keys::json_value(value, "value")?;
    db::write(db, Open::Create, |store| {
        Ok(store.restore_write(
            lifetime(session),
            &bucket,
            &key,
            Entry::new(tag, 1, from_json(&json)),
        )?)
    })?;
    out.emit(
        json!({"set": path, "lifetime": lifetime_name(lifetime(session))}),
        || format!("{} {path} written", lifetime_name(lifetime(session))),
    );
    Ok(())
}

/// `restore remove BUCKET/KEY`.
pub fn remove(db: &Path, path: &str, session: bool, out: Output) -> anyhow::Result<()> {
    let (bucket, key) = entry_path(path)?;
    db::write(db, Open::Existing, |store| {
        Ok(store.restore_remove(lifetime(session), &bucket, &key)?)
    })?;
    out.emit(json!({"removed": path}), || format!("{path} removed"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths() {
        let (bucket, key) = entry_path("checkout/form/draft").expect("valid");
        assert_eq!((bucket.as_str(), key.as_str()), ("checkout/form", "draft"));
        let (bucket, key) = entry_path("draft").expect("valid");
        assert_eq!((bucket.as_str(), key.as_str()), ("", "draft"));
        assert!(entry_path("checkout/").is_err());
    }
}
