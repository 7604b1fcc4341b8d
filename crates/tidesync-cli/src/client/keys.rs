//! Parsing the client commands' arguments: record keys, collections, documents.
//!
//! A JSON argument (a document, a patch, a `--where` selector, a restoration value) is
//! given inline, as `-` to read it from standard input, or as `@FILE` to read it from a
//! file: no JSON text is `-` or starts with `@`, so the forms never clash.

use anyhow::{anyhow, bail};
use tidesync_protocol::{collection_path, CollectionName, Doc, RecordKey, SpaceName};

/// `SPACE/COLLECTION/ID`. Spaces and collections never contain `/`; the id may.
pub fn record_key(text: &str) -> anyhow::Result<RecordKey> {
    RecordKey::from_path(text).map_err(|e| anyhow!("invalid key {text:?}: {e}"))
}

/// `SPACE/COLLECTION`.
pub fn collection(text: &str) -> anyhow::Result<(SpaceName, CollectionName)> {
    collection_path(text).map_err(|e| anyhow!("invalid collection {text:?}: {e}"))
}

/// The text of a JSON argument (inline, `-` or `@FILE`), with where it came from for error
/// messages ("", " from standard input", " from FILE").
pub fn json_text(arg: &str, what: &str) -> anyhow::Result<(String, String)> {
    use std::io::Read;
    if arg == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| anyhow!("cannot read the {what} from standard input: {e}"))?;
        return Ok((text, " from standard input".to_owned()));
    }
    if let Some(file) = arg.strip_prefix('@') {
        if file.is_empty() {
            bail!("give a file name after @ to read the {what} from a file (e.g. @doc.json)");
        }
        let text = std::fs::read_to_string(file)
            .map_err(|e| anyhow!("cannot read the {what} from {file}: {e}"))?;
        return Ok((text, format!(" from {file}")));
    }
    Ok((arg.to_owned(), String::new()))
}

/// A JSON value (inline, `-` or `@FILE`).
pub fn json_value(arg: &str, what: &str) -> anyhow::Result<serde_json::Value> {
    let (text, from) = json_text(arg, what)?;
    serde_json::from_str(&text).map_err(|e| anyhow!("invalid JSON {what}{from}: {e}"))
}

/// A JSON object (inline, `-` or `@FILE`).
pub fn document(arg: &str, what: &str) -> anyhow::Result<Doc> {
    let (text, from) = json_text(arg, what)?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| anyhow!("invalid JSON {what}{from}: {e}"))?;
    match value {
        serde_json::Value::Object(map) => Ok(map),
        other => bail!(
            "invalid JSON {what}{from}: expected an object like {{\"title\": \"milk\"}}, got {}",
            kind(&other)
        ),
    }
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_keys_and_collections_are_one_line_errors_naming_the_input() {
        let err = record_key("user:alice/todos").map_err(|e| e.to_string());
        assert!(err.is_err_and(|e| e.contains("\"user:alice/todos\"") && !e.contains('\n')));
        assert!(collection("user:alice").is_err());
    }

    #[test]
    fn documents_are_objects() {
        assert!(document(r#"{"a": 1}"#, "document").is_ok());
        let err = document("[1]", "document").map_err(|e| e.to_string());
        assert!(err.is_err_and(|e| e.contains("an array")));
        assert!(document("{nope", "document").is_err());
    }

    #[test]
    fn documents_come_from_files_too() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("doc.json");
        std::fs::write(&file, r#"{"title": "milk"}"#).unwrap();
        let doc = document(&format!("@{}", file.display()), "document").unwrap();
        assert_eq!(doc["title"], "milk");
        let missing = dir.path().join("missing.json");
        let err = document(&format!("@{}", missing.display()), "document").unwrap_err();
        assert!(
            err.to_string().contains("cannot read the document from"),
            "{err}"
        );
        std::fs::write(&file, "{nope").unwrap();
        let err = document(&format!("@{}", file.display()), "patch").unwrap_err();
        assert!(err.to_string().contains("invalid JSON patch from"), "{err}");
        assert!(document("@", "document").is_err());
    }
}
