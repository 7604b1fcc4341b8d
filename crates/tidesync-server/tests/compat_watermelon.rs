//! WatermelonDB's sync protocol on tidesync's data (`/compat/watermelon/v1/{space}/sync`,
//! docs/compat.md): pulls by table with a version timestamp, pushes applied all or none,
//! `409 conflict` for a change made after `last_pulled_at`, resent pushes applied once, bad
//! input, and a tidesync client, an RxDB client and a WatermelonDB client converging on one
//! space.
//!
//! Each test runs on SQLite and on PostgreSQL (`sqlite::…`, `postgres::…`, see
//! `common::on_both_backends`).

mod common;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use common::{on_both_backends, put, put_on, Backend, Reply, TestServer};
use serde_json::{json, Value};
use tidesync_protocol::SpaceName;
use tidesync_server::storage::Storage;
use tidesync_server::MergeRules;

const SYNC: &str = "/compat/watermelon/v1/shared/sync";

async fn pull(server: &TestServer, token: &str, last_pulled_at: Option<u64>) -> Reply {
    let at = last_pulled_at.map_or("null".to_owned(), |t| t.to_string());
    let path = format!("{SYNC}?last_pulled_at={at}&schema_version=3&migration=null");
    server
        .call(Method::GET, &path, Some(token), Body::empty())
        .await
}

async fn push(server: &TestServer, token: &str, last_pulled_at: u64, changes: &Value) -> Reply {
    server
        .post(
            &format!("{SYNC}?last_pulled_at={last_pulled_at}"),
            token,
            changes,
        )
        .await
}

async fn version(server: &TestServer) -> u64 {
    let space = SpaceName::new("shared").expect("space");
    server
        .storage
        .space_versions(&[space])
        .await
        .expect("versions")[0]
}

/// The native documents of `shared`, as (collection, id, doc or null when deleted).
async fn native(server: &TestServer, token: &str) -> Vec<(String, String, Value)> {
    let mut records: Vec<_> = server
        .pull_all(token, &["shared"])
        .await
        .into_iter()
        .map(|c| {
            let doc = if c["deleted"] == true {
                Value::Null
            } else {
                c["doc"].clone()
            };
            (
                c["collection"].as_str().expect("collection").to_owned(),
                c["id"].as_str().expect("id").to_owned(),
                doc,
            )
        })
        .collect();
    records.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    records
}

fn raw(id: &str, body: &str, status: &str) -> Value {
    json!({"id": id, "body": body, "count": 1, "_status": status, "_changed": "body"})
}

async fn pulls_group_changes_by_table_with_a_version_timestamp(backend: Backend) {
    let Some(server) = TestServer::new_on(backend).await else {
        return;
    };
    let alice = server.token("alice", &["shared"], &[]);
    // An empty space: nothing, at timestamp 1 (timestamps are space versions plus one:
    // WatermelonDB refuses a timestamp of 0).
    let reply = pull(&server, &alice, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json, json!({"changes": {}, "timestamp": 1}));

    let writes = vec![
        put(1, 1, "shared", "posts", "p1", json!({"title": "one"})),
        put(2, 2, "shared", "posts", "p2", json!({"title": "gone"})),
        json!({"seq": 3, "tx": 3, "space": "shared", "collection": "posts", "id": "p2",
               "kind": "delete", "hlc": common::hlc(3), "base_version": 0}),
        put(
            4,
            4,
            "shared",
            "comments",
            "c1",
            json!({"post_id": "p1", "body": "hi"}),
        ),
    ];
    assert_eq!(
        server.push(&alice, "phone", writes).await.status,
        StatusCode::OK
    );
    // The first sync sends the live records (as `updated`, like every pull, for
    // `sendCreatedAsUpdated`); a deleted one is left out.
    let first = pull(&server, &alice, None).await;
    assert_eq!(
        first.json,
        json!({
            "changes": {
                "posts": {"created": [], "updated": [{"id": "p1", "title": "one"}], "deleted": []},
                "comments": {"created": [], "updated": [{"id": "c1", "post_id": "p1", "body": "hi"}],
                             "deleted": []},
            },
            "timestamp": version(&server).await + 1,
        })
    );
    let t = first.json["timestamp"].as_u64().expect("timestamp");
    // Nothing since: empty.
    assert_eq!(
        pull(&server, &alice, Some(t)).await.json,
        json!({"changes": {}, "timestamp": t})
    );

    // Later changes: updated and deleted, each record once in its newest state.
    let later = vec![
        put_on(
            5,
            5,
            "shared",
            "posts",
            "p1",
            json!({"title": "two"}),
            t - 1,
        ),
        put_on(
            6,
            6,
            "shared",
            "posts",
            "p1",
            json!({"title": "three"}),
            t - 1,
        ),
        json!({"seq": 7, "tx": 7, "space": "shared", "collection": "comments", "id": "c1",
               "kind": "delete", "hlc": common::hlc(7), "base_version": t - 1}),
    ];
    assert_eq!(
        server.push(&alice, "phone", later).await.status,
        StatusCode::OK
    );
    let reply = pull(&server, &alice, Some(t)).await;
    assert_eq!(
        reply.json["changes"],
        json!({
            "posts": {"created": [], "updated": [{"id": "p1", "title": "three"}], "deleted": []},
            "comments": {"created": [], "updated": [], "deleted": ["c1"]},
        })
    );
    // Only the tables the app names (WatermelonDB fails on a table its schema lacks).
    let path =
        format!("{SYNC}?last_pulled_at=null&schema_version=3&migration=null&tables=comments");
    let reply = server
        .call(Method::GET, &path, Some(&alice), Body::empty())
        .await;
    assert_eq!(
        reply.json["changes"],
        json!({}),
        "comments has only a deletion"
    );
    let path = format!("{SYNC}?last_pulled_at={t}&tables=comments,tags");
    let reply = server
        .call(Method::GET, &path, Some(&alice), Body::empty())
        .await;
    assert_eq!(
        reply.json["changes"],
        json!({"comments": {"created": [], "updated": [], "deleted": ["c1"]}})
    );
    let path = format!("{SYNC}?last_pulled_at={t}&tables=bad%20name");
    let reply = server
        .call(Method::GET, &path, Some(&alice), Body::empty())
        .await;
    reply.assert_error(400, "invalid_input");

    // A migration pull sends every record whatever `last_pulled_at` says.
    let path = format!(
        "{SYNC}?last_pulled_at={}&schema_version=4&migration=%7B%22from%22%3A3%2C%22tables%22%3A%5B%22posts%22%5D%2C%22columns%22%3A%5B%5D%7D",
        version(&server).await + 1
    );
    let reply = server
        .call(Method::GET, &path, Some(&alice), Body::empty())
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.json["changes"]["posts"]["updated"],
        json!([{"id": "p1", "title": "three"}])
    );
    assert_eq!(reply.json["changes"]["posts"]["deleted"], json!(["p2"]));
}

async fn a_push_is_applied_whole_and_its_records_pull_back(backend: Backend) {
    let Some(server) = TestServer::new_on(backend).await else {
        return;
    };
    let alice = server.token("alice", &["shared"], &[]);
    let t = pull(&server, &alice, None).await.json["timestamp"]
        .as_u64()
        .expect("timestamp");
    let changes = json!({
        "posts": {"created": [raw("p1", "new", "created")], "updated": [], "deleted": []},
        "comments": {"created": [], "updated": [raw("c1", "edited", "updated")], "deleted": ["c9"]},
    });
    let reply = push(&server, &alice, t, &changes).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json, json!({}));
    // Stored without id, _status and _changed; visible to native clients.
    assert_eq!(
        native(&server, &alice).await,
        [
            (
                "comments".to_owned(),
                "c1".to_owned(),
                json!({"body": "edited", "count": 1})
            ),
            ("comments".to_owned(), "c9".to_owned(), Value::Null),
            (
                "posts".to_owned(),
                "p1".to_owned(),
                json!({"body": "new", "count": 1})
            ),
        ]
    );
    // The next pull hands them back (WatermelonDB expects that), without _status/_changed.
    let reply = pull(&server, &alice, Some(t)).await;
    assert_eq!(
        reply.json["changes"]["posts"]["updated"],
        json!([{"id": "p1", "body": "new", "count": 1}])
    );
}

/// WatermelonDB sends every local change in one push, which it cannot split: the
/// per-push count limit (RxDB's, native) does not refuse it; the body limit bounds it.
async fn a_push_over_the_per_push_count_is_applied_whole(backend: Backend) {
    let limits = tidesync_server::Limits {
        max_mutations_per_push: 3,
        ..tidesync_server::Limits::default()
    };
    let Some(server) = TestServer::with_on(backend, limits, MergeRules::default()).await else {
        return;
    };
    let alice = server.token("alice", &["shared"], &[]);
    let created: Vec<Value> = (0..10)
        .map(|i| raw(&format!("p{i}"), "x", "created"))
        .collect();
    let reply = push(&server, &alice, 1, &json!({"posts": {"created": created}})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(native(&server, &alice).await.len(), 10);
}

async fn a_change_after_last_pulled_at_is_a_conflict_and_nothing_is_written(backend: Backend) {
    let Some(server) = TestServer::new_on(backend).await else {
        return;
    };
    let alice = server.token("alice", &["shared"], &[]);
    let seed = vec![
        put(1, 1, "shared", "posts", "p1", json!({"body": "a"})),
        put(2, 2, "shared", "posts", "p2", json!({"body": "b"})),
    ];
    assert_eq!(
        server.push(&alice, "phone", seed).await.status,
        StatusCode::OK
    );
    let t = pull(&server, &alice, None).await.json["timestamp"]
        .as_u64()
        .expect("timestamp");
    // The phone edits p2 after the WatermelonDB app pulled (at version t - 1).
    let edit = vec![put_on(
        3,
        3,
        "shared",
        "posts",
        "p2",
        json!({"body": "phone"}),
        t - 1,
    )];
    assert_eq!(
        server.push(&alice, "phone", edit).await.status,
        StatusCode::OK
    );
    let before = native(&server, &alice).await;
    let at = version(&server).await;

    let changes = json!({"posts": {
        "created": [raw("p3", "new", "created")],
        "updated": [raw("p1", "melon", "updated"), raw("p2", "melon", "updated")],
        "deleted": [],
    }});
    let reply = push(&server, &alice, t, &changes).await;
    reply.assert_error(409, "conflict");
    assert!(reply.text.contains("p2"), "{}", reply.text);
    assert_eq!(native(&server, &alice).await, before, "all or none: none");
    assert_eq!(version(&server).await, at);
    // The same push resent is refused again.
    push(&server, &alice, t, &changes)
        .await
        .assert_error(409, "conflict");

    // What the app does next: pull, then push on the new timestamp.
    let reply = pull(&server, &alice, Some(t)).await;
    assert_eq!(
        reply.json["changes"]["posts"]["updated"],
        json!([{"id": "p2", "body": "phone"}])
    );
    let t2 = reply.json["timestamp"].as_u64().expect("timestamp");
    let reply = push(&server, &alice, t2, &changes).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let bodies: Vec<Value> = native(&server, &alice)
        .await
        .into_iter()
        .map(|r| r.2["body"].clone())
        .collect();
    assert_eq!(bodies, [json!("melon"), json!("melon"), json!("new")]);
}

async fn a_push_resent_after_a_lost_answer_is_applied_once(backend: Backend) {
    let Some(server) = TestServer::new_on(backend).await else {
        return;
    };
    let alice = server.token("alice", &["shared"], &[]);
    let t = pull(&server, &alice, None).await.json["timestamp"]
        .as_u64()
        .expect("timestamp");
    let changes =
        json!({"posts": {"created": [raw("p1", "x", "created"), raw("p2", "y", "created")]}});
    assert_eq!(
        push(&server, &alice, t, &changes).await.status,
        StatusCode::OK
    );
    let at = version(&server).await;
    // The answer was lost; WatermelonDB pushes the same changes on the same timestamp.
    let reply = push(&server, &alice, t, &changes).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json, json!({}));
    assert_eq!(version(&server).await, at, "applied once");
    // Both at once: still once.
    let more = json!({"posts": {"updated": [raw("p1", "z", "updated")]}});
    let (one, two) = tokio::join!(
        push(&server, &alice, at + 1, &more),
        push(&server, &alice, at + 1, &more)
    );
    assert_eq!(
        (one.status, two.status),
        (StatusCode::OK, StatusCode::OK),
        "{} / {}",
        one.text,
        two.text
    );
    assert_eq!(version(&server).await, at + 1);
}

async fn bad_input_is_refused_and_changes_nothing(backend: Backend) {
    let Some(server) = TestServer::new_on(backend).await else {
        return;
    };
    let alice = server.token("alice", &["shared"], &["readonly"]);
    let ok = json!({"posts": {"created": [raw("p1", "x", "created")]}});
    let bad_bodies = [
        json!([]),
        json!({"posts": {"created": ["text"]}}),
        json!({"posts": {"created": [{"body": "no id"}]}}),
        json!({"posts": {"created": [{"id": 7}]}}),
        json!({"posts": {"deleted": [7]}}),
        json!({"bad table": {"created": [raw("p1", "x", "created")]}}),
        json!({"posts": {"created": [raw("p1", "x", "created")], "updated": [raw("p1", "y", "updated")]}}),
    ];
    for body in bad_bodies {
        let reply = push(&server, &alice, 1, &body).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.text
        );
    }
    server
        .post(SYNC, &alice, &ok)
        .await
        .assert_error(400, "invalid_input");
    server
        .post(&format!("{SYNC}?last_pulled_at=soon"), &alice, &ok)
        .await
        .assert_error(400, "invalid_input");
    let reply = server
        .call(
            Method::GET,
            &format!("{SYNC}?last_pulled_at=-1"),
            Some(&alice),
            Body::empty(),
        )
        .await;
    reply.assert_error(400, "invalid_input");
    // 0 is no timestamp of this server's (they start at 1).
    push(&server, &alice, 0, &ok)
        .await
        .assert_error(400, "invalid_input");
    // A timestamp this server never gave (restored from an older backup).
    push(&server, &alice, 50, &ok)
        .await
        .assert_error(409, "cursor_reset");
    pull(&server, &alice, Some(50))
        .await
        .assert_error(409, "cursor_reset");
    // Auth and grants as the native protocol.
    server
        .call(Method::GET, SYNC, None, Body::empty())
        .await
        .assert_error(401, "unauthorized");
    server
        .post(
            "/compat/watermelon/v1/readonly/sync?last_pulled_at=1",
            &alice,
            &ok,
        )
        .await
        .assert_error(403, "forbidden");
    let bob = server.token("bob", &["elsewhere"], &[]);
    pull(&server, &bob, None)
        .await
        .assert_error(403, "forbidden");
    assert_eq!(version(&server).await, 0, "nothing was written");
}

/// A tidesync client, an RxDB client and a WatermelonDB client edit one space, each offline
/// for a while, and end with the same records.
async fn three_protocols_converge_on_one_space(backend: Backend) {
    let Some(server) = TestServer::new_on(backend).await else {
        return;
    };
    let alice = server.token("alice", &["shared"], &[]);
    let rxdb = "/compat/rxdb/v1/shared/posts";
    // Each side creates a record.
    assert_eq!(
        server
            .push(
                &alice,
                "flutter",
                vec![put(
                    1,
                    1,
                    "shared",
                    "posts",
                    "native",
                    json!({"by": "tidesync"})
                )]
            )
            .await
            .status,
        StatusCode::OK
    );
    let rows = json!([{"assumedMasterState": null, "newDocumentState": {"id": "rx", "by": "rxdb", "_deleted": false}}]);
    assert_eq!(
        server
            .post(&format!("{rxdb}/push"), &alice, &rows)
            .await
            .json,
        json!([])
    );
    let melon = pull(&server, &alice, None).await;
    let t = melon.json["timestamp"].as_u64().expect("timestamp");
    let mine = json!({"posts": {"created": [{"id": "wm", "by": "watermelon", "_status": "created", "_changed": ""}]}});
    assert_eq!(push(&server, &alice, t, &mine).await.status, StatusCode::OK);

    // All three edit `native`: the tidesync client first, then RxDB on its stale view (a
    // conflict, resolved by taking the master and editing again), then WatermelonDB on a
    // stale timestamp (409, pull, push again).
    let base = version(&server).await;
    let edit = vec![put_on(
        2,
        2,
        "shared",
        "posts",
        "native",
        json!({"by": "tidesync", "n": 1}),
        base,
    )];
    assert_eq!(
        server.push(&alice, "flutter", edit).await.status,
        StatusCode::OK
    );
    let stale = json!({"id": "native", "by": "tidesync", "_deleted": false});
    let rows = json!([{"assumedMasterState": stale, "newDocumentState": {"id": "native", "by": "rxdb", "_deleted": false}}]);
    let master = server
        .post(&format!("{rxdb}/push"), &alice, &rows)
        .await
        .json[0]
        .clone();
    assert_eq!(master["n"], 1);
    let mut resolved = master.clone();
    resolved["n"] = json!(2);
    let rows = json!([{"assumedMasterState": master, "newDocumentState": resolved}]);
    assert_eq!(
        server
            .post(&format!("{rxdb}/push"), &alice, &rows)
            .await
            .json,
        json!([])
    );
    let edit = json!({"posts": {"updated": [{"id": "native", "by": "tidesync", "n": 3, "_status": "updated", "_changed": "n"}],
                                "deleted": ["rx"]}});
    push(&server, &alice, t, &edit)
        .await
        .assert_error(409, "conflict");
    let t2 = pull(&server, &alice, Some(t)).await.json["timestamp"]
        .as_u64()
        .expect("timestamp");
    assert_eq!(
        push(&server, &alice, t2, &edit).await.status,
        StatusCode::OK
    );

    // Everyone reads the same thing.
    let expected = [
        (
            "posts".to_owned(),
            "native".to_owned(),
            json!({"by": "tidesync", "n": 3}),
        ),
        ("posts".to_owned(), "rx".to_owned(), Value::Null),
        (
            "posts".to_owned(),
            "wm".to_owned(),
            json!({"by": "watermelon"}),
        ),
    ];
    assert_eq!(native(&server, &alice).await, expected);
    let reply = server
        .call(
            Method::GET,
            &format!("{rxdb}/pull?limit=100"),
            Some(&alice),
            Body::empty(),
        )
        .await;
    let mut documents = reply.json["documents"]
        .as_array()
        .expect("documents")
        .clone();
    documents.sort_by_key(|d| d["id"].as_str().expect("id").to_owned());
    assert_eq!(
        documents,
        [
            json!({"id": "native", "by": "tidesync", "n": 3, "_deleted": false}),
            json!({"id": "rx", "_deleted": true}),
            json!({"id": "wm", "by": "watermelon", "_deleted": false}),
        ]
    );
    let melon = pull(&server, &alice, None).await;
    let mut created = melon.json["changes"]["posts"]["updated"]
        .as_array()
        .expect("updated")
        .clone();
    created.sort_by_key(|d| d["id"].as_str().expect("id").to_owned());
    assert_eq!(
        created,
        [
            json!({"id": "native", "by": "tidesync", "n": 3}),
            json!({"id": "wm", "by": "watermelon"}),
        ]
    );
}

/// A record its collection's JSON Schema refuses is not a conflict (pulling and pushing again
/// would be refused again): `400 schema_violation` naming the record, and nothing written.
async fn a_record_its_schema_refuses_is_a_schema_violation_not_a_conflict(backend: Backend) {
    let mut schemas = tidesync_server::Schemas::new();
    schemas
        .insert(
            tidesync_protocol::CollectionName::new("posts").expect("name"),
            &json!({"type": "object", "properties": {"body": {"type": "string", "minLength": 1}}}),
        )
        .expect("schema");
    let rules = MergeRules {
        schemas,
        ..MergeRules::default()
    };
    let Some(server) =
        TestServer::with_on(backend, tidesync_server::Limits::default(), rules).await
    else {
        return;
    };
    let alice = server.token("alice", &["shared"], &[]);
    let changes = json!({"posts": {"created": [raw("p1", "fine", "created"), raw("p2", "", "created")], "updated": [], "deleted": []}});
    let reply = push(&server, &alice, 1, &changes).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.json);
    assert_eq!(reply.json["code"], "schema_violation", "{:?}", reply.json);
    let message = reply.json["message"].as_str().expect("message");
    assert!(
        message.contains("p2") && message.contains("/body"),
        "{message}"
    );
    assert!(
        native(&server, &alice).await.is_empty(),
        "all or none: nothing written"
    );
}

on_both_backends!(
    pulls_group_changes_by_table_with_a_version_timestamp,
    a_push_is_applied_whole_and_its_records_pull_back,
    a_push_over_the_per_push_count_is_applied_whole,
    a_change_after_last_pulled_at_is_a_conflict_and_nothing_is_written,
    a_push_resent_after_a_lost_answer_is_applied_once(flavor = "multi_thread", worker_threads = 2),
    bad_input_is_refused_and_changes_nothing,
    three_protocols_converge_on_one_space,
    a_record_its_schema_refuses_is_a_schema_violation_not_a_conflict,
);
