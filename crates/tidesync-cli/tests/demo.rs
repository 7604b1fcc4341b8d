//! `tidesync demo`, the built binary at small sizes: its summary tells the whole story and its
//! exit code says whether the replicas converged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

#[test]
fn the_demo_converges_and_its_summary_tells_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let out = tidesync(&[
        "demo",
        "--clients",
        "2",
        "--ops",
        "30",
        "--plain",
        "--seed",
        "1",
        "--data-dir",
        path(&data),
    ]);
    let text = ok(&out);
    assert!(
        stderr(&out).is_empty(),
        "nothing on stderr: {}",
        stderr(&out)
    );
    // The seed is printed, so a run can be replayed.
    assert!(text.contains("seed 1 (replay with --seed 1)"), "{text}");
    // Live progress in plain lines.
    assert!(
        text.contains("== offline: every client writes 30 times"),
        "{text}"
    );
    // One row per client, each equal to the server.
    for name in ["c1", "c2"] {
        let row = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("row {name} in {text}"));
        assert!(row.trim_end().ends_with('✔'), "{row}");
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[1], "30", "local ops of {name}: {row}");
        assert!(cells[2].parse::<u64>().unwrap() >= 30, "pushed: {row}");
    }
    // The staged conflict, resolved automatically.
    assert!(text.contains("conflicts (1):"), "{text}");
    assert!(text.contains("team:demo/todos/offsite"), "{text}");
    assert!(
        text.contains("resolved automatically with KeepLocal"),
        "{text}"
    );
    // The rejection, with its code and what happened next.
    assert!(text.contains("rejections (1):"), "{text}");
    assert!(text.contains("stale_base"), "{text}");
    assert!(text.contains("retried on the fresh base"), "{text}");
    assert!(text.contains("applied by the server"), "{text}");
    // The kill/reopen check: queue and draft came back.
    assert!(text.contains("kill/reopen of c2: ✔"), "{text}");
    assert!(text.contains("queue restored"), "{text}");
    assert!(text.contains("draft restored"), "{text}");
    assert!(text.contains("time:"), "{text}");
    assert!(
        text.contains("✔ final equality check: converged, all 2 clients equal the server"),
        "{text}"
    );

    // --data-dir keeps the databases: the client tools can inspect them afterwards.
    let status = json(&tidesync(&[
        "client",
        "--db",
        path(&data.join("client-c2.db")),
        "--json",
        "status",
    ]));
    assert_eq!(status["pending"], 0, "{status}");
    assert_eq!(status["has_synced"], true, "{status}");
    let offsite = json(&tidesync(&[
        "client",
        "--db",
        path(&data.join("client-c1.db")),
        "--json",
        "get",
        "team:demo/todos/offsite",
    ]));
    assert_eq!(
        offsite["doc"]["title"], "offsite in Lisbon (c2)",
        "{offsite}"
    );
}

#[test]
fn the_same_seed_makes_the_same_edits() {
    let summary = |seed: &str| {
        let text = ok(&tidesync(&[
            "demo",
            "--clients",
            "2",
            "--ops",
            "25",
            "--plain",
            "--seed",
            seed,
        ]));
        // The record counts and the final version depend only on the edits.
        text.lines()
            .filter(|l| l.starts_with("total ") || l.starts_with("c1 ") || l.starts_with("c2 "))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let a = summary("42");
    assert_eq!(a.len(), 3, "{a:?}");
    assert_eq!(a, summary("42"));
}

#[test]
fn bad_demo_flags_and_directories_are_clear_errors() {
    let out = tidesync(&["demo", "--clients", "1"]);
    assert_clear_error(&out, "--clients");
    assert_eq!(out.status.code(), Some(2));
    let out = tidesync(&["demo", "--ops", "many"]);
    assert_clear_error(&out, "--ops");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"not a directory").unwrap();
    let out = tidesync(&["demo", "--plain", "--data-dir", path(&file.join("sub"))]);
    assert_clear_error(&out, "cannot create data directory");
    let out = tidesync(&["demo", "--plain", "--data-dir", path(dir.path())]);
    assert_clear_error(&out, "is not empty");
}
