//! The same semantics in plain Rust, over one document: the reference the SQL translation is
//! property-tested against, and what projection uses.

use std::cmp::Ordering;

use serde_json::{Map, Value};
use tidesync_protocol::Doc;

use super::{Cond, FieldPath, Selector, SortKey};

/// The value at `path`, if every segment is there (through nested objects).
pub(crate) fn get<'a>(doc: &'a Doc, path: &FieldPath) -> Option<&'a Value> {
    let (first, rest) = path.segments().split_first()?;
    let mut value = doc.get(first)?;
    for segment in rest {
        value = value.as_object()?.get(segment)?;
    }
    Some(value)
}

/// The type class: missing 0, null 1, false 2, true 3, number 4, string 5, array 6, object 7.
pub(crate) fn class(value: Option<&Value>) -> u8 {
    match value {
        None => 0,
        Some(Value::Null) => 1,
        Some(Value::Bool(false)) => 2,
        Some(Value::Bool(true)) => 3,
        Some(Value::Number(_)) => 4,
        Some(Value::String(_)) => 5,
        Some(Value::Array(_)) => 6,
        Some(Value::Object(_)) => 7,
    }
}

/// Orders two values of one class: numbers numerically, strings by bytes, arrays and objects
/// by their JSON text, the rest are equal within their class.
fn within(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) if !a.is_f64() && !b.is_f64() => x.cmp(&y),
            _ => x
                .as_f64()
                .unwrap_or(f64::NAN)
                .partial_cmp(&y.as_f64().unwrap_or(f64::NAN))
                .unwrap_or(Ordering::Equal),
        },
        (Value::String(x), Value::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Array(_), Value::Array(_)) | (Value::Object(_), Value::Object(_)) => {
            a.to_string().cmp(&b.to_string())
        }
        _ => Ordering::Equal,
    }
}

/// Orders two field values as a sort does: by class, then within it.
pub(crate) fn order(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    class(a).cmp(&class(b)).then_with(|| match (a, b) {
        (Some(a), Some(b)) => within(a, b),
        _ => Ordering::Equal,
    })
}

fn equal(v: Option<&Value>, x: &Value) -> bool {
    v.is_some_and(|v| class(Some(v)) == class(Some(x)) && within(v, x) == Ordering::Equal)
}

fn compare(v: Option<&Value>, x: &Value) -> Option<Ordering> {
    let v = v?;
    (class(Some(v)) == class(Some(x))).then(|| within(v, x))
}

fn holds(cond: &Cond, v: Option<&Value>) -> bool {
    match cond {
        Cond::Eq(x) => equal(v, x),
        Cond::Ne(x) => !equal(v, x),
        Cond::Gt(x) => compare(v, x) == Some(Ordering::Greater),
        Cond::Gte(x) => matches!(compare(v, x), Some(Ordering::Greater | Ordering::Equal)),
        Cond::Lt(x) => compare(v, x) == Some(Ordering::Less),
        Cond::Lte(x) => matches!(compare(v, x), Some(Ordering::Less | Ordering::Equal)),
        Cond::In(xs) => xs.iter().any(|x| equal(v, x)),
        Cond::Nin(xs) => !xs.iter().any(|x| equal(v, x)),
        Cond::Exists(there) => v.is_some() == *there,
        Cond::BeginsWith(prefix) => v
            .and_then(Value::as_str)
            .is_some_and(|s| s.starts_with(prefix.as_str())),
        Cond::Not(inner) => !holds(inner, v),
        Cond::All(conds) => conds.iter().all(|c| holds(c, v)),
    }
}

/// Whether `doc` is selected by `selector`.
pub fn matches(selector: &Selector, doc: &Doc) -> bool {
    match selector {
        Selector::All => true,
        Selector::Field(path, cond) => holds(cond, get(doc, path)),
        Selector::And(parts) => parts.iter().all(|s| matches(s, doc)),
        Selector::Or(parts) => parts.iter().any(|s| matches(s, doc)),
        Selector::Not(inner) => !matches(inner, doc),
    }
}

/// Orders two records (`(id, doc)`) as a query with `sort` does.
pub fn sort_order(sort: &[SortKey], a: (&str, &Doc), b: (&str, &Doc)) -> Ordering {
    for key in sort {
        let o = order(get(a.1, &key.field), get(b.1, &key.field));
        let o = if key.descending { o.reverse() } else { o };
        if o != Ordering::Equal {
            return o;
        }
    }
    let by_id = a.0.as_bytes().cmp(b.0.as_bytes());
    if sort.last().is_some_and(|k| k.descending) {
        by_id.reverse()
    } else {
        by_id
    }
}

/// `doc` with only `fields` (nested paths rebuild their objects).
pub(crate) fn project(doc: &Doc, fields: &[FieldPath]) -> Doc {
    let mut out = Map::new();
    for path in fields {
        if let Some(value) = get(doc, path) {
            insert(&mut out, path.segments(), value.clone());
        }
    }
    out
}

/// Sets `value` at `segments` in `map`, creating the objects on the way.
fn insert(map: &mut Map<String, Value>, segments: &[String], value: Value) {
    match segments {
        [] => {}
        [last] => {
            map.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = map
                .entry(first.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(inner) = entry {
                insert(inner, rest, value);
            }
        }
    }
}
