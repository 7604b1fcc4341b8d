//! `POST /v1/push` through the router: exactly-once, gaps, whole transactions.
//!
//! Each test runs on SQLite and on PostgreSQL (`sqlite::…`, `postgres::…`, see
//! `common::on_both_backends`).

mod common;

use axum::http::StatusCode;
use common::{on_both_backends, put, put_on, Backend, TestServer};
use serde_json::json;
use tidesync_protocol::CollectionName;
use tidesync_server::{Limits, MergeRules, Policies, Policy, Schemas};

async fn the_same_push_sent_twice_is_applied_once(backend: Backend) {
    let Some(server) = TestServer::new_on(backend).await else {
        return;
    };
    let token = server.token("alice", &["user:alice"], &[]);
    let mutations = vec![
        put(1, 1, "user:alice", "todos", "t1", json!({"title": "milk"})),
        put(2, 2, "user:alice", "todos", "t2", json!({"title": "eggs"})),
    ];

    let first = server.push(&token, "c1", mutations.clone()).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(first.json["acked_through"], 2);
    let results = first.json["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(|r| r["outcome"] == "applied"));

    let second = server.push(&token, "c1", mutations).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    assert_eq!(second.json["acked_through"], 2);
    assert_eq!(second.json["results"], json!([]), "duplicates are skipped");

    let changes = server.pull_all(&token, &["user:alice"]).await;
    assert_eq!(changes.len(), 2);
    let max_version = changes.iter().filter_map(|c| c["version"].as_u64()).max();
    assert_eq!(max_version, Some(2), "the space moved once per mutation");
}

async fn an_empty_push_reports_how_far_the_server_is(backend: Backend) {
    let Some(server) = TestServer::new_on(backend).await else {
        return;
    };
    let token = server.token("alice", &["user:alice"], &[]);
    let empty = server.push(&token, "c1", vec![]).await;
    assert_eq!(empty.status, StatusCode::OK, "{}", empty.text);
    assert_eq!(empty.json, json!({"acked_through": 0, "results": []}));
    let one = vec![put(1, 1, "user:alice", "todos", "t1", json!({}))];
    assert_eq!(server.push(&token, "c1", one).await.status, StatusCode::OK);
    let empty = server.push(&token, "c1", vec![]).await;
    assert_eq!(empty.json["acked_through"], 1);
}

async fn a_gap_is_refused_with_409_and_changes_nothing(backend: Backend) {
    let Some(server) = TestServer::new_on(backend).await else {
        return;
    };
    let token = server.token("alice", &["user:alice"], &[]);
    let first = vec![put(1, 1, "user:alice", "todos", "t1", json!({"n": 1}))];
    assert_eq!(
        server.push(&token, "c1", first).await.status,
        StatusCode::OK
    );

    let gap = vec![
        put(3, 3, "user:alice", "todos", "t2", json!({"n": 3})),
        put(4, 4, "user:alice", "todos", "t3", json!({"n": 4})),
    ];
    let reply = server.push(&token, "c1", gap).await;
    reply.assert_error(409, "seq_gap");

    let changes = server.pull_all(&token, &["user:alice"]).await;
    assert_eq!(changes.len(), 1, "nothing of the refused push landed");
    assert_eq!(changes[0]["id"], "t1");
    let acked = server.push(&token, "c1", vec![]).await;
    assert_eq!(acked.json["acked_through"], 1, "last_seq did not move");
}

async fn a_transaction_with_one_refused_mutation_is_rejected_whole_and_the_next_one_applies(
    backend: Backend,
) {
    let policies = Policies {
        default: Policy::Lww,
        per_collection: [(
            CollectionName::new("accounts").expect("valid"),
            Policy::Strict,
        )]
        .into(),
    };
    let Some(server) = TestServer::with_on(
        backend,
        Limits::default(),
        MergeRules {
            policies,
            ..MergeRules::default()
        },
    )
    .await
    else {
        return;
    };
    let token = server.token("alice", &["user:alice"], &[]);
    // Another device of alice's writes the account at version 1.
    let other = vec![put(
        1,
        1,
        "user:alice",
        "accounts",
        "a1",
        json!({"balance": 10}),
    )];
    assert_eq!(
        server.push(&token, "phone", other).await.status,
        StatusCode::OK
    );

    // This device made tx 7 on base 0 (stale for the strict account), then tx 8.
    let mutations = vec![
        put_on(
            1,
            7,
            "user:alice",
            "todos",
            "t1",
            json!({"title": "pay"}),
            0,
        ),
        put_on(
            2,
            7,
            "user:alice",
            "accounts",
            "a1",
            json!({"balance": 5}),
            0,
        ),
        put_on(
            3,
            8,
            "user:alice",
            "todos",
            "t2",
            json!({"title": "later"}),
            0,
        ),
    ];
    let reply = server.push(&token, "laptop", mutations).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.json["acked_through"], 3,
        "last_seq advances past rejections"
    );
    let results = reply.json["results"].as_array().expect("results");
    assert_eq!(results[0]["outcome"], "rejected");
    assert_eq!(results[0]["code"], "transaction_aborted");
    assert_eq!(results[1]["outcome"], "rejected");
    assert_eq!(results[1]["code"], "stale_base");
    assert_eq!(results[2]["outcome"], "applied");

    let changes = server.pull_all(&token, &["user:alice"]).await;
    let ids: Vec<_> = changes
        .iter()
        .map(|c| c["id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&"a1") && ids.contains(&"t2"), "{ids:?}");
    let account = changes.iter().find(|c| c["id"] == "a1").expect("a1");
    assert_eq!(
        account["doc"],
        json!({"balance": 10}),
        "the strict record kept its value"
    );
}

async fn a_client_id_of_another_user_is_refused(backend: Backend) {
    let Some(server) = TestServer::new_on(backend).await else {
        return;
    };
    let alice = server.token("alice", &["user:alice"], &[]);
    let bob = server.token("bob", &["user:bob"], &[]);
    let mine = vec![put(1, 1, "user:alice", "todos", "t1", json!({}))];
    assert_eq!(
        server.push(&alice, "shared-id", mine).await.status,
        StatusCode::OK
    );
    let theirs = vec![put(2, 2, "user:bob", "todos", "t1", json!({}))];
    server
        .push(&bob, "shared-id", theirs)
        .await
        .assert_error(403, "forbidden");
    assert!(server.pull_all(&bob, &["user:bob"]).await.is_empty());
}

async fn a_schema_violation_is_sent_as_schema_violation_from_protocol_3_and_as_rule_violation_before(
    backend: Backend,
) {
    let mut schemas = Schemas::new();
    schemas
        .insert(
            CollectionName::new("todos").expect("valid"),
            &json!({"properties": {"title": {"type": "string", "minLength": 1}}}),
        )
        .expect("a valid schema");
    let rules = MergeRules {
        schemas,
        ..MergeRules::default()
    };
    let Some(server) = TestServer::with_on(backend, Limits::default(), rules).await else {
        return;
    };
    let token = server.token("alice", &["user:alice"], &[]);
    let message = "the record does not match the schema of collection todos: \
                   /title: \"\" is shorter than 1 character";
    for (protocol, code) in [
        (3, "schema_violation"),
        (2, "rule_violation"),
        (1, "rule_violation"),
    ] {
        let client = format!("c{protocol}");
        let bad = vec![put(1, 1, "user:alice", "todos", "t1", json!({"title": ""}))];
        let body = json!({"client_id": client, "protocol": protocol, "mutations": bad});
        let reply = server.post("/v1/push", &token, &body).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(
            reply.json,
            json!({"acked_through": 1, "results": [
                {"seq": 1, "outcome": "rejected", "code": code, "message": message}
            ]}),
            "protocol {protocol}"
        );
        // The remembered rejection, answered again to a retry, is spoken the same way.
        let again = server.post("/v1/push", &token, &body).await;
        assert_eq!(
            again.json["results"][0]["code"], code,
            "protocol {protocol}"
        );
    }
    assert!(server.pull_all(&token, &["user:alice"]).await.is_empty());
}

on_both_backends! {
    a_schema_violation_is_sent_as_schema_violation_from_protocol_3_and_as_rule_violation_before,
    the_same_push_sent_twice_is_applied_once,
    an_empty_push_reports_how_far_the_server_is,
    a_gap_is_refused_with_409_and_changes_nothing,
    a_transaction_with_one_refused_mutation_is_rejected_whole_and_the_next_one_applies,
    a_client_id_of_another_user_is_refused,
}
