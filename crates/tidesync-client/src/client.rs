//! [`Client`]: the handle an app holds.

use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tidesync_core::sync::{Event, Reachability, SyncMachine};
use tidesync_protocol::{ClientId, CollectionName, Doc, RecordKey, SpaceName};
use tidesync_store::{
    Conflict, ListOptions, MutationState, Record, RecordPage, Rejection, Resolution, Store,
    StoreError, WriteReceipt, WriteTx,
};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::notify::Notifier;
use crate::runtime::{lock, now_ms, Command, Runtime};
use crate::status::{ClientEvent, Status};
use crate::transport::Http;

/// An open tidesync client: a local store plus a background sync thread.
///
/// Every method is a plain synchronous call that never waits for the network: reads and
/// writes go to the local SQLite file at once; the sync thread pushes and pulls in the
/// background. `Client` is `Send + Sync`: share it behind an `Arc` between UI and worker
/// threads. Dropping it (or [`Client::close`]) stops the sync thread; everything not yet
/// synced stays in the database and continues at the next open.
#[derive(Debug)]
pub struct Client {
    store: Arc<Mutex<Store>>,
    notifier: Arc<Notifier>,
    commands: UnboundedSender<Command>,
    thread: Option<JoinHandle<()>>,
    client_id: ClientId,
}

impl Client {
    /// Opens the local database (creating it if needed) and starts syncing in the background.
    pub fn open(config: ClientConfig) -> Result<Client, ClientError> {
        if config.spaces.is_empty() {
            return Err(ClientError::Config(
                "spaces must name at least one space to sync".into(),
            ));
        }
        if config.push_batch == 0 || config.pull_limit == 0 {
            return Err(ClientError::Config(
                "push_batch and pull_limit must be at least 1".into(),
            ));
        }
        let http =
            Http::new(&config.server_url, config.request_timeout).map_err(ClientError::Config)?;
        let store = Store::open(&config.db_path, config.store.clone())?;
        let client_id = store.client_id().clone();
        let store = Arc::new(Mutex::new(store));
        let notifier = Arc::new(Notifier::new());
        let (commands, receiver) = unbounded_channel();
        let seed = config.seed.unwrap_or_else(now_ms);
        let runtime = Runtime {
            store: store.clone(),
            notifier: notifier.clone(),
            client_id: client_id.clone(),
            http,
            machine: SyncMachine::new(config.sync, seed),
            commands: receiver,
            token: None,
            timer: None,
            exchange: None,
            stream: None,
            stream_opening: None,
            upload: None,
            download: None,
            prefetch: None,
            config,
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
        Ok(Client {
            store,
            notifier,
            commands,
            thread: Some(thread),
            client_id,
        })
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

    /// Replaces a record's document.
    pub fn put(&self, key: &RecordKey, doc: Doc) -> Result<WriteReceipt, ClientError> {
        self.write(std::slice::from_ref(key), |store| store.put(key, doc))
    }

    /// Applies a JSON merge patch to a record.
    pub fn patch(&self, key: &RecordKey, patch: Doc) -> Result<WriteReceipt, ClientError> {
        self.write(std::slice::from_ref(key), |store| store.patch(key, patch))
    }

    /// Deletes a record.
    pub fn delete(&self, key: &RecordKey) -> Result<WriteReceipt, ClientError> {
        self.write(std::slice::from_ref(key), |store| store.delete(key))
    }

    /// Runs `f` in one local transaction (data and restoration state commit together; the
    /// server applies its mutations all or none).
    pub fn transaction<T>(
        &self,
        f: impl FnOnce(&mut WriteTx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, ClientError> {
        let out = lock(&self.store).transaction(f)?;
        self.wrote(&[]);
        Ok(out)
    }

    /// Reads anything else from the store (restoration state, outbox, cursor) under its lock.
    pub fn with_store<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        f(&lock(&self.store))
    }

    fn write(
        &self,
        keys: &[RecordKey],
        f: impl FnOnce(&mut Store) -> Result<WriteReceipt, StoreError>,
    ) -> Result<WriteReceipt, ClientError> {
        let receipt = f(&mut lock(&self.store))?;
        self.wrote(keys);
        Ok(receipt)
    }

    fn wrote(&self, keys: &[RecordKey]) {
        for key in keys {
            self.notifier.send(ClientEvent::RecordsChanged {
                space: key.space.clone(),
                collection: key.collection.clone(),
                count: 1,
            });
        }
        self.event(Event::LocalWrite);
    }

    // ---- sync control and status ------------------------------------------------------

    /// The app's network hint (e.g. from connectivity_plus): `Offline` stops all attempts
    /// until `Online`, which triggers one at once.
    pub fn set_network(&self, reachability: Reachability) {
        self.event(Event::NetworkHint(reachability));
    }

    /// Syncs now (also retries after an error that stopped automatic retries).
    pub fn sync_now(&self) {
        self.event(Event::SyncNow);
    }

    /// Stops network activity until [`Client::resume`].
    pub fn pause(&self) {
        self.event(Event::Pause);
    }

    /// Resumes after [`Client::pause`].
    pub fn resume(&self) {
        self.event(Event::Resume);
    }

    /// The latest status.
    pub fn status(&self) -> Option<Status> {
        self.notifier.current()
    }

    /// Status changes and events, in order, starting with the current status.
    pub fn subscribe(&self) -> Receiver<ClientEvent> {
        self.notifier.subscribe()
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
        let receipt = lock(&self.store).resolve_conflict(id, resolution)?;
        self.wrote(&[]);
        Ok(receipt)
    }

    /// Rejected mutations.
    pub fn rejections(&self) -> Result<Vec<Rejection>, ClientError> {
        Ok(lock(&self.store).rejections()?)
    }

    /// Queues a rejected transaction again.
    pub fn retry_rejection(&self, seq: u64) -> Result<Vec<WriteReceipt>, ClientError> {
        let receipts = lock(&self.store).retry_rejection(seq)?;
        self.wrote(&[]);
        Ok(receipts)
    }

    /// Forgets a rejected transaction.
    pub fn discard_rejection(&self, seq: u64) -> Result<usize, ClientError> {
        let n = lock(&self.store).discard_rejection(seq)?;
        self.event(Event::SyncNow);
        Ok(n)
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
    }

    fn event(&self, event: Event) {
        // The thread only stops at close; a send error means it is gone already.
        let _ = self.commands.send(Command::Event(event));
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop();
    }
}
