//! How a store is opened.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::restoration::{RestorationLimits, RestorationSchema};

/// How hard a returned write is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// A write that returned survives power loss (`synchronous=FULL`). The default.
    #[default]
    Full,
    /// A write that returned survives an app crash, but the last writes may be lost on power
    /// loss (`synchronous=NORMAL` in WAL mode). Several times faster per commit.
    Normal,
}

/// Where session restoration state comes from at this launch (see DESIGN §7).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SessionRestore {
    /// The app starts fresh: session-lifetime restoration state is cleared.
    #[default]
    Fresh,
    /// The OS killed the app and is restoring it, handing back the session id the app saved
    /// ([`crate::Store::session_id`]). Session state is kept if the id matches the stored one.
    Restore(String),
    /// Keep whatever session state the file holds (tools that inspect or edit a database,
    /// not an app launch).
    Keep,
}

/// Milliseconds since the Unix epoch. Injected so tests can move the wall clock (skew,
/// steps backwards) without touching the system clock.
#[derive(Clone)]
pub struct WallClock(Arc<dyn Fn() -> u64 + Send + Sync>);

impl WallClock {
    /// A clock reading `now`.
    pub fn new(now: impl Fn() -> u64 + Send + Sync + 'static) -> WallClock {
        WallClock(Arc::new(now))
    }

    /// The system clock.
    pub fn system() -> WallClock {
        WallClock::new(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        })
    }

    /// The current reading.
    pub fn now_ms(&self) -> u64 {
        (self.0)()
    }
}

impl fmt::Debug for WallClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WallClock")
    }
}

/// Options for [`crate::Store::open`]. `StoreConfig::default()` is right for most apps.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Commit durability. Default [`Durability::Full`].
    pub durability: Durability,
    /// How long a write waits for another connection's lock before failing with
    /// [`crate::StoreError::Busy`]. Default 5 s.
    pub busy_timeout: std::time::Duration,
    /// Largest document (as JSON) a local write accepts. Default 1 MiB.
    pub max_doc_bytes: usize,
    /// Whether this launch restores session state.
    pub session: SessionRestore,
    /// Registered restoration entry types and their migrations.
    pub restoration_schema: Arc<RestorationSchema>,
    /// Restoration size limits.
    pub restoration_limits: RestorationLimits,
    /// The wall clock that feeds the hybrid logical clock.
    pub wall_clock: WallClock,
    /// Indexes for the app's queries, made exactly the declared ones at open (new ones
    /// created, dropped ones removed). Default: none declared.
    pub indexes: crate::query::Indexes,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            durability: Durability::Full,
            busy_timeout: std::time::Duration::from_secs(5),
            max_doc_bytes: 1 << 20,
            session: SessionRestore::Fresh,
            restoration_schema: Arc::new(RestorationSchema::default()),
            restoration_limits: RestorationLimits::default(),
            wall_clock: WallClock::system(),
            indexes: crate::query::Indexes::default(),
        }
    }
}
