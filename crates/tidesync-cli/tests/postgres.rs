//! The built `tidesync` binary on PostgreSQL: `serve --database-url` with a token from `token
//! create --database-url`; a clear one-line error when PostgreSQL is unreachable; and
//! `migrate-storage` from an embedded server's data directory, after which clients carry on
//! with their cursors, sequence numbers and tokens.
//!
//! The tests that need PostgreSQL take a schema of their own from
//! `TIDESYNC_TEST_DATABASE_URL` (`tidesync_testkit::TestDatabase`) and pass without running
//! when it is unset.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{assert_clear_error, command, ok, path, stderr};
use serde_json::{json, Value};
use tidesync_testkit::{free_port, TestDatabase};

const SPACE: &str = "user:alice";

fn tidesync(args: &[&str]) -> Output {
    command().args(args).output().expect("run tidesync")
}

/// The token line of `token create` output.
fn token_of(out: &Output) -> String {
    let text = ok(out);
    assert!(text.contains("cannot be shown again"), "{text}");
    text.lines()
        .find(|l| l.starts_with("tsk_"))
        .expect("the token on its own line")
        .to_owned()
}

/// `token create` for alice (read+write user:alice) into `storage_flags`.
fn create_token(storage_flags: &[&str]) -> String {
    let mut args = vec!["token", "create"];
    args.extend_from_slice(storage_flags);
    args.extend(["--user", "alice", "--space", SPACE]);
    token_of(&tidesync(&args))
}

/// `tidesync serve` on a free port; killed on drop unless stopped.
struct Server {
    child: Child,
    base: String,
    banner: Vec<String>,
    /// Every stderr line so far (a thread drains the pipe).
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `serve` with `flags` (and `env`) and waits until `/healthz` answers 200.
    async fn start(flags: &[&str], env: &[(&str, &str)]) -> Server {
        let port = free_port().expect("free port");
        let listen = format!("127.0.0.1:{port}");
        let mut command = command();
        command
            .arg("serve")
            .args(flags)
            .args(["--listen", &listen, "--policy", "todos=strict"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn serve");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("log").push(line);
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        // Keep reading after the banner: a closed pipe would fail the server's next print.
        let (banner_tx, banner_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = banner_tx.send(line);
            }
        });
        let mut server = Server {
            child,
            base: format!("http://{listen}"),
            banner: Vec::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while server.banner.len() < 3 {
            match banner_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => server.banner.push(line),
                Err(_) => {
                    if let Some(exit) = server.child.try_wait().expect("wait") {
                        panic!("serve exited ({exit:?}): {:?}", server.log());
                    }
                    assert!(Instant::now() < deadline, "no banner: {:?}", server.log());
                }
            }
        }
        let http = reqwest::Client::new();
        loop {
            let healthy = http
                .get(format!("{}/healthz", server.base))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if healthy {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "never healthy: {:?}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }

    /// SIGTERM, then waits for a clean exit (the SQLite writer finishes, PostgreSQL's pool
    /// closes).
    async fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        let exit = loop {
            if let Some(exit) = self.child.try_wait().expect("wait") {
                break exit;
            }
            assert!(Instant::now() < deadline, "no graceful exit on SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(exit.success(), "{exit:?}: {:?}", self.log());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A put of `todos/{id}` as mutation `seq` (its own transaction) of `client`.
fn put(seq: u64, id: &str, title: &str, base_version: u64) -> Value {
    json!({"seq": seq, "tx": seq, "space": SPACE, "collection": "todos", "id": id,
           "kind": "put", "doc": {"title": title}, "hlc": hlc(seq), "base_version": base_version})
}

/// A delete of `todos/{id}` as mutation `seq`.
fn delete(seq: u64, id: &str, base_version: u64) -> Value {
    json!({"seq": seq, "tx": seq, "space": SPACE, "collection": "todos", "id": id,
           "kind": "delete", "hlc": hlc(seq), "base_version": base_version})
}

/// An HLC reading in the past (2023), one tick per seq.
fn hlc(seq: u64) -> String {
    format!("{:016x}", (1_700_000_000_000u64 << 16) + seq)
}

/// POSTs `body` to `path`; returns the status and the JSON answer.
async fn post(server: &Server, token: &str, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", server.base))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

async fn push(server: &Server, token: &str, client: &str, mutations: Vec<Value>) -> (u16, Value) {
    let body = json!({"client_id": client, "protocol": 1, "mutations": mutations});
    post(server, token, "/v1/push", body).await
}

async fn pull(server: &Server, token: &str, client: &str, cursor: &Value) -> Value {
    let body = json!({"client_id": client, "protocol": 1, "spaces": [SPACE], "cursor": cursor});
    let (status, body) = post(server, token, "/v1/pull", body).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The ids and versions of a pull's changes.
fn changes(page: &Value) -> Vec<(String, u64)> {
    page["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            (
                c["id"].as_str().expect("id").to_owned(),
                c["version"].as_u64().expect("version"),
            )
        })
        .collect()
}

/// One number from `sql` run in the test schema.
fn count(db: &TestDatabase, sql: &str) -> u64 {
    let rows = db.query(sql);
    rows[0][0]
        .as_deref()
        .expect("a value")
        .parse()
        .expect("a number")
}

/// Row counts of every ts_ data table.
fn table_counts(db: &TestDatabase) -> Vec<u64> {
    [
        "ts_spaces",
        "ts_clients",
        "ts_records",
        "ts_rejected",
        "ts_tokens",
    ]
    .iter()
    .map(|t| count(db, &format!("SELECT count(*) FROM {t}")))
    .collect()
}

#[tokio::test]
async fn serve_on_postgres_with_a_token_from_token_create() {
    let Some(db) = TestDatabase::create("cli_serve") else {
        return;
    };
    let token = create_token(&["--database-url", db.url()]);
    assert_eq!(count(&db, "SELECT count(*) FROM ts_tokens"), 1);
    // The URL from the environment, as a deployment would give it.
    let server = Server::start(
        &["--db-pool-size", "4"],
        &[("TIDESYNC_DATABASE_URL", db.url())],
    )
    .await;
    assert!(
        server.banner[1].starts_with("data in PostgreSQL at postgres@127.0.0.1:"),
        "{:?}",
        server.banner
    );
    assert!(
        server.banner[2].contains("token create --database-url"),
        "{:?}",
        server.banner
    );
    let log = server.log().join("\n");
    assert!(
        log.contains("storage open") && log.contains("postgres"),
        "the startup log names the storage: {log}"
    );

    let (status, body) = push(
        &server,
        &token,
        "pg-client",
        vec![put(1, "t1", "milk", 0), put(2, "t2", "bread", 0)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["acked_through"], 2, "{body}");
    assert_eq!(body["results"][0]["outcome"], "applied", "{body}");
    let page = pull(&server, &token, "pg-client", &json!({})).await;
    assert_eq!(
        changes(&page),
        [("t1".to_owned(), 1), ("t2".to_owned(), 2)],
        "{page}"
    );
    assert_eq!(page["changes"][0]["doc"]["title"], "milk", "{page}");
    assert_eq!(page["cursor"][SPACE], 2, "{page}");
    assert_eq!(page["acked_through"], 2, "{page}");
    // The rows are in PostgreSQL, not in a data directory.
    assert_eq!(count(&db, "SELECT count(*) FROM ts_records"), 2);
    server.stop().await;
}

#[test]
fn unreachable_postgres_is_one_clear_error_without_the_password() {
    let port = free_port().expect("free port");
    let url = format!("postgres://tidesync:hunter2secret@127.0.0.1:{port}/app");
    let target = format!("tidesync@127.0.0.1:{port}/app");

    let started = Instant::now();
    let mut child = command()
        .args(["serve", "--database-url", &url, "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("serve kept running without PostgreSQL");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().expect("output");
    assert!(!exit.success());
    assert_clear_error(&out, &format!("cannot connect to PostgreSQL at {target}"));
    assert!(!stderr(&out).contains("hunter2secret"), "{}", stderr(&out));

    let out = tidesync(&[
        "token",
        "create",
        "--database-url",
        &url,
        "--user",
        "alice",
        "--space",
        SPACE,
    ]);
    assert_clear_error(&out, &target);
    assert!(!stderr(&out).contains("hunter2secret"), "{}", stderr(&out));

    let dir = tempfile::tempdir().expect("temp dir");
    create_token(&["--data-dir", path(dir.path())]);
    let out = tidesync(&["migrate-storage", "--from", path(dir.path()), "--to", &url]);
    assert_clear_error(&out, &target);
    assert!(!stderr(&out).contains("hunter2secret"), "{}", stderr(&out));
}

#[tokio::test]
async fn migrate_storage_then_clients_carry_on_with_their_cursors() {
    let Some(db) = TestDatabase::create("cli_migrate") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = path(dir.path());
    let token = create_token(&["--data-dir", data_dir]);

    // The embedded server: two records, one deleted again, one rejection (strict policy: the
    // laptop writes t1 on a base the phone has moved past), then a pull for a cursor.
    let embedded = Server::start(&["--data-dir", data_dir], &[]).await;
    let (status, body) = push(
        &embedded,
        &token,
        "laptop",
        vec![put(1, "t1", "milk", 0), put(2, "t2", "bread", 0)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = push(
        &embedded,
        &token,
        "phone",
        vec![put(1, "t1", "oat milk", 2)],
    )
    .await;
    assert_eq!(body["results"][0]["version"], 3, "{status} {body}");
    let (status, body) = push(
        &embedded,
        &token,
        "laptop",
        vec![put(3, "t1", "stale milk", 2), delete(4, "t2", 2)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["outcome"], "rejected", "{body}");
    assert_eq!(body["results"][0]["code"], "stale_base", "{body}");
    assert_eq!(body["results"][1]["version"], 4, "{body}");
    let page = pull(&embedded, &token, "laptop", &json!({})).await;
    let cursor = page["cursor"].clone();
    let version = cursor[SPACE].as_u64().expect("a cursor for the space");
    assert_eq!(version, 4, "{page}");
    embedded.stop().await;

    let out = tidesync(&["migrate-storage", "--from", data_dir, "--to", db.url()]);
    let summary = ok(&out);
    assert!(
        summary.contains("copied 1 space, 2 clients, 2 records, 1 rejection, 1 token from")
            && summary.contains("to PostgreSQL at postgres@127.0.0.1:"),
        "{summary}"
    );
    assert!(
        stderr(&out).is_empty(),
        "no progress bar off a terminal: {}",
        stderr(&out)
    );
    let copied = table_counts(&db);
    assert_eq!(copied, [1, 2, 2, 1, 1]);

    // Into a target that now holds data: refused, nothing changed.
    let out = tidesync(&["migrate-storage", "--from", data_dir, "--to", db.url()]);
    assert_clear_error(&out, "already holds tidesync data");
    assert_eq!(table_counts(&db), copied);

    let server = Server::start(&["--database-url", db.url()], &[]).await;
    // The old token authenticates; the old cursor is current; last_seq came along.
    let page = pull(&server, &token, "laptop", &cursor).await;
    assert!(changes(&page).is_empty(), "{page}");
    assert_eq!(page["acked_through"], 4, "{page}");
    assert_eq!(page["cursor"], cursor, "{page}");
    // An already-acknowledged seq is a duplicate; a remembered rejection is repeated.
    let (status, body) = push(&server, &token, "laptop", vec![put(2, "t2", "bread", 0)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"], json!([]), "{body}");
    assert_eq!(body["acked_through"], 4, "{body}");
    let (status, body) = push(
        &server,
        &token,
        "laptop",
        vec![put(3, "t1", "stale milk", 2)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["outcome"], "rejected", "{body}");
    assert_eq!(body["results"][0]["code"], "stale_base", "{body}");
    // Skipping a seq is still a gap: last_seq is exactly what the embedded server had.
    let (status, body) = push(&server, &token, "laptop", vec![put(6, "t9", "gap", 0)]).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "seq_gap", "{body}");
    // One more push continues the space's versions; the old cursor gets only it.
    let (status, body) = push(
        &server,
        &token,
        "laptop",
        vec![put(5, "t3", "eggs", version)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["outcome"], "applied", "{body}");
    assert_eq!(body["results"][0]["version"], version + 1, "{body}");
    let page = pull(&server, &token, "laptop", &cursor).await;
    assert_eq!(changes(&page), [("t3".to_owned(), version + 1)], "{page}");
    // A fresh client bootstraps the copied state: t1 as the phone wrote it, t2 a tombstone.
    let page = pull(&server, &token, "tablet", &json!({})).await;
    assert_eq!(
        changes(&page),
        [
            ("t1".to_owned(), 3),
            ("t2".to_owned(), 4),
            ("t3".to_owned(), 5)
        ],
        "{page}"
    );
    let all = &page["changes"];
    assert_eq!(all[0]["doc"]["title"], "oat milk", "{page}");
    assert_eq!(all[1]["deleted"], true, "{page}");
    // The other client carries on too.
    let (status, body) = push(&server, &token, "phone", vec![put(2, "t4", "jam", 5)]).await;
    assert_eq!(body["results"][0]["version"], 6, "{status} {body}");
    server.stop().await;
}

#[test]
fn migrate_storage_refuses_a_source_that_is_not_a_tidesync_server_database() {
    let Some(db) = TestDatabase::create("cli_refuse") else {
        return;
    };
    let tables = |db: &TestDatabase| {
        count(
            db,
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()",
        )
    };
    let dir = tempfile::tempdir().expect("temp dir");

    // A tidesync client database where the server's should be.
    let client_db = dir.path().join("server.db");
    ok(&tidesync(&[
        "client",
        "--db",
        path(&client_db),
        "put",
        "user:alice/todos/t1",
        r#"{"title": "milk"}"#,
    ]));
    let out = tidesync(&[
        "migrate-storage",
        "--from",
        path(dir.path()),
        "--to",
        db.url(),
    ]);
    assert_clear_error(&out, "is not a tidesync server database");
    assert_eq!(tables(&db), 0, "the target was not touched");

    // Not SQLite at all; a missing directory; a directory without a server database.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![0x5a; 8192]).expect("write");
    let out = tidesync(&["migrate-storage", "--from", path(&junk), "--to", db.url()]);
    assert_clear_error(&out, "is not a tidesync server database");
    let missing = dir.path().join("missing");
    let out = tidesync(&[
        "migrate-storage",
        "--from",
        path(&missing),
        "--to",
        db.url(),
    ]);
    assert_clear_error(&out, "cannot read");
    let empty = tempfile::tempdir().expect("temp dir");
    let out = tidesync(&[
        "migrate-storage",
        "--from",
        path(empty.path()),
        "--to",
        db.url(),
    ]);
    assert_clear_error(&out, "server.db is missing");
    assert_eq!(tables(&db), 0, "the target was not touched");
    assert!(
        std::fs::read_dir(empty.path())
            .expect("read")
            .next()
            .is_none(),
        "nothing created in the source directory"
    );
}

/// `migrate-storage` needs both flags.
#[test]
fn migrate_storage_without_flags_is_a_flag_error() {
    let out = tidesync(&["migrate-storage", "--from", "x"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).starts_with("error: "), "{}", stderr(&out));
}
