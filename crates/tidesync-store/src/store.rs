//! [`Store`]: the handle an app (or the sync engine) holds.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, TransactionBehavior};
use tidesync_protocol::{
    ClientId, CollectionName, Cursor, Doc, PullResponse, PulledChange, PushResponse, RecordKey,
    SpaceName,
};

use crate::config::{SessionRestore, StoreConfig};
use crate::conflicts::{self, Conflict, Resolution};
use crate::counts::{CountsCache, StoreCounts};
use crate::outbox::{self, MutationState, OutboxEntry, OutboxStats, UnpushedStats};
use crate::records::{self, ListOptions, Record, RecordPage};
use crate::rejections::{self, Rejection};
use crate::restoration::{BucketPath, Entry, Lifetime, RestorationIssue, RestorationTree};
use crate::sync::{self, Page, PullApplied, PushApplied};
use crate::write::{Counters, WriteReceipt, WriteTx, Written};
use crate::{echoes, meta, restoration_store, Result, StoreError};

/// The client's local database: records, outbox, conflicts, rejections, restoration state.
///
/// Every method is a plain synchronous call on one SQLite connection. Writes take SQLite's
/// write lock (`BEGIN IMMEDIATE`), so several handles or processes may share one file: they
/// wait for each other up to [`StoreConfig::busy_timeout`], then fail with
/// [`StoreError::Busy`]. The restoration tree is per handle: one app process owns it.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
    client_id: ClientId,
    session_id: String,
    config: StoreConfig,
    restoration: RestorationTree,
    restoration_issues: Vec<RestorationIssue>,
    counts: CountsCache,
    /// `PRAGMA data_version` at the last [`Store::committed_elsewhere`].
    elsewhere_seen: i64,
    /// Collections written by this handle's local writes since [`Store::take_written`].
    written: BTreeMap<(SpaceName, CollectionName), usize>,
    /// When the planner's statistics are refreshed next.
    planner: crate::planner::Freshness,
}

impl Store {
    /// Opens the database at `path`, creating it if it does not exist.
    ///
    /// Refuses, without modifying the file: a file that is not SQLite, an SQLite file of
    /// another application, a file written by a newer schema. Migrates older schemas. Loads
    /// the restoration tree (dropping and reporting entries that fail to decode or migrate)
    /// but not the outbox: open time does not grow with the number of pending mutations.
    pub fn open(path: impl AsRef<Path>, config: StoreConfig) -> Result<Store> {
        let path = path.as_ref().to_owned();
        let mut conn = crate::open::open_connection(&path, &config)?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::sql("begin opening"))?;
        let client_id = match meta::get(&tx, meta::CLIENT_ID)? {
            Some(id) => ClientId::new(id).map_err(|e| StoreError::BadStoredData {
                what: "client id",
                detail: e.to_string(),
            })?,
            None => {
                let id = ClientId::new(uuid::Uuid::new_v4().simple().to_string())?;
                meta::set(&tx, meta::CLIENT_ID, id.as_str())?;
                id
            }
        };
        // Pushes in flight when the app died get no answer: send them again.
        sync::requeue(&tx)?;
        let stored_session = meta::get(&tx, meta::SESSION_ID)?;
        let keep_session = match (&config.session, &stored_session) {
            (SessionRestore::Restore(wanted), Some(stored)) => wanted == stored,
            (SessionRestore::Keep, Some(_)) => true,
            _ => false,
        };
        let session_id = match (keep_session, stored_session) {
            (true, Some(id)) => id,
            _ => {
                restoration_store::clear_session(&tx)?;
                let id = uuid::Uuid::new_v4().simple().to_string();
                meta::set(&tx, meta::SESSION_ID, &id)?;
                id
            }
        };
        let loaded =
            restoration_store::load(&tx, &config.restoration_schema, config.restoration_limits)?;
        tx.commit().map_err(StoreError::sql("finish opening"))?;
        let counts = CountsCache::load(&conn)?;
        let elsewhere_seen = crate::counts::data_version(&conn)?;
        Ok(Store {
            conn,
            path,
            client_id,
            session_id,
            config,
            restoration: loaded.tree,
            restoration_issues: loaded.issues,
            counts,
            elsewhere_seen,
            written: BTreeMap::new(),
            planner: crate::planner::Freshness::default(),
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This installation's client id, generated once when the database was created.
    pub fn client_id(&self) -> &ClientId {
        &self.client_id
    }

    // ---- local reads and writes ---------------------------------------------------------

    /// Reads a record from the local view (never waits for the network).
    pub fn get(&self, key: &RecordKey) -> Result<Option<Record>> {
        records::get(&self.conn, key)
    }

    /// Lists a collection in id order, one page at a time.
    pub fn list(
        &self,
        space: &SpaceName,
        collection: &CollectionName,
        options: &ListOptions,
    ) -> Result<RecordPage> {
        records::list(&self.conn, space, collection, options)
    }

    /// One page of a query over the local view (see [`crate::query`]).
    pub fn query(&self, query: &crate::Query) -> Result<crate::QueryPage> {
        crate::query::page(&self.conn, query)
    }

    /// How many records a query selects.
    pub fn count(&self, query: &crate::Query) -> Result<u64> {
        crate::query::count(&self.conn, query)
    }

    /// SQLite's plan for a query, one line per step (does a declared index serve it?).
    pub fn explain(&self, query: &crate::Query) -> Result<Vec<String>> {
        crate::query::explain(&self.conn, query)
    }

    /// Runs `f` in one local transaction: its writes (records, outbox, restoration state)
    /// commit together when it returns `Ok`, and none of them when it returns `Err` or panics.
    /// The server applies the transaction's mutations all or none.
    pub fn transaction<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&mut WriteTx<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::sql("begin a local write"))?;
        let counters = Counters::load(&tx)?;
        let counts = self.counts.current(&tx)?;
        let mut write = WriteTx {
            tx,
            wall: &self.config.wall_clock,
            max_doc_bytes: self.config.max_doc_bytes,
            counters,
            tx_id: None,
            base_versions: Default::default(),
            restoration: self.restoration.batch(),
            schema: &self.config.restoration_schema,
            counts,
            written: Written::default(),
        };
        let out = f(&mut write)?;
        let (planned, counts, written) = write.commit()?;
        self.restoration.apply_all(planned);
        self.counts.set(counts);
        self.planner.wrote(&self.conn, written.rows());
        written.add_to(&mut self.written);
        Ok(out)
    }

    /// The collections local writes of this handle changed since the last call, with how
    /// many mutations each (committed transactions only), in name order. What a live list
    /// refreshes on.
    pub fn take_written(&mut self) -> Vec<(SpaceName, CollectionName, usize)> {
        std::mem::take(&mut self.written)
            .into_iter()
            .map(|((space, collection), n)| (space, collection, n))
            .collect()
    }

    /// Writes one restoration entry in its own transaction (use [`WriteTx::restore_write`]
    /// to make it atomic with data writes).
    pub fn restore_write(
        &mut self,
        lifetime: Lifetime,
        bucket: &BucketPath,
        key: &str,
        entry: Entry,
    ) -> Result<()> {
        self.transaction(|tx| tx.restore_write(lifetime, bucket, key, entry))
    }

    /// Removes one restoration entry in its own transaction.
    pub fn restore_remove(
        &mut self,
        lifetime: Lifetime,
        bucket: &BucketPath,
        key: &str,
    ) -> Result<()> {
        self.transaction(|tx| tx.restore_remove(lifetime, bucket, key))
    }

    /// Replaces a record's document: one mutation in its own transaction.
    pub fn put(&mut self, key: &RecordKey, doc: Doc) -> Result<WriteReceipt> {
        self.transaction(|tx| tx.put(key, doc))
    }

    /// Applies a JSON merge patch to a record: one mutation in its own transaction.
    pub fn patch(&mut self, key: &RecordKey, patch: Doc) -> Result<WriteReceipt> {
        self.transaction(|tx| tx.patch(key, patch))
    }

    /// Deletes a record: one mutation in its own transaction.
    pub fn delete(&mut self, key: &RecordKey) -> Result<WriteReceipt> {
        self.transaction(|tx| tx.delete(key))
    }

    // ---- outbox -------------------------------------------------------------------------

    /// The next push batch: up to `max` mutations after `after_seq`, whole transactions only
    /// (a single larger transaction comes alone and whole).
    pub fn outbox_batch(&self, after_seq: u64, max: usize) -> Result<Vec<OutboxEntry>> {
        outbox::batch(&self.conn, after_seq, max)
    }

    /// Visits the outbox in seq order without loading it into memory.
    pub fn for_each_outbox(&self, f: impl FnMut(OutboxEntry) -> ControlFlow<()>) -> Result<()> {
        outbox::for_each(&self.conn, f)
    }

    /// Pending count, oldest pending age and last seq, for status displays.
    pub fn outbox_stats(&self) -> Result<OutboxStats> {
        let last_seq = Counters::load(&self.conn)?.last_seq;
        outbox::stats(&self.conn, last_seq)
    }

    /// Pending, unpushed, conflict and rejection counts and the sync facts a status shows,
    /// without a query: kept up to date by this handle's commits, and read again from the
    /// tables only when another connection (another process) committed since.
    pub fn counts(&mut self) -> Result<StoreCounts> {
        self.counts.current(&self.conn)
    }

    /// Whether another connection to the file (another process, an app extension, a
    /// background task) committed since the last call: one `PRAGMA data_version`, so cheap
    /// enough to poll. Commits of this handle never count.
    pub fn committed_elsewhere(&mut self) -> Result<bool> {
        let version = crate::counts::data_version(&self.conn)?;
        let changed = version != self.elsewhere_seen;
        self.elsewhere_seen = version;
        Ok(changed)
    }

    /// The same figures as [`Store::counts`], read from the tables (what `counts` avoids;
    /// for checks and tools).
    pub fn recount(&self) -> Result<StoreCounts> {
        StoreCounts::load(&self.conn)
    }

    /// The next push batch: whole transactions after the highest seq the server has
    /// acknowledged, up to `max` mutations (a larger single transaction comes whole).
    pub fn next_push_batch(&self, max: usize) -> Result<Vec<OutboxEntry>> {
        let acked = meta::get_u64(&self.conn, meta::ACKED_THROUGH)?;
        outbox::batch(&self.conn, acked, max)
    }

    /// How many mutations (and roughly how many bytes) wait to be pushed.
    pub fn unpushed(&self) -> Result<UnpushedStats> {
        let acked = meta::get_u64(&self.conn, meta::ACKED_THROUGH)?;
        outbox::unpushed(&self.conn, acked)
    }

    /// The highest seq the server has reported processed.
    pub fn acked_through(&self) -> Result<u64> {
        meta::get_u64(&self.conn, meta::ACKED_THROUGH)
    }

    /// Number of unresolved conflicts.
    pub fn conflict_count(&self) -> Result<u64> {
        self.count_rows("SELECT count(*) FROM conflicts")
    }

    /// Number of rejected mutations awaiting retry or discard.
    pub fn rejection_count(&self) -> Result<u64> {
        self.count_rows("SELECT count(*) FROM rejections")
    }

    fn count_rows(&self, sql: &'static str) -> Result<u64> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
            .map(|n| n as u64)
            .map_err(StoreError::sql("count rows"))
    }

    /// The server forgot this client's mutations after `server_last_seq` (it answered
    /// `seq_gap` with that `last_seq`: restored from an older backup). One transaction: every
    /// mutation after it still held is queued to be pushed again (acknowledged or not), the
    /// acknowledged pointer goes back to it, and pushes are recovery pushes
    /// ([`Store::recovering_from`]) until the server has processed every seq handed out so
    /// far. Returns what is re-sent and what was lost. The caller also resets the base: it
    /// holds history the server no longer has.
    pub fn forget_server_history(&mut self, server_last_seq: u64) -> Result<crate::HistoryLoss> {
        self.write(|conn, counts| sync::forget_server_history(conn, server_last_seq, counts))
    }

    /// `Some(server_last_seq)` while the next push must be a recovery push (one the server
    /// accepts with seqs missing after its `last_seq`, those this client no longer holds).
    pub fn recovering_from(&self) -> Result<Option<u64>> {
        sync::recovering_from(&self.conn)
    }

    /// Drops the local base state and the pull cursor, keeping every pending mutation (their
    /// views are recomputed on an empty base). For when the server answers `cursor_reset`:
    /// the next pull bootstraps from scratch.
    pub fn reset_base(&mut self) -> Result<()> {
        let client = self.client_id.clone();
        self.write(|conn, _| sync::reset_base(conn, &client))
    }

    /// Where mutation `seq` is; `None` if no such seq was ever handed out.
    pub fn mutation_state(&self, seq: u64) -> Result<Option<MutationState>> {
        let last_seq = Counters::load(&self.conn)?.last_seq;
        outbox::state(&self.conn, seq, last_seq)
    }

    /// Marks queued mutations in `from_seq..=through_seq` as being sent.
    pub fn mark_sending(&mut self, from_seq: u64, through_seq: u64) -> Result<usize> {
        sync::mark_sending(&self.conn, from_seq, through_seq)
    }

    /// Puts every `sending` mutation back to `queued` (the push failed without an answer).
    pub fn requeue_sending(&mut self) -> Result<usize> {
        sync::requeue(&self.conn)
    }

    /// Records the server's answer to a push that carried every queued mutation through
    /// its `acked_through`: [`Store::apply_push_answer`] with that as the last seq carried.
    pub fn apply_push_response(&mut self, response: &PushResponse) -> Result<PushApplied> {
        self.apply_push_answer(response, response.acked_through)
    }

    /// Records the server's answer to a push whose last mutation was `carried_through`:
    /// acknowledgements, conflicts, rejections (whose local effect is rolled back). One
    /// transaction. The push position moves at most to `carried_through`: the server's
    /// `acked_through` can run past a request (a retry after a lost answer may carry fewer
    /// mutations than the first try), and says nothing about mutations the request did not
    /// carry; they are pushed again and learn their outcome.
    pub fn apply_push_answer(
        &mut self,
        response: &PushResponse,
        carried_through: u64,
    ) -> Result<PushApplied> {
        let now = self.config.wall_clock.now_ms();
        let client = self.client_id.clone();
        let answer = sync::PushAnswer {
            response,
            carried_through,
        };
        self.write(|conn, counts| sync::apply_push_response(conn, &client, answer, now, counts))
    }

    /// Applies one page of pulled changes to the base, rebases pending mutations on it,
    /// advances the cursor and confirms mutations the base now contains. One transaction.
    ///
    /// Takes typed [`Change`](tidesync_protocol::Change)s or, straight from the wire,
    /// [`RawChange`](tidesync_protocol::RawChange)s, whose document and stamps are stored as
    /// received (after a consistency check; a change that fails it fails the whole page,
    /// which then changes nothing).
    pub fn apply_pull<C: PulledChange>(
        &mut self,
        response: &PullResponse<C>,
    ) -> Result<PullApplied> {
        self.apply_pull_page(Page {
            response,
            refetched: &[],
        })
    }

    /// [`Store::apply_pull`] for a page whose request asked for records in full
    /// ([`Store::records_to_refetch`]).
    pub fn apply_pull_page<C: PulledChange>(&mut self, page: Page<'_, C>) -> Result<PullApplied> {
        let now = self.config.wall_clock.now_ms();
        let client = self.client_id.clone();
        let pulled = page.response.changes.len();
        let applied =
            self.write(|conn, counts| sync::apply_pull(conn, &client, page, now, counts))?;
        self.planner.wrote(&self.conn, pulled);
        Ok(applied)
    }

    /// Up to `limit` records a pull sent as echoes this store could not rebuild: the next
    /// pull asks for them in full.
    pub fn records_to_refetch(&self, limit: usize) -> Result<Vec<RecordKey>> {
        echoes::waiting(&self.conn, limit)
    }

    // ---- conflicts and rejections -------------------------------------------------------

    /// Unresolved conflicts, oldest first.
    pub fn conflicts(&self) -> Result<Vec<Conflict>> {
        conflicts::list(&self.conn)
    }

    /// Settles a conflict. Returns the mutation written to enforce the choice, if one was
    /// needed (keeping the value that already won changes nothing).
    pub fn resolve_conflict(
        &mut self,
        id: i64,
        resolution: Resolution,
    ) -> Result<Option<WriteReceipt>> {
        self.transaction(|tx| {
            let conflict = conflicts::get(&tx.tx, id)?;
            let receipt = match (&resolution, resolution.patch_for(&conflict)) {
                (Resolution::Merged(doc), _) => Some(tx.put(&conflict.key, doc.clone())?),
                (_, Some(fields)) => {
                    Some(tx.write_op(&conflict.key, tidesync_protocol::Op::Patch { fields })?)
                }
                (_, None) => None,
            };
            conflicts::delete(&tx.tx, id)?;
            tx.counts.conflicts = tx.counts.conflicts.saturating_sub(1);
            Ok(receipt)
        })
    }

    /// Mutations the server refused, oldest first.
    pub fn rejections(&self) -> Result<Vec<Rejection>> {
        rejections::list(&self.conn, None)
    }

    /// Queues the rejected transaction containing `seq` again, as a new transaction with new
    /// seqs and stamps (after the app fixed whatever made it fail). Returns the new receipts.
    pub fn retry_rejection(&mut self, seq: u64) -> Result<Vec<WriteReceipt>> {
        self.transaction(|tx| {
            let tx_id = rejections::tx_of(&tx.tx, seq)?;
            let rows = rejections::list(&tx.tx, Some(tx_id))?;
            let mut receipts = Vec::with_capacity(rows.len());
            for row in rows {
                receipts.push(tx.write_op(&row.key, row.op)?);
            }
            let removed = rejections::delete_tx(&tx.tx, tx_id)?;
            tx.counts.rejections = tx.counts.rejections.saturating_sub(removed as u64);
            Ok(receipts)
        })
    }

    /// Forgets the rejected transaction containing `seq`. Returns how many mutations it had.
    pub fn discard_rejection(&mut self, seq: u64) -> Result<usize> {
        self.write(|conn, counts| {
            let tx_id = rejections::tx_of(conn, seq)?;
            let removed = rejections::delete_tx(conn, tx_id)?;
            counts.rejections = counts.rejections.saturating_sub(removed as u64);
            Ok(removed)
        })
    }

    // ---- meta ---------------------------------------------------------------------------

    /// The pull cursor: space → last version received.
    pub fn cursor(&self) -> Result<Cursor> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT space, version FROM cursor ORDER BY space")
            .map_err(StoreError::sql("read the pull cursor"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(StoreError::sql("read the pull cursor"))?;
        let mut cursor = Cursor::new();
        for row in rows {
            let (space, version) = row.map_err(StoreError::sql("read the pull cursor"))?;
            let space = SpaceName::new(space).map_err(|e| StoreError::BadStoredData {
                what: "cursor space",
                detail: e.to_string(),
            })?;
            cursor.insert(space, version as u64);
        }
        Ok(cursor)
    }

    /// When the last complete pull finished (ms since the epoch), if ever.
    pub fn last_synced_at(&self) -> Result<Option<u64>> {
        Ok(meta::get(&self.conn, meta::LAST_SYNCED_AT)?.and_then(|v| v.parse().ok()))
    }

    /// Whether a complete pull has ever finished (the app can show "syncing for the first
    /// time" until then).
    pub fn has_synced(&self) -> Result<bool> {
        Ok(meta::get(&self.conn, meta::HAS_SYNCED)?.is_some())
    }

    /// Runs SQLite's `quick_check` over the whole file (cost grows with its size, so it is
    /// not done at open). `Ok(())` when the file is sound.
    pub fn check_integrity(&self) -> Result<()> {
        let result: String = self
            .conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(StoreError::sql("check integrity"))?;
        if result == "ok" {
            Ok(())
        } else {
            Err(StoreError::Corrupt {
                context: "check integrity",
                detail: result,
            })
        }
    }

    // ---- restoration --------------------------------------------------------------------

    /// The restoration tree, loaded at open: read it synchronously, e.g.
    /// `store.restoration().root(Lifetime::Session).child("checkout").read("draft")`.
    pub fn restoration(&self) -> &RestorationTree {
        &self.restoration
    }

    /// Entries dropped at open because they failed to decode or migrate.
    pub fn restoration_issues(&self) -> &[RestorationIssue] {
        &self.restoration_issues
    }

    /// The id of this launch's session state. Hand it to the platform's saved state; pass it
    /// back as [`SessionRestore::Restore`] when the OS restores the app.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// One write transaction over the tables; `f` moves a copy of the counts, kept only if
    /// the commit succeeds.
    fn write<T>(
        &mut self,
        f: impl FnOnce(&Connection, &mut StoreCounts) -> Result<T>,
    ) -> Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::sql("begin a transaction"))?;
        let mut counts = self.counts.current(&tx)?;
        let out = f(&tx, &mut counts)?;
        tx.commit().map_err(StoreError::sql("commit"))?;
        self.counts.set(counts);
        Ok(out)
    }
}
