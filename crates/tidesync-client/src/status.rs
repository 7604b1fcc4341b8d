//! What the app is told: a status snapshot (emitted when it changes) and events.

use tidesync_core::sync::{Connectivity, Phase, SyncError};
use tidesync_protocol::{CollectionName, ErrorCode, FieldConflict, RecordKey, SpaceName};
use tidesync_store::HistoryLoss;

/// Progress of the current upload (from the moment local work was found to push).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UploadProgress {
    /// Mutations acknowledged so far.
    pub done: u64,
    /// Mutations to push in all.
    pub total: u64,
    /// Bytes (mutation JSON) acknowledged so far.
    pub done_bytes: u64,
    /// Bytes to push in all (estimate from the stored mutations).
    pub total_bytes: u64,
}

/// Progress of the current download.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DownloadProgress {
    /// Changes received so far.
    pub received: u64,
    /// Changes the server still has (from the last page).
    pub remaining: u64,
}

/// Everything a sync indicator needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Can the server be reached.
    pub connectivity: Connectivity,
    /// What the engine is doing.
    pub phase: Phase,
    /// Upload progress while uploading.
    pub upload: Option<UploadProgress>,
    /// Download progress while downloading.
    pub download: Option<DownloadProgress>,
    /// Local mutations not yet confirmed.
    pub pending: u64,
    /// Creation time (ms since the epoch) of the oldest of them; see [`Status::oldest_pending_age_ms`].
    pub oldest_pending_at_ms: Option<u64>,
    /// Unresolved conflicts.
    pub conflicts: u64,
    /// Rejected mutations awaiting retry or discard.
    pub rejections: u64,
    /// When the last complete pull finished.
    pub last_synced_at_ms: Option<u64>,
    /// Whether a complete pull ever finished.
    pub has_synced: bool,
    /// The last error, until the next success.
    pub last_error: Option<SyncError>,
    /// When the next attempt happens, while backing off.
    pub next_retry_at_ms: Option<u64>,
    /// Set once the server was found to have forgotten part of this device's history in
    /// this session (restored from an older backup): what was re-sent and what was lost
    /// (see [`ClientEvent::ServerForgot`]).
    pub history_loss: Option<HistoryLoss>,
}

impl Status {
    /// Nothing pending, the engine idle, and a complete pull done: everything written
    /// locally is on the server and in the base, and the base is as fresh as the last pull.
    pub fn is_synced(&self) -> bool {
        self.pending == 0 && self.phase == Phase::Idle && self.has_synced
    }

    /// How long the oldest pending mutation has waited, at `now_ms`.
    pub fn oldest_pending_age_ms(&self, now_ms: u64) -> Option<u64> {
        self.oldest_pending_at_ms
            .map(|at| now_ms.saturating_sub(at))
    }
}

/// Things that happened, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// The status changed.
    Status(Status),
    /// The server applied these mutations.
    Acked {
        /// Their seqs.
        seqs: Vec<u64>,
    },
    /// These mutations are in the base now; they left the outbox.
    Confirmed {
        /// Their seqs.
        seqs: Vec<u64>,
    },
    /// The server refused a mutation; its local effect was rolled back.
    Rejected {
        /// Its seq.
        seq: u64,
        /// Why, as a code.
        code: ErrorCode,
        /// Why, in words.
        message: String,
    },
    /// A mutation met a concurrent change (see `Client::conflicts`).
    Conflict {
        /// The mutation.
        seq: u64,
        /// The record.
        key: RecordKey,
        /// The contested fields.
        fields: Vec<FieldConflict>,
    },
    /// Records of a collection changed (pulled, rolled back, or written locally): refresh
    /// the lists that show them.
    RecordsChanged {
        /// The space.
        space: SpaceName,
        /// The collection.
        collection: CollectionName,
        /// How many records changed.
        count: usize,
    },
    /// The server had compacted past this device's cursor: the local base was dropped and is
    /// being downloaded again (pending local changes are kept). Any collection may change:
    /// refresh everything shown.
    BaseReset,
    /// The server had forgotten part of this device's history (it was restored from an
    /// older backup; it answered `seq_gap` below what it had acknowledged). Every change
    /// still held here after the server's `last_seq` is pushed again (applied once), and
    /// the server's state is downloaded again. `lost` counts changes the server had applied
    /// and this device had already let go of: they are gone from the server, and leave
    /// this device's view with the new download. Tell the user if `lost > 0`.
    ServerForgot(HistoryLoss),
    /// Another connection to the database file (another process, an app extension, a
    /// background task) committed: its writes are pushed like the app's own, and anything
    /// shown may have changed (live queries re-run by themselves).
    ChangedElsewhere,
}
