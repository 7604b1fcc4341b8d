//! The PostgreSQL backend: the system of record for several stateless server nodes.
//!
//! - **Push**: one transaction per push. The client's row is locked first
//!   (`SELECT … FOR UPDATE`: retries of one client landing on two nodes serialize, and the
//!   seq check is atomic), then the touched spaces in sorted order (`FOR UPDATE`: commit
//!   order is version order within a space; sorted order rules out deadlocks between pushes),
//!   then `storage::plan` decides and the records (new ones, rewritten ones),
//!   rejections, `last_seq` and space versions are written with one statement each. A
//!   deadlock or serialization failure reported by PostgreSQL is retried. A refused push is
//!   rolled back explicitly, never left holding its locks until a drop.
//! - **Pull**: one `REPEATABLE READ READ ONLY` transaction; the rules are
//!   `storage::page`'s, as on SQLite. There is no global sequence: cursors are
//!   per-space versions, which commit in order.
//! - **Pokes across nodes**: after a commit (outside the data transaction) one `pg_notify`
//!   carries the batch's new space versions; every node LISTENs on a dedicated connection
//!   (`listen.rs`), re-reads the versions it knows on every (re)connect, and polls slowly as
//!   a backstop, so a lost notification only delays a poke.
//! - **Failures**: PostgreSQL unreachable, a connection lost or the pool exhausted is
//!   [`StorageError::Unavailable`] (503 with `Retry-After`; the client retries and nothing
//!   is lost); the pool replaces broken connections by itself.
//!
//! Nothing authoritative lives in a node's memory: any node serves any request. The one
//! piece of node state is the HLC used to re-stamp mutations from clocks far in the future,
//! which observes the stored stamps of every record it plans over.

pub mod import;
mod listen;
mod overview;
mod prune;
mod pull;
mod push;
mod schema;

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use sha2::{Digest, Sha256};
use tidesync_core::HlcClock;
use tidesync_protocol::{PullResponse, PushResponse, RawChange, SpaceName};
use tokio::sync::{broadcast, watch};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::auth::{stored_grants, Grants, NewToken, TokenHash};
use crate::config::MergeRules;
use crate::storage::{
    Overview, OverviewRequest, Poke, Prune, Pruned, PullInput, PushInput, Storage, StorageError,
};

pub use schema::SCHEMA_VERSION;

/// How a [`PostgresStorage`] uses its database.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Most connections of this node's pool (the LISTEN connection comes on top).
    pub pool_size: usize,
    /// How long a request waits for a free connection before answering `unavailable`.
    pub pool_wait: Duration,
    /// Longest a push or pull may take in PostgreSQL before it is answered `unavailable`
    /// (a database that stopped answering must not hold requests forever).
    pub statement_timeout: Duration,
    /// How often the versions this node knows are re-read, in case a notification was lost.
    pub poll: Duration,
}

impl Default for PostgresOptions {
    fn default() -> PostgresOptions {
        PostgresOptions {
            pool_size: 16,
            pool_wait: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            poll: Duration::from_secs(2),
        }
    }
}

/// The PostgreSQL storage. Cheap to share behind an `Arc`.
pub struct PostgresStorage {
    pool: Pool,
    rules: MergeRules,
    options: PostgresOptions,
    /// Re-stamps mutations from clocks too far ahead (see the module docs).
    clock: Mutex<HlcClock>,
    /// The NOTIFY channel of this database and schema.
    channel: String,
    pokes: Arc<listen::Pokes>,
    stop: watch::Sender<bool>,
    listener: Mutex<Option<tokio::task::JoinHandle<()>>>,
    closed: AtomicBool,
    target: String,
}

impl std::fmt::Debug for PostgresStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStorage")
            .field("target", &self.target)
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl PostgresStorage {
    /// Connects to the database at `url` (`postgres://user@host:port/db`, with
    /// `?options=-csearch_path%3Dschema` for a schema of its own), migrates its tables and
    /// starts listening for other nodes' pokes. Must run inside a Tokio runtime.
    pub async fn connect(url: &str, rules: MergeRules) -> Result<PostgresStorage, StorageError> {
        PostgresStorage::connect_with(url, rules, PostgresOptions::default()).await
    }

    /// [`PostgresStorage::connect`] with `options`.
    pub async fn connect_with(
        url: &str,
        rules: MergeRules,
        options: PostgresOptions,
    ) -> Result<PostgresStorage, StorageError> {
        let config = parse_url(url)?;
        let target = describe(&config);
        let unreachable = |e: tokio_postgres::Error| {
            StorageError::Unavailable(format!(
                "cannot connect to PostgreSQL at {target}: {}",
                with_causes(&e)
            ))
        };
        let (mut client, connection) = config.connect(NoTls).await.map_err(unreachable)?;
        let driver = tokio::spawn(connection);
        schema::migrate(&mut client).await?;
        let row = client
            .query_one("SELECT current_database(), current_schema()", &[])
            .await
            .map_err(db_error("read the current schema"))?;
        let (database, schema): (String, Option<String>) = (row.get(0), row.get(1));
        let schema = schema.ok_or_else(|| {
            StorageError::Internal(format!(
                "PostgreSQL at {target} has no current schema (check search_path)"
            ))
        })?;
        drop(client);
        driver.abort();
        let channel = channel_name(&database, &schema);

        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.pool_wait))
            .create_timeout(Some(options.pool_wait))
            .build()
            .map_err(|e| StorageError::Internal(format!("build the connection pool: {e}")))?;
        let (pokes, _) = broadcast::channel(1024);
        let pokes = Arc::new(listen::Pokes::new(pokes));
        let (stop, stopped) = watch::channel(false);
        let listener = tokio::spawn(listen::run(
            config,
            channel.clone(),
            pokes.clone(),
            options.poll,
            stopped,
        ));
        Ok(PostgresStorage {
            pool,
            rules,
            options,
            clock: Mutex::new(HlcClock::new()),
            channel,
            pokes,
            stop,
            listener: Mutex::new(Some(listener)),
            closed: AtomicBool::new(false),
            target,
        })
    }

    /// Where the database is (`user@host:port/db`, never the password).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Issues a new API token with `grants` and returns it; only its hash is stored, so this
    /// is the only time it can be seen.
    pub async fn create_token(&self, grants: &Grants) -> Result<String, StorageError> {
        let new = NewToken::issue(grants)?;
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO ts_tokens (hash, user_id, grants, created_at) VALUES ($1, $2, $3, $4)",
                &[
                    &&new.hash.0[..],
                    &grants.user,
                    &new.grants_json,
                    &new.created_at,
                ],
            )
            .await
            .map_err(db_error("store the token"))?;
        Ok(new.token)
    }

    /// Issues a token directly in the database at `url`, without starting a server (what
    /// `tidesync token create --database-url` does).
    pub async fn create_token_at(url: &str, grants: &Grants) -> Result<String, StorageError> {
        let storage = PostgresStorage::connect(url, MergeRules::default()).await?;
        let token = storage.create_token(grants).await;
        storage.shutdown().await;
        token
    }

    /// A connection from the pool.
    async fn client(&self) -> Result<deadpool_postgres::Client, StorageError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StorageError::Unavailable(
                "the server is shutting down".into(),
            ));
        }
        self.pool.get().await.map_err(|e| match e {
            PoolError::Timeout(_) => StorageError::Unavailable(format!(
                "no PostgreSQL connection became free within {:?} (pool of {}); retry later",
                self.options.pool_wait, self.options.pool_size
            )),
            PoolError::Backend(e) => StorageError::Unavailable(format!(
                "cannot connect to PostgreSQL at {}: {}",
                self.target,
                with_causes(&e)
            )),
            PoolError::Closed => StorageError::Unavailable("the server is shutting down".into()),
            other => StorageError::Internal(format!("connection pool: {other}")),
        })
    }

    /// Runs `f` within the statement timeout.
    async fn timed<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, StorageError>>,
    ) -> Result<T, StorageError> {
        tokio::time::timeout(self.options.statement_timeout, f)
            .await
            .unwrap_or_else(|_| {
                Err(StorageError::Unavailable(format!(
                    "PostgreSQL did not finish the {what} within {:?}",
                    self.options.statement_timeout
                )))
            })
    }
}

/// How many times a push is tried when PostgreSQL reports a deadlock or serialization
/// failure (it should not happen with the lock order above; a retry is the standard answer
/// when it does).
const PUSH_ATTEMPTS: usize = 5;

#[async_trait]
impl Storage for PostgresStorage {
    async fn push(&self, input: PushInput) -> Result<PushResponse, StorageError> {
        self.timed("push", async {
            let mut client = self.client().await?;
            let mut attempt = 1;
            let planned = loop {
                match push::push(&mut client, &input, &self.rules, &self.clock).await {
                    Err(push::Failed::Pg(_, e)) if retryable(&e) && attempt < PUSH_ATTEMPTS => {
                        tracing::debug!(attempt, error = %e, "push retried");
                        attempt += 1;
                    }
                    other => break other.map_err(push::Failed::into_storage)?,
                }
            };
            for payload in listen::payloads(&planned.moved) {
                // Outside the data transaction: a lost notification only delays a poke on
                // other nodes (they poll as a backstop).
                if let Err(e) = client
                    .execute("SELECT pg_notify($1, $2)", &[&self.channel, &payload])
                    .await
                {
                    tracing::warn!(error = %e, "pg_notify failed; other nodes poke on their next poll");
                }
            }
            for (space, version) in &planned.moved {
                self.pokes.saw(space, *version);
            }
            Ok(planned.response)
        })
        .await
    }

    async fn pull(&self, input: PullInput) -> Result<PullResponse<RawChange>, StorageError> {
        self.timed("pull", async {
            let mut client = self.client().await?;
            pull::pull(&mut client, &input).await
        })
        .await
    }

    async fn authenticate(&self, token: TokenHash) -> Result<Option<Grants>, StorageError> {
        self.timed("token lookup", async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached("SELECT grants FROM ts_tokens WHERE hash = $1")
                .await
                .map_err(db_error("look up a token"))?;
            let row = client
                .query_opt(&stmt, &[&&token.0[..]])
                .await
                .map_err(db_error("look up a token"))?;
            row.map(|r| stored_grants(r.get(0))).transpose()
        })
        .await
    }

    async fn space_versions(&self, spaces: &[SpaceName]) -> Result<Vec<u64>, StorageError> {
        self.timed("version read", async {
            let client = self.client().await?;
            let versions = listen::read_versions(&client, spaces).await?;
            for (space, version) in spaces.iter().zip(&versions) {
                self.pokes.watch(space, *version);
            }
            Ok(versions)
        })
        .await
    }

    fn subscribe(&self) -> broadcast::Receiver<Poke> {
        self.pokes.subscribe()
    }

    async fn overview(&self, request: OverviewRequest) -> Result<Overview, StorageError> {
        self.timed("overview", async {
            let mut client = self.client().await?;
            overview::overview(&mut client, &request).await
        })
        .await
    }

    async fn prune(&self, batch: Prune) -> Result<Pruned, StorageError> {
        self.timed("prune", async {
            let mut client = self.client().await?;
            prune::prune_batch(&mut client, batch).await
        })
        .await
    }

    async fn health(&self) -> Result<(), StorageError> {
        self.timed("health check", async {
            let client = self.client().await?;
            client
                .simple_query("SELECT 1")
                .await
                .map_err(db_error("health check"))?;
            Ok(())
        })
        .await
    }

    async fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        self.stop.send_replace(true);
        let listener = self.listener.lock().ok().and_then(|mut l| l.take());
        if let Some(listener) = listener {
            let _ = listener.await;
        }
        // Pushes already running hold their connections and finish; new ones are refused.
        self.pool.close();
    }
}

/// Parses a `postgres://` URL (or a `key=value` connection string), with tidesync's defaults
/// for what it leaves out: a 5 s connect timeout, TCP keepalives, `application_name`.
fn parse_url(url: &str) -> Result<tokio_postgres::Config, StorageError> {
    let mut config = tokio_postgres::Config::from_str(url).map_err(|e| {
        StorageError::Internal(format!(
            "the database URL is not a PostgreSQL connection string ({e}); expected \
             postgres://USER@HOST:PORT/DATABASE"
        ))
    })?;
    if config.get_hosts().is_empty() {
        return Err(StorageError::Internal(
            "the database URL names no host; expected postgres://USER@HOST:PORT/DATABASE".into(),
        ));
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
    if config.get_application_name().is_none() {
        config.application_name("tidesync");
    }
    Ok(config)
}

/// Checks that `url` is a PostgreSQL connection string this storage can use and returns
/// where it points, `user@host:port/db` (never the password): what a configuration check
/// shows instead of the URL.
pub fn describe_url(url: &str) -> Result<String, StorageError> {
    parse_url(url).map(|config| describe(&config))
}

/// `user@host:port/db` of `config`, for messages (no password).
fn describe(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "?".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("?");
    let db = config.get_dbname().unwrap_or(user);
    format!("{user}@{host}:{port}/{db}")
}

/// The NOTIFY channel of one database and schema: nodes sharing tables share it, and
/// servers on other schemas of the same database do not hear each other.
fn channel_name(database: &str, schema: &str) -> String {
    let digest = Sha256::digest(format!("{database}\0{schema}").as_bytes());
    format!("tidesync_{}", hex::encode(&digest[..8]))
}

/// Whether PostgreSQL asks for the transaction to be tried again.
fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(&SqlState::T_R_DEADLOCK_DETECTED) | Some(&SqlState::T_R_SERIALIZATION_FAILURE)
    )
}

/// Maps a PostgreSQL error to a storage error: the database (or the way to it) being gone,
/// restarting or full of connections is `Unavailable`; anything else is `Internal`.
pub(crate) fn storage_error(context: &str, e: &tokio_postgres::Error) -> StorageError {
    let unavailable = match e.code() {
        Some(code) => {
            let class = &code.code()[..2];
            // 08: connection exception; 53: insufficient resources; 57P0x: shutting down or
            // starting up; 40: a retry the caller ran out of.
            matches!(class, "08" | "53" | "40") || code.code().starts_with("57P0")
        }
        None => {
            e.is_closed() || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
        }
    };
    let text = format!("PostgreSQL: {context}: {}", with_causes(e));
    if unavailable {
        StorageError::Unavailable(text)
    } else {
        StorageError::Internal(text)
    }
}

/// The error's text with its causes (tokio-postgres says "db error" and keeps PostgreSQL's
/// own message, detail and hint in its source).
pub(crate) fn with_causes(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// [`storage_error`] as a closure for `map_err`.
pub(crate) fn db_error(context: &'static str) -> impl Fn(tokio_postgres::Error) -> StorageError {
    move |e| storage_error(context, &e)
}
