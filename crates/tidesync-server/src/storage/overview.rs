//! What the admin dashboard reads from storage ([`Storage::overview`](super::Storage::overview)):
//! a bounded summary of the spaces, clients and stored rejections, the same on every
//! backend.
//!
//! Bounded so that a large server's page stays fast: at most `limit` rows of each kind.
//! Spaces are the `limit` with the highest versions (one pass over the spaces table: the
//! schema has no index on `version`); their record counts are read over each space's key
//! range and stop at [`RECORD_COUNT_CAP`] records. Clients are the ones the caller names
//! (those this node saw recently), then the highest `last_seq`s. Stored rejections are the
//! newest (highest seq) of the clients returned: the `rejected` table keeps no time, so
//! "newest" is per client, by seq.

use tidesync_protocol::ClientId;

/// Record counts of a space stop after this many records (the page shows "100,000+").
pub const RECORD_COUNT_CAP: u64 = 100_000;

/// What to summarize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverviewRequest {
    /// Most rows of each kind.
    pub limit: usize,
    /// Clients to include first (those seen most recently, newest first), if stored.
    pub clients: Vec<ClientId>,
}

/// A bounded summary of the server's data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overview {
    /// How many spaces have been written.
    pub space_count: u64,
    /// The spaces with the highest versions, highest first.
    pub spaces: Vec<SpaceSummary>,
    /// How many clients have pushed.
    pub client_count: u64,
    /// The requested clients that exist (in the requested order), then those with the
    /// highest `last_seq`, up to the limit.
    pub clients: Vec<ClientSummary>,
    /// The newest stored rejections of the clients in `clients` (by client in that order,
    /// highest seq first), up to the limit.
    pub rejections: Vec<StoredRejection>,
}

/// One space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceSummary {
    /// Its name.
    pub space: String,
    /// Its version.
    pub version: u64,
    /// Its records.
    pub records: RecordCounts,
}

/// The records of a space, counted up to [`RECORD_COUNT_CAP`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordCounts {
    /// Live records among those counted.
    pub live: u64,
    /// Tombstones (deleted records) among those counted.
    pub deleted: u64,
    /// The space holds more than [`RECORD_COUNT_CAP`] records: counting stopped there.
    pub capped: bool,
}

impl RecordCounts {
    /// Counts from `rows` records read (at most `RECORD_COUNT_CAP + 1`), `live` of them live.
    pub(crate) fn of(rows: u64, live: u64) -> RecordCounts {
        let capped = rows > RECORD_COUNT_CAP;
        let rows = rows.min(RECORD_COUNT_CAP);
        let live = live.min(rows);
        RecordCounts {
            live,
            deleted: rows - live,
            capped,
        }
    }
}

/// One client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSummary {
    /// Its id.
    pub client_id: String,
    /// The user it belongs to.
    pub user: String,
    /// The last seq the server processed (applied or rejected).
    pub last_seq: u64,
}

/// One stored rejection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRejection {
    /// The client whose mutation it was.
    pub client_id: String,
    /// The mutation's seq.
    pub seq: u64,
    /// Why, as a stable code.
    pub code: String,
    /// Why, in words.
    pub message: String,
}

/// Merges the requested clients that exist with the top ones, without repeats, up to `limit`.
pub(crate) fn merge_clients(
    limit: usize,
    requested: Vec<ClientSummary>,
    top: Vec<ClientSummary>,
) -> Vec<ClientSummary> {
    let mut clients: Vec<ClientSummary> = Vec::with_capacity(limit);
    for client in requested.into_iter().chain(top) {
        if clients.len() == limit {
            break;
        }
        if !clients.iter().any(|c| c.client_id == client.client_id) {
            clients.push(client);
        }
    }
    clients
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_stop_at_the_cap() {
        assert_eq!(
            RecordCounts::of(3, 2),
            RecordCounts {
                live: 2,
                deleted: 1,
                capped: false
            }
        );
        let capped = RecordCounts::of(RECORD_COUNT_CAP + 1, RECORD_COUNT_CAP + 1);
        assert!(capped.capped);
        assert_eq!(capped.live + capped.deleted, RECORD_COUNT_CAP);
    }

    #[test]
    fn requested_clients_come_first_once() {
        let c = |id: &str| ClientSummary {
            client_id: id.into(),
            user: "u".into(),
            last_seq: 1,
        };
        let merged = merge_clients(3, vec![c("b")], vec![c("a"), c("b"), c("c"), c("d")]);
        let ids: Vec<_> = merged.iter().map(|c| c.client_id.as_str()).collect();
        assert_eq!(ids, ["b", "a", "c"]);
    }
}
