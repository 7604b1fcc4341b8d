//! `tidesync serve`: open the storage (the embedded SQLite file in `--data-dir`, or
//! PostgreSQL with `--database-url`), listen, serve until Ctrl-C or SIGTERM, then shut down
//! gracefully.
//!
//! An embedded server holds an exclusive lock on `DATA_DIR/server.lock` for its lifetime: a
//! second server on the same directory would serve the same file without seeing the first
//! one's writes as pokes, so it refuses to start. `token create` and `migrate-storage` do not
//! take the lock (they work next to a running server); with `--database-url` there is none.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::Args;
use tidesync_protocol::CollectionName;
use tidesync_server::storage::postgres::{PostgresOptions, PostgresStorage};
use tidesync_server::storage::sqlite::SqliteStorage;
use tidesync_server::storage::Storage;
use tidesync_server::{AppState, CompatSettings, Limits, MergeRules, Policies, Policy};

use crate::{storage_message, DataDir, DatabaseUrl};

/// Flags of `tidesync serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    data_dir: DataDir,
    #[command(flatten)]
    database_url: DatabaseUrl,
    /// Most PostgreSQL connections of this node's pool (with --database-url; one LISTEN
    /// connection comes on top).
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    db_pool_size: u32,
    /// Address to listen on, HOST:PORT: an IP address or a host name such as localhost
    /// (resolved; the first address that can be bound is used). Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8787", value_parser = parse_listen)]
    listen: Listen,
    /// Conflict policy of one collection, COLLECTION=lww|server_wins|strict (repeatable).
    #[arg(long = "policy", value_name = "COLLECTION=POLICY", value_parser = parse_policy)]
    policies: Vec<(CollectionName, Policy)>,
    /// Conflict policy of every other collection: lww, server_wins or strict.
    #[arg(long, default_value = "lww", value_parser = parse_policy_name)]
    default_policy: Policy,
    /// Client clocks further ahead of the server's than this are re-stamped.
    #[arg(long, default_value_t = 60_000)]
    max_clock_skew_ms: u64,
    /// Neither compress responses nor accept compressed request bodies (gzip, zstd), and do
    /// not advertise them (e.g. when a reverse proxy in front compresses).
    #[arg(long)]
    no_compression: bool,
    /// The RxDB primary-key field of one collection, COLLECTION=FIELD (repeatable; others
    /// use `id`). See docs/compat.md.
    #[arg(long = "rxdb-primary-key", value_name = "COLLECTION=FIELD", value_parser = parse_primary_key)]
    rxdb_primary_keys: Vec<(CollectionName, String)>,
}

/// `--listen`: what was given, and the addresses it resolved to.
#[derive(Debug, Clone)]
struct Listen {
    text: String,
    addrs: Vec<SocketAddr>,
}

fn parse_listen(s: &str) -> Result<Listen, String> {
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| format!("expected HOST:PORT, e.g. 127.0.0.1:8787 or localhost:8787 ({e})"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{s} resolves to no address"));
    }
    Ok(Listen {
        text: s.to_owned(),
        addrs,
    })
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

/// Runs the server until a shutdown signal.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let rules = MergeRules {
        policies: Policies {
            default: args.default_policy,
            per_collection: args.policies.into_iter().collect(),
        },
        max_clock_skew: Duration::from_millis(args.max_clock_skew_ms),
    };
    // The data directory is only touched (created) for the embedded backend.
    let backend = match args.database_url.get() {
        Some(url) => Backend::Postgres {
            url: url.to_owned(),
            pool_size: args.db_pool_size as usize,
        },
        None => Backend::Sqlite(args.data_dir.clone()),
    };
    // Before anything else: a second server on the same directory stops here, having touched
    // nothing. Held until this function returns.
    let _lock = match &backend {
        Backend::Sqlite(data_dir) => Some(lock_data_dir(data_dir)?),
        Backend::Postgres { .. } => None,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen.addrs.as_slice())
            .await
            .with_context(|| format!("cannot listen on {}", args.listen.text))?;
        let addr = listener.local_addr().context("no local address")?;
        let (storage, banner) = backend.open(rules).await?;
        let limits = Limits {
            compression: !args.no_compression,
            ..Limits::default()
        };
        let compat = CompatSettings {
            rxdb_primary_keys: args.rxdb_primary_keys.into_iter().collect(),
        };
        let state = AppState::with_compat(storage, limits, compat);
        println!("tidesync listening on http://{addr}");
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
