//! The release binary tried as a new user and an attacker would: one server per data
//! directory, client commands that change no file they should not (missing, empty and
//! read-only databases), validation before storage, each OS error said once, host names for
//! `--listen`, `sync` retrying while the server is away, documents from stdin and files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{
    assert_clear_error, client, command, create_token, free_port, json, ok, output_within, path,
    stderr, sync_args, tidesync, wait_within, Server,
};

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every read command, on a database holding `user:alice/todos/t1`.
const READS: &[&[&str]] = &[
    &["status"],
    &["get", "user:alice/todos/t1"],
    &["list", "user:alice/todos"],
    &["query", "user:alice/todos"],
    &["query", "user:alice/todos", "--count"],
    &["pending"],
    &["conflicts"],
    &["rejections"],
    &["restore"],
];

// ---- item 5: one server per data directory ------------------------------------------------

#[test]
fn a_second_server_on_one_data_directory_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    create_token(&data);
    let first = Server::start(&data);

    let second = output_within(
        command().args([
            "serve",
            "--data-dir",
            path(&data),
            "--listen",
            "127.0.0.1:0",
        ]),
        Duration::from_secs(20),
    )
    .expect("the second server exits instead of serving the same directory");
    assert_clear_error(&second, "another tidesync server");
    let line = stderr(&second);
    assert!(line.contains(path(&data)), "names the directory: {line}");
    assert!(line.contains("(pid "), "names the holder: {line}");
    assert_eq!(second.status.code(), Some(1));

    // Tokens are still issued next to the running server, and it accepts them.
    let token = create_token(&data);
    let db = dir.path().join("c.db");
    ok(&client(&db, &["put", "user:alice/todos/t1", "{}"]));
    ok(&client(
        &db,
        &sync_args(&first.url, &token, "user:alice", "20"),
    ));

    // The lock goes with the process, however it ends (here: SIGKILL).
    drop(first);
    let again = Server::start(&data);
    assert!(again.url.starts_with("http://"));
}

// ---- item 6: client commands change no file they should not -------------------------------

#[test]
fn read_commands_on_a_missing_or_empty_file_say_so_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db");
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let nested = dir.path().join("no").join("such").join("c.db");
    for db in [&missing, &empty, &nested] {
        for args in READS {
            assert_clear_error(&client(db, args), "no client database");
        }
    }
    assert_eq!(listing(dir.path()), ["empty.db"], "nothing created");
    assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0, "still empty");
}

#[test]
fn writes_never_create_directories() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("no").join("such").join("c.db");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    for args in [
        &["put", "s/c/i", "{}"][..],
        &["patch", "s/c/i", "{}"],
        &["restore", "set", "draft", "1"],
        &sync_args(&url, "tsk_x", "s", "1"),
    ] {
        let out = client(&nested, args);
        assert_clear_error(&out, "does not exist");
        assert!(stderr(&out).contains("no/such"), "{}", stderr(&out));
    }
    assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));
}

#[test]
fn a_failing_command_leaves_the_disk_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh.db");
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let url = format!("http://127.0.0.1:{}", free_port());
    for db in [&fresh, &empty] {
        // Needs a database: refused before anything is opened.
        assert_clear_error(&client(db, &["delete", "s/c/i"]), "no client database");
        assert_clear_error(
            &client(db, &["conflicts", "resolve", "1", "local"]),
            "no client database",
        );
        assert_clear_error(
            &client(db, &["rejections", "discard", "1"]),
            "no client database",
        );
        // Bad input: refused before anything is opened.
        assert_clear_error(
            &client(db, &["put", "s/c/i", "{nope"]),
            "invalid JSON document",
        );
        assert_clear_error(
            &client(db, &["put", "s/c/i", "@/no/such/doc.json"]),
            "cannot read the document",
        );
        // A sync that cannot reach its server: the database it created goes again.
        let out = client(db, &sync_args(&url, "tsk_x", "s", "1"));
        assert_clear_error(&out, "sync failed (network error)");
    }
    assert_eq!(listing(dir.path()), ["empty.db"], "nothing left behind");
    assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0, "still empty");

    // A command that writes creates the database where its directory exists.
    ok(&client(&fresh, &["put", "s/c/i", "{}"]));
    ok(&client(&empty, &["put", "s/c/i", "{}"]));
    assert_eq!(json(&client(&empty, &["--json", "status"]))["pending"], 1);
}

/// A database holding `user:alice/todos/t1`, closed.
fn database_with_a_record(dir: &Path) -> PathBuf {
    let db = dir.join("c.db");
    ok(&client(
        &db,
        &["put", "user:alice/todos/t1", r#"{"title":"milk"}"#],
    ));
    ok(&client(&db, &["restore", "set", "draft", "1"]));
    db
}

/// Whether this process is root (which writes files whatever their mode).
fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// The uid a root test runs commands as when permissions must hold.
const NOBODY: u32 = 65_534;

fn have_setpriv() -> bool {
    Command::new("setpriv")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `tidesync client --db DB args...` as `nobody` (this process being root).
fn as_nobody(db: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        format!("--reuid={NOBODY}"),
        format!("--regid={NOBODY}"),
        "--clear-groups".to_owned(),
    ])
    .arg(common::BIN)
    .args(["client", "--db", path(db)])
    .args(args);
    for var in [
        "TIDESYNC_DATA_DIR",
        "TIDESYNC_DATABASE_URL",
        "TIDESYNC_CLIENT_DB",
        "TIDESYNC_SERVER",
        "TIDESYNC_TOKEN",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    // nobody's temporary files go to /tmp, not to root's TMPDIR.
    cmd.env("TMPDIR", "/tmp");
    cmd.output().expect("run setpriv")
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Asserts every read command works on `db` (run by `run`) and changes nothing in its
/// directory.
fn reads_work_and_change_nothing(db: &Path, run: impl Fn(&Path, &[&str]) -> Output) {
    let dir = db.parent().unwrap();
    let before = listing(dir);
    let bytes = std::fs::read(db).unwrap();
    for args in READS {
        let out = run(db, args);
        let text = ok(&out);
        if args[0] == "get" {
            assert!(text.contains("milk"), "{text}");
        }
    }
    assert_eq!(listing(dir), before, "no -wal, -shm or other file left");
    assert!(
        std::fs::read(db).unwrap() == bytes,
        "the database is unchanged"
    );
}

/// Every write command that needs an existing database, and `put`.
const WRITES: &[&[&str]] = &[
    &["put", "user:alice/todos/t2", "{}"],
    &["patch", "user:alice/todos/t1", "{}"],
    &["delete", "user:alice/todos/t1"],
    &["restore", "set", "draft", "2"],
    &["restore", "remove", "draft"],
    &["conflicts", "resolve", "1", "local"],
    &["rejections", "retry", "1"],
    &["rejections", "discard", "1"],
];

#[test]
fn a_read_only_file_is_read_and_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_with_a_record(dir.path());
    chmod(&db, 0o444);
    // Root included: the mode is what the owner asked for.
    reads_work_and_change_nothing(&db, client);
    let bytes = std::fs::read(&db).unwrap();
    for args in WRITES {
        assert_clear_error(&client(&db, args), "is read-only");
    }
    assert_eq!(listing(dir.path()), ["c.db"]);
    assert!(
        std::fs::read(&db).unwrap() == bytes,
        "the database is unchanged"
    );
}

#[test]
fn a_database_in_a_read_only_directory_is_read_from_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_with_a_record(dir.path());
    chmod(dir.path(), 0o555);
    reads_work_and_change_nothing(&db, client);
    for args in WRITES {
        let out = client(&db, args);
        assert_clear_error(&out, "read-only");
        assert!(
            stderr(&out).contains("directory"),
            "says why: {}",
            stderr(&out)
        );
    }
    let fresh = dir.path().join("new.db");
    assert_clear_error(&client(&fresh, &["put", "s/c/i", "{}"]), "not writable");
    assert_eq!(listing(dir.path()), ["c.db"]);
    chmod(dir.path(), 0o755); // so the temporary directory can be removed
}

#[test]
fn a_database_this_user_may_not_write_is_read_not_written() {
    // Permissions without the mode saying so: a root-owned 0644 file and 0755 directory,
    // used by nobody. Needs root (to make them) and setpriv (to become nobody).
    if !is_root() || !have_setpriv() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let db = database_with_a_record(dir.path());
    chmod(&db, 0o644);
    reads_work_and_change_nothing(&db, as_nobody);
    for args in WRITES {
        assert_clear_error(&as_nobody(&db, args), "is read-only");
    }
    assert_eq!(listing(dir.path()), ["c.db"]);
}

// ---- item 7 ---------------------------------------------------------------------------------

#[test]
fn a_bad_user_name_is_refused_before_any_storage_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for user in ["", "a\u{7}b", &"u".repeat(129)] {
        let out = tidesync(&[
            "token",
            "create",
            "--data-dir",
            path(&data),
            "--user",
            user,
            "--space",
            "s",
        ]);
        assert_clear_error(&out, "1 to 128 bytes without control characters");
        assert!(!stderr(&out).contains("storage"), "{}", stderr(&out));
    }
    assert!(!data.exists(), "no data directory created");
    ok(&tidesync(&[
        "token",
        "create",
        "--data-dir",
        path(&data),
        "--user",
        &"u".repeat(128),
        "--space",
        "s",
    ]));
}

#[test]
fn an_os_error_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["status"][..], &["put", "s/c/i", "{}"], &["get", "s/c/i"]] {
        let out = client(dir.path(), args);
        assert_clear_error(&out, "is a directory");
        let line = stderr(&out).to_lowercase();
        assert!(line.matches("is a directory").count() == 1, "{line}");
        assert!(line.matches("os error").count() <= 1, "{line}");
    }
    // The server's data directory holding a directory as its database.
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("server.db")).unwrap();
    let out = tidesync(&[
        "token",
        "create",
        "--data-dir",
        path(&data),
        "--user",
        "u",
        "--space",
        "s",
    ]);
    assert_clear_error(&out, "Is a directory");
    assert_eq!(
        stderr(&out).matches("os error").count(),
        1,
        "{}",
        stderr(&out)
    );
}

#[test]
fn serve_listens_on_a_host_name_and_refuses_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data);
    let server = Server::start_listening(&data, "localhost:0");
    let db = dir.path().join("c.db");
    ok(&client(&db, &["put", "user:alice/todos/t1", "{}"]));
    ok(&client(
        &db,
        &sync_args(&server.url, &token, "user:alice", "20"),
    ));
    drop(server);
    for garbage in ["localhost", "not an address", "127.0.0.1:99999", ":8787x"] {
        let out = output_within(
            command().args(["serve", "--data-dir", path(&data), "--listen", garbage]),
            Duration::from_secs(20),
        )
        .expect("refused at once");
        assert_clear_error(&out, "--listen");
        assert_eq!(out.status.code(), Some(2), "{garbage}");
    }
}

#[test]
fn sync_retries_until_the_server_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data);
    let db = dir.path().join("c.db");
    ok(&client(&db, &["put", "user:alice/todos/t1", "{}"]));
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut sync = command()
        .args([
            "client",
            "--db",
            path(&db),
            "--server",
            &url,
            "--token",
            &token,
            "--space",
            "user:alice",
            "sync",
            "--timeout",
            "20",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1_500));
    let _server = Server::start_listening(&data, &format!("127.0.0.1:{port}"));
    let out = wait_within(&mut sync, Duration::from_secs(40)).expect("sync ends");
    let text = ok(&out);
    assert!(
        text.contains("offline"),
        "shows the status meanwhile: {text}"
    );
    assert!(text.contains("synced: 0 pending"), "{text}");
}

#[test]
fn sync_gives_up_at_the_timeout_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    ok(&client(&db, &["put", "s/c/i", "{}"]));
    let url = format!("http://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let out = client(&db, &sync_args(&url, "tsk_x", "s", "2"));
    assert_clear_error(
        &out,
        "sync failed (network error), still after retrying for 2 s",
    );
    assert!(started.elapsed() >= Duration::from_secs(2), "kept retrying");
    assert_eq!(json(&client(&db, &["--json", "status"]))["pending"], 1);
}

#[test]
fn documents_come_from_standard_input_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    // Longer than one command-line argument may be on Linux (128 KiB).
    let big = serde_json::json!({"title": "milk", "notes": "n".repeat(300_000)});
    let doc_file = dir.path().join("doc.json");
    std::fs::write(&doc_file, big.to_string()).unwrap();
    ok(&client(
        &db,
        &[
            "put",
            "user:alice/todos/t1",
            &format!("@{}", path(&doc_file)),
        ],
    ));
    let got = json(&client(&db, &["--json", "get", "user:alice/todos/t1"]));
    assert_eq!(got["doc"], big);

    let mut patch = command()
        .args([
            "client",
            "--db",
            path(&db),
            "patch",
            "user:alice/todos/t1",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    patch
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"notes": null, "done": true}"#)
        .unwrap();
    ok(&patch.wait_with_output().unwrap());
    let got = json(&client(&db, &["--json", "get", "user:alice/todos/t1"]));
    assert_eq!(
        got["doc"],
        serde_json::json!({"title": "milk", "done": true})
    );

    let selector = dir.path().join("where.json");
    std::fs::write(&selector, r#"{"done": true}"#).unwrap();
    let page = json(&client(
        &db,
        &[
            "--json",
            "query",
            "user:alice/todos",
            "--where",
            &format!("@{}", path(&selector)),
        ],
    ));
    assert_eq!(page["records"].as_array().unwrap().len(), 1);

    // Clear errors: a missing file, invalid JSON in a file, on stdin.
    let missing = dir.path().join("missing.json");
    let out = client(&db, &["put", "s/c/i", &format!("@{}", path(&missing))]);
    assert_clear_error(&out, "cannot read the document from");
    assert!(stderr(&out).contains("missing.json"), "{}", stderr(&out));
    std::fs::write(&selector, "{nope").unwrap();
    let out = client(
        &db,
        &["query", "s/c", "--where", &format!("@{}", path(&selector))],
    );
    assert_clear_error(&out, "invalid --where JSON from");
    let out = command()
        .args(["client", "--db", path(&db), "put", "s/c/i", "-"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_clear_error(&out, "invalid JSON document from standard input");

    // The help says so.
    let help = ok(&tidesync(&["client", "--db", "x", "put", "--help"]));
    assert!(
        help.contains("@FILE") && help.contains("standard input"),
        "{help}"
    );
}

/// `tidesync client pending | head`: the reader closes the pipe before the output is
/// written; the command ends quietly (exit 0, nothing on stderr) instead of panicking.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    for i in 0..50 {
        ok(&client(
            &db,
            &[
                "put",
                &format!("user:alice/todos/t{i}"),
                r#"{"title": "x"}"#,
            ],
        ));
    }
    for args in [
        &["pending"][..],
        &["list", "user:alice/todos"],
        &["status", "--json"],
    ] {
        let mut child = command()
            .args(["client", "--db", path(&db)])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader goes away before anything is written
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(out.status.success(), "{args:?}: {:?} {err}", out.status);
    }
}
