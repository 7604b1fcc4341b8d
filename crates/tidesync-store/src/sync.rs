//! What the sync engine feeds back into the store: push results and pulled changes.
//!
//! Both run in one SQLite transaction each, so a crash leaves either the old or the new state.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::value::RawValue;
use tidesync_core::wire;
use tidesync_protocol::{
    ClientId, CollectionName, PullResponse, PulledChange, PushOutcome, PushResponse, RawChange,
    RecordKey, SpaceName,
};

use crate::counts::StoreCounts;
use crate::echoes;
use crate::outbox::{ACKED, QUEUED, SENDING};
use crate::records::{key_from_row, recompute};
use crate::write::Counters;
use crate::{meta, Result, StoreError};

/// What [`crate::Store::apply_push_response`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushApplied {
    /// Seqs now acknowledged.
    pub acked: Vec<u64>,
    /// Seqs the server refused (moved to the rejections table, local effect rolled back).
    pub rejected: Vec<u64>,
    /// New conflict rows recorded.
    pub conflicts: usize,
}

/// What [`crate::Store::apply_pull`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullApplied {
    /// Records whose base changed, per (space, collection): for live queries.
    pub changed: BTreeMap<(SpaceName, CollectionName), usize>,
    /// Seqs confirmed by this pull (they left the outbox).
    pub confirmed: Vec<u64>,
    /// Echoes rebuilt from this store's own mutations.
    pub echoes_rebuilt: usize,
    /// Records wait to be fetched in full (echoes that could not be rebuilt): pull again,
    /// with them ([`crate::Store::records_to_refetch`]), even if the page was the last.
    pub refetch_waiting: bool,
}

/// Drops the base and the cursor: every record's view becomes its pending mutations alone
/// (records without any disappear until the next pull brings them back). For a cursor the
/// server can no longer serve.
pub(crate) fn reset_base(conn: &Connection, client: &ClientId) -> Result<()> {
    conn.execute_batch(
        "DELETE FROM cursor;
         DELETE FROM refetch;
         DELETE FROM records WHERE pending = 0;
         UPDATE records SET base = NULL, base_version = 0;",
    )
    .map_err(StoreError::sql("reset the base"))?;
    let mut stmt = conn
        .prepare("SELECT space, collection, id FROM records")
        .map_err(StoreError::sql("reset the base"))?;
    let keys = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(StoreError::sql("reset the base"))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(StoreError::sql("reset the base"))?;
    drop(stmt);
    for (space, collection, id) in keys {
        recompute(conn, &key_from_row(&space, &collection, &id)?, client)?;
    }
    Ok(())
}

/// Marks queued mutations up to `through_seq` as being sent (attempts + 1).
pub(crate) fn mark_sending(conn: &Connection, from_seq: u64, through_seq: u64) -> Result<usize> {
    conn.prepare_cached(
        "UPDATE outbox SET state = ?1, attempts = attempts + 1
         WHERE seq BETWEEN ?2 AND ?3 AND state IN (?4, ?1)",
    )
    .and_then(|mut s| {
        s.execute(params![
            SENDING,
            from_seq as i64,
            through_seq as i64,
            QUEUED
        ])
    })
    .map_err(StoreError::sql("mark mutations as sending"))
}

/// Puts `sending` mutations back to `queued` (after a failed push; also done at open, since a
/// push in flight when the app died has no answer coming).
pub(crate) fn requeue(conn: &Connection) -> Result<usize> {
    conn.prepare_cached("UPDATE outbox SET state = ?1 WHERE state = ?2")
        .and_then(|mut s| s.execute(params![QUEUED, SENDING]))
        .map_err(StoreError::sql("requeue mutations"))
}

/// A push answer, and the last seq the push carried.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PushAnswer<'a> {
    pub response: &'a PushResponse,
    pub carried_through: u64,
}

pub(crate) fn apply_push_response(
    conn: &Connection,
    client: &ClientId,
    answer: PushAnswer<'_>,
    now_ms: u64,
    counts: &mut StoreCounts,
) -> Result<PushApplied> {
    let PushAnswer {
        response,
        carried_through,
    } = answer;
    // Rejected rows leave the outbox: pin the counters in the clock row first.
    Counters::load(conn)?.save(conn)?;
    // The push position moves only over what this push carried (see
    // `Store::apply_push_answer`).
    let acked_through = response.acked_through.min(carried_through);
    // What the answer covers leaves the unpushed figures (read before rejected rows go).
    let acked_from = meta::get_u64(conn, meta::ACKED_THROUGH)?;
    let acked_to = acked_from.max(acked_through);
    let (covered, covered_bytes): (i64, i64) = conn
        .prepare_cached(
            "SELECT count(*), coalesce(sum(length(op)), 0) FROM outbox WHERE seq > ?1 AND seq <= ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![acked_from as i64, acked_to as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
        })
        .map_err(StoreError::sql("count acknowledged mutations"))?;
    counts.unpushed = counts.unpushed.saturating_sub(covered as u64);
    counts.unpushed_bytes = counts.unpushed_bytes.saturating_sub(covered_bytes as u64);
    counts.acked_through = acked_to;
    let mut applied = PushApplied::default();
    let mut touched = BTreeSet::new();
    for result in &response.results {
        let seq = result.seq as i64;
        match &result.outcome {
            PushOutcome::Applied { version } | PushOutcome::Merged { version, .. } => {
                let n = conn
                    .prepare_cached(
                        "UPDATE outbox SET state = ?1, acked_version = ?2 WHERE seq = ?3",
                    )
                    .and_then(|mut s| s.execute(params![ACKED, *version as i64, seq]))
                    .map_err(StoreError::sql("acknowledge a mutation"))?;
                if n == 0 {
                    continue; // already confirmed by a pull: nothing left to track
                }
                applied.acked.push(result.seq);
                if let PushOutcome::Merged { conflicts, .. } = &result.outcome {
                    if !conflicts.is_empty() {
                        let fields = serde_json::to_string(conflicts)
                            .map_err(StoreError::bad_json("conflict"))?;
                        conn.prepare_cached(
                            "INSERT INTO conflicts (seq, space, collection, record_id, version, fields, created_at)
                             SELECT seq, space, collection, id, ?2, ?3, ?4 FROM outbox WHERE seq = ?1",
                        )
                        .and_then(|mut s| s.execute(params![seq, *version as i64, fields, now_ms as i64]))
                        .map_err(StoreError::sql("record a conflict"))?;
                        applied.conflicts += 1;
                    }
                }
            }
            PushOutcome::Rejected { code, message } => {
                let row: Option<(String, String, String, i64)> = conn
                    .prepare_cached(
                        "SELECT space, collection, id, length(op) FROM outbox WHERE seq = ?1",
                    )
                    .and_then(|mut s| {
                        s.query_row([seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                            .optional()
                    })
                    .map_err(StoreError::sql("read a rejected mutation"))?;
                let Some((space, collection, id, op_bytes)) = row else {
                    continue;
                };
                if result.seq > acked_to {
                    // Not covered by `acked_through` (a server should not do that): it still
                    // leaves the outbox, so it leaves the unpushed figures here.
                    counts.unpushed = counts.unpushed.saturating_sub(1);
                    counts.unpushed_bytes = counts.unpushed_bytes.saturating_sub(op_bytes as u64);
                }
                conn.prepare_cached(
                    "INSERT INTO rejections (seq, tx, space, collection, id, op, hlc, base_version, code, message, rejected_at)
                     SELECT seq, tx, space, collection, id, op, hlc, base_version, ?2, ?3, ?4 FROM outbox WHERE seq = ?1",
                )
                .and_then(|mut s| s.execute(params![seq, code.as_str(), message, now_ms as i64]))
                .map_err(StoreError::sql("record a rejection"))?;
                conn.prepare_cached("DELETE FROM outbox WHERE seq = ?1")
                    .and_then(|mut s| s.execute([seq]))
                    .map_err(StoreError::sql("remove a rejected mutation"))?;
                touched.insert(key_from_row(&space, &collection, &id)?);
                applied.rejected.push(result.seq);
            }
        }
    }
    // Duplicates the server skipped (their first response was lost) are acknowledged too;
    // their version is unknown, so a complete pull will confirm them. Rows at or below the
    // old push position are acknowledged already: only the range this answer moved over is
    // visited (the whole outbox was, on every answer: quadratic in a long upload).
    conn.prepare_cached(
        "UPDATE outbox SET state = ?1 WHERE seq > ?3 AND seq <= ?2 AND state != ?1",
    )
    .and_then(|mut s| s.execute(params![ACKED, acked_through as i64, acked_from as i64]))
    .map_err(StoreError::sql("acknowledge duplicates"))?;
    meta::raise_u64(conn, meta::ACKED_THROUGH, acked_through)?;
    for key in &touched {
        recompute(conn, key, client)?;
    }
    counts.conflicts += applied.conflicts as u64;
    counts.rejections += applied.rejected.len() as u64;
    counts.removed_pending(conn, applied.rejected.len() as u64)?;
    Ok(applied)
}

pub(crate) fn apply_pull<C: PulledChange>(
    conn: &Connection,
    client: &ClientId,
    page: Page<'_, C>,
    now_ms: u64,
    counts: &mut StoreCounts,
) -> Result<PullApplied> {
    let Page {
        response,
        refetched,
    } = page;
    let mut applied = PullApplied::default();
    let mut counters = Counters::load(conn)?;
    // Confirmed rows leave the outbox: pin the counters in the clock row first.
    counters.save(conn)?;
    let mut changed = Tally::default();
    // The keys sent, when some were asked for in full (`refetched`).
    let mut sent = BTreeSet::new();
    for change in &response.changes {
        let (change, newest) = change.checked().map_err(|e| {
            StoreError::InvalidInput(format!(
                "the server sent a change that cannot be stored: {e}"
            ))
        })?;
        if let Some(hlc) = newest {
            counters.clock.observe(hlc);
        }
        apply_change(conn, client, &change)?;
        changed.add(&change.space, &change.collection);
        if !refetched.is_empty() {
            sent.insert(RecordKey::new(
                change.space.clone(),
                change.collection.clone(),
                change.id.clone(),
            ));
        }
    }
    // A record asked for in full and not sent is no longer on the server: its delete was
    // pruned by the server's history horizon before this client pulled it.
    for key in refetched {
        if !sent.contains(key) {
            vanished(conn, client, key)?;
            changed.add(&key.space, &key.collection);
        }
    }
    echoes::fetched(conn, refetched)?;
    for echo in &response.echoes {
        if echoes::apply(conn, client, echo)? {
            applied.echoes_rebuilt += 1;
            // The view holds the same document, but its mutations are confirmed below and
            // the record stops being pending: live queries show that.
            changed.add(&echo.space, &echo.collection);
        }
    }
    applied.changed = changed.finish();
    applied.refetch_waiting = echoes::any_waiting(conn)?;
    // Until every echo is rebuilt or fetched, the base lacks some of this client's
    // acknowledged mutations: the pull is not complete.
    let complete = !response.has_more && !applied.refetch_waiting;
    for (space, version) in &response.cursor {
        conn.prepare_cached(
            "INSERT INTO cursor (space, version) VALUES (?1, ?2)
             ON CONFLICT DO UPDATE SET version = max(version, excluded.version)",
        )
        .and_then(|mut s| s.execute(params![space.as_str(), *version as i64]))
        .map_err(StoreError::sql("advance the pull cursor"))?;
    }
    applied.confirmed = confirm(conn, client, complete.then_some(response.acked_through))?;
    counters.save(conn)?;
    // A pull's `acked_through` is not a push answer: it says the server *processed* a seq,
    // not whether it applied or rejected it. Only push answers (which repeat rejections for
    // duplicates) move the push position, so a mutation whose answer was lost is pushed
    // again and learns its outcome.
    if complete {
        meta::set(conn, meta::LAST_SYNCED_AT, &now_ms.to_string())?;
        meta::set(conn, meta::HAS_SYNCED, "1")?;
        counts.last_synced_at_ms = Some(now_ms);
        counts.has_synced = true;
    }
    counts.removed_pending(conn, applied.confirmed.len() as u64)?;
    Ok(applied)
}

/// A pulled page to apply, and the records its request asked for in full.
#[derive(Debug)]
pub struct Page<'a, C> {
    /// The server's answer.
    pub response: &'a PullResponse<C>,
    /// The request's [`refetch`](tidesync_protocol::PullRequest::refetch) keys: the server
    /// sent those it has among the changes.
    pub refetched: &'a [RecordKey],
}

/// Stores one pulled change as the record's base, text as received: the document becomes
/// the view unless local work is pending (then the view is rebased), and a deleted record
/// without pending work leaves the table.
fn apply_change(conn: &Connection, client: &ClientId, change: &RawChange) -> Result<()> {
    let key = [
        change.space.as_str(),
        change.collection.as_str(),
        change.id.as_str(),
    ];
    let doc = change.doc.as_deref().map(RawValue::get);
    let base = wire::join(doc, change.stamps.get());
    let version = change.version as i64;
    // Most pulled records are new to this store (a bootstrap is nothing else) or have no
    // local work pending: one statement each.
    let rebase = match doc {
        Some(doc) => {
            !insert_new(conn, key, doc, &base, version)?
                && !replace_synced(conn, key, doc, &base, version)?
        }
        None => match pending_of(conn, key)? {
            None => false,
            Some(0) => {
                conn.prepare_cached(
                    "DELETE FROM records WHERE space = ?1 AND collection = ?2 AND id = ?3",
                )
                .and_then(|mut s| s.execute(key))
                .map_err(StoreError::sql("remove a deleted record"))?;
                false
            }
            Some(_) => true,
        },
    };
    if rebase {
        // Local work is pending: new base, and view = new base + pending.
        conn.prepare_cached(
            "UPDATE records SET base = ?4, base_version = ?5
             WHERE space = ?1 AND collection = ?2 AND id = ?3",
        )
        .and_then(|mut s| s.execute(params![key[0], key[1], key[2], base, version]))
        .map_err(StoreError::sql("store a pulled record"))?;
        let key = RecordKey::new(
            change.space.clone(),
            change.collection.clone(),
            change.id.clone(),
        );
        recompute(conn, &key, client)?;
    }
    Ok(())
}

/// Inserts a record this store does not know yet (base and view); false if it exists.
///
/// Plain statements, no upsert: `ON CONFLICT … DO UPDATE … RETURNING` costs SQLite a
/// statement journal and a temporary table per row, most of a bootstrap's time.
fn insert_new(
    conn: &Connection,
    key: [&str; 3],
    doc: &str,
    base: &str,
    version: i64,
) -> Result<bool> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO records (space, collection, id, doc, base, base_version, pending)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)",
    )
    .and_then(|mut s| s.execute(params![key[0], key[1], key[2], doc, base, version]))
    .map(|inserted| inserted == 1)
    .map_err(StoreError::sql("store a pulled record"))
}

/// Replaces base and view of a record without pending work; false if it has some.
fn replace_synced(
    conn: &Connection,
    key: [&str; 3],
    doc: &str,
    base: &str,
    version: i64,
) -> Result<bool> {
    conn.prepare_cached(
        "UPDATE records SET doc = ?4, base = ?5, base_version = ?6
         WHERE space = ?1 AND collection = ?2 AND id = ?3 AND pending = 0",
    )
    .and_then(|mut s| s.execute(params![key[0], key[1], key[2], doc, base, version]))
    .map(|updated| updated == 1)
    .map_err(StoreError::sql("store a pulled record"))
}

/// The record's count of pending mutations; `None` if the store has no such record.
/// Drops the base of `key`, which the server no longer has (a refetch that came back
/// without it): the record goes, or (local work pending) its view becomes the pending
/// mutations alone, as after a base reset.
fn vanished(conn: &Connection, client: &ClientId, key: &RecordKey) -> Result<()> {
    let params = [key.space.as_str(), key.collection.as_str(), key.id.as_str()];
    match pending_of(conn, params)? {
        None => {}
        Some(0) => {
            conn.prepare_cached(
                "DELETE FROM records WHERE space = ?1 AND collection = ?2 AND id = ?3",
            )
            .and_then(|mut s| s.execute(params))
            .map_err(StoreError::sql("remove a record the server no longer has"))?;
        }
        Some(_) => {
            conn.prepare_cached(
                "UPDATE records SET base = NULL, base_version = 0
                 WHERE space = ?1 AND collection = ?2 AND id = ?3",
            )
            .and_then(|mut s| s.execute(params))
            .map_err(StoreError::sql(
                "drop the base of a record the server no longer has",
            ))?;
            recompute(conn, key, client)?;
        }
    }
    Ok(())
}

fn pending_of(conn: &Connection, key: [&str; 3]) -> Result<Option<i64>> {
    conn.prepare_cached(
        "SELECT pending FROM records WHERE space = ?1 AND collection = ?2 AND id = ?3",
    )
    .and_then(|mut s| s.query_row(key, |r| r.get(0)).optional())
    .map_err(StoreError::sql("read a record"))
}

/// Counts changes per (space, collection). Pulled changes come in runs of one space (and
/// mostly one collection), so the names are cloned once per run rather than per change.
#[derive(Default)]
struct Tally {
    counts: BTreeMap<(SpaceName, CollectionName), usize>,
    run: Option<((SpaceName, CollectionName), usize)>,
}

impl Tally {
    fn add(&mut self, space: &SpaceName, collection: &CollectionName) {
        if let Some(((s, c), n)) = &mut self.run {
            if s == space && c == collection {
                *n += 1;
                return;
            }
        }
        self.flush();
        self.run = Some(((space.clone(), collection.clone()), 1));
    }

    fn flush(&mut self) {
        if let Some((names, n)) = self.run.take() {
            *self.counts.entry(names).or_default() += n;
        }
    }

    fn finish(mut self) -> BTreeMap<(SpaceName, CollectionName), usize> {
        self.flush();
        self.counts
    }
}

/// The mutations [`confirm`] removes, in seq order. `CROSS JOIN` keeps `cursor` (a row per
/// space) as the outer loop, whatever the planner would guess without statistics.
const CONFIRMED: &str = "
    SELECT seq, space, collection, id FROM outbox WHERE seq <= ?1 AND state = ?2
    UNION
    SELECT o.seq, o.space, o.collection, o.id
    FROM cursor AS c CROSS JOIN outbox AS o
        ON o.space = c.space AND o.acked_version IS NOT NULL AND o.acked_version <= c.version
    WHERE o.state = ?2 AND NOT EXISTS (
        SELECT 1 FROM refetch AS r
        WHERE r.space = o.space AND r.collection = o.collection AND r.id = o.id)
    ORDER BY 1";

/// Removes from the outbox every acknowledged mutation the base now contains: acked at a
/// version the cursor has passed (unless its record waits for a refetch: its base lacks the
/// mutation until the record arrives in full), or (after a complete pull) at or below the server's
/// `acked_through`. A mutation without an answer is never confirmed by a pull, even below
/// `acked_through`: the server may have *rejected* it (the answer was lost), and only a push
/// answer tells; it stays queued and is pushed again.
///
/// Both halves are index searches (the rowid range, and `outbox_acked` per cursor space), so
/// a pull page costs what it confirms, not the size of the outbox.
fn confirm(conn: &Connection, client: &ClientId, acked_through: Option<u64>) -> Result<Vec<u64>> {
    let through = acked_through.map_or(-1, |v| v as i64);
    let mut stmt = conn
        .prepare_cached(CONFIRMED)
        .map_err(StoreError::sql("find confirmed mutations"))?;
    let rows = stmt
        .query_map(params![through, ACKED], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })
        .map_err(StoreError::sql("find confirmed mutations"))?;
    let mut seqs = Vec::new();
    let mut keys = BTreeSet::new();
    for row in rows {
        let (seq, space, collection, id) =
            row.map_err(StoreError::sql("find confirmed mutations"))?;
        seqs.push(seq as u64);
        keys.insert(key_from_row(&space, &collection, &id)?);
    }
    drop(stmt);
    let mut delete = conn
        .prepare_cached("DELETE FROM outbox WHERE seq = ?1")
        .map_err(StoreError::sql("remove confirmed mutations"))?;
    for seq in &seqs {
        delete
            .execute([*seq as i64])
            .map_err(StoreError::sql("remove confirmed mutations"))?;
    }
    for key in &keys {
        recompute(conn, key, client)?;
    }
    Ok(seqs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreConfig;

    #[test]
    fn confirmation_searches_indexes_instead_of_scanning_the_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let conn =
            crate::open::open_connection(&dir.path().join("plan.db"), &StoreConfig::default())
                .unwrap();
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {CONFIRMED}"))
            .unwrap();
        let plan: Vec<String> = stmt
            .query_map(params![5, ACKED], |r| r.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let plan = plan.join("\n");
        // `cursor` has one row per space; the outbox is only ever searched.
        for line in plan.lines().filter(|l| l.starts_with("SCAN")) {
            assert_eq!(line, "SCAN c", "{plan}");
        }
        assert!(plan.contains("USING INDEX outbox_acked"), "{plan}");
        assert!(plan.contains("USING INTEGER PRIMARY KEY"), "{plan}");
    }
}

/// What a server that forgot part of this client's history (restored from an older backup)
/// lost, and what the client does about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLoss {
    /// The last seq the server still has processed for this client.
    pub server_last_seq: u64,
    /// The highest seq this client had handed out.
    pub local_last_seq: u64,
    /// Mutations after `server_last_seq` still held here: queued to be pushed again (once).
    pub resent: u64,
    /// Mutations after `server_last_seq` the server had applied and this client had already
    /// confirmed (dropped from its outbox): the server lost them and nothing here can send
    /// them again. Their effect leaves the local view when the base is downloaded again.
    pub lost: u64,
}

pub(crate) fn forget_server_history(
    conn: &Connection,
    server_last_seq: u64,
    counts: &mut StoreCounts,
) -> Result<HistoryLoss> {
    let local_last_seq = Counters::load(conn)?.last_seq;
    let count = |sql: &str| -> Result<u64> {
        conn.prepare_cached(sql)
            .and_then(|mut s| s.query_row([server_last_seq as i64], |r| r.get::<_, i64>(0)))
            .map(|n| n as u64)
            .map_err(StoreError::sql("count what the server forgot"))
    };
    let rejected = count("SELECT count(*) FROM rejections WHERE seq > ?1")?;
    let resent = conn
        .prepare_cached("UPDATE outbox SET state = ?1, acked_version = NULL WHERE seq > ?2")
        .and_then(|mut s| s.execute(params![QUEUED, server_last_seq as i64]))
        .map_err(StoreError::sql("queue what the server forgot"))? as u64;
    meta::set_u64(conn, meta::ACKED_THROUGH, server_last_seq)?;
    meta::set_u64(conn, meta::RECOVER_THROUGH, local_last_seq)?;
    *counts = StoreCounts::load(conn)?;
    Ok(HistoryLoss {
        server_last_seq,
        local_last_seq,
        resent,
        lost: local_last_seq
            .saturating_sub(server_last_seq)
            .saturating_sub(resent)
            .saturating_sub(rejected),
    })
}

/// `Some(acked_through)` while pushes are recovery pushes.
pub(crate) fn recovering_from(conn: &Connection) -> Result<Option<u64>> {
    let acked = meta::get_u64(conn, meta::ACKED_THROUGH)?;
    let until = meta::get_u64(conn, meta::RECOVER_THROUGH)?;
    Ok((acked < until).then_some(acked))
}
