//! The configuration file: its shape, precedence (flag > environment > file > default),
//! every kind of error at its line, relative paths, and secrets kept out of what is shown.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tidesync_protocol::CollectionName;
use tidesync_server::config_file::{
    resolve, ConfigErrors, DatabaseUrl, Location, LogFormat, Origin, Overrides, Resolved,
    StorageConfig,
};
use tidesync_server::{Limits, Policy};

fn no_env(_: &str) -> Option<String> {
    None
}

/// Writes `text` as `name` in a fresh directory; returns the directory (kept alive) and path.
fn write(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write config");
    (dir, path)
}

fn ok(path: &Path) -> Resolved {
    match resolve(Some(path), &Overrides::default(), &no_env) {
        Ok(resolved) => resolved,
        Err(e) => panic!("{e}"),
    }
}

fn errors(text: &str) -> ConfigErrors {
    let (_dir, path) = write("tidesync.toml", text);
    match resolve(Some(&path), &Overrides::default(), &no_env) {
        Ok(r) => panic!("expected errors, resolved:\n{}", r.to_toml()),
        Err(e) => e,
    }
}

/// The (line, message, hint) of each diagnostic.
fn lines(e: &ConfigErrors) -> Vec<(usize, String, String)> {
    e.diagnostics
        .iter()
        .map(|d| match &d.at {
            Location::File { line, .. } => {
                (*line, d.message.clone(), d.hint.clone().unwrap_or_default())
            }
            other => panic!("not a file position: {other:?}"),
        })
        .collect()
}

fn data_dir(r: &Resolved) -> &Path {
    match &r.config.storage {
        StorageConfig::Sqlite { data_dir } => data_dir,
        other => panic!("not SQLite: {other:?}"),
    }
}

#[test]
fn the_issue_shape_resolves_and_everything_else_is_default() {
    let (dir, path) = write(
        "tidesync.toml",
        "listen = \"127.0.0.1:8787\"\ndata_dir = \"./tidesync-data\"\n",
    );
    let r = ok(&path);
    assert_eq!(r.config.listen.text, "127.0.0.1:8787");
    assert_eq!(data_dir(&r), dir.path().join("./tidesync-data"));
    assert_eq!(r.origin("listen"), Origin::File);
    assert_eq!(r.origin("limits.max_body_bytes"), Origin::Default);
    let d = Limits::default();
    assert_eq!(r.config.limits.max_body_bytes, d.max_body_bytes);
    assert_eq!(r.config.limits.heartbeat, d.heartbeat);
    assert!(r.config.limits.compression);
    assert_eq!(r.config.rules.max_clock_skew, Duration::from_secs(60));
    assert_eq!(r.config.rules.policies.default, Policy::Lww);
    assert_eq!(r.config.log_format, LogFormat::Text);
    let shown = r.to_toml();
    assert!(shown.contains("max_body_bytes = 16777216"), "{shown}");
    assert!(shown.contains("# default"), "{shown}");
    assert!(shown.contains("heartbeat = \"15s\""), "{shown}");
}

#[test]
fn every_key_is_read() {
    let (_dir, path) = write(
        "tidesync.toml",
        r#"
listen = "127.0.0.1:0"
data_dir = "/var/lib/tidesync"
log_format = "json"
compression = false
max_clock_skew = "2m"

[policies]
default = "server_wins"
collections = { todos = "strict", "notes-2" = "lww" }

[limits]
max_body_bytes = 1_000_000
max_mutations_per_push = 100
max_doc_bytes = 10_000
max_doc_depth = 8
max_spaces_per_pull = 7
default_pull_limit = 50
max_pull_limit = 500
max_event_streams = 3
max_header_bytes = 4096
heartbeat = "5s"
header_read_timeout = "10s"
body_read_timeout = "1m 30s"
"#,
    );
    let r = ok(&path);
    let c = &r.config;
    assert_eq!(data_dir(&r), Path::new("/var/lib/tidesync"));
    assert_eq!(c.log_format, LogFormat::Json);
    assert!(!c.limits.compression);
    assert_eq!(c.rules.max_clock_skew, Duration::from_secs(120));
    assert_eq!(c.rules.policies.default, Policy::ServerWins);
    let todos = CollectionName::new("todos").expect("name");
    assert_eq!(c.rules.policies.of(&todos), Policy::Strict);
    let l = &c.limits;
    assert_eq!(
        (
            l.max_body_bytes,
            l.max_mutations_per_push,
            l.max_doc_bytes,
            l.max_doc_depth
        ),
        (1_000_000, 100, 10_000, 8)
    );
    assert_eq!(
        (
            l.max_spaces_per_pull,
            l.default_pull_limit,
            l.max_pull_limit
        ),
        (7, 50, 500)
    );
    assert_eq!((l.max_event_streams, l.max_header_bytes), (3, 4096));
    assert_eq!(l.heartbeat, Duration::from_secs(5));
    assert_eq!(l.header_read_timeout, Duration::from_secs(10));
    assert_eq!(l.body_read_timeout, Duration::from_secs(90));
}

#[test]
fn what_config_check_prints_is_a_file_that_resolves_the_same() {
    let (_dir, path) = write(
        "tidesync.toml",
        "data_dir = \"data\"\nmax_clock_skew = \"1500ms\"\n[policies.collections]\n\"notes-2\" = \"strict\"\ntodos = \"server_wins\"\n[limits]\nheartbeat = \"90s\"\n",
    );
    let first = ok(&path);
    let shown = first.to_toml();
    let (_dir2, again) = write("again.toml", &shown);
    let second = ok(&again);
    // The same keys and values; only the origin comments differ (all is the file now).
    let values = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(" # ").next().unwrap_or(l).trim_end().to_owned())
            .collect()
    };
    assert_eq!(values(&second.to_toml()), values(&shown));
    assert!(!second.to_toml().contains("# default"));
    assert_eq!(
        format!("{:?}", second.config.rules),
        format!("{:?}", first.config.rules)
    );
    assert_eq!(
        format!("{:?}", second.config.limits),
        format!("{:?}", first.config.limits)
    );
    assert_eq!(second.config.storage, first.config.storage);
}

#[test]
fn relative_paths_are_resolved_against_the_files_directory() {
    let (dir, path) = write("tidesync.toml", "data_dir = \"state/db\"\n");
    // Read from another working directory's point of view: the path names the file's
    // directory, not the process's.
    let r = ok(&path);
    assert_eq!(data_dir(&r), dir.path().join("state/db"));
    // A relative path to the file keeps relative paths relative to it.
    let nested = dir.path().join("conf");
    std::fs::create_dir(&nested).expect("mkdir");
    std::fs::write(nested.join("t.toml"), "data_dir = \"../data\"\n").expect("write");
    let r = ok(&nested.join("t.toml"));
    assert_eq!(data_dir(&r), nested.join("../data"));
    // The default is not from the file: relative to the working directory, as without one.
    let (_d, path) = write("empty.toml", "");
    assert_eq!(data_dir(&ok(&path)), Path::new("./tidesync-data"));
}

#[test]
fn flags_override_the_environment_which_overrides_the_file() {
    let (_dir, path) = write(
        "tidesync.toml",
        "listen = \"127.0.0.1:1\"\ndata_dir = \"from-file\"\nlog_format = \"json\"\ncompression = true\nmax_clock_skew = \"5s\"\n[policies]\ndefault = \"strict\"\ncollections = { todos = \"strict\", notes = \"strict\" }\n",
    );
    let env = |name: &str| (name == "TIDESYNC_DATA_DIR").then(|| "/from/env".to_owned());
    let r = resolve(Some(&path), &Overrides::default(), &env).expect("resolves");
    assert_eq!(data_dir(&r), Path::new("/from/env"));
    assert_eq!(r.origin("data_dir"), Origin::Env("TIDESYNC_DATA_DIR"));
    assert!(
        r.to_toml().contains("# from TIDESYNC_DATA_DIR"),
        "{}",
        r.to_toml()
    );

    let flags = Overrides {
        listen: Some("127.0.0.1:2".parse().expect("addr")),
        data_dir: Some("/from/flag".into()),
        default_policy: Some(Policy::Lww),
        policies: vec![(
            CollectionName::new("todos").expect("name"),
            Policy::ServerWins,
        )],
        max_clock_skew: Some(Duration::from_millis(250)),
        compression: Some(false),
        log_format: Some(LogFormat::Text),
        ..Overrides::default()
    };
    let r = resolve(Some(&path), &flags, &env).expect("resolves");
    let c = &r.config;
    assert_eq!(c.listen.text, "127.0.0.1:2");
    assert_eq!(data_dir(&r), Path::new("/from/flag"));
    assert_eq!(c.rules.policies.default, Policy::Lww);
    let of = |n: &str| c.rules.policies.of(&CollectionName::new(n).expect("name"));
    assert_eq!(of("todos"), Policy::ServerWins);
    assert_eq!(
        of("notes"),
        Policy::Strict,
        "the file's other collections stay"
    );
    assert_eq!(c.rules.max_clock_skew, Duration::from_millis(250));
    assert!(!c.limits.compression);
    assert_eq!(c.log_format, LogFormat::Text);
    assert_eq!(r.origin("data_dir"), Origin::Flag("--data-dir"));
    assert_eq!(r.origin("policies.collections.notes"), Origin::File);
    let shown = r.to_toml();
    assert!(shown.contains("# from --policy"), "{shown}");
    assert!(shown.contains("# from --no-compression"), "{shown}");
}

#[test]
fn a_database_url_replaces_the_data_directory_and_is_never_shown() {
    let url = "postgres://app:hunter2@db.internal:6543/sync?options=-csearch_path%3Dts";
    let (_dir, path) = write(
        "tidesync.toml",
        &format!("database_url = \"{url}\"\ndb_pool_size = 4\n"),
    );
    let r = ok(&path);
    let StorageConfig::Postgres {
        url: got,
        pool_size,
    } = &r.config.storage
    else {
        panic!("not PostgreSQL: {:?}", r.config.storage);
    };
    assert_eq!((got.expose(), *pool_size), (url, 4));
    let shown = r.to_toml();
    let debug = format!("{r:?}");
    for text in [&shown, &debug] {
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("app@db.internal:6543/sync"), "{text}");
    }
    assert!(shown.contains("database_url = \"<hidden>\""), "{shown}");

    // From the environment, over the file's data_dir; a flag over both.
    let (_dir, path) = write("tidesync.toml", "data_dir = \"d\"\n");
    let env = |name: &str| (name == "TIDESYNC_DATABASE_URL").then(|| url.to_owned());
    let r = resolve(Some(&path), &Overrides::default(), &env).expect("resolves");
    assert!(matches!(
        r.config.storage,
        StorageConfig::Postgres { pool_size: 16, .. }
    ));
    assert!(!r.to_toml().contains("hunter2"));
    let flags = Overrides {
        database_url: Some(DatabaseUrl::new("postgres://other@h/db").expect("url")),
        ..Overrides::default()
    };
    let r = resolve(Some(&path), &flags, &env).expect("resolves");
    let StorageConfig::Postgres { url, .. } = &r.config.storage else {
        panic!("not PostgreSQL");
    };
    assert_eq!(url.target(), "other@h:5432/db");

    // A bad URL's error does not repeat the URL.
    let e = errors("database_url = \"postgres://app:hunter2@\"\n");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    assert_eq!(lines(&e)[0].0, 1, "{e}");
}

#[test]
fn an_unknown_key_is_named_with_its_line_and_the_keys_allowed() {
    let e = errors("listen = \"127.0.0.1:8787\"\n\nlisen = \"x\"\n");
    let found = lines(&e);
    assert_eq!(found.len(), 1, "{e}");
    let (line, message, hint) = &found[0];
    assert_eq!(*line, 3, "{e}");
    assert!(message.contains("unknown key `lisen`"), "{e}");
    assert!(hint.contains("`listen`"), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("tidesync.toml:3:1: unknown key `lisen`"),
        "{text}"
    );

    let e = errors("[limits]\nmax_body_bytes = 10\nmax_bodybytes = 10\n");
    assert_eq!(lines(&e)[0].0, 3, "{e}");
    assert!(lines(&e)[0].2.contains("max_body_bytes"), "{e}");
    let e = errors("[limit]\nmax_body_bytes = 10\n");
    assert_eq!(lines(&e)[0].0, 1, "{e}");
}

#[test]
fn a_syntax_error_or_a_wrong_type_stops_at_its_line() {
    let e = errors("listen = \"127.0.0.1:8787\"\ndata_dir = \"unclosed\n");
    assert_eq!(e.diagnostics.len(), 1);
    assert_eq!(lines(&e)[0].0, 2, "{e}");

    let e = errors("[limits]\nmax_body_bytes = \"16MiB\"\n");
    let (line, message, hint) = &lines(&e)[0];
    assert_eq!(*line, 2, "{e}");
    assert!(message.contains("invalid type"), "{e}");
    assert!(hint.contains("bare integers"), "{e}");
}

#[test]
fn every_bad_value_is_reported_each_at_its_line() {
    let e = errors(
        r#"listen = "no port here"
log_format = "yaml"
max_clock_skew = "soon"
data_dir = "   "

[policies]
default = "newest"
collections = { "bad name!" = "lww", todos = "strictest" }

[limits]
max_body_bytes = 0
max_mutations_per_push = -5
max_doc_depth = 500
default_pull_limit = 2000
max_pull_limit = 1000
heartbeat = "0s"
body_read_timeout = "ten seconds"
"#,
    );
    let found = lines(&e);
    let text = e.to_string();
    let expect = [
        (1, "listen"),
        (2, "unknown log format"),
        (3, "not a duration"),
        (4, "data_dir is empty"),
        (7, "unknown conflict policy \"newest\""),
        (8, "not a collection name"),
        (8, "unknown conflict policy \"strictest\""),
        (11, "max_body_bytes = 0 is too small"),
        (12, "max_mutations_per_push = -5 is too small"),
        (13, "max_doc_depth = 500 is too large"),
        (16, "heartbeat = \"0s\": a zero duration"),
        (17, "body_read_timeout = \"ten seconds\" is not a duration"),
        (
            14,
            "default_pull_limit (2000) is larger than max_pull_limit (1000)",
        ),
    ];
    for (line, needle) in expect {
        assert!(
            found
                .iter()
                .any(|(l, m, _)| *l == line && m.contains(needle)),
            "{needle:?} on line {line} in:\n{text}"
        );
    }
    assert_eq!(found.len(), expect.len(), "{text}");
    assert!(
        found.iter().all(|(_, _, hint)| !hint.is_empty()),
        "every error has a hint:\n{text}"
    );
    assert!(text.ends_with("has 13 errors"), "{text}");
    assert!(
        text.contains("tidesync.toml:11:18: max_body_bytes = 0 is too small"),
        "{text}"
    );
}

#[test]
fn a_bad_pool_size_is_reported_even_without_a_database_url() {
    let e = errors("data_dir = \"d\"\ndb_pool_size = 0\n");
    assert_eq!(lines(&e)[0].0, 2, "{e}");
    assert!(
        lines(&e)[0].1.contains("db_pool_size = 0 is too small"),
        "{e}"
    );
}

#[test]
fn data_dir_and_database_url_together_are_refused() {
    let e = errors("data_dir = \"d\"\ndatabase_url = \"postgres://u@h/db\"\n");
    let (line, message, _) = &lines(&e)[0];
    assert_eq!(*line, 2);
    assert!(message.contains("data_dir is on line 1"), "{e}");
}

#[test]
fn a_missing_file_is_named_with_what_to_do() {
    let path = Path::new("/nonexistent/tidesync.toml");
    let e = resolve(Some(path), &Overrides::default(), &no_env).expect_err("missing");
    assert_eq!(e.diagnostics.len(), 1);
    let d = &e.diagnostics[0];
    assert_eq!(d.at, Location::WholeFile(path.to_path_buf()));
    assert!(d.message.contains("cannot read"), "{e}");
    assert!(
        d.hint.as_deref().unwrap_or("").contains("check the path"),
        "{e}"
    );
}

#[test]
fn without_a_file_flags_and_defaults_resolve() {
    let r = resolve(None, &Overrides::default(), &no_env).expect("defaults");
    assert_eq!(r.config.listen.text, "127.0.0.1:8787");
    assert_eq!(data_dir(&r), Path::new("./tidesync-data"));
    let env = |name: &str| (name == "TIDESYNC_DATABASE_URL").then(|| "not a url".to_owned());
    let e = resolve(None, &Overrides::default(), &env).expect_err("bad env");
    assert_eq!(e.diagnostics[0].at, Location::Env("TIDESYNC_DATABASE_URL"));
}

#[test]
fn the_admin_token_comes_from_the_file_the_environment_or_a_flag_and_is_never_shown() {
    let secret = "0123456789abcdef-file-token";
    let (dir, path) = write(
        "tidesync.toml",
        "[admin]\ntoken_file = \"admin-token.txt\"\n",
    );
    std::fs::write(dir.path().join("admin-token.txt"), format!("{secret}\n")).expect("write");
    let r = ok(&path);
    assert!(
        r.config.admin.is_some(),
        "token_file is read against the file's directory"
    );
    let shown = r.to_toml();
    assert!(
        shown.contains("[admin]") && !shown.contains(secret),
        "{shown}"
    );

    let env_token = |name: &str| {
        (name == "TIDESYNC_ADMIN_TOKEN").then(|| "fedcba9876543210-from-env".to_owned())
    };
    let r = resolve(Some(&path), &Overrides::default(), &env_token).expect("resolves");
    assert_eq!(r.origin("admin.token"), Origin::Env("TIDESYNC_ADMIN_TOKEN"));
    assert!(!r.to_toml().contains("from-env"));

    let none = ok(&write("tidesync.toml", "").1);
    assert!(none.config.admin.is_none());
    assert!(none.to_toml().contains("the dashboard at /admin is off"));
}

#[test]
fn a_bad_admin_section_is_reported_at_its_line() {
    let e = errors("listen = \"127.0.0.1:0\"\n\n[admin]\ntoken = \"short\"\n");
    let found = lines(&e);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].1.contains("at least 16"), "{found:?}");

    let e = errors("[admin]\ntoken = \"0123456789abcdef\"\ntoken_file = \"t.txt\"\n");
    assert!(lines(&e)[0].1.contains("keep one"), "{e}");

    let e = errors("[admin]\ntokn = \"0123456789abcdef\"\n");
    assert!(lines(&e)[0].1.contains("unknown key"), "{e}");
}

#[test]
fn the_jwt_section_of_the_issue_resolves_and_its_secret_is_never_shown() {
    let secret = "a-test-secret-of-at-least-thirty-two-bytes";
    let text = format!(
        "listen = \"127.0.0.1:8787\"\ndata_dir = \"./tidesync-data\"\n[auth.jwt]\nalgorithm = \"HS256\"\nsecret = \"{secret}\"\nuser_claim = \"sub\"\nspaces = [\"user:{{sub}}\"]\n"
    );
    let (_dir, path) = write("tidesync.toml", &text);
    let r = ok(&path);
    let jwt = r.config.jwt.as_ref().expect("JWT auth on");
    assert_eq!(jwt.config.spaces, vec!["user:{sub}".to_owned()]);
    let shown = r.to_toml();
    assert!(
        shown.contains("[auth.jwt]") && shown.contains("user:{sub}"),
        "{shown}"
    );
    assert!(!shown.contains(secret), "{shown}");
}

#[test]
fn a_bad_jwt_section_is_reported_at_its_line_with_what_to_fix() {
    // A key file that is not there: found by `config check`, not at the first request.
    let e = errors(
        "listen = \"127.0.0.1:0\"\n[auth.jwt]\nalgorithm = \"RS256\"\npublic_key_file = \"missing.pem\"\nspaces = [\"user:{sub}\"]\n",
    );
    let found = lines(&e);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].1.contains("missing.pem"), "{found:?}");
    // A secret too short to resist guessing.
    let e = errors(
        "[auth.jwt]\nalgorithm = \"HS256\"\nsecret = \"short\"\nspaces = [\"user:{sub}\"]\n",
    );
    assert!(lines(&e)[0].1.contains("[auth.jwt]"), "{e}");
    // An unknown key inside the section.
    let e = errors("[auth.jwt]\nalgorithm = \"HS256\"\nsecrett = \"x\"\n");
    assert!(lines(&e)[0].1.contains("unknown"), "{e}");
}

#[test]
fn schemas_load_from_files_next_to_the_config_and_each_bad_one_is_reported_at_its_line() {
    let (dir, path) = write(
        "tidesync.toml",
        "[schemas.todos]\nfile = \"schemas/todo.json\"\n\n[schemas.notes]\njson = '{\"type\": \"object\", \"required\": [\"body\"]}'\n",
    );
    std::fs::create_dir(dir.path().join("schemas")).expect("mkdir");
    std::fs::write(
        dir.path().join("schemas/todo.json"),
        r#"{"type": "object", "properties": {"title": {"type": "string", "minLength": 1}}}"#,
    )
    .expect("write schema");
    let r = ok(&path);
    let names: Vec<&str> = r
        .config
        .rules
        .schemas
        .collections()
        .map(|c| c.as_str())
        .collect();
    assert_eq!(names, ["notes", "todos"]);
    let shown = r.to_toml();
    assert!(
        shown.contains("[schemas.todos]") && shown.contains("todo.json"),
        "{shown}"
    );

    let e = errors(
        "[schemas.todos]\nfile = \"missing.json\"\n\n[schemas.notes]\njson = '{\"type\": 12}'\n\n[schemas.\"bad name!\"]\njson = '{}'\n",
    );
    let found = lines(&e);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(
        found.iter().any(|(_, m, _)| m.contains("missing.json")),
        "{found:?}"
    );
    assert!(
        found.iter().any(|(_, m, _)| m.contains("notes")),
        "{found:?}"
    );
    assert!(
        found.iter().any(|(_, m, _)| m.contains("bad name!")),
        "{found:?}"
    );
}

#[test]
fn the_horizon_section_resolves_with_defaults_and_a_bad_value_is_reported_at_its_line() {
    let none = ok(&write("tidesync.toml", "").1);
    assert_eq!(
        none.config.horizon,
        tidesync_server::HorizonConfig::default()
    );
    assert!(
        none.to_toml().contains("retain_deleted = \"30days\""),
        "{}",
        none.to_toml()
    );

    let r = ok(&write(
        "tidesync.toml",
        "[horizon]\nretain_deleted = \"7d\"\nprune_batch = 500\n",
    )
    .1);
    assert_eq!(
        r.config.horizon.retain_deleted,
        Duration::from_secs(7 * 24 * 3600)
    );
    assert_eq!(r.config.horizon.prune_batch, 500);
    assert_eq!(r.config.horizon.prune_interval, Duration::from_secs(60));

    let e = errors("listen = \"127.0.0.1:0\"\n\n[horizon]\nretain_deleted = \"0s\"\n");
    let found = lines(&e);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, 3, "reported at the section: {found:?}");
    assert!(found[0].1.contains("retain_deleted"), "{found:?}");
}
