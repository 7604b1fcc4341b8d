//! RxDB's HTTP replication on tidesync's data (`/compat/rxdb/v1/…`, docs/compat.md):
//! documents and checkpoints, RxDB's conflict rule decided in storage, deletions, resent
//! pushes, the primary-key setting, the pull stream, and bad input.
//!
//! Each test runs on SQLite and on PostgreSQL (`sqlite::…`, `postgres::…`, see
//! `common::on_both_backends`).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::{on_both_backends, put, put_on, Backend, Reply, SseReader, TestServer};
use serde_json::{json, Value};
use tidesync_protocol::{
    ClientId, CollectionName, Hlc, Mutation, Op, PushOutcome, RecordId, RecordKey, SpaceName,
};
use tidesync_server::storage::{PushInput, PushOrigin, Storage};
use tidesync_server::{CompatSettings, MergeRules, Policies, Policy};
use tower::ServiceExt;

const WAIT: Duration = Duration::from_secs(5);
const BASE: &str = "/compat/rxdb/v1/shared/todos";

async fn get(server: &TestServer, token: &str, path: &str) -> Reply {
    server
        .call(Method::GET, path, Some(token), Body::empty())
        .await
}

/// A pull page of `BASE` after `checkpoint` (none: the first pull).
async fn pull(server: &TestServer, token: &str, limit: u32, checkpoint: Option<&Value>) -> Reply {
    let mut path = format!("{BASE}/pull?limit={limit}");
    if let Some(checkpoint) = checkpoint {
        path.push_str(&format!("&checkpoint={}", encode(&checkpoint.to_string())));
    }
    get(server, token, &path).await
}

/// `encodeURIComponent`, for the characters a checkpoint has.
fn encode(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' | '~' => c.to_string(),
            c => format!("%{:02X}", c as u32),
        })
        .collect()
}

async fn push(server: &TestServer, token: &str, rows: Value) -> Reply {
    server.post(&format!("{BASE}/push"), token, &rows).await
}

/// Every document of `BASE`, pulled page by page with `limit`; also the last checkpoint.
async fn pull_everything(server: &TestServer, token: &str, limit: u32) -> (Vec<Value>, Value) {
    let mut documents = Vec::new();
    let mut checkpoint: Option<Value> = None;
    loop {
        let reply = pull(server, token, limit, checkpoint.as_ref()).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let page = reply.json["documents"]
            .as_array()
            .expect("documents")
            .clone();
        assert!(page.len() <= limit as usize, "{}", reply.text);
        let done = page.len() < limit as usize;
        documents.extend(page);
        checkpoint = Some(reply.json["checkpoint"].clone());
        if done {
            return (documents, checkpoint.expect("a checkpoint"));
        }
    }
}

/// The native view of the records of `shared`, by id: (document, deleted).
async fn native(server: &TestServer, token: &str) -> BTreeMap<String, (Value, bool)> {
    server
        .pull_all(token, &["shared"])
        .await
        .into_iter()
        .filter(|c| c["collection"] == "todos")
        .map(|c| {
            let id = c["id"].as_str().expect("id").to_owned();
            (id, (c["doc"].clone(), c["deleted"] == true))
        })
        .collect()
}

async fn version(server: &TestServer) -> u64 {
    let space = SpaceName::new("shared").expect("space");
    server
        .storage
        .space_versions(&[space])
        .await
        .expect("versions")[0]
}

fn doc(id: &str, title: &str) -> Value {
    json!({"id": id, "title": title, "done": false, "_deleted": false,
           "_meta": {"lwt": 1700000000000.5_f64}, "_rev": "1-abc", "_attachments": {}})
}

fn row(assumed: Value, new: Value) -> Value {
    json!({"assumedMasterState": assumed, "newDocumentState": new})
}

async fn a_pushed_document_is_a_native_record_and_pages_follow_the_space_version(backend: Backend) {
    let Some(server) = TestServer::new_on(backend).await else {
        return;
    };
    let alice = server.token("alice", &["shared"], &[]);
    // Five RxDB documents, with native writes to another collection in between.
    for i in 0..5 {
        let id = format!("t{i}");
        let reply = push(&server, &alice, json!([row(Value::Null, doc(&id, "x"))])).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(reply.json, json!([]));
        let other = vec![put(1, 1, "shared", "notes", &id, json!({"n": i}))];
        assert_eq!(
            server
                .push(&alice, &format!("native{i}"), other)
                .await
                .status,
            StatusCode::OK
        );
    }
    // Stored as the data alone: no primary key, no RxDB fields.
    let records = native(&server, &alice).await;
    assert_eq!(records.len(), 5);
    assert_eq!(records["t3"], (json!({"title": "x", "done": false}), false));

    // Pages of 2: every document once, in version order, checkpoints exact.
    let (documents, checkpoint) = pull_everything(&server, &alice, 2).await;
    let ids: Vec<&str> = documents
        .iter()
        .map(|d| d["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["t0", "t1", "t2", "t3", "t4"]);
    assert_eq!(
        documents[0],
        json!({"id": "t0", "title": "x", "done": false, "_deleted": false})
    );
    // Nothing new: no documents, the checkpoint sent comes back.
    let reply = pull(&server, &alice, 2, Some(&checkpoint)).await;
    assert_eq!(
        reply.json,
        json!({"documents": [], "checkpoint": checkpoint})
    );

    // A document changed after its page was read comes again, at its new version.
    let reply = pull(&server, &alice, 2, None).await;
    let first_page = reply.json["checkpoint"].clone();
    let t0 = doc("t0", "x");
    assert_eq!(
        push(&server, &alice, json!([row(t0.clone(), doc("t0", "y"))]))
            .await
            .json,
        json!([])
    );
    let reply = pull(&server, &alice, 10, Some(&first_page)).await;
    let ids: Vec<&str> = reply.json["documents"]
        .as_array()
        .expect("documents")
        .iter()
        .map(|d| d["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["t2", "t3", "t4", "t0"]);
}

async fn native_writes_and_deletes_reach_rxdb_and_rxdb_deletes_reach_native(backend: Backend) {
    let Some(server) = TestServer::new_on(backend).await else {
        return;
    };
    let alice = server.token("alice", &["shared"], &[]);
    let native_writes = vec![
        put(1, 1, "shared", "todos", "a", json!({"title": "native"})),
        put(2, 2, "shared", "todos", "b", json!({"title": "doomed"})),
        json!({"seq": 3, "tx": 3, "space": "shared", "collection": "todos", "id": "b",
               "kind": "delete", "hlc": common::hlc(3), "base_version": 0}),
    ];
    let reply = server.push(&alice, "phone", native_writes).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let (documents, _) = pull_everything(&server, &alice, 100).await;
    assert_eq!(
        documents,
        [
            json!({"id": "a", "title": "native", "_deleted": false}),
            json!({"id": "b", "_deleted": true}),
        ]
    );

    // RxDB deletes `a`: it keeps the fields in its deleted document; the server does not.
    let assumed = json!({"id": "a", "title": "native", "_deleted": false, "_rev": "1-x"});
    let deleted = json!({"id": "a", "title": "native", "_deleted": true, "_rev": "2-y"});
    assert_eq!(
        push(&server, &alice, json!([row(assumed, deleted)]))
            .await
            .json,
        json!([])
    );
    let records = native(&server, &alice).await;
    assert!(records["a"].1, "deleted natively: {records:?}");
    let (documents, _) = pull_everything(&server, &alice, 100).await;
    assert_eq!(documents[1], json!({"id": "a", "_deleted": true}));

    // A deleted record is re-created from a deleted (or null) assumed state.
    let assumed = json!({"id": "a", "title": "whatever", "_deleted": true});
    assert_eq!(
        push(&server, &alice, json!([row(assumed, doc("a", "again"))]))
            .await
            .json,
        json!([])
    );
    assert_eq!(native(&server, &alice).await["a"].0["title"], "again");
}

async fn a_stale_assumed_state_is_a_conflict_that_writes_nothing(backend: Backend) {
    let Some(server) = TestServer::new_on(backend).await else {
        return;
    };
    let alice = server.token("alice", &["shared"], &[]);
    assert_eq!(
        push(
            &server,
            &alice,
            json!([row(Value::Null, doc("a", "first"))])
        )
        .await
        .json,
        json!([])
    );
    // A native client changes the same field.
    let base = version(&server).await;
    let edit = vec![put_on(
        1,
        1,
        "shared",
        "todos",
        "a",
        json!({"title": "native", "done": false}),
        base,
    )];
    assert_eq!(
        server.push(&alice, "phone", edit).await.status,
        StatusCode::OK
    );
    let before = version(&server).await;

    // RxDB, offline meanwhile, pushes its edit on the old state: conflict, nothing written.
    // `b` is new and unrelated: written (rows are decided one by one).
    let reply = push(
        &server,
        &alice,
        json!([
            row(doc("a", "first"), doc("a", "rxdb")),
            row(Value::Null, doc("b", "new"))
        ]),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.json,
        json!([{"id": "a", "title": "native", "done": false, "_deleted": false}])
    );
    assert_eq!(version(&server).await, before + 1, "only b was written");
    assert_eq!(native(&server, &alice).await["a"].0["title"], "native");

    // `null` assumed on an existing record is a conflict too.
    let reply = push(&server, &alice, json!([row(Value::Null, doc("a", "rxdb"))])).await;
    assert_eq!(reply.json[0]["title"], "native");

    // Resolved on the master state (its _meta and _rev differ: they do not count): written.
    let mut master = reply.json[0].clone();
    master["_meta"] = json!({"lwt": 1});
    master["_rev"] = json!("7-zzz");
    assert_eq!(
        push(&server, &alice, json!([row(master, doc("a", "merged"))]))
            .await
            .json,
        json!([])
    );
    assert_eq!(native(&server, &alice).await["a"].0["title"], "merged");

    // A record the server never had, assumed to exist: answered as deleted.
    let reply = push(
        &server,
        &alice,
        json!([row(doc("ghost", "x"), doc("ghost", "y"))]),
    )
    .await;
    assert_eq!(reply.json, json!([{"id": "ghost", "_deleted": true}]));
}

/// The check RxDB's rule relies on is made by storage, inside the writing transaction: a
/// compat mutation on a base older than someone else's write is refused whatever the
/// collection's policy, and one that passes is stamped above every stamp of the record.
async fn storage_decides_the_compare_and_swap_and_stamps_compat_writes(backend: Backend) {
    let rules = MergeRules {
        policies: Policies {
            default: Policy::Lww,
            per_collection: [(
                CollectionName::new("gentle").expect("name"),
                Policy::ServerWins,
            )]
            .into(),
        },
        ..MergeRules::default()
    };
    let Some(server) = TestServer::compat_on(backend, rules, CompatSettings::default()).await
    else {
        return;
    };
    let alice = server.token("alice", &["shared"], &[]);
    for collection in ["todos", "gentle"] {
        // A native write whose clock runs 30 s ahead (within the allowed skew).
        let ahead = now_ms() + 30_000;
        let native_write = json!({"seq": 1, "tx": 1, "space": "shared", "collection": collection,
            "id": "r", "kind": "put", "doc": {"v": "native"},
            "hlc": Hlc::new(ahead, 0).expect("hlc").to_string(), "base_version": 0});
        let client = format!("fast-{collection}");
        assert_eq!(
            server
                .push(&alice, &client, vec![native_write])
                .await
                .status,
            StatusCode::OK
        );
        let at = version(&server).await;
        let key = RecordKey::new(
            SpaceName::new("shared").expect("space"),
            CollectionName::new(collection).expect("collection"),
            RecordId::new("r").expect("id"),
        );
        let compat = |seq: u64, base: u64, v: &str| PushInput {
            user: "alice".into(),
            client_id: ClientId::new(format!("rxdb-test-{collection}-{seq}")).expect("id"),
            mutations: vec![Mutation {
                seq: 1,
                tx: 1,
                key: key.clone(),
                op: Op::Put {
                    doc: json!({"v": v}).as_object().expect("object").clone(),
                },
                hlc: Hlc::ZERO,
                base_version: base,
            }],
            recover_from: None,
            origin: PushOrigin::Compat,
        };
        // On a base before the native write: refused, though the policy would merge.
        let stale = server
            .storage
            .push(compat(1, at - 1, "stale"))
            .await
            .expect("push");
        assert!(
            matches!(&stale.results[0].outcome, PushOutcome::Rejected { code, .. }
                if code.as_str() == "stale_base"),
            "{collection}: {stale:?}"
        );
        // On the current base: written, and it wins over the native stamp from the future.
        let fresh = server
            .storage
            .push(compat(2, at, "compat"))
            .await
            .expect("push");
        assert!(
            matches!(fresh.results[0].outcome, PushOutcome::Applied { .. }),
            "{collection}: {fresh:?}"
        );
        let docs: Vec<Value> = server
            .pull_all(&alice, &["shared"])
            .await
            .into_iter()
            .filter(|c| c["collection"] == collection)
            .map(|c| c["doc"].clone())
            .collect();
        assert_eq!(docs, [json!({"v": "compat"})], "{collection}");
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

async fn a_resent_push_is_applied_once(backend: Backend) {
    let Some(server) = TestServer::new_on(backend).await else {
        return;
    };
    let alice = server.token("alice", &["shared"], &[]);
    let rows = json!([
        row(Value::Null, doc("a", "one")),
        row(Value::Null, doc("b", "two")),
    ]);
    assert_eq!(push(&server, &alice, rows.clone()).await.json, json!([]));
    let after_first = version(&server).await;
    // The answer was lost; RxDB sends the same rows again.
    let reply = push(&server, &alice, rows.clone()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json, json!([]));
    assert_eq!(version(&server).await, after_first);

    // Two identical pushes at once (a resend racing the first attempt): applied once.
    let rows = json!([
        row(doc("a", "one"), doc("a", "three")),
        row(doc("b", "two"), doc("b", "four"))
    ]);
    let (one, two) = tokio::join!(
        push(&server, &alice, rows.clone()),
        push(&server, &alice, rows)
    );
    assert_eq!(one.status, StatusCode::OK, "{}", one.text);
    assert_eq!(two.status, StatusCode::OK, "{}", two.text);
    assert_eq!(
        version(&server).await,
        after_first + 2,
        "{} / {}",
        one.text,
        two.text
    );
    // Whichever lost the race, it saw its own rows' states (no conflict), or they were
    // duplicates.
    for reply in [one, two] {
        for master in reply.json.as_array().expect("array") {
            assert!(["three", "four"].contains(&master["title"].as_str().expect("title")));
        }
    }
    let records = native(&server, &alice).await;
    assert_eq!(records["a"].0["title"], "three");
    assert_eq!(records["b"].0["title"], "four");
}

async fn the_primary_key_field_is_set_per_collection(backend: Backend) {
    let compat = CompatSettings {
        rxdb_primary_keys: [(
            CollectionName::new("todos").expect("name"),
            "key".to_owned(),
        )]
        .into(),
    };
    let Some(server) = TestServer::compat_on(backend, MergeRules::default(), compat).await else {
        return;
    };
    let alice = server.token("alice", &["shared"], &[]);
    let new = json!({"key": "k1", "id": 7, "title": "x", "_deleted": false});
    assert_eq!(
        push(&server, &alice, json!([row(Value::Null, new)]))
            .await
            .json,
        json!([])
    );
    // `id` is an ordinary field of this collection; `key` is the record id.
    assert_eq!(
        native(&server, &alice).await["k1"].0,
        json!({"id": 7, "title": "x"})
    );
    let (documents, _) = pull_everything(&server, &alice, 10).await;
    assert_eq!(
        documents,
        [json!({"key": "k1", "id": 7, "title": "x", "_deleted": false})]
    );
    // A document keyed by `id` only names no record here.
    let reply = push(
        &server,
        &alice,
        json!([row(Value::Null, json!({"id": "k2"}))]),
    )
    .await;
    reply.assert_error(400, "invalid_input");
    assert!(reply.text.contains("--rxdb-primary-key"), "{}", reply.text);
}

async fn the_pull_stream_sends_resync_then_the_collection_changes(backend: Backend) {
    let Some(server) = TestServer::new_on(backend).await else {
        return;
    };
    let alice = server.token("alice", &["shared"], &[]);
    assert_eq!(
        push(
            &server,
            &alice,
            json!([row(Value::Null, doc("old", "before"))])
        )
        .await
        .json,
        json!([])
    );
    let request = Request::builder()
        .uri(format!("{BASE}/pullStream"))
        .header(header::AUTHORIZATION, format!("Bearer {alice}"))
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
    let mut events = SseReader::new(response.into_body());
    assert_eq!(
        events.next(WAIT).await,
        Some(("message".to_owned(), "\"RESYNC\"".to_owned()))
    );
    // What was there before the stream opened is the pull's business, not the stream's.
    assert!(events.try_next(Duration::from_millis(300)).await.is_err());

    // Another collection of the space: no event. This collection, natively: an event.
    let other = vec![put(1, 1, "shared", "notes", "n", json!({}))];
    assert_eq!(
        server.push(&alice, "phone", other).await.status,
        StatusCode::OK
    );
    let mine = vec![put(
        2,
        2,
        "shared",
        "todos",
        "new",
        json!({"title": "live"}),
    )];
    assert_eq!(
        server.push(&alice, "phone", mine).await.status,
        StatusCode::OK
    );
    let (_, data) = events.next(WAIT).await.expect("an event");
    let event: Value = serde_json::from_str(&data).expect("JSON data");
    assert_eq!(
        event["documents"],
        json!([{"id": "new", "title": "live", "_deleted": false}])
    );
    // Its checkpoint is a pull's: nothing after it yet.
    let reply = pull(&server, &alice, 10, Some(&event["checkpoint"])).await;
    assert_eq!(reply.json["documents"], json!([]));

    // Shutdown ends the stream.
    server.state.begin_shutdown();
    assert_eq!(events.next(WAIT).await, None);
}

async fn bad_input_is_refused_and_changes_nothing(backend: Backend) {
    let limits = tidesync_server::Limits {
        max_mutations_per_push: 3,
        ..tidesync_server::Limits::default()
    };
    let Some(server) = TestServer::with_on(backend, limits, MergeRules::default()).await else {
        return;
    };
    let alice = server.token("alice", &["shared"], &["readonly"]);
    let before = version(&server).await;
    let bad_rows = [
        json!({"rows": []}),
        json!([{"newDocumentState": "text"}]),
        json!([{"newDocumentState": {"title": "no id"}}]),
        json!([{"newDocumentState": {"id": 5}}]),
        json!([{"newDocumentState": {"id": ""}}]),
        json!([{"newDocumentState": {"id": "a"}, "assumedMasterState": {"id": "b"}}]),
        json!([
            row(Value::Null, doc("a", "1")),
            row(Value::Null, doc("a", "2"))
        ]),
    ];
    for body in bad_rows {
        let reply = push(&server, &alice, body.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.text
        );
        assert!(
            ["invalid_input", "malformed_request"]
                .contains(&reply.json["code"].as_str().unwrap_or("")),
            "{body}: {}",
            reply.text
        );
    }
    let four: Vec<Value> = (0..4)
        .map(|i| row(Value::Null, doc(&format!("r{i}"), "x")))
        .collect();
    push(&server, &alice, json!(four))
        .await
        .assert_error(413, "too_large");
    let deep = (0..70).fold(json!(1), |inner, _| json!({"x": inner}));
    push(
        &server,
        &alice,
        json!([row(Value::Null, json!({"id": "deep", "d": deep}))]),
    )
    .await
    .assert_error(400, "invalid_input");
    for path in [
        format!("{BASE}/pull?checkpoint=notjson"),
        format!("{BASE}/pull?checkpoint=%7B%22version%22%3A-1%7D"),
        format!("{BASE}/pull?limit=many"),
        "/compat/rxdb/v1/bad%20space/todos/pull".to_owned(),
        "/compat/rxdb/v1/shared/bad%20collection/pull".to_owned(),
    ] {
        get(&server, &alice, &path)
            .await
            .assert_error(400, "invalid_input");
    }
    get(
        &server,
        &alice,
        &format!("{BASE}/pull?checkpoint=%7B%22version%22%3A99%7D"),
    )
    .await
    .assert_error(409, "cursor_reset");
    // Auth and grants as the native protocol.
    server
        .call(Method::GET, &format!("{BASE}/pull"), None, Body::empty())
        .await
        .assert_error(401, "unauthorized");
    let bob = server.token("bob", &["elsewhere"], &[]);
    get(&server, &bob, &format!("{BASE}/pull"))
        .await
        .assert_error(403, "forbidden");
    get(&server, &bob, &format!("{BASE}/pullStream"))
        .await
        .assert_error(403, "forbidden");
    server
        .post(
            "/compat/rxdb/v1/readonly/todos/push",
            &alice,
            &json!([row(Value::Null, doc("a", "1"))]),
        )
        .await
        .assert_error(403, "forbidden");
    server
        .call(
            Method::DELETE,
            &format!("{BASE}/push"),
            Some(&alice),
            Body::empty(),
        )
        .await
        .assert_error(405, "method_not_allowed");
    assert_eq!(version(&server).await, before, "nothing was written");
}

on_both_backends!(
    a_pushed_document_is_a_native_record_and_pages_follow_the_space_version,
    native_writes_and_deletes_reach_rxdb_and_rxdb_deletes_reach_native,
    a_stale_assumed_state_is_a_conflict_that_writes_nothing,
    storage_decides_the_compare_and_swap_and_stamps_compat_writes,
    a_resent_push_is_applied_once(flavor = "multi_thread", worker_threads = 2),
    the_primary_key_field_is_set_per_collection,
    the_pull_stream_sends_resync_then_the_collection_changes,
    bad_input_is_refused_and_changes_nothing,
);
