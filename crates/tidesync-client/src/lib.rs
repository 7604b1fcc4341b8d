//! The embeddable tidesync client: the public Rust API apps use.
//!
//! [`Client::open`] opens the local SQLite store and starts a background sync thread. Every
//! call is synchronous and local: writes land in the store (view + outbox, one transaction)
//! and return at once; the sync thread pushes the outbox to the server exactly once, pulls
//! other devices' changes, listens to pokes, and backs off while offline. The app needs no
//! async runtime: the thread owns a private one.
//!
//! ```no_run
//! use std::sync::Arc;
//! use serde_json::json;
//! use tidesync_client::{Client, ClientConfig, ClientEvent, StaticToken};
//! use tidesync_protocol::{RecordKey, SpaceName};
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
//! for event in client.subscribe() {
//!     if let ClientEvent::Status(status) = event {
//!         println!("{:?} pending={}", status.phase, status.pending);
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What it does not do: it does not interpret the app's data (documents are JSON objects),
//! and it never blocks a call on the network.

mod client;
mod config;
mod error;
mod notify;
mod runtime;
mod status;
mod transport;

pub use client::Client;
pub use config::{ClientConfig, StaticToken, TokenProvider};
pub use error::ClientError;
pub use status::{ClientEvent, DownloadProgress, Status, UploadProgress};
pub use tidesync_core::sync::{
    Connectivity, FailureKind, Phase, Reachability, SyncConfig, SyncError,
};

/// The README's code blocks, compiled as doctests so they stay true.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
