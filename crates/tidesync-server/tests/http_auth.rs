//! Authentication (401) and space permissions (403): a user never reads, writes or gets
//! pokes for another user's space.
//!
//! Each test runs on SQLite and on PostgreSQL (`sqlite::…`, `postgres::…`, see
//! `common::on_both_backends`).

mod common;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::{on_both_backends, push_body, put, Backend, TestServer};
use serde_json::json;
use tower::ServiceExt;

async fn missing_malformed_and_unknown_tokens_are_401_with_a_challenge(backend: Backend) {
    let Some(server) = TestServer::new_on(backend).await else {
        return;
    };
    let alice = server.token("alice", &["user:alice"], &[]);
    let body = push_body(
        "c1",
        vec![put(1, 1, "user:alice", "todos", "t1", json!({}))],
    );
    let cases: [Option<String>; 5] = [
        None,
        Some("Basic YWxpY2U6c2VjcmV0".into()),
        Some("Bearer".into()),
        Some("Bearer ".into()),
        Some("Bearer tsk_not_a_token".into()),
    ];
    for authorization in cases {
        for path in ["/v1/push", "/v1/pull", "/v1/events?spaces=user:alice"] {
            let method = if path.starts_with("/v1/events") {
                Method::GET
            } else {
                Method::POST
            };
            let mut request = Request::builder().method(method).uri(path);
            if let Some(value) = &authorization {
                request = request.header(header::AUTHORIZATION, value);
            }
            let request = request.body(Body::from(body.to_string())).expect("request");
            let response = server
                .router
                .clone()
                .oneshot(request)
                .await
                .expect("infallible");
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{authorization:?} {path}"
            );
            assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
            let bytes = http_body_util::BodyExt::collect(response.into_body())
                .await
                .expect("body")
                .to_bytes();
            let json: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
            assert_eq!(json["code"], "unauthorized");
        }
    }
    assert!(
        server.pull_all(&alice, &["user:alice"]).await.is_empty(),
        "nothing landed"
    );
    // The scheme is case-insensitive.
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/push")
        .header(header::AUTHORIZATION, format!("bearer {alice}"))
        .body(Body::from(push_body("c1", vec![]).to_string()))
        .expect("request");
    let response = server
        .router
        .clone()
        .oneshot(request)
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
}

async fn cross_user_reads_writes_and_streams_are_403(backend: Backend) {
    let Some(server) = TestServer::new_on(backend).await else {
        return;
    };
    let alice = server.token("alice", &["user:alice"], &["team:1"]);
    let bob = server.token("bob", &["user:bob", "team:1"], &[]);
    let seed = vec![put(
        1,
        1,
        "user:bob",
        "todos",
        "secret",
        json!({"pin": 1234}),
    )];
    assert_eq!(
        server.push(&bob, "bob-c", seed).await.status,
        StatusCode::OK
    );

    // Alice writes into bob's space, even mixed with her own: the whole push is refused.
    let mixed = vec![
        put(1, 1, "user:alice", "todos", "t1", json!({})),
        put(2, 2, "user:bob", "todos", "secret", json!({"pin": 0})),
    ];
    let reply = server.push(&alice, "alice-c", mixed).await;
    reply.assert_error(403, "forbidden");
    // Read-only grant: alice may read team:1 but not write it.
    let team = vec![put(1, 1, "team:1", "todos", "t1", json!({}))];
    server
        .push(&alice, "alice-c", team)
        .await
        .assert_error(403, "forbidden");
    // Reads of bob's space, alone or with her own.
    for spaces in [json!(["user:bob"]), json!(["user:alice", "user:bob"])] {
        server
            .post(
                "/v1/pull",
                &alice,
                &json!({"client_id": "alice-c", "protocol": 1, "spaces": spaces}),
            )
            .await
            .assert_error(403, "forbidden");
    }
    // Event streams on bob's space.
    server
        .call(
            Method::GET,
            "/v1/events?spaces=user:alice,user:bob",
            Some(&alice),
            Body::empty(),
        )
        .await
        .assert_error(403, "forbidden");

    // Nothing changed: bob's record intact, alice's space empty.
    let bobs = server.pull_all(&bob, &["user:bob"]).await;
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0]["doc"], json!({"pin": 1234}));
    assert!(server
        .pull_all(&alice, &["user:alice", "team:1"])
        .await
        .is_empty());
    let acked = server.push(&alice, "alice-c", vec![]).await;
    assert_eq!(acked.json["acked_through"], 0);

    // Bob's team write is readable by alice.
    let shared = vec![put(2, 2, "team:1", "todos", "plan", json!({"v": 1}))];
    assert_eq!(
        server.push(&bob, "bob-c", shared).await.status,
        StatusCode::OK
    );
    let visible = server.pull_all(&alice, &["team:1"]).await;
    assert_eq!(visible.len(), 1);
}

on_both_backends! {
    missing_malformed_and_unknown_tokens_are_401_with_a_challenge,
    cross_user_reads_writes_and_streams_are_403,
}
