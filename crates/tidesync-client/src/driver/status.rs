//! The status the driver publishes: the machine's part (from `Instruction::Status`), the
//! progress of the exchange under way, and the store's counts (kept in memory by the store).

use tidesync_core::sync::Phase;
use tidesync_store::{Store, StoreCounts};

use super::batch::Acked;
use super::{Driver, Output};
use crate::status::{ClientEvent, Status, UploadProgress};

/// Upload progress since local work was found to push. The total is not kept: it is what
/// was done plus what the store still has unpushed, so writes made during the upload join
/// it by themselves.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Upload {
    done: u64,
    done_bytes: u64,
}

impl Upload {
    pub(crate) fn add(&mut self, acked: Acked) {
        self.done += acked.mutations;
        self.done_bytes += acked.bytes;
    }

    fn progress(self, counts: &StoreCounts) -> UploadProgress {
        UploadProgress {
            done: self.done,
            total: self.done + counts.unpushed,
            done_bytes: self.done_bytes,
            total_bytes: self.done_bytes + counts.unpushed_bytes,
        }
    }
}

impl Driver {
    /// Composes the status and emits it if anything changed.
    pub(super) fn publish_status(&mut self, store: &mut Store, out: &mut Output) {
        let counts = match store.counts() {
            Ok(counts) => counts,
            Err(e) => {
                // Keep the last status: the next input tries again.
                tracing::warn!(error = %e, "cannot read the store's counts for the status");
                return;
            }
        };
        let engine = &self.engine;
        let status = Status {
            connectivity: engine.connectivity,
            phase: engine.phase,
            upload: self
                .upload
                .filter(|_| engine.phase == Phase::Uploading)
                .map(|u| u.progress(&counts)),
            download: self.download.filter(|_| engine.phase == Phase::Downloading),
            pending: counts.pending,
            oldest_pending_at_ms: counts.oldest_pending_at_ms,
            conflicts: counts.conflicts,
            rejections: counts.rejections,
            last_synced_at_ms: counts.last_synced_at_ms,
            has_synced: counts.has_synced,
            last_error: engine.last_error.clone(),
            next_retry_at_ms: engine.next_retry_at_ms,
            history_loss: self.history_loss,
        };
        if self.published.as_ref() == Some(&status) {
            return;
        }
        log_transition(self.published.as_ref(), &status);
        self.published = Some(status.clone());
        out.events.push(ClientEvent::Status(status));
    }
}

/// One log line per change of connectivity or error kind, never one per retry.
fn log_transition(previous: Option<&Status>, status: &Status) {
    let kind = |s: &Status| s.last_error.as_ref().map(|e| (e.kind, e.code.clone()));
    let before = previous.map(|s| (s.connectivity, kind(s)));
    let now = (status.connectivity, kind(status));
    if before.as_ref() == Some(&now) {
        return;
    }
    match &status.last_error {
        Some(error) if previous.and_then(kind) != kind(status) => {
            let what = if error.needs_attention {
                "sync failing; waiting for the app or the user to act"
            } else {
                "sync failing; retrying with backoff"
            };
            tracing::warn!(
                connectivity = ?status.connectivity,
                kind = error.kind.as_str(),
                code = error.code.as_deref().unwrap_or(""),
                error = %error.message,
                "{what}"
            );
        }
        _ => tracing::info!(
            connectivity = ?status.connectivity,
            phase = ?status.phase,
            "sync connectivity changed"
        ),
    }
}

impl Driver {
    /// Emits the status if it changed, with no input (at start, and for a client that never
    /// starts because it has no server).
    pub fn refresh_status(&mut self, store: &mut Store) -> Output {
        let mut out = Output::default();
        self.publish_status(store, &mut out);
        out
    }
}
