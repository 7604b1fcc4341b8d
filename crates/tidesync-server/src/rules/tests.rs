use serde_json::json;
use tidesync_protocol::{ClientId, Doc, ErrorCode, Hlc, Op, Stamp, Winner};

use super::*;

fn doc(v: serde_json::Value) -> Doc {
    v.as_object().cloned().expect("object")
}

fn stamp(ms: u64, c: &str) -> Stamp {
    Stamp::new(
        Hlc::new(ms, 0).expect("fits"),
        ClientId::new(c).expect("valid"),
    )
}

fn me() -> ClientId {
    ClientId::new("me").expect("valid")
}

/// A record that bob created at version 1 and changed `title` of at version 2.
fn record() -> ServerRecord {
    let mut r = ServerRecord::default();
    let put = Op::Put {
        doc: doc(json!({"title": "t", "done": false})),
    };
    assert!(land(&mut r, &put, &stamp(10, "bob"), 1, &mut []));
    let patch = Op::Patch {
        fields: doc(json!({"title": "bob's"})),
    };
    assert!(land(&mut r, &patch, &stamp(20, "bob"), 2, &mut []));
    r
}

fn apply(
    r: &mut ServerRecord,
    op: &Op,
    base: u64,
    policy: Policy,
    s: &Stamp,
) -> Result<Vec<FieldConflict>, ErrorCode> {
    match judge(r, op, base, &me(), policy) {
        Verdict::Land { op, mut conflicts } => {
            land(r, &op, s, 3, &mut conflicts);
            Ok(conflicts)
        }
        Verdict::Reject { code, .. } => Err(code),
    }
}

#[test]
fn lww_concurrent_edits_to_different_fields_both_survive_without_conflict() {
    let mut r = record();
    let conflicts = apply(
        &mut r,
        &Op::Patch {
            fields: doc(json!({"done": true})),
        },
        1,
        Policy::Lww,
        &stamp(30, "me"),
    )
    .unwrap();
    assert!(conflicts.is_empty());
    assert_eq!(
        r.state.doc(),
        Some(doc(json!({"title": "bob's", "done": true})))
    );
}

#[test]
fn lww_same_field_is_a_conflict_won_by_the_newer_stamp() {
    let mut r = record();
    let op = Op::Patch {
        fields: doc(json!({"title": "mine"})),
    };
    let conflicts = apply(&mut r, &op, 1, Policy::Lww, &stamp(30, "me")).unwrap();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].server, Some(json!("bob's")));
    assert_eq!(conflicts[0].local, Some(json!("mine")));
    assert_eq!(conflicts[0].winner, Winner::Local);
    assert_eq!(r.state.doc().unwrap()["title"], json!("mine"));

    let mut r = record();
    let conflicts = apply(&mut r, &op, 1, Policy::Lww, &stamp(15, "me")).unwrap();
    assert_eq!(conflicts[0].winner, Winner::Server, "an older stamp loses");
    assert_eq!(r.state.doc().unwrap()["title"], json!("bob's"));
}

#[test]
fn no_conflict_when_the_base_already_contains_the_change_or_the_values_agree() {
    let mut r = record();
    let op = Op::Patch {
        fields: doc(json!({"title": "mine"})),
    };
    assert!(apply(&mut r, &op, 2, Policy::Lww, &stamp(30, "me"))
        .unwrap()
        .is_empty());
    let mut r = record();
    let same = Op::Patch {
        fields: doc(json!({"title": "bob's"})),
    };
    assert!(apply(&mut r, &same, 1, Policy::Lww, &stamp(30, "me"))
        .unwrap()
        .is_empty());
}

#[test]
fn a_clients_own_earlier_writes_never_conflict_with_its_later_ones() {
    let mut r = ServerRecord::default();
    land(
        &mut r,
        &Op::Put {
            doc: doc(json!({"n": 1})),
        },
        &stamp(10, "me"),
        1,
        &mut [],
    );
    let op = Op::Patch {
        fields: doc(json!({"n": 2})),
    };
    assert_eq!(
        judge(&r, &op, 0, &me(), Policy::Strict),
        Verdict::Land {
            op: op.clone(),
            conflicts: vec![]
        }
    );
}

#[test]
fn server_wins_keeps_fields_changed_by_others_and_applies_the_rest() {
    let mut r = record();
    let op = Op::Patch {
        fields: doc(json!({"title": "mine", "done": true})),
    };
    let conflicts = apply(&mut r, &op, 1, Policy::ServerWins, &stamp(30, "me")).unwrap();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].winner, Winner::Server);
    assert_eq!(
        r.state.doc(),
        Some(doc(json!({"title": "bob's", "done": true})))
    );
}

#[test]
fn server_wins_turns_a_put_into_a_patch_of_unchanged_fields() {
    let mut r = record();
    let op = Op::Put {
        doc: doc(json!({"title": "mine", "color": "red"})),
    };
    apply(&mut r, &op, 1, Policy::ServerWins, &stamp(30, "me")).unwrap();
    // title kept (bob changed it), done removed (the put dropped it; nobody else touched it).
    assert_eq!(
        r.state.doc(),
        Some(doc(json!({"title": "bob's", "color": "red"})))
    );
}

#[test]
fn server_wins_refuses_to_delete_a_record_changed_since_the_base() {
    let mut r = record();
    assert_eq!(
        apply(&mut r, &Op::Delete, 1, Policy::ServerWins, &stamp(30, "me")),
        Err(ErrorCode::StaleBase)
    );
    assert!(r.state.is_live());
    assert!(apply(&mut r, &Op::Delete, 2, Policy::ServerWins, &stamp(30, "me")).is_ok());
    assert!(!r.state.is_live());
}

#[test]
fn strict_rejects_a_stale_base_and_accepts_a_current_one() {
    let mut r = record();
    let op = Op::Patch {
        fields: doc(json!({"done": true})),
    };
    assert_eq!(
        apply(&mut r, &op, 1, Policy::Strict, &stamp(30, "me")),
        Err(ErrorCode::StaleBase)
    );
    assert_eq!(r, record(), "a rejected mutation changes nothing");
    assert!(apply(&mut r, &op, 2, Policy::Strict, &stamp(30, "me")).is_ok());
}

#[test]
fn delete_against_a_concurrent_update_follows_the_liveness_register() {
    // bob updates at 20; my delete stamped 15 (older) loses, stamped 25 wins.
    let mut r = record();
    apply(&mut r, &Op::Delete, 1, Policy::Lww, &stamp(15, "me")).unwrap();
    assert!(r.state.is_live());
    assert_eq!(r.state.doc().unwrap()["title"], json!("bob's"));
    let mut r = record();
    apply(&mut r, &Op::Delete, 1, Policy::Lww, &stamp(25, "me")).unwrap();
    assert!(!r.state.is_live());
}

#[test]
fn landing_a_superseded_mutation_changes_nothing() {
    let mut r = record();
    let before = r.clone();
    let old = Op::Patch {
        fields: doc(json!({"title": "ancient"})),
    };
    assert!(!land(&mut r, &old, &stamp(5, "carol"), 3, &mut []));
    assert_eq!(r, before);
    assert_eq!(r.version, 2);
}
