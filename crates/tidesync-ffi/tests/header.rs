//! The committed C header is what cbindgen generates from the source: a change to the ABI
//! without a fresh header fails here. `TIDESYNC_UPDATE_HEADER=1 cargo test -p tidesync-ffi
//! --test header` rewrites it (then run `python3 bindings/dart/tool/check_bindings.py`: the
//! Dart bindings must follow).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

#[test]
fn the_committed_header_is_what_cbindgen_generates() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("config");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut generated);
    let path = crate_dir.join("include/tidesync.h");
    if std::env::var_os("TIDESYNC_UPDATE_HEADER").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/tidesync.h differs from what the source generates: run \
         TIDESYNC_UPDATE_HEADER=1 cargo test -p tidesync-ffi --test header, then commit it"
    );
}
