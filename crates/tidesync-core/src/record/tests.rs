#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use serde_json::{json, Value};
use tidesync_protocol::{ClientId, Doc, Hlc, Op, Stamp};

use super::*;

fn stamp(ms: u64, client: &str) -> Stamp {
    Stamp::new(Hlc::new(ms, 0).unwrap(), ClientId::new(client).unwrap())
}

fn doc(v: Value) -> Doc {
    v.as_object().cloned().unwrap()
}

fn put(v: Value) -> Op {
    Op::Put { doc: doc(v) }
}

fn patch(v: Value) -> Op {
    Op::Patch { fields: doc(v) }
}

fn state_of(ops: &[(Op, Stamp)]) -> RecordState {
    let mut state = RecordState::default();
    for (op, s) in ops {
        state.apply(op, s);
    }
    state
}

#[test]
fn concurrent_edits_to_different_fields_both_survive() {
    let base = (put(json!({"title": "t", "done": false})), stamp(1, "a"));
    let alice = (patch(json!({"title": "Buy milk"})), stamp(5, "a"));
    let bob = (patch(json!({"done": true})), stamp(4, "b"));
    for order in [
        [&base, &alice, &bob],
        [&base, &bob, &alice],
        [&bob, &alice, &base],
    ] {
        let state = state_of(&order.map(|x| x.clone()));
        assert_eq!(
            state.doc().map(Value::Object),
            Some(json!({"title": "Buy milk", "done": true}))
        );
    }
}

#[test]
fn same_field_goes_to_the_later_stamp_and_ties_break_by_client() {
    let mut state = RecordState::default();
    state.apply(&patch(json!({"n": 1})), &stamp(10, "b"));
    let effect = state.apply(&patch(json!({"n": 2})), &stamp(9, "z"));
    assert_eq!(effect.lost, vec!["n".to_owned()]);
    assert!(effect.won.is_empty());
    assert_eq!(state.doc().unwrap()["n"], json!(1));
    let effect = state.apply(&patch(json!({"n": 3})), &stamp(10, "c"));
    assert_eq!(
        effect.won,
        vec!["n".to_owned()],
        "same millis: client c > b"
    );
    assert_eq!(state.doc().unwrap()["n"], json!(3));
}

#[test]
fn put_removes_fields_it_does_not_name_even_when_they_arrive_later() {
    let old_patch = (patch(json!({"color": "red"})), stamp(3, "b"));
    let put_op = (put(json!({"title": "x"})), stamp(5, "a"));
    for ops in [
        [old_patch.clone(), put_op.clone()],
        [put_op.clone(), old_patch.clone()],
    ] {
        let state = state_of(&ops);
        assert_eq!(state.doc().map(Value::Object), Some(json!({"title": "x"})));
    }
}

#[test]
fn delete_then_later_patch_resurrects_with_only_the_patched_fields() {
    let ops = [
        (put(json!({"title": "x", "done": false})), stamp(1, "a")),
        (Op::Delete, stamp(2, "a")),
        (patch(json!({"done": true})), stamp(3, "b")),
    ];
    let state = state_of(&ops);
    assert_eq!(state.doc().map(Value::Object), Some(json!({"done": true})));
}

#[test]
fn delete_wins_over_an_older_concurrent_update() {
    let update = (patch(json!({"done": true})), stamp(3, "b"));
    let delete = (Op::Delete, stamp(4, "a"));
    for ops in [
        [update.clone(), delete.clone()],
        [delete.clone(), update.clone()],
    ] {
        let state = state_of(&ops);
        assert_eq!(state.doc(), None);
        assert!(!state.is_live());
    }
}

#[test]
fn patch_null_removes_a_field_and_an_older_set_cannot_bring_it_back() {
    let set = (patch(json!({"note": "hi"})), stamp(1, "a"));
    let remove = (patch(json!({"note": null})), stamp(2, "b"));
    for ops in [[set.clone(), remove.clone()], [remove.clone(), set.clone()]] {
        assert_eq!(state_of(&ops).doc().map(Value::Object), Some(json!({})));
    }
}

#[test]
fn wire_form_round_trips_including_removed_fields() {
    let state = state_of(&[
        (put(json!({"a": 1, "b": [1, 2]})), stamp(1, "a")),
        (patch(json!({"a": null, "c": {"x": 1}})), stamp(2, "b")),
    ]);
    let (doc, stamps) = state.to_wire();
    assert_eq!(
        doc.clone().map(Value::Object),
        Some(json!({"b": [1, 2], "c": {"x": 1}}))
    );
    assert!(stamps.fields.contains_key("a"), "removal stamp travels");
    let back = RecordState::from_wire(doc.as_ref(), &stamps).unwrap();
    assert_eq!(back, state);

    let deleted = state_of(&[
        (put(json!({"a": 1})), stamp(1, "a")),
        (Op::Delete, stamp(2, "a")),
    ]);
    let (doc, stamps) = deleted.to_wire();
    assert_eq!(doc, None);
    assert_eq!(RecordState::from_wire(None, &stamps).unwrap(), deleted);
}

#[test]
fn inconsistent_wire_state_is_refused() {
    let (doc, mut stamps) = state_of(&[(put(json!({"a": 1})), stamp(1, "a"))]).to_wire();
    stamps.fields.clear();
    assert_eq!(
        RecordState::from_wire(doc.as_ref(), &stamps),
        Err(StateError::UnstampedField("a".into()))
    );
}

// ---- properties -------------------------------------------------------------------------

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-5i64..5).prop_map(Value::from),
        "[a-c]{0,2}".prop_map(Value::from),
    ]
}

fn arb_fields() -> impl Strategy<Value = Doc> {
    proptest::collection::btree_map("[a-d]", arb_value(), 0..4)
        .prop_map(|m| m.into_iter().collect())
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => arb_fields().prop_map(|fields| Op::Patch { fields }),
        2 => arb_fields().prop_map(|doc| Op::Put { doc }),
        1 => Just(Op::Delete),
    ]
}

/// Mutations with distinct stamps (as real ones are): unique (millis, client) pairs, with
/// deliberately colliding millis across clients.
fn arb_mutations() -> impl Strategy<Value = Vec<(Op, Stamp)>> {
    proptest::collection::btree_map((0u64..6, 0usize..3), arb_op(), 0..10).prop_map(|m| {
        m.into_iter()
            .map(|((ms, c), op)| (op, stamp(ms, ["a", "b", "c"][c])))
            .collect()
    })
}

proptest! {
    #[test]
    fn any_order_of_the_same_mutations_gives_the_same_record(
        (muts, shuffled) in arb_mutations().prop_flat_map(|m| {
            let shuffled = Just(m.clone()).prop_shuffle();
            (Just(m), shuffled)
        })
    ) {
        let a = state_of(&muts);
        let b = state_of(&shuffled);
        prop_assert_eq!(a.doc(), b.doc());
        prop_assert_eq!(a, b);
    }

    #[test]
    fn merge_is_deterministic_and_idempotent(muts in arb_mutations()) {
        let once = state_of(&muts);
        prop_assert_eq!(&state_of(&muts), &once);
        let twice: Vec<_> = muts.iter().chain(muts.iter()).cloned().collect();
        prop_assert_eq!(&state_of(&twice), &once);
    }

    #[test]
    fn the_newest_mutation_applied_last_equals_plain_application(
        muts in arb_mutations(), last in arb_op()
    ) {
        // The client's fast path: a local write stamped after everything it has seen is
        // applied to the view document directly. It must agree with the merge.
        let mut state = state_of(&muts);
        let mut view = state.doc();
        state.apply(&last, &stamp(100, "a"));
        view = crate::patch::apply_op(view, &last);
        prop_assert_eq!(state.doc(), view);
    }

    #[test]
    fn wire_round_trip_preserves_state(muts in arb_mutations()) {
        let state = state_of(&muts);
        let (doc, stamps) = state.to_wire();
        prop_assert_eq!(RecordState::from_wire(doc.as_ref(), &stamps).unwrap(), state);
    }
}

#[test]
fn a_late_delete_that_loses_liveness_still_voids_older_fields_and_says_so() {
    // A puts {old}, A patches {new} at 30; B's delete at 20 arrives last: it loses the
    // liveness register (30 > 20) but its clear voids `old` (10 < 20). That is a change.
    let mut state = state_of(&[
        (put(json!({"old": 1})), stamp(10, "a")),
        (patch(json!({"new": 2})), stamp(30, "a")),
    ]);
    let effect = state.apply(&Op::Delete, &stamp(20, "b"));
    assert!(!effect.is_noop(), "the clear moved: the record changed");
    assert!(effect.cleared);
    assert_eq!(state.doc().map(Value::Object), Some(json!({"new": 2})));
    // The same delete again changes nothing.
    assert!(state.apply(&Op::Delete, &stamp(20, "b")).is_noop());
}
