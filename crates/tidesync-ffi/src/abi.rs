//! The rules every entry point follows: status codes, borrowed input spans, Rust-owned
//! output buffers, and the guard that turns errors and panics into a status and a JSON
//! `{code, message}`.

use std::panic::{catch_unwind, AssertUnwindSafe};

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tidesync_client::{ClientError, StoreError, ValidationError};

/// Success.
pub const TS_OK: i32 = 0;
/// An argument is unusable: NULL where data was needed, not UTF-8, malformed JSON, a bad key,
/// name or id, an unknown option.
pub const TS_ERR_INVALID_ARGUMENT: i32 = 1;
/// The handle is stale, closed, or not a handle of this kind (a subscription passed as a
/// database, or a number this library never handed out).
pub const TS_ERR_CLOSED: i32 = 2;
/// The library panicked; the call had no effect beyond what it committed before. Report it.
pub const TS_ERR_PANIC: i32 = 3;
/// What the call names does not exist (a conflict id, a rejection seq).
pub const TS_ERR_NOT_FOUND: i32 = 4;
/// A document, value or input is larger than allowed.
pub const TS_ERR_TOO_LARGE: i32 = 5;
/// Another process held the database lock past the busy timeout; retry.
pub const TS_ERR_BUSY: i32 = 6;
/// The disk is full; nothing was written; retry once space is freed.
pub const TS_ERR_DISK_FULL: i32 = 7;
/// The database file is read-only; nothing was written.
pub const TS_ERR_READ_ONLY: i32 = 8;
/// The OS failed a read or write of the database file; nothing was written.
pub const TS_ERR_DISK_IO: i32 = 9;
/// The database file is damaged (or was modified outside tidesync).
pub const TS_ERR_CORRUPT: i32 = 10;
/// The file is not a tidesync database (not SQLite, or another application's); it was not
/// modified.
pub const TS_ERR_NOT_TIDESYNC: i32 = 11;
/// The file was written by a newer tidesync; upgrade the app. It was not modified.
pub const TS_ERR_SCHEMA_TOO_NEW: i32 = 12;
/// Restoration state could not be written (too large, bad name, unregistered version).
pub const TS_ERR_RESTORATION: i32 = 13;
/// A wait ended before what it waited for.
pub const TS_ERR_TIMEOUT: i32 = 14;
/// Sync stopped on an error retrying will not cure (a refusal, credentials, a corrupt file);
/// the detail is the status's last error.
pub const TS_ERR_SYNC_NEEDS_ATTENTION: i32 = 15;
/// The database was opened without a server: it does not sync.
pub const TS_ERR_LOCAL_ONLY: i32 = 16;
/// The database is already open in this process with another server or other spaces.
pub const TS_ERR_ALREADY_OPEN: i32 = 17;
/// Anything else (an unexpected SQLite or system failure); the message says what.
pub const TS_ERR_INTERNAL: i32 = 18;

/// The version of this ABI: functions, their arguments, status codes and JSON forms.
/// Additions keep the number; any change that could break a caller raises it.
pub const TS_ABI_VERSION: u32 = 1;

/// Largest input span accepted (JSON documents, batches): 64 MiB.
pub(crate) const MAX_INPUT_BYTES: usize = 64 << 20;

/// A buffer the library allocated and the caller owns: read `len` bytes at `ptr`, then free
/// it exactly once with `ts_buf_free`. Every output is UTF-8 JSON. Empty is `{NULL, 0}`.
#[repr(C)]
#[derive(Debug)]
pub struct TsBuf {
    /// The bytes (NULL when empty).
    pub ptr: *mut u8,
    /// How many.
    pub len: usize,
}

impl TsBuf {
    fn from_vec(bytes: Vec<u8>) -> TsBuf {
        if bytes.is_empty() {
            return TsBuf {
                ptr: std::ptr::null_mut(),
                len: 0,
            };
        }
        let boxed = bytes.into_boxed_slice();
        let len = boxed.len();
        TsBuf {
            ptr: Box::into_raw(boxed).cast::<u8>(),
            len,
        }
    }
}

/// What a failed call reports: its status and the JSON detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FfiError {
    pub status: i32,
    pub code: String,
    pub message: String,
}

impl FfiError {
    pub(crate) fn new(status: i32, code: &str, message: impl Into<String>) -> FfiError {
        FfiError {
            status,
            code: code.to_owned(),
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> FfiError {
        FfiError::new(TS_ERR_INVALID_ARGUMENT, "invalid_argument", message)
    }

    pub(crate) fn closed(what: &str) -> FfiError {
        FfiError::new(
            TS_ERR_CLOSED,
            "closed",
            format!("the {what} handle is closed, stale, or not a {what} handle of this process"),
        )
    }

    fn json(&self) -> Value {
        json!({"v": 1, "code": self.code, "message": self.message})
    }
}

/// The status of a Rust error code: the one place codes become ABI statuses.
pub(crate) fn status_of(code: &str) -> i32 {
    match code {
        "invalid_input" | "invalid_argument" | "config" => TS_ERR_INVALID_ARGUMENT,
        "not_found" => TS_ERR_NOT_FOUND,
        "too_large" => TS_ERR_TOO_LARGE,
        "busy" => TS_ERR_BUSY,
        "disk_full" => TS_ERR_DISK_FULL,
        "read_only" => TS_ERR_READ_ONLY,
        "disk_io" => TS_ERR_DISK_IO,
        "corrupt" | "bad_stored_data" => TS_ERR_CORRUPT,
        "not_a_database" | "foreign_database" => TS_ERR_NOT_TIDESYNC,
        "schema_too_new" => TS_ERR_SCHEMA_TOO_NEW,
        "restoration" => TS_ERR_RESTORATION,
        "timeout" => TS_ERR_TIMEOUT,
        "sync_needs_attention" => TS_ERR_SYNC_NEEDS_ATTENTION,
        "local_only" => TS_ERR_LOCAL_ONLY,
        _ => TS_ERR_INTERNAL,
    }
}

impl From<ClientError> for FfiError {
    fn from(e: ClientError) -> FfiError {
        let code = e.code();
        FfiError::new(status_of(code), code, e.to_string())
    }
}

impl From<StoreError> for FfiError {
    fn from(e: StoreError) -> FfiError {
        FfiError::from(ClientError::from(e))
    }
}

impl From<ValidationError> for FfiError {
    fn from(e: ValidationError) -> FfiError {
        FfiError::invalid(e.to_string())
    }
}

/// Runs one entry point: `f`'s JSON (or its error, or a panic) goes to `out` (when it is not
/// NULL) and its status is returned. Nothing unwinds into the caller.
pub(crate) fn guard(out: *mut TsBuf, f: impl FnOnce() -> Result<Value, FfiError>) -> i32 {
    let (status, body) = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(body)) => (TS_OK, body),
        Ok(Err(e)) => (e.status, e.json()),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            let e = FfiError::new(TS_ERR_PANIC, "panic", format!("tidesync panicked: {what}"));
            (e.status, e.json())
        }
    };
    if !out.is_null() {
        // Serializing a `Value` cannot fail (its keys are strings).
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        // SAFETY: the caller passes NULL or a pointer to a writable `TsBuf` (docs/ffi.md); a
        // previous content is overwritten, not freed (freeing is the caller's, once).
        unsafe { out.write(TsBuf::from_vec(bytes)) };
    }
    status
}

/// The input span `(ptr, len)`, borrowed for the call. A zero length needs no pointer.
///
/// # Safety
/// `ptr` must be NULL or point to `len` readable bytes that stay valid during the call.
pub(crate) unsafe fn span<'a>(
    ptr: *const u8,
    len: usize,
    what: &str,
) -> Result<&'a [u8], FfiError> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(FfiError::invalid(format!(
            "{what} is NULL but its length is {len}"
        )));
    }
    if len > MAX_INPUT_BYTES {
        return Err(FfiError::new(
            TS_ERR_TOO_LARGE,
            "too_large",
            format!("{what} is {len} bytes; the limit is {MAX_INPUT_BYTES}"),
        ));
    }
    // SAFETY: non-NULL, `len` readable bytes valid for the call: the caller's promise above.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// The span as UTF-8 text.
///
/// # Safety
/// As for [`span`].
pub(crate) unsafe fn text<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a str, FfiError> {
    // SAFETY: forwarded.
    let bytes = unsafe { span(ptr, len, what) }?;
    std::str::from_utf8(bytes).map_err(|e| {
        FfiError::invalid(format!(
            "{what} is not valid UTF-8 (at byte {})",
            e.valid_up_to()
        ))
    })
}

/// The span as JSON of type `T`; an empty span is `T`'s JSON `null` form when `T` allows it.
///
/// # Safety
/// As for [`span`].
pub(crate) unsafe fn json_arg<T: DeserializeOwned>(
    ptr: *const u8,
    len: usize,
    what: &str,
) -> Result<T, FfiError> {
    // SAFETY: forwarded.
    let text = unsafe { text(ptr, len, what) }?;
    let text = if text.trim().is_empty() { "null" } else { text };
    serde_json::from_str(text).map_err(|e| FfiError::invalid(format!("{what} is not valid: {e}")))
}

/// `{"v": 1}`: the body of a call that returns nothing else.
pub(crate) fn done() -> Value {
    json!({"v": 1})
}

/// Frees a buffer the library returned, and empties the struct, so freeing the same struct
/// twice is harmless. NULL, and an empty buffer, are fine.
///
/// # Safety
/// `buf` is NULL or points to a `TsBuf` that this library filled and that was not copied and
/// freed elsewhere.
#[no_mangle]
pub unsafe extern "C" fn ts_buf_free(buf: *mut TsBuf) {
    if buf.is_null() {
        return;
    }
    // SAFETY: a `TsBuf` of ours, per the contract above.
    let taken = unsafe { buf.replace(TsBuf::from_vec(Vec::new())) };
    if taken.ptr.is_null() {
        return;
    }
    let slice = std::ptr::slice_from_raw_parts_mut(taken.ptr, taken.len);
    // SAFETY: `ptr`/`len` came from `Box::into_raw` of a boxed slice in `TsBuf::from_vec`,
    // and the struct was emptied above, so this box is rebuilt once.
    drop(unsafe { Box::from_raw(slice) });
}

/// The ABI version ([`TS_ABI_VERSION`]); check it before anything else.
#[no_mangle]
pub extern "C" fn ts_abi_version() -> u32 {
    TS_ABI_VERSION
}

/// Panics inside the library on purpose, to check that a binding maps [`TS_ERR_PANIC`]. Never
/// call it in an app.
///
/// # Safety
/// `out` is NULL or points to a writable `TsBuf`.
#[no_mangle]
pub unsafe extern "C" fn ts_debug_panic(out: *mut TsBuf) -> i32 {
    guard(out, || panic!("ts_debug_panic was called"))
}
