//! What the server decided: `ts_mutation_state`, `ts_conflicts`, `ts_resolve_conflict`,
//! `ts_rejections`, `ts_retry_rejection`, `ts_discard_rejection`.

use serde_json::json;
use tidesync_client::Resolution;

use crate::abi::{guard, json_arg, FfiError, TsBuf};
use crate::handles;
use crate::json::{self, ResolutionArg};

/// Where mutation `seq` is: `{"v":1, "state": "queued" | "sending" | "acked" | "confirmed" |
/// "rejected" | null, "version"?, "code"?, "message"?}` (`null`: no such seq yet).
///
/// # Safety
/// `out` is NULL or points to a writable `TsBuf`.
#[no_mangle]
pub unsafe extern "C" fn ts_mutation_state(db: u64, seq: u64, out: *mut TsBuf) -> i32 {
    guard(out, || {
        let state = handles::db(db)?.client()?.mutation_state(seq)?;
        Ok(json::mutation_state(state.as_ref()))
    })
}

/// Unresolved conflicts, oldest first: `{"v":1, "conflicts": [{"id", "seq", "key",
/// "version", "fields": [{"field", "local", "server", "winner"}], "created_at_ms"}]}`.
///
/// # Safety
/// `out` is NULL or points to a writable `TsBuf`.
#[no_mangle]
pub unsafe extern "C" fn ts_conflicts(db: u64, out: *mut TsBuf) -> i32 {
    guard(out, || {
        let conflicts = handles::db(db)?.client()?.conflicts()?;
        Ok(json!({"v": 1, "conflicts": conflicts.iter().map(json::conflict).collect::<Vec<_>>()}))
    })
}

/// Settles conflict `id`: `resolution` is `{"keep": "local"}`, `{"keep": "server"}` or
/// `{"merged": {...document...}}`. A new mutation is queued when one is needed: `out` is
/// `{"v":1, "receipt": {...} | null}`.
///
/// # Safety
/// `resolution` points to `resolution_len` readable bytes; `out` is NULL or a writable
/// `TsBuf`.
#[no_mangle]
pub unsafe extern "C" fn ts_resolve_conflict(
    db: u64,
    id: i64,
    resolution: *const u8,
    resolution_len: usize,
    out: *mut TsBuf,
) -> i32 {
    guard(out, || {
        let engine = handles::db(db)?;
        // SAFETY: the caller's span, valid for the call.
        let arg: Option<ResolutionArg> =
            unsafe { json_arg(resolution, resolution_len, "resolution") }?;
        let resolution: Resolution = arg
            .ok_or_else(|| FfiError::invalid("resolution is empty; expected {\"keep\": \"local\"}, {\"keep\": \"server\"} or {\"merged\": {...}}"))?
            .into();
        let receipt = engine.client()?.resolve_conflict(id, resolution)?;
        Ok(json!({"v": 1, "receipt": receipt.as_ref().map(json::receipt)}))
    })
}

/// Mutations the server refused, oldest first (their local effect was rolled back):
/// `{"v":1, "rejections": [{"seq", "tx", "key", "op", "doc"?, "code", "message",
/// "rejected_at_ms"}]}`.
///
/// # Safety
/// `out` is NULL or points to a writable `TsBuf`.
#[no_mangle]
pub unsafe extern "C" fn ts_rejections(db: u64, out: *mut TsBuf) -> i32 {
    guard(out, || {
        let rejections = handles::db(db)?.client()?.rejections()?;
        Ok(
            json!({"v": 1, "rejections": rejections.iter().map(json::rejection).collect::<Vec<_>>()}),
        )
    })
}

/// Queues the rejected transaction holding `seq` again, as new mutations (after the app
/// fixed what made it fail): `{"v":1, "receipts": [...]}`.
///
/// # Safety
/// `out` is NULL or points to a writable `TsBuf`.
#[no_mangle]
pub unsafe extern "C" fn ts_retry_rejection(db: u64, seq: u64, out: *mut TsBuf) -> i32 {
    guard(out, || {
        let receipts = handles::db(db)?.client()?.retry_rejection(seq)?;
        Ok(json!({"v": 1, "receipts": receipts.iter().map(json::receipt).collect::<Vec<_>>()}))
    })
}

/// Forgets the rejected transaction holding `seq`: `{"v":1, "discarded": n}`.
///
/// # Safety
/// `out` is NULL or points to a writable `TsBuf`.
#[no_mangle]
pub unsafe extern "C" fn ts_discard_rejection(db: u64, seq: u64, out: *mut TsBuf) -> i32 {
    guard(out, || {
        let n = handles::db(db)?.client()?.discard_rejection(seq)?;
        Ok(json!({"v": 1, "discarded": n}))
    })
}
