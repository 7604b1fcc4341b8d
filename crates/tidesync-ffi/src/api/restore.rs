//! Restoration state: `ts_restore_get`, `ts_restore_set`, `ts_restore_remove`,
//! `ts_restore_list`. An address is JSON `{"lifetime": "session" | "persistent", "bucket":
//! "checkout/step2" ("" or absent: the root), "key": "draft"}`; an entry is `{"tag",
//! "version", "value"}` (values: docs/ffi.md). Inside a data transaction: `ts_write_batch`.

use serde_json::json;

use crate::abi::{done, guard, json_arg, FfiError, TsBuf};
use crate::handles;
use crate::json::{self, RestoreAt};

/// The address span, which must be there.
///
/// # Safety
/// `ptr` points to `len` readable bytes, valid for the call.
unsafe fn address(ptr: *const u8, len: usize) -> Result<RestoreAt, FfiError> {
    // SAFETY: forwarded.
    let at: Option<RestoreAt> = unsafe { json_arg(ptr, len, "address") }?;
    at.ok_or_else(|| FfiError::invalid("the restoration address is empty"))
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
    guard(out, || {
        let engine = handles::db(db)?;
        // SAFETY: the caller's span, valid for the call.
        let at = unsafe { address(at, at_len) }?;
        let key = at.key()?;
        let entry = engine
            .client()?
            .restore_get(at.lifetime.into(), &at.bucket()?, key);
        Ok(json!({"v": 1, "entry": entry.as_ref().map(|e| json::entry(key, e))}))
    })
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
    guard(out, || {
        let engine = handles::db(db)?;
        // SAFETY: the caller's span, valid for the call.
        let mut at = unsafe { address(at, at_len) }?;
        let entry = at.entry.take().ok_or_else(|| {
            FfiError::invalid(
                "ts_restore_set needs an \"entry\": {\"tag\", \"version\", \"value\"}",
            )
        })?;
        engine
            .client()?
            .restore_set(at.lifetime.into(), &at.bucket()?, at.key()?, entry.into())?;
        Ok(done())
    })
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
    guard(out, || {
        let engine = handles::db(db)?;
        // SAFETY: the caller's span, valid for the call.
        let at = unsafe { address(at, at_len) }?;
        engine
            .client()?
            .restore_remove(at.lifetime.into(), &at.bucket()?, at.key()?)?;
        Ok(done())
    })
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
    guard(out, || {
        let engine = handles::db(db)?;
        // SAFETY: the caller's span, valid for the call.
        let at = unsafe { address(at, at_len) }?;
        let contents = engine
            .client()?
            .restore_list(at.lifetime.into(), &at.bucket()?);
        Ok(json!({
            "v": 1,
            "entries": contents.entries.iter().map(|(k, e)| json::entry(k, e)).collect::<Vec<_>>(),
            "children": contents.children,
        }))
    })
}
