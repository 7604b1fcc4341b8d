//! Another process writes the file a running client syncs (an app extension, a widget, a
//! background task, `tidesync client put` from a shell): the client pushes those writes like
//! its own and re-runs its live queries, without waiting for its next scheduled sync.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{create_token, ok, path, tidesync, Server};
use serde_json::json;
use tidesync_client::{
    Client, ClientConfig, ClientEvent, Query, RecordKey, SpaceName, StaticToken,
};

fn client(db: &std::path::Path, url: &str, token: &str) -> Client {
    let config = ClientConfig::new(
        db,
        url,
        vec![SpaceName::new("user:alice").unwrap()],
        Arc::new(StaticToken(token.into())),
    );
    // The defaults: the next scheduled sync is minutes away, other writers are looked for
    // every second.
    Client::open(config).unwrap()
}

#[test]
fn writes_of_other_processes_are_pushed_by_the_running_client_and_reach_its_live_queries() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    std::fs::create_dir(&data).unwrap();
    let token = create_token(&data);
    let server = Server::start(&data);
    let db = dir.path().join("app.db");
    let app = client(&db, &server.url, &token);
    app.wait_synced(Duration::from_secs(10)).unwrap();
    let events = app.subscribe();
    let query = Query::all(
        SpaceName::new("user:alice").unwrap(),
        tidesync_client::CollectionName::new("notes").unwrap(),
    );
    let live = app.watch(query).unwrap();
    assert!(live
        .recv_timeout(Duration::from_secs(5))
        .unwrap()
        .records
        .is_empty());

    for round in 0..5 {
        let started = Instant::now();
        // Another process: the CLI writing the same file while the app's client runs.
        ok(&tidesync(&[
            "client",
            "--db",
            path(&db),
            "put",
            &format!("user:alice/notes/n{round}"),
            &json!({"round": round}).to_string(),
        ]));
        app.wait_synced(Duration::from_secs(15))
            .unwrap_or_else(|e| {
                panic!("round {round}: the other process's write was not pushed: {e}")
            });
        // Updates of earlier rounds (their records confirmed) may come first.
        let deadline = Instant::now() + Duration::from_secs(5);
        while live
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|| panic!("round {round}: the live query did not run again"))
            .records
            .len()
            != round + 1
        {}
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "round {round}: noticed at once (a wait looks first, the poll meanwhile), not by a scheduled sync minutes away"
        );
    }
    let seen: Vec<ClientEvent> = events.try_iter().collect();
    assert!(seen
        .iter()
        .any(|e| matches!(e, ClientEvent::ChangedElsewhere)));

    // The server holds every write once: a second device downloads them.
    let other = client(&dir.path().join("other.db"), &server.url, &token);
    other.wait_synced(Duration::from_secs(10)).unwrap();
    for round in 0..5 {
        let key = RecordKey::parse("user:alice", "notes", &format!("n{round}")).unwrap();
        assert_eq!(other.get(&key).unwrap().unwrap().doc["round"], json!(round));
    }
}
