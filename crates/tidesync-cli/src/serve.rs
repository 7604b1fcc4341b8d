//! `tidesync serve`: open the storage (the embedded SQLite file in `--data-dir`, or
//! PostgreSQL with `--database-url`), listen, serve until Ctrl-C or SIGTERM, then shut down
//! gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::Args;
use tidesync_protocol::CollectionName;
use tidesync_server::storage::postgres::{PostgresOptions, PostgresStorage};
use tidesync_server::storage::sqlite::SqliteStorage;
use tidesync_server::storage::Storage;
use tidesync_server::{AppState, Limits, MergeRules, Policies, Policy};

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
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    /// Conflict policy of one collection, COLLECTION=lww|server_wins|strict (repeatable).
    #[arg(long = "policy", value_name = "COLLECTION=POLICY", value_parser = parse_policy)]
    policies: Vec<(CollectionName, Policy)>,
    /// Conflict policy of every other collection: lww, server_wins or strict.
    #[arg(long, default_value = "lww", value_parser = parse_policy_name)]
    default_policy: Policy,
    /// Client clocks further ahead of the server's than this are re-stamped.
    #[arg(long, default_value_t = 60_000)]
    max_clock_skew_ms: u64,
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
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr().context("no local address")?;
        let (storage, banner) = backend.open(rules).await?;
        let state = AppState::new(storage, Limits::default());
        println!("tidesync listening on http://{addr}");
        for line in banner {
            println!("{line}");
        }
        tidesync_server::serve(listener, state, shutdown_signal())
            .await
            .map_err(|e| anyhow!("the server failed: {e}"))
    })
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
