//! The client's error type.

use tidesync_store::StoreError;

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
}

impl ClientError {
    /// A stable code (for FFI and logs).
    pub fn code(&self) -> &'static str {
        match self {
            ClientError::Store(e) => e.code(),
            ClientError::Config(_) => "config",
            ClientError::Thread(_) => "thread",
        }
    }
}
