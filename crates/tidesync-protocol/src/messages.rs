//! Request and response bodies of `POST /v1/push` and `POST /v1/pull`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    Change, CheckedChange, ClientId, CollectionName, ErrorCode, Mutation, RawChange, RecordId,
    RecordKey, SpaceName,
};

/// `POST /v1/push` request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushRequest {
    /// The pushing client.
    pub client_id: ClientId,
    /// The protocol version the client speaks ([`crate::PROTOCOL_VERSION`]).
    pub protocol: u32,
    /// Mutations in `seq` order, whole transactions only.
    pub mutations: Vec<Mutation>,
    /// A recovery push: the client learned (from a `seq_gap` answer) that the server has
    /// processed its mutations only through this seq, fewer than it once acknowledged (the
    /// server was restored from an older backup). If it is still the server's `last_seq`,
    /// the seqs may skip those the client no longer holds (strictly increasing instead of
    /// consecutive), and a `base_version` above its space's version counts as that version
    /// (the base came from history the server lost). Absent on ordinary pushes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recover_from: Option<u64>,
}

/// `POST /v1/push` response body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushResponse {
    /// The highest `seq` of this client the server has processed (applied or rejected).
    pub acked_through: u64,
    /// One result per mutation of the request that was not a duplicate.
    pub results: Vec<PushResult>,
}

/// What happened to one pushed mutation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushResult {
    /// The mutation's `seq`.
    pub seq: u64,
    /// Its outcome.
    #[serde(flatten)]
    pub outcome: PushOutcome,
}

/// The outcome of one mutation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PushOutcome {
    /// Applied without conflict; the record's space is now at `version`.
    Applied {
        /// Space version that contains the mutation.
        version: u64,
    },
    /// Applied, but some fields had been changed concurrently by someone else.
    Merged {
        /// Space version that contains the mutation.
        version: u64,
        /// The contested fields and who won each.
        conflicts: Vec<FieldConflict>,
    },
    /// Refused; the mutation has no effect on the server. `last_seq` still advances.
    Rejected {
        /// Why, as a stable code.
        code: ErrorCode,
        /// Why, in words.
        message: String,
    },
}

/// Who won a contested field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Winner {
    /// The pushed mutation's value stands.
    Local,
    /// The value already on the server stands.
    Server,
}

/// One field that changed on the server since the mutation's `base_version`, to a value
/// different from the mutation's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldConflict {
    /// The top-level field name.
    pub field: String,
    /// The mutation's value (`null` = field removed).
    pub local: Option<serde_json::Value>,
    /// The server's concurrent value (`null` = field removed).
    pub server: Option<serde_json::Value>,
    /// Which one the record holds now.
    pub winner: Winner,
}

/// A pull cursor: space → last version received. Opaque to apps.
pub type Cursor = BTreeMap<SpaceName, u64>;

/// `POST /v1/pull` request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullRequest {
    /// The pulling client.
    pub client_id: ClientId,
    /// The protocol version the client speaks.
    pub protocol: u32,
    /// Where the client is; missing spaces start from version 0.
    #[serde(default)]
    pub cursor: Cursor,
    /// The spaces to pull.
    pub spaces: Vec<SpaceName>,
    /// At most this many changes in the response (server default and cap apply). On the wire
    /// any integer in `0..2^64`: one over `u32::MAX` is read as `u32::MAX`, which the
    /// server's cap clamps like any other large limit (docs/protocol.md: "clamped, never an
    /// error"). A negative number, a fraction or a non-number is still a deserialization
    /// error.
    #[serde(default, deserialize_with = "saturating_limit")]
    pub limit: Option<u32>,
    /// Records to send in full whatever the cursor (protocol 2): echoes this client could
    /// not rebuild (see [`Echo`]). At most [`MAX_REFETCH`], each in one of `spaces`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refetch: Vec<RecordKey>,
}

/// Most keys one pull may ask to [refetch](PullRequest::refetch).
pub const MAX_REFETCH: usize = 1_000;

/// A record the pulling client wrote last, sent instead of its document and stamps
/// (protocol 2; docs/protocol.md, "Echoes"): the server's state of it is the state the client
/// had at version `from` with the client's own mutations `first_seq..=last_seq` on it
/// applied in seq order, unchanged and with their own stamps. A client whose base of the
/// record is not at `from`, or which no longer holds exactly `count` acknowledged mutations
/// of the record in that range, asks for it again in full ([`PullRequest::refetch`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Echo {
    /// The record's space.
    pub space: SpaceName,
    /// The record's collection.
    pub collection: CollectionName,
    /// The record's id.
    pub id: RecordId,
    /// The space version at which the record last changed.
    pub version: u64,
    /// The record's version before the client's mutations (0: it did not exist).
    pub from: u64,
    /// The client's first mutation of the record since `from`.
    pub first_seq: u64,
    /// Its last one (at most the response's `acked_through`).
    pub last_seq: u64,
    /// How many of its mutations of the record with seqs in `first_seq..=last_seq` landed
    /// (every one but those refused).
    pub count: u64,
}

impl Echo {
    /// The record echoed.
    pub fn key(&self) -> RecordKey {
        RecordKey::new(self.space.clone(), self.collection.clone(), self.id.clone())
    }
}

/// `limit` read as a `u64` and saturated to `u32`, so a page size past `u32::MAX` is clamped
/// rather than refused.
fn saturating_limit<'de, D>(deserializer: D) -> Result<Option<u32>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let limit = Option::<u64>::deserialize(deserializer)?;
    Ok(limit.map(|limit| u32::try_from(limit).unwrap_or(u32::MAX)))
}

/// `POST /v1/pull` response body. `C` is [`Change`], or [`RawChange`] where documents and
/// stamps stay JSON text (the server's and the client's fast path; same JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullResponse<C = Change> {
    /// Changes in (space, version) order, then the [refetched](PullRequest::refetch)
    /// records.
    pub changes: Vec<C>,
    /// Records of the page the pulling client wrote last, in place of their changes
    /// (protocol 2 only; absent when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub echoes: Vec<Echo>,
    /// The cursor to send next time.
    pub cursor: Cursor,
    /// More changes are waiting: pull again right away.
    pub has_more: bool,
    /// How many changes are still waiting after this page (for progress bars).
    pub remaining: u64,
    /// The highest `seq` of the pulling client processed by the server, read in the same
    /// snapshot as `changes`.
    pub acked_through: u64,
}

impl<C> PullResponse<C> {
    /// The same response around other changes.
    fn with_changes<D>(&self, changes: Vec<D>) -> PullResponse<D> {
        PullResponse {
            changes,
            echoes: self.echoes.clone(),
            cursor: self.cursor.clone(),
            has_more: self.has_more,
            remaining: self.remaining,
            acked_through: self.acked_through,
        }
    }
}

impl PullResponse<RawChange> {
    /// The typed response (parses every document and its stamps).
    pub fn parse(&self) -> Result<PullResponse, serde_json::Error> {
        let changes = self
            .changes
            .iter()
            .map(RawChange::parse)
            .collect::<Result<_, _>>()?;
        Ok(self.with_changes(changes))
    }

    /// [`RawChange::into_checked`] on every change; the first inconsistent one is the error.
    pub fn into_checked(mut self) -> Result<PullResponse<CheckedChange>, crate::ChangeError> {
        let changes = std::mem::take(&mut self.changes)
            .into_iter()
            .map(RawChange::into_checked)
            .collect::<Result<_, _>>()?;
        Ok(self.with_changes(changes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pull_with_limit(limit: serde_json::Value) -> Result<PullRequest, serde_json::Error> {
        serde_json::from_value(json!({
            "client_id": "c1", "protocol": 1, "spaces": ["user:alice"], "limit": limit
        }))
    }

    #[test]
    fn a_pull_limit_past_u32_saturates_and_only_non_integers_are_refused() {
        let limit = |value| pull_with_limit(value).map(|r| r.limit);
        assert_eq!(limit(json!(null)).expect("null"), None);
        assert_eq!(limit(json!(0)).expect("0"), Some(0));
        assert_eq!(limit(json!(500)).expect("500"), Some(500));
        assert_eq!(limit(json!(u32::MAX)).expect("u32::MAX"), Some(u32::MAX));
        assert_eq!(limit(json!(1u64 << 32)).expect("2^32"), Some(u32::MAX));
        assert_eq!(limit(json!(u64::MAX)).expect("u64::MAX"), Some(u32::MAX));
        for bad in [json!(-1), json!(1.5), json!(10.0), json!("10"), json!([10])] {
            assert!(limit(bad.clone()).is_err(), "{bad}");
        }
        let missing: PullRequest = serde_json::from_value(
            json!({"client_id": "c1", "protocol": 1, "spaces": ["user:alice"]}),
        )
        .expect("no limit");
        assert_eq!(missing.limit, None);
    }

    #[test]
    fn a_pull_request_serializes_its_limit_as_before() {
        let request = pull_with_limit(json!(250)).expect("valid");
        let value = serde_json::to_value(&request).expect("serialize");
        assert_eq!(value["limit"], json!(250));
        assert_eq!(
            serde_json::from_value::<PullRequest>(value).expect("round trip"),
            request
        );
    }
}
