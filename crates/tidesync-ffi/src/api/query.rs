//! Queries: `ts_query`, `ts_count`, and live queries, `ts_watch_query`.

use std::ffi::c_void;
use std::sync::Arc;

use serde_json::{json, Value};
use tidesync_client::{collection_path, Query, StoreError};

use super::events::{doorbell_of, new_subscription};
use crate::abi::{guard, json_arg, text, FfiError, TsBuf};
use crate::events::{TsDartPostCObject, TsDoorbell};
use crate::handles;
use crate::json;

/// The query of a `SPACE/COLLECTION` span and a JSON span (`{"selector", "sort", "limit",
/// "fields", "after"}`, each optional; empty: every record by id).
///
/// # Safety
/// Both spans point to readable bytes of their lengths, valid for the call.
unsafe fn query_arg(
    collection: *const u8,
    collection_len: usize,
    query: *const u8,
    query_len: usize,
) -> Result<Query, FfiError> {
    // SAFETY: the caller's spans, valid for the call.
    let collection = unsafe { text(collection, collection_len, "collection") }?;
    // SAFETY: as above.
    let form: Option<Value> = unsafe { json_arg(query, query_len, "query") }?;
    let (space, collection) = collection_path(collection)?;
    let form = form.unwrap_or_else(|| json!({}));
    let query = Query::from_json(space, collection, &form).map_err(StoreError::InvalidQuery)?;
    query.validate().map_err(StoreError::InvalidQuery)?;
    Ok(query)
}

/// One page of a query over the local view of `collection` (`SPACE/COLLECTION`). `query` is
/// the JSON `{"selector": {...}, "sort": [...], "limit": n, "fields": [...], "after":
/// cursor}` (each optional; docs/queries.md). `out`: `{"v":1, "records": [...], "next":
/// cursor | null}`; an invalid query is `TS_ERR_INVALID_ARGUMENT` naming the offending part.
///
/// # Safety
/// Both spans point to readable bytes of their lengths; `out` is NULL or a writable `TsBuf`.
#[no_mangle]
pub unsafe extern "C" fn ts_query(
    db: u64,
    collection: *const u8,
    collection_len: usize,
    query: *const u8,
    query_len: usize,
    out: *mut TsBuf,
) -> i32 {
    guard(out, || {
        let engine = handles::db(db)?;
        // SAFETY: the caller's spans, valid for the call.
        let query = unsafe { query_arg(collection, collection_len, query, query_len) }?;
        Ok(json::query_page(&engine.client()?.query(&query)?))
    })
}

/// How many records a query selects (its sort, limit and cursor do not matter): `{"v":1,
/// "count": n}`.
///
/// # Safety
/// Both spans point to readable bytes of their lengths; `out` is NULL or a writable `TsBuf`.
#[no_mangle]
pub unsafe extern "C" fn ts_count(
    db: u64,
    collection: *const u8,
    collection_len: usize,
    query: *const u8,
    query_len: usize,
    out: *mut TsBuf,
) -> i32 {
    guard(out, || {
        let engine = handles::db(db)?;
        // SAFETY: the caller's spans, valid for the call.
        let query = unsafe { query_arg(collection, collection_len, query, query_len) }?;
        Ok(json!({"v": 1, "count": engine.client()?.count(&query)?}))
    })
}

/// A live query: a subscription whose events are `query_result`s (`{"v":1, "type":
/// "query_result", "records", "next", "added", "removed", "changed"}`): the result now, then
/// again whenever a local write, a pulled page, a rolled-back rejection, a resolved conflict
/// or a base reset changes it. Results are computed on the library's live-query thread and
/// merged while undrained (one queued result at most: the latest, with the diff from the
/// last one drained). Doorbell, draining (`ts_poll_events`, `ts_wait_events`) and the end
/// (`ts_unsubscribe`) are those of `ts_subscribe`. `*sub` is its handle.
///
/// # Safety
/// As for `ts_subscribe`; both spans point to readable bytes of their lengths.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn ts_watch_query(
    db: u64,
    collection: *const u8,
    collection_len: usize,
    query: *const u8,
    query_len: usize,
    doorbell: TsDoorbell,
    doorbell_context: *mut c_void,
    dart_post: TsDartPostCObject,
    dart_port: i64,
    sub: *mut u64,
    out: *mut TsBuf,
) -> i32 {
    guard(out, || {
        if sub.is_null() {
            return Err(FfiError::invalid("sub (the handle out-pointer) is NULL"));
        }
        let engine = handles::db(db)?;
        // SAFETY: the caller's spans, valid for the call.
        let query = unsafe { query_arg(collection, collection_len, query, query_len) }?;
        let client = engine.client()?;
        let bell = doorbell_of(doorbell, doorbell_context, dart_post, dart_port);
        let (subscription, handle) = new_subscription(2, bell);
        let target = Arc::downgrade(&subscription);
        let watch = client.watch_with(query, move |update| {
            target
                .upgrade()
                .is_some_and(|subscription| subscription.push_query(update))
        });
        let watch = match watch {
            Ok(watch) => watch,
            Err(e) => {
                let _ = handles::remove_sub(handle);
                return Err(e.into());
            }
        };
        subscription.set_watch(watch);
        // The engine closes it when it stops.
        engine.hub().add_query(&subscription);
        // SAFETY: checked non-NULL above; the caller promises it is writable.
        unsafe { sub.write(handle) };
        Ok(json!({"v": 1, "subscription": handle}))
    })
}
