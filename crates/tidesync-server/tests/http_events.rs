//! `GET /v1/events`: pokes, filtering by space, the stream limit, disconnect and shutdown.
//!
//! Each test runs on SQLite and on PostgreSQL (`sqlite::…`, `postgres::…`, see
//! `common::on_both_backends`).

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::response::Response;
use common::{on_both_backends, put, Backend, SseReader, TestServer};
use serde_json::json;
use tidesync_server::{Limits, MergeRules};
use tower::ServiceExt;

const WAIT: Duration = Duration::from_secs(5);

async fn open(server: &TestServer, token: &str, spaces: &str) -> Response {
    let request = Request::builder()
        .method(Method::GET)
        .uri(format!("/v1/events?spaces={spaces}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .expect("request");
    server
        .router
        .clone()
        .oneshot(request)
        .await
        .expect("infallible")
}

fn poke(space: &str) -> Option<(String, String)> {
    Some(("poke".to_owned(), space.to_owned()))
}

async fn a_subscriber_is_poked_for_its_spaces_only(backend: Backend) {
    let Some(server) = TestServer::new_on(backend).await else {
        return;
    };
    let alice = server.token("alice", &["user:alice", "shared"], &[]);
    let bob = server.token("bob", &["user:bob"], &[]);
    let response = open(&server, &alice, "user:alice").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut events = SseReader::new(response.into_body());

    // Changes to other spaces (another user's, and one of alice's she did not subscribe to).
    let theirs = vec![put(1, 1, "user:bob", "todos", "t", json!({"secret": 1}))];
    assert_eq!(
        server.push(&bob, "bob-c", theirs).await.status,
        StatusCode::OK
    );
    let other = vec![put(1, 1, "shared", "todos", "t", json!({}))];
    assert_eq!(
        server.push(&alice, "alice-tab", other).await.status,
        StatusCode::OK
    );
    // Then a change to the subscribed space, from another client of alice's.
    let mine = vec![put(
        2,
        2,
        "user:alice",
        "todos",
        "t",
        json!({"title": "milk"}),
    )];
    assert_eq!(
        server.push(&alice, "alice-tab", mine).await.status,
        StatusCode::OK
    );

    assert_eq!(events.next(WAIT).await, poke("user:alice"));
    assert!(
        events.try_next(Duration::from_millis(200)).await.is_err(),
        "no further events"
    );
}

async fn on_connect_every_space_with_changes_is_poked_once(backend: Backend) {
    let Some(server) = TestServer::new_on(backend).await else {
        return;
    };
    let alice = server.token("alice", &["user:alice", "empty", "team:1"], &[]);
    let seed = vec![
        put(1, 1, "user:alice", "todos", "a", json!({})),
        put(2, 2, "team:1", "todos", "b", json!({})),
    ];
    assert_eq!(server.push(&alice, "c", seed).await.status, StatusCode::OK);
    let response = open(&server, &alice, "user:alice,empty,team:1").await;
    let mut events = SseReader::new(response.into_body());
    let mut first = vec![events.next(WAIT).await, events.next(WAIT).await];
    first.sort();
    assert_eq!(first, vec![poke("team:1"), poke("user:alice")]);
    assert!(events.try_next(Duration::from_millis(200)).await.is_err());
}

async fn the_stream_limit_answers_503_and_a_disconnect_frees_a_slot(backend: Backend) {
    let limits = Limits {
        max_event_streams: 1,
        ..Limits::default()
    };
    let Some(server) = TestServer::with_on(backend, limits, MergeRules::default()).await else {
        return;
    };
    let alice = server.token("alice", &["user:alice"], &[]);
    let first = open(&server, &alice, "user:alice").await;
    assert_eq!(first.status(), StatusCode::OK);
    let metrics = server
        .call(Method::GET, "/metrics", None, Body::empty())
        .await;
    assert!(
        metrics.text.contains("tidesync_open_event_streams 1"),
        "{}",
        metrics.text
    );

    let second = server
        .call(
            Method::GET,
            "/v1/events?spaces=user:alice",
            Some(&alice),
            Body::empty(),
        )
        .await;
    second.assert_error(503, "unavailable");
    assert!(second.headers.contains_key(header::RETRY_AFTER));

    drop(first); // the client goes away
    let third = open(&server, &alice, "user:alice").await;
    assert_eq!(third.status(), StatusCode::OK);
    drop(third);
    let metrics = server
        .call(Method::GET, "/metrics", None, Body::empty())
        .await;
    assert!(
        metrics.text.contains("tidesync_open_event_streams 0"),
        "{}",
        metrics.text
    );
}

async fn shutdown_ends_open_streams_and_refuses_new_ones(backend: Backend) {
    let Some(server) = TestServer::new_on(backend).await else {
        return;
    };
    let alice = server.token("alice", &["user:alice"], &[]);
    let response = open(&server, &alice, "user:alice").await;
    let mut events = SseReader::new(response.into_body());
    server.state.begin_shutdown();
    assert_eq!(events.next(WAIT).await, None, "the stream ended");
    server
        .call(
            Method::GET,
            "/v1/events?spaces=user:alice",
            Some(&alice),
            Body::empty(),
        )
        .await
        .assert_error(503, "unavailable");
}

async fn bad_space_lists_are_400(backend: Backend) {
    let Some(server) = TestServer::new_on(backend).await else {
        return;
    };
    let alice = server.token("alice", &["user:alice"], &[]);
    for query in [
        "",
        "?spaces=",
        "?spaces=user:alice,user:alice",
        "?spaces=bad%20name",
        "?other=1",
    ] {
        server
            .call(
                Method::GET,
                &format!("/v1/events{query}"),
                Some(&alice),
                Body::empty(),
            )
            .await
            .assert_error(400, "invalid_input");
    }
}

async fn heartbeats_keep_an_idle_stream_alive(backend: Backend) {
    let limits = Limits {
        heartbeat: Duration::from_millis(100),
        ..Limits::default()
    };
    let Some(server) = TestServer::with_on(backend, limits, MergeRules::default()).await else {
        return;
    };
    let alice = server.token("alice", &["user:alice"], &[]);
    let response = open(&server, &alice, "user:alice").await;
    let mut body = response.into_body();
    let frame = tokio::time::timeout(
        Duration::from_secs(2),
        http_body_util::BodyExt::frame(&mut body),
    )
    .await
    .expect("a heartbeat within the interval")
    .expect("a frame")
    .expect("no error");
    let bytes = frame.into_data().expect("data");
    assert!(bytes.starts_with(b":"), "a comment line: {bytes:?}");
}

on_both_backends! {
    a_subscriber_is_poked_for_its_spaces_only,
    on_connect_every_space_with_changes_is_poked_once,
    the_stream_limit_answers_503_and_a_disconnect_frees_a_slot,
    shutdown_ends_open_streams_and_refuses_new_ones,
    bad_space_lists_are_400,
    heartbeats_keep_an_idle_stream_alive,
}
