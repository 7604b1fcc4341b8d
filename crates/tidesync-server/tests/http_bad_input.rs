//! Every class of bad input gets its 4xx with a JSON `{code, message}`, and changes nothing.
//!
//! Each test runs on SQLite and on PostgreSQL (`sqlite::…`, `postgres::…`, see
//! `common::on_both_backends`).

mod common;

use axum::body::Body;
use axum::http::{header, Method, StatusCode};
use common::{on_both_backends, push_body, put, Backend, Reply, TestServer};
use serde_json::{json, Value};
use tidesync_protocol::PROTOCOL_VERSION;
use tidesync_server::{Limits, MergeRules};

const SPACE: &str = "user:alice";

fn limits() -> Limits {
    Limits {
        max_body_bytes: 64 * 1024,
        max_mutations_per_push: 10,
        max_doc_bytes: 1024,
        max_spaces_per_pull: 3,
        ..Limits::default()
    }
}

/// A server where alice already wrote one record (so "nothing changed" is visible).
async fn server(backend: Backend) -> Option<(TestServer, String)> {
    let server = TestServer::with_on(backend, limits(), MergeRules::default()).await?;
    let token = server.token("alice", &[SPACE], &["shared"]);
    let first = vec![put(1, 1, SPACE, "todos", "t1", json!({"title": "milk"}))];
    assert_eq!(
        server.push(&token, "c1", first).await.status,
        StatusCode::OK
    );
    Some((server, token))
}

/// Asserts the server still holds exactly alice's first write and `c1` is at seq 1.
async fn assert_unchanged(server: &TestServer, token: &str) {
    let changes = server.pull_all(token, &[SPACE]).await;
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0]["version"], 1);
    assert_eq!(changes[0]["doc"], json!({"title": "milk"}));
    let acked = server.push(token, "c1", vec![]).await;
    assert_eq!(acked.json["acked_through"], 1);
}

async fn raw(server: &TestServer, path: &str, token: &str, body: &str) -> Reply {
    server
        .call(Method::POST, path, Some(token), Body::from(body.to_owned()))
        .await
}

fn next(seq: u64) -> Value {
    put(
        seq,
        seq,
        SPACE,
        "todos",
        &format!("n{seq}"),
        json!({"x": seq}),
    )
}

async fn malformed_json_is_400_malformed_request_with_the_position(backend: Backend) {
    let Some((server, token)) = server(backend).await else {
        return;
    };
    for body in ["{\"client_id\": \"c1\", ", "", "not json", "[1, 2]"] {
        let reply = raw(&server, "/v1/push", &token, body).await;
        reply.assert_error(400, "malformed_request");
        if !body.is_empty() {
            assert!(reply.text.contains("line 1"), "{}", reply.text);
        }
        raw(&server, "/v1/pull", &token, body)
            .await
            .assert_error(400, "malformed_request");
    }
    assert_unchanged(&server, &token).await;
}

async fn wrong_types_and_missing_fields_are_400_malformed_request(backend: Backend) {
    let Some((server, token)) = server(backend).await else {
        return;
    };
    let mut wrong_seq = next(2);
    wrong_seq["seq"] = json!("two");
    let mut negative = next(2);
    negative["base_version"] = json!(-1);
    let mut missing_kind = next(2);
    missing_kind.as_object_mut().expect("object").remove("kind");
    let mut put_without_doc = next(2);
    put_without_doc
        .as_object_mut()
        .expect("object")
        .remove("doc");
    let mut doc_not_object = next(2);
    doc_not_object["doc"] = json!([1, 2]);
    for bad in [
        wrong_seq,
        negative,
        missing_kind,
        put_without_doc,
        doc_not_object,
    ] {
        server
            .post("/v1/push", &token, &push_body("c1", vec![bad.clone()]))
            .await
            .assert_error(400, "malformed_request");
    }
    server
        .post(
            "/v1/push",
            &token,
            &json!({"client_id": "c1", "protocol": 1, "mutations": {}}),
        )
        .await
        .assert_error(400, "malformed_request");
    server
        .post(
            "/v1/pull",
            &token,
            &json!({"client_id": "c1", "protocol": 1, "spaces": SPACE}),
        )
        .await
        .assert_error(400, "malformed_request");
    assert_unchanged(&server, &token).await;
}

async fn an_unknown_protocol_is_400_unsupported_protocol(backend: Backend) {
    let Some((server, token)) = server(backend).await else {
        return;
    };
    let mut body = push_body("c1", vec![next(2)]);
    body["protocol"] = json!(PROTOCOL_VERSION + 1);
    server
        .post("/v1/push", &token, &body)
        .await
        .assert_error(400, "unsupported_protocol");
    server
        .post(
            "/v1/pull",
            &token,
            &json!({"client_id": "c1", "protocol": 99, "spaces": [SPACE]}),
        )
        .await
        .assert_error(400, "unsupported_protocol");
    assert_unchanged(&server, &token).await;
    // Protocol 1 is still served (clients that predate echoes).
    let pulled = server
        .post(
            "/v1/pull",
            &token,
            &json!({"client_id": "c1", "protocol": 1, "spaces": [SPACE]}),
        )
        .await;
    assert_eq!(pulled.status.as_u16(), 200, "{}", pulled.text);
}

async fn oversized_bodies_batches_and_documents_are_413_too_large(backend: Backend) {
    let Some((server, token)) = server(backend).await else {
        return;
    };
    // Body over max_body_bytes (64 KiB), even though every single doc would fit.
    let huge = push_body(
        "c1",
        (2..80)
            .map(|seq| {
                put(
                    seq,
                    seq,
                    SPACE,
                    "todos",
                    "big",
                    json!({"pad": "x".repeat(1000)}),
                )
            })
            .collect(),
    );
    let reply = server.post("/v1/push", &token, &huge).await;
    reply.assert_error(413, "too_large");
    // Too many mutations.
    let many = push_body("c1", (2..20).map(next).collect());
    server
        .post("/v1/push", &token, &many)
        .await
        .assert_error(413, "too_large");
    // One document over max_doc_bytes.
    let big_doc = put(
        2,
        2,
        SPACE,
        "todos",
        "big",
        json!({"pad": "x".repeat(2000)}),
    );
    server
        .push(&token, "c1", vec![big_doc])
        .await
        .assert_error(413, "too_large");
    // Too many spaces in a pull.
    server
        .post(
            "/v1/pull",
            &token,
            &json!({"client_id": "c1", "protocol": 1, "spaces": ["a", "b", "c", "d"]}),
        )
        .await
        .assert_error(413, "too_large");
    assert_unchanged(&server, &token).await;
}

async fn a_body_streamed_without_content_length_is_still_limited(backend: Backend) {
    let Some((server, token)) = server(backend).await else {
        return;
    };
    let chunks: Vec<Result<String, std::io::Error>> =
        (0..100).map(|_| Ok("x".repeat(1024))).collect();
    let body = Body::from_stream(futures::stream::iter(chunks));
    let reply = server
        .call(Method::POST, "/v1/push", Some(&token), body)
        .await;
    reply.assert_error(413, "too_large");
    assert_unchanged(&server, &token).await;
}

async fn names_and_ids_that_break_their_rules_are_400_invalid_input(backend: Backend) {
    let Some((server, token)) = server(backend).await else {
        return;
    };
    let mut bad_id = next(2);
    bad_id["id"] = json!("tab\there");
    let mut empty_id = next(2);
    empty_id["id"] = json!("");
    let mut long_id = next(2);
    long_id["id"] = json!("x".repeat(257));
    let mut bad_space = next(2);
    bad_space["space"] = json!("user alice");
    let mut bad_collection = next(2);
    bad_collection["collection"] = json!("9lives");
    let mut bad_hlc = next(2);
    bad_hlc["hlc"] = json!("XYZ");
    for bad in [
        bad_id,
        empty_id,
        long_id,
        bad_space,
        bad_collection,
        bad_hlc,
    ] {
        server
            .push(&token, "c1", vec![bad])
            .await
            .assert_error(400, "invalid_input");
    }
    server
        .push(&token, "client id with spaces", vec![next(2)])
        .await
        .assert_error(400, "invalid_input");
    server
        .post(
            "/v1/pull",
            &token,
            &json!({"client_id": "c1", "protocol": 1, "spaces": ["no spaces"]}),
        )
        .await
        .assert_error(400, "invalid_input");
    assert_unchanged(&server, &token).await;
}

async fn bad_sequences_and_split_transactions_are_400_invalid_input(backend: Backend) {
    let Some((server, token)) = server(backend).await else {
        return;
    };
    let skip = vec![next(2), next(4)];
    let backwards = vec![next(3), next(2)];
    let repeated = vec![next(2), next(2)];
    let zero = vec![next(0)];
    let mut split = vec![next(2), next(3), next(4)];
    split[0]["tx"] = json!(9);
    split[2]["tx"] = json!(9);
    for bad in [skip, backwards, repeated, zero, split] {
        server
            .push(&token, "c1", bad)
            .await
            .assert_error(400, "invalid_input");
    }
    assert_unchanged(&server, &token).await;
}

async fn pull_space_lists_must_be_non_empty_and_without_duplicates(backend: Backend) {
    let Some((server, token)) = server(backend).await else {
        return;
    };
    for spaces in [json!([]), json!([SPACE, SPACE])] {
        server
            .post(
                "/v1/pull",
                &token,
                &json!({"client_id": "c1", "protocol": 1, "spaces": spaces}),
            )
            .await
            .assert_error(400, "invalid_input");
    }
    assert_unchanged(&server, &token).await;
}

async fn unknown_routes_are_404_and_wrong_methods_405_as_json(backend: Backend) {
    let Some((server, token)) = server(backend).await else {
        return;
    };
    let reply = raw(&server, "/v2/push", &token, "{}").await;
    reply.assert_error(404, "not_found");
    let reply = server.call(Method::GET, "/nope", None, Body::empty()).await;
    reply.assert_error(404, "not_found");
    let reply = server
        .call(Method::GET, "/v1/push", Some(&token), Body::empty())
        .await;
    reply.assert_error(405, "method_not_allowed");
    let reply = server
        .call(Method::DELETE, "/v1/pull", Some(&token), Body::empty())
        .await;
    reply.assert_error(405, "method_not_allowed");
    assert_unchanged(&server, &token).await;
}

async fn a_missing_content_type_is_tolerated(backend: Backend) {
    let Some((server, token)) = server(backend).await else {
        return;
    };
    let request = axum::http::Request::builder()
        .method(Method::POST)
        .uri("/v1/push")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::from(push_body("c1", vec![]).to_string()))
        .expect("request");
    let response = tower::ServiceExt::oneshot(server.router.clone(), request)
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
}

async fn a_put_patch_or_delete_carrying_the_other_kinds_member_is_400_malformed_request(
    backend: Backend,
) {
    let Some((server, token)) = server(backend).await else {
        return;
    };
    let with = |kind: &str, member: &str, value: Value| {
        let mut m = next(2);
        m["kind"] = json!(kind);
        m.as_object_mut().expect("object").remove("doc");
        if kind == "patch" {
            m["fields"] = json!({"x": 2});
        }
        if kind == "put" {
            m["doc"] = json!({"x": 2});
        }
        m[member] = value;
        m
    };
    for (bad, member) in [
        (with("put", "fields", json!({"done": true})), "`fields`"),
        (with("patch", "doc", json!({"title": "all of it"})), "`doc`"),
        (with("delete", "doc", json!({})), "`doc`"),
        (with("delete", "fields", json!(null)), "`fields`"),
    ] {
        let reply = server
            .post("/v1/push", &token, &push_body("c1", vec![bad.clone()]))
            .await;
        reply.assert_error(400, "malformed_request");
        let message = reply.json["message"].as_str().unwrap_or_default();
        assert!(message.contains(member), "{bad}: {message}");
    }
    assert_unchanged(&server, &token).await;
    // Members the protocol does not define are ignored (forward compatibility).
    let mut extra = next(2);
    extra["x-later"] = json!({"anything": 1});
    let reply = server.push(&token, "c1", vec![extra]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["acked_through"], 2, "{}", reply.text);
}

async fn a_pull_limit_past_u32_is_clamped_to_the_servers_page_cap(backend: Backend) {
    let limits = Limits {
        max_pull_limit: 2,
        ..limits()
    };
    let Some(server) = TestServer::with_on(backend, limits, MergeRules::default()).await else {
        return;
    };
    let token = server.token("alice", &[SPACE], &[]);
    let three = (1..=3).map(next).collect();
    assert_eq!(
        server.push(&token, "c1", three).await.status,
        StatusCode::OK
    );
    for limit in [json!(3), json!(1u64 << 32), json!(u64::MAX)] {
        let reply = server
            .post(
                "/v1/pull",
                &token,
                &json!({"client_id": "c1", "protocol": 1, "spaces": [SPACE], "limit": limit}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{limit}: {}", reply.text);
        assert_eq!(
            reply.json["changes"].as_array().map(Vec::len),
            Some(2),
            "{limit}"
        );
        assert_eq!(reply.json["has_more"], true, "{limit}");
    }
    for limit in ["-1", "2.5", "18446744073709551616"] {
        let body = format!(
            r#"{{"client_id": "c1", "protocol": 1, "spaces": ["{SPACE}"], "limit": {limit}}}"#
        );
        raw(&server, "/v1/pull", &token, &body)
            .await
            .assert_error(400, "malformed_request");
    }
}

on_both_backends! {
    a_put_patch_or_delete_carrying_the_other_kinds_member_is_400_malformed_request,
    a_pull_limit_past_u32_is_clamped_to_the_servers_page_cap,
    malformed_json_is_400_malformed_request_with_the_position,
    wrong_types_and_missing_fields_are_400_malformed_request,
    an_unknown_protocol_is_400_unsupported_protocol,
    oversized_bodies_batches_and_documents_are_413_too_large,
    a_body_streamed_without_content_length_is_still_limited,
    names_and_ids_that_break_their_rules_are_400_invalid_input,
    bad_sequences_and_split_transactions_are_400_invalid_input,
    pull_space_lists_must_be_non_empty_and_without_duplicates,
    unknown_routes_are_404_and_wrong_methods_405_as_json,
    a_missing_content_type_is_tolerated,
}
