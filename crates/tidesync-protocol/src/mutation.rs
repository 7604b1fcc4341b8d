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
///
/// On the wire an op is `kind` plus the one member its kind carries: `doc` with `put`,
/// `fields` with `patch`, neither with `delete`. The other kind's member is refused, whatever
/// its value (even `null`): a `put` carrying `fields` was most likely meant as a `patch`, and
/// ignoring the member would silently remove every field it does not name. Serialization is
/// serde's internally tagged form; deserialization goes through `RawOp` (an internally
/// tagged enum ignores members of other variants, and `deny_unknown_fields` does not work
/// under `flatten`, which [`Mutation`] needs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", try_from = "RawOp")]
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

/// The members of an [`Op`] as they arrive, before they are checked against its `kind`.
/// `doc` and `fields` are `Some` whenever the member is present, `Some(None)` when it is
/// `null`.
#[derive(Deserialize)]
struct RawOp {
    kind: OpKind,
    #[serde(default, deserialize_with = "present")]
    doc: Option<Option<Doc>>,
    #[serde(default, deserialize_with = "present")]
    fields: Option<Option<Doc>>,
}

/// The `kind` member of an op.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum OpKind {
    Put,
    Patch,
    Delete,
}

/// Deserializes a member that is present (`null` included) as `Some`; a missing one is
/// `None` through `#[serde(default)]`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

impl TryFrom<RawOp> for Op {
    /// Why the members do not fit the kind; serde_json adds the line and column.
    type Error = &'static str;

    fn try_from(raw: RawOp) -> Result<Op, &'static str> {
        match (raw.kind, raw.doc, raw.fields) {
            (OpKind::Put, _, Some(_)) => Err(PUT_WITH_FIELDS),
            (OpKind::Put, Some(Some(doc)), None) => Ok(Op::Put { doc }),
            (OpKind::Put, Some(None), None) => Err("`doc` must be a JSON object, not null"),
            (OpKind::Put, None, None) => {
                Err("missing field `doc` (a `put` carries the new document)")
            }
            (OpKind::Patch, Some(_), _) => Err(PATCH_WITH_DOC),
            (OpKind::Patch, None, Some(Some(fields))) => Ok(Op::Patch { fields }),
            (OpKind::Patch, None, Some(None)) => Err("`fields` must be a JSON object, not null"),
            (OpKind::Patch, None, None) => Err("missing field `fields` (a `patch` carries it)"),
            (OpKind::Delete, Some(_), _) => Err("a `delete` may not carry `doc`"),
            (OpKind::Delete, None, Some(_)) => Err("a `delete` may not carry `fields`"),
            (OpKind::Delete, None, None) => Ok(Op::Delete),
        }
    }
}

const PUT_WITH_FIELDS: &str =
    "a `put` may not carry `fields` (that is a `patch`); it replaces the whole document with `doc`";
const PATCH_WITH_DOC: &str =
    "a `patch` may not carry `doc` (that is a `put`); it sets the fields named in `fields`";

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

    /// A mutation with `kind` and the given members added to a valid delete.
    fn with_members(kind: &str, members: serde_json::Value) -> serde_json::Value {
        let mut m = json!({"seq": 1, "tx": 1, "space": "s", "collection": "c", "id": "x",
            "kind": kind, "hlc": "0000000000010000", "base_version": 0});
        for (name, value) in members.as_object().expect("object") {
            m[name] = value.clone();
        }
        m
    }

    #[test]
    fn an_op_carries_only_the_member_of_its_kind() {
        let parse = |kind, members| {
            serde_json::from_value::<Mutation>(with_members(kind, members))
                .map(|m| m.op)
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            parse("put", json!({"doc": {"a": 1}})),
            Ok(Op::Put {
                doc: json!({"a": 1}).as_object().cloned().expect("object")
            })
        );
        assert_eq!(
            parse("patch", json!({"fields": {}})),
            Ok(Op::Patch { fields: Doc::new() })
        );
        assert_eq!(parse("delete", json!({})), Ok(Op::Delete));
        for (kind, members, named) in [
            ("put", json!({"doc": {}, "fields": {"a": 1}}), "`fields`"),
            ("put", json!({"doc": {}, "fields": null}), "`fields`"),
            ("put", json!({"fields": {"a": 1}}), "`fields`"),
            ("put", json!({"doc": null}), "`doc`"),
            ("put", json!({}), "`doc`"),
            ("patch", json!({"fields": {}, "doc": {"a": 1}}), "`doc`"),
            ("patch", json!({"fields": {}, "doc": null}), "`doc`"),
            ("patch", json!({"doc": {"a": 1}}), "`doc`"),
            ("patch", json!({"fields": null}), "`fields`"),
            ("patch", json!({}), "`fields`"),
            ("delete", json!({"doc": {}}), "`doc`"),
            ("delete", json!({"doc": null}), "`doc`"),
            ("delete", json!({"fields": {"a": null}}), "`fields`"),
        ] {
            let err = parse(kind, members.clone()).expect_err("refused");
            assert!(err.contains(named), "{kind} {members}: {err}");
        }
        // Members the protocol does not define are ignored, as everywhere in a request.
        assert_eq!(parse("delete", json!({"x-later": 1})), Ok(Op::Delete));
    }

    #[test]
    fn an_op_with_a_foreign_member_is_refused_from_json_text_too() {
        // The server parses text, where the flattened members arrive buffered.
        let text = r#"{"seq": 1, "tx": 1, "space": "s", "collection": "c", "id": "x",
            "kind": "put", "doc": {"a": 1}, "fields": {"b": 2}, "hlc": "0000000000010000",
            "base_version": 0}"#;
        let err = serde_json::from_str::<Mutation>(text).expect_err("refused");
        assert!(err.to_string().contains("`fields`"), "{err}");
        assert!(err.to_string().contains("line"), "{err}");
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
