//! The embeddable tidesync client: the one crate an app uses.
//!
//! [`Client::open`] opens the local SQLite store and starts a background sync thread. Every
//! call is synchronous and local: writes land in the store (view + outbox, one transaction)
//! and return at once; the sync thread pushes the outbox to the server exactly once, pulls
//! other devices' changes, listens to pokes, and backs off while offline. The app needs no
//! async runtime: the thread owns a private one. Restoration state (drafts, navigation)
//! lives next to the data and can join a data transaction.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use serde_json::json;
//! use tidesync_client::{Client, ClientConfig, ClientEvent, RecordKey, SpaceName, StaticToken};
//!
//! let config = ClientConfig::new(
//!     "app.db",
//!     "http://127.0.0.1:8787",
//!     vec![SpaceName::new("user:alice")?],
//!     Arc::new(StaticToken("tsk_...".into())),
//! );
//! let client = Client::open(config)?;
//! let key = RecordKey::parse("user:alice", "todos", "t1")?;
//! client.put(&key, json!({"title": "Buy milk"}).as_object().unwrap().clone())?;
//! let status = client.wait_synced(Duration::from_secs(30))?;
//! println!("synced, last at {:?}", status.last_synced_at_ms);
//! for event in client.subscribe() {
//!     if let ClientEvent::Status(status) = event {
//!         println!("{:?} pending={}", status.phase, status.pending);
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The sync logic itself is the [`driver`]: no I/O, no threads, no clock. The client runs
//! it over HTTP ([`transport`]) on its sync thread; the deterministic simulation runs the
//! same driver over a simulated network.
//!
//! What it does not do: it does not interpret the app's data (documents are JSON objects),
//! and it never blocks a call on the network (but the `wait_*` calls, which exist to wait).

mod client;
mod config;
pub mod driver;
mod error;
mod live;
mod notify;
mod runtime;
mod status;
pub mod transport;

pub use client::{BucketContents, Client};
pub use config::{ClientConfig, StaticToken, TokenProvider};
pub use error::ClientError;
pub use live::{LiveQuery, LiveQueryStats, QueryUpdate, Watch};
pub use status::{ClientEvent, DownloadProgress, Status, UploadProgress};

// Everything an app names, from one crate.
pub use tidesync_core::sync::{
    BackoffPolicy, Connectivity, FailureKind, Phase, Reachability, SyncConfig, SyncError,
};
pub use tidesync_protocol::{
    collection_path, ClientId, CollectionName, Cursor, Doc, ErrorCode, FieldConflict, Hlc,
    Mutation, Op, RecordId, RecordKey, SpaceName, ValidationError, Winner,
};
pub use tidesync_store::query::{self, IndexField, IndexSpec, Indexes};
pub use tidesync_store::restoration;
pub use tidesync_store::{
    Conflict, Durability, HistoryLoss, ListOptions, MutationState, OutboxEntry, Query, QueryError,
    QueryPage, Record, RecordPage, Rejection, Resolution, SessionRestore, StoreConfig, StoreCounts,
    StoreError, WallClock, WriteReceipt, WriteTx,
};

/// The README's code blocks, compiled as doctests so they stay true.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
