//! Restoration values as JSON, for tools and bindings that speak JSON (the CLI, the C ABI):
//! maps are objects, lists arrays, integers JSON integers, floats JSON numbers with a
//! fraction or exponent, and bytes `{"$bytes": "<hex>"}`. The mapping round-trips: a
//! one-member object `{"$bytes": …}` holding a hex string is always bytes.

use serde_json::{json, Map, Number, Value as Json};

use super::value::Value;

/// The JSON form of `value` (a float that JSON cannot hold, NaN or infinite, becomes `null`).
pub fn to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => json!(i),
        Value::Float(f) => Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::String(s) => Json::String(s.clone()),
        Value::Bytes(b) => json!({ "$bytes": hex(b) }),
        Value::List(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Map(map) => Json::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect::<Map<_, _>>(),
        ),
    }
}

/// The value a JSON form stands for: integers that fit an `i64` stay integers, other
/// numbers are floats.
pub fn from_json(json: &Json) -> Value {
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) if !n.is_f64() => Value::Int(i),
            _ => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items) => Value::List(items.iter().map(from_json).collect()),
        Json::Object(map) => match bytes_of(map) {
            Some(bytes) => Value::Bytes(bytes),
            None => Value::Map(map.iter().map(|(k, v)| (k.clone(), from_json(v))).collect()),
        },
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `{"$bytes": "<even-length hex>"}` → the bytes.
fn bytes_of(map: &Map<String, Json>) -> Option<Vec<u8>> {
    let text = match (map.len(), map.get("$bytes")) {
        (1, Some(Json::String(text))) => text,
        _ => return None,
    };
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_value_round_trips() {
        let value = Value::Map(
            [
                ("n".to_owned(), Value::Null),
                ("b".to_owned(), Value::Bool(true)),
                ("i".to_owned(), Value::Int(-7)),
                ("f".to_owned(), Value::Float(1.0)),
                ("s".to_owned(), Value::String("draft".into())),
                ("x".to_owned(), Value::Bytes(vec![0, 1, 254, 255])),
                (
                    "l".to_owned(),
                    Value::List(vec![Value::Int(1), Value::Float(2.5)]),
                ),
            ]
            .into_iter()
            .collect(),
        );
        let json = to_json(&value);
        assert_eq!(json["x"], json!({"$bytes": "0001feff"}));
        assert_eq!(json["f"].to_string(), "1.0");
        assert_eq!(from_json(&json), value);
        let reparsed: Json = serde_json::from_str(&json.to_string()).unwrap_or_default();
        assert_eq!(from_json(&reparsed), value, "through text too");
    }

    #[test]
    fn objects_that_only_look_like_bytes_stay_maps() {
        assert!(matches!(
            from_json(&json!({"$bytes": "abc"})),
            Value::Map(_)
        ));
        assert!(matches!(from_json(&json!({"$bytes": "zz"})), Value::Map(_)));
        assert!(matches!(
            from_json(&json!({"$bytes": "00", "y": 1})),
            Value::Map(_)
        ));
        assert!(matches!(from_json(&json!(3)), Value::Int(3)));
        assert!(matches!(from_json(&json!(3.5)), Value::Float(_)));
    }
}
