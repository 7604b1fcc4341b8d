//! Wire types of the tidesync sync protocol, version [`PROTOCOL_VERSION`].
//!
//! This crate holds the vocabulary client and server share: validated names and ids
//! ([`SpaceName`], [`CollectionName`], [`RecordId`], [`ClientId`]), hybrid logical clock
//! stamps ([`Hlc`], [`Stamp`]), the mutations a client sends ([`Mutation`], [`Op`]), the
//! changes a server hands out ([`Change`]), the push and pull messages, and the stable error
//! codes ([`ErrorCode`]). Every type round-trips through serde JSON; every string that names
//! something is validated when it is constructed *and* when it is deserialized, so a value of
//! one of these types is always well formed.
//!
//! What it does not do: no I/O, no clock, no merging. The clock and the merge rules live in
//! `tidesync-core`; the wire format is documented, field by field, in `docs/protocol.md`.

mod change;
mod error;
mod hlc;
mod limits;
mod messages;
mod mutation;
mod names;
mod raw;

pub use change::{Change, RecordStamps};
pub use error::{ErrorBody, ErrorCode, ValidationError};
pub use hlc::{Hlc, Stamp};
pub use limits::{MAX_COLLECTION_NAME_BYTES, MAX_RECORD_ID_BYTES, MAX_SPACE_NAME_BYTES};
pub use messages::{
    Cursor, Echo, FieldConflict, PullRequest, PullResponse, PushOutcome, PushRequest, PushResponse,
    PushResult, Winner, MAX_REFETCH,
};
pub use mutation::{collection_path, Doc, Mutation, Op, RecordKey};
pub use names::{ClientId, CollectionName, RecordId, SpaceName};
pub use raw::{ChangeError, CheckedChange, PulledChange, RawChange};

/// The newest protocol version this crate speaks. Sent in every push and pull; a server
/// refuses a version it does not know with [`ErrorCode::UnsupportedProtocol`], and a client
/// then speaks the version before, down to [`MIN_PROTOCOL_VERSION`]. Version 2 adds
/// [`Echo`]es and refetches to pull; version 3 adds the rejection code
/// [`ErrorCode::SchemaViolation`] (see [`ErrorCode::for_protocol`]); everything else is as in
/// version 1.
pub const PROTOCOL_VERSION: u32 = 3;

/// The oldest protocol version this crate still speaks (and a server still serves).
pub const MIN_PROTOCOL_VERSION: u32 = 1;
