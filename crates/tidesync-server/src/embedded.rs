//! [`EmbeddedServer`]: the sync server on a loopback port of this process, on a thread and
//! runtime of its own. What the demo, the examples, the tests and the benchmarks start;
//! also what an app that embeds its own server (a desktop app, a test rig) would use.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::config::{Limits, MergeRules};
use crate::serve::serve;
use crate::state::AppState;
use crate::storage::sqlite::SqliteStorage;
use crate::storage::{Storage, StorageError};

/// A running server. Dropping it stops it gracefully (requests in flight finish, then the
/// storage shuts down), as [`EmbeddedServer::stop`] does.
pub struct EmbeddedServer<S: Storage = SqliteStorage> {
    addr: SocketAddr,
    storage: Arc<S>,
    state: AppState,
    runtime: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl<S: Storage> std::fmt::Debug for EmbeddedServer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Why an embedded server did not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// The database could not be opened.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// No port, no runtime, or no thread.
    #[error("cannot start the embedded server: {0}")]
    Io(#[from] std::io::Error),
}

impl EmbeddedServer<SqliteStorage> {
    /// Opens (creating it if needed) the SQLite database `db` with `rules` and serves it on a
    /// free port of 127.0.0.1 with the default limits.
    pub fn sqlite(db: &Path, rules: MergeRules) -> Result<Self, EmbeddedError> {
        let storage = Arc::new(SqliteStorage::open(db, rules)?);
        let listener = TcpListener::bind("127.0.0.1:0")?;
        Ok(EmbeddedServer::start(listener, storage, Limits::default())?)
    }
}

impl<S: Storage> EmbeddedServer<S> {
    /// Serves `storage` with `limits` on `listener` (bound by the caller: a free port, or a
    /// fixed one to restart a server where its clients expect it).
    pub fn start(listener: TcpListener, storage: Arc<S>, limits: Limits) -> std::io::Result<Self> {
        let state = AppState::new(storage.clone(), limits);
        EmbeddedServer::start_state(listener, storage, state)
    }

    /// Serves `state`, built by the caller over `storage` (e.g. with
    /// [`AppState::with_horizon`]), on `listener`.
    pub fn start_state(
        listener: TcpListener,
        storage: Arc<S>,
        state: AppState,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tidesync-server")
            .enable_all()
            .build()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = state.clone();
        let handle = runtime.handle().clone();
        let thread = std::thread::Builder::new()
            .name("tidesync-server".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    serve(listener, serving, async move {
                        let _ = stopped.await;
                    })
                    .await
                })
            })?;
        Ok(EmbeddedServer {
            addr,
            storage,
            state,
            runtime: handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its storage (to issue tokens, or to read what the server holds).
    pub fn storage(&self) -> &Arc<S> {
        &self.storage
    }

    /// Its shared state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Runs `future` on the server's runtime and waits for it: how synchronous code reads the
    /// storage (`server.run(server.storage().space_versions(&spaces))`). Not from inside an
    /// async task.
    pub fn run<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Stops gracefully and waits: requests in flight finish, event streams end, the storage
    /// shuts down. Returns what serving returned.
    pub fn stop(mut self) -> std::io::Result<()> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(std::io::Error::other("the server thread panicked")),
            None => Ok(()),
        }
    }
}

impl<S: Storage> Drop for EmbeddedServer<S> {
    fn drop(&mut self) {
        if let Err(e) = self.shut_down() {
            tracing::warn!(error = %e, "the embedded server did not stop cleanly");
        }
    }
}
