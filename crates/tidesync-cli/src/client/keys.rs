//! Parsing the client commands' arguments: record keys, collections, documents.

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

/// A JSON object.
pub fn document(text: &str, what: &str) -> anyhow::Result<Doc> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| anyhow!("invalid JSON {what}: {e}"))?;
    match value {
        serde_json::Value::Object(map) => Ok(map),
        other => bail!(
            "invalid JSON {what}: expected an object like {{\"title\": \"milk\"}}, got {}",
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
}
