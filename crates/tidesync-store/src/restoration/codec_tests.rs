#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn round_trip(v: &Value) -> Value {
    let bytes = encode(v).unwrap();
    assert_eq!(bytes.len(), encoded_len(v).unwrap(), "encoded_len is exact");
    decode(&bytes).unwrap()
}

fn nested_lists(depth: usize) -> Value {
    let mut v = Value::Null;
    for _ in 0..depth {
        v = Value::List(vec![v]);
    }
    v
}

fn map(pairs: &[(&str, Value)]) -> Value {
    Value::Map(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    )
}

#[test]
fn scalars_round_trip_exactly() {
    let values = [
        Value::Null,
        Value::Bool(true),
        Value::Bool(false),
        Value::Int(i64::MIN),
        Value::Int(i64::MAX),
        Value::Int(0),
        Value::Float(f64::NAN),
        Value::Float(-0.0),
        Value::Float(f64::INFINITY),
        Value::Float(f64::from_bits(0x7ff8_dead_beef_0001)), // NaN with a payload
        Value::String(String::new()),
        Value::String("grüße, 世界 🌊".to_owned()),
        Value::Bytes(vec![]),
        Value::Bytes(vec![0, 255, 7]),
    ];
    for v in &values {
        assert_eq!(&round_trip(v), v);
    }
    let neg_zero = round_trip(&Value::Float(-0.0)).as_f64().unwrap();
    assert!(neg_zero.is_sign_negative(), "-0.0 keeps its sign");
}

#[test]
fn collections_round_trip() {
    let v = map(&[
        ("", Value::List(vec![])),
        ("empty map", Value::Map(BTreeMap::new())),
        (
            "items",
            Value::List(vec![Value::Int(1), map(&[("ß", Value::Null)])]),
        ),
        ("名前", Value::from("draft")),
    ]);
    assert_eq!(round_trip(&v), v);
    assert_eq!(
        round_trip(&nested_lists(MAX_DEPTH)),
        nested_lists(MAX_DEPTH)
    );
}

#[test]
fn layout_is_the_documented_one() {
    assert_eq!(encode(&Value::Null).unwrap(), [1, 0]);
    assert_eq!(
        encode(&Value::Int(-2)).unwrap(),
        [1, 3, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
    );
    assert_eq!(
        encode(&Value::from("hé")).unwrap(),
        [1, 5, 3, b'h', 0xc3, 0xa9]
    );
    let long = Value::Bytes(vec![9; 300]);
    assert_eq!(&encode(&long).unwrap()[..4], [1, 6, 0xac, 0x02]);
    let m = map(&[("b", Value::Bool(true)), ("a", Value::Bool(false))]);
    assert_eq!(
        encode(&m).unwrap(),
        [1, 8, 2, 1, b'a', 1, 1, b'b', 2],
        "keys sorted"
    );
}

#[test]
fn encode_refuses_too_deep_values() {
    let err = encode(&nested_lists(MAX_DEPTH + 1)).unwrap_err();
    assert_eq!(err, EncodeError::TooDeep { limit: MAX_DEPTH });
    assert!(err.to_string().contains("64 levels"));
}

#[test]
fn truncated_input_names_the_offset_and_the_missing_part() {
    let bytes = encode(&Value::Float(1.0)).unwrap();
    let err = decode(&bytes[..6]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "truncated at byte 2: expected 8 bytes of f64, 4 remain"
    );
    assert_eq!(decode(&[]).unwrap_err(), DecodeError::Empty);
    assert!(matches!(
        decode(&[1]).unwrap_err(),
        DecodeError::Truncated {
            what: "value tag",
            ..
        }
    ));
}

#[test]
fn huge_length_prefix_is_rejected_before_allocating() {
    // A string claiming u64::MAX bytes, a list claiming 2^62 items, a map claiming 3 entries in 4 bytes.
    let huge = [
        1, 5, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
    ];
    assert!(matches!(
        decode(&huge).unwrap_err(),
        DecodeError::LengthTooLarge {
            claimed: u64::MAX,
            ..
        }
    ));
    let list = [1, 7, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40];
    assert!(matches!(
        decode(&list).unwrap_err(),
        DecodeError::LengthTooLarge { what: "list", .. }
    ));
    let small_map = [1, 8, 3, 1, b'a', 0, 0];
    assert!(matches!(
        decode(&small_map).unwrap_err(),
        DecodeError::LengthTooLarge { what: "map", .. }
    ));
}

#[test]
fn malformed_varints_are_rejected() {
    let overlong = [1, 5, 0x81, 0x00, b'x'];
    assert!(matches!(
        decode(&overlong).unwrap_err(),
        DecodeError::BadVarint { offset: 2, .. }
    ));
    let overflow = [
        1, 6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
    ];
    assert!(matches!(
        decode(&overflow).unwrap_err(),
        DecodeError::BadVarint { .. }
    ));
    let eleven = [
        1, 6, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x81, 0x00,
    ];
    assert!(matches!(
        decode(&eleven).unwrap_err(),
        DecodeError::BadVarint { .. }
    ));
}

#[test]
fn bad_utf8_is_rejected_in_strings_and_keys() {
    let err = decode(&[1, 5, 2, 0xc3, 0x28]).unwrap_err();
    assert_eq!(
        err,
        DecodeError::InvalidUtf8 {
            offset: 3,
            what: "string"
        }
    );
    let err = decode(&[1, 8, 1, 1, 0xff, 0]).unwrap_err();
    assert_eq!(
        err,
        DecodeError::InvalidUtf8 {
            offset: 4,
            what: "map key"
        }
    );
}

#[test]
fn unsorted_or_duplicate_map_keys_are_rejected() {
    let unsorted = [1, 8, 2, 1, b'b', 0, 1, b'a', 0];
    let err = decode(&unsorted).unwrap_err();
    assert!(
        matches!(&err, DecodeError::MapKeyOrder { key, previous, offset: 6 } if key == "a" && previous == "b")
    );
    let duplicate = [1, 8, 2, 1, b'a', 0, 1, b'a', 0];
    assert!(matches!(
        decode(&duplicate).unwrap_err(),
        DecodeError::MapKeyOrder { .. }
    ));
}

#[test]
fn trailing_bytes_unknown_tags_and_versions_are_rejected() {
    assert_eq!(
        decode(&[1, 0, 0, 0]).unwrap_err(),
        DecodeError::TrailingBytes {
            offset: 2,
            count: 2
        }
    );
    assert_eq!(
        decode(&[1, 0x09]).unwrap_err(),
        DecodeError::UnknownTag { offset: 1, tag: 9 }
    );
    assert_eq!(
        decode(&[2, 0]).unwrap_err(),
        DecodeError::UnsupportedVersion { found: 2 }
    );
}

#[test]
fn too_deep_input_is_rejected() {
    let mut bytes = vec![1];
    bytes.extend(std::iter::repeat_n([7u8, 1], MAX_DEPTH + 1).flatten());
    bytes.push(0);
    assert!(matches!(
        decode(&bytes).unwrap_err(),
        DecodeError::TooDeep {
            limit: MAX_DEPTH,
            ..
        }
    ));
    // A million nested list headers must fail cleanly, not overflow the stack.
    let mut bytes = vec![1];
    bytes.extend(std::iter::repeat_n([7u8, 1], 1_000_000).flatten());
    assert!(matches!(
        decode(&bytes).unwrap_err(),
        DecodeError::TooDeep { .. }
    ));
}

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<u64>().prop_map(|b| Value::Float(f64::from_bits(b))),
        any::<String>().prop_map(Value::String),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::List),
            proptest::collection::btree_map(any::<String>(), inner, 0..8).prop_map(Value::Map),
        ]
    })
}

proptest! {
    #[test]
    fn any_value_round_trips(v in arb_value()) {
        let bytes = encode(&v).unwrap();
        prop_assert_eq!(bytes.len(), encoded_len(&v).unwrap());
        prop_assert_eq!(decode(&bytes).unwrap(), v);
    }

    #[test]
    fn arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Some(first) = bytes.first_mut() {
            *first = FORMAT_VERSION; // get past the version byte most of the time
        }
        if let Ok(v) = decode(&bytes) {
            // Canonical: anything that decodes re-encodes to the same bytes.
            prop_assert_eq!(encode(&v).unwrap(), bytes);
        }
    }

    #[test]
    fn mutated_encodings_never_panic(v in arb_value(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4)) {
        let mut bytes = encode(&v).unwrap();
        for (i, b) in flips {
            let len = bytes.len();
            bytes[i % len] = b;
        }
        let _ = decode(&bytes);
    }
}
