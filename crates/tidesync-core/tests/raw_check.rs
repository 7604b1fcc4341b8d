//! `RawChange::check` (the client's no-allocation check of pulled text) accepts exactly what
//! the typed path accepts: the change parses, `deleted` agrees with the document, and
//! `RecordState::from_wire` builds a state. Generated changes mix valid and broken parts
//! (unstamped fields, missing liveness, malformed stamps, non-object documents, a wrong
//! `deleted` flag), so both answers are exercised.

use proptest::prelude::*;
use tidesync_core::RecordState;
use tidesync_protocol::RawChange;

fn arb_stamp() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (0u64..1 << 20, "[a-c]{1,3}").prop_map(|(h, c)| format!("\"{h:016x}@{c}\"")),
        1 => Just("\"0007@c\"".to_owned()),
        1 => Just("\"0000000000000007@bad id\"".to_owned()),
        1 => Just("\"0000000000000007\"".to_owned()),
        1 => Just("7".to_owned()),
    ]
}

fn arb_doc() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        6 => proptest::collection::btree_map("[a-d]", 0i64..5, 0..4).prop_map(|m| {
            let fields: Vec<String> = m.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            Some(format!("{{{}}}", fields.join(",")))
        }),
        2 => Just(None),
        1 => Just(Some("[1]".to_owned())),
        1 => Just(Some("\"text\"".to_owned())),
    ]
}

fn arb_stamps() -> impl Strategy<Value = String> {
    (
        proptest::collection::btree_map("[a-d]", arb_stamp(), 0..4),
        proptest::option::of(arb_stamp()),
        proptest::option::of(arb_stamp()),
        0u8..8,
    )
        .prop_map(|(fields, liveness, cleared, shape)| {
            if shape == 0 {
                return "[]".to_owned();
            }
            if shape == 1 {
                return "\"stamps\"".to_owned();
            }
            let fields: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            let mut parts = vec![format!("\"fields\":{{{}}}", fields.join(","))];
            if let Some(l) = liveness {
                parts.push(format!("\"liveness\":{l}"));
            }
            if let Some(c) = cleared {
                parts.push(format!("\"cleared\":{c}"));
            }
            format!("{{{}}}", parts.join(","))
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn check_agrees_with_the_typed_path(doc in arb_doc(), stamps in arb_stamps(), deleted in any::<bool>()) {
        let json = format!(
            r#"{{"space":"s","collection":"c","id":"r","version":1,"deleted":{deleted},"doc":{},"stamps":{stamps}}}"#,
            doc.as_deref().unwrap_or("null")
        );
        let raw: RawChange = serde_json::from_str(&json).expect("a raw change only needs JSON");
        let typed = raw.parse().ok().filter(|c| c.deleted == c.doc.is_none());
        let typed_ok = typed.is_some_and(|c| RecordState::from_wire(c.doc.as_ref(), &c.stamps).is_ok());
        let checked = raw.check();
        prop_assert_eq!(checked.is_ok(), typed_ok, "{} -> {:?}", json, checked);
        if let (Ok(newest), Ok(change)) = (checked, raw.parse()) {
            let state = RecordState::from_wire(change.doc.as_ref(), &change.stamps).expect("checked");
            prop_assert_eq!(newest, state.max_stamp().map(|s| s.hlc));
        }
    }
}
