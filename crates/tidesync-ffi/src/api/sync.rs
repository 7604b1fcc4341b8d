//! Sync control and status: `ts_set_network`, `ts_sync_now`, `ts_pause`, `ts_resume`,
//! `ts_status`, `ts_wait_synced`, `ts_set_token`. None of them waits on the network but
//! `ts_wait_synced`, which exists to wait (bounded by its timeout).

use std::time::Duration;

use serde_json::json;
use tidesync_client::{Client, Reachability};

use crate::abi::{done, guard, text, TsBuf};
use crate::handles;
use crate::json;

/// One call on the client that answers nothing.
fn control(db: u64, out: *mut TsBuf, f: impl FnOnce(&Client)) -> i32 {
    guard(out, || {
        f(handles::db(db)?.client()?.as_ref());
        Ok(done())
    })
}

/// The app's network hint (from connectivity_plus, say): `online` 0 stops all attempts
/// until it is 1, which triggers one at once.
///
/// # Safety
/// `out` is NULL or points to a writable `TsBuf`.
#[no_mangle]
pub unsafe extern "C" fn ts_set_network(db: u64, online: i32, out: *mut TsBuf) -> i32 {
    control(db, out, |c| {
        c.set_network(if online != 0 {
            Reachability::Online
        } else {
            Reachability::Offline
        })
    })
}

/// Syncs now (also retries after an error that stopped automatic retries).
///
/// # Safety
/// `out` is NULL or points to a writable `TsBuf`.
#[no_mangle]
pub unsafe extern "C" fn ts_sync_now(db: u64, out: *mut TsBuf) -> i32 {
    control(db, out, Client::sync_now)
}

/// Stops network activity (the app went to the background) until `ts_resume`.
///
/// # Safety
/// `out` is NULL or points to a writable `TsBuf`.
#[no_mangle]
pub unsafe extern "C" fn ts_pause(db: u64, out: *mut TsBuf) -> i32 {
    control(db, out, Client::pause)
}

/// Resumes after `ts_pause`.
///
/// # Safety
/// `out` is NULL or points to a writable `TsBuf`.
#[no_mangle]
pub unsafe extern "C" fn ts_resume(db: u64, out: *mut TsBuf) -> i32 {
    control(db, out, Client::resume)
}

/// The current status: `{"v":1, "connectivity", "phase", "upload", "download", "pending",
/// "oldest_pending_at_ms", "conflicts", "rejections", "last_synced_at_ms", "has_synced",
/// "synced", "last_error": {"kind", "code", "message", "needs_attention", "at_ms"} | null,
/// "next_retry_at_ms"}`.
///
/// # Safety
/// `out` is NULL or points to a writable `TsBuf`.
#[no_mangle]
pub unsafe extern "C" fn ts_status(db: u64, out: *mut TsBuf) -> i32 {
    guard(out, || {
        let status = handles::db(db)?.client()?.status();
        Ok(match status {
            Some(s) => super::versioned(json::status(&s)),
            None => json!({"v": 1, "phase": "stopped"}),
        })
    })
}

/// Blocks up to `timeout_ms` until everything written before the call is confirmed by the
/// server and a complete pull is done; `out` is the status then. `TS_ERR_TIMEOUT` (detail:
/// the last status), `TS_ERR_SYNC_NEEDS_ATTENTION` (detail: the error: a refusal,
/// credentials, a corrupt file), `TS_ERR_LOCAL_ONLY`. For tests, tools and "sync before
/// logout"; a UI watches the status events instead.
///
/// # Safety
/// `out` is NULL or points to a writable `TsBuf`.
#[no_mangle]
pub unsafe extern "C" fn ts_wait_synced(db: u64, timeout_ms: u32, out: *mut TsBuf) -> i32 {
    guard(out, || {
        let client = handles::db(db)?.client()?;
        let status = client.wait_synced(Duration::from_millis(u64::from(timeout_ms)))?;
        Ok(super::versioned(json::status(&status)))
    })
}

/// Sets the bearer token (UTF-8; an empty span clears it). Call it at start, after sign-in,
/// and whenever a `token_expired` event arrives: the engine waits for it (`token_wait_ms`)
/// before it reports an authentication error.
///
/// # Safety
/// `token` points to `token_len` readable bytes (or `token_len` is 0); `out` is NULL or
/// points to a writable `TsBuf`.
#[no_mangle]
pub unsafe extern "C" fn ts_set_token(
    db: u64,
    token: *const u8,
    token_len: usize,
    out: *mut TsBuf,
) -> i32 {
    guard(out, || {
        let engine = handles::db(db)?;
        // SAFETY: the caller's span, valid for the call.
        let token = unsafe { text(token, token_len, "token") }?;
        engine
            .tokens()
            .set((!token.is_empty()).then(|| token.to_owned()));
        Ok(done())
    })
}
