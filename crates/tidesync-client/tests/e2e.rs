//! End-to-end: real clients against a real server on a loopback port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use tidesync_client::{Client, ClientEvent, Connectivity, Phase, Reachability, TokenProvider};
use tidesync_protocol::{ErrorCode, Winner};
use tidesync_server::MergeRules;
use tidesync_store::{MutationState, Resolution};

const T: Duration = Duration::from_secs(20);

/// Says offline and waits until the client is (nothing in flight can land after this).
fn go_offline(client: &Client) {
    client.set_network(Reachability::Offline);
    wait_for("offline", T, || {
        client.status().is_some_and(|s| s.phase == Phase::Offline)
    });
}

#[test]
fn offline_edits_sync_on_reconnect_and_reach_the_other_device() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), MergeRules::default());
    let token = server.token("alice");
    let a = open_client(dir.path(), "a", &server.url(), &token);
    let b = open_client(dir.path(), "b", &server.url(), &token);
    a.wait_synced(T).unwrap();
    go_offline(&a);
    for i in 0..3 {
        a.put(
            &key("todos", &format!("t{i}")),
            doc(json!({"title": format!("todo {i}")})),
        )
        .unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.version(), 0, "nothing leaves an offline device");
    assert_eq!(a.status().unwrap().pending, 3);
    a.set_network(Reachability::Online);
    a.wait_synced(T).unwrap();
    assert_eq!(server.version(), 3);
    wait_for("b receives a's todos", T, || {
        view(&b, &key("todos", "t2")).is_some()
    });
    assert_eq!(
        view(&b, &key("todos", "t0")),
        Some(json!({"title": "todo 0"}))
    );
    assert!(!b.get(&key("todos", "t0")).unwrap().unwrap().pending);
}

#[test]
fn concurrent_edits_to_different_fields_both_survive() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), MergeRules::default());
    let token = server.token("alice");
    let a = open_client(dir.path(), "a", &server.url(), &token);
    let b = open_client(dir.path(), "b", &server.url(), &token);
    let k = key("todos", "shared");
    a.put(&k, doc(json!({"title": "t", "done": false})))
        .unwrap();
    a.wait_synced(T).unwrap();
    wait_for("b has the record", T, || view(&b, &k).is_some());
    go_offline(&a);
    go_offline(&b);
    a.patch(&k, doc(json!({"title": "renamed by a"}))).unwrap();
    b.patch(&k, doc(json!({"done": true}))).unwrap();
    a.set_network(Reachability::Online);
    b.set_network(Reachability::Online);
    let both = json!({"title": "renamed by a", "done": true});
    wait_for("both converge", T, || {
        view(&a, &k) == Some(both.clone()) && view(&b, &k) == Some(both.clone())
    });
    assert!(a.conflicts().unwrap().is_empty() && b.conflicts().unwrap().is_empty());
}

#[test]
fn a_same_field_edit_is_a_visible_conflict_that_the_app_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), MergeRules::default());
    let token = server.token("alice");
    let a = open_client(dir.path(), "a", &server.url(), &token);
    let b = open_client(dir.path(), "b", &server.url(), &token);
    let k = key("todos", "contested");
    a.put(&k, doc(json!({"title": "original"}))).unwrap();
    a.wait_synced(T).unwrap();
    wait_for("b has the record", T, || view(&b, &k).is_some());
    b.wait_synced(T).unwrap();
    go_offline(&a);
    go_offline(&b);
    a.patch(&k, doc(json!({"title": "a's title"}))).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    b.patch(&k, doc(json!({"title": "b's title"}))).unwrap(); // later stamp: b wins under lww
    let events = b.subscribe();
    a.set_network(Reachability::Online);
    a.wait_synced(T).unwrap();
    b.set_network(Reachability::Online);
    wait_for("b sees its conflict", T, || {
        !b.conflicts().unwrap().is_empty()
    });
    let mut seen = Vec::new();
    wait_for("the conflict event", T, || {
        seen.extend(events.try_iter());
        seen.iter()
            .any(|e| matches!(e, ClientEvent::Conflict { .. }))
    });
    let conflict = b.conflicts().unwrap().remove(0);
    assert_eq!(conflict.key, k);
    assert_eq!(conflict.fields[0].field, "title");
    assert_eq!(conflict.fields[0].server, Some(json!("a's title")));
    assert_eq!(conflict.fields[0].local, Some(json!("b's title")));
    assert_eq!(conflict.fields[0].winner, Winner::Local);
    wait_for("b's status counts it", T, || {
        b.status().unwrap().conflicts == 1
    });
    // b decides a was right.
    b.resolve_conflict(conflict.id, Resolution::KeepServer)
        .unwrap();
    let want = json!({"title": "a's title"});
    wait_for("everyone converges on a's title", T, || {
        view(&a, &k) == Some(want.clone()) && view(&b, &k) == Some(want.clone())
    });
    assert!(b.conflicts().unwrap().is_empty());
}

#[test]
fn a_strict_rejection_surfaces_and_later_mutations_keep_flowing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), strict_orders());
    let token = server.token("alice");
    let a = open_client(dir.path(), "a", &server.url(), &token);
    let b = open_client(dir.path(), "b", &server.url(), &token);
    let order = key("orders", "o1");
    a.put(&order, doc(json!({"qty": 1}))).unwrap();
    a.wait_synced(T).unwrap();
    wait_for("b has the order", T, || view(&b, &order).is_some());
    b.wait_synced(T).unwrap();
    go_offline(&b);
    a.patch(&order, doc(json!({"qty": 2}))).unwrap();
    a.wait_synced(T).unwrap();
    let events = b.subscribe();
    let stale = b.patch(&order, doc(json!({"qty": 5}))).unwrap();
    let later = b
        .put(&key("todos", "after"), doc(json!({"title": "flows"})))
        .unwrap();
    b.set_network(Reachability::Online);
    wait_for("the stale edit is rejected", T, || {
        matches!(
            b.mutation_state(stale.seq).unwrap(),
            Some(MutationState::Rejected { .. })
        )
    });
    wait_for("the later write is confirmed", T, || {
        b.mutation_state(later.seq).unwrap() == Some(MutationState::Confirmed)
    });
    let rejection = b.rejections().unwrap().remove(0);
    assert_eq!(rejection.code, ErrorCode::StaleBase);
    let mut seen = Vec::new();
    wait_for("the rejection event", T, || {
        seen.extend(events.try_iter());
        seen.iter().any(|e| {
            matches!(
                e,
                ClientEvent::Rejected {
                    code: ErrorCode::StaleBase,
                    ..
                }
            )
        })
    });
    wait_for("b shows the server's order again", T, || {
        view(&b, &order) == Some(json!({"qty": 2}))
    });
    assert_eq!(b.status().unwrap().rejections, 1);
    // The user re-applies the edit on the fresh state: discard, write again.
    b.discard_rejection(rejection.seq).unwrap();
    b.patch(&order, doc(json!({"qty": 5}))).unwrap();
    wait_for("a sees the new quantity", T, || {
        view(&a, &order) == Some(json!({"qty": 5}))
    });
}

#[test]
fn a_schema_violation_reaches_the_client_with_its_path_and_later_writes_still_sync() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), todo_schema());
    let token = server.token("alice");
    let a = open_client(dir.path(), "a", &server.url(), &token);
    let events = a.subscribe();
    let (empty, milk) = (key("todos", "empty"), key("todos", "milk"));
    let bad = a.put(&empty, doc(json!({"title": ""}))).unwrap();
    let good = a.put(&milk, doc(json!({"title": "milk"}))).unwrap();
    wait_for("the write off its schema is rejected", T, || {
        matches!(
            a.mutation_state(bad.seq).unwrap(),
            Some(MutationState::Rejected { .. })
        )
    });
    let reason = "/title: \"\" is shorter than 1 character";
    let Some(MutationState::Rejected { code, message }) = a.mutation_state(bad.seq).unwrap() else {
        unreachable!()
    };
    assert_eq!(code, ErrorCode::SchemaViolation);
    assert!(message.ends_with(reason), "{message}");
    let rejection = a.rejections().unwrap().remove(0);
    assert_eq!(
        (rejection.seq, rejection.code, rejection.message.as_str()),
        (bad.seq, ErrorCode::SchemaViolation, message.as_str())
    );
    let mut seen = Vec::new();
    wait_for("the rejection event, with its reason", T, || {
        seen.extend(events.try_iter());
        seen.iter().any(|e| {
            matches!(
                e,
                ClientEvent::Rejected { code: ErrorCode::SchemaViolation, message, .. }
                    if message.ends_with(reason)
            )
        })
    });
    assert_eq!(view(&a, &empty), None, "its local effect was rolled back");
    wait_for("the write beside it is confirmed", T, || {
        a.mutation_state(good.seq).unwrap() == Some(MutationState::Confirmed)
    });
    // The queue keeps flowing: later writes, and the rejected one fixed, reach the server.
    a.discard_rejection(rejection.seq).unwrap();
    a.put(&empty, doc(json!({"title": "no longer empty"})))
        .unwrap();
    a.patch(&milk, doc(json!({"done": true}))).unwrap();
    a.wait_synced(T).unwrap();
    let on_server = server_docs(&server.snapshot());
    let doc_of =
        |id: &str| on_server[&(SPACE.to_owned(), "todos".to_owned(), id.to_owned())].clone();
    assert_eq!(
        doc_of("empty"),
        Some(doc(json!({"title": "no longer empty"})))
    );
    assert_eq!(
        doc_of("milk"),
        Some(doc(json!({"title": "milk", "done": true})))
    );
    assert_eq!(a.status().unwrap().rejections, 0);
}

struct Rotating {
    refreshed: AtomicUsize,
    good: String,
}

impl TokenProvider for Rotating {
    fn token(&self) -> Option<String> {
        Some("tsk_expired".into())
    }
    fn refresh(&self) -> Option<String> {
        self.refreshed.fetch_add(1, Ordering::SeqCst);
        Some(self.good.clone())
    }
}

#[test]
fn a_401_asks_the_token_provider_once_and_then_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), MergeRules::default());
    let tokens = Arc::new(Rotating {
        refreshed: AtomicUsize::new(0),
        good: server.token("alice"),
    });
    let client = Client::open(client_config(
        dir.path(),
        "a",
        &server.url(),
        tokens.clone(),
    ))
    .unwrap();
    client
        .put(&key("todos", "t"), doc(json!({"x": 1})))
        .unwrap();
    client.wait_synced(T).unwrap();
    assert_eq!(server.version(), 1);
    assert_eq!(
        tokens.refreshed.load(Ordering::SeqCst),
        1,
        "one refresh, then the fresh token is reused"
    );
}

#[test]
fn the_status_sequence_tells_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), MergeRules::default());
    let token = server.token("alice");
    let mut config = client_config(
        dir.path(),
        "a",
        &server.url(),
        Arc::new(tidesync_client::StaticToken(token)),
    );
    config.start_online = false; // paused at open: queue work first
    config.push_batch = 10;
    let client = Client::open(config).unwrap();
    let events = client.subscribe();
    client.set_network(Reachability::Offline);
    client
        .transaction(|tx| {
            for i in 0..35 {
                tx.put(&key("todos", &format!("t{i:02}")), doc(json!({"i": i})))?;
            }
            Ok(())
        })
        .unwrap();
    // 35 mutations in one transaction: a single push carries it whole. Add three more
    // single writes so the upload has several batches.
    for i in 0..30 {
        client
            .put(&key("notes", &format!("n{i:02}")), doc(json!({"i": i})))
            .unwrap();
    }
    client.resume();
    client.set_network(Reachability::Online);
    client.wait_synced(T).unwrap();
    let statuses: Vec<_> = events
        .try_iter()
        .filter_map(|e| match e {
            ClientEvent::Status(s) => Some(s),
            _ => None,
        })
        .collect();
    let mut phases: Vec<Phase> = statuses.iter().map(|s| s.phase).collect();
    phases.dedup();
    let find = |p: Phase| phases.iter().position(|x| *x == p);
    let (offline, connecting, uploading, downloading, idle) = (
        find(Phase::Offline).expect("offline"),
        find(Phase::Connecting).expect("connecting"),
        find(Phase::Uploading).expect("uploading"),
        find(Phase::Downloading).expect("downloading"),
        phases
            .iter()
            .rposition(|x| *x == Phase::Idle)
            .expect("idle"),
    );
    assert!(
        offline < connecting
            && connecting < uploading
            && uploading < downloading
            && downloading < idle,
        "{phases:?}"
    );
    let uploads: Vec<_> = statuses.iter().filter_map(|s| s.upload).collect();
    assert!(
        uploads.iter().any(|u| u.done > 0 && u.done < u.total),
        "n of N seen: {uploads:?}"
    );
    assert!(
        uploads.iter().all(|u| u.total == 65 && u.total_bytes > 0),
        "{uploads:?}"
    );
    assert!(statuses
        .iter()
        .any(|s| s.connectivity == Connectivity::Offline));
    let last = statuses.last().unwrap();
    assert_eq!(
        (last.pending, last.has_synced, last.connectivity),
        (0, true, Connectivity::Online)
    );
    assert!(last.last_synced_at_ms.is_some());
}

#[test]
fn a_restart_resumes_from_the_store_alone() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), MergeRules::default());
    let token = server.token("alice");
    let mut config = client_config(
        dir.path(),
        "a",
        &server.url(),
        Arc::new(tidesync_client::StaticToken(token.clone())),
    );
    config.start_online = false;
    let client = Client::open(config).unwrap();
    for i in 0..10 {
        client
            .put(&key("todos", &format!("t{i}")), doc(json!({"i": i})))
            .unwrap();
    }
    client.close();
    assert_eq!(server.version(), 0);
    let client = open_client(dir.path(), "a", &server.url(), &token);
    client.wait_synced(T).unwrap();
    assert_eq!(server.version(), 10);
    let snapshot = server.snapshot();
    let ids: BTreeMap<_, _> = snapshot
        .changes
        .iter()
        .map(|c| (c.id.to_string(), c.doc.clone()))
        .collect();
    assert_eq!(ids.len(), 10);
}
