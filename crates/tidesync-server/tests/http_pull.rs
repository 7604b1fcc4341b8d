//! `POST /v1/pull` pagination while writes continue.
//!
//! Each test runs on SQLite and on PostgreSQL (`sqlite::…`, `postgres::…`, see
//! `common::on_both_backends`).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use axum::http::StatusCode;
use common::{on_both_backends, put, Backend, TestServer};
use serde_json::{json, Value};

const SPACES: [&str; 2] = ["user:alice", "team:1"];

async fn pagination_returns_every_change_exactly_once_while_writes_continue(backend: Backend) {
    let Some(server) = TestServer::new_on(backend).await else {
        return;
    };
    let server = Arc::new(server);
    let token = server.token("alice", &SPACES, &[]);

    // The writer: 60 pushes of 3 mutations over 20 record ids, so records are rewritten
    // while the reader pages through them.
    let writer = {
        let (server, token) = (server.clone(), token.clone());
        tokio::spawn(async move {
            let mut seq = 0;
            for round in 0..60u64 {
                let mutations = (0..3)
                    .map(|i| {
                        seq += 1;
                        let space = SPACES[(seq % 2) as usize];
                        let id = format!("r{}", (round * 3 + i) % 20);
                        put(
                            seq,
                            seq,
                            space,
                            "items",
                            &id,
                            json!({"round": round, "i": i}),
                        )
                    })
                    .collect();
                let reply = server.push(&token, "writer", mutations).await;
                assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
                tokio::task::yield_now().await;
            }
        })
    };

    let mut cursor = json!({});
    let mut seen: HashSet<(String, String, u64)> = HashSet::new();
    let mut latest: BTreeMap<(String, String), (u64, Value)> = BTreeMap::new();
    let mut pages = 0;
    let mut writer_done = false;
    loop {
        let reply = server
            .post(
                "/v1/pull",
                &token,
                &json!({"client_id": "reader", "protocol": 1, "cursor": cursor,
                        "spaces": SPACES, "limit": 4}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        pages += 1;
        let changes = reply.json["changes"].as_array().expect("changes");
        assert!(changes.len() <= 4, "the page size is respected");
        for change in changes {
            let space = change["space"].as_str().expect("space").to_owned();
            let id = change["id"].as_str().expect("id").to_owned();
            let version = change["version"].as_u64().expect("version");
            assert!(
                seen.insert((space.clone(), id.clone(), version)),
                "({space}, {id}, {version}) handed out twice"
            );
            let before = cursor[&space].as_u64().unwrap_or(0);
            assert!(version > before, "a change at or before the cursor");
            latest.insert((space, id), (version, change["doc"].clone()));
        }
        cursor = reply.json["cursor"].clone();
        if reply.json["has_more"] == false {
            if writer_done {
                break;
            }
            writer_done = writer.is_finished();
            if !writer_done {
                tokio::task::yield_now().await;
            }
        }
    }
    assert!(pages > 10, "pagination was exercised ({pages} pages)");

    // The reader's view equals the server's final state.
    let finals = server.pull_all(&token, &SPACES).await;
    assert_eq!(finals.len(), latest.len());
    for change in finals {
        let key = (
            change["space"].as_str().expect("space").to_owned(),
            change["id"].as_str().expect("id").to_owned(),
        );
        let (version, doc) = latest.get(&key).expect("record seen by the reader");
        assert_eq!(change["version"].as_u64(), Some(*version), "{key:?}");
        assert_eq!(&change["doc"], doc, "{key:?}");
    }
}

async fn remaining_counts_down_and_the_limit_is_clamped(backend: Backend) {
    let Some(server) = TestServer::new_on(backend).await else {
        return;
    };
    let token = server.token("alice", &["user:alice"], &[]);
    let mutations = (1..=10)
        .map(|seq| {
            put(
                seq,
                seq,
                "user:alice",
                "items",
                &format!("r{seq}"),
                json!({}),
            )
        })
        .collect();
    assert_eq!(
        server.push(&token, "w", mutations).await.status,
        StatusCode::OK
    );

    let page = |limit: Value, cursor: Value| {
        let server = &server;
        let token = &token;
        async move {
            server
                .post(
                    "/v1/pull",
                    token,
                    &json!({"client_id": "r", "protocol": 1, "spaces": ["user:alice"],
                            "cursor": cursor, "limit": limit}),
                )
                .await
                .json
        }
    };
    let first = page(json!(3), json!({})).await;
    assert_eq!(first["changes"].as_array().map(Vec::len), Some(3));
    assert_eq!(first["remaining"], 7);
    assert_eq!(first["has_more"], true);
    assert_eq!(first["cursor"], json!({"user:alice": 3}));
    // limit 0 is clamped to 1.
    let second = page(json!(0), first["cursor"].clone()).await;
    assert_eq!(second["changes"].as_array().map(Vec::len), Some(1));
    assert_eq!(second["remaining"], 6);
    // A cursor for a space not requested is ignored.
    let third = page(json!(100), json!({"user:alice": 4, "user:bob": 99})).await;
    assert_eq!(third["changes"].as_array().map(Vec::len), Some(6));
    assert_eq!(third["has_more"], false);
    assert_eq!(third["cursor"], json!({"user:alice": 10}));
}

async fn a_cursor_from_the_future_is_409_cursor_reset(backend: Backend) {
    let Some(server) = TestServer::new_on(backend).await else {
        return;
    };
    let token = server.token("alice", &["user:alice"], &[]);
    server
        .post(
            "/v1/pull",
            &token,
            &json!({"client_id": "r", "protocol": 1, "spaces": ["user:alice"],
                    "cursor": {"user:alice": 5}}),
        )
        .await
        .assert_error(409, "cursor_reset");
}

on_both_backends! {
    pagination_returns_every_change_exactly_once_while_writes_continue(flavor = "multi_thread", worker_threads = 2),
    remaining_counts_down_and_the_limit_is_clamped,
    a_cursor_from_the_future_is_409_cursor_reset,
}
