//! `ts_open`'s configuration: JSON, every option documented in docs/ffi.md, unknown options
//! refused (a typo must not be silently ignored).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tidesync_client::{
    ClientConfig, CollectionName, Durability, IndexSpec, Indexes, SessionRestore, SpaceName,
};

use crate::abi::FfiError;

/// The JSON `ts_open` takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OpenConfig {
    /// The database file (created if missing; its folder must exist).
    pub path: String,
    /// The server; absent: the database works locally only.
    #[serde(default)]
    pub server_url: Option<String>,
    /// The spaces to sync (at least one with a server).
    #[serde(default)]
    pub spaces: Vec<String>,
    /// The bearer token to start with (`ts_set_token` changes it).
    #[serde(default)]
    pub token: Option<String>,
    /// `"full"` (default: a returned write survives power loss) or `"normal"` (survives an
    /// app crash, commits faster).
    #[serde(default)]
    pub durability: Option<DurabilityArg>,
    /// How long a write waits for another process's lock (default 5,000).
    #[serde(default)]
    pub busy_timeout_ms: Option<u64>,
    /// Largest document in bytes of JSON (default 1 MiB).
    #[serde(default)]
    pub max_doc_bytes: Option<usize>,
    /// Session restoration: `"fresh"` (default: session state is cleared), `"keep"`, or the
    /// session id the platform handed back after it killed the app.
    #[serde(default)]
    pub session: Option<String>,
    /// Most mutations per push (default 5,000; pushes start at 250 and grow).
    #[serde(default)]
    pub push_batch: Option<usize>,
    /// Most changes per pull page (default 10,000; pages start at 250 and grow).
    #[serde(default)]
    pub pull_limit: Option<u32>,
    /// gzip/zstd on the wire, negotiated with the server (default `true`).
    #[serde(default)]
    pub compression: Option<bool>,
    /// Timeout of one push or pull (default 30,000).
    #[serde(default)]
    pub request_timeout_ms: Option<u64>,
    /// `false`: open paused (`ts_resume` starts syncing). Default `true`.
    #[serde(default)]
    pub start_online: Option<bool>,
    /// How long the engine waits for `ts_set_token` after a `token_expired` event (default
    /// 30,000).
    #[serde(default)]
    pub token_wait_ms: Option<u64>,
    /// Indexes for the app's queries: `[{"collection": "todos", "fields": ["project",
    /// {"due": "desc"}]}]`. The file's indexes are made exactly these at open.
    #[serde(default)]
    pub indexes: Vec<IndexArg>,
    /// How long live queries gather changes before running again (default 5).
    #[serde(default)]
    pub live_query_throttle_ms: Option<u64>,
    /// How often to check whether another connection to the file committed (an app
    /// extension, a background isolate with its own engine, another process); 0 never
    /// checks (default 1,000).
    #[serde(default)]
    pub external_writes_poll_ms: Option<u64>,
}

/// One declared index.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IndexArg {
    pub collection: String,
    pub fields: serde_json::Value,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DurabilityArg {
    Full,
    Normal,
}

/// What identifies the engine of a file: a second open must agree on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub server_url: Option<String>,
    pub spaces: Vec<String>,
}

impl OpenConfig {
    pub(crate) fn identity(&self) -> Identity {
        let mut spaces = self.spaces.clone();
        spaces.sort();
        spaces.dedup();
        Identity {
            server_url: self
                .server_url
                .as_deref()
                .map(|u| u.trim_end_matches('/').to_owned()),
            spaces,
        }
    }

    pub(crate) fn token_wait(&self) -> Duration {
        Duration::from_millis(self.token_wait_ms.unwrap_or(30_000))
    }

    /// The file's canonical path (its folder resolved; the file itself may not exist yet), so
    /// two spellings of one file share one engine.
    pub(crate) fn canonical_path(&self) -> Result<PathBuf, FfiError> {
        let path = Path::new(&self.path);
        let name = path
            .file_name()
            .ok_or_else(|| FfiError::invalid(format!("path {:?} names no file", self.path)))?;
        let folder = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let folder = folder.canonicalize().map_err(|e| {
            FfiError::invalid(format!(
                "the folder of {:?} cannot be used: {e}; create it first",
                self.path
            ))
        })?;
        Ok(folder.join(name))
    }

    /// The client configuration at `path`, with `tokens`.
    pub(crate) fn client_config(
        &self,
        path: PathBuf,
        tokens: std::sync::Arc<dyn tidesync_client::TokenProvider>,
    ) -> Result<ClientConfig, FfiError> {
        let mut config = match &self.server_url {
            Some(url) => {
                let spaces = self
                    .spaces
                    .iter()
                    .map(SpaceName::new)
                    .collect::<Result<Vec<_>, _>>()?;
                ClientConfig::new(path, url.clone(), spaces, tokens)
            }
            None if self.spaces.is_empty() => ClientConfig::local(path),
            None => {
                return Err(FfiError::invalid(
                    "\"spaces\" needs a \"server_url\" to sync with",
                ))
            }
        };
        if let Some(d) = self.durability {
            config.store.durability = match d {
                DurabilityArg::Full => Durability::Full,
                DurabilityArg::Normal => Durability::Normal,
            };
        }
        if let Some(ms) = self.busy_timeout_ms {
            config.store.busy_timeout = Duration::from_millis(ms);
        }
        if let Some(bytes) = self.max_doc_bytes {
            config.store.max_doc_bytes = bytes;
        }
        config.store.session = match self.session.as_deref() {
            None | Some("fresh") => SessionRestore::Fresh,
            Some("keep") => SessionRestore::Keep,
            Some(id) => SessionRestore::Restore(id.to_owned()),
        };
        if let Some(n) = self.push_batch {
            config.push_batch = n;
        }
        if let Some(n) = self.pull_limit {
            config.pull_limit = n;
        }
        if let Some(on) = self.compression {
            config.compression = on;
        }
        if let Some(ms) = self.request_timeout_ms {
            config.request_timeout = Duration::from_millis(ms);
        }
        if let Some(online) = self.start_online {
            config.start_online = online;
        }
        let indexes = self
            .indexes
            .iter()
            .enumerate()
            .map(|(i, index)| {
                let collection = CollectionName::new(&index.collection)
                    .map_err(|e| FfiError::invalid(format!("indexes[{i}].collection: {e}")))?;
                IndexSpec::from_json(collection, &index.fields)
                    .map_err(|e| FfiError::invalid(format!("indexes[{i}]: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        config.store.indexes = Indexes::Declared(indexes);
        if let Some(ms) = self.live_query_throttle_ms {
            config.live_query_throttle = Duration::from_millis(ms);
        }
        if let Some(ms) = self.external_writes_poll_ms {
            config.external_writes_poll = (ms > 0).then(|| Duration::from_millis(ms));
        }
        Ok(config)
    }
}
