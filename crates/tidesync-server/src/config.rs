//! Server settings: limits, conflict policies, clock skew, streams, the compat protocols.

use std::collections::BTreeMap;
use std::time::Duration;

use tidesync_protocol::CollectionName;

use crate::schemas::Schemas;

/// How mutations land on a collection (see docs/protocol.md, "Conflict policies").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Per field, the newer stamp wins; concurrent changes are reported as conflicts.
    #[default]
    Lww,
    /// A field someone else changed since the mutation's base version keeps the server value.
    ServerWins,
    /// Compare-and-swap: a mutation on a record someone else changed since its base version
    /// is rejected with `stale_base`.
    Strict,
}

impl Policy {
    /// The policy's name, as `FromStr` reads it.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Lww => "lww",
            Policy::ServerWins => "server_wins",
            Policy::Strict => "strict",
        }
    }
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "lww" => Ok(Policy::Lww),
            "server_wins" => Ok(Policy::ServerWins),
            "strict" => Ok(Policy::Strict),
            other => Err(format!(
                "unknown conflict policy {other:?}: use lww, server_wins or strict"
            )),
        }
    }
}

/// The conflict policy of each collection; collections not listed use the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policies {
    /// Policy for collections not in `per_collection`.
    pub default: Policy,
    /// Per-collection overrides.
    pub per_collection: BTreeMap<CollectionName, Policy>,
}

impl Policies {
    /// The policy that applies to `collection`.
    pub fn of(&self, collection: &CollectionName) -> Policy {
        self.per_collection
            .get(collection)
            .copied()
            .unwrap_or(self.default)
    }
}

/// Rules the storage applies to every push.
#[derive(Debug, Clone)]
pub struct MergeRules {
    /// Conflict policy per collection.
    pub policies: Policies,
    /// A mutation stamped more than this far ahead of the server clock is re-stamped with
    /// the server's clock, so a device with a wrong clock cannot win every race.
    pub max_clock_skew: Duration,
    /// The JSON Schema of each collection that has one: a transaction that would leave a
    /// record not matching it is rejected with `schema_violation`. Default: none.
    pub schemas: Schemas,
}

impl Default for MergeRules {
    fn default() -> Self {
        MergeRules {
            policies: Policies::default(),
            max_clock_skew: Duration::from_secs(60),
            schemas: Schemas::default(),
        }
    }
}

/// Request limits, and how requests and responses travel. Every limit breached gets a `413 too_large` or `400` with a JSON body, except
/// [`Limits::max_header_bytes`] (`431`, no body) and the header read timeout (a close).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body. Default 16 MiB.
    pub max_body_bytes: usize,
    /// Most mutations in one push. Default 5,000.
    pub max_mutations_per_push: usize,
    /// Largest document or patch, as JSON. Default 1 MiB.
    pub max_doc_bytes: usize,
    /// Deepest nesting of a document or patch, the object itself counting as 1. Default 64:
    /// well under serde_json's limit of 128, so an answer that echoes a value one level
    /// deeper (a conflict report) still parses on every client.
    pub max_doc_depth: usize,
    /// Most spaces in one pull. Default 100.
    pub max_spaces_per_pull: usize,
    /// Page size when the pull does not ask for one. Default 1,000.
    pub default_pull_limit: u32,
    /// Largest page a pull may ask for. Default 10,000.
    pub max_pull_limit: u32,
    /// Most concurrent `GET /v1/events` streams. Default 10,000.
    pub max_event_streams: usize,
    /// Interval of SSE heartbeats. Default 15 s.
    pub heartbeat: Duration,
    /// Longest wait for a request's headers, counted from when the connection starts waiting
    /// for a request (a new connection, or a keep-alive one after its last response): a
    /// slow-loris client that trickles headers, one that connects and says nothing, and an
    /// idle keep-alive connection are closed. Default 30 s. Enforced by [`crate::serve()`]
    /// (a real socket), not by the router alone.
    pub header_read_timeout: Duration,
    /// Largest request head: the request line and every header line, as bytes on the wire.
    /// A larger head is answered `431 Request Header Fields Too Large` (no body) and the
    /// connection is closed, before the request reaches the router. Default 64 KiB.
    /// Enforced by [`crate::serve()`] (hyper's `max_header_size`), not by the router alone.
    pub max_header_bytes: usize,
    /// Longest time a request's body may take to arrive after its headers; a slower body
    /// is answered `400 malformed_request` and the connection closed. Default 60 s (16 MiB in
    /// 60 s is 280 KB/s). Enforced by [`crate::serve()`], not by the router alone.
    pub body_read_timeout: Duration,
    /// Compression (docs/protocol.md, "Compression"): responses compressed with gzip or
    /// zstd when the client accepts it (never the event stream), request bodies in gzip or
    /// zstd accepted and decompressed (`max_body_bytes` then counts the decompressed
    /// bytes), and `Accept-Encoding: zstd, gzip` advertised on every response. `false`:
    /// nothing is compressed or advertised, and a compressed request is answered `415`.
    /// Default `true`.
    pub compression: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 16 << 20,
            max_mutations_per_push: 5_000,
            max_doc_bytes: 1 << 20,
            max_doc_depth: 64,
            max_spaces_per_pull: 100,
            default_pull_limit: 1_000,
            max_pull_limit: 10_000,
            max_event_streams: 10_000,
            heartbeat: Duration::from_secs(15),
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 << 10,
            body_read_timeout: Duration::from_secs(60),
            compression: true,
        }
    }
}

/// Settings of the RxDB and WatermelonDB protocols (docs/compat.md).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompatSettings {
    /// The RxDB primary-key field of each collection that does not use `id`: the document
    /// field that holds the record id (`tidesync serve --rxdb-primary-key COLLECTION=FIELD`).
    pub rxdb_primary_keys: BTreeMap<CollectionName, String>,
}

impl CompatSettings {
    /// The field RxDB documents of `collection` carry their record id in.
    pub fn rxdb_primary_key(&self, collection: &CollectionName) -> &str {
        self.rxdb_primary_keys
            .get(collection)
            .map_or("id", String::as_str)
    }

    /// Checks a primary-key field name: not empty, and not one of the fields RxDB reserves
    /// (they start with `_`).
    pub fn check_primary_key(field: &str) -> Result<(), String> {
        if field.is_empty() {
            return Err("the primary-key field name is empty".to_owned());
        }
        if field.starts_with('_') {
            return Err(format!(
                "{field:?} cannot be a primary key: fields starting with _ are RxDB's own"
            ));
        }
        Ok(())
    }
}
