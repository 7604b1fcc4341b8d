//! [`Client`]: the handle an app holds.

use std::path::PathBuf;
use std::sync::mpsc::{channel, sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tidesync_protocol::{ClientId, CollectionName, Cursor, Doc, RecordKey, SpaceName};
use tidesync_store::restoration::{BucketPath, Entry, Lifetime, RestorationIssue, RestorationTree};
use tidesync_store::{
    Conflict, ListOptions, MutationState, OutboxEntry, Query, QueryPage, Record, RecordPage,
    Rejection, Resolution, Store, StoreConfig, StoreCounts, StoreError, WriteReceipt, WriteTx,
};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use crate::config::ClientConfig;
use crate::driver::{Driver, DriverConfig, Input, Reachability};
use crate::error::ClientError;
use crate::live::{Deliver, Live, LiveQuery, LiveQueryStats, QueryUpdate, Watch};
use crate::notify::Notifier;
use crate::runtime::{lock, now_ms, Command, HttpIo, Runtime};
use crate::status::{ClientEvent, Status};
use crate::transport::http::Http;
use crate::transport::token::TokenSlot;
use tidesync_core::sync::Phase;

/// An open tidesync client: a local store plus a background sync thread.
///
/// Every method is a plain synchronous call that never waits for the network (but for the
/// `wait_*` calls, which exist to wait): reads and writes go to the local SQLite file at
/// once; the sync thread pushes and pulls in the background. `Client` is `Send + Sync`:
/// share it behind an `Arc` between UI and worker threads. Dropping it (or
/// [`Client::close`]) stops the sync thread; everything not yet synced stays in the database
/// and continues at the next open.
#[derive(Debug)]
pub struct Client {
    store: Arc<Mutex<Store>>,
    notifier: Arc<Notifier>,
    commands: UnboundedSender<Command>,
    thread: Option<JoinHandle<()>>,
    client_id: ClientId,
    local_only: bool,
    /// Started by the first watch.
    live: Mutex<Option<Arc<Live>>>,
    live_setup: LiveSetup,
}

/// What the live-query thread is started with.
#[derive(Debug)]
struct LiveSetup {
    db_path: PathBuf,
    store: StoreConfig,
    throttle: Duration,
}

/// The contents of one restoration bucket.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BucketContents {
    /// Its entries, by key.
    pub entries: Vec<(String, Entry)>,
    /// The names of its child buckets that hold something.
    pub children: Vec<String>,
}

impl Client {
    /// Opens the local database (creating it if needed) and starts syncing in the background
    /// (unless the configuration has no server, see [`ClientConfig::local`]).
    pub fn open(config: ClientConfig) -> Result<Client, ClientError> {
        if config.server_url.is_some() && config.spaces.is_empty() {
            return Err(ClientError::Config(
                "spaces must name at least one space to sync".into(),
            ));
        }
        if config.push_batch == 0 || config.pull_limit == 0 {
            return Err(ClientError::Config(
                "push_batch and pull_limit must be at least 1".into(),
            ));
        }
        let http = config
            .server_url
            .as_deref()
            .map(|url| Http::new(url, config.request_timeout, config.compression))
            .transpose()
            .map_err(ClientError::Config)?;
        let store = Store::open(&config.db_path, config.store.clone())?;
        let live_setup = LiveSetup {
            db_path: config.db_path.clone(),
            store: config.store.clone(),
            throttle: config.live_query_throttle,
        };
        let client_id = store.client_id().clone();
        let store = Arc::new(Mutex::new(store));
        let notifier = Arc::new(Notifier::new());
        let (commands, receiver) = unbounded_channel();
        let local_only = http.is_none();
        let runtime = Runtime {
            store: store.clone(),
            notifier: notifier.clone(),
            driver: Driver::new(DriverConfig {
                client_id: client_id.clone(),
                spaces: config.spaces.clone(),
                push_batch: config.push_batch,
                pull_limit: config.pull_limit,
                sync: config.sync,
                seed: config.seed.unwrap_or_else(now_ms),
            }),
            net: http.map(|http| {
                HttpIo::new(http, TokenSlot::new(config.tokens.clone()), config.spaces)
            }),
            commands: receiver,
            start_online: config.start_online,
            timer: None,
            elsewhere_poll: config.external_writes_poll,
        };
        let thread = std::thread::Builder::new()
            .name("tidesync-sync".into())
            .spawn(move || {
                // One worker thread runs requests spawned to overlap with this thread's
                // store work (pull prefetch); the loop itself runs here, in `block_on`.
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("tidesync-net")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the sync runtime");
                        return;
                    }
                };
                rt.block_on(runtime.run());
            })
            .map_err(|e| ClientError::Thread(e.to_string()))?;
        let client = Client {
            store,
            notifier,
            commands,
            thread: Some(thread),
            client_id,
            local_only,
            live: Mutex::new(None),
            live_setup,
        };
        client.barrier(Duration::from_secs(10));
        Ok(client)
    }

    /// This installation's client id.
    pub fn client_id(&self) -> &ClientId {
        &self.client_id
    }

    // ---- data ------------------------------------------------------------------------

    /// Reads a record from the local view.
    pub fn get(&self, key: &RecordKey) -> Result<Option<Record>, ClientError> {
        Ok(lock(&self.store).get(key)?)
    }

    /// Lists a collection, one page at a time.
    pub fn list(
        &self,
        space: &SpaceName,
        collection: &CollectionName,
        options: &ListOptions,
    ) -> Result<RecordPage, ClientError> {
        Ok(lock(&self.store).list(space, collection, options)?)
    }

    /// One page of a query over the local view (see [`Query`]; docs/queries.md lists what
    /// a query can say).
    pub fn query(&self, query: &Query) -> Result<QueryPage, ClientError> {
        Ok(lock(&self.store).query(query)?)
    }

    /// How many records a query selects (its sort, limit and cursor do not matter).
    pub fn count(&self, query: &Query) -> Result<u64, ClientError> {
        Ok(lock(&self.store).count(query)?)
    }

    /// SQLite's plan for a query, one line per step: does a declared index serve it?
    pub fn explain(&self, query: &Query) -> Result<Vec<String>, ClientError> {
        Ok(lock(&self.store).explain(query)?)
    }

    /// A live query: its result now, then again whenever a local write, a pulled page, a
    /// rolled-back rejection, a resolved conflict or a base reset changes it, each time with
    /// what changed. Updates are computed on the client's live-query thread (never the
    /// caller's), a burst of changes costs one evaluation (see
    /// [`ClientConfig::live_query_throttle`]), and an unchanged result is not delivered
    /// again. Drop the [`LiveQuery`] to stop.
    pub fn watch(&self, query: Query) -> Result<LiveQuery, ClientError> {
        let (tx, rx) = channel();
        let watch = self.watch_with(query, move |update| tx.send(update).is_ok())?;
        Ok(LiveQuery::new(rx, watch))
    }

    /// [`Client::watch`] with a callback instead of a channel: `deliver` runs on the
    /// live-query thread (keep it short: hand the update to your own thread) and returns
    /// `false` to stop. Updates stop when the [`Watch`] is dropped.
    pub fn watch_with(
        &self,
        query: Query,
        deliver: impl FnMut(QueryUpdate) -> bool + Send + 'static,
    ) -> Result<Watch, ClientError> {
        query.validate().map_err(StoreError::InvalidQuery)?;
        let live = self.live()?;
        let deliver: Deliver = Box::new(deliver);
        let id = live.watch(query, deliver);
        Ok(Watch::new(id, &live))
    }

    /// What live queries cost so far (all zero before the first watch).
    pub fn live_query_stats(&self) -> LiveQueryStats {
        lock(&self.live)
            .as_ref()
            .map(|live| live.stats())
            .unwrap_or_default()
    }

    /// The live-query thread, started on first use.
    fn live(&self) -> Result<Arc<Live>, ClientError> {
        let mut live = lock(&self.live);
        if let Some(live) = &*live {
            return Ok(live.clone());
        }
        let setup = &self.live_setup;
        let started = Arc::new(Live::start(
            &setup.db_path,
            &setup.store,
            &self.notifier,
            setup.throttle,
        )?);
        *live = Some(started.clone());
        Ok(started)
    }

    /// Replaces a record's document.
    pub fn put(&self, key: &RecordKey, doc: Doc) -> Result<WriteReceipt, ClientError> {
        self.write(|store| store.put(key, doc))
    }

    /// Applies a JSON merge patch to a record.
    pub fn patch(&self, key: &RecordKey, patch: Doc) -> Result<WriteReceipt, ClientError> {
        self.write(|store| store.patch(key, patch))
    }

    /// Deletes a record.
    pub fn delete(&self, key: &RecordKey) -> Result<WriteReceipt, ClientError> {
        self.write(|store| store.delete(key))
    }

    /// Runs `f` in one local transaction: data and restoration state commit together, or
    /// none of it when `f` fails; the server applies its mutations all or none.
    pub fn transaction<T>(
        &self,
        f: impl FnOnce(&mut WriteTx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, ClientError> {
        self.write(|store| store.transaction(f))
    }

    /// Runs a local write, then tells subscribers which collections changed and the sync
    /// thread that the outbox grew.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError>,
    ) -> Result<T, ClientError> {
        let (out, written) = {
            let mut store = lock(&self.store);
            let out = f(&mut store);
            (out, store.take_written())
        };
        for (space, collection, count) in written {
            self.notifier.send(ClientEvent::RecordsChanged {
                space,
                collection,
                count,
            });
        }
        let out = out?;
        self.send(Input::LocalWrite);
        Ok(out)
    }

    // ---- restoration state --------------------------------------------------------------

    /// The restoration entry at `key` of `bucket`, as loaded at open and written since.
    pub fn restore_get(&self, lifetime: Lifetime, bucket: &BucketPath, key: &str) -> Option<Entry> {
        lock(&self.store)
            .restoration()
            .bucket(lifetime, bucket)
            .read(key)
            .cloned()
    }

    /// The entries and child buckets of `bucket`.
    pub fn restore_list(&self, lifetime: Lifetime, bucket: &BucketPath) -> BucketContents {
        let store = lock(&self.store);
        let view = store.restoration().bucket(lifetime, bucket);
        BucketContents {
            entries: view
                .entries()
                .map(|(k, e)| (k.to_owned(), e.clone()))
                .collect(),
            children: view.children().into_iter().map(str::to_owned).collect(),
        }
    }

    /// Reads the whole restoration tree under the store's lock (for navigation that
    /// `restore_get` and `restore_list` do not cover).
    pub fn with_restoration<T>(&self, f: impl FnOnce(&RestorationTree) -> T) -> T {
        f(lock(&self.store).restoration())
    }

    /// Writes one restoration entry (in its own transaction; use
    /// [`WriteTx::restore_write`] inside [`Client::transaction`] to commit it with data).
    pub fn restore_set(
        &self,
        lifetime: Lifetime,
        bucket: &BucketPath,
        key: &str,
        entry: Entry,
    ) -> Result<(), ClientError> {
        Ok(lock(&self.store).restore_write(lifetime, bucket, key, entry)?)
    }

    /// Removes one restoration entry (nothing happens if there is none).
    pub fn restore_remove(
        &self,
        lifetime: Lifetime,
        bucket: &BucketPath,
        key: &str,
    ) -> Result<(), ClientError> {
        Ok(lock(&self.store).restore_remove(lifetime, bucket, key)?)
    }

    /// Entries dropped at open because they failed to decode or migrate.
    pub fn restoration_issues(&self) -> Vec<RestorationIssue> {
        lock(&self.store).restoration_issues().to_vec()
    }

    /// The id of this launch's session restoration state: hand it to the platform's saved
    /// state and pass it back as `SessionRestore::Restore` when the OS restores the app.
    pub fn session_id(&self) -> String {
        lock(&self.store).session_id().to_owned()
    }

    // ---- sync control and status ------------------------------------------------------

    /// The app's network hint (e.g. from connectivity_plus): `Offline` stops all attempts
    /// until `Online`, which triggers one at once.
    pub fn set_network(&self, reachability: Reachability) {
        self.send(Input::Network(reachability));
    }

    /// Syncs now (also retries after an error that stopped automatic retries).
    pub fn sync_now(&self) {
        self.send(Input::SyncNow);
    }

    /// Stops network activity until [`Client::resume`].
    pub fn pause(&self) {
        self.send(Input::Pause);
    }

    /// Resumes after [`Client::pause`].
    pub fn resume(&self) {
        self.send(Input::Resume);
    }

    /// The latest status (always there once `open` returned).
    pub fn status(&self) -> Option<Status> {
        self.notifier.current()
    }

    /// Status changes and events, in order, starting with the current status.
    pub fn subscribe(&self) -> Receiver<ClientEvent> {
        self.notifier.subscribe()
    }

    /// Waits until everything written before this call is confirmed by the server and the
    /// engine is idle after a complete pull ([`Status::is_synced`]). Waits through failures
    /// that clear by themselves (the network, a busy server, a full disk); returns early with
    /// [`ClientError::SyncNeedsAttention`] on one that does not (a refusal, credentials, a
    /// corrupt file), and [`ClientError::Timeout`] when `timeout` passes first.
    pub fn wait_synced(&self, timeout: Duration) -> Result<Status, ClientError> {
        // Stuck: waiting out the backoff cap on an error retrying does not cure (while a
        // retry is under way, after `sync_now`, the error is still shown but not final).
        let stuck = |s: &Status| {
            s.phase == Phase::Backoff && s.last_error.as_ref().is_some_and(|e| e.needs_attention)
        };
        let status = self.wait_until(timeout, |s| s.is_synced() || stuck(s))?;
        match &status.last_error {
            Some(error) if stuck(&status) => {
                Err(ClientError::SyncNeedsAttention(Box::new(error.clone())))
            }
            _ => Ok(status),
        }
    }

    /// Waits for the first status, published after every call made before this one was
    /// handled, for which `done` holds; [`ClientError::Timeout`] after `timeout`.
    pub fn wait_until(
        &self,
        timeout: Duration,
        done: impl FnMut(&Status) -> bool,
    ) -> Result<Status, ClientError> {
        if self.local_only {
            return Err(ClientError::LocalOnly);
        }
        let deadline = Instant::now() + timeout;
        self.barrier(timeout);
        self.notifier
            .wait_until(deadline, done)
            .map_err(|last| ClientError::Timeout {
                waited: timeout,
                last,
            })
    }

    /// Returns once the sync thread handled every command sent before (or `timeout` passed).
    fn barrier(&self, timeout: Duration) {
        let (done, wait) = sync_channel(1);
        if self.commands.send(Command::Barrier(done)).is_ok() {
            let _ = wait.recv_timeout(timeout);
        }
    }

    /// The store's counts: pending, unpushed, conflicts, rejections, last seq, the highest
    /// seq the server acknowledged, last sync.
    pub fn counts(&self) -> Result<StoreCounts, ClientError> {
        Ok(lock(&self.store).counts()?)
    }

    /// The pull cursor: space → the last server version received.
    pub fn cursor(&self) -> Result<Cursor, ClientError> {
        Ok(lock(&self.store).cursor()?)
    }

    /// Up to `limit` (at most 10,000) outbox mutations after seq `after`, in seq order: what
    /// is still waiting for the server, for a "pending changes" screen.
    pub fn outbox(&self, after: u64, limit: usize) -> Result<Vec<OutboxEntry>, ClientError> {
        let mut entries = lock(&self.store).outbox_batch(after, limit.clamp(1, 10_000))?;
        entries.truncate(limit.max(1));
        Ok(entries)
    }

    /// Where mutation `seq` is.
    pub fn mutation_state(&self, seq: u64) -> Result<Option<MutationState>, ClientError> {
        Ok(lock(&self.store).mutation_state(seq)?)
    }

    // ---- conflicts and rejections ------------------------------------------------------

    /// Unresolved conflicts.
    pub fn conflicts(&self) -> Result<Vec<Conflict>, ClientError> {
        Ok(lock(&self.store).conflicts()?)
    }

    /// Settles a conflict (a new mutation when one is needed).
    pub fn resolve_conflict(
        &self,
        id: i64,
        resolution: Resolution,
    ) -> Result<Option<WriteReceipt>, ClientError> {
        self.write(|store| store.resolve_conflict(id, resolution))
    }

    /// Rejected mutations.
    pub fn rejections(&self) -> Result<Vec<Rejection>, ClientError> {
        Ok(lock(&self.store).rejections()?)
    }

    /// Queues a rejected transaction again.
    pub fn retry_rejection(&self, seq: u64) -> Result<Vec<WriteReceipt>, ClientError> {
        self.write(|store| store.retry_rejection(seq))
    }

    /// Forgets a rejected transaction.
    pub fn discard_rejection(&self, seq: u64) -> Result<usize, ClientError> {
        self.write(|store| store.discard_rejection(seq))
    }

    /// Stops the sync thread and waits for it. Unsynced work stays in the database.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some(live) = lock(&self.live).take() {
            live.stop();
        }
    }

    fn send(&self, input: Input) {
        // The thread only stops at close; a send error means it is gone already.
        let _ = self.commands.send(Command::Input(input));
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop();
    }
}
