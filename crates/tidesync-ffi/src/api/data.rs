//! Records: `ts_get`, `ts_list`, `ts_put`, `ts_patch`, `ts_delete`, `ts_write_batch`.

use serde_json::json;
use tidesync_client::{collection_path, Doc, ListOptions, RecordId, RecordKey, StoreError};

use super::{key_arg, versioned};
use crate::abi::{guard, json_arg, text, FfiError, TsBuf};
use crate::handles;
use crate::json::{self, Batch, ListArg, RestoreArg, WriteArg};

/// The record at `key` (`SPACE/COLLECTION/ID`) from the local view: `{"v":1, "record":
/// {"key", "doc", "pending"} | null}`.
///
/// # Safety
/// `key` points to `key_len` readable bytes; `out` is NULL or a writable `TsBuf`.
#[no_mangle]
pub unsafe extern "C" fn ts_get(db: u64, key: *const u8, key_len: usize, out: *mut TsBuf) -> i32 {
    guard(out, || {
        let engine = handles::db(db)?;
        // SAFETY: the caller's span, valid for the call.
        let key = unsafe { key_arg(key, key_len) }?;
        let record = engine.client()?.get(&key)?;
        Ok(json!({"v": 1, "record": record.as_ref().map(json::record)}))
    })
}

/// One page of `collection` (`SPACE/COLLECTION`) in id order. `options` is JSON `{"after":
/// id, "limit": n}` (both optional; empty = the first 100). `out`: `{"v":1, "records": [...],
/// "next": id | null}` (pass `next` as `after` for the next page).
///
/// # Safety
/// Both spans point to readable bytes of their lengths; `out` is NULL or a writable `TsBuf`.
#[no_mangle]
pub unsafe extern "C" fn ts_list(
    db: u64,
    collection: *const u8,
    collection_len: usize,
    options: *const u8,
    options_len: usize,
    out: *mut TsBuf,
) -> i32 {
    guard(out, || {
        let engine = handles::db(db)?;
        // SAFETY: the caller's spans, valid for the call.
        let collection = unsafe { text(collection, collection_len, "collection") }?;
        // SAFETY: as above.
        let options: Option<ListArg> = unsafe { json_arg(options, options_len, "options") }?;
        let (space, collection) = collection_path(collection)?;
        let options = options.unwrap_or_default();
        let after = options.after.map(RecordId::new).transpose()?;
        let page = engine.client()?.list(
            &space,
            &collection,
            &ListOptions {
                after,
                limit: options.limit.unwrap_or(0),
            },
        )?;
        Ok(json!({
            "v": 1,
            "records": page.records.iter().map(json::record).collect::<Vec<_>>(),
            "next": page.next.map(|id| id.to_string()),
        }))
    })
}

/// The shared body of put and patch: key and document spans.
///
/// # Safety
/// As for `ts_put`.
unsafe fn write_doc(
    db: u64,
    key: *const u8,
    key_len: usize,
    doc: *const u8,
    doc_len: usize,
    out: *mut TsBuf,
    patch: bool,
) -> i32 {
    guard(out, || {
        let engine = handles::db(db)?;
        // SAFETY: the caller's spans, valid for the call.
        let key = unsafe { key_arg(key, key_len) }?;
        // SAFETY: as above.
        let doc: Doc = unsafe { json_arg(doc, doc_len, "doc") }?;
        let client = engine.client()?;
        let receipt = if patch {
            client.patch(&key, doc)?
        } else {
            client.put(&key, doc)?
        };
        Ok(versioned(json::receipt(&receipt)))
    })
}

/// Replaces the record at `key` with `doc` (a JSON object), locally at once, queued for the
/// server. `out`: the receipt `{"v":1, "seq", "tx", "hlc"}`.
///
/// # Safety
/// Both spans point to readable bytes of their lengths; `out` is NULL or a writable `TsBuf`.
#[no_mangle]
pub unsafe extern "C" fn ts_put(
    db: u64,
    key: *const u8,
    key_len: usize,
    doc: *const u8,
    doc_len: usize,
    out: *mut TsBuf,
) -> i32 {
    // SAFETY: forwarded under the same contract.
    unsafe { write_doc(db, key, key_len, doc, doc_len, out, false) }
}

/// Applies `doc` as a JSON merge patch (RFC 7396: `null` removes a field) to the record at
/// `key`. `out`: the receipt.
///
/// # Safety
/// As for `ts_put`.
#[no_mangle]
pub unsafe extern "C" fn ts_patch(
    db: u64,
    key: *const u8,
    key_len: usize,
    doc: *const u8,
    doc_len: usize,
    out: *mut TsBuf,
) -> i32 {
    // SAFETY: forwarded under the same contract.
    unsafe { write_doc(db, key, key_len, doc, doc_len, out, true) }
}

/// Deletes the record at `key`. `out`: the receipt.
///
/// # Safety
/// `key` points to `key_len` readable bytes; `out` is NULL or a writable `TsBuf`.
#[no_mangle]
pub unsafe extern "C" fn ts_delete(
    db: u64,
    key: *const u8,
    key_len: usize,
    out: *mut TsBuf,
) -> i32 {
    guard(out, || {
        let engine = handles::db(db)?;
        // SAFETY: the caller's span, valid for the call.
        let key = unsafe { key_arg(key, key_len) }?;
        let receipt = engine.client()?.delete(&key)?;
        Ok(versioned(json::receipt(&receipt)))
    })
}

/// Commits writes and restoration changes together, or none of them: `{"writes": [{"op":
/// "put"|"patch", "key", "doc"} | {"op": "delete", "key"}], "restore": [{"op": "set",
/// "lifetime", "bucket", "key", "entry"} | {"op": "remove", "lifetime", "bucket", "key"} |
/// {"op": "remove_bucket", "lifetime", "bucket"}]}`. The server applies the writes all or
/// none. `out`: `{"v":1, "receipts": [...]}`.
///
/// # Safety
/// `batch` points to `batch_len` readable bytes; `out` is NULL or a writable `TsBuf`.
#[no_mangle]
pub unsafe extern "C" fn ts_write_batch(
    db: u64,
    batch: *const u8,
    batch_len: usize,
    out: *mut TsBuf,
) -> i32 {
    guard(out, || {
        let engine = handles::db(db)?;
        // SAFETY: the caller's span, valid for the call.
        let batch: Batch = unsafe { json_arg(batch, batch_len, "batch") }?;
        // Every key and address is checked before the transaction begins.
        let writes = batch
            .writes
            .into_iter()
            .map(|w| {
                Ok(match w {
                    WriteArg::Put { key, doc } => (RecordKey::from_path(&key)?, Some(doc), false),
                    WriteArg::Patch { key, doc } => (RecordKey::from_path(&key)?, Some(doc), true),
                    WriteArg::Delete { key } => (RecordKey::from_path(&key)?, None, false),
                })
            })
            .collect::<Result<Vec<_>, FfiError>>()?;
        let receipts = engine.client()?.transaction(|tx| {
            let mut receipts = Vec::with_capacity(writes.len());
            for (key, doc, patch) in writes {
                receipts.push(match (doc, patch) {
                    (Some(doc), false) => tx.put(&key, doc)?,
                    (Some(doc), true) => tx.patch(&key, doc)?,
                    (None, _) => tx.delete(&key)?,
                });
            }
            for change in batch.restore {
                restore_change(tx, change)?;
            }
            Ok::<_, StoreError>(receipts)
        })?;
        Ok(json!({
            "v": 1,
            "receipts": receipts.iter().map(json::receipt).collect::<Vec<_>>(),
        }))
    })
}

fn bucket(path: &str) -> Result<tidesync_client::restoration::BucketPath, StoreError> {
    if path.is_empty() {
        return Ok(tidesync_client::restoration::BucketPath::root());
    }
    Ok(tidesync_client::restoration::BucketPath::parse(path)?)
}

fn restore_change(
    tx: &mut tidesync_client::WriteTx<'_>,
    change: RestoreArg,
) -> Result<(), StoreError> {
    match change {
        RestoreArg::Set {
            lifetime,
            bucket: path,
            key,
            entry,
        } => tx.restore_write(lifetime.into(), &bucket(&path)?, &key, entry.into()),
        RestoreArg::Remove {
            lifetime,
            bucket: path,
            key,
        } => tx.restore_remove(lifetime.into(), &bucket(&path)?, &key),
        RestoreArg::RemoveBucket {
            lifetime,
            bucket: path,
        } => tx.restore_remove_bucket(lifetime.into(), &bucket(&path)?),
    }
}
