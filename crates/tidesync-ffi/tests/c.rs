//! C programs against the built library: compiled here with the system C compiler against
//! `include/tidesync.h` and `libtidesync`, run against a real server on loopback, and run again
//! under valgrind's memcheck, which must report no error and no definite leak.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tidesync_client::SpaceName;
use tidesync_server::auth::Grants;
use tidesync_server::{EmbeddedServer, MergeRules};

/// The folder holding `libtidesync.so` of this build (next to the test binary's `deps/`).
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap().to_owned();
    let found = [deps.clone(), deps.parent().unwrap().to_owned()]
        .into_iter()
        .find(|d| d.join("libtidesync.so").exists());
    found.expect("libtidesync.so is built with the tests")
}

fn compile(source: &str, dir: &Path) -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exe = dir.join(source.trim_end_matches(".c"));
    let lib = lib_dir();
    let out = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-O1"])
        .arg("-I")
        .arg(crate_dir.join("include"))
        .arg(crate_dir.join("tests/c").join(source))
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", lib.display()))
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-ltidesync", "-lpthread"])
        .output()
        .expect("a C compiler (cc) is installed");
    assert!(
        out.status.success(),
        "compiling {source} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

struct Setup {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    server: EmbeddedServer,
    token: String,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let server =
        EmbeddedServer::sqlite(&dir.path().join("server.db"), MergeRules::default()).unwrap();
    let token = server
        .storage()
        .create_token(&Grants {
            user: "c".into(),
            read: Default::default(),
            write: [SpaceName::new("team:c").unwrap()].into_iter().collect(),
        })
        .unwrap();
    let path = dir.path().to_owned();
    Setup {
        _dir: dir,
        dir: path,
        server,
        token,
    }
}

fn run(setup: &Setup, exe: &Path, wrapper: &[&str], clients: &str) -> Output {
    let clients_dir = setup.dir.join(clients);
    std::fs::create_dir_all(&clients_dir).unwrap();
    let (program, args) = match wrapper.split_first() {
        Some((first, rest)) => (
            *first,
            rest.iter()
                .map(|s| s.to_string())
                .chain([exe.display().to_string()])
                .collect::<Vec<_>>(),
        ),
        None => (exe.to_str().unwrap(), Vec::new()),
    };
    Command::new(program)
        .args(args)
        .env("TIDESYNC_URL", setup.server.url())
        .env("TIDESYNC_TOKEN", &setup.token)
        .env("TIDESYNC_DIR", &clients_dir)
        .output()
        .unwrap()
}

fn report(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn c_drives_offline_writes_online_and_a_second_client_converges() {
    let setup = setup();
    let exe = compile("offline_online.c", &setup.dir);
    let out = run(&setup, &exe, &[], "plain");
    assert!(out.status.success(), "{}", report(&out));
}

#[test]
fn the_c_story_has_no_memory_error_and_no_definite_leak_under_valgrind() {
    let have = Command::new("valgrind").arg("--version").output();
    if have.is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "valgrind is needed in CI (Debian package valgrind)"
        );
        eprintln!("SKIPPED: valgrind is not installed");
        return;
    }
    let setup = setup();
    let exe = compile("offline_online.c", &setup.dir);
    let out = run(
        &setup,
        &exe,
        &[
            "valgrind",
            "--quiet",
            "--error-exitcode=99",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
            "--show-leak-kinds=definite",
        ],
        "valgrind",
    );
    assert!(out.status.success(), "{}", report(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("definitely lost") && !stderr.contains("Invalid "),
        "{}",
        report(&out)
    );
}
