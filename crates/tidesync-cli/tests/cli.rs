//! The built `tidesync` binary: issue a token, serve, push over HTTP, stop on SIGTERM; and
//! clear one-line errors with a non-zero exit for the usual operator mistakes.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_tidesync");

fn tidesync(args: &[&str]) -> Output {
    Command::new(BIN)
        .env_remove("TIDESYNC_DATABASE_URL")
        .args(args)
        .env_remove("TIDESYNC_DATA_DIR")
        .output()
        .expect("run tidesync")
}

fn create_token(data_dir: &Path) -> String {
    let out = tidesync(&[
        "token",
        "create",
        "--data-dir",
        data_dir.to_str().expect("utf-8"),
        "--user",
        "alice",
        "--space",
        "user:alice",
        "--read-only-space",
        "team:1",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("cannot be shown again"), "{stdout}");
    stdout
        .lines()
        .find(|l| l.starts_with("tsk_"))
        .expect("the token on its own line")
        .to_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Asserts a failed run with exactly one `error: ...` line on stderr containing `needle`.
fn assert_clear_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(lines[0].contains(needle), "{needle:?} in {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn token_create_then_serve_then_push_then_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let token = create_token(&data_dir);
    let port = free_port();
    let mut server = Server(
        Command::new(BIN)
            .env_remove("TIDESYNC_DATABASE_URL")
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--policy", "accounts=strict", "--default-policy", "lww"])
            .env("TIDESYNC_DATA_DIR", &data_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn serve"),
    );
    let stdout = server.0.stdout.take().expect("stdout");
    let banner = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .take(3)
            .map(|l| l.unwrap_or_default())
            .collect::<Vec<_>>()
    })
    .await
    .expect("banner");
    assert!(
        banner[0].contains(&format!("http://127.0.0.1:{port}")),
        "{banner:?}"
    );
    assert!(
        banner[2].contains("tidesync token create --data-dir"),
        "{banner:?}"
    );

    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "the server never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let push = json!({"client_id": "cli-test", "protocol": 1, "mutations": [
        {"seq": 1, "tx": 1, "space": "user:alice", "collection": "todos", "id": "t1",
         "kind": "put", "doc": {"title": "milk"}, "hlc": "0000000000010000", "base_version": 0}
    ]});
    let response = http
        .post(format!("{base}/v1/push"))
        .bearer_auth(&token)
        .json(&push)
        .send()
        .await
        .expect("push");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["results"][0]["outcome"], "applied", "{body}");

    let status = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = server.0.try_wait().expect("wait") {
            break exit;
        }
        assert!(Instant::now() < deadline, "no graceful exit on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = tidesync(&[
        "serve",
        "--data-dir",
        dir.path().to_str().expect("utf-8"),
        "--listen",
        &addr,
    ]);
    assert_clear_error(&out, &format!("cannot listen on {addr}"));
}

#[test]
fn an_unusable_data_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A directory under a regular file can never be created, even by root.
    let file = dir.path().join("file");
    std::fs::write(&file, b"not a directory").expect("write");
    let data_dir = file.join("data");
    let data_dir = data_dir.to_str().expect("utf-8");
    let out = tidesync(&["serve", "--data-dir", data_dir, "--listen", "127.0.0.1:0"]);
    assert_clear_error(&out, "cannot create data directory");
    let out = tidesync(&[
        "token",
        "create",
        "--data-dir",
        data_dir,
        "--user",
        "u",
        "--space",
        "s",
    ]);
    assert_clear_error(&out, "cannot create data directory");
}

#[test]
fn a_corrupt_database_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("server.db"), vec![0x5a; 8192]).expect("write");
    let data_dir = dir.path().to_str().expect("utf-8");
    let out = tidesync(&["serve", "--data-dir", data_dir, "--listen", "127.0.0.1:0"]);
    assert_clear_error(&out, "cannot open the database");
}

#[test]
fn a_weak_admin_token_is_a_clear_error_before_anything_is_touched() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let data_dir = data_dir.to_str().expect("utf-8");
    for (token, needle) in [
        ("short", "at least 16"),
        ("has spaces in it, long", "whitespace"),
    ] {
        let out = tidesync(&["serve", "--data-dir", data_dir, "--admin-token", token]);
        assert_clear_error(&out, needle);
        assert!(!dir.path().join("data").exists(), "nothing was created");
    }
}

#[test]
fn bad_flags_fail_without_starting() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().to_str().expect("utf-8");
    for args in [
        vec!["serve", "--data-dir", data_dir, "--policy", "todos=newest"],
        vec![
            "serve",
            "--data-dir",
            data_dir,
            "--listen",
            "not-an-address",
        ],
        vec![
            "token",
            "create",
            "--data-dir",
            data_dir,
            "--user",
            "u",
            "--space",
            "bad space",
        ],
    ] {
        let out = tidesync(&args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error:"), "{stderr}");
    }
    let out = tidesync(&["token", "create", "--data-dir", data_dir, "--user", "u"]);
    assert_clear_error(&out, "at least one --space");
}
