//! Mutations: what a client asks the server to do to one record.

use serde::{Deserialize, Serialize};

use crate::{CollectionName, Hlc, RecordId, SpaceName};

/// A record's document: a JSON object. The record id is not part of it.
pub type Doc = serde_json::Map<String, serde_json::Value>;

/// Where a record lives: (space, collection, id).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RecordKey {
    /// The space (unit of access control and partial sync).
    pub space: SpaceName,
    /// The collection inside the space.
    pub collection: CollectionName,
    /// The record id inside the collection.
    pub id: RecordId,
}

impl RecordKey {
    /// A key from already validated parts.
    pub fn new(space: SpaceName, collection: CollectionName, id: RecordId) -> RecordKey {
        RecordKey {
            space,
            collection,
            id,
        }
    }

    /// Validates three strings into a key.
    pub fn parse(
        space: &str,
        collection: &str,
        id: &str,
    ) -> Result<RecordKey, crate::ValidationError> {
        Ok(RecordKey {
            space: SpaceName::new(space)?,
            collection: CollectionName::new(collection)?,
            id: RecordId::new(id)?,
        })
    }

    /// Parses the `SPACE/COLLECTION/ID` form that `Display` prints. Spaces and collections
    /// never contain `/`; the id may (`user:alice/files/a/b` has the id `a/b`).
    pub fn from_path(text: &str) -> Result<RecordKey, crate::ValidationError> {
        let mut parts = text.splitn(3, '/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(space), Some(collection), Some(id)) => RecordKey::parse(space, collection, id),
            _ => Err(crate::ValidationError::new(
                "record key",
                text,
                "expected SPACE/COLLECTION/ID, e.g. user:alice/todos/t1",
            )),
        }
    }
}

/// Parses `SPACE/COLLECTION` (the collection part of a key's path form).
pub fn collection_path(text: &str) -> Result<(SpaceName, CollectionName), crate::ValidationError> {
    match text.split_once('/') {
        Some((space, collection)) => Ok((SpaceName::new(space)?, CollectionName::new(collection)?)),
        None => Err(crate::ValidationError::new(
            "collection",
            text,
            "expected SPACE/COLLECTION, e.g. user:alice/todos",
        )),
    }
}

impl std::fmt::Display for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.space, self.collection, self.id)
    }
}

/// What a mutation does to its record.
///
/// Every top-level field of a record is a last-writer-wins register, so the wire operations
/// are defined on top-level fields:
/// - `put` replaces the whole document (fields it does not name are removed);
/// - `patch` sets each named field to its value, or removes it when the value is `null`
///   (JSON merge patch, RFC 7396, at the top level; the client resolves nested merge patches
///   against its local view before sending, so a nested object arrives as the field's new
///   whole value);
/// - `delete` removes the record. A later `put` or `patch` resurrects it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Op {
    /// Replace the whole document.
    Put {
        /// The new document.
        doc: Doc,
    },
    /// Set (value) or remove (`null`) top-level fields.
    Patch {
        /// Field name → new value, `null` to remove.
        fields: Doc,
    },
    /// Delete the record.
    Delete,
}

impl Op {
    /// `"put"`, `"patch"` or `"delete"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Put { .. } => "put",
            Op::Patch { .. } => "patch",
            Op::Delete => "delete",
        }
    }
}

/// One queued change, as pushed to the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mutation {
    /// Per-client sequence number: strictly increasing by one, starting at 1.
    pub seq: u64,
    /// Local transaction id: mutations sharing a `tx` are applied all or none. They are
    /// contiguous in `seq`.
    pub tx: u64,
    /// The record it changes.
    #[serde(flatten)]
    pub key: RecordKey,
    /// What it does.
    #[serde(flatten)]
    pub op: Op,
    /// When it was made, on the client's hybrid logical clock.
    pub hlc: Hlc,
    /// The server version of the record's space the client had pulled when it made the
    /// change (0 if it had pulled nothing). Conflict detection compares against it.
    pub base_version: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mutation_wire_form_is_flat() {
        let m = Mutation {
            seq: 7,
            tx: 3,
            key: RecordKey::parse("user:alice", "todos", "t1").expect("valid"),
            op: Op::Patch {
                fields: json!({"done": true, "note": null})
                    .as_object()
                    .cloned()
                    .expect("object"),
            },
            hlc: Hlc::new(1_700_000_000_000, 1).expect("fits"),
            base_version: 42,
        };
        let value = serde_json::to_value(&m).expect("serialize");
        assert_eq!(
            value,
            json!({
                "seq": 7, "tx": 3, "space": "user:alice", "collection": "todos", "id": "t1",
                "kind": "patch", "fields": {"done": true, "note": null},
                "hlc": "018bcfe568000001", "base_version": 42
            })
        );
        let back: Mutation = serde_json::from_value(value).expect("parse");
        assert_eq!(back, m);
    }

    #[test]
    fn invalid_mutations_do_not_parse() {
        let base = json!({"seq": 1, "tx": 1, "space": "s", "collection": "c", "id": "x",
            "kind": "delete", "hlc": "0000000000010000", "base_version": 0});
        assert!(serde_json::from_value::<Mutation>(base.clone()).is_ok());
        for (field, bad) in [
            ("id", json!("")),
            ("space", json!("has space")),
            ("kind", json!("upsert")),
            ("seq", json!(-1)),
            ("hlc", json!(12)),
        ] {
            let mut m = base.clone();
            m[field] = bad;
            assert!(serde_json::from_value::<Mutation>(m).is_err(), "{field}");
        }
        let mut put_without_doc = base.clone();
        put_without_doc["kind"] = json!("put");
        assert!(serde_json::from_value::<Mutation>(put_without_doc).is_err());
    }
}

#[cfg(test)]
mod path_tests {
    use super::*;

    #[test]
    fn keys_parse_from_the_form_they_print_and_the_id_may_hold_slashes() {
        let key = RecordKey::from_path("user:alice/files/a/b").expect("valid");
        assert_eq!(key.id.as_str(), "a/b");
        assert_eq!(RecordKey::from_path(&key.to_string()), Ok(key));
        for bad in [
            "",
            "user:alice",
            "user:alice/todos",
            "user:alice/todos/",
            "bad space/t/x",
        ] {
            assert!(RecordKey::from_path(bad).is_err(), "{bad:?}");
        }
        assert!(collection_path("user:alice/todos").is_ok());
        assert!(collection_path("user:alice").is_err());
        assert!(collection_path("user:alice/to/dos").is_err());
    }
}
