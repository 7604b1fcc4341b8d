//! `tidesync serve`: resolve the configuration (flags, environment, `--config` file,
//! defaults), open the storage (the embedded SQLite file in the data directory, or
//! PostgreSQL with a database URL), listen, serve until Ctrl-C or SIGTERM, then shut down
//! gracefully.
//!
//! An embedded server holds an exclusive lock on `DATA_DIR/server.lock` for its lifetime: a
//! second server on the same directory would serve the same file without seeing the first
//! one's writes as pokes, so it refuses to start. `token create` and `migrate-storage` do not
//! take the lock (they work next to a running server); with `--database-url` there is none.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::Args;
use tidesync_protocol::CollectionName;
use tidesync_server::admin::AdminToken;
use tidesync_server::config_file::{
    DatabaseUrl, ListenAddr, LogFormat, Overrides, ServerConfig, StorageConfig, MAX_DB_POOL_SIZE,
};
use tidesync_server::storage::postgres::{PostgresOptions, PostgresStorage};
use tidesync_server::storage::sqlite::SqliteStorage;
use tidesync_server::storage::Storage;
use tidesync_server::{AppState, CompatSettings, MergeRules, Policy};

use crate::{storage_message, DataDir};

/// Flags of `tidesync serve`. Each overrides the same key of the `--config` file (and the
/// environment variable, where one exists); what neither sets has its default (docs/
/// operations.md, "Configuration file").
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Read the settings from this TOML file (check it with `tidesync config check FILE`);
    /// the flags below override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the server keeps its database (env TIDESYNC_DATA_DIR; default ./tidesync-data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Keep the server's data in PostgreSQL instead of the SQLite file in the data directory
    /// (env TIDESYNC_DATABASE_URL): postgres://USER[:PASSWORD]@HOST:PORT/DATABASE (add
    /// ?options=-csearch_path%3DSCHEMA for a schema of its own). The data directory is then
    /// ignored.
    // Checked when the configuration is resolved, not by the flag parser: clap's errors
    // repeat the value, and so the password.
    #[arg(long, value_name = "URL", value_parser = parse_secret)]
    database_url: Option<Secret>,
    /// Most PostgreSQL connections of this node's pool (with a database URL; one LISTEN
    /// connection comes on top). Default 16.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_DB_POOL_SIZE)))]
    db_pool_size: Option<u32>,
    /// Address to listen on, HOST:PORT: an IP address or a host name such as localhost
    /// (resolved; the first address that can be bound is used). Port 0 picks a free port.
    /// Default 127.0.0.1:8787.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_listen)]
    listen: Option<ListenAddr>,
    /// Conflict policy of one collection, COLLECTION=lww|server_wins|strict (repeatable).
    #[arg(long = "policy", value_name = "COLLECTION=POLICY", value_parser = parse_policy)]
    policies: Vec<(CollectionName, Policy)>,
    /// Conflict policy of every other collection: lww, server_wins or strict. Default lww.
    #[arg(long, value_name = "POLICY", value_parser = parse_policy_name)]
    default_policy: Option<Policy>,
    /// Client clocks further ahead of the server's than this are re-stamped. Default 60000.
    #[arg(long, value_name = "MS")]
    max_clock_skew_ms: Option<u64>,
    /// Neither compress responses nor accept compressed request bodies (gzip, zstd), and do
    /// not advertise them (e.g. when a reverse proxy in front compresses).
    #[arg(long)]
    no_compression: bool,
    /// Turn on the admin dashboard at /admin behind this token (at least 16 characters,
    /// e.g. `openssl rand -hex 32`). Prefer TIDESYNC_ADMIN_TOKEN or the file's [admin]
    /// section: a flag's value shows in the process list.
    #[arg(long, value_name = "TOKEN", value_parser = parse_secret)]
    admin_token: Option<Secret>,
    /// The RxDB primary-key field of one collection, COLLECTION=FIELD (repeatable; others
    /// use `id`). See docs/compat.md.
    #[arg(long = "rxdb-primary-key", value_name = "COLLECTION=FIELD", value_parser = parse_primary_key)]
    rxdb_primary_keys: Vec<(CollectionName, String)>,
}

impl ServeArgs {
    /// What the flags given say; `log_format` is the global flag.
    fn overrides(&self, log_format: Option<LogFormat>) -> anyhow::Result<Overrides> {
        let database_url = match self.database_url.as_ref().map(|s| s.0.as_str()) {
            Some(url) if !url.trim().is_empty() => {
                Some(DatabaseUrl::new(url).map_err(|e| anyhow!("--database-url: {e}"))?)
            }
            _ => None,
        };
        let admin_token = match &self.admin_token {
            Some(token) => {
                Some(AdminToken::new(&token.0).map_err(|e| anyhow!("--admin-token: {e}"))?)
            }
            None => None,
        };
        Ok(Overrides {
            listen: self.listen.clone(),
            data_dir: self.data_dir.clone(),
            database_url,
            db_pool_size: self.db_pool_size,
            default_policy: self.default_policy,
            policies: self.policies.clone(),
            max_clock_skew: self.max_clock_skew_ms.map(Duration::from_millis),
            compression: self.no_compression.then_some(false),
            log_format,
            admin_token,
            rxdb_primary_keys: self.rxdb_primary_keys.clone(),
        })
    }
}

/// A flag's value that may hold a password: its `Debug` hides it.
#[derive(Clone)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<hidden>")
    }
}

fn parse_secret(s: &str) -> Result<Secret, String> {
    Ok(Secret(s.to_owned()))
}

fn parse_listen(s: &str) -> Result<ListenAddr, String> {
    s.parse()
}

fn parse_policy_name(s: &str) -> Result<Policy, String> {
    s.parse()
}

fn parse_policy(s: &str) -> Result<(CollectionName, Policy), String> {
    let (collection, policy) = s
        .split_once('=')
        .ok_or_else(|| format!("expected COLLECTION=POLICY, got {s:?}"))?;
    let collection = CollectionName::new(collection).map_err(|e| e.to_string())?;
    Ok((collection, policy.parse()?))
}

fn parse_primary_key(s: &str) -> Result<(CollectionName, String), String> {
    let (collection, field) = s
        .split_once('=')
        .ok_or_else(|| format!("expected COLLECTION=FIELD, got {s:?}"))?;
    let collection = CollectionName::new(collection).map_err(|e| e.to_string())?;
    CompatSettings::check_primary_key(field)?;
    Ok((collection, field.to_owned()))
}

/// Resolves the configuration (flags over environment over `--config` over defaults),
/// starts logging in the format it names, and runs the server until a shutdown signal.
pub fn run(args: ServeArgs, log_format: Option<LogFormat>) -> anyhow::Result<()> {
    let resolved = crate::config::resolve(args.config.as_deref(), &args.overrides(log_format)?)?;
    crate::init_logging(resolved.config.log_format, "info");
    if let Some(file) = &resolved.file {
        tracing::info!(file = %file.display(), "configuration read");
    }
    let ServerConfig {
        listen,
        storage,
        rules,
        limits,
        log_format: _,
        schema_sources: _,
        compat,
        horizon,
        jwt,
        admin,
    } = resolved.config;
    // The data directory is only touched (created) for the embedded backend.
    let backend = match storage {
        StorageConfig::Postgres { url, pool_size } => Backend::Postgres {
            url: url.expose().to_owned(),
            pool_size: pool_size as usize,
        },
        StorageConfig::Sqlite { data_dir } => Backend::Sqlite(DataDir { path: data_dir }),
    };
    // Before anything else: a second server on the same directory stops here, having touched
    // nothing. Held until this function returns.
    let _lock = match &backend {
        Backend::Sqlite(data_dir) => Some(lock_data_dir(data_dir)?),
        Backend::Postgres { .. } => None,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen.addrs.as_slice())
            .await
            .with_context(|| format!("cannot listen on {}", listen.text))?;
        let addr = listener.local_addr().context("no local address")?;
        let (storage, banner) = backend.open(rules).await?;
        let mut state =
            AppState::with_horizon(storage, limits, Some(horizon)).with_compat(compat);
        if let Some(jwt) = jwt {
            // A wrong JWKS URL shows in the log now rather than at the first request; the
            // server still starts (the set is fetched again when a token needs it).
            match jwt.verifier.fetch_keys().await {
                Ok(keys) => tracing::info!(keys, algorithm = jwt.config.algorithm.as_str(), "JWT auth on"),
                Err(e) => tracing::warn!(error = %e, "JWT auth on, but its key set could not be fetched yet"),
            }
            state = state.with_jwt(jwt.verifier);
        }
        let admin_on = admin.is_some();
        if let Some(token) = admin {
            state = state.with_admin(token);
        }
        println!("tidesync listening on http://{addr}");
        if admin_on {
            println!("admin dashboard at http://{addr}/admin");
        }
        for line in banner {
            println!("{line}");
        }
        tidesync_server::serve(listener, state, shutdown_signal())
            .await
            .map_err(|e| anyhow!("the server failed: {e}"))
    })
}

/// The lock file inside a data directory.
const LOCK_FILE: &str = "server.lock";

/// Takes the data directory's exclusive lock (creating the directory if needed) and writes
/// this process's id into the lock file. The operating system releases the lock when the
/// process ends, however it ends; the file stays.
fn lock_data_dir(data_dir: &DataDir) -> anyhow::Result<File> {
    data_dir.database()?; // creates the directory
    let path = data_dir.path.join(LOCK_FILE);
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = lock_holder(&mut file)
                .map(|pid| format!(" (pid {pid})"))
                .unwrap_or_default();
            anyhow::bail!(
                "another tidesync server{holder} is using the data directory {}; stop it, or give this one another --data-dir",
                data_dir.path.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(anyhow!("cannot lock {}: {e}", path.display()));
        }
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .and_then(|()| file.flush())
        .with_context(|| format!("cannot write the lock file {}", path.display()))?;
    Ok(file)
}

/// The pid the lock's holder wrote into the file, if it reads as one.
fn lock_holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Where the server keeps its data.
enum Backend {
    /// The embedded SQLite file in a data directory (the default).
    Sqlite(DataDir),
    /// A PostgreSQL database shared by any number of nodes.
    Postgres { url: String, pool_size: usize },
}

impl Backend {
    /// Opens the storage; returns it with the two banner lines that say where the data is
    /// and how to issue a token for it.
    async fn open(self, rules: MergeRules) -> anyhow::Result<(Arc<dyn Storage>, [String; 2])> {
        match self {
            Backend::Sqlite(data_dir) => {
                let database = data_dir.database()?;
                let storage = SqliteStorage::open(&database, rules)
                    .with_context(|| format!("cannot open the database {}", database.display()))?;
                tracing::info!(storage = "sqlite", path = %database.display(), "storage open");
                let banner = [
                    format!("data in {}", database.display()),
                    format!(
                        "create a token: tidesync token create --data-dir {} --user USER --space SPACE",
                        data_dir.path.display()
                    ),
                ];
                Ok((Arc::new(storage), banner))
            }
            Backend::Postgres { url, pool_size } => {
                let options = PostgresOptions {
                    pool_size,
                    ..PostgresOptions::default()
                };
                let storage = PostgresStorage::connect_with(&url, rules, options)
                    .await
                    .map_err(|e| anyhow!(storage_message(e)))?;
                tracing::info!(
                    storage = "postgres",
                    target = storage.target(),
                    pool_size,
                    "storage open"
                );
                let banner = [
                    format!("data in PostgreSQL at {}", storage.target()),
                    "create a token: tidesync token create --database-url URL --user USER --space SPACE"
                        .to_owned(),
                ];
                Ok((Arc::new(storage), banner))
            }
        }
    }
}

/// Completes on Ctrl-C or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
