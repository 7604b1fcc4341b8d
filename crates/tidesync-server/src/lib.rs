//! The tidesync sync server.
//!
//! - `POST /v1/push`: exactly-once application of client mutations, per-collection conflict
//!   policies, per-mutation results.
//! - `POST /v1/pull`: changes since a cursor, paginated, with `acked_through`.
//! - `GET /v1/events`: Server-Sent Events, a data-less poke per space when its version moves.
//! - Bearer API tokens mapped to a user and the spaces it may read and write.
//!
//! The HTTP layer ([`app`]) knows nothing about databases; the [`storage::Storage`] trait
//! knows nothing about HTTP. The embedded default backend is SQLite
//! ([`storage::sqlite::SqliteStorage`]): one file, WAL, a writer thread that commits pushes in
//! groups, a pool of reader connections, all off the async executor.
//!
//! What it does not do: no TLS (put it behind a reverse proxy), no record-level access rules
//! beyond spaces.

pub mod app;
pub mod auth;
pub mod config;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod routes;
pub mod rules;
pub mod serve;
pub mod storage;
pub mod validate;

pub use app::{app, AppState};
pub use config::{Limits, MergeRules, Policies, Policy};
pub use error::ApiError;
pub use serve::serve;
