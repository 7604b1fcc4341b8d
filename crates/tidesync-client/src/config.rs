//! How a client is set up.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tidesync_core::sync::SyncConfig;
use tidesync_protocol::SpaceName;
use tidesync_store::StoreConfig;

/// Where the app's bearer token comes from. Called at send time, on the sync thread: the
/// token is never stored with queued mutations.
pub trait TokenProvider: Send + Sync + 'static {
    /// The current token, if the app has one.
    fn token(&self) -> Option<String>;

    /// The server refused the current token (401): produce a fresh one (e.g. with a refresh
    /// token), or `None` if there is none. Called at most once per failed request.
    fn refresh(&self) -> Option<String>;
}

/// A fixed token (for tests, CLIs and services with long-lived API tokens).
#[derive(Clone)]
pub struct StaticToken(pub String);

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticToken(…)")
    }
}

impl TokenProvider for StaticToken {
    fn token(&self) -> Option<String> {
        Some(self.0.clone())
    }

    fn refresh(&self) -> Option<String> {
        None
    }
}

/// No token at all (a client without a server).
struct NoToken;

impl TokenProvider for NoToken {
    fn token(&self) -> Option<String> {
        None
    }

    fn refresh(&self) -> Option<String> {
        None
    }
}

/// Options for [`crate::Client::open`].
#[derive(Clone)]
pub struct ClientConfig {
    /// The local database file.
    pub db_path: PathBuf,
    /// The server's base URL, e.g. `http://127.0.0.1:8787`; `None`: local only (every read
    /// and write works, nothing syncs, the status stays `Stopped`).
    pub server_url: Option<String>,
    /// The spaces to sync (at least one when there is a server).
    pub spaces: Vec<SpaceName>,
    /// Where tokens come from.
    pub tokens: Arc<dyn TokenProvider>,
    /// Store options (durability, restoration schema, ...).
    pub store: StoreConfig,
    /// Most mutations per push (whole transactions; a bigger one goes alone). Pushes adapt
    /// below it: the first of a backlog carries at most 250, each one that leaves more
    /// behind up to four times as many, a timeout halves the size and a `413` caps it.
    /// Default 5,000 (the server's default `max_mutations_per_push`).
    pub push_batch: usize,
    /// Most changes per pull page; pages adapt below it the same way (first 250). Default
    /// 10,000 (the server's default `max_pull_limit`; it clamps larger pages).
    pub pull_limit: u32,
    /// Timeout of one push or pull. Default 30 s.
    pub request_timeout: Duration,
    /// State machine tuning (backoff, polling).
    pub sync: SyncConfig,
    /// Seed of the backoff jitter (`None`: from the clock). Fix it to replay a run.
    pub seed: Option<u64>,
    /// Start syncing at open. Default `true`; `false` starts paused (call `resume`).
    pub start_online: bool,
    /// How long live queries gather changes before running again: a burst of writes or
    /// pulled pages within it costs one evaluation per query. Default 5 ms.
    pub live_query_throttle: Duration,
    /// How often the client checks whether another connection to its database file
    /// (another process, an app extension, a widget, a background task) committed: such
    /// writes are then pushed like the app's own, live queries re-run, and
    /// [`ClientEvent::ChangedElsewhere`](crate::ClientEvent::ChangedElsewhere) is sent. One
    /// `PRAGMA data_version` per check. Default 1 s; `None` never checks (every write goes
    /// through this client).
    pub external_writes_poll: Option<Duration>,
    /// Compression on the wire: ask for gzip- or zstd-compressed responses, and send push and
    /// pull bodies over 1 KiB as zstd once the server has said it accepts them (its
    /// `Accept-Encoding`; a server that does not say so gets plain JSON). `false`: nothing
    /// compressed either way. Default `true`.
    pub compression: bool,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("db_path", &self.db_path)
            .field("server_url", &self.server_url)
            .field("spaces", &self.spaces)
            .field("push_batch", &self.push_batch)
            .field("pull_limit", &self.pull_limit)
            .field("compression", &self.compression)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// A configuration with defaults for everything but the essentials.
    pub fn new(
        db_path: impl Into<PathBuf>,
        server_url: impl Into<String>,
        spaces: Vec<SpaceName>,
        tokens: Arc<dyn TokenProvider>,
    ) -> ClientConfig {
        ClientConfig {
            server_url: Some(server_url.into()),
            spaces,
            tokens,
            ..ClientConfig::local(db_path)
        }
    }

    /// A client of the local database alone: reads, writes, transactions, conflicts,
    /// rejections and restoration state all work; nothing syncs until the database is
    /// opened again with a server.
    pub fn local(db_path: impl Into<PathBuf>) -> ClientConfig {
        ClientConfig {
            db_path: db_path.into(),
            server_url: None,
            spaces: Vec::new(),
            tokens: Arc::new(NoToken),
            store: StoreConfig::default(),
            push_batch: 5_000,
            pull_limit: 10_000,
            request_timeout: Duration::from_secs(30),
            sync: SyncConfig::default(),
            seed: None,
            start_online: true,
            live_query_throttle: Duration::from_millis(5),
            external_writes_poll: Some(Duration::from_secs(1)),
            compression: true,
        }
    }
}
