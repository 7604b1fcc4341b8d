//! Echoes end to end: a client's own acknowledged writes come back from the server as key,
//! version and seqs (no documents), and the client still ends with exactly the server's
//! state, next to another client that got everything in full.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tidesync_server::MergeRules;

const T: Duration = Duration::from_secs(30);

#[test]
fn a_writer_confirms_its_writes_from_echoes_and_ends_with_the_servers_state() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), MergeRules::default());
    let token = server.token("alice");
    let writer = open_client(dir.path(), "writer", &server.url(), &token);
    let reader = open_client(dir.path(), "reader", &server.url(), &token);
    writer.wait_synced(T).unwrap();
    reader.wait_synced(T).unwrap();
    let changes_before = server.counter("tidesync_changes_pulled_total");

    // 300 records, some written twice in one transaction, some in separate pushes.
    writer
        .transaction(|tx| {
            for i in 0..200 {
                let key = key("todos", &format!("t{i}"));
                tx.put(
                    &key,
                    doc(json!({"title": format!("task {i}"), "done": false})),
                )?;
                if i % 3 == 0 {
                    tx.patch(&key, doc(json!({"done": true})))?;
                }
            }
            Ok(())
        })
        .unwrap();
    for i in 200..300 {
        writer
            .put(&key("todos", &format!("t{i}")), doc(json!({"title": i})))
            .unwrap();
    }
    writer.wait_synced(T).unwrap();
    wait_for("the reader to have all 300", T, || {
        client_docs(&reader, &space(), &["todos"]).len() == 300
    });
    assert!(
        server.counter("tidesync_echoes_pulled_total") >= 300,
        "the writer got its own writes back as echoes"
    );
    let in_full = server.counter("tidesync_changes_pulled_total") - changes_before;
    assert!(
        in_full < 450,
        "documents went to the reader (300), hardly back to the writer: {in_full}"
    );

    // Both write the same records now: the reader's writes reach the writer in full, the
    // writer's own later writes come back as echoes again.
    for i in 0..50 {
        reader
            .patch(
                &key("todos", &format!("t{i}")),
                doc(json!({"by": "reader"})),
            )
            .unwrap();
    }
    reader.wait_synced(T).unwrap();
    writer.sync_now();
    writer.wait_synced(T).unwrap();
    for i in 0..50 {
        writer
            .patch(&key("todos", &format!("t{i}")), doc(json!({"note": i})))
            .unwrap();
    }
    writer.wait_synced(T).unwrap();
    reader.sync_now();
    reader.wait_synced(T).unwrap();
    let expected = live(&server_docs(&server.snapshot()));
    assert_eq!(client_docs(&writer, &space(), &["todos"]), expected);
    assert_eq!(client_docs(&reader, &space(), &["todos"]), expected);
    assert_eq!(writer.status().unwrap().pending, 0);
    assert_eq!(
        view(&writer, &key("todos", "t3")),
        Some(json!({"title": "task 3", "done": true, "by": "reader", "note": 3}))
    );
}
