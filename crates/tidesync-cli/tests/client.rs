//! `tidesync client` against `tidesync serve`, both the built binary, over loopback; the local
//! commands without a server; `--json` output; and bad input giving one clear line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

#[test]
fn serve_and_client_sync_a_record_between_two_databases() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let token = create_token(&data);
    let server = Server::start(&data);
    let a = dir.path().join("a.db");
    let b = dir.path().join("b.db");
    let sync =
        |db: &std::path::Path| client(db, &sync_args(&server.url, &token, "user:alice", "20"));

    // Local writes need no server.
    let put = ok(&client(
        &a,
        &["put", "user:alice/todos/t1", r#"{"title":"milk"}"#],
    ));
    assert!(put.contains("queued as seq 1"), "{put}");
    ok(&client(
        &a,
        &["patch", "user:alice/todos/t1", r#"{"done":true}"#],
    ));
    let pending = ok(&client(&a, &["pending"]));
    assert!(pending.contains("seq  tx  op"), "{pending}");
    assert!(
        pending.contains("put    user:alice/todos/t1  queued"),
        "{pending}"
    );
    assert!(pending.contains("2 pending"), "{pending}");
    let pending = json(&client(&a, &["--json", "pending"]));
    assert_eq!(pending["total"], 2);
    assert_eq!(pending["mutations"][0]["op"], "put");
    assert_eq!(pending["mutations"][1]["state"], "queued");

    let synced = ok(&sync(&a));
    assert!(synced.contains("synced: 0 pending"), "{synced}");
    let status = json(&client(&a, &["--json", "status"]));
    assert_eq!(status["pending"], 0, "{status}");
    assert_eq!(status["has_synced"], true);
    assert_eq!(status["cursor"]["user:alice"], 2, "{status}");
    let human = ok(&client(&a, &["status"]));
    assert!(human.contains("pending      0"), "{human}");
    assert!(human.contains("user:alice@2"), "{human}");
    assert!(ok(&client(&a, &["pending"])).contains("the outbox is empty"));

    // Another device gets the record.
    let synced = json(&client(
        &b,
        &[
            "--server",
            &server.url,
            "--token",
            &token,
            "--space",
            "user:alice",
            "--json",
            "sync",
        ],
    ));
    assert_eq!(synced["synced"], true, "{synced}");
    let got = ok(&client(&b, &["get", "user:alice/todos/t1"]));
    assert!(got.contains("\"title\": \"milk\""), "{got}");
    let got = json(&client(&b, &["--json", "get", "user:alice/todos/t1"]));
    assert_eq!(
        got["doc"],
        serde_json::json!({"title": "milk", "done": true})
    );
    assert_eq!(got["pending"], false);
    let list = json(&client(&b, &["--json", "list", "user:alice/todos"]));
    assert_eq!(list["records"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["next"], serde_json::Value::Null);

    // A delete on b reaches a.
    ok(&client(&b, &["delete", "user:alice/todos/t1"]));
    ok(&sync(&b));
    ok(&sync(&a));
    let out = client(&a, &["get", "user:alice/todos/t1"]);
    assert_clear_error(&out, "not found");
}

#[test]
fn local_commands_work_without_a_server_and_speak_json() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("local.db");
    let db = path(&db);
    let put = json(&tidesync(&[
        "client",
        "--db",
        db,
        "--json",
        "put",
        "s1/notes/n/1",
        r#"{"text":"hi"}"#,
    ]));
    assert_eq!(put["seq"], 1);
    assert_eq!(put["key"], "s1/notes/n/1", "ids may contain slashes");
    let list = ok(&tidesync(&[
        "client", "--db", db, "list", "s1/notes", "--limit", "5",
    ]));
    assert!(list.contains("n/1 *"), "{list}");
    assert_eq!(
        json(&tidesync(&["client", "--db", db, "--json", "conflicts"]))["conflicts"],
        serde_json::json!([])
    );
    assert_eq!(
        json(&tidesync(&["client", "--db", db, "--json", "rejections"]))["rejections"],
        serde_json::json!([])
    );
    assert!(ok(&tidesync(&["client", "--db", db, "conflicts"])).contains("no conflicts"));
    let out = tidesync(&["client", "--db", db, "rejections", "retry", "9"]);
    assert_clear_error(&out, "not found");

    // Restoration state: persistent and session entries both survive the CLI's opens.
    ok(&tidesync(&[
        "client",
        "--db",
        db,
        "restore",
        "set",
        "checkout/draft",
        r#"{"qty": 2, "note": "gift"}"#,
    ]));
    ok(&tidesync(&[
        "client",
        "--db",
        db,
        "restore",
        "set",
        "--session",
        "nav/page",
        r#""cart""#,
    ]));
    let tree = json(&tidesync(&["client", "--db", db, "--json", "restore"]));
    let entries = tree["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{tree}");
    let draft = entries.iter().find(|e| e["key"] == "draft").unwrap();
    assert_eq!(draft["bucket"], "checkout");
    assert_eq!(draft["lifetime"], "persistent");
    assert_eq!(
        draft["value"],
        serde_json::json!({"qty": 2, "note": "gift"})
    );
    let human = ok(&tidesync(&["client", "--db", db, "restore"]));
    assert!(
        human.contains("session:\n  nav/page  [cli.value v1]  \"cart\""),
        "{human}"
    );
    ok(&tidesync(&[
        "client",
        "--db",
        db,
        "restore",
        "remove",
        "checkout/draft",
    ]));
    let tree = json(&tidesync(&["client", "--db", db, "--json", "restore"]));
    assert_eq!(tree["entries"].as_array().unwrap().len(), 1, "{tree}");
}

#[test]
fn import_writes_json_lines_as_puts_and_a_bad_line_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("import.db");
    let lines = dir.path().join("todos.jsonl");
    let bulk: String = (0..2_500)
        .map(|i| format!("{{\"id\": \"t{i:04}\", \"doc\": {{\"n\": {i}}}}}\n"))
        .collect();
    std::fs::write(&lines, format!("{bulk}\n")).unwrap();
    let import = json(&client(
        &db,
        &[
            "--json",
            "import",
            "s1/todos",
            &format!("@{}", path(&lines)),
        ],
    ));
    assert_eq!(import["records"], 2_500);
    assert_eq!(
        (import["first_seq"].as_u64(), import["last_seq"].as_u64()),
        (Some(1), Some(2_500))
    );
    let record = json(&client(&db, &["--json", "get", "s1/todos/t2499"]));
    assert_eq!(record["doc"], serde_json::json!({"n": 2_499}));
    let pending = json(&client(&db, &["--json", "pending", "--limit", "2500"]));
    let txs: std::collections::BTreeSet<u64> = pending["mutations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["tx"].as_u64().unwrap())
        .collect();
    assert_eq!(txs.len(), 3, "transactions of 1,000 records: {txs:?}");

    // Every line is checked first: a bad one names its line and nothing is written.
    let fresh = dir.path().join("fresh.db");
    for (text, needle) in [
        ("{\"id\": \"a\", \"doc\": {}}\n{\"id\": \"b\"}\n", "line 2"),
        ("{\"id\": \"a\", \"doc\": {}}\nnot json\n", "line 2"),
        ("{\"id\": \"bad\\u0000id\", \"doc\": {}}\n", "invalid id"),
        ("\n", "no records"),
    ] {
        std::fs::write(&lines, text).unwrap();
        let out = client(
            &fresh,
            &["import", "s1/todos", &format!("@{}", path(&lines))],
        );
        assert_clear_error(&out, needle);
        assert!(!fresh.exists(), "{text:?} created the database");
    }
    let out = client(&fresh, &["import", "s1/todos", r#"{"id": "a", "doc": {}}"#]);
    assert_clear_error(&out, "not inline");
}

#[test]
fn bad_input_is_one_clear_line_and_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let db = path(&db);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["put", "user:alice/todos", "{}"],
            "expected SPACE/COLLECTION/ID",
        ),
        (vec!["put", "bad space/todos/t1", "{}"], "invalid key"),
        (
            vec!["put", "user:alice/todos/t1", "{not json"],
            "invalid JSON document",
        ),
        (
            vec!["put", "user:alice/todos/t1", "[1, 2]"],
            "expected an object",
        ),
        (
            vec!["patch", "user:alice/todos/t1", "42"],
            "invalid JSON patch",
        ),
        (vec!["list", "user:alice"], "expected SPACE/COLLECTION"),
        (vec!["get", "user:alice/todos/t1"], "no client database"),
        (vec!["sync"], "sync needs --server"),
    ];
    for (args, needle) in cases {
        let mut all = vec!["client", "--db", db];
        all.extend(args);
        assert_clear_error(&tidesync(&all), needle);
    }
    // Unknown subcommands and flags: one line too (exit code 2).
    let out = tidesync(&["client", "--db", db, "frobnicate"]);
    assert_clear_error(&out, "frobnicate");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_corrupt_database_is_refused_without_a_panic_or_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("corrupt.db");
    let garbage = vec![0x5a; 8192];
    std::fs::write(&file, &garbage).unwrap();
    for args in [
        vec!["status"],
        vec!["get", "s/c/i"],
        vec!["put", "s/c/i", "{}"],
        vec!["pending"],
        vec!["restore"],
    ] {
        let mut all = vec!["client", "--db", path(&file)];
        all.extend(args);
        assert_clear_error(&tidesync(&all), "not an SQLite database");
    }
    assert_eq!(
        std::fs::read(&file).unwrap(),
        garbage,
        "the file is untouched"
    );
}

#[test]
fn syncing_with_an_unreachable_server_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // closed again: nothing listens there
    let url = format!("http://127.0.0.1:{port}");
    ok(&tidesync(&[
        "client",
        "--db",
        path(&db),
        "put",
        "s/c/i",
        "{}",
    ]));
    let out = tidesync(&[
        "client",
        "--db",
        path(&db),
        "--server",
        &url,
        "--token",
        "tsk_x",
        "--space",
        "s",
        "sync",
        "--timeout",
        "10",
    ]);
    assert_clear_error(&out, "sync failed (network error)");
    // The write is still queued.
    let status = json(&tidesync(&[
        "client",
        "--db",
        path(&db),
        "--json",
        "status",
    ]));
    assert_eq!(status["pending"], 1);
}

#[test]
fn a_bad_token_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    create_token(&data);
    let server = Server::start(&data);
    let db = dir.path().join("c.db");
    let out = tidesync(&[
        "client",
        "--db",
        path(&db),
        "--server",
        &server.url,
        "--token",
        "tsk_wrong",
        "--space",
        "user:alice",
        "sync",
        "--timeout",
        "10",
    ]);
    assert_clear_error(&out, "sync failed (authentication error)");
}

#[test]
fn query_prints_a_table_one_json_document_a_count_and_a_plan() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db");
    let db = path(&db);
    let put = |id: &str, doc: &str| ok(&tidesync(&["client", "--db", db, "put", id, doc]));
    put(
        "user:alice/todos/a",
        r#"{"title":"alpha","due":3,"done":false}"#,
    );
    put(
        "user:alice/todos/b",
        r#"{"title":"beta","due":1,"done":false}"#,
    );
    put(
        "user:alice/todos/c",
        r#"{"title":"gamma","due":2,"done":true}"#,
    );
    let query = |args: &[&str]| {
        let mut all = vec!["client", "--db", db];
        all.extend_from_slice(args);
        tidesync(&all)
    };
    let open = r#"{"done": false}"#;

    let table = ok(&query(&[
        "query",
        "user:alice/todos",
        "--where",
        open,
        "--sort",
        "due",
    ]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "id   done   due  title", "{table}");
    assert!(
        lines[1].starts_with("b *") && lines[2].starts_with("a *"),
        "{table}"
    );
    assert!(lines[3].contains("2 record(s)"), "{table}");

    let page = json(&query(&[
        "--json",
        "query",
        "user:alice/todos",
        "--sort",
        "due:desc",
        "--limit",
        "2",
        "--fields",
        "title",
    ]));
    let titles: Vec<&str> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["doc"]["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["alpha", "gamma"]);
    let next = page["next"].as_str().unwrap();
    let rest = json(&query(&[
        "--json",
        "query",
        "user:alice/todos",
        "--sort",
        "due:desc",
        "--limit",
        "2",
        "--after",
        next,
    ]));
    assert_eq!(rest["records"][0]["id"], "b");
    assert_eq!(rest["next"], serde_json::Value::Null);

    let count = json(&query(&[
        "--json",
        "query",
        "user:alice/todos",
        "--count",
        "--where",
        open,
    ]));
    assert_eq!(count["count"], 2);
    let plan = ok(&query(&[
        "query",
        "user:alice/todos",
        "--explain",
        "--sort",
        "due",
    ]));
    assert!(plan.contains("records"), "{plan}");

    for (args, needle) in [
        (
            vec!["--where", r#"{"due": {"$near": 1}}"#],
            "selector.due.$near",
        ),
        (
            vec!["--where", r#"{"due": {"$gt": [1]}}"#],
            "selector.due.$gt",
        ),
        (vec!["--where", "{nope"], "invalid --where JSON"),
        (vec!["--sort", "due:sideways"], "asc or desc"),
        (vec!["--limit", "0"], "limit"),
        (vec!["--after", "zz"], "after"),
    ] {
        let mut all = vec!["query", "user:alice/todos"];
        all.extend(args);
        assert_clear_error(&query(&all), needle);
    }
    let missing = dir.path().join("missing.db");
    assert_clear_error(
        &tidesync(&["client", "--db", path(&missing), "query", "s/c"]),
        "no client database",
    );
}

#[test]
fn query_watch_prints_each_new_result_as_other_processes_write() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("w.db");
    let db = path(&db);
    ok(&tidesync(&[
        "client",
        "--db",
        db,
        "put",
        "user:alice/todos/a",
        r#"{"done":false}"#,
    ]));
    let mut watcher = common::command()
        .args([
            "client",
            "--db",
            db,
            "--json",
            "query",
            "user:alice/todos",
            "--where",
            r#"{"done": false}"#,
            "--watch",
        ])
        .env_remove("TIDESYNC_SERVER")
        .env_remove("TIDESYNC_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(watcher.stdout.take().unwrap()).lines();
    let mut next =
        || -> serde_json::Value { serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap() };
    let first = next();
    assert_eq!(first["added"], serde_json::json!(["a"]));
    // Another process writes: a new match, then one leaving.
    ok(&tidesync(&[
        "client",
        "--db",
        db,
        "put",
        "user:alice/todos/b",
        r#"{"done":false}"#,
    ]));
    let second = next();
    assert_eq!(second["added"], serde_json::json!(["b"]), "{second}");
    ok(&tidesync(&[
        "client",
        "--db",
        db,
        "patch",
        "user:alice/todos/a",
        r#"{"done":true}"#,
    ]));
    let third = next();
    assert_eq!(third["removed"], serde_json::json!(["a"]), "{third}");
    assert_eq!(third["records"].as_array().unwrap().len(), 1);
    watcher.kill().unwrap();
    watcher.wait().unwrap();
}
