//! Restoration state: `ts_restore_get`, `ts_restore_set`, `ts_restore_remove`,
//! `ts_restore_list`. An address is JSON `{"lifetime": "session" | "persistent", "bucket":
//! "checkout/step2" ("" or absent: the root), "key": "draft"}`; an entry is `{"tag",
//! "version", "value"}` (values: docs/ffi.md). Inside a data transaction: `ts_write_batch`.

use serde_json::{json, Value};
use tidesync_client::Client;

use crate::abi::{done, guard, json_arg, FfiError, TsBuf};
use crate::handles;
use crate::json::{self, RestoreAt};

/// One restoration call: the database, its address span (which must be there), `f`.
///
/// # Safety
/// `at` points to `at_len` readable bytes, valid for the call; `out` is NULL or a writable
/// `TsBuf`.
unsafe fn at_call(
    db: u64,
    at: *const u8,
    at_len: usize,
    out: *mut TsBuf,
    f: impl FnOnce(&Client, RestoreAt) -> Result<Value, FfiError>,
) -> i32 {
    guard(out, || {
        let engine = handles::db(db)?;
        // SAFETY: the caller's span, valid for the call.
        let at: Option<RestoreAt> = unsafe { json_arg(at, at_len, "address") }?;
        let at = at.ok_or_else(|| FfiError::invalid("the restoration address is empty"))?;
        f(engine.client()?.as_ref(), at)
    })
}

/// The entry at an address: `{"v":1, "entry": {"key", "tag", "version", "value"} | null}`.
/// Reads are from memory (the tree is loaded at open): no I/O.
///
/// # Safety
/// `at` points to `at_len` readable bytes; `out` is NULL or a writable `TsBuf`.
#[no_mangle]
pub unsafe extern "C" fn ts_restore_get(
    db: u64,
    at: *const u8,
    at_len: usize,
    out: *mut TsBuf,
) -> i32 {
    // SAFETY: the caller's contract, forwarded.
    unsafe {
        at_call(db, at, at_len, out, |client, at| {
            let key = at.key()?;
            let entry = client.restore_get(at.lifetime.into(), &at.bucket()?, key);
            Ok(json!({"v": 1, "entry": entry.as_ref().map(|e| json::entry(key, e))}))
        })
    }
}

/// Writes the `"entry"` of the address (`{"lifetime", "bucket", "key", "entry": {"tag",
/// "version", "value"}}`), in its own transaction.
///
/// # Safety
/// `at` points to `at_len` readable bytes; `out` is NULL or a writable `TsBuf`.
#[no_mangle]
pub unsafe extern "C" fn ts_restore_set(
    db: u64,
    at: *const u8,
    at_len: usize,
    out: *mut TsBuf,
) -> i32 {
    // SAFETY: the caller's contract, forwarded.
    unsafe {
        at_call(db, at, at_len, out, |client, mut at| {
            let entry = at.entry.take().ok_or_else(|| {
                FfiError::invalid(
                    "ts_restore_set needs an \"entry\": {\"tag\", \"version\", \"value\"}",
                )
            })?;
            client.restore_set(at.lifetime.into(), &at.bucket()?, at.key()?, entry.into())?;
            Ok(done())
        })
    }
}

/// Removes the entry at an address (nothing happens if there is none).
///
/// # Safety
/// `at` points to `at_len` readable bytes; `out` is NULL or a writable `TsBuf`.
#[no_mangle]
pub unsafe extern "C" fn ts_restore_remove(
    db: u64,
    at: *const u8,
    at_len: usize,
    out: *mut TsBuf,
) -> i32 {
    // SAFETY: the caller's contract, forwarded.
    unsafe {
        at_call(db, at, at_len, out, |client, at| {
            client.restore_remove(at.lifetime.into(), &at.bucket()?, at.key()?)?;
            Ok(done())
        })
    }
}

/// The entries and child buckets of a bucket (`{"lifetime", "bucket"}`): `{"v":1, "entries":
/// [{"key", "tag", "version", "value"}], "children": ["name", ...]}`.
///
/// # Safety
/// `at` points to `at_len` readable bytes; `out` is NULL or a writable `TsBuf`.
#[no_mangle]
pub unsafe extern "C" fn ts_restore_list(
    db: u64,
    at: *const u8,
    at_len: usize,
    out: *mut TsBuf,
) -> i32 {
    // SAFETY: the caller's contract, forwarded.
    unsafe {
        at_call(db, at, at_len, out, |client, at| {
            let contents = client.restore_list(at.lifetime.into(), &at.bucket()?);
            Ok(json!({
                "v": 1,
                "entries": contents.entries.iter().map(|(k, e)| json::entry(k, e)).collect::<Vec<_>>(),
                "children": contents.children,
            }))
        })
    }
}
