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
        "TIDESYNC_ADMIN_TOKEN",
        "RUST_LOG",
    ] {
        command.env_remove(var);
    }
    command
}

/// `tidesync client --db DB args...`.
pub fn client(db: &Path, args: &[&str]) -> Output {
    let mut all = vec!["client", "--db", path(db)];
    all.extend_from_slice(args);
    tidesync(&all)
}

/// The arguments of `tidesync client ... sync` against `url` with `token` for `space`,
/// giving up after `timeout` seconds.
pub fn sync_args<'a>(
    url: &'a str,
    token: &'a str,
    space: &'a str,
    timeout: &'a str,
) -> [&'a str; 9] {
    [
        "--server",
        url,
        "--token",
        token,
        "--space",
        space,
        "sync",
        "--timeout",
        timeout,
    ]
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
    /// `tidesync serve` on a free port of the loopback interface.
    pub fn start(data_dir: &Path) -> Server {
        Server::start_listening(data_dir, "127.0.0.1:0")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// `tidesync serve` listening on `listen` (HOST:PORT), killed on drop.
    pub fn start_listening(data_dir: &Path, listen: &str) -> Server {
        Server::start_with(&["--data-dir", path(data_dir), "--listen", listen])
    }

    /// `tidesync serve args...` (which must make it listen on a free port), killed on drop.
    pub fn start_with(args: &[&str]) -> Server {
        let mut child = command()
            .arg("serve")
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn serve");
        let stdout = child.stdout.take().expect("stdout");
        let banner: Vec<String> = BufReader::new(stdout)
            .lines()
            .take(3)
            .map(|l| l.expect("banner"))
            .collect();
        let first = banner.first().expect("a banner");
        let url = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {first:?}"))
            .to_owned();
        Server { child, url }
    }
}

/// A port nothing listens on (bound and closed again).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Runs `command` to the end, or kills it after `limit` and returns `None`.
pub fn output_within(command: &mut Command, limit: std::time::Duration) -> Option<Output> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tidesync");
    wait_within(&mut child, limit)
}

/// Waits for `child` (spawned with piped stdout and stderr) to end, or kills it after
/// `limit` and returns `None`.
pub fn wait_within(child: &mut Child, limit: std::time::Duration) -> Option<Output> {
    use std::io::Read;
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stdout = Vec::new();
            let mut stderr = Vec::new();
            if let Some(mut out) = child.stdout.take() {
                out.read_to_end(&mut stdout).expect("stdout");
            }
            if let Some(mut err) = child.stderr.take() {
                err.read_to_end(&mut stderr).expect("stderr");
            }
            return Some(Output {
                status,
                stdout,
                stderr,
            });
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A free port below Linux's ephemeral range (32768–60999), so that no outgoing connection
/// (of the test's clients or of other tests) takes it while the server on it is down and
/// restarting.
pub fn restartable_port() -> u16 {
    loop {
        let port = rand::random_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A log file to append a child's output to.
pub fn append(path: &Path) -> Stdio {
    Stdio::from(
        std::fs::File::options()
            .create(true)
            .append(true)
            .open(path)
            .expect("open the log"),
    )
}

/// The last 30 lines of a log file (empty if it cannot be read).
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
