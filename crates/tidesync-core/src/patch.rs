//! JSON merge patch (RFC 7396), resolved to top-level field writes.
//!
//! The unit of last-writer-wins is a top-level field, so a patch travels as "field → whole
//! new value (or null)". An app may still hand the client a nested merge patch; the client
//! resolves it against its current view with [`resolve_patch`] before queueing it.

use serde_json::Value;
use tidesync_protocol::Doc;

/// Turns a merge patch into top-level field writes against `current` (the document as the
/// author sees it, `None` if absent): each patched field maps to its complete new value, or
/// to `null` if the patch removes it.
pub fn resolve_patch(current: Option<&Doc>, patch: &Doc) -> Doc {
    patch
        .iter()
        .map(|(field, change)| {
            let old = current.and_then(|doc| doc.get(field));
            let new = match change {
                Value::Object(_) => merge_value(old.cloned(), change),
                other => other.clone(),
            };
            (field.clone(), new)
        })
        .collect()
}

/// RFC 7396 `MergePatch(target, patch)` on one value.
fn merge_value(target: Option<Value>, patch: &Value) -> Value {
    let Value::Object(patch) = patch else {
        return patch.clone();
    };
    let mut target = match target {
        Some(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    for (key, change) in patch {
        if change.is_null() {
            target.remove(key);
        } else {
            let merged = merge_value(target.remove(key), change);
            target.insert(key.clone(), merged);
        }
    }
    Value::Object(target)
}

/// Applies a mutation to a document the plain way: `put` replaces, `patch` sets/removes
/// fields (resurrecting a deleted record), `delete` removes. For a mutation stamped after
/// every write the record has seen (a fresh local write), this equals
/// [`RecordState::apply`](crate::RecordState::apply) followed by `doc()`; the property test
/// `the_newest_mutation_applied_last_equals_plain_application` holds it to that.
pub fn apply_op(doc: Option<Doc>, op: &tidesync_protocol::Op) -> Option<Doc> {
    use tidesync_protocol::Op;
    match op {
        Op::Put { doc } => Some(doc.clone()),
        Op::Delete => None,
        Op::Patch { fields } => {
            let mut doc = doc.unwrap_or_default();
            apply_fields(&mut doc, fields);
            Some(doc)
        }
    }
}

/// Applies top-level field writes to a document: `null` removes the field.
pub fn apply_fields(doc: &mut Doc, fields: &Doc) {
    for (field, value) in fields {
        if value.is_null() {
            doc.remove(field);
        } else {
            doc.insert(field.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(v: Value) -> Doc {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn nested_objects_merge_against_the_current_value() {
        let current = doc(json!({"title": "a", "address": {"city": "Oslo", "zip": "0150"}}));
        let patch = doc(json!({"address": {"city": "Bergen", "zip": null}, "title": null}));
        let resolved = resolve_patch(Some(&current), &patch);
        assert_eq!(
            Value::Object(resolved),
            json!({"address": {"city": "Bergen"}, "title": null})
        );
    }

    #[test]
    fn rfc7396_examples() {
        // From RFC 7396 appendix A.
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ];
        for (target, patch, expected) in cases {
            let mut target = doc(target);
            let fields = resolve_patch(Some(&target), &doc(patch.clone()));
            apply_fields(&mut target, &fields);
            assert_eq!(Value::Object(target), expected, "patch {patch}");
        }
    }
}
