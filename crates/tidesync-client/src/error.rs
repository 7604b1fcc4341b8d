//! The client's error type.

use std::time::Duration;

use tidesync_core::sync::SyncError;
use tidesync_store::StoreError;

use crate::status::Status;

/// What a client call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The local store failed (see the inner error for what to do).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The configuration cannot work.
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// The sync thread could not be started.
    #[error("cannot start the sync thread: {0}")]
    Thread(String),
    /// A wait for sync ended on an error the engine will not get past by retrying (a
    /// refusal, credentials, a corrupt file): the app or the user must act.
    #[error("sync needs attention ({} error): {}", .0.kind.as_str(), .0.message)]
    SyncNeedsAttention(Box<SyncError>),
    /// A wait for sync did not finish in time; `last` is the status it ended on.
    #[error("sync did not finish within {waited:?}{}", describe(.last.as_deref()))]
    Timeout {
        /// How long it waited.
        waited: Duration,
        /// The last status seen.
        last: Option<Box<Status>>,
    },
    /// The client was opened without a server: it never syncs.
    #[error("this client has no server to sync with (opened local only)")]
    LocalOnly,
}

fn describe(status: Option<&Status>) -> String {
    match status {
        None => String::new(),
        Some(s) => {
            let phase = format!("{:?}", s.phase).to_lowercase();
            let mut text = format!(" ({phase}, {} pending", s.pending);
            if let Some(e) = &s.last_error {
                text.push_str(&format!("; last error: {}", e.message));
            }
            text.push(')');
            text
        }
    }
}

impl ClientError {
    /// A stable code (for FFI and logs): the store error's own code for store errors.
    pub fn code(&self) -> &'static str {
        match self {
            ClientError::Store(e) => e.code(),
            ClientError::Config(_) => "config",
            ClientError::Thread(_) => "thread",
            ClientError::SyncNeedsAttention(_) => "sync_needs_attention",
            ClientError::Timeout { .. } => "timeout",
            ClientError::LocalOnly => "local_only",
        }
    }
}
