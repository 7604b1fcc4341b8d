//! The storage seam: everything the HTTP layer needs from a database, and nothing about
//! HTTP. The SQLite backend ([`sqlite`]) is the embedded default; the PostgreSQL backend
//! ([`postgres`]) is the system of record for several server nodes. Both decide pushes with
//! one algorithm (`plan`) and pages with one set of rules (`page`); a backend only reads
//! and writes.
//!
//! Contract for every backend:
//! - **Exactly-once**: a client's `last_seq` is updated in the same database transaction as
//!   the mutations it covers. `seq <= last_seq` is a duplicate (skipped, still acknowledged);
//!   `seq > last_seq + 1` is [`StorageError::SeqGap`] and changes nothing.
//! - **Whole transactions**: the mutations sharing a `tx` in one push apply all or none; a
//!   rejected one rejects its transaction, and `last_seq` still advances past it.
//! - **Versions in order**: a space's version is bumped inside the writing transaction, under
//!   the space's row lock, so no reader ever sees version N+1 committed before N.
//! - **Pull in one snapshot**: the changes, the new cursor, `remaining` and `acked_through`
//!   are read in one read transaction; cost follows the changes returned (index on
//!   `(space, version)`), never the size of the space.
//! - **History horizon**: a prune batch ([`Storage::prune`]) deletes old tombstones and
//!   remembered rejections and raises the horizon of the spaces it pruned in the same
//!   transaction; a pull whose cursor for a space is above 0 but below its horizon is
//!   [`StorageError::CursorBehindHorizon`], unless the client began downloading the space
//!   from 0 at that same horizon (recorded, per client and space, before that pull is
//!   answered). Pruning is idempotent and safe to run from several nodes at once.

mod echo;
pub mod overview;
mod page;
mod plan;
pub mod postgres;
mod prune;
pub mod sqlite;

pub use echo::EchoChain;
pub use overview::{Overview, OverviewRequest};
pub use prune::{Prune, Pruned};

use async_trait::async_trait;
use tidesync_protocol::{
    ClientId, Cursor, Mutation, PullResponse, PushResponse, RawChange, RecordKey, SpaceName,
};

use crate::auth::{Grants, TokenHash};

/// A push, already authenticated and validated by the HTTP layer.
#[derive(Debug, Clone)]
pub struct PushInput {
    /// Who pushes (the token's user).
    pub user: String,
    /// The pushing client.
    pub client_id: ClientId,
    /// Mutations, seq strictly increasing by one (by at least one in a recovery push),
    /// whole transactions.
    pub mutations: Vec<Mutation>,
    /// A recovery push: the `last_seq` the client learned from a `seq_gap` answer (see
    /// `PushRequest::recover_from`).
    pub recover_from: Option<u64>,
    /// Who made the mutations: a tidesync client, or a compat protocol on its behalf.
    pub origin: PushOrigin,
}

/// Where a push comes from, which decides how its mutations are judged and stamped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PushOrigin {
    /// A tidesync client: each mutation under its collection's policy, with its own stamp
    /// (re-stamped only when too far ahead).
    #[default]
    Client,
    /// The server, for an RxDB or WatermelonDB push (`crate::compat`): every mutation is a
    /// compare-and-swap (judged under [`Policy::Strict`](crate::Policy::Strict) whatever its
    /// collection's policy: refused with `stale_base` when someone else changed the record
    /// after its `base_version`), stamped by the server's clock.
    Compat,
}

/// A pull, already authenticated and authorized by the HTTP layer.
#[derive(Debug, Clone)]
pub struct PullInput {
    /// Who pulls.
    pub user: String,
    /// The pulling client (for `acked_through`).
    pub client_id: ClientId,
    /// Where the client is.
    pub cursor: Cursor,
    /// The spaces to pull, each readable by `user`.
    pub spaces: Vec<SpaceName>,
    /// Page size (already clamped).
    pub limit: u32,
    /// Records this client wrote last go out as [`Echo`](tidesync_protocol::Echo)es
    /// (protocol 2).
    pub echoes: bool,
    /// Records to send in full after the page (checked: in `spaces`, at most
    /// [`MAX_REFETCH`](tidesync_protocol::MAX_REFETCH)).
    pub refetch: Vec<RecordKey>,
}

/// A space's version moved: clients subscribed to it should pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poke {
    /// The space.
    pub space: SpaceName,
    /// Its new version.
    pub version: u64,
}

/// What can go wrong in storage. The HTTP layer maps each variant to one status and code.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The push skipped sequence numbers.
    #[error("seq gap: the server has processed this client up to seq {last_seq}, so the next push must start at or below {}; it started at {first_seq}", last_seq + 1)]
    SeqGap {
        /// What the server has.
        last_seq: u64,
        /// What the push started with.
        first_seq: u64,
    },
    /// The client id is registered to another user.
    #[error("client id {0} belongs to another user")]
    ForeignClient(ClientId),
    /// The cursor is ahead of the space: the client must bootstrap again.
    #[error("the cursor for space {space} is at version {cursor}, but the space is only at {current}; drop local base state and pull from scratch")]
    CursorReset {
        /// The space.
        space: SpaceName,
        /// The client's cursor.
        cursor: u64,
        /// The space's version.
        current: u64,
    },
    /// The cursor is behind the space's horizon: deletes it has not seen were pruned, so the
    /// client must bootstrap again.
    #[error("the cursor for space {space} is at version {cursor}, but deletes up to version {horizon} were pruned (the server keeps deleted records for a limited time); drop local base state and pull from scratch")]
    CursorBehindHorizon {
        /// The space.
        space: SpaceName,
        /// The client's cursor.
        cursor: u64,
        /// The space's horizon.
        horizon: u64,
    },
    /// The storage is saturated or shutting down; retry later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Anything else; details are logged, not sent.
    #[error("storage failure: {0}")]
    Internal(String),
}

/// The storage behind the server. See the module docs for the contract.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Applies a push (one database transaction; may share it with other pushes).
    async fn push(&self, input: PushInput) -> Result<PushResponse, StorageError>;

    /// Reads one page of changes. Documents and stamps stay JSON text as stored (checked to
    /// be JSON): the HTTP layer splices them into the response without parsing them.
    async fn pull(&self, input: PullInput) -> Result<PullResponse<RawChange>, StorageError>;

    /// The grants of an API token, by the token's hash; `None` if unknown.
    async fn authenticate(&self, token: TokenHash) -> Result<Option<Grants>, StorageError>;

    /// Current versions of `spaces` (0 for a space never written).
    async fn space_versions(&self, spaces: &[SpaceName]) -> Result<Vec<u64>, StorageError>;

    /// Pokes for every committed version change, from now on.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Poke>;

    /// A bounded summary of the spaces, clients and stored rejections, for the admin
    /// dashboard: at most `request.limit` rows of each kind, read in one snapshot (see
    /// [`crate::storage::overview`] for what is chosen and what it costs).
    async fn overview(&self, request: OverviewRequest) -> Result<Overview, StorageError>;
    /// Runs one prune batch in one transaction (see [`Prune`]): deletes tombstones deleted
    /// at or before `prune.cutoff_ms` and remembered rejections at or before
    /// `prune.rejections_cutoff_ms`, oldest first, at most `prune.batch` rows, and raises
    /// the horizon of every space a tombstone was deleted from. Idempotent; concurrent batches (other nodes) never delete a row twice nor move
    /// a horizon back.
    async fn prune(&self, prune: Prune) -> Result<Pruned, StorageError>;

    /// Whether the storage answers (for `/healthz`).
    async fn health(&self) -> Result<(), StorageError>;

    /// Finishes queued writes and stops accepting new ones.
    async fn shutdown(&self);
}
