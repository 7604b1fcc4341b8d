//! Compression on the wire with a real server on loopback (docs/protocol.md, "Compression"):
//! clients with compression on and off converge through one server and the bytes through a
//! counting proxy show who compressed; a server with compression off still serves a client
//! with it on; a server restarted with compression off is followed without a refusal.
//! The bytes counted are only compared between two clients of one run, never to constants.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use tidesync_client::{Client, ClientEvent, StaticToken};
use tidesync_server::storage::sqlite::SqliteStorage;
use tidesync_server::{EmbeddedServer, Limits, MergeRules};
use tidesync_testkit::FaultProxy;

const WAIT: Duration = Duration::from_secs(30);
/// Records each client writes: enough for pushes and pulls well over 1 KiB.
const RECORDS: usize = 1_500;

/// A server on `addr` (port 0: a free one) over the SQLite file in `dir`.
fn server(dir: &std::path::Path, addr: SocketAddr, compression: bool) -> EmbeddedServer {
    let storage =
        Arc::new(SqliteStorage::open(&dir.join("server.db"), MergeRules::default()).unwrap());
    let limits = Limits {
        compression,
        ..Limits::default()
    };
    let mut tries = 0;
    let listener = loop {
        match TcpListener::bind(addr) {
            Ok(listener) => break listener,
            Err(e) if tries < 200 => {
                let _ = e;
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("cannot bind {addr}: {e}"),
        }
    };
    EmbeddedServer::start(listener, storage, limits).unwrap()
}

fn token(server: &EmbeddedServer, user: &str) -> String {
    server
        .storage()
        .create_token(&tidesync_server::auth::Grants {
            user: user.into(),
            read: Default::default(),
            write: [space()].into_iter().collect(),
        })
        .unwrap()
}

fn open(dir: &std::path::Path, name: &str, url: &str, token: &str, compression: bool) -> Client {
    let mut config = client_config(dir, name, url, Arc::new(StaticToken(token.into())));
    config.compression = compression;
    Client::open(config).unwrap()
}

/// Writes `RECORDS` todos named after `who`, in transactions of 100.
fn write(client: &Client, who: &str) {
    for from in (0..RECORDS).step_by(100) {
        client
            .transaction(|tx| {
                for i in from..from + 100 {
                    let id = format!("{who}-{i:05}");
                    tx.put(
                        &key("todos", &id),
                        doc(json!({"title": format!("a todo written by {who}"), "n": i, "done": false})),
                    )?;
                }
                Ok(())
            })
            .unwrap();
    }
}

fn records(client: &Client) -> usize {
    client_docs(client, &space(), &["todos"]).len()
}

fn synced(client: &Client) {
    client.wait_synced(WAIT).unwrap();
}

/// No status seen so far carried an error.
fn assert_no_error(events: &std::sync::mpsc::Receiver<ClientEvent>, who: &str) {
    for status in statuses(events) {
        assert!(
            status.last_error.is_none(),
            "{who}: {:?}",
            status.last_error
        );
    }
}

#[test]
fn clients_with_compression_on_and_off_converge_and_only_the_first_compresses() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), "127.0.0.1:0".parse().unwrap(), true);
    let token = token(&server, "alice");
    let (proxy_on, proxy_off) = (
        FaultProxy::start(server.addr()).unwrap(),
        FaultProxy::start(server.addr()).unwrap(),
    );
    let on = open(
        dir.path(),
        "on",
        &format!("http://{}", proxy_on.addr()),
        &token,
        true,
    );
    let off = open(
        dir.path(),
        "off",
        &format!("http://{}", proxy_off.addr()),
        &token,
        false,
    );
    let (on_events, off_events) = (on.subscribe(), off.subscribe());
    synced(&on);
    synced(&off);
    write(&on, "on");
    write(&off, "off");
    synced(&on);
    synced(&off);
    // Each has pushed its own and pulled the other's; wait until both saw everything.
    wait_for("both converge", WAIT, || {
        records(&on) == RECORDS * 2 && records(&off) == RECORDS * 2
    });
    let everything = live(&server_docs(&snapshot(&server)));
    assert_eq!(everything.len(), RECORDS * 2);
    assert_eq!(client_docs(&on, &space(), &["todos"]), everything);
    assert_eq!(client_docs(&off, &space(), &["todos"]), everything);
    assert_no_error(&on_events, "on");
    assert_no_error(&off_events, "off");

    // The same records each way: the compressing client moved a fraction of the bytes.
    let (with, without) = (proxy_on.stats(), proxy_off.stats());
    assert!(
        with.bytes_to_upstream * 3 < without.bytes_to_upstream,
        "pushes: {} compressed vs {} plain",
        with.bytes_to_upstream,
        without.bytes_to_upstream
    );
    assert!(
        with.bytes_to_client * 3 < without.bytes_to_client,
        "pulls: {} compressed vs {} plain",
        with.bytes_to_client,
        without.bytes_to_client
    );
    on.close();
    off.close();
}

#[test]
fn a_server_with_compression_off_serves_a_client_with_it_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), "127.0.0.1:0".parse().unwrap(), false);
    let token = token(&server, "alice");
    let url = format!("http://{}", server.addr());
    let writer = open(dir.path(), "writer", &url, &token, true);
    let reader = open(dir.path(), "reader", &url, &token, true);
    let (writer_events, reader_events) = (writer.subscribe(), reader.subscribe());
    write(&writer, "w");
    synced(&writer);
    wait_for("the reader pulls everything", WAIT, || {
        records(&reader) == RECORDS
    });
    assert_eq!(
        client_docs(&reader, &space(), &["todos"]),
        live(&server_docs(&snapshot(&server)))
    );
    // Never a refused coding: the client sent plain JSON to a server that did not ask.
    assert_no_error(&writer_events, "writer");
    assert_no_error(&reader_events, "reader");
    writer.close();
    reader.close();
}

#[test]
fn a_server_restarted_with_compression_off_is_followed_without_a_refusal() {
    // Whichever answer of the new server comes first switches compression off: the health
    // probe's or the stream's (no `Accept-Encoding`), or a `415` to a compressed push, which
    // is sent again plain in the same exchange (`transport::http` tests that path alone).
    let dir = tempfile::tempdir().unwrap();
    let first = server(dir.path(), "127.0.0.1:0".parse().unwrap(), true);
    let addr = first.addr();
    let token = token(&first, "alice");
    let client = open(dir.path(), "c", &format!("http://{addr}"), &token, true);
    let events = client.subscribe();
    write(&client, "before");
    synced(&client);
    first.stop().unwrap();

    // The client learned zstd; the server it meets next does not accept it.
    let second = server(dir.path(), addr, false);
    write(&client, "after");
    synced(&client);
    assert_eq!(live(&server_docs(&snapshot(&second))).len(), RECORDS * 2);
    for status in statuses(&events) {
        if let Some(error) = &status.last_error {
            assert_ne!(
                error.code.as_deref(),
                Some("malformed_request"),
                "{error:?}"
            );
        }
    }
    client.close();
}

/// Everything in the test space, as `server` holds it.
fn snapshot(server: &EmbeddedServer) -> tidesync_protocol::PullResponse {
    let input = tidesync_server::storage::PullInput {
        user: "observer".into(),
        client_id: tidesync_protocol::ClientId::new("observer").unwrap(),
        cursor: tidesync_protocol::Cursor::new(),
        spaces: vec![space()],
        limit: 1_000_000,
        echoes: false,
        refetch: Vec::new(),
    };
    server
        .run(tidesync_server::storage::Storage::pull(
            server.storage().as_ref(),
            input,
        ))
        .unwrap()
        .parse()
        .unwrap()
}
