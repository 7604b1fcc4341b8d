//! A server restored from a backup (issue: "a server restored from backup strands its
//! clients"). Real processes: `tidesync serve` on a data directory, backed up while stopped,
//! more syncing, the backup restored, the server restarted on the same port. Then every
//! client recovers by itself: what it still held is applied once, what the server lost and
//! the client no longer held is reported, and everyone converges on the server's state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Duration;

use common::{create_token, Server};
use serde_json::json;
use tidesync_client::{
    Client, ClientConfig, ClientEvent, HistoryLoss, RecordKey, SpaceName, StaticToken,
};

const T: Duration = Duration::from_secs(20);

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn client(dir: &Path, name: &str, url: &str, token: &str) -> Client {
    let mut config = ClientConfig::new(
        dir.join(format!("{name}.db")),
        url,
        vec![SpaceName::new("user:alice").unwrap()],
        Arc::new(StaticToken(token.into())),
    );
    config.sync.backoff.base_ms = 50;
    config.sync.backoff.cap_ms = 500;
    config.sync.stream_retry_ms = 200;
    config.request_timeout = Duration::from_secs(5);
    Client::open(config).unwrap()
}

fn note(id: &str) -> RecordKey {
    RecordKey::parse("user:alice", "notes", id).unwrap()
}

fn write(c: &Client, id: &str) {
    c.put(&note(id), json!({"by": id}).as_object().cloned().unwrap())
        .unwrap();
}

fn ids(c: &Client) -> Vec<String> {
    let mut ids: Vec<String> = c
        .list(
            &SpaceName::new("user:alice").unwrap(),
            &tidesync_client::CollectionName::new("notes").unwrap(),
            &Default::default(),
        )
        .unwrap()
        .records
        .into_iter()
        .map(|r| r.key.id.as_str().to_owned())
        .collect();
    ids.sort();
    ids
}

fn loss(events: &Receiver<ClientEvent>) -> HistoryLoss {
    loop {
        match events.recv_timeout(T).expect("a server_forgot event") {
            ClientEvent::ServerForgot(loss) => return loss,
            _ => continue,
        }
    }
}

#[test]
fn clients_recover_from_a_server_restored_from_an_older_backup() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let backup = dir.path().join("backup");
    std::fs::create_dir(&data).unwrap();
    let token = create_token(&data);
    let port = tidesync_testkit::free_port().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let mut server = Some(Server::start_listening(&data, &format!("127.0.0.1:{port}")));

    let a = client(dir.path(), "a", &url, &token);
    let b = client(dir.path(), "b", &url, &token);
    for id in ["a1", "a2", "a3"] {
        write(&a, id);
    }
    a.wait_synced(T).unwrap();
    b.wait_until(T, |_| ids(&b).len() == 3).unwrap();

    // The backup: taken with the server stopped (seqs 1..=3 of A are in it).
    drop(server.take());
    copy_dir(&data, &backup);
    server = Some(Server::start_listening(&data, &format!("127.0.0.1:{port}")));

    // After the backup: A's seqs 4..=8 reach the server and come back confirmed; B writes
    // b1 (its seq 1), confirmed too. Then A writes a9, a10 while paused, and writes a6
    // again (on a base from history the backup does not have): held, never pushed.
    for id in ["a4", "a5", "a6", "a7", "a8"] {
        write(&a, id);
    }
    a.wait_synced(T).unwrap();
    write(&b, "b1");
    b.wait_synced(T).unwrap();
    a.wait_until(T, |_| ids(&a).len() == 9).unwrap();
    a.pause();
    write(&a, "a9");
    write(&a, "a10");
    a.put(
        &note("a6"),
        json!({"by": "a6 again"}).as_object().cloned().unwrap(),
    )
    .unwrap();

    // The server is restored from the backup and restarted where it was.
    drop(server.take());
    std::fs::remove_dir_all(&data).unwrap();
    copy_dir(&backup, &data);
    let _server = Server::start_listening(&data, &format!("127.0.0.1:{port}"));

    let a_events = a.subscribe();
    a.resume();
    a.sync_now();
    let a_loss = loss(&a_events);
    assert_eq!(
        (
            a_loss.server_last_seq,
            a_loss.local_last_seq,
            a_loss.resent,
            a_loss.lost
        ),
        (3, 11, 3, 5),
        "A: the server has seqs 1..=3; a9, a10 and a6 again are re-sent; a4..=a8 are lost"
    );
    a.wait_synced(T).unwrap();
    assert_eq!(a.status().unwrap().history_loss, Some(a_loss));

    // B had nothing to push: its cursor is ahead of the restored server, so it downloads
    // again, and the first page says the server has processed none of B's changes: b1 is
    // reported lost before B writes anything. B's next write goes out as a recovery push.
    let b_events = b.subscribe();
    b.sync_now();
    let b_loss = loss(&b_events);
    assert_eq!(
        (
            b_loss.server_last_seq,
            b_loss.local_last_seq,
            b_loss.resent,
            b_loss.lost
        ),
        (0, 1, 0, 1)
    );
    b.wait_until(T, |_| !ids(&b).contains(&"b1".to_owned()))
        .unwrap();
    write(&b, "b2");
    b.wait_synced(T).unwrap();
    assert!(
        !b_events
            .try_iter()
            .any(|e| matches!(e, ClientEvent::ServerForgot(_))),
        "the recovery push was accepted: no second loss"
    );

    // Everyone converges on the restored server plus what was held, each applied once.
    let want = ["a1", "a10", "a2", "a3", "a6", "a9", "b2"];
    a.sync_now();
    a.wait_until(T, |_| ids(&a) == want).unwrap();
    a.wait_synced(T).unwrap();
    assert_eq!(ids(&a), want);
    assert_eq!(ids(&b), want);
    let fresh = client(dir.path(), "fresh", &url, &token);
    fresh.wait_synced(T).unwrap();
    assert_eq!(ids(&fresh), want);
    assert_eq!(
        fresh.get(&note("a6")).unwrap().unwrap().doc["by"],
        json!("a6 again"),
        "a write on a base the server lost is applied, not refused"
    );
    // Later writes flow as ordinary pushes.
    write(&a, "a11");
    a.wait_synced(T).unwrap();
    fresh
        .wait_until(T, |_| ids(&fresh).contains(&"a11".to_owned()))
        .unwrap();
}
