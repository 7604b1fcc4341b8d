//! Echoes (protocol 2): a pulled record this client wrote last arrives as key, version and
//! seqs; the store rebuilds the server's state from its own mutations, or asks for the
//! record in full when it cannot.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{doc, key, push_all, FakeServer, TestDb};
use serde_json::json;
use tidesync_protocol::{Echo, Op, PullResponse, RecordKey};
use tidesync_store::{Page, Store};

/// One record row: id, view, base, base version, pending count.
type Row = (String, Option<String>, Option<String>, i64, i64);

/// Every column of every record, for comparing two stores.
fn records(store_path: &std::path::Path) -> Vec<Row> {
    let conn = rusqlite::Connection::open(store_path).unwrap();
    let mut stmt = conn
        .prepare("SELECT id, doc, base, base_version, pending FROM records ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .unwrap()
    .collect::<rusqlite::Result<_>>()
    .unwrap()
}

fn echo(id: &str, version: u64, from: u64, seqs: (u64, u64), count: u64) -> Echo {
    let key = key(id);
    Echo {
        space: key.space,
        collection: key.collection,
        id: key.id,
        version,
        from,
        first_seq: seqs.0,
        last_seq: seqs.1,
        count,
    }
}

/// `full` with its changes of `echoed` records replaced by `echoes`.
fn with_echoes(full: &PullResponse, echoes: Vec<Echo>) -> PullResponse {
    let echoed: Vec<RecordKey> = echoes.iter().map(Echo::key).collect();
    PullResponse {
        changes: full
            .changes
            .iter()
            .filter(|c| {
                !echoed.contains(&RecordKey::new(
                    c.space.clone(),
                    c.collection.clone(),
                    c.id.clone(),
                ))
            })
            .cloned()
            .collect(),
        echoes,
        ..full.clone()
    }
}

/// A store that wrote `a` twice and `b` once, all pushed and acknowledged; and a copy of its
/// file, to receive the same page in full.
fn written() -> (TestDb, TestDb, FakeServer) {
    let db = TestDb::new();
    let mut server = FakeServer::new();
    {
        let mut store = db.open();
        store
            .put(&key("a"), doc(json!({"n": 1, "keep": true})))
            .unwrap();
        store.put(&key("b"), doc(json!({"n": 1}))).unwrap();
        store.patch(&key("a"), doc(json!({"n": 2}))).unwrap();
        push_all(&mut store, &mut server);
    }
    let copy = TestDb::new();
    std::fs::copy(&db.path, &copy.path).unwrap();
    (db, copy, server)
}

#[test]
fn an_echo_rebuilds_exactly_the_base_a_full_change_would_store() {
    let (db, copy, server) = written();
    let full = server.pull(0, 3);
    let echoes = vec![echo("b", 2, 0, (2, 2), 1), echo("a", 3, 0, (1, 3), 2)];
    let mut store = db.open();
    let applied = store.apply_pull(&with_echoes(&full, echoes)).unwrap();
    assert_eq!(applied.echoes_rebuilt, 2);
    assert!(!applied.refetch_waiting);
    assert_eq!(applied.confirmed, [1, 2, 3]);
    assert!(store.has_synced().unwrap());
    drop(store);
    let mut reference = copy.open();
    reference.apply_pull(&full).unwrap();
    drop(reference);
    let rebuilt = records(&db.path);
    assert_eq!(rebuilt, records(&copy.path), "same base, view and counts");
    assert_eq!(rebuilt.len(), 2);
    assert!(rebuilt.iter().all(|r| r.4 == 0), "nothing pending");
}

#[test]
fn an_echo_that_cannot_be_rebuilt_waits_for_a_refetch_and_the_pull_is_not_complete() {
    let (db, _copy, server) = written();
    let full = server.pull(0, 3);
    let mut store = db.open();
    // The server counts three landed mutations of `a`; this store holds two.
    let page = with_echoes(&full, vec![echo("a", 3, 0, (1, 3), 3)]);
    let applied = store.apply_pull(&page).unwrap();
    assert!(applied.refetch_waiting);
    assert_eq!(store.records_to_refetch(10).unwrap(), [key("a")]);
    assert!(
        !store.has_synced().unwrap(),
        "a pull with a refetch waiting is not complete"
    );
    let record = store.get(&key("a")).unwrap().unwrap();
    assert_eq!(
        record.doc["n"],
        json!(2),
        "the view keeps the record's own writes"
    );
    assert!(
        record.pending,
        "its mutations stay until the server's state is here"
    );

    // The next pull asks for it in full and gets it.
    let refetched = [key("a")];
    let mut answer = server.pull(3, 3);
    answer.changes = full
        .changes
        .iter()
        .filter(|c| c.id.as_str() == "a")
        .cloned()
        .collect();
    let applied = store
        .apply_pull_page(Page {
            response: &answer,
            refetched: &refetched,
        })
        .unwrap();
    assert!(!applied.refetch_waiting);
    assert!(store.records_to_refetch(10).unwrap().is_empty());
    assert!(store.has_synced().unwrap());
    assert!(!store.get(&key("a")).unwrap().unwrap().pending);
}

#[test]
fn an_echo_on_a_base_other_than_its_own_is_fetched_in_full() {
    let db = TestDb::new();
    let mut server = FakeServer::new();
    let mut store = db.open();
    // Bob wrote `a` at version 1; this store never pulled it, then wrote on top.
    server.write(
        &key("a"),
        Op::Put {
            doc: doc(json!({"bob": 1})),
        },
        10,
        "bob",
    );
    store.patch(&key("a"), doc(json!({"mine": 1}))).unwrap();
    push_all(&mut store, &mut server);
    let full = server.pull(0, 1);
    // A (wrong) server says the chain started on version 1: this store's base is not there.
    let applied = store
        .apply_pull(&with_echoes(&full, vec![echo("a", 2, 1, (1, 1), 1)]))
        .unwrap();
    assert!(applied.refetch_waiting);
    assert_eq!(store.records_to_refetch(10).unwrap(), [key("a")]);
}

#[test]
fn a_base_reset_forgets_what_was_waiting() {
    let (db, _copy, server) = written();
    let mut store: Store = db.open();
    store
        .apply_pull(&with_echoes(
            &server.pull(0, 3),
            vec![echo("a", 3, 0, (1, 3), 5)],
        ))
        .unwrap();
    assert_eq!(store.records_to_refetch(10).unwrap().len(), 1);
    store.reset_base().unwrap();
    assert!(
        store.records_to_refetch(10).unwrap().is_empty(),
        "everything is downloaded again"
    );
}

#[test]
fn an_echo_of_a_record_the_same_page_carried_in_full_is_already_applied() {
    let (db, _copy, server) = written();
    let full = server.pull(0, 3);
    let mut store = db.open();
    // The refetch of `a` and its echo in one page (the server sends both).
    let mut page = full.clone();
    page.echoes = vec![echo("a", 3, 0, (1, 3), 2)];
    let applied = store.apply_pull(&page).unwrap();
    assert!(!applied.refetch_waiting, "nothing left to fetch");
    assert!(store.records_to_refetch(10).unwrap().is_empty());
}
