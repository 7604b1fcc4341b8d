//! The server configuration file (`tidesync serve --config tidesync.toml`) and its
//! resolution with flags, environment and defaults into one [`ServerConfig`].
//!
//! Precedence, for every key: a flag, then an environment variable where one exists
//! (`TIDESYNC_DATA_DIR`, `TIDESYNC_DATABASE_URL`, `TIDESYNC_ADMIN_TOKEN`), then the file, then the default.
//! Relative paths in the file are resolved against the file's directory; relative paths in
//! flags and the environment against the working directory.
//!
//! [`resolve`] reports every problem it can find ([`ConfigErrors`], each [`Diagnostic`] at
//! `FILE:LINE:COL` with a hint): a TOML syntax error, an unknown key or a value of the wrong
//! TOML type stops the reading, but every bad value after that (a policy name, a duration, a
//! zero limit, an address) is reported together. [`Resolved::to_toml`] prints the result,
//! every default shown, secrets never.
//!
//! What it does not do: open storage, bind a socket or start logging (the CLI does, from
//! the [`ServerConfig`]); watch the file for changes.

mod diagnostic;
mod file;
mod resolve;
mod show;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use tidesync_protocol::CollectionName;

use crate::admin::AdminToken;
use crate::auth::jwt::{JwtConfig, JwtVerifier};
use crate::horizon::HorizonConfig;
use crate::schemas::SchemaSources;
use crate::{CompatSettings, Limits, MergeRules, Policy};

pub use diagnostic::{ConfigErrors, Diagnostic, Location};
pub use resolve::resolve;

/// The environment variable that names the data directory.
pub const ENV_DATA_DIR: &str = "TIDESYNC_DATA_DIR";
/// The environment variable that holds the PostgreSQL URL.
pub const ENV_DATABASE_URL: &str = "TIDESYNC_DATABASE_URL";
/// The environment variable that holds the admin token (turns the dashboard on).
pub const ENV_ADMIN_TOKEN: &str = "TIDESYNC_ADMIN_TOKEN";

/// Default `listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";
/// Default `data_dir`, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./tidesync-data";
/// Default `db_pool_size`.
pub const DEFAULT_DB_POOL_SIZE: u32 = 16;
/// Largest `db_pool_size`.
pub const MAX_DB_POOL_SIZE: u32 = 10_000;

/// Everything `tidesync serve` runs with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub listen: ListenAddr,
    /// Where the data is.
    pub storage: StorageConfig,
    /// Conflict policies and clock skew.
    pub rules: MergeRules,
    /// Request limits and compression.
    pub limits: Limits,
    /// How the log lines on stderr look.
    pub log_format: LogFormat,
    /// Where each collection's JSON Schema came from (`[schemas.*]`, relative files
    /// resolved); the compiled schemas are in `rules.schemas`.
    pub schema_sources: SchemaSources,
    /// The RxDB and WatermelonDB protocols' settings (`[compat]`).
    pub compat: CompatSettings,
    /// The history horizon (`[horizon]`; 30 days when not set).
    pub horizon: HorizonConfig,
    /// JWT auth (`[auth.jwt]`), next to API tokens, when set.
    pub jwt: Option<JwtAuth>,
    /// The admin token: the dashboard at `/admin` is on when set.
    pub admin: Option<AdminToken>,
}

/// JWT auth as configured: the settings (relative paths resolved) and the verifier built
/// from them, its key files already read.
#[derive(Debug, Clone)]
pub struct JwtAuth {
    /// The `[auth.jwt]` settings.
    pub config: JwtConfig,
    /// What verifies bearers (give it to `AppState::with_jwt`).
    pub verifier: JwtVerifier,
}

/// Where the server keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageConfig {
    /// The embedded SQLite file in a data directory.
    Sqlite {
        /// The data directory (created when the server starts).
        data_dir: PathBuf,
    },
    /// A PostgreSQL database shared by any number of nodes.
    Postgres {
        /// The connection string.
        url: DatabaseUrl,
        /// Most connections of this node's pool.
        pool_size: u32,
    },
}

/// A PostgreSQL connection string. It may hold a password: its `Debug` hides it, and
/// [`DatabaseUrl::target`] is what may be shown.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    url: String,
    target: String,
}

impl DatabaseUrl {
    /// Checks `url` (see [`crate::storage::postgres::describe_url`]).
    pub fn new(url: impl Into<String>) -> Result<DatabaseUrl, String> {
        let url = url.into();
        let target = crate::storage::postgres::describe_url(&url).map_err(|e| match e {
            crate::storage::StorageError::Internal(m)
            | crate::storage::StorageError::Unavailable(m) => m,
            other => other.to_string(),
        })?;
        Ok(DatabaseUrl { url, target })
    }

    /// The connection string itself (secret).
    pub fn expose(&self) -> &str {
        &self.url
    }

    /// `user@host:port/db`: the URL without password or options.
    pub fn target(&self) -> &str {
        &self.target
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl(<hidden> {})", self.target)
    }
}

/// An address to listen on, HOST:PORT, with the addresses it resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr {
    /// As given.
    pub text: String,
    /// What it resolved to (the first that can be bound is used).
    pub addrs: Vec<SocketAddr>,
}

impl Default for ListenAddr {
    /// [`DEFAULT_LISTEN`].
    fn default() -> ListenAddr {
        ListenAddr {
            text: DEFAULT_LISTEN.to_owned(),
            addrs: vec![SocketAddr::from(([127, 0, 0, 1], 8787))],
        }
    }
}

impl std::str::FromStr for ListenAddr {
    type Err = String;
    /// An IP address or a host name (resolved) and a port; port 0 picks a free port.
    fn from_str(s: &str) -> Result<ListenAddr, String> {
        let addrs: Vec<SocketAddr> = s
            .to_socket_addrs()
            .map_err(|e| {
                format!("expected HOST:PORT, e.g. 127.0.0.1:8787 or localhost:8787 ({e})")
            })?
            .collect();
        if addrs.is_empty() {
            return Err(format!("{s} resolves to no address"));
        }
        Ok(ListenAddr {
            text: s.to_owned(),
            addrs,
        })
    }
}

/// How the log lines on stderr look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The name `FromStr` reads.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}: use text or json")),
        }
    }
}

/// What flags say, each overriding the file and the environment. `None`: not given.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<ListenAddr>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--database-url`.
    pub database_url: Option<DatabaseUrl>,
    /// `--db-pool-size`.
    pub db_pool_size: Option<u32>,
    /// `--default-policy`.
    pub default_policy: Option<Policy>,
    /// `--policy COLLECTION=POLICY`, each replacing the file's policy of that collection.
    pub policies: Vec<(CollectionName, Policy)>,
    /// `--max-clock-skew-ms`.
    pub max_clock_skew: Option<Duration>,
    /// `--no-compression` (`Some(false)`).
    pub compression: Option<bool>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
    /// `--admin-token`.
    pub admin_token: Option<AdminToken>,
    /// `--rxdb-primary-key COLLECTION=FIELD`, each replacing the file's field of that
    /// collection.
    pub rxdb_primary_keys: Vec<(CollectionName, String)>,
}

/// Where a resolved value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Nothing set it.
    Default,
    /// The configuration file.
    File,
    /// An environment variable.
    Env(&'static str),
    /// A command-line flag.
    Flag(&'static str),
}

/// A resolved configuration and where each of its values came from.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The configuration.
    pub config: ServerConfig,
    /// The file it was read from, if any.
    pub file: Option<PathBuf>,
    /// The dotted keys (`listen`, `limits.max_body_bytes`, `policies.collections.todos`)
    /// a flag or an environment variable set, and by which.
    overridden: BTreeMap<String, Origin>,
    /// The dotted keys of every value the file sets.
    file_keys: BTreeSet<String>,
}

impl Resolved {
    /// Where the value of the dotted `key` came from.
    pub fn origin(&self, key: &str) -> Origin {
        match self.overridden.get(key) {
            Some(origin) => *origin,
            None if self.file_keys.contains(key) => Origin::File,
            None => Origin::Default,
        }
    }
}
