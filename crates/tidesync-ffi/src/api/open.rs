//! `ts_open`, `ts_close`.

use serde_json::json;

use crate::abi::{done, guard, json_arg, TsBuf};
use crate::config::OpenConfig;
use crate::engine::Engine;
use crate::handles;

/// Opens (creating it if needed) the database `config` names and starts syncing it (when it
/// names a server). `config` is JSON: `{"path", "server_url"?, "spaces"?, "token"?, ...}`,
/// every option in docs/ffi.md. A file that is already open in this process (another isolate,
/// a hot restart) gets a new handle to the same engine (`"attached": true`); the server and
/// spaces must agree (else `TS_ERR_ALREADY_OPEN`), a token given replaces the engine's.
/// On success `*db` is the handle and `out` holds `{"v":1, "attached", "client_id",
/// "session_id", "restoration_issues": [...]}`.
///
/// # Safety
/// `config` points to `config_len` readable bytes (or `config_len` is 0); `db` points to a
/// writable `uint64_t`; `out` is NULL or points to a writable `TsBuf`.
#[no_mangle]
pub unsafe extern "C" fn ts_open(
    config: *const u8,
    config_len: usize,
    db: *mut u64,
    out: *mut TsBuf,
) -> i32 {
    guard(out, || {
        if db.is_null() {
            return Err(crate::abi::FfiError::invalid(
                "db (the handle out-pointer) is NULL",
            ));
        }
        // SAFETY: the caller's span, valid for the call.
        let config: OpenConfig = unsafe { json_arg(config, config_len, "config") }?;
        let path = config.canonical_path()?;
        let (handle, engine, attached) = handles::open_db(
            &path,
            || Engine::open(&config, path.clone()),
            |engine| engine.check(&config),
        )?;
        if attached && config.token.is_some() {
            engine.tokens().set(config.token.clone());
        }
        let client = engine.client()?;
        let issues: Vec<_> = client
            .restoration_issues()
            .iter()
            .map(|i| json!({"path": i.path, "key": i.key, "tag": i.tag, "message": i.message}))
            .collect();
        // SAFETY: checked non-NULL above; the caller promises it is writable.
        unsafe { db.write(handle) };
        Ok(json!({
            "v": 1,
            "attached": attached,
            "client_id": client.client_id().as_str(),
            "session_id": client.session_id(),
            "restoration_issues": issues,
        }))
    })
}

/// Closes a database handle. The last handle of a file stops its engine: the sync thread
/// ends (unsynced work stays in the file, and continues at the next open) and its
/// subscriptions get no more events. A closed or stale handle answers `TS_ERR_CLOSED` (so
/// closing twice is safe). `out`: `{"v":1, "stopped": bool}`.
///
/// # Safety
/// `out` is NULL or points to a writable `TsBuf`.
#[no_mangle]
pub unsafe extern "C" fn ts_close(db: u64, out: *mut TsBuf) -> i32 {
    guard(out, || {
        let stopped = handles::close_db(db)?;
        let mut body = done();
        body["stopped"] = stopped.into();
        Ok(body)
    })
}
