//! The history horizon: how long the server remembers deletes and rejections, and the
//! background task that forgets them.
//!
//! Deleted records stay as tombstones so pulls can hand out the delete, and refused
//! mutations stay remembered so a retried push gets its rejection again. Both would grow
//! forever; [`Pruner`] deletes those older than [`HorizonConfig::retain_deleted`] every
//! [`HorizonConfig::prune_interval`], in batches of [`HorizonConfig::prune_batch`] rows (one
//! transaction each, through [`Storage::prune`]). A client whose cursor is behind the
//! pruned deletes is answered `cursor_reset` and downloads the space again, keeping its
//! pending writes (docs/operations.md, "History horizon").
//!
//! What it does not do: decide what a batch deletes (that is [`crate::storage::Prune`]'s,
//! shared by every backend), or run inside the storage: whoever serves the state runs it
//! ([`crate::serve`]), so a test can also run one pass directly ([`Pruner::run_once`]) with
//! its own clock.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tokio::sync::watch;

use crate::storage::{Prune, Pruned, Storage, StorageError};

/// The largest `prune_batch`: a batch is one transaction, and pushes wait behind it.
pub const MAX_PRUNE_BATCH: u32 = 100_000;

/// The `[horizon]` settings:
///
/// ```toml
/// [horizon]
/// retain_deleted = "30d"
/// prune_interval = "1m"
/// prune_batch = 1000
/// ```
///
/// `retain_deleted` must exceed how long a client can stay offline with an unacknowledged
/// push: a retry later than that is acknowledged without the rejection it had, and a write
/// to a record deleted (and pruned) meanwhile lands on a fresh record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HorizonConfig {
    /// How long tombstones and remembered rejections are kept (default 30 days).
    #[serde(with = "humantime_serde")]
    pub retain_deleted: Duration,
    /// How often the pruner runs (default 1 minute).
    #[serde(with = "humantime_serde")]
    pub prune_interval: Duration,
    /// Rows deleted per transaction (default 1,000).
    pub prune_batch: u32,
}

impl Default for HorizonConfig {
    fn default() -> HorizonConfig {
        HorizonConfig {
            retain_deleted: Duration::from_secs(30 * 24 * 60 * 60),
            prune_interval: Duration::from_secs(60),
            prune_batch: 1_000,
        }
    }
}

/// A `[horizon]` setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HorizonConfigError {
    /// `retain_deleted` is zero.
    #[error("horizon.retain_deleted is 0: deletes would be forgotten at once and every client behind the newest write would download its spaces again; set it longer than a client may stay offline, e.g. \"30d\"")]
    NoRetention,
    /// `prune_interval` is zero.
    #[error("horizon.prune_interval is 0: the pruner would never pause; set it to e.g. \"1m\"")]
    NoInterval,
    /// `prune_batch` is zero or too large.
    #[error("horizon.prune_batch is {0}: give 1 to {MAX_PRUNE_BATCH} rows per transaction (each batch holds the writer while it runs), e.g. 1000")]
    Batch(u32),
}

impl HorizonConfig {
    /// Checks the settings; the error says which one is wrong and what to set.
    pub fn validate(&self) -> Result<(), HorizonConfigError> {
        if self.retain_deleted.is_zero() {
            return Err(HorizonConfigError::NoRetention);
        }
        if self.prune_interval.is_zero() {
            return Err(HorizonConfigError::NoInterval);
        }
        if self.prune_batch == 0 || self.prune_batch > MAX_PRUNE_BATCH {
            return Err(HorizonConfigError::Batch(self.prune_batch));
        }
        Ok(())
    }

    /// The cutoff of a pass at `now_ms`: rows written at or before it are pruned.
    pub fn cutoff(&self, now_ms: u64) -> u64 {
        let retain = u64::try_from(self.retain_deleted.as_millis()).unwrap_or(u64::MAX);
        now_ms.saturating_sub(retain)
    }
}

/// Where a [`Pruner`] reads the time (ms since the epoch).
pub type PruneClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock, in ms since the epoch.
pub fn system_clock() -> PruneClock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    })
}

/// Prunes a storage's history by a [`HorizonConfig`].
pub struct Pruner {
    storage: Arc<dyn Storage>,
    config: HorizonConfig,
    clock: PruneClock,
}

impl std::fmt::Debug for Pruner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pruner")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Pruner {
    /// A pruner of `storage` on the system clock.
    pub fn new(storage: Arc<dyn Storage>, config: HorizonConfig) -> Pruner {
        Pruner {
            storage,
            config,
            clock: system_clock(),
        }
    }

    /// The same pruner reading the time from `clock`.
    pub fn with_clock(self, clock: PruneClock) -> Pruner {
        Pruner { clock, ..self }
    }

    /// One pass: batches at the cutoff of now until one comes back short. Returns what it
    /// deleted; a failing batch ends the pass (the batches before it stay committed).
    pub async fn run_once(&self) -> Result<Pruned, StorageError> {
        let cutoff = self.config.cutoff((self.clock)());
        let batch = Prune {
            cutoff_ms: cutoff,
            rejections_cutoff_ms: cutoff,
            batch: self.config.prune_batch,
        };
        let mut total = Pruned::default();
        loop {
            let pruned = self.storage.prune(batch).await?;
            total.add(pruned);
            if !pruned.filled(&batch) {
                return Ok(total);
            }
            // Requests queued meanwhile go first.
            tokio::task::yield_now().await;
        }
    }

    /// Runs a pass every `prune_interval` (the first one at once) until `shutdown` turns
    /// `true`. Failures are logged and retried at the next interval.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.config.prune_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                biased;
                // Cancel-safe: a dropped `wait_for` loses nothing (the value stays).
                _ = shutdown.wait_for(|stop| *stop) => return,
                // Cancel-safe: a pass stopped between batches leaves them committed; one
                // stopped inside a batch is rolled back (PostgreSQL) or finished by the
                // writer (SQLite).
                _ = async {
                    tick.tick().await;
                    match self.run_once().await {
                        Ok(pruned) => {
                            if failing {
                                tracing::info!("pruning works again");
                                failing = false;
                            }
                            if pruned != Pruned::default() {
                                tracing::info!(
                                    tombstones = pruned.tombstones,
                                    rejections = pruned.rejections,
                                    "pruned history older than the horizon"
                                );
                            }
                        }
                        Err(e) if !failing => {
                            failing = true;
                            tracing::warn!(error = %e, "pruning failed; retrying every prune_interval");
                        }
                        Err(_) => {}
                    }
                } => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_toml_section_reads_with_its_defaults() {
        let full: HorizonConfig = toml::from_str(
            "retain_deleted = \"7d\"\nprune_interval = \"90s\"\nprune_batch = 500\n",
        )
        .expect("valid");
        assert_eq!(
            full,
            HorizonConfig {
                retain_deleted: Duration::from_secs(7 * 86_400),
                prune_interval: Duration::from_secs(90),
                prune_batch: 500,
            }
        );
        let empty: HorizonConfig = toml::from_str("").expect("valid");
        assert_eq!(empty, HorizonConfig::default());
        assert_eq!(empty.retain_deleted, Duration::from_secs(30 * 86_400));
        assert_eq!(empty.validate(), Ok(()));
        let tiny: HorizonConfig = toml::from_str("retain_deleted = \"200ms\"").expect("valid");
        assert_eq!(tiny.retain_deleted, Duration::from_millis(200));
    }

    #[test]
    fn unknown_fields_and_bad_durations_are_refused() {
        let err = toml::from_str::<HorizonConfig>("retain = \"30d\"")
            .expect_err("unknown")
            .to_string();
        assert!(err.contains("unknown field `retain`"), "{err}");
        let err = toml::from_str::<HorizonConfig>("retain_deleted = \"a month\"")
            .expect_err("bad duration")
            .to_string();
        assert!(err.contains("retain_deleted"), "{err}");
    }

    #[test]
    fn settings_that_cannot_work_say_what_to_set() {
        let ok = HorizonConfig::default();
        let cases = [
            (
                HorizonConfig {
                    retain_deleted: Duration::ZERO,
                    ..ok
                },
                "\"30d\"",
            ),
            (
                HorizonConfig {
                    prune_interval: Duration::ZERO,
                    ..ok
                },
                "\"1m\"",
            ),
            (
                HorizonConfig {
                    prune_batch: 0,
                    ..ok
                },
                "1 to 100000",
            ),
            (
                HorizonConfig {
                    prune_batch: MAX_PRUNE_BATCH + 1,
                    ..ok
                },
                "1 to 100000",
            ),
        ];
        for (config, hint) in cases {
            let err = config.validate().expect_err("invalid").to_string();
            assert!(err.starts_with("horizon."), "{err}");
            assert!(err.contains(hint), "{err}");
        }
    }

    #[test]
    fn the_cutoff_is_now_minus_the_retention_and_never_wraps() {
        let config = HorizonConfig {
            retain_deleted: Duration::from_millis(200),
            ..HorizonConfig::default()
        };
        assert_eq!(config.cutoff(1_000), 800);
        assert_eq!(config.cutoff(100), 0);
    }
}
