//! Local writes: one [`WriteTx`] is one SQLite transaction in which every write updates the
//! record view *and* appends to the outbox.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension, Transaction};
use tidesync_core::patch::{apply_op, resolve_patch};
use tidesync_core::HlcClock;
use tidesync_protocol::{CollectionName, Doc, Hlc, Op, RecordKey, SpaceName};

use crate::config::WallClock;
use crate::counts::StoreCounts;
use crate::records::{key_params, parse_doc};
use crate::restoration::{
    BucketPath, Entry, EntryKey, Lifetime, PlannedChange, RestorationBatch, RestorationChange,
    RestorationSchema,
};
use crate::{Result, StoreError};

/// What a local write was given: its place in the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteReceipt {
    /// Its sequence number (query its state with [`crate::Store::mutation_state`]).
    pub seq: u64,
    /// Its local transaction id.
    pub tx: u64,
    /// Its hybrid logical clock stamp.
    pub hlc: Hlc,
}

/// The write counters: the last seq, tx id and HLC stamp handed out.
///
/// They are the larger of the `clock` row and the newest outbox row (seq, tx and hlc all grow
/// with seq), so a local write only appends to the outbox and never rewrites the clock row.
/// Whoever deletes outbox rows or moves the clock on its own (confirmations, rejections,
/// observed remote stamps) saves the counters first, in the same transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counters {
    pub last_seq: u64,
    pub last_tx: u64,
    pub clock: HlcClock,
}

impl Counters {
    pub(crate) fn load(conn: &rusqlite::Connection) -> Result<Counters> {
        conn.prepare_cached(
            "SELECT c.last_seq, c.last_tx, c.last_hlc, o.seq, o.tx, o.hlc
             FROM clock AS c
             LEFT JOIN (SELECT seq, tx, hlc FROM outbox ORDER BY seq DESC LIMIT 1) AS o
             WHERE c.id = 1",
        )
        .and_then(|mut s| {
            s.query_row([], |r| {
                let newest = |i: usize, j: usize| -> rusqlite::Result<u64> {
                    let saved = r.get::<_, i64>(i)? as u64;
                    let outbox = r.get::<_, Option<i64>>(j)?.map_or(0, |v| v as u64);
                    Ok(saved.max(outbox))
                };
                Ok(Counters {
                    last_seq: newest(0, 3)?,
                    last_tx: newest(1, 4)?,
                    clock: HlcClock::resume(Hlc::from_u64(newest(2, 5)?)),
                })
            })
        })
        .map_err(StoreError::sql("read the write counters"))
    }

    pub(crate) fn save(&self, conn: &rusqlite::Connection) -> Result<()> {
        conn.prepare_cached(
            "UPDATE clock SET last_seq = ?1, last_tx = ?2, last_hlc = ?3 WHERE id = 1",
        )
        .and_then(|mut s| {
            s.execute(params![
                self.last_seq as i64,
                self.last_tx as i64,
                self.clock.last().as_u64() as i64
            ])
        })
        .map_err(StoreError::sql("save the write counters"))?;
        Ok(())
    }
}

/// A local write transaction. Obtained from [`crate::Store::transaction`]; everything done
/// through it commits together when the closure returns `Ok`, or not at all.
///
/// All mutations of one `WriteTx` share one transaction id, and the server applies them all
/// or none.
pub struct WriteTx<'a> {
    pub(crate) tx: Transaction<'a>,
    pub(crate) wall: &'a WallClock,
    pub(crate) max_doc_bytes: usize,
    pub(crate) counters: Counters,
    pub(crate) tx_id: Option<u64>,
    pub(crate) base_versions: HashMap<SpaceName, u64>,
    pub(crate) restoration: RestorationBatch<'a>,
    pub(crate) schema: &'a RestorationSchema,
    /// The store's counts as this transaction moves them (kept if it commits).
    pub(crate) counts: StoreCounts,
    /// The collections this transaction wrote to, with how many mutations each.
    pub(crate) written: Written,
}

/// Mutations per collection, in runs: a transaction mostly writes one collection, so the
/// names are cloned once per run rather than once per write.
#[derive(Debug, Default)]
pub(crate) struct Written(Vec<(SpaceName, CollectionName, usize)>);

impl Written {
    fn add(&mut self, key: &RecordKey) {
        if let Some((space, collection, n)) = self.0.last_mut() {
            if *space == key.space && *collection == key.collection {
                *n += 1;
                return;
            }
        }
        self.0.push((key.space.clone(), key.collection.clone(), 1));
    }

    /// How many records were written.
    pub(crate) fn rows(&self) -> usize {
        self.0.iter().map(|(_, _, n)| n).sum()
    }

    /// Adds the totals per collection to `totals`.
    pub(crate) fn add_to(
        self,
        totals: &mut std::collections::BTreeMap<(SpaceName, CollectionName), usize>,
    ) {
        for (space, collection, n) in self.0 {
            *totals.entry((space, collection)).or_insert(0) += n;
        }
    }
}

impl std::fmt::Debug for WriteTx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTx")
            .field("tx_id", &self.tx_id)
            .field("last_seq", &self.counters.last_seq)
            .finish_non_exhaustive()
    }
}

impl<'a> WriteTx<'a> {
    /// Replaces the record's whole document (creating or resurrecting it).
    pub fn put(&mut self, key: &RecordKey, doc: Doc) -> Result<WriteReceipt> {
        self.write_op(key, Op::Put { doc })
    }

    /// Applies a JSON merge patch (RFC 7396) to the record, as the app sees it now: `null`
    /// removes a field, nested objects merge. A patch on a missing or deleted record creates
    /// it with the patched fields.
    pub fn patch(&mut self, key: &RecordKey, patch: Doc) -> Result<WriteReceipt> {
        let current = self.view_doc(key)?;
        let fields = resolve_patch(current.as_ref(), &patch);
        self.land(key, current, Op::Patch { fields })
    }

    /// Deletes the record. Deleting a record that does not exist is still recorded (the
    /// server may have it).
    pub fn delete(&mut self, key: &RecordKey) -> Result<WriteReceipt> {
        self.write_op(key, Op::Delete)
    }

    /// Applies an already resolved operation (top-level `patch` fields) to the view and
    /// appends it to the outbox.
    pub(crate) fn write_op(&mut self, key: &RecordKey, op: Op) -> Result<WriteReceipt> {
        let current = match op {
            Op::Patch { .. } => self.view_doc(key)?,
            Op::Put { .. } | Op::Delete => None,
        };
        self.land(key, current, op)
    }

    /// Updates the view from `current` (the view document, read only for a patch) and
    /// appends `op` to the outbox.
    fn land(&mut self, key: &RecordKey, current: Option<Doc>, op: Op) -> Result<WriteReceipt> {
        let doc_json = match &op {
            Op::Put { doc } => Some(self.doc_json(key, doc)?),
            Op::Patch { .. } => match apply_op(current, &op) {
                Some(doc) => Some(self.doc_json(key, &doc)?),
                None => None,
            },
            Op::Delete => None,
        };
        self.upsert_view(key, doc_json.as_deref())?;
        self.append(key, &op)
    }

    /// Reads a record as this transaction sees it.
    pub fn get(&self, key: &RecordKey) -> Result<Option<crate::Record>> {
        crate::records::get(&self.tx, key)
    }

    /// Writes a restoration entry, atomically with the data writes of this transaction.
    /// The entry's version must not be newer than its tag's registered version (it would be
    /// dropped at the next open).
    pub fn restore_write(
        &mut self,
        lifetime: Lifetime,
        bucket: &BucketPath,
        key: &str,
        entry: Entry,
    ) -> Result<()> {
        self.schema
            .check_write(&entry.tag, entry.version)
            .map_err(crate::restoration::RestorationError::from)?;
        self.restoration.plan(RestorationChange::Write {
            lifetime,
            path: bucket.clone(),
            key: EntryKey::new(key)?,
            entry,
        })?;
        Ok(())
    }

    /// Removes one restoration entry (no-op if absent).
    pub fn restore_remove(
        &mut self,
        lifetime: Lifetime,
        bucket: &BucketPath,
        key: &str,
    ) -> Result<()> {
        self.restoration.plan(RestorationChange::Remove {
            lifetime,
            path: bucket.clone(),
            key: EntryKey::new(key)?,
        })?;
        Ok(())
    }

    /// Removes a restoration bucket and everything below it.
    pub fn restore_remove_bucket(&mut self, lifetime: Lifetime, bucket: &BucketPath) -> Result<()> {
        self.restoration.plan(RestorationChange::RemoveBucket {
            lifetime,
            path: bucket.clone(),
        })?;
        Ok(())
    }

    /// Commits SQLite, and hands back the restoration changes for the in-memory tree and the
    /// counts as moved by this transaction.
    pub(crate) fn commit(self) -> Result<(Vec<PlannedChange>, StoreCounts, Written)> {
        // No counter save: the new outbox rows carry the counters (see `Counters`).
        let planned = self.restoration.finish();
        for change in &planned {
            crate::restoration_store::persist(&self.tx, change)?;
        }
        self.tx
            .commit()
            .map_err(StoreError::sql("commit a local write"))?;
        Ok((planned, self.counts, self.written))
    }

    fn doc_json(&self, key: &RecordKey, doc: &Doc) -> Result<String> {
        let json = serde_json::to_string(doc).map_err(StoreError::bad_json("document"))?;
        if json.len() > self.max_doc_bytes {
            return Err(StoreError::TooLarge {
                what: format!("document {key}"),
                size: json.len(),
                limit: self.max_doc_bytes,
            });
        }
        Ok(json)
    }

    fn view_doc(&self, key: &RecordKey) -> Result<Option<Doc>> {
        let doc: Option<Option<String>> = self
            .tx
            .prepare_cached(
                "SELECT doc FROM records WHERE space = ?1 AND collection = ?2 AND id = ?3",
            )
            .and_then(|mut s| s.query_row(key_params(key), |r| r.get(0)).optional())
            .map_err(StoreError::sql("read a record for a patch"))?;
        doc.flatten().map(|d| parse_doc(&d)).transpose()
    }

    fn upsert_view(&self, key: &RecordKey, doc: Option<&str>) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO records (space, collection, id, doc, pending) VALUES (?1, ?2, ?3, ?4, 1)
                 ON CONFLICT DO UPDATE SET doc = excluded.doc, pending = pending + 1",
            )
            .and_then(|mut s| {
                s.execute(params![
                    key.space.as_str(),
                    key.collection.as_str(),
                    key.id.as_str(),
                    doc
                ])
            })
            .map_err(StoreError::sql("update the record view"))?;
        Ok(())
    }

    fn append(&mut self, key: &RecordKey, op: &Op) -> Result<WriteReceipt> {
        let now = self.wall.now_ms();
        let hlc = self.counters.clock.tick(now)?;
        let seq = self.counters.last_seq + 1;
        let tx = *self.tx_id.get_or_insert(self.counters.last_tx + 1);
        let base_version = self.base_version(&key.space)?;
        let op_json = serde_json::to_string(op).map_err(StoreError::bad_json("mutation"))?;
        self.tx
            .prepare_cached(
                "INSERT INTO outbox (seq, tx, space, collection, id, op, hlc, base_version, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    seq as i64,
                    tx as i64,
                    key.space.as_str(),
                    key.collection.as_str(),
                    key.id.as_str(),
                    op_json,
                    hlc.as_u64() as i64,
                    base_version as i64,
                    now as i64
                ])
            })
            .map_err(StoreError::sql("append to the outbox"))?;
        self.counters.last_seq = seq;
        self.counters.last_tx = tx;
        self.counts.appended(seq, op_json.len(), now);
        self.written.add(key);
        Ok(WriteReceipt { seq, tx, hlc })
    }

    fn base_version(&mut self, space: &SpaceName) -> Result<u64> {
        if let Some(v) = self.base_versions.get(space) {
            return Ok(*v);
        }
        let v: Option<i64> = self
            .tx
            .prepare_cached("SELECT version FROM cursor WHERE space = ?1")
            .and_then(|mut s| s.query_row([space.as_str()], |r| r.get(0)).optional())
            .map_err(StoreError::sql("read the pull cursor"))?;
        let v = v.unwrap_or(0) as u64;
        self.base_versions.insert(space.clone(), v);
        Ok(v)
    }
}
