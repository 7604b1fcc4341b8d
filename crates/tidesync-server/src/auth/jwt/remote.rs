//! [`RemoteKeys`]: a JWKS fetched from a URL, cached, refreshed, and fetched again for a `kid`
//! it does not hold — never more often than `jwks_min_refresh`.
//!
//! - A request finds its key in the cached set without waiting for anything but a read lock.
//! - Once the set is older than `jwks_refresh`, the request that notices starts a fetch in
//!   the background and is verified with the set it has (the provider publishes new keys
//!   before it signs with them, so the old set is still good meanwhile).
//! - A `kid` the set does not hold (a rotation the cache has not seen) waits for a fetch,
//!   unless the last fetch is younger than `jwks_min_refresh`: a flood of made-up kids costs
//!   the provider at most one fetch per interval. Requests that wait share one fetch.
//! - A failed fetch keeps the old set (and is logged); with no set at all the request is
//!   `503 unavailable`, retried by the client.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::config::JwtAlgorithm;
use super::keys::{KeySet, Lookup};

/// The most a JWKS response may hold (real ones are a few KiB).
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// The time one fetch may take, connection included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The set as last fetched.
#[derive(Debug)]
struct Cached {
    keys: KeySet,
    fetched_at: Instant,
    /// Counts successful fetches, so a request that waited for a fetch knows whether
    /// another request made one meanwhile.
    generation: u64,
}

/// A JWKS URL's keys. Shared by every request (inside the verifier's `Arc`).
#[derive(Debug)]
pub(crate) struct RemoteKeys {
    url: reqwest::Url,
    algorithm: JwtAlgorithm,
    client: reqwest::Client,
    refresh: Duration,
    min_refresh: Duration,
    cached: RwLock<Option<Arc<Cached>>>,
    /// Held while fetching, so that concurrent callers share one fetch.
    fetching: tokio::sync::Mutex<()>,
    /// When the last fetch was attempted, successful or not.
    last_attempt: std::sync::Mutex<Option<Instant>>,
    /// A background refresh is under way.
    refreshing: AtomicBool,
}

/// Why the keys could not be fetched (logged; the client only hears `unavailable`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("JWKS {url}: {message}")]
pub struct JwksFetchError {
    url: String,
    message: String,
}

impl RemoteKeys {
    pub(crate) fn new(
        url: reqwest::Url,
        algorithm: JwtAlgorithm,
        refresh: Duration,
        min_refresh: Duration,
    ) -> Result<RemoteKeys, String> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .user_agent(concat!("tidesync-server/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client for jwks_url: {e}"))?;
        Ok(RemoteKeys {
            url,
            algorithm,
            client,
            refresh,
            min_refresh,
            cached: RwLock::new(None),
            fetching: tokio::sync::Mutex::new(()),
            last_attempt: std::sync::Mutex::new(None),
            refreshing: AtomicBool::new(false),
        })
    }

    /// Whether a fetch was attempted less than `min_refresh` ago.
    fn attempted_recently(&self) -> bool {
        self.last_attempt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() < self.min_refresh)
    }

    fn note_attempt(&self) {
        *self
            .last_attempt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
    }

    fn current(&self) -> Option<Arc<Cached>> {
        self.cached
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The key for a token's `kid`, fetching the set when the rules above say so. `Err` is
    /// a fetch that failed with no set to fall back on.
    pub(crate) async fn find(
        self: &Arc<Self>,
        kid: Option<&str>,
    ) -> Result<Lookup, JwksFetchError> {
        let Some(cached) = self.current() else {
            let cached = self.fetch_unless_recent(None).await?;
            return Ok(cached.keys.find(kid));
        };
        if cached.fetched_at.elapsed() >= self.refresh {
            self.refresh_in_background();
        }
        match cached.keys.find(kid) {
            Lookup::UnknownKid => {
                let after = self.fetch_unless_recent(Some(cached.generation)).await;
                // A failed fetch leaves the set as it was: the kid is still unknown.
                Ok(after.map_or(Lookup::UnknownKid, |c| c.keys.find(kid)))
            }
            lookup => Ok(lookup),
        }
    }

    /// Fetches the set now (at start, to fail early and log what it holds): how many keys.
    pub(crate) async fn fetch_now(&self) -> Result<usize, JwksFetchError> {
        let _fetching = self.fetching.lock().await;
        self.note_attempt();
        let keys = self.fetch().await?;
        Ok(self.store(keys).keys.len())
    }

    /// Starts one background fetch unless one is under way or was just attempted.
    fn refresh_in_background(self: &Arc<Self>) {
        if self.attempted_recently() || self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let generation = this.current().map(|c| c.generation);
            if let Err(err) = this.fetch_unless_recent(generation).await {
                tracing::warn!(error = %err, "JWKS refresh failed; keeping the cached keys");
            }
            this.refreshing.store(false, Ordering::Release);
        });
    }

    /// The set after a fetch — or without one when another request fetched since the
    /// caller saw `seen` (a generation), or when the last attempt is younger than
    /// `min_refresh`. Concurrent callers wait for one fetch.
    async fn fetch_unless_recent(&self, seen: Option<u64>) -> Result<Arc<Cached>, JwksFetchError> {
        let _fetching = self.fetching.lock().await;
        let current = self.current();
        if let Some(cached) = &current {
            if Some(cached.generation) != seen {
                return Ok(cached.clone());
            }
        }
        if self.attempted_recently() {
            return current.ok_or_else(|| {
                self.error(format!(
                    "the last fetch failed less than {:?} ago (jwks_min_refresh)",
                    self.min_refresh
                ))
            });
        }
        self.note_attempt();
        match self.fetch().await {
            Ok(keys) => Ok(self.store(keys)),
            Err(err) => {
                tracing::warn!(error = %err, "JWKS fetch failed");
                current.ok_or(err)
            }
        }
    }

    fn store(&self, keys: KeySet) -> Arc<Cached> {
        let mut cached = self
            .cached
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let generation = cached.as_ref().map_or(1, |c| c.generation + 1);
        tracing::info!(url = %self.url, keys = keys.len(), generation, "JWKS fetched");
        let fresh = Arc::new(Cached {
            keys,
            fetched_at: Instant::now(),
            generation,
        });
        *cached = Some(fresh.clone());
        fresh
    }

    /// One GET of the URL, its body bounded, parsed into the keys usable here.
    async fn fetch(&self) -> Result<KeySet, JwksFetchError> {
        let response = self
            .client
            .get(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| self.error(format!("request failed: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            return Err(self.error(format!("answered {status}")));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(self.error(format!("the body is larger than {MAX_JWKS_BYTES} bytes")));
        }
        let mut body = Vec::new();
        let mut chunks = response.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| self.error(format!("reading the body failed: {e}")))?;
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(self.error(format!("the body is larger than {MAX_JWKS_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        KeySet::jwks(self.algorithm, &body).map_err(|e| self.error(e))
    }

    fn error(&self, message: impl Into<String>) -> JwksFetchError {
        JwksFetchError {
            url: self.url.to_string(),
            message: message.into(),
        }
    }
}
