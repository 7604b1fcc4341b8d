//! Compression (docs/protocol.md, "Compression"): responses compressed as the client asks,
//! compressed request bodies accepted, the body limit counted after decompression (bombs are
//! `413 too_large`), unaccepted or broken codings refused with the JSON error body, the event
//! stream never compressed, `Accept-Encoding` advertised, and all of it off with
//! `Limits::compression = false`.
//!
//! SQLite only: compression is the HTTP layer's, the same over either backend.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::{push_body, put, Reply, SseReader, TestServer};
use futures::StreamExt;
use serde_json::{json, Value};
use tidesync_server::{serve, AppState, Limits, MergeRules};
use tower::ServiceExt;

const SPACE: &str = "user:alice";
/// The body limit of these tests' servers: small, so a bomb need not be large.
const LIMIT: usize = 64 * 1024;

fn limits(compression: bool) -> Limits {
    Limits {
        max_body_bytes: LIMIT,
        compression,
        ..Limits::default()
    }
}

/// A server where alice already wrote one record (so "nothing changed" is visible).
async fn server(compression: bool) -> (TestServer, String) {
    let server = TestServer::with(limits(compression), MergeRules::default());
    let token = server.token("alice", &[SPACE], &[]);
    let first = vec![put(1, 1, SPACE, "todos", "t1", json!({"title": "milk"}))];
    assert_eq!(
        server.push(&token, "c1", first).await.status,
        StatusCode::OK
    );
    (server, token)
}

/// Asserts the server still holds exactly alice's first write and `c1` is at seq 1.
async fn assert_unchanged(server: &TestServer, token: &str) {
    let changes = server.pull_all(token, &[SPACE]).await;
    assert_eq!(changes.len(), 1, "{changes:?}");
    let acked = server.push(token, "c1", vec![]).await;
    assert_eq!(acked.json["acked_through"], 1);
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(data, 3).expect("zstd compresses")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("gzip compresses");
    encoder.finish().expect("gzip finishes")
}

/// `POST path` with `body` sent as is, under `Content-Encoding: coding` (none if `None`).
async fn post_encoded(
    server: &TestServer,
    path: &str,
    token: &str,
    coding: Option<&str>,
    body: Vec<u8>,
) -> Reply {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    if let Some(coding) = coding {
        request = request.header(header::CONTENT_ENCODING, coding);
    }
    server
        .send(request.body(Body::from(body)).expect("request"))
        .await
}

/// The JSON of a request body of about `size` bytes: a push whose one document pads it.
fn big_push(seq: u64, size: usize) -> Vec<u8> {
    let pad = "a".repeat(size);
    let mutations = vec![put(seq, seq, SPACE, "todos", "big", json!({"pad": pad}))];
    push_body("c1", mutations).to_string().into_bytes()
}

#[tokio::test]
async fn a_compressed_push_is_applied_and_the_limit_counts_decompressed_bytes() {
    let (server, token) = server(true).await;
    // 48 KiB of JSON, a few hundred bytes compressed: under the limit once inflated.
    let body = big_push(2, 48 * 1024);
    let reply = post_encoded(&server, "/v1/push", &token, Some("zstd"), zstd(&body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["acked_through"], 2);
    let reply = post_encoded(
        &server,
        "/v1/push",
        &token,
        Some("gzip"),
        gzip(&big_push(3, 1000)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["acked_through"], 3);
    let changes = server.pull_all(&token, &[SPACE]).await;
    assert_eq!(changes.len(), 2, "t1 and big");

    // A pull request may be compressed too.
    let pull = json!({"client_id": "c1", "protocol": 1, "spaces": [SPACE]}).to_string();
    let reply = post_encoded(
        &server,
        "/v1/pull",
        &token,
        Some("gzip"),
        gzip(pull.as_bytes()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["changes"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn a_body_that_inflates_past_the_limit_is_413_like_an_uncompressed_one() {
    let (server, token) = server(true).await;
    let plain = raw_too_large(&server, &token).await;
    // 64 MiB of zeros (1,024 times the limit) in a few KiB.
    let bomb = vec![0u8; 64 << 20];
    for (coding, body) in [("zstd", zstd(&bomb)), ("gzip", gzip(&bomb))] {
        assert!(body.len() < 100 * 1024, "{coding}: {} bytes", body.len());
        let started = Instant::now();
        let reply = post_encoded(&server, "/v1/push", &token, Some(coding), body).await;
        reply.assert_error(413, "too_large");
        assert_eq!(reply.json["code"], plain.json["code"]);
        assert!(
            reply.text.contains(coding) && reply.text.contains("decompressed"),
            "{}",
            reply.text
        );
        // Inflating stopped at the limit; it did not go on through 64 MiB.
        assert!(started.elapsed() < Duration::from_secs(5), "{coding}");
    }
    // Just over the limit once inflated is refused too; the limit itself is what counts.
    let over = big_push(2, LIMIT);
    assert!(over.len() > LIMIT);
    post_encoded(&server, "/v1/push", &token, Some("zstd"), zstd(&over))
        .await
        .assert_error(413, "too_large");
    assert_unchanged(&server, &token).await;
}

/// The answer to an uncompressed body over the limit: what a bomb must be answered like.
async fn raw_too_large(server: &TestServer, token: &str) -> Reply {
    let reply = post_encoded(server, "/v1/push", token, None, big_push(2, LIMIT)).await;
    reply.assert_error(413, "too_large");
    reply
}

#[tokio::test]
async fn a_bomb_through_a_real_socket_is_413_and_the_connection_keeps_serving() {
    let server = TestServer::with(limits(true), MergeRules::default());
    let token = server.token("alice", &[SPACE], &[]);
    let state: AppState = server.state.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, state, async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    for (coding, body) in [
        ("zstd", zstd(&vec![b' '; 32 << 20])),
        ("gzip", gzip(&vec![b' '; 32 << 20])),
    ] {
        let response = http
            .post(format!("{base}/v1/push"))
            .bearer_auth(&token)
            .header(header::CONTENT_ENCODING.as_str(), coding)
            .body(body)
            .send()
            .await
            .expect("an answer");
        assert_eq!(response.status(), 413, "{coding}");
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["code"], "too_large", "{body}");
    }
    let healthz = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(healthz.status(), 200);
    let _ = stop.send(());
    task.await.expect("joined").expect("served");
}

#[tokio::test]
async fn unaccepted_codings_are_415_and_broken_bodies_400_with_the_json_error() {
    let (server, token) = server(true).await;
    let body = big_push(2, 2000);
    // Not accepted: 415 with what is, whatever the body holds.
    for coding in ["br", "deflate", "gzip, zstd", "compress"] {
        let reply = post_encoded(&server, "/v1/push", &token, Some(coding), body.clone()).await;
        reply.assert_error(415, "unsupported_encoding");
        assert_eq!(
            reply.headers[header::ACCEPT_ENCODING],
            "zstd, gzip",
            "{coding}"
        );
        assert!(reply.text.contains("zstd, gzip"), "{}", reply.text);
    }
    // Accepted, but not what it says: 400 naming the coding.
    let mut truncated = gzip(&body);
    truncated.truncate(truncated.len() / 2);
    for (coding, bytes) in [
        ("gzip", body.clone()),
        ("zstd", body.clone()),
        (
            "gzip",
            b"\x1f\x8b\x08\x00garbage that is no deflate stream".to_vec(),
        ),
        ("gzip", truncated),
        ("zstd", zstd(&body)[..20].to_vec()),
        ("zstd", gzip(&body)),
    ] {
        let reply = post_encoded(&server, "/v1/push", &token, Some(coding), bytes).await;
        reply.assert_error(400, "malformed_request");
        assert!(reply.text.contains(coding), "{coding}: {}", reply.text);
    }
    // An empty body is an empty stream in either coding: the usual 400 for no JSON.
    for coding in ["gzip", "zstd"] {
        post_encoded(&server, "/v1/push", &token, Some(coding), Vec::new())
            .await
            .assert_error(400, "malformed_request");
    }
    // Decompresses, but the JSON inside is broken: the usual 400 with the position.
    let reply = post_encoded(
        &server,
        "/v1/push",
        &token,
        Some("zstd"),
        zstd(b"{\"client_id\": "),
    )
    .await;
    reply.assert_error(400, "malformed_request");
    assert!(reply.text.contains("line 1"), "{}", reply.text);
    // Spelled otherwise, still accepted.
    let reply = post_encoded(
        &server,
        "/v1/push",
        &token,
        Some("GZip"),
        gzip(&push_body("c1", vec![]).to_string().into_bytes()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_unchanged(&server, &token).await;
}

#[tokio::test]
async fn responses_are_compressed_as_asked_and_accept_encoding_is_advertised() {
    let (server, token) = server(true).await;
    let more: Vec<Value> = (2..40)
        .map(|i| {
            put(
                i,
                i,
                SPACE,
                "todos",
                &format!("t{i}"),
                json!({"title": "the same words again"}),
            )
        })
        .collect();
    let reply = server.push(&token, "c1", more).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers[header::ACCEPT_ENCODING], "zstd, gzip", "push");
    let health = server
        .call(Method::GET, "/healthz", None, Body::empty())
        .await;
    assert_eq!(
        health.headers[header::ACCEPT_ENCODING],
        "zstd, gzip",
        "healthz"
    );
    let error = server
        .call(Method::GET, "/v2/nothing", None, Body::empty())
        .await;
    assert_eq!(error.headers[header::ACCEPT_ENCODING], "zstd, gzip", "404");

    let pull = json!({"client_id": "c1", "protocol": 1, "spaces": [SPACE]}).to_string();
    let plain = pull_with(&server, &token, &pull, None).await;
    assert!(plain.headers.get(header::CONTENT_ENCODING).is_none());
    assert_eq!(plain.headers[header::ACCEPT_ENCODING], "zstd, gzip", "pull");
    let expected: Value = serde_json::from_slice(&plain.bytes).expect("JSON");
    for (asked, coding) in [
        ("zstd", "zstd"),
        ("gzip", "gzip"),
        ("gzip;q=0.5, zstd", "zstd"),
    ] {
        let reply = pull_with(&server, &token, &pull, Some(asked)).await;
        assert_eq!(reply.headers[header::CONTENT_ENCODING], coding, "{asked}");
        assert!(
            reply.bytes.len() < plain.bytes.len() / 2,
            "{asked}: compressed"
        );
        let inflated = match coding {
            "zstd" => zstd::stream::decode_all(&reply.bytes[..]).expect("zstd"),
            _ => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&reply.bytes[..])
                    .read_to_end(&mut out)
                    .expect("gzip");
                out
            }
        };
        let json: Value = serde_json::from_slice(&inflated).expect("JSON");
        assert_eq!(json, expected, "{asked}");
    }
    let identity = pull_with(&server, &token, &pull, Some("br")).await;
    assert!(identity.headers.get(header::CONTENT_ENCODING).is_none());
}

/// A response with its raw (still encoded) body.
struct RawReply {
    headers: axum::http::HeaderMap,
    bytes: Vec<u8>,
}

async fn pull_with(server: &TestServer, token: &str, body: &str, accept: Option<&str>) -> RawReply {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri("/v1/pull")
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    if let Some(accept) = accept {
        request = request.header(header::ACCEPT_ENCODING, accept);
    }
    let response = server
        .router
        .clone()
        .oneshot(request.body(Body::from(body.to_owned())).expect("request"))
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    RawReply { headers, bytes }
}

#[tokio::test]
async fn with_compression_off_nothing_is_compressed_or_advertised_and_coded_bodies_are_415() {
    let (server, token) = server(false).await;
    let health = server
        .call(Method::GET, "/healthz", None, Body::empty())
        .await;
    assert!(health.headers.get(header::ACCEPT_ENCODING).is_none());
    let pull = json!({"client_id": "c1", "protocol": 1, "spaces": [SPACE]}).to_string();
    let reply = pull_with(&server, &token, &pull, Some("zstd, gzip")).await;
    assert!(reply.headers.get(header::CONTENT_ENCODING).is_none());
    assert!(reply.headers.get(header::ACCEPT_ENCODING).is_none());
    let body = big_push(2, 2000);
    for (coding, bytes) in [("zstd", zstd(&body)), ("gzip", gzip(&body))] {
        let reply = post_encoded(&server, "/v1/push", &token, Some(coding), bytes).await;
        reply.assert_error(415, "unsupported_encoding");
        assert_eq!(reply.headers[header::ACCEPT_ENCODING], "identity");
        assert!(reply.text.contains("uncompressed"), "{}", reply.text);
    }
    assert_unchanged(&server, &token).await;
}

#[tokio::test]
async fn a_poke_arrives_at_once_on_a_stream_opened_accepting_gzip_and_zstd() {
    let server = TestServer::with(limits(true), MergeRules::default());
    let token = server.token("alice", &[SPACE], &[]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, server.state.clone(), async move {
        let _ = stopped.await;
    }));

    // Over the router: the stream is not encoded.
    let request = Request::builder()
        .uri(format!("/v1/events?spaces={SPACE}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::ACCEPT_ENCODING, "gzip, zstd")
        .body(Body::empty())
        .expect("request");
    let response = server
        .router
        .clone()
        .oneshot(request)
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    assert!(response.headers().get(header::CONTENT_ENCODING).is_none());
    let mut routed = SseReader::new(response.into_body());

    // Over a socket, with a client that asks for gzip and zstd as reqwest does.
    let http = reqwest::Client::new();
    let events = http
        .get(format!("{base}/v1/events?spaces={SPACE}"))
        .bearer_auth(&token)
        .header(header::ACCEPT_ENCODING.as_str(), "gzip, zstd")
        .send()
        .await
        .expect("events");
    assert_eq!(events.status(), 200);
    assert!(events
        .headers()
        .get(header::CONTENT_ENCODING.as_str())
        .is_none());
    let mut stream = events.bytes_stream();

    let push = push_body("c1", vec![put(1, 1, SPACE, "todos", "t1", json!({}))]);
    let pushed = Instant::now();
    let reply = http
        .post(format!("{base}/v1/push"))
        .bearer_auth(&token)
        .json(&push)
        .send()
        .await
        .expect("push");
    assert_eq!(reply.status(), 200);
    // Well under the 15 s heartbeat that would flush an encoder's buffer.
    let soon = Duration::from_secs(2);
    assert_eq!(
        routed.next(soon).await,
        Some(("poke".to_owned(), SPACE.to_owned()))
    );
    let mut seen = String::new();
    while !seen.contains("event: poke") {
        let chunk = tokio::time::timeout(soon, stream.next())
            .await
            .expect("a poke in time")
            .expect("the stream is open")
            .expect("a chunk");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains(&format!("data: {SPACE}")), "{seen}");
    assert!(pushed.elapsed() < soon);
    drop(stream);
    let _ = stop.send(());
    task.await.expect("joined").expect("served");
}
