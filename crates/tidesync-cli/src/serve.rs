//! `tidesync serve`: open the database, listen, serve until Ctrl-C or SIGTERM, then shut
//! down gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::Args;
use tidesync_protocol::CollectionName;
use tidesync_server::storage::sqlite::SqliteStorage;
use tidesync_server::{AppState, Limits, MergeRules, Policies, Policy};

use crate::DataDir;

/// Flags of `tidesync serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    data_dir: DataDir,
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
    let database = args.data_dir.database()?;
    let rules = MergeRules {
        policies: Policies {
            default: args.default_policy,
            per_collection: args.policies.into_iter().collect(),
        },
        max_clock_skew: Duration::from_millis(args.max_clock_skew_ms),
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let storage = SqliteStorage::open(&database, rules)
            .with_context(|| format!("cannot open the database {}", database.display()))?;
        let addr = listener.local_addr().context("no local address")?;
        let state = AppState::new(Arc::new(storage), Limits::default());
        println!("tidesync listening on http://{addr}");
        println!("data in {}", database.display());
        println!(
            "create a token: tidesync token create --data-dir {} --user USER --space SPACE",
            args.data_dir.path.display()
        );
        tidesync_server::serve(listener, state, shutdown_signal())
            .await
            .map_err(|e| anyhow!("the server failed: {e}"))
    })
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
