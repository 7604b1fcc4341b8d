//! What the demo runs on: a data directory, a server in this process on a free loopback
//! port, and the configuration of each client.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::Value;
use tidesync_client::{
    BackoffPolicy, ClientConfig, ClientId, CollectionName, Cursor, Durability, SpaceName,
    StaticToken, SyncConfig,
};
use tidesync_server::auth::Grants;
use tidesync_server::storage::{PullInput, Storage};
use tidesync_server::{EmbeddedServer, MergeRules, Policies, Policy};

/// The one space every demo client syncs.
pub const SPACE: &str = "team:demo";
/// The shared todo list: lww (per field, newest wins; conflicts reported).
pub const TODOS: &str = "todos";
/// Orders: strict (a change made on an outdated base is rejected).
pub const ORDERS: &str = "orders";

/// A record as compared between replicas: (collection, id) → document.
pub type Snapshot = BTreeMap<(String, String), Value>;

/// Where the demo keeps its files: a temporary directory (removed at the end) or `--data-dir`.
#[derive(Debug)]
pub struct Workspace {
    root: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Workspace {
    /// A fresh place for the server database and the client databases.
    pub fn new(data_dir: Option<&Path>) -> anyhow::Result<Workspace> {
        match data_dir {
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("tidesync-demo-")
                    .tempdir()
                    .context("cannot create a temporary directory")?;
                Ok(Workspace {
                    root: temp.path().to_owned(),
                    _temp: Some(temp),
                })
            }
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| anyhow!("cannot create data directory {}: {e}", dir.display()))?;
                let not_empty = std::fs::read_dir(dir)
                    .map_err(|e| anyhow!("cannot read data directory {}: {e}", dir.display()))?
                    .next()
                    .is_some();
                if not_empty {
                    bail!(
                        "data directory {} is not empty; the demo needs a fresh one",
                        dir.display()
                    );
                }
                Ok(Workspace {
                    root: dir.to_owned(),
                    _temp: None,
                })
            }
        }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The server's database file.
    pub fn server_db(&self) -> PathBuf {
        self.root.join("server.db")
    }

    /// Client `name`'s database file.
    pub fn client_db(&self, name: &str) -> PathBuf {
        self.root.join(format!("client-{name}.db"))
    }
}

/// The sync server, running on its own thread and runtime in this process.
#[derive(Debug)]
pub struct DemoServer {
    server: EmbeddedServer,
}

impl DemoServer {
    /// Opens the database and listens on a free port of 127.0.0.1. `orders` is strict.
    pub fn start(db: &Path) -> anyhow::Result<DemoServer> {
        let rules = MergeRules {
            policies: Policies {
                default: Policy::Lww,
                per_collection: [(collection(ORDERS)?, Policy::Strict)]
                    .into_iter()
                    .collect(),
            },
            ..MergeRules::default()
        };
        let server = EmbeddedServer::sqlite(db, rules)
            .with_context(|| format!("cannot serve the database {}", db.display()))?;
        Ok(DemoServer { server })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// A token that may read and write the demo space.
    pub fn token(&self) -> anyhow::Result<String> {
        let grants = Grants {
            user: "demo".into(),
            read: Default::default(),
            write: [space()?].into_iter().collect(),
        };
        self.server
            .storage()
            .create_token(&grants)
            .context("cannot create a token")
    }

    /// The space's version (one per applied change).
    pub fn version(&self) -> anyhow::Result<u64> {
        let spaces = [space()?];
        let versions = self
            .server
            .run(self.server.storage().space_versions(&spaces))
            .context("cannot read the space version")?;
        Ok(versions.first().copied().unwrap_or(0))
    }

    /// Every live record of the demo space, as the server holds it.
    pub fn snapshot(&self) -> anyhow::Result<Snapshot> {
        let mut out = Snapshot::new();
        let mut cursor = Cursor::new();
        loop {
            let input = PullInput {
                user: "demo".into(),
                client_id: ClientId::new("demo-observer")?,
                cursor: cursor.clone(),
                spaces: vec![space()?],
                limit: 10_000,
                echoes: false,
                refetch: Vec::new(),
            };
            let page = self
                .server
                .run(self.server.storage().pull(input))
                .context("cannot read the server's records")?;
            for change in page.changes {
                let key = (change.collection.to_string(), change.id.to_string());
                match change.doc {
                    Some(doc) if !change.deleted => {
                        let doc: Value = serde_json::from_str(doc.get()).with_context(|| {
                            format!(
                                "the server's document of {}/{} does not parse",
                                key.0, key.1
                            )
                        })?;
                        out.insert(key, doc);
                    }
                    _ => {
                        out.remove(&key);
                    }
                }
            }
            cursor = page.cursor;
            if !page.has_more {
                return Ok(out);
            }
        }
    }

    /// Graceful stop: requests in flight finish, the storage flushes.
    pub fn stop(self) {
        if let Err(e) = self.server.stop() {
            tracing::warn!(error = %e, "the demo server did not stop cleanly");
        }
    }
}

/// The demo space.
pub fn space() -> anyhow::Result<SpaceName> {
    Ok(SpaceName::new(SPACE)?)
}

fn collection(name: &str) -> anyhow::Result<CollectionName> {
    Ok(CollectionName::new(name)?)
}

/// A demo client's configuration: quick retries, and no probing while told offline (the demo
/// decides when the network comes back).
pub fn client_config(
    db: PathBuf,
    url: &str,
    token: &str,
    seed: u64,
) -> anyhow::Result<ClientConfig> {
    let mut config =
        ClientConfig::new(db, url, vec![space()?], Arc::new(StaticToken(token.into())));
    // `Normal` survives an app crash (what the kill/reopen step shows) and commits faster.
    config.store.durability = Durability::Normal;
    config.sync = SyncConfig {
        backoff: BackoffPolicy {
            base_ms: 50,
            cap_ms: 1_000,
        },
        idle_poll_ms: 5_000,
        stream_retry_ms: 500,
        offline_probe_ms: 24 * 3_600_000,
    };
    config.seed = Some(seed);
    config.request_timeout = Duration::from_secs(20);
    Ok(config)
}
