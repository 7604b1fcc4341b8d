//! The README's "Two commands" are what the project really runs: the demo command line runs
//! as written (at small sizes), and the test command is the one CI runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

fn repo_file(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The command lines of the first ```sh block of the "## Two commands" section.
fn two_commands(readme: &str) -> Vec<String> {
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Two commands"))
        .expect("a \"## Two commands\" section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a ```sh block in it");
    block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_readme_names_the_demo_and_the_ci_test_command() {
    let commands = two_commands(&repo_file("README.md"));
    assert_eq!(
        commands,
        [
            "cargo run -p tidesync-cli -- demo",
            "cargo test --workspace"
        ],
        "the README's two commands changed: update this test and .ci/run together"
    );
    let ci = repo_file(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == commands[1]),
        "CI runs the README's test command:\n{ci}"
    );
}

#[test]
fn the_readme_demo_command_runs_as_written() {
    let commands = two_commands(&repo_file("README.md"));
    let demo = &commands[0];
    let (cargo, args) = demo.split_once(" -- ").expect("cargo run ... -- ARGS");
    // `cargo run -p <this crate>` runs this crate's only binary: the one under test here.
    assert_eq!(cargo, format!("cargo run -p {}", env!("CARGO_PKG_NAME")));
    let mut args: Vec<&str> = args.split_whitespace().collect();
    assert_eq!(args, ["demo"]);
    // As written, only smaller (the defaults are 3 clients × 200 writes).
    args.extend(["--clients", "2", "--ops", "20", "--plain", "--seed", "7"]);
    let text = ok(&tidesync(&args));
    assert!(text.contains("✔ final equality check: converged"), "{text}");
}

#[test]
fn the_demo_flags_the_readme_documents_exist() {
    let readme = repo_file("README.md");
    let help = ok(&tidesync(&["demo", "--help"]));
    for flag in [
        "--clients",
        "--ops",
        "--seed",
        "--data-dir",
        "--plain",
        "--timeout",
    ] {
        assert!(
            readme.contains(&format!("`{flag}")),
            "README documents {flag}"
        );
        assert!(help.contains(flag), "demo --help lists {flag}:\n{help}");
    }
    let help = ok(&tidesync(&["client", "--help"]));
    for sub in [
        "put",
        "patch",
        "delete",
        "get",
        "list",
        "pending",
        "conflicts",
        "rejections",
        "restore",
        "status",
        "sync",
    ] {
        assert!(
            help.contains(&format!("  {sub} ")),
            "client --help lists {sub}:\n{help}"
        );
    }
}
