//! The tidesync client store: one SQLite file holding the app's records, the outbox of
//! changes waiting for the server, conflicts, rejections and restoration state.
//!
//! ```no_run
//! use serde_json::json;
//! use tidesync_protocol::RecordKey;
//! use tidesync_store::{Store, StoreConfig};
//!
//! let mut store = Store::open("app.db", StoreConfig::default())?;
//! let key = RecordKey::parse("user:alice", "todos", "t1")?;
//! let receipt = store.put(&key, json!({"title": "Buy milk"}).as_object().unwrap().clone())?;
//! let record = store.get(&key)?.expect("just written");
//! assert!(record.pending); // until the server confirms seq `receipt.seq`
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Guarantees:
//! - **A write that returned is durable and queued**: the view update and the outbox append
//!   commit in one SQLite transaction ([`Durability::Full`] survives power loss).
//! - **Outbox seqs are strictly increasing with no gaps**, across restarts and handles;
//!   mutations of one [`Store::transaction`] share a transaction id.
//! - **view = base + pending**: pulled server state lands in the base, and the view is the
//!   base with every outbox mutation merged on top in seq order, by the same rules the server
//!   uses (`tidesync_core::RecordState`). An acknowledged mutation stays in the view until
//!   the pull cursor passes its version.
//! - **Nothing grows with the outbox in memory**: opening, counting and pushing read the
//!   outbox through indexes and in batches.
//!
//! What it does not do: no networking, no threads, no async. The sync engine
//! (`tidesync-client`) drives [`Store::outbox_batch`], [`Store::apply_push_response`] and
//! [`Store::apply_pull`]; the store only keeps the books.

mod config;
mod conflicts;
mod counts;
mod echoes;
mod error;
mod meta;
mod open;
mod outbox;
mod planner;
pub mod query;
mod reader;
mod records;
mod rejections;
pub mod restoration;
mod restoration_store;
mod schema;
mod store;
mod sync;
mod v2_bases;
mod write;

pub use config::{Durability, SessionRestore, StoreConfig, WallClock};
pub use conflicts::{Conflict, Resolution};
pub use counts::StoreCounts;
pub use error::{Result, StoreError};
pub use outbox::{MutationState, OutboxEntry, OutboxStats, UnpushedStats};
pub use query::{Query, QueryError, QueryPage};
pub use reader::Reader;
pub use records::{ListOptions, Record, RecordPage};
pub use rejections::Rejection;
pub use schema::{Convert, Step, APPLICATION_ID, CURRENT_VERSION, MIGRATIONS};
pub use store::Store;
pub use sync::{HistoryLoss, Page, PullApplied, PushApplied};
pub use write::{WriteReceipt, WriteTx};
