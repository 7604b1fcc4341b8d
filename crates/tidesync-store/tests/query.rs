//! Queries over the local view: each operator, how types and missing fields compare and
//! sort, keyset pagination, projection, count, clear errors, declared indexes (and that
//! SQLite uses them), and a differential property test against the plain-Rust semantics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{doc, TestDb};
use proptest::prelude::*;
use serde_json::{json, Value};
use tidesync_protocol::{CollectionName, RecordKey, SpaceName};
use tidesync_store::query::{matches, sort_order, IndexSpec, Indexes};
use tidesync_store::{Query, Store, StoreConfig, StoreError};

fn space() -> SpaceName {
    SpaceName::new("s").unwrap()
}

fn todos() -> CollectionName {
    CollectionName::new("todos").unwrap()
}

fn q(json: Value) -> Query {
    Query::from_json(space(), todos(), &json).unwrap()
}

fn ids(store: &Store, query: &Query) -> Vec<String> {
    store
        .query(query)
        .unwrap()
        .records
        .into_iter()
        .map(|r| r.key.id.to_string())
        .collect()
}

fn put(store: &mut Store, id: &str, value: Value) {
    store
        .put(&RecordKey::parse("s", "todos", id).unwrap(), doc(value))
        .unwrap();
}

/// Records with every class of value in `v`, a nested `n.x`, and one without `v`.
fn fixture(store: &mut Store) {
    put(store, "a-missing", json!({"t": "x"}));
    put(store, "b-null", json!({"v": null}));
    put(store, "c-false", json!({"v": false}));
    put(store, "d-true", json!({"v": true}));
    put(store, "e-one", json!({"v": 1, "n": {"x": 1}}));
    put(store, "f-onefive", json!({"v": 1.5, "n": {"x": 2}}));
    put(store, "g-ten", json!({"v": 10, "n": {"x": 3}}));
    put(store, "h-str", json!({"v": "apple", "n": {"x": "s"}}));
    put(store, "i-str2", json!({"v": "banana"}));
    put(store, "j-arr", json!({"v": [1, 2]}));
    put(store, "k-obj", json!({"v": {"a": 1}}));
}

#[test]
fn comparisons_match_only_their_class_and_eq_compares_class_and_value() {
    let db = TestDb::new();
    let mut store = db.open();
    fixture(&mut store);
    let cases = [
        (json!({"v": 1}), vec!["e-one"]),
        (json!({"v": 1.0}), vec!["e-one"]),
        (json!({"v": true}), vec!["d-true"]),
        (json!({"v": null}), vec!["b-null"]),
        (json!({"v": {"$gt": 1}}), vec!["f-onefive", "g-ten"]),
        (
            json!({"v": {"$gte": 1, "$lt": 10}}),
            vec!["e-one", "f-onefive"],
        ),
        (json!({"v": {"$gt": "a"}}), vec!["h-str", "i-str2"]),
        (json!({"v": {"$lte": "apple"}}), vec!["h-str"]),
        (
            json!({"v": {"$in": [1, "banana", false]}}),
            vec!["c-false", "e-one", "i-str2"],
        ),
        (json!({"v": {"$exists": false}}), vec!["a-missing"]),
        (json!({"v": {"$beginsWith": "ban"}}), vec!["i-str2"]),
        (json!({"v": [1, 2]}), vec!["j-arr"]),
        (json!({"v": {"$eq": {"a": 1}}}), vec!["k-obj"]),
        (json!({"n.x": {"$gte": 2}}), vec!["f-onefive", "g-ten"]),
        (
            json!({"n.x": {"$exists": true}}),
            vec!["e-one", "f-onefive", "g-ten", "h-str"],
        ),
        (
            json!({"$or": [{"v": 1}, {"v": "apple"}]}),
            vec!["e-one", "h-str"],
        ),
        (
            json!({"$and": [{"v": {"$gt": 0}}, {"n.x": {"$lt": 3}}]}),
            vec!["e-one", "f-onefive"],
        ),
        (
            json!({"v": {"$not": {"$gt": 1}}}).clone(),
            vec![
                "a-missing",
                "b-null",
                "c-false",
                "d-true",
                "e-one",
                "h-str",
                "i-str2",
                "j-arr",
                "k-obj",
            ],
        ),
    ];
    for (selector, want) in cases {
        let query = q(json!({"selector": selector}));
        assert_eq!(ids(&store, &query), want, "{selector}");
        assert_eq!(
            store.count(&query).unwrap(),
            want.len() as u64,
            "count of {selector}"
        );
    }
    // $ne and $nin match missing fields too.
    let ne = ids(&store, &q(json!({"selector": {"v": {"$ne": 1}}})));
    assert_eq!(ne.len(), 10);
    assert!(ne.contains(&"a-missing".to_owned()));
    let nin = ids(
        &store,
        &q(json!({"selector": {"v": {"$nin": [1, 10, "apple"]}}})),
    );
    assert_eq!(nin.len(), 8);
}

#[test]
fn sort_orders_classes_then_values_with_ties_by_id_in_the_last_keys_direction() {
    let db = TestDb::new();
    let mut store = db.open();
    fixture(&mut store);
    let ascending = ids(&store, &q(json!({"sort": ["v"]})));
    assert_eq!(
        ascending,
        vec![
            "a-missing",
            "b-null",
            "c-false",
            "d-true",
            "e-one",
            "f-onefive",
            "g-ten",
            "h-str",
            "i-str2",
            "j-arr",
            "k-obj"
        ]
    );
    let mut descending = ids(&store, &q(json!({"sort": [{"v": "desc"}]})));
    descending.reverse();
    assert_eq!(descending, ascending);
    put(&mut store, "l-one-again", json!({"v": 1}));
    let ties = ids(
        &store,
        &q(json!({"selector": {"v": 1}, "sort": [{"v": "desc"}]})),
    );
    assert_eq!(
        ties,
        vec!["l-one-again", "e-one"],
        "ties by id, descending too"
    );
}

#[test]
fn keyset_pages_walk_the_whole_order_once_even_while_records_change() {
    let db = TestDb::new();
    let mut store = db.open();
    for i in 0..57 {
        put(
            &mut store,
            &format!("r{i:02}"),
            json!({"p": i % 5, "due": (i * 7) % 13}),
        );
    }
    let base = json!({"selector": {"p": {"$lt": 4}}, "sort": ["due", {"p": "desc"}], "limit": 10});
    let all = ids(
        &store,
        &q(json!({"selector": {"p": {"$lt": 4}}, "sort": ["due", {"p": "desc"}], "limit": 1000})),
    );
    let mut walked = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut json = base.clone();
        if let Some(a) = &after {
            json["after"] = json!(a);
        }
        let page = store.query(&q(json)).unwrap();
        assert!(page.records.len() <= 10);
        walked.extend(page.records.iter().map(|r| r.key.id.to_string()));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
        // A record inserted before the cursor does not shift the following pages.
        put(
            &mut store,
            &format!("late{}", walked.len()),
            json!({"p": 9, "due": 0}),
        );
    }
    assert_eq!(walked, all);
}

#[test]
fn projection_keeps_only_the_named_fields() {
    let db = TestDb::new();
    let mut store = db.open();
    put(
        &mut store,
        "a",
        json!({"title": "t", "meta": {"by": "me", "at": 1}, "x": 2}),
    );
    let page = store
        .query(&q(json!({"fields": ["title", "meta.by", "nope"]})))
        .unwrap();
    assert_eq!(
        Value::Object(page.records[0].doc.clone()),
        json!({"title": "t", "meta": {"by": "me"}})
    );
}

#[test]
fn bad_queries_name_the_offending_part() {
    let cases = [
        (
            json!({"selector": {"v": {"$regex": "a"}}}),
            "selector.v.$regex",
            "unknown operator",
        ),
        (
            json!({"selector": {"v": {"$gt": [1]}}}),
            "selector.v.$gt",
            "number or a string",
        ),
        (
            json!({"selector": {"v": {"$in": 3}}}),
            "selector.v.$in",
            "array",
        ),
        (
            json!({"selector": {"v": {"$exists": "yes"}}}),
            "selector.v.$exists",
            "true or false",
        ),
        (
            json!({"selector": {"$nor": []}}),
            "selector.$nor",
            "unknown operator",
        ),
        (
            json!({"selector": {"v": {"$gt": 1, "x": 2}}}),
            "selector.v",
            "mixes",
        ),
        (
            json!({"sort": [{"v": "up"}]}),
            "sort[0]",
            "unknown sort direction",
        ),
        (json!({"sort": "v"}), "sort", "array"),
        (json!({"limit": 0}), "limit", "positive"),
        (json!({"limit": 20000}), "limit", "at most"),
        (json!({"selector": {"a..b": 1}}), "selector.a..b", "segment"),
        (json!({"where": {}}), "where", "unknown member"),
    ];
    for (json, at, words) in cases {
        let err = Query::from_json(space(), todos(), &json).expect_err(&json.to_string());
        assert_eq!(err.at, at, "{json}: {err}");
        assert!(err.problem.contains(words), "{json}: {err}");
    }
    let mut deep = json!({"v": 1});
    for _ in 0..20 {
        deep = json!({"$not": deep});
    }
    let err = Query::from_json(space(), todos(), &json!({"selector": deep})).unwrap_err();
    assert!(err.problem.contains("nest at most 16"), "{err}");
    let db = TestDb::new();
    let store = db.open();
    let forged = q(json!({"sort": ["v"], "after": "zz"}));
    match store.query(&forged) {
        Err(StoreError::InvalidQuery(e)) => assert_eq!(e.at, "after"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_declared_index_is_used_and_follows_the_declaration() {
    let db = TestDb::new();
    let index = IndexSpec::new(todos(), &["project", "due"]).unwrap();
    let mut store = db.open_with(StoreConfig {
        indexes: Indexes::Declared(vec![index.clone()]),
        ..StoreConfig::default()
    });
    for i in 0..200 {
        put(
            &mut store,
            &format!("t{i:03}"),
            json!({"project": format!("p{}", i % 7), "due": i % 30, "done": i % 2 == 0}),
        );
    }
    let query =
        q(json!({"selector": {"project": "p3", "done": false}, "sort": ["due"], "limit": 5}));
    let plan = store.explain(&query).unwrap().join("\n");
    assert!(plan.contains(&index.name()), "{plan}");
    assert!(
        !plan.contains("TEMP B-TREE"),
        "the index gives the order: {plan}"
    );
    let got = ids(&store, &query);
    assert_eq!(got.len(), 5);
    let range =
        q(json!({"selector": {"project": "p2", "due": {"$gt": 10}}, "sort": ["due"], "limit": 5}));
    let plan = store.explain(&range).unwrap().join("\n");
    assert!(plan.contains(&index.name()), "{plan}");
    drop(store);

    // A changed declaration: the old index goes, the new one comes; data is untouched.
    let other = IndexSpec::new(todos(), &["due"]).unwrap();
    let store = db.open_with(StoreConfig {
        indexes: Indexes::Declared(vec![other.clone()]),
        ..StoreConfig::default()
    });
    let plan = store
        .explain(&q(json!({"sort": ["due"], "limit": 3})))
        .unwrap()
        .join("\n");
    assert!(
        plan.contains(&other.name()) && !plan.contains(&index.name()),
        "{plan}"
    );
    assert_eq!(ids(&store, &query), got);
    drop(store);
    // A tool that opens the file keeps the app's indexes.
    let store = db.open_with(StoreConfig {
        indexes: Indexes::Keep,
        ..StoreConfig::default()
    });
    let plan = store
        .explain(&q(json!({"sort": ["due"], "limit": 3})))
        .unwrap();
    assert!(plan.join("\n").contains(&other.name()), "{plan:?}");
    drop(store);
    let store = db.open();
    let plan = store.explain(&query).unwrap().join("\n");
    assert!(
        !plan.contains("ts_idx_"),
        "no declaration, no index: {plan}"
    );
}

// ---- the differential property test -------------------------------------------------------

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-3i64..4).prop_map(Value::from),
        prop_oneof![Just(0.5f64), Just(-1.5), Just(2.0)].prop_map(Value::from),
        prop_oneof![Just("a"), Just("ab"), Just("b"), Just(""), Just("é")].prop_map(Value::from),
    ]
}

fn field_value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        3 => scalar().prop_map(Some),
        1 => Just(None),
        1 => prop::collection::vec((-1i64..2).prop_map(Value::from), 0..3).prop_map(|v| Some(Value::Array(v))),
        1 => (-1i64..2).prop_map(|x| Some(json!({"x": x}))),
    ]
}

fn record() -> impl Strategy<Value = Value> {
    (field_value(), field_value(), field_value()).prop_map(|(a, b, n)| {
        let mut doc = serde_json::Map::new();
        if let Some(a) = a {
            doc.insert("a".into(), a);
        }
        if let Some(b) = b {
            doc.insert("b".into(), b);
        }
        if let Some(n) = n {
            doc.insert("n".into(), json!({"x": n}));
        }
        Value::Object(doc)
    })
}

fn field() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("a"), Just("b"), Just("n.x"), Just("zz")]
}

fn condition() -> impl Strategy<Value = Value> {
    let ordered = prop_oneof![
        (-3i64..4).prop_map(Value::from),
        prop_oneof![Just("a"), Just("b")].prop_map(Value::from)
    ];
    prop_oneof![
        scalar().prop_map(|v| json!({"$eq": v})),
        scalar().prop_map(|v| json!({"$ne": v})),
        ordered.clone().prop_map(|v| json!({"$gt": v})),
        ordered.clone().prop_map(|v| json!({"$gte": v})),
        ordered.clone().prop_map(|v| json!({"$lt": v})),
        ordered.prop_map(|v| json!({"$lte": v})),
        prop::collection::vec(scalar(), 0..4).prop_map(|v| json!({"$in": v})),
        prop::collection::vec(scalar(), 0..4).prop_map(|v| json!({"$nin": v})),
        any::<bool>().prop_map(|b| json!({"$exists": b})),
        prop_oneof![Just("a"), Just(""), Just("é")].prop_map(|p| json!({"$beginsWith": p})),
    ]
}

fn selector() -> impl Strategy<Value = Value> {
    let leaf = (field(), condition()).prop_map(|(f, c)| json!({ f: c }));
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..3).prop_map(|v| json!({"$and": v})),
            prop::collection::vec(inner.clone(), 1..3).prop_map(|v| json!({"$or": v})),
            inner.prop_map(|s| json!({"$not": s})),
        ]
    })
}

fn sort() -> impl Strategy<Value = Value> {
    prop::collection::vec((field(), any::<bool>()), 0..3).prop_map(|keys| {
        Value::Array(
            keys.into_iter()
                .map(|(f, desc)| json!({ f: if desc { "desc" } else { "asc" } }))
                .collect(),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_answers_what_the_plain_rust_semantics_answer(
        records in prop::collection::vec(record(), 0..25),
        selector in selector(),
        sort in sort(),
        page in 1usize..6,
    ) {
        let db = TestDb::new();
        let mut store = db.open_with(StoreConfig {
            indexes: Indexes::Declared(vec![IndexSpec::new(todos(), &["a", "n.x"]).unwrap()]),
            ..StoreConfig::default()
        });
        let mut docs = Vec::new();
        for (i, r) in records.iter().enumerate() {
            let id = format!("r{i:02}");
            put(&mut store, &id, r.clone());
            docs.push((id, r.as_object().unwrap().clone()));
        }
        let query = q(json!({"selector": selector, "sort": sort, "limit": page}));
        let mut expected: Vec<&(String, serde_json::Map<String, Value>)> =
            docs.iter().filter(|(_, d)| matches(&query.selector, d)).collect();
        expected.sort_by(|x, y| sort_order(&query.sort, (&x.0, &x.1), (&y.0, &y.1)));
        let expected: Vec<String> = expected.into_iter().map(|(id, _)| id.clone()).collect();

        // Page by page through the keyset cursor.
        let mut got = Vec::new();
        let mut query = query;
        loop {
            let result = store.query(&query).unwrap();
            prop_assert!(result.records.len() <= page);
            got.extend(result.records.iter().map(|r| r.key.id.to_string()));
            match result.next {
                Some(next) => query.after = Some(next),
                None => break,
            }
        }
        prop_assert_eq!(&got, &expected, "selector {} sort {}", selector, sort);
        query.after = None;
        prop_assert_eq!(store.count(&query).unwrap(), expected.len() as u64);
    }
}
