//! What the RxDB and WatermelonDB protocols share: a space's changes and records read back
//! through [`SyncService::pull`] (permissions, one snapshot per page, version order), and
//! documents written as mutations through [`SyncService::push_compat`] (the native push
//! path: exactly-once per client id and seq, stamps, versions, pokes).
//!
//! **Idempotency.** Neither protocol numbers its pushes, so a push's client id is derived
//! from what it writes: `{protocol}-` and 48 hex digits of SHA-256 over the protocol, the
//! user and the mutations (keys, operations, base versions), numbered 1..n. A push resent
//! after a lost answer makes the same mutations, hence the same client id and seqs, and the
//! storage skips them as duplicates (or answers their remembered rejections again) — in one
//! transaction with the client row locked, so two nodes of one PostgreSQL database cannot
//! both apply it. The cost is one client row per distinct push (docs/compat.md).
//!
//! **Compare-and-swap.** Every mutation carries as `base_version` the version the client's
//! view of the record was read at; the push is judged `strict` whatever the collection's
//! policy ([`PushOrigin::Compat`](crate::storage::PushOrigin)), so a record someone else
//! changed since is refused with `stale_base` inside the writing transaction, never by a
//! read-then-write in a handler.
//!
//! [`SyncService::pull`]: crate::SyncService::pull
//! [`SyncService::push_compat`]: crate::SyncService

use std::collections::HashMap;
use std::time::Instant;

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tidesync_protocol::{
    ClientId, CollectionName, Cursor, Doc, ErrorCode, Mutation, PullRequest, PushOutcome,
    PushResult, RawChange, RecordId, RecordKey, SpaceName, MAX_REFETCH, MIN_PROTOCOL_VERSION,
};

use crate::auth::Grants;
use crate::error::ApiError;
use crate::state::AppState;

/// Which compat protocol a client id is made for (its prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Rxdb,
    Watermelon,
}

impl Protocol {
    fn prefix(self) -> &'static str {
        match self {
            Protocol::Rxdb => "rxdb",
            Protocol::Watermelon => "wmdb",
        }
    }
}

/// The client id of a push of `mutations` by `user` over `protocol`: the same for the same
/// push resent, different for any other (see the module docs).
pub(crate) fn push_client_id(protocol: Protocol, user: &str, mutations: &[Mutation]) -> ClientId {
    let mut hash = Sha256::new();
    hash.update(protocol.prefix().as_bytes());
    hash.update([0]);
    hash.update(user.as_bytes());
    hash.update([0]);
    for m in mutations {
        // Infallible: a mutation is plain data with string keys.
        let text = serde_json::to_vec(m).unwrap_or_default();
        hash.update((text.len() as u64).to_le_bytes());
        hash.update(&text);
    }
    derived_id(protocol, hash)
}

/// The client id compat pulls of `user` are made with: they never push, so `acked_through`
/// is always 0 and the id only has to belong to the user.
fn pull_client_id(user: &str) -> ClientId {
    let mut hash = Sha256::new();
    hash.update(b"pull\0");
    hash.update(user.as_bytes());
    let hex = hex::encode(hash.finalize());
    // Infallible: letters, digits and a dash.
    ClientId::new(format!("compat-pull-{}", &hex[..48])).expect("a valid client id")
}

fn derived_id(protocol: Protocol, hash: Sha256) -> ClientId {
    let hex = hex::encode(hash.finalize());
    // Infallible: letters, digits and a dash, 53 bytes.
    ClientId::new(format!("{}-{}", protocol.prefix(), &hex[..48])).expect("a valid client id")
}

/// Changes read by [`changes_since`].
#[derive(Debug)]
pub(crate) struct Changes {
    /// In version order; a record at most once (its newest state).
    pub changes: Vec<RawChange>,
    /// The space version everything up to which was read: the version of the last change
    /// when `want` was reached, else the space's version when the last page was read.
    pub through: u64,
    /// Nothing of the collection remains after `through`.
    pub complete: bool,
}

/// The changes of `space` after version `from`, of `collection` only (or of every
/// collection), until `want` were found or none remain. Pages of at most `page` changes are
/// read through the native pull (each in one snapshot); a record changed again while pages
/// are read appears once, at its newest version. `403` unless the space is readable; `409
/// cursor_reset` when `from` is above the space's version.
pub(crate) async fn changes_since(
    state: &AppState,
    grants: &Grants,
    space: &SpaceName,
    from: u64,
    collection: Option<&CollectionName>,
    want: usize,
    page: u32,
) -> Result<Changes, ApiError> {
    // A record changed again while pages are read: its older entry becomes `None`.
    let mut changes: Vec<Option<RawChange>> = Vec::new();
    let mut positions: HashMap<(CollectionName, RecordId), usize> = HashMap::new();
    let mut cursor = from;
    loop {
        let started = Instant::now();
        let response = state
            .service()
            .pull(
                grants,
                pull_request(grants, space, cursor, page, Vec::new()),
            )
            .await?;
        state.metrics().pull_done(&response, started.elapsed());
        let next = response.cursor.get(space).copied().unwrap_or(cursor);
        for change in response.changes {
            if collection.is_some_and(|c| *c != change.collection) {
                continue;
            }
            let at = change.version;
            let key = (change.collection.clone(), change.id.clone());
            if let Some(old) = positions.insert(key, changes.len()) {
                changes[old] = None;
            }
            changes.push(Some(change));
            if positions.len() == want {
                return Ok(Changes {
                    changes: changes.into_iter().flatten().collect(),
                    through: at,
                    complete: false,
                });
            }
        }
        if !response.has_more || next <= cursor {
            return Ok(Changes {
                changes: changes.into_iter().flatten().collect(),
                through: next,
                complete: true,
            });
        }
        cursor = next;
    }
}

/// The current state of the records `ids` of `space`/`collection` (absent: never written),
/// read through the native pull's refetch, [`MAX_REFETCH`] at a time. `403` unless the
/// space is readable.
pub(crate) async fn current(
    state: &AppState,
    grants: &Grants,
    space: &SpaceName,
    collection: &CollectionName,
    ids: &[RecordId],
) -> Result<HashMap<RecordId, RawChange>, ApiError> {
    let mut found = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(MAX_REFETCH) {
        // From the space's version, so the page itself is (nearly) empty and costs nothing.
        let version = state
            .storage()
            .space_versions(std::slice::from_ref(space))
            .await?
            .first()
            .copied()
            .unwrap_or(0);
        let refetch = chunk
            .iter()
            .map(|id| RecordKey::new(space.clone(), collection.clone(), id.clone()))
            .collect();
        let response = state
            .service()
            .pull(grants, pull_request(grants, space, version, 1, refetch))
            .await?;
        for change in response.changes {
            if change.collection == *collection {
                found.insert(change.id.clone(), change);
            }
        }
    }
    Ok(found)
}

fn pull_request(
    grants: &Grants,
    space: &SpaceName,
    from: u64,
    limit: u32,
    refetch: Vec<RecordKey>,
) -> PullRequest {
    PullRequest {
        client_id: pull_client_id(&grants.user),
        // Protocol 1: no echoes (they are for tidesync clients); every record in full.
        protocol: MIN_PROTOCOL_VERSION,
        cursor: Cursor::from([(space.clone(), from)]),
        spaces: vec![space.clone()],
        limit: Some(limit),
        refetch,
    }
}

/// Writes `mutations` (seqs 1..n) as one push of `protocol`, under the client id derived
/// from them. Returns the rejected mutations' results (a resent push: the remembered ones).
///
/// An RxDB push is held to `Limits::max_mutations_per_push` (RxDB splits its pushes by its
/// `batchSize`); a WatermelonDB push only to the body limit: it is every local change of
/// the app in one transaction, and refusing it for its count would refuse it forever.
pub(crate) async fn write(
    state: &AppState,
    grants: &Grants,
    protocol: Protocol,
    mutations: Vec<Mutation>,
) -> Result<Vec<PushResult>, ApiError> {
    if mutations.is_empty() {
        return Ok(Vec::new());
    }
    let max_mutations = match protocol {
        Protocol::Rxdb => state.limits().max_mutations_per_push,
        Protocol::Watermelon => usize::MAX,
    };
    let client_id = push_client_id(protocol, &grants.user, &mutations);
    tracing::Span::current().record("client_id", client_id.as_str());
    let started = Instant::now();
    let response = state
        .service()
        .push_compat(grants, client_id, mutations, max_mutations)
        .await?;
    state.metrics().push_done(&response, started.elapsed());
    Ok(response
        .results
        .into_iter()
        .filter(|r| matches!(r.outcome, PushOutcome::Rejected { .. }))
        .collect())
}

/// The code of a rejected result (`None` if it was not rejected).
pub(crate) fn rejection_code(result: &PushResult) -> Option<ErrorCode> {
    match &result.outcome {
        PushOutcome::Rejected { code, .. } => Some(*code),
        _ => None,
    }
}

/// A stored document as a JSON object (`None` for a deleted record).
pub(crate) fn document(change: &RawChange) -> Result<Option<Map<String, Value>>, ApiError> {
    let Some(raw) = change.doc.as_deref() else {
        return Ok(None);
    };
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::Object(doc)) => Ok(Some(doc)),
        Ok(_) | Err(_) => Err(ApiError::internal(format!(
            "stored document of {}/{}/{} is not a JSON object",
            change.space, change.collection, change.id
        ))),
    }
}

/// A stored document with `fields` added in front, as JSON text (`None` for a deleted
/// record). The stored text is spliced, not parsed, unless it may already hold one of the
/// fields (its JSON-encoded name occurs in it: stored text is serde_json's, so a key is
/// always encoded the same way); then the added field replaces the stored one.
pub(crate) fn document_with(
    change: &RawChange,
    fields: &[(&str, Value)],
) -> Result<Option<Box<RawValue>>, ApiError> {
    let Some(raw) = change.doc.as_deref() else {
        return Ok(None);
    };
    let text = raw.get();
    let names: Vec<String> = fields.iter().map(|(name, _)| json_text(name)).collect();
    let body = text.strip_prefix('{').map(str::trim_start);
    let out = match body {
        Some(body) if !names.iter().any(|name| text.contains(name.as_str())) => {
            let mut out = String::with_capacity(text.len() + 64);
            out.push('{');
            for (i, ((_, value), name)) in fields.iter().zip(&names).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(name);
                out.push(':');
                out.push_str(&json_text(value));
            }
            if !body.starts_with('}') {
                out.push(',');
            }
            out.push_str(body);
            out
        }
        _ => {
            let mut doc = document(change)?.unwrap_or_default();
            for (name, value) in fields {
                doc.insert((*name).to_owned(), value.clone());
            }
            json_text(&doc)
        }
    };
    RawValue::from_string(out)
        .map(Some)
        .map_err(ApiError::internal)
}

/// A value as JSON text (infallible for values with string keys).
pub(crate) fn json_text<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// `doc` without the fields in `drop` (what the compat protocols carry besides the data).
pub(crate) fn without(mut doc: Doc, drop: &[&str]) -> Doc {
    for field in drop {
        doc.remove(*field);
    }
    doc
}

/// JSON equality where numbers compare by value (`1` equals `1.0`), as JavaScript sees
/// them.
pub(crate) fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || matches!((x.as_f64(), y.as_f64()), (Some(x), Some(y)) if x == y)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => same_fields(x, y),
        _ => a == b,
    }
}

/// [`same_json`] of two objects.
pub(crate) fn same_fields(x: &Map<String, Value>, y: &Map<String, Value>) -> bool {
    x.len() == y.len()
        && x.iter()
            .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(doc: Option<&str>) -> RawChange {
        RawChange {
            space: SpaceName::new("s").expect("space"),
            collection: CollectionName::new("c").expect("collection"),
            id: RecordId::new("r1").expect("id"),
            version: 1,
            deleted: doc.is_none(),
            doc: doc.map(|d| RawValue::from_string(d.to_owned()).expect("json")),
            stamps: RawValue::from_string("{}".to_owned()).expect("json"),
        }
    }

    fn with_id(doc: Option<&str>) -> Option<Value> {
        let fields = [("id", Value::from("r1")), ("_deleted", Value::from(false))];
        document_with(&change(doc), &fields)
            .expect("document")
            .map(|raw| serde_json::from_str(raw.get()).expect("valid JSON"))
    }

    #[test]
    fn fields_are_spliced_in_front_or_replace_stored_ones() {
        let spliced = |doc| with_id(Some(doc)).expect("live");
        assert_eq!(
            spliced("{}"),
            serde_json::json!({"id": "r1", "_deleted": false})
        );
        assert_eq!(
            spliced(r#"{"a":1,"b":{"c":[2]}}"#),
            serde_json::json!({"id": "r1", "_deleted": false, "a": 1, "b": {"c": [2]}})
        );
        // A stored field of the same name (at any depth, or as a value) takes the parsing
        // path; the added one wins at the top level and nested ones stay.
        assert_eq!(
            spliced(r#"{"id":7,"x":{"id":8},"y":"id"}"#),
            serde_json::json!({"id": "r1", "_deleted": false, "x": {"id": 8}, "y": "id"})
        );
        assert_eq!(with_id(None), None);
    }

    #[test]
    fn numbers_compare_by_value_and_objects_by_fields() {
        let v = |text: &str| serde_json::from_str::<Value>(text).expect("json");
        assert!(same_json(&v("1"), &v("1.0")));
        assert!(same_json(
            &v(r#"{"a":[1,{"b":2.0}]}"#),
            &v(r#"{"a":[1.0,{"b":2}]}"#)
        ));
        assert!(!same_json(&v(r#"{"a":1}"#), &v(r#"{"a":1,"b":null}"#)));
        assert!(!same_json(&v("[1,2]"), &v("[2,1]")));
        assert!(!same_json(&v(r#""1""#), &v("1")));
    }

    #[test]
    fn a_push_client_id_depends_on_protocol_user_and_mutations() {
        let m = |base: u64| Mutation {
            seq: 1,
            tx: 1,
            key: RecordKey::parse("s", "c", "r1").expect("key"),
            op: tidesync_protocol::Op::Delete,
            hlc: tidesync_protocol::Hlc::ZERO,
            base_version: base,
        };
        let id = |p, user, base| push_client_id(p, user, &[m(base)]);
        assert_eq!(
            id(Protocol::Rxdb, "alice", 3),
            id(Protocol::Rxdb, "alice", 3)
        );
        assert_ne!(
            id(Protocol::Rxdb, "alice", 3),
            id(Protocol::Watermelon, "alice", 3)
        );
        assert_ne!(id(Protocol::Rxdb, "alice", 3), id(Protocol::Rxdb, "bob", 3));
        assert_ne!(
            id(Protocol::Rxdb, "alice", 3),
            id(Protocol::Rxdb, "alice", 4)
        );
        assert!(id(Protocol::Watermelon, "alice", 3)
            .as_str()
            .starts_with("wmdb-"));
    }
}
