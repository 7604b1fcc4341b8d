//! The embedded default backend: one SQLite file in WAL mode, one writer thread committing
//! pushes in groups, a pool of reader connections for pulls, all off the async executor.

mod engine;
mod overview;
mod prune;
mod pull;
mod push;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use tidesync_protocol::{PullResponse, PushResponse, RawChange, SpaceName};
use tokio::sync::{broadcast, oneshot, Semaphore};

use crate::auth::{stored_grants, Grants, NewToken, TokenHash};
use crate::config::MergeRules;
use crate::storage::{
    Overview, OverviewRequest, Poke, Prune, Pruned, PullInput, PushInput, Storage, StorageError,
};

pub use crate::storage::page::EXACT_REMAINING;
pub use engine::{EngineClock, EngineStorage, SyncEngine};
pub use schema::APPLICATION_ID;

/// How many reader connections serve pulls at once.
const READERS: usize = 4;
/// How long a pull waits for a free reader before answering `unavailable`.
const READER_WAIT: Duration = Duration::from_secs(5);

/// The SQLite storage. Cheap to share behind an `Arc`.
pub struct SqliteStorage {
    path: PathBuf,
    jobs: Mutex<Option<mpsc::Sender<writer::Job>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    reader_permits: Arc<Semaphore>,
    pokes: broadcast::Sender<Poke>,
}

impl std::fmt::Debug for SqliteStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStorage")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStorage {
    /// Opens (creating and migrating if needed) the database at `path` and starts the writer.
    /// Refuses, without changing it, a file that is not SQLite, belongs to another
    /// application or was written by a newer schema.
    pub fn open(path: &Path, rules: MergeRules) -> Result<SqliteStorage, StorageError> {
        let writer_conn = schema::open(path, true)?;
        let readers = (0..READERS)
            .map(|_| schema::open(path, false))
            .collect::<Result<Vec<_>, _>>()?;
        let (jobs, rx) = mpsc::channel();
        let (pokes, _) = broadcast::channel(1024);
        let writer_pokes = pokes.clone();
        let writer = std::thread::Builder::new()
            .name("tidesync-writer".into())
            .spawn(move || writer::run(writer_conn, rx, rules, writer_pokes))
            .map_err(|e| StorageError::Internal(format!("start the writer thread: {e}")))?;
        Ok(SqliteStorage {
            path: path.to_owned(),
            jobs: Mutex::new(Some(jobs)),
            writer: Mutex::new(Some(writer)),
            readers: Arc::new(Mutex::new(readers)),
            reader_permits: Arc::new(Semaphore::new(READERS)),
            pokes,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Issues a new API token with `grants` and returns it; only its hash is stored, so this
    /// is the only time it can be seen.
    pub fn create_token(&self, grants: &Grants) -> Result<String, StorageError> {
        let conn = schema::open(&self.path, false)?;
        insert_token(&conn, grants)
    }

    /// Issues a token directly on a database file, without starting a server (what
    /// `tidesync token create` does).
    pub fn create_token_at(path: &Path, grants: &Grants) -> Result<String, StorageError> {
        let conn = schema::open(path, true)?;
        insert_token(&conn, grants)
    }

    /// Sends `job` to the writer, unless it has stopped.
    fn send(&self, job: writer::Job) -> Result<(), StorageError> {
        let jobs = self
            .jobs
            .lock()
            .map_err(|_| StorageError::Internal("writer queue poisoned".into()))?;
        let jobs = jobs
            .as_ref()
            .ok_or_else(|| StorageError::Unavailable("the server is shutting down".into()))?;
        jobs.send(job)
            .map_err(|_| StorageError::Unavailable("the writer has stopped".into()))
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let permit = tokio::time::timeout(READER_WAIT, self.reader_permits.clone().acquire_owned())
            .await
            .map_err(|_| StorageError::Unavailable("all database readers are busy".into()))?
            .map_err(|_| StorageError::Unavailable("the storage is closed".into()))?;
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = readers
                .lock()
                .map_err(|_| StorageError::Internal("reader pool poisoned".into()))?
                .pop()
                .ok_or_else(|| StorageError::Internal("no reader despite a permit".into()))?;
            let result = f(&conn);
            if let Ok(mut pool) = readers.lock() {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StorageError::Internal(format!("reader task failed: {e}")))?
    }
}

fn insert_token(conn: &Connection, grants: &Grants) -> Result<String, StorageError> {
    let new = NewToken::issue(grants)?;
    conn.execute(
        "INSERT INTO tokens (hash, user_id, grants, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![
            new.hash.0.to_vec(),
            grants.user,
            new.grants_json,
            new.created_at
        ],
    )
    .map_err(|e| StorageError::Internal(format!("store the token: {e}")))?;
    Ok(new.token)
}

/// The grants of the token whose hash is `token`.
fn lookup_token(conn: &Connection, token: &TokenHash) -> Result<Option<Grants>, StorageError> {
    let grants: Option<String> = conn
        .prepare_cached("SELECT grants FROM tokens WHERE hash = ?1")
        .and_then(|mut s| s.query_row([token.0.to_vec()], |r| r.get(0)).optional())
        .map_err(|e| StorageError::Internal(format!("look up a token: {e}")))?;
    grants.as_deref().map(stored_grants).transpose()
}

#[async_trait]
impl Storage for SqliteStorage {
    async fn push(&self, input: PushInput) -> Result<PushResponse, StorageError> {
        let (reply, answer) = oneshot::channel();
        let input = Arc::new(input);
        let keep = input.clone();
        self.send(writer::Job::Push(input, reply))?;
        let result = answer
            .await
            .map_err(|_| StorageError::Unavailable("the writer has stopped".into()))?;
        drop(keep); // the last reference: the mutations are freed here, off the writer
        result
    }

    async fn pull(&self, input: PullInput) -> Result<PullResponse<RawChange>, StorageError> {
        let client = input.client_id.clone();
        let (page, downloads) = self.read(move |conn| pull::pull(conn, &input)).await?;
        if !downloads.is_empty() {
            // Recorded before the page is answered, so the next page finds it.
            let (reply, answer) = oneshot::channel();
            self.send(writer::Job::Downloads(client, downloads, reply))?;
            answer
                .await
                .map_err(|_| StorageError::Unavailable("the writer has stopped".into()))??;
        }
        Ok(page)
    }

    async fn authenticate(&self, token: TokenHash) -> Result<Option<Grants>, StorageError> {
        self.read(move |conn| lookup_token(conn, &token)).await
    }

    async fn space_versions(&self, spaces: &[SpaceName]) -> Result<Vec<u64>, StorageError> {
        let spaces = spaces.to_vec();
        self.read(move |conn| {
            spaces
                .iter()
                .map(|s| push::space_version(conn, s))
                .collect()
        })
        .await
    }

    fn subscribe(&self) -> broadcast::Receiver<Poke> {
        self.pokes.subscribe()
    }

    async fn overview(&self, request: OverviewRequest) -> Result<Overview, StorageError> {
        self.read(move |conn| overview::overview(conn, &request))
            .await
    }

    async fn prune(&self, prune: Prune) -> Result<Pruned, StorageError> {
        let (reply, answer) = oneshot::channel();
        self.send(writer::Job::Prune(prune, reply))?;
        answer
            .await
            .map_err(|_| StorageError::Unavailable("the writer has stopped".into()))?
    }

    async fn health(&self) -> Result<(), StorageError> {
        if self.jobs.lock().map(|j| j.is_none()).unwrap_or(true) {
            return Err(StorageError::Unavailable(
                "the server is shutting down".into(),
            ));
        }
        self.read(|conn| {
            conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map(|_| ())
                .map_err(|e| StorageError::Internal(format!("health check: {e}")))
        })
        .await
    }

    async fn shutdown(&self) {
        let sender = self.jobs.lock().ok().and_then(|mut j| j.take());
        if let Some(sender) = sender {
            let (done, wait) = oneshot::channel();
            if sender.send(writer::Job::Shutdown(done)).is_ok() {
                let _ = wait.await;
            }
        }
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}
