//! The device misbehaving under a running client: its disk fills up mid-sync, its database
//! file turns unwritable, another process holds the database's write lock past the busy
//! timeout. Real faults, not mocks: a small tmpfs filled with a ballast file, the file made
//! immutable (`chattr +i`), a second process in `BEGIN IMMEDIATE`.
//!
//! Each test asserts what a subscriber is told (a `local_store` error carrying the store
//! error's own code, retried with backoff, never a server refusal), that sync resumes by
//! itself once the fault clears, and that nothing is lost or applied twice (the server's
//! version counts every mutation once, every write is on the server, the replicas agree).
//!
//! The first two need root (mounting a tmpfs, `chattr +i`). Without it they say so and pass,
//! unless `CI` is set: CI machines have it, and a fault test that silently does nothing
//! there would be worse than none.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use tidesync_client::{
    Client, ClientConfig, ClientError, ClientEvent, FailureKind, StaticToken, Status, StoreError,
};
use tidesync_server::MergeRules;

const T: Duration = Duration::from_secs(30);
/// What the lock-holding child process locks (set by the parent).
const LOCK_DB_ENV: &str = "TIDESYNC_TEST_LOCK_DB";
/// What the lock holder prints once it holds the lock.
const LOCKED: &str = "tidesync-test: write lock held";

/// Waits until a status with a local store failure of `code` arrives; returns it.
fn wait_local_failure(events: &Receiver<ClientEvent>, code: &str) -> Status {
    let deadline = std::time::Instant::now() + T;
    let mut seen = Vec::new();
    while std::time::Instant::now() < deadline {
        if let Ok(ClientEvent::Status(s)) = events.recv_timeout(Duration::from_millis(100)) {
            let hit = s.last_error.as_ref().is_some_and(|e| {
                e.kind == FailureKind::LocalStore && e.code.as_deref() == Some(code)
            });
            if hit {
                return s;
            }
            seen.push(s);
        }
    }
    panic!("no local_store/{code} status within {T:?}; saw: {seen:#?}");
}

/// What every test checks of a reported local failure.
fn assert_told_truthfully(status: &Status, code: &str, words: &str) {
    let error = status.last_error.as_ref().unwrap();
    assert_eq!(error.kind, FailureKind::LocalStore, "{error:?}");
    assert_eq!(error.kind.as_str(), "local_store");
    assert_eq!(error.code.as_deref(), Some(code));
    assert!(
        error.message.contains(words),
        "the message says what happened: {}",
        error.message
    );
    assert!(
        !error.message.contains("refused"),
        "not a server refusal: {}",
        error.message
    );
    assert!(!error.needs_attention, "it clears by itself: retried");
    assert!(status.next_retry_at_ms.is_some(), "backing off: {status:?}");
}

/// A writes `n` todos (one transaction) and syncs: the server has them.
fn write_todos(a: &Client, from: usize, n: usize) {
    a.transaction(|tx| {
        for i in from..from + n {
            let body = format!(
                "todo number {i} with a body long enough to fill pages {}",
                "x".repeat(100)
            );
            tx.put(
                &key("todos", &format!("t{i:05}")),
                doc(json!({"i": i, "body": body})),
            )?;
        }
        Ok(())
    })
    .unwrap();
    a.wait_synced(T).unwrap();
}

/// The end of every test: B catches up by itself, and client, server and the other replica
/// agree, each mutation applied once.
fn assert_recovered(server: &TestServer, a: &Client, b: &Client, mutations: u64) {
    let status = b.wait_synced(T).unwrap();
    assert!(status.last_error.is_none(), "{status:?}");
    a.sync_now();
    a.wait_synced(T).unwrap();
    assert_eq!(
        server.version(),
        mutations,
        "every mutation applied exactly once"
    );
    for client in [a, b] {
        let last = client.counts().unwrap().last_seq;
        assert_eq!(server.acked_through("alice", client.client_id()), last);
        assert_eq!(client.counts().unwrap().pending, 0);
    }
    let truth = live(&server_docs(&server.snapshot()));
    assert_eq!(client_docs(a, &space(), &["todos", "notes"]), truth);
    assert_eq!(
        client_docs(b, &space(), &["todos", "notes"]),
        truth,
        "B lost nothing"
    );
}

fn open_b(db: &Path, server: &TestServer, token: &str) -> Client {
    let mut config: ClientConfig = client_config(
        db.parent().unwrap(),
        "b",
        &server.url(),
        Arc::new(StaticToken(token.into())),
    );
    config.db_path = db.to_owned();
    config.store.busy_timeout = Duration::from_millis(200);
    Client::open(config).unwrap()
}

/// A server; client A with `first` todos on it; client B at `b_db` with a write of its own,
/// synced, and subscribed.
struct Scene {
    server: TestServer,
    a: Client,
    b: Client,
    events: Receiver<ClientEvent>,
}

fn scene(dir: &Path, b_db: &Path, first: usize) -> Scene {
    let server = TestServer::start(dir, MergeRules::default());
    let token = server.token("alice");
    let a = open_client(dir, "a", &server.url(), &token);
    write_todos(&a, 0, first);
    std::fs::create_dir_all(b_db.parent().unwrap()).unwrap();
    let b = open_b(b_db, &server, &token);
    // B has work of its own, pushed before the fault.
    b.put(&key("notes", "mine"), doc(json!({"by": "b"})))
        .unwrap();
    b.wait_synced(T).unwrap();
    let events = b.subscribe();
    Scene {
        server,
        a,
        b,
        events,
    }
}

/// Skips (or, under CI, fails) a test that needs a privilege this machine does not give.
fn unavailable(what: &str, why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{what} is needed by this test and fails here: {why}"
    );
    eprintln!("SKIPPED: {what} is not possible here ({why}); run as root to include this test");
}

// ---- the disk fills up -------------------------------------------------------------------

/// A small tmpfs, unmounted when dropped.
struct SmallDisk {
    mount: PathBuf,
}

impl SmallDisk {
    fn mount(at: PathBuf, bytes: u64) -> Result<SmallDisk, String> {
        std::fs::create_dir_all(&at).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes}"),
                "tidesync-test",
            ])
            .arg(&at)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(SmallDisk { mount: at })
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// Fills the disk but for `leave` bytes.
    fn fill(&self, leave: u64) -> PathBuf {
        let ballast = self.mount.join("ballast");
        let free = fs_free(&self.mount);
        let size = free.saturating_sub(leave);
        let mut file = std::fs::File::create(&ballast).unwrap();
        let chunk = vec![0xA5u8; 64 * 1024];
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            if file.write_all(&chunk[..n]).is_err() {
                break;
            }
            left -= n as u64;
        }
        file.sync_all().ok();
        ballast
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

/// Free bytes on the file system holding `path` (from `df`).
fn fs_free(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap()
}

#[test]
fn a_disk_that_fills_mid_sync_is_reported_and_sync_resumes_once_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let disk = match SmallDisk::mount(dir.path().join("disk"), 8 << 20) {
        Ok(disk) => disk,
        Err(why) => return unavailable("mounting a tmpfs", &why),
    };
    let Scene {
        server,
        a,
        b,
        events,
    } = scene(dir.path(), &disk.mount.join("b.db"), 50);
    let ballast = disk.fill(16 * 1024);

    // A's next 3,000 todos (~500 KB) do not fit on B's disk.
    write_todos(&a, 50, 3_000);
    let failed = wait_local_failure(&events, "disk_full");
    assert_told_truthfully(&failed, "disk_full", "disk is full");
    // The app's own writes fail with the same clear error and change nothing.
    let big = json!({"body": "y".repeat(200_000)});
    match b.put(&key("notes", "big"), doc(big)) {
        Err(ClientError::Store(e @ StoreError::DiskFull { .. })) => {
            assert_eq!(e.code(), "disk_full");
            assert!(e.is_retryable());
        }
        other => panic!("a write on a full disk: {other:?}"),
    }
    // Retried with backoff while full: the same failure again, never a refusal.
    std::thread::sleep(Duration::from_millis(500));
    for status in statuses(&events) {
        if let Some(e) = &status.last_error {
            assert_eq!(e.kind, FailureKind::LocalStore, "{status:?}");
        }
    }

    std::fs::remove_file(ballast).unwrap();
    assert_recovered(&server, &a, &b, 3_051);
    drop(b);
}

// ---- the file turns unwritable -----------------------------------------------------------

/// Sets or clears the immutable attribute of `files`.
fn chattr(flag: &str, files: &[PathBuf]) -> Result<(), String> {
    for file in files {
        let out = Command::new("chattr")
            .arg(flag)
            .arg(file)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
    }
    Ok(())
}

#[test]
fn a_database_file_that_turns_unwritable_is_reported_and_sync_resumes_when_writable() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("b").join("b.db");
    let Scene {
        server,
        a,
        b,
        events,
    } = scene(dir.path(), &db, 20);
    // The database and its log become immutable: every write of the open connection fails
    // (EPERM), reads still work. (The shared-memory index stays writable: it is mapped.)
    let files = [db.clone(), PathBuf::from(format!("{}-wal", db.display()))];
    if let Err(why) = chattr("+i", &files) {
        return unavailable("chattr +i", &why);
    }
    struct Writable(Vec<PathBuf>);
    impl Drop for Writable {
        fn drop(&mut self) {
            let _ = chattr("-i", &self.0);
        }
    }
    let guard = Writable(files.to_vec());

    write_todos(&a, 20, 200);
    let failed = wait_local_failure(&events, "disk_io");
    assert_told_truthfully(&failed, "disk_io", "writable");
    assert!(
        b.get(&key("todos", "t00001")).unwrap().is_some(),
        "reads still work"
    );
    match b.put(&key("notes", "blocked"), doc(json!({}))) {
        Err(ClientError::Store(e)) => assert!(e.is_retryable(), "{e}"),
        other => panic!("a write to an unwritable file: {other:?}"),
    }

    drop(guard);
    assert_recovered(&server, &a, &b, 221);
}

// ---- another process holds the lock ------------------------------------------------------

/// Child mode: does nothing unless the parent set [`LOCK_DB_ENV`]. Takes the write lock of
/// that database, says [`LOCKED`], and holds it until its stdin closes.
#[test]
fn lock_holder_child() {
    let Ok(db) = std::env::var(LOCK_DB_ENV) else {
        return;
    };
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    println!("{LOCKED}");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    conn.execute_batch("ROLLBACK").unwrap();
}

/// Starts the lock holder on `db`; returns once it holds the lock.
fn hold_lock(db: &Path) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "lock_holder_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(LOCK_DB_ENV, db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            // The test harness may print on the same line first.
            Some(Ok(line)) if line.contains(LOCKED) => {
                // Keep reading what the harness prints after, or the child dies of EPIPE.
                std::thread::spawn(move || lines.for_each(drop));
                return child;
            }
            Some(Ok(_)) => continue,
            other => panic!("the lock holder did not lock: {other:?}"),
        }
    }
}

#[test]
fn a_write_lock_held_by_another_process_is_reported_and_sync_resumes_when_released() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("b").join("b.db");
    let Scene {
        server,
        a,
        b,
        events,
    } = scene(dir.path(), &db, 20);
    let mut holder = hold_lock(&db);

    write_todos(&a, 20, 100);
    let failed = wait_local_failure(&events, "busy");
    assert_told_truthfully(&failed, "busy", "locked by another connection");
    // Several retries while the lock is held, each told the same way.
    std::thread::sleep(Duration::from_millis(1_500));
    let retried = statuses(&events)
        .iter()
        .filter(|s| {
            s.last_error
                .as_ref()
                .is_some_and(|e| e.code.as_deref() == Some("busy"))
        })
        .count();
    assert!(retried >= 1, "retried with backoff while locked");

    drop(holder.stdin.take()); // the holder rolls back and exits
    assert!(holder.wait().unwrap().success());
    assert_recovered(&server, &a, &b, 121);
}
