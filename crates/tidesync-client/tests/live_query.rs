//! Live queries: the first result at once, then an update with the diff whenever a local
//! write, a pulled page, a rolled-back rejection, a resolved conflict or a base reset changes
//! the result; bursts coalesced; nothing for unchanged results or other collections.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use tidesync_client::{
    Client, ClientConfig, ClientEvent, CollectionName, Durability, LiveQuery, Query, QueryUpdate,
    Reachability, RecordId, Resolution, StaticToken, StoreError,
};
use tidesync_server::MergeRules;

const T: Duration = Duration::from_secs(20);
/// How long "nothing more is delivered" is watched for.
const QUIET: Duration = Duration::from_millis(300);

fn query(collection: &str, json: serde_json::Value) -> Query {
    Query::from_json(space(), CollectionName::new(collection).unwrap(), &json).unwrap()
}

/// Open tasks of project p1, by due date.
fn open_tasks() -> Query {
    query(
        "todos",
        json!({"selector": {"project": "p1", "done": false}, "sort": [{"due": "asc"}]}),
    )
}

fn local(dir: &std::path::Path) -> Client {
    let mut config = ClientConfig::local(dir.join("local.db"));
    config.store.durability = Durability::Normal;
    Client::open(config).unwrap()
}

fn ids(ids: &[RecordId]) -> Vec<&str> {
    ids.iter().map(RecordId::as_str).collect()
}

fn order(update: &QueryUpdate) -> Vec<&str> {
    update.records.iter().map(|r| r.key.id.as_str()).collect()
}

fn next(live: &LiveQuery) -> QueryUpdate {
    live.recv_timeout(T).expect("an update")
}

fn quiet(live: &LiveQuery) {
    assert_eq!(live.recv_timeout(QUIET), None, "nothing more was expected");
}

fn task(project: &str, done: bool, due: u32) -> tidesync_client::Doc {
    doc(json!({"project": project, "done": done, "due": due}))
}

#[test]
fn the_result_comes_at_once_and_each_local_write_that_changes_it_delivers_the_diff() {
    let dir = tempfile::tempdir().unwrap();
    let client = local(dir.path());
    client
        .put(&key("todos", "a"), task("p1", false, 3))
        .unwrap();
    client
        .put(&key("todos", "b"), task("p1", false, 1))
        .unwrap();
    client.put(&key("todos", "c"), task("p1", true, 2)).unwrap();

    let live = client.watch(open_tasks()).unwrap();
    let first = next(&live);
    assert_eq!(order(&first), ["b", "a"]);
    assert_eq!(ids(&first.added), ["b", "a"]);
    assert!(first.removed.is_empty() && first.changed.is_empty());

    // A new match.
    client
        .put(&key("todos", "d"), task("p1", false, 2))
        .unwrap();
    let u = next(&live);
    assert_eq!(order(&u), ["b", "d", "a"]);
    assert_eq!(ids(&u.added), ["d"]);
    assert!(u.removed.is_empty() && u.changed.is_empty());

    // Closing a task takes it out.
    client
        .patch(&key("todos", "b"), doc(json!({"done": true})))
        .unwrap();
    let u = next(&live);
    assert_eq!(order(&u), ["d", "a"]);
    assert_eq!(ids(&u.removed), ["b"]);

    // A change inside the result, which also reorders it.
    client
        .patch(&key("todos", "a"), doc(json!({"due": 0})))
        .unwrap();
    let u = next(&live);
    assert_eq!(order(&u), ["a", "d"]);
    assert_eq!(ids(&u.changed), ["a"]);
    assert!(u.added.is_empty() && u.removed.is_empty());

    // A delete.
    client.delete(&key("todos", "d")).unwrap();
    let u = next(&live);
    assert_eq!(ids(&u.removed), ["d"]);

    // Writes that leave the result as it is deliver nothing: a record it does not select, a
    // record of another collection, a document written again unchanged.
    client
        .put(&key("todos", "e"), task("p2", false, 1))
        .unwrap();
    client
        .put(&key("notes", "n"), task("p1", false, 1))
        .unwrap();
    client
        .put(&key("todos", "a"), task("p1", false, 0))
        .unwrap();
    quiet(&live);
    assert_eq!(client.query(&open_tasks()).unwrap().ids().len(), 1);
}

#[test]
fn a_burst_of_writes_costs_one_evaluation_and_updates_run_on_the_live_thread() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ClientConfig::local(dir.path().join("burst.db"));
    config.store.durability = Durability::Normal;
    // Long enough that the whole burst falls in one window on a slow machine.
    config.live_query_throttle = Duration::from_millis(750);
    let client = Client::open(config).unwrap();
    let (tx, rx) = channel();
    let _watch = client
        .watch_with(open_tasks(), move |update| {
            let thread = std::thread::current().name().map(str::to_owned);
            tx.send((thread, update)).is_ok()
        })
        .unwrap();
    let (thread, first) = rx.recv_timeout(T).unwrap();
    assert_eq!(thread.as_deref(), Some("tidesync-live"));
    assert!(first.records.is_empty());
    let before = client.live_query_stats();

    for i in 0..50 {
        client
            .put(&key("todos", &format!("t{i:02}")), task("p1", false, i))
            .unwrap();
    }
    let (_, update) = rx.recv_timeout(T).unwrap();
    assert_eq!(update.records.len(), 50);
    assert_eq!(update.added.len(), 50);
    assert_eq!(rx.recv_timeout(QUIET).ok().map(|(_, u)| u), None);
    let after = client.live_query_stats();
    assert_eq!(after.passes - before.passes, 1, "{before:?} -> {after:?}");
    assert_eq!(after.evaluations - before.evaluations, 1);
    assert_eq!(after.deliveries - before.deliveries, 1);
}

#[test]
fn only_queries_over_a_changed_collection_run_again_and_equal_queries_run_once() {
    let dir = tempfile::tempdir().unwrap();
    let client = local(dir.path());
    let todos = client.watch(open_tasks()).unwrap();
    let same = client.watch(open_tasks()).unwrap();
    let notes = client.watch(query("notes", json!({}))).unwrap();
    for live in [&todos, &same, &notes] {
        assert!(next(live).records.is_empty());
    }
    let before = client.live_query_stats();
    assert_eq!(before.watching, 3);

    client
        .put(&key("todos", "a"), task("p1", false, 1))
        .unwrap();
    assert_eq!(order(&next(&todos)), ["a"]);
    assert_eq!(order(&next(&same)), ["a"]);
    quiet(&notes);
    let after = client.live_query_stats();
    assert_eq!(after.evaluations - before.evaluations, 1, "{after:?}");
    assert_eq!(after.deliveries - before.deliveries, 2);

    // Dropping a live query stops it; the others go on.
    drop(same);
    assert_eq!(client.live_query_stats().watching, 2);
    client
        .put(&key("notes", "n"), doc(json!({"text": "hi"})))
        .unwrap();
    assert_eq!(order(&next(&notes)), ["n"]);
    quiet(&todos);
}

#[test]
fn a_query_that_cannot_run_is_refused_at_watch_naming_the_part() {
    let dir = tempfile::tempdir().unwrap();
    let client = local(dir.path());
    let mut bad = open_tasks();
    bad.after = Some("not-a-cursor".into());
    let err = client.watch(bad).unwrap_err();
    assert_eq!(err.code(), "invalid_input");
    assert!(err.to_string().contains("at after"), "{err}");
    let mut bad = open_tasks();
    bad.limit = Some(0);
    let err = client.watch(bad).unwrap_err();
    assert!(
        matches!(err, tidesync_client::ClientError::Store(StoreError::InvalidQuery(ref e)) if e.at == "limit"),
        "{err}"
    );
    assert_eq!(client.live_query_stats().watching, 0);
}

#[test]
fn closing_the_client_ends_its_live_queries() {
    let dir = tempfile::tempdir().unwrap();
    let client = local(dir.path());
    let live = client.watch(open_tasks()).unwrap();
    next(&live);
    client.close();
    assert_eq!(live.recv_timeout(T), None);
}

// ---- changes that come from the sync thread ------------------------------------------------

#[test]
fn a_pulled_page_updates_the_live_query_and_confirmation_clears_pending() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), MergeRules::default());
    let token = server.token("alice");
    let a = open_client(dir.path(), "a", &server.url(), &token);
    let b = open_client(dir.path(), "b", &server.url(), &token);
    let live = a.watch(open_tasks()).unwrap();
    assert!(next(&live).records.is_empty());

    b.put(&key("todos", "from-b"), task("p1", false, 1))
        .unwrap();
    b.wait_synced(T).unwrap();
    let u = next(&live);
    assert_eq!(ids(&u.added), ["from-b"]);
    assert!(!u.records[0].pending);

    // A local write shows pending at once (paused, so the confirmation cannot beat the
    // live query to it), then the confirmation flips it.
    a.pause();
    a.put(&key("todos", "from-a"), task("p1", false, 2))
        .unwrap();
    let u = next(&live);
    assert_eq!(ids(&u.added), ["from-a"]);
    assert!(u.records[1].pending);
    a.resume();
    a.wait_synced(T).unwrap();
    let u = loop {
        let u = next(&live);
        if !u.records[1].pending {
            break u;
        }
    };
    assert_eq!(ids(&u.changed), ["from-a"]);
}

#[test]
fn a_rejected_write_rolled_back_leaves_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), strict_orders());
    let token = server.token("alice");
    let a = open_client(dir.path(), "a", &server.url(), &token);
    let b = open_client(dir.path(), "b", &server.url(), &token);
    let order_key = key("orders", "o1");
    a.put(&order_key, doc(json!({"qty": 1}))).unwrap();
    a.wait_synced(T).unwrap();
    b.wait_until(T, |_| b.get(&order_key).unwrap().is_some())
        .unwrap();
    b.wait_synced(T).unwrap();
    b.set_network(Reachability::Offline);
    a.patch(&order_key, doc(json!({"qty": 2}))).unwrap();
    a.wait_synced(T).unwrap();

    let big = query("orders", json!({"selector": {"qty": {"$gte": 5}}}));
    let live = b.watch(big).unwrap();
    assert!(next(&live).records.is_empty());
    b.patch(&order_key, doc(json!({"qty": 5}))).unwrap(); // from a stale base: strict refuses
    let u = next(&live);
    assert_eq!(ids(&u.added), ["o1"]);
    assert!(u.records[0].pending);

    b.set_network(Reachability::Online);
    let u = next(&live);
    assert_eq!(ids(&u.removed), ["o1"], "{u:?}");
    assert_eq!(b.rejections().unwrap().len(), 1);
    quiet(&live);
}

#[test]
fn resolving_a_conflict_updates_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), MergeRules::default());
    let token = server.token("alice");
    let a = open_client(dir.path(), "a", &server.url(), &token);
    let b = open_client(dir.path(), "b", &server.url(), &token);
    let k = key("todos", "contested");
    a.put(
        &k,
        doc(json!({"project": "p1", "done": false, "title": "original"})),
    )
    .unwrap();
    a.wait_synced(T).unwrap();
    wait_for("b has the record", T, || view(&b, &k).is_some());
    b.wait_synced(T).unwrap();
    a.set_network(Reachability::Offline);
    b.set_network(Reachability::Offline);
    a.patch(&k, doc(json!({"title": "a's title"}))).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    b.patch(&k, doc(json!({"title": "b's title"}))).unwrap(); // later: b wins under lww
    a.set_network(Reachability::Online);
    a.wait_synced(T).unwrap();

    let live = b.watch(open_tasks()).unwrap();
    assert_eq!(next(&live).records[0].doc["title"], "b's title");
    b.set_network(Reachability::Online);
    wait_for("b sees its conflict", T, || {
        !b.conflicts().unwrap().is_empty()
    });
    b.wait_synced(T).unwrap();
    // The push and pull in between, delivered until the result settles.
    while live.recv_timeout(QUIET).is_some() {}

    let conflict = b.conflicts().unwrap().remove(0);
    b.resolve_conflict(conflict.id, Resolution::KeepServer)
        .unwrap();
    let u = next(&live);
    assert_eq!(ids(&u.changed), ["contested"]);
    assert_eq!(u.records[0].doc["title"], "a's title");
}

#[test]
fn a_server_restored_from_backup_resets_the_base_and_the_result_follows() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(dir.path(), MergeRules::default());
    let token = server.token("alice");
    let a = open_client(dir.path(), "a", &server.url(), &token);
    a.put(&key("todos", "old"), task("p1", false, 1)).unwrap();
    a.wait_synced(T).unwrap();

    // A backup, then more work the backup does not hold.
    server.stop();
    let backup = dir.path().join("backup.db");
    copy_database(&server.db, &backup);
    server.restart();
    a.put(&key("todos", "lost"), task("p1", false, 2)).unwrap();
    a.wait_synced(T).unwrap();
    let events = a.subscribe();
    let live = a.watch(open_tasks()).unwrap();
    assert_eq!(order(&next(&live)), ["old", "lost"]);

    // The server comes back from the backup: a's cursor is ahead of it.
    server.stop();
    copy_database(&backup, &server.db);
    server.restart();
    a.sync_now();
    wait_for("the base reset", T, || {
        drain(&events).contains(&ClientEvent::BaseReset)
    });
    a.wait_synced(T).unwrap();
    // The result may pass through an empty one (the base dropped, before the download).
    let mut removed = Vec::new();
    loop {
        let u = next(&live);
        removed.extend(u.removed.iter().map(|id| id.as_str().to_owned()));
        if order(&u) == ["old"] {
            break;
        }
    }
    assert!(removed.contains(&"lost".to_owned()), "{removed:?}");
}

/// Copies a stopped server's SQLite database with its WAL, replacing what `to` held.
fn copy_database(from: &std::path::Path, to: &std::path::Path) {
    std::fs::copy(from, to).unwrap();
    for suffix in ["-wal", "-shm"] {
        let (f, t) = (with_suffix(from, suffix), with_suffix(to, suffix));
        let _ = std::fs::remove_file(&t);
        if f.exists() {
            std::fs::copy(&f, &t).unwrap();
        }
    }
}

fn with_suffix(path: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

#[test]
fn many_watchers_of_one_client_share_one_thread_and_a_token_is_not_needed_for_it() {
    // Live queries work on a client whose sync cannot even authenticate: they read the
    // local view alone.
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), MergeRules::default());
    let client = Client::open(client_config(
        dir.path(),
        "untrusted",
        &server.url(),
        Arc::new(StaticToken("tsk_wrong".into())),
    ))
    .unwrap();
    let lives: Vec<LiveQuery> = (0..20)
        .map(|i| {
            client
                .watch(query("todos", json!({"selector": {"due": {"$gte": i}}})))
                .unwrap()
        })
        .collect();
    for live in &lives {
        assert!(next(live).records.is_empty());
    }
    client
        .put(&key("todos", "x"), task("p1", false, 10))
        .unwrap();
    for (i, live) in lives.iter().enumerate() {
        if i <= 10 {
            assert_eq!(order(&next(live)), ["x"]);
        } else {
            quiet(live);
        }
    }
    let stats = client.live_query_stats();
    assert_eq!(stats.watching, 20);
}

#[test]
fn a_callback_that_returns_false_is_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let client = local(dir.path());
    let (tx, rx) = channel();
    let watch = client
        .watch_with(open_tasks(), move |update| {
            let _ = tx.send(update);
            false // the receiver went away (a Dart isolate after a hot restart)
        })
        .unwrap();
    assert!(rx.recv_timeout(T).unwrap().records.is_empty());
    wait_for("the watcher is forgotten", T, || {
        client.live_query_stats().watching == 0
    });
    client
        .put(&key("todos", "a"), task("p1", false, 1))
        .unwrap();
    assert!(rx.recv_timeout(QUIET).is_err(), "nothing after false");
    drop(watch); // dropping a forgotten watch is harmless
}

#[test]
fn commits_of_other_connections_reach_live_queries() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ClientConfig::local(dir.path().join("shared.db"));
    config.external_writes_poll = Some(Duration::from_millis(20));
    let client = Client::open(config).unwrap();
    let live = client.watch(open_tasks()).unwrap();
    assert!(next(&live).records.is_empty());
    // Another connection to the file (as another process would have) writes.
    let mut other = tidesync_store::Store::open(
        dir.path().join("shared.db"),
        tidesync_client::StoreConfig {
            session: tidesync_client::SessionRestore::Keep,
            ..Default::default()
        },
    )
    .unwrap();
    other.put(&key("todos", "x"), task("p1", false, 1)).unwrap();
    assert_eq!(ids(&next(&live).added), ["x"]);
}
