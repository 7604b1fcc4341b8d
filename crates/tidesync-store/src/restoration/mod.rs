//! Restoration state (DESIGN §7): the app's drafts, navigation and form inputs, kept next to
//! its data so that a killed app comes back where the user left it.
//!
//! State lives in hierarchical buckets, like Flutter's `RestorationBucket`
//! (`root.child("checkout").read("draft")`), in two [`Lifetime`]s. Each [`Entry`] holds a
//! [`Value`] (what Flutter's StandardMessageCodec carries, with string map keys), a type tag
//! and a version; a [`RestorationSchema`] upgrades old entries at load.
//!
//! This module is the pure, in-memory part:
//! - [`value`]/[`codec`]: the value model and its canonical binary encoding;
//! - [`schema`]: entry types, versions and migrations;
//! - [`RestorationTree`] with read-only [`Bucket`] views; changes are planned
//!   ([`RestorationTree::plan`], [`RestorationBatch`]) into [`PlannedChange`]s carrying the exact
//!   bytes to persist, and applied with [`RestorationTree::apply`] after the commit;
//! - [`RestorationTree::load`]: rebuilding the tree from stored rows, dropping and reporting
//!   what cannot be restored ([`RestorationIssue`], [`Repair`]) instead of failing.
//!
//! - [`json`]: values as JSON, for tools and bindings.
//!
//! What it does **not** do: no SQLite, no I/O, no clock, no threads. Persistence, transactions
//! (a restoration write joining a data transaction), deciding when the session lifetime is
//! cleared (a fresh start vs. a restoration id from the platform) and emitting events for
//! issues all live in the store.

pub mod codec;
pub mod json;
pub mod schema;
pub mod value;

mod batch;
mod bucket;
mod error;
mod load;
mod path;
mod tree;

pub use batch::{PlannedChange, PlannedWrite, RestorationBatch, RestorationChange};
pub use bucket::Bucket;
pub use codec::{decode, encode, encoded_len, DecodeError, EncodeError};
pub use error::{RestorationError, SizeSubject};
pub use load::{IssueKind, Loaded, Repair, RestorationIssue, StoredEntry};
pub use path::{validate_tag, BucketPath, EntryKey, NameRule, MAX_NAME_BYTES, MAX_PATH_BYTES};
pub use schema::{
    Migration, RestorationSchema, RestorationSchemaBuilder, SchemaError, UpgradeError, Upgraded,
};
pub use tree::{entry_size, Entry, Lifetime, RestorationLimits, RestorationTree};
pub use value::Value;
