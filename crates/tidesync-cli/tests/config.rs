//! `tidesync serve --config FILE` and `tidesync config check FILE` as an operator runs them:
//! the example file in the repository checks and serves; flags override the file and the
//! environment overrides it too; every error comes with its line; secrets are never printed.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{command, ok, output_within, path, stderr, stdout, tidesync, Server};

/// `tidesync.example.toml` at the repository root.
fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tidesync.example.toml")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let file = dir.join(name);
    std::fs::write(&file, text).expect("write config");
    file
}

/// The `error:` lines of stderr: exactly one, the last, naming `file`; and no panic.
fn assert_summary(err: &str, file: &Path, errors: usize) {
    let error_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error_lines.len(), 1, "{err}");
    assert_eq!(err.lines().last(), Some(error_lines[0]), "{err}");
    let noun = if errors == 1 { "error" } else { "errors" };
    assert!(
        error_lines[0].ends_with(&format!("{} has {errors} {noun}", file.display())),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[tokio::test]
async fn the_example_file_checks_and_serves_with_flags_over_it() {
    let out = tidesync(&["config", "check", path(&example())]);
    let shown = ok(&out);
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    for line in [
        "listen = \"127.0.0.1:8787\"",
        "log_format = \"text\"",
        "default = \"lww\"",
        "max_body_bytes = 16777216",
        "body_read_timeout = \"1m\"",
    ] {
        assert!(shown.contains(line), "{line:?} in:\n{shown}");
    }

    // The example shows every key there is (some commented out), so it stays the reference.
    let text = std::fs::read_to_string(example()).expect("example");
    for line in shown
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(" = "))
    {
        let key = line.split(" = ").next().unwrap_or(line);
        assert!(
            text.lines()
                .any(|l| l.trim_start_matches("# ").starts_with(&format!("{key} = "))),
            "{key} is not in tidesync.example.toml"
        );
    }

    // The example names ./tidesync-data and 127.0.0.1:8787; the flags win.
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let server = Server::start_with(&[
        "--config",
        path(&example()),
        "--data-dir",
        path(&data),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!server.url.ends_with(":8787"), "{}", server.url);
    let health = reqwest::get(format!("{}/healthz", server.url))
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    assert!(
        data.join("server.db").exists(),
        "the flag's data dir is used"
    );
}

#[test]
fn the_global_log_format_flag_overrides_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(
        dir.path(),
        "t.toml",
        "log_format = \"text\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n",
    );
    // Its first log line is enough: then it is stopped.
    let mut child = command()
        .args(["serve", "--config", path(&file), "--log-format", "json"])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let stderr = child.stderr.take().expect("stderr");
    let first = std::io::BufRead::lines(std::io::BufReader::new(stderr))
        .next()
        .expect("a log line")
        .expect("utf-8");
    let _ = child.kill();
    let _ = child.wait();
    let line: serde_json::Value =
        serde_json::from_str(&first).unwrap_or_else(|e| panic!("not JSON ({e}): {first}"));
    assert_eq!(line["fields"]["message"], "configuration read", "{line}");
}

#[test]
fn every_error_is_printed_with_its_line_and_nothing_starts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(
        dir.path(),
        "bad.toml",
        "listen = \"127.0.0.1:0\"\nmax_clock_skew = \"a while\"\n\n[policies]\ndefault = \"first_wins\"\n\n[limits]\nmax_event_streams = 0\nheartbeat = \"0ms\"\n",
    );
    let check = tidesync(&["config", "check", path(&file)]);
    let serve = output_within(
        command().args(["serve", "--config", path(&file)]),
        Duration::from_secs(20),
    )
    .expect("serve refuses at once");
    for out in [&check, &serve] {
        assert_eq!(out.status.code(), Some(1));
        assert!(stdout(out).is_empty(), "{}", stdout(out));
        let err = stderr(out);
        let at = |line: usize| format!("{}:{line}:", file.display());
        for (line, needle) in [
            (2, "max_clock_skew = \"a while\" is not a duration"),
            (5, "unknown conflict policy \"first_wins\""),
            (8, "max_event_streams = 0 is too small"),
            (9, "heartbeat = \"0ms\": a zero duration"),
        ] {
            assert!(
                err.lines()
                    .any(|l| l.starts_with(&at(line)) && l.contains(needle)),
                "{needle:?} at line {line} in:\n{err}"
            );
        }
        assert_eq!(err.matches("  hint: ").count(), 4, "{err}");
        assert_summary(&err, &file, 4);
    }
    assert!(!dir.path().join("tidesync-data").exists());
}

#[test]
fn an_unknown_key_and_a_missing_file_are_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(dir.path(), "typo.toml", "[limits]\nmax_body_byte = 10\n");
    let out = tidesync(&["config", "check", path(&file)]);
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "{}:2:1: unknown key `max_body_byte`",
            file.display()
        )),
        "{err}"
    );
    assert!(err.contains("`max_body_bytes`"), "the allowed keys: {err}");
    assert_summary(&err, &file, 1);

    let missing = dir.path().join("missing.toml");
    for args in [
        vec!["config", "check", path(&missing)],
        vec!["serve", "--config", path(&missing)],
    ] {
        let out = tidesync(&args);
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert!(
            err.starts_with(&format!(
                "{}: cannot read the configuration file",
                missing.display()
            )),
            "{err}"
        );
        assert_summary(&err, &missing, 1);
    }
}

#[test]
fn relative_paths_are_relative_to_the_file_and_the_environment_overrides_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).expect("mkdir");
    let file = write(
        &conf,
        "tidesync.toml",
        "listen = \"127.0.0.1:0\"\ndata_dir = \"state\"\n",
    );
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let out = command()
        .current_dir(elsewhere.path())
        .args(["config", "check", path(&file)])
        .output()
        .expect("run");
    let shown = ok(&out);
    let expected = format!("data_dir = \"{}\"", conf.join("state").display());
    assert!(shown.contains(&expected), "{expected:?} in:\n{shown}");

    let env_dir = dir.path().join("from-env");
    let out = command()
        .args(["config", "check", path(&file)])
        .env("TIDESYNC_DATA_DIR", &env_dir)
        .output()
        .expect("run");
    let shown = ok(&out);
    let line = shown
        .lines()
        .find(|l| l.starts_with("data_dir = "))
        .expect("data_dir line");
    assert!(line.contains(&env_dir.display().to_string()), "{line}");
    assert!(line.ends_with("# from TIDESYNC_DATA_DIR"), "{line}");

    // serve, started from another directory, puts its database next to the file.
    let mut serve = command();
    serve
        .current_dir(elsewhere.path())
        .args(["serve", "--config", path(&file)])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = serve.spawn().expect("spawn serve");
    let banner: Vec<String> = std::io::BufRead::lines(std::io::BufReader::new(
        child.stdout.take().expect("stdout"),
    ))
    .take(2)
    .map(|l| l.expect("banner"))
    .collect();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        banner[1].contains(&conf.join("state").join("server.db").display().to_string()),
        "{banner:?}"
    );
}

#[test]
fn a_database_password_is_never_printed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = "postgres://app:s3cret-pw@127.0.0.1:5432/app";
    let file = write(
        dir.path(),
        "pg.toml",
        &format!("database_url = \"{url}\"\ndb_pool_size = 4\n"),
    );
    let out = tidesync(&["config", "check", path(&file)]);
    let shown = ok(&out);
    assert!(!shown.contains("s3cret-pw"), "{shown}");
    assert!(shown.contains("database_url = \"<hidden>\""), "{shown}");
    assert!(shown.contains("app@127.0.0.1:5432/app"), "{shown}");
    assert!(shown.contains("db_pool_size = 4"), "{shown}");

    // From the environment, over a file with a data_dir.
    let file = write(dir.path(), "sqlite.toml", "data_dir = \"d\"\n");
    let out = command()
        .args(["config", "check", path(&file)])
        .env("TIDESYNC_DATABASE_URL", url)
        .output()
        .expect("run");
    let shown = ok(&out);
    assert!(!shown.contains("s3cret-pw"), "{shown}");
    assert!(shown.contains("# from TIDESYNC_DATABASE_URL"), "{shown}");
    assert!(!shown.contains("data_dir"), "{shown}");

    // A bad URL is reported without its password.
    let file = write(
        dir.path(),
        "badpg.toml",
        "database_url = \"postgres://app:s3cret-pw@:notaport/app\"\n",
    );
    let out = tidesync(&["config", "check", path(&file)]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(!err.contains("s3cret-pw"), "{err}");
    assert!(
        err.starts_with(&format!("{}:1:16:", file.display())),
        "{err}"
    );
}
