//! What a push does, decided in memory: one copy of the push algorithm for every backend.
//!
//! A backend reads what the push needs ([`Needs`]: the client's row, the remembered
//! rejections of retried mutations, the records the new mutations touch, the versions of
//! their spaces), inside its writing transaction and under its locks; [`plan`] decides every
//! outcome (sequence checks, whole transactions, conflict policies through
//! [`judge`](crate::rules::judge) and [`land`](crate::rules::land), version numbers); the
//! backend then writes the [`PushPlan`] in the same transaction. Nothing here touches a
//! database, so SQLite and PostgreSQL cannot drift apart in what a push means.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use tidesync_core::wire::{self, WireJson};
use tidesync_core::{HlcClock, RecordState};
use tidesync_protocol::{
    ErrorCode, Mutation, Op, PushOutcome, PushResponse, PushResult, RecordKey, SpaceName, Stamp,
};

use crate::config::{MergeRules, Policy};
use crate::rules::{judge, land, RegisterVersions, ServerRecord, Verdict};
use crate::storage::{echo, EchoChain, PushInput, PushOrigin, StorageError};

/// The client's row as stored: its owner and the last seq processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientRow {
    pub user: String,
    pub last_seq: u64,
}

/// Where the client stands, once its row was checked against the push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Standing {
    /// The last seq processed before this push.
    pub last_seq: u64,
    /// The client has no row yet: the backend registers it.
    pub new: bool,
}

/// Checks the pushing client against its row: a client id registered to another user is
/// refused, and so is a push that skips sequence numbers (nothing is changed by either).
pub(crate) fn standing(
    row: Option<ClientRow>,
    input: &PushInput,
) -> Result<Standing, StorageError> {
    let standing = match row {
        Some(row) if row.user != input.user => {
            return Err(StorageError::ForeignClient(input.client_id.clone()))
        }
        Some(row) => Standing {
            last_seq: row.last_seq,
            new: false,
        },
        None => Standing {
            last_seq: 0,
            new: true,
        },
    };
    // A recovery push from a client that knows where this server stands may skip the seqs
    // it no longer holds (docs/protocol.md, "A server restored from an older backup").
    let recovery = input.recover_from == Some(standing.last_seq);
    if let Some(first) = input.mutations.first() {
        if first.seq > standing.last_seq + 1 && !recovery {
            return Err(StorageError::SeqGap {
                last_seq: standing.last_seq,
                first_seq: first.seq,
            });
        }
    }
    Ok(standing)
}

/// What the backend reads for a push once the client's standing is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Needs {
    /// The seq range of the retried mutations (`seq <= last_seq`), whose remembered
    /// rejections the backend reads (`None`: no retries).
    pub retried: Option<(u64, u64)>,
    /// The records the new mutations touch (a record never written is simply absent).
    pub records: BTreeSet<RecordKey>,
    /// Their spaces, in sorted order: the order a backend locks them in.
    pub spaces: BTreeSet<SpaceName>,
}

/// What `input` needs read, given `standing`.
pub(crate) fn needs(input: &PushInput, standing: Standing) -> Needs {
    let (retried, fresh): (Vec<&Mutation>, Vec<&Mutation>) = input
        .mutations
        .iter()
        .partition(|m| m.seq <= standing.last_seq);
    let retried = match (retried.first(), retried.last()) {
        (Some(low), Some(high)) => Some((low.seq, high.seq)),
        _ => None,
    };
    Needs {
        retried,
        records: fresh.iter().map(|m| m.key.clone()).collect(),
        spaces: fresh.iter().map(|m| m.key.space.clone()).collect(),
    }
}

/// What the backend read, as [`plan`] takes it.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// The remembered rejections of the retried mutations, in seq order.
    pub rejected_again: Vec<PushResult>,
    /// The stored records among [`Needs::records`].
    pub records: HashMap<RecordKey, ServerRecord>,
    /// The current version of each of [`Needs::spaces`] (absent: never written, 0).
    pub versions: BTreeMap<SpaceName, u64>,
}

/// One record to store: its final state after the push, and the version it was stored at
/// before (0: it was never stored). A record written several times by one push is stored
/// once, at its last version.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RecordWrite {
    pub key: RecordKey,
    pub record: ServerRecord,
    pub stored_at: u64,
}

/// A refusal to remember, so a retry of the mutation gets it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub seq: u64,
    pub code: ErrorCode,
    pub message: String,
}

/// Everything a push writes, in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PushPlan {
    /// The answer.
    pub response: PushResponse,
    /// The client must be registered first (with `last_seq` 0).
    pub register: bool,
    /// The records that changed, in key order.
    pub writes: Vec<RecordWrite>,
    /// New refusals to remember.
    pub refusals: Vec<Refusal>,
    /// The spaces whose version moved, with their new version.
    pub moved: BTreeMap<SpaceName, u64>,
    /// The server time of the push (ms since the epoch): the client's `last_push_at`, the
    /// `deleted_at` of the tombstones it writes and the `rejected_at` of its refusals, which
    /// the history horizon prunes by.
    pub at_ms: u64,
}

impl PushPlan {
    /// The client's new `last_seq`.
    pub fn last_seq(&self) -> u64 {
        self.response.acked_through
    }
}

/// The server's side of stamping: its clock and time.
#[derive(Debug)]
pub(crate) struct Stamping<'a> {
    pub clock: &'a mut HlcClock,
    pub now_ms: u64,
}

/// Decides every outcome of `input` over what was `loaded`.
pub(crate) fn plan(
    input: &PushInput,
    standing: Standing,
    loaded: Loaded,
    rules: &MergeRules,
    stamping: &mut Stamping<'_>,
) -> PushPlan {
    let Loaded {
        rejected_again,
        records,
        versions,
    } = loaded;
    // Stamps given by this server stay above every stamp it has stored for these records,
    // whichever node gave those.
    for record in records.values() {
        if let Some(stamp) = record.state.max_stamp() {
            stamping.clock.observe(stamp.hlc);
        }
    }
    let mut state = State {
        stored_at: records
            .iter()
            .map(|(k, r)| (k.clone(), r.version))
            .collect(),
        records,
        versions,
        moved: BTreeMap::new(),
        touched: BTreeSet::new(),
    };
    let mut results = rejected_again;
    let mut refusals = Vec::new();
    let mut last_seq = standing.last_seq;
    let fresh: Vec<&Mutation> = input
        .mutations
        .iter()
        .filter(|m| m.seq > standing.last_seq)
        .collect();
    for group in fresh.chunk_by(|a, b| a.tx == b.tx) {
        transaction(
            input,
            group,
            rules,
            stamping,
            &mut state,
            &mut results,
            &mut refusals,
        );
        last_seq = group.last().map_or(last_seq, |m| m.seq);
    }
    let State {
        mut records,
        stored_at,
        moved,
        touched,
        ..
    } = state;
    let writes = touched
        .into_iter()
        .filter_map(|key| {
            let record = records.remove(&key)?;
            let stored_at = stored_at.get(&key).copied().unwrap_or(0);
            Some(RecordWrite {
                key,
                record,
                stored_at,
            })
        })
        .collect();
    PushPlan {
        response: PushResponse {
            acked_through: last_seq,
            results,
        },
        register: standing.new,
        writes,
        refusals,
        moved,
        at_ms: stamping.now_ms,
    }
}

/// The records and versions as the push has left them so far.
struct State {
    records: HashMap<RecordKey, ServerRecord>,
    /// Where each loaded record was stored before the push.
    stored_at: HashMap<RecordKey, u64>,
    versions: BTreeMap<SpaceName, u64>,
    moved: BTreeMap<SpaceName, u64>,
    /// Records changed by a landed transaction.
    touched: BTreeSet<RecordKey>,
}

impl State {
    fn version(&self, space: &SpaceName) -> u64 {
        self.versions.get(space).copied().unwrap_or(0)
    }
}

/// One local transaction: all its mutations land, or (one was refused) none does.
fn transaction(
    input: &PushInput,
    group: &[&Mutation],
    rules: &MergeRules,
    stamping: &mut Stamping<'_>,
    state: &mut State,
    results: &mut Vec<PushResult>,
    refusals: &mut Vec<Refusal>,
) {
    // Changes are made on copies and kept only if the whole transaction lands.
    let mut records: HashMap<RecordKey, ServerRecord> = HashMap::new();
    let mut versions: BTreeMap<SpaceName, u64> = BTreeMap::new();
    let mut outcomes = Vec::with_capacity(group.len());
    for m in group {
        let stamp = stamp_of(m, input, rules, stamping);
        let policy = match input.origin {
            PushOrigin::Client => rules.policies.of(&m.key.collection),
            PushOrigin::Compat => Policy::Strict,
        };
        let record = records
            .entry(m.key.clone())
            .or_insert_with(|| state.records.get(&m.key).cloned().unwrap_or_default());
        let space_now = versions
            .get(&m.key.space)
            .copied()
            .unwrap_or_else(|| state.version(&m.key.space));
        // A base above the space's version was seen on a server state this one does not
        // have: refused under every policy (it would defeat `strict` and skew conflict
        // detection), except in a recovery push, where it is the client's view of history
        // this server lost and counts as the current version.
        let base = match (m.base_version > space_now, input.recover_from.is_some()) {
            (false, _) => m.base_version,
            (true, true) => space_now,
            (true, false) => {
                let message = format!(
                    "base_version {} is above the space's version {space_now}: it was made on \
                     a server state this server does not have (restored from an older backup, \
                     or another server); pull from scratch, then decide",
                    m.base_version
                );
                refuse(
                    group,
                    m.seq,
                    ErrorCode::BaseAhead,
                    message,
                    results,
                    refusals,
                );
                return;
            }
        };
        match judge(record, &m.op, base, &input.client_id, policy) {
            Verdict::Reject { code, message } => {
                refuse(group, m.seq, code, message, results, refusals);
                return;
            }
            Verdict::Land { op, mut conflicts } => {
                let current = versions
                    .get(&m.key.space)
                    .copied()
                    .unwrap_or_else(|| state.version(&m.key.space));
                let record_version = record.version;
                let changed = land(record, &op, &stamp, current + 1, &mut conflicts);
                let version = if changed {
                    versions.insert(m.key.space.clone(), current + 1);
                    current + 1
                } else {
                    current
                };
                let landing = echo::Landing {
                    client: &input.client_id,
                    seq: m.seq,
                    base_version: m.base_version,
                    record_version,
                    version_after: record.version,
                    faithful: op == m.op && stamp.hlc == m.hlc,
                    changed,
                };
                record.echo = echo::after(record.echo.take(), landing);
                outcomes.push(if conflicts.is_empty() {
                    PushOutcome::Applied { version }
                } else {
                    PushOutcome::Merged { version, conflicts }
                });
            }
        }
    }
    if let Some((seq, code, message)) = schema_violation(group, &records, state, rules) {
        refuse(group, seq, code, message, results, refusals);
        return;
    }
    for (key, record) in records {
        let before = state.records.get(&key);
        if before.map_or(record != ServerRecord::default(), |b| *b != record) {
            state.touched.insert(key.clone());
            state.records.insert(key, record);
        }
    }
    for (space, version) in versions {
        state.moved.insert(space.clone(), version);
        state.versions.insert(space, version);
    }
    results.extend(group.iter().zip(outcomes).map(|(m, outcome)| PushResult {
        seq: m.seq,
        outcome,
    }));
}

/// The first record, in seq order, that the landed transaction `group` leaves live, changed
/// and not matching its collection's schema: the seq of the transaction's last put or patch
/// of it, and why. Deletes always pass (a record they leave dead has no document to check),
/// and so does a record the transaction did not change (its mutations lost to newer writes).
fn schema_violation(
    group: &[&Mutation],
    records: &HashMap<RecordKey, ServerRecord>,
    state: &State,
    rules: &MergeRules,
) -> Option<(u64, ErrorCode, String)> {
    let schemas = &rules.schemas;
    if schemas.is_empty() {
        return None;
    }
    // Each record once, blamed on the last put or patch that wrote it, in seq order.
    let mut seen = HashSet::new();
    let mut last_writes: Vec<&Mutation> = group
        .iter()
        .rev()
        .filter(|m| !matches!(m.op, Op::Delete) && schemas.has(&m.key.collection))
        .filter(|m| seen.insert(&m.key))
        .copied()
        .collect();
    last_writes.reverse();
    last_writes.into_iter().find_map(|m| {
        let record = records.get(&m.key)?;
        let unchanged = state
            .records
            .get(&m.key)
            .map_or(record.state == RecordState::default(), |before| {
                before.state == record.state
            });
        if unchanged {
            return None;
        }
        let doc = record.state.doc()?;
        let message = schemas.check(&m.key.collection, doc).err()?;
        Some((m.seq, ErrorCode::SchemaViolation, message))
    })
}

/// Every mutation of a refused transaction is rejected: `bad_seq` with the reason, the others
/// as aborted.
fn refuse(
    group: &[&Mutation],
    bad_seq: u64,
    code: ErrorCode,
    message: String,
    results: &mut Vec<PushResult>,
    refusals: &mut Vec<Refusal>,
) {
    for m in group {
        let (code, message) = if m.seq == bad_seq {
            (code, message.clone())
        } else {
            (
                ErrorCode::TransactionAborted,
                format!("mutation {bad_seq} of the same transaction was rejected ({code})"),
            )
        };
        refusals.push(Refusal {
            seq: m.seq,
            code,
            message: message.clone(),
        });
        results.push(PushResult {
            seq: m.seq,
            outcome: PushOutcome::Rejected { code, message },
        });
    }
}

/// The mutation's stamp; re-stamped with the server clock when the client's clock is too far
/// ahead, so a wrong device clock cannot win every race. A compat push is always stamped by
/// the server clock, which has observed every stamp of the records the push touches: a write
/// that passed its compare-and-swap is never outvoted by an older stamp from a fast clock.
fn stamp_of(m: &Mutation, input: &PushInput, rules: &MergeRules, s: &mut Stamping<'_>) -> Stamp {
    let skew = rules.max_clock_skew.as_millis() as u64;
    let server_stamped = input.origin == PushOrigin::Compat;
    let hlc = if server_stamped || m.hlc.millis() > s.now_ms.saturating_add(skew) {
        s.clock.tick(s.now_ms).unwrap_or(m.hlc)
    } else {
        s.clock.observe(m.hlc);
        m.hlc
    };
    Stamp::new(hlc, input.client_id.clone())
}

/// A record as stored: its version, its wire form (document and stamps as JSON text), its
/// register versions as JSON text and its echo chain (`None`: none).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoredRecord<'a> {
    pub version: u64,
    pub doc: Option<&'a str>,
    pub stamps: &'a str,
    pub versions: &'a str,
    pub echo: Option<&'a str>,
}

/// A stored record back as the server's copy of it.
pub(crate) fn decode_record(
    key: &RecordKey,
    stored: StoredRecord<'_>,
) -> Result<ServerRecord, StorageError> {
    let bad = |e: String| StorageError::Internal(format!("stored record {key} is invalid: {e}"));
    Ok(ServerRecord {
        state: wire::decode(stored.doc, stored.stamps).map_err(|e| bad(e.to_string()))?,
        versions: serde_json::from_str::<RegisterVersions>(stored.versions)
            .map_err(|e| bad(format!("versions: {e}")))?,
        version: stored.version,
        echo: stored.echo.map(EchoChain::decode).transpose()?,
    })
}

/// What a backend stores of a record: its wire form, its register versions as JSON text and
/// its echo chain as text.
pub(crate) struct EncodedRecord {
    pub wire: WireJson,
    pub versions: String,
    pub echo: Option<String>,
}

/// When a record written at `at_ms` became a tombstone, as stored (`deleted_at`): `at_ms`
/// if it is deleted (a tombstone rewritten restarts its time), `None` if it is live.
pub(crate) fn deleted_at(record: &ServerRecord, at_ms: u64) -> Option<i64> {
    (!record.state.is_live()).then_some(at_ms as i64)
}

/// A record as stored.
pub(crate) fn encode_record(
    key: &RecordKey,
    record: &ServerRecord,
) -> Result<EncodedRecord, StorageError> {
    let versions = serde_json::to_string(&record.versions)
        .map_err(|e| StorageError::Internal(format!("serialize record {key}: {e}")))?;
    Ok(EncodedRecord {
        wire: wire::encode(&record.state),
        versions,
        echo: record.echo.as_ref().map(EchoChain::encode),
    })
}

/// A remembered rejection as stored (its code as text) back as a result.
pub(crate) fn remembered(seq: u64, code: &str, message: String) -> PushResult {
    let code = serde_json::from_value(serde_json::Value::String(code.to_owned()))
        .unwrap_or(ErrorCode::RuleViolation);
    PushResult {
        seq,
        outcome: PushOutcome::Rejected { code, message },
    }
}
