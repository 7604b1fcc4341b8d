//! Helpers shared by the tests of the built `tidesync` binary.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_tidesync");

/// `tidesync` with no tidesync environment inherited (a developer's
/// `TIDESYNC_DATABASE_URL` must not redirect a test to PostgreSQL).
pub fn command() -> Command {
    let mut command = Command::new(BIN);
    for var in [
        "TIDESYNC_DATA_DIR",
        "TIDESYNC_DATABASE_URL",
        "TIDESYNC_CLIENT_DB",
        "TIDESYNC_SERVER",
        "TIDESYNC_TOKEN",
        "RUST_LOG",
    ] {
        command.env_remove(var);
    }
    command
}

/// Runs `tidesync args...` with no inherited tidesync environment.
pub fn tidesync(args: &[&str]) -> Output {
    command().args(args).output().expect("run tidesync")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

/// Asserts a failed run with exactly one `error: ...` line on stderr containing `needle`.
pub fn assert_clear_error(out: &Output, needle: &str) {
    let err = stderr(out);
    assert!(!out.status.success(), "expected failure, stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(lines[0].contains(needle), "{needle:?} in {err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

/// Parses stdout as one JSON document.
pub fn json(out: &Output) -> serde_json::Value {
    let text = ok(out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `tidesync token create` for user alice, space user:alice; returns the token.
pub fn create_token(data_dir: &Path) -> String {
    let out = tidesync(&[
        "token",
        "create",
        "--data-dir",
        path(data_dir),
        "--user",
        "alice",
        "--space",
        "user:alice",
    ]);
    ok(&out)
        .lines()
        .find(|l| l.starts_with("tsk_"))
        .expect("the token on its own line")
        .to_owned()
}

/// `tidesync serve` on a free port, killed on drop.
pub struct Server {
    child: Child,
    pub url: String,
}

impl Server {
    pub fn start(data_dir: &Path) -> Server {
        let mut child = command()
            .args([
                "serve",
                "--data-dir",
                path(data_dir),
                "--listen",
                "127.0.0.1:0",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn serve");
        let stdout = child.stdout.take().expect("stdout");
        // Read the whole banner: a closed pipe would fail the server's next print.
        let banner: Vec<String> = BufReader::new(stdout)
            .lines()
            .take(3)
            .map(|l| l.expect("banner"))
            .collect();
        let first = &banner[0];
        let url = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {first:?}"))
            .to_owned();
        Server { child, url }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
