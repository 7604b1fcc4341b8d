//! The tidesync sync server.
//!
//! - `POST /v1/push`: exactly-once application of client mutations, per-collection conflict
//!   policies, per-mutation results.
//! - `POST /v1/pull`: changes since a cursor, paginated, with `acked_through`.
//! - `GET /v1/events`: Server-Sent Events, a data-less poke per space when its version moves.
//! - Bearer API tokens mapped to a user and the spaces it may read and write.
//! - `GET /admin`: an admin dashboard behind an admin token, off by default ([`admin`]).
//! - Bearer JWTs from the app's own sign-in (HS256, RS256, ES256; a secret, a PEM key or a
//!   JWKS), their claims mapped to a user and spaces ([`auth::jwt`]).
//!
//! Entry points: [`app`] (the axum router over an [`AppState`], what tests drive without a
//! socket), [`serve`] (the router on a listener, with time limits and graceful shutdown),
//! [`EmbeddedServer`] (the server on a loopback port of this process, for the demo, examples,
//! tests and benchmarks), and [`SyncService`] (pushes and pulls from request to answer,
//! without HTTP: what the routes and the deterministic simulation call).
//!
//! The HTTP layer knows nothing about databases; the [`storage::Storage`] trait knows
//! nothing about HTTP. The embedded default backend is SQLite
//! ([`storage::sqlite::SqliteStorage`]): one file, WAL, a writer thread that commits pushes in
//! groups, a pool of reader connections, all off the async executor.
//! [`storage::postgres::PostgresStorage`] runs several stateless nodes on one PostgreSQL
//! database, poking each other's event streams with LISTEN/NOTIFY.
//!
//! What it does not do: no TLS (put it behind a reverse proxy), no record-level access rules
//! beyond spaces.

pub mod admin;
mod app;
pub mod auth;
mod compat;
mod compression;
pub mod config;
pub mod config_file;
mod embedded;
mod error;
mod extract;
pub mod horizon;
mod metrics;
mod routes;
pub mod rules;
pub mod schemas;
mod serve;
mod service;
mod state;
pub mod storage;
mod validate;

pub use app::app;
pub use config::{CompatSettings, Limits, MergeRules, Policies, Policy};
pub use embedded::{EmbeddedError, EmbeddedServer};
pub use error::{ApiError, RETRY_AFTER_SECS};
pub use horizon::HorizonConfig;
pub use schemas::{SchemaError, SchemaSource, SchemaSources, Schemas};
pub use serve::serve;
pub use service::SyncService;
pub use state::AppState;
