//! The C ABI of tidesync: `libtidesync` (`cdylib` and `staticlib`), what the Dart package,
//! the Python package and C programs call. A thin layer over [`tidesync_client::Client`]: it
//! has no sync logic of its own.
//!
//! The rules (docs/ffi.md has them in full, with examples in C, Python and Dart):
//! - **Handles** are `uint64_t` ids in a generational table (`handles.rs`); a stale, closed or
//!   foreign handle answers `TS_ERR_CLOSED`, never undefined behaviour. One engine per
//!   canonical database path, reference-counted across `ts_open`s (isolates, hot restarts).
//! - **Every function returns an `int32_t` status** (0 ok, else a `TS_ERR_*`) and writes JSON
//!   to an out-buffer: the result, or `{"v":1, "code", "message"}`. No thread-local last
//!   error. Every entry point runs under `catch_unwind` (`TS_ERR_PANIC`).
//! - **Inputs are borrowed `(ptr, len)` UTF-8 spans**, valid during the call; **outputs are
//!   Rust-owned [`TsBuf`]s**, freed once with `ts_buf_free`. JSON carries `"v": 1`; keys
//!   are `SPACE/COLLECTION/ID`.
//! - **Events by doorbell and drain** ([`events`]): nothing calls into Dart synchronously.
//! - **No call waits on the network** (but `ts_wait_synced` and `ts_wait_events`, which
//!   exist to wait, bounded by their timeouts).
//!
//! What it does not do: interpret documents, keep state per thread or per isolate, or
//! allocate anything the caller frees with its own allocator.

// The one crate that crosses the C boundary: raw pointers in, raw pointers out. Every
// `unsafe` block says why it is sound (docs/decisions.md).
#![allow(unsafe_code)]

mod abi;
mod api;
mod config;
mod engine;
pub mod events;
mod handles;
mod json;
mod tokens;

pub use abi::*;
pub use api::*;
pub use events::{TsDartPostCObject, TsDoorbell};
