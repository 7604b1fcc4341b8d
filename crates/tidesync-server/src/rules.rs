//! How one mutation lands on the server's copy of a record: the conflict policies, conflict
//! reports and per-field versions. Pure and backend-independent: every storage backend calls
//! [`judge`] then [`land`] inside its writing transaction.
//!
//! "Changed since the base" means: written at a space version greater than the mutation's
//! `base_version`, by *another* client (a client's own earlier mutations never conflict with
//! its later ones).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tidesync_core::RecordState;
use tidesync_protocol::{ClientId, Doc, ErrorCode, FieldConflict, Op, Stamp, Winner};

use crate::config::Policy;
use crate::storage::EchoChain;

/// The space version at which each register of a record last changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterVersions {
    /// Per field register.
    #[serde(default)]
    pub fields: BTreeMap<String, u64>,
    /// The liveness register.
    #[serde(default)]
    pub liveness: u64,
    /// The clear stamp (last put or delete).
    #[serde(default)]
    pub cleared: u64,
}

/// The server's copy of one record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerRecord {
    /// The registers.
    pub state: RecordState,
    /// When each register last changed.
    pub versions: RegisterVersions,
    /// When anything in the record last changed (0: never written).
    pub version: u64,
    /// Whose faithful writes the state is, so a pull can echo it to that writer.
    pub echo: Option<EchoChain>,
}

/// What to do with a mutation.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Land `op` (the mutation's own, or narrowed by `server_wins`); report `conflicts`.
    Land {
        /// The operation to merge.
        op: Op,
        /// Fields changed concurrently by someone else; `winner` is filled in by [`land`].
        conflicts: Vec<FieldConflict>,
    },
    /// Refuse it.
    Reject {
        /// Why, as a code.
        code: ErrorCode,
        /// Why, in words.
        message: String,
    },
}

/// Decides how a mutation made by `client` on `base_version` lands under `policy`.
pub fn judge(
    record: &ServerRecord,
    op: &Op,
    base_version: u64,
    client: &ClientId,
    policy: Policy,
) -> Verdict {
    let changed = |field: &str| changed_since(record, field, base_version, client);
    let liveness_changed = record
        .state
        .liveness()
        .is_some_and(|(s, _)| record.versions.liveness > base_version && &s.client != client);
    let doc = record.state.doc();
    let server_value = |field: &str| doc.as_ref().and_then(|d| d.get(field)).cloned();
    let written = written_fields(record, op);
    let contested: Vec<(String, Option<Value>)> = written
        .into_iter()
        .filter(|(field, _)| changed(field))
        .filter(|(field, local)| server_value(field) != *local)
        .collect();
    let conflicts = |contested: &[(String, Option<Value>)], winner: Winner| {
        contested
            .iter()
            .map(|(field, local)| FieldConflict {
                field: field.clone(),
                local: local.clone(),
                server: server_value(field),
                winner,
            })
            .collect::<Vec<_>>()
    };
    let record_changed = liveness_changed
        || record.state.field_names().any(changed)
        || cleared_by_other_since(record, base_version, client);
    match policy {
        Policy::Strict if record_changed => Verdict::Reject {
            code: ErrorCode::StaleBase,
            message: format!(
                "the record changed on the server (now at version {}) since your base version {base_version}; pull, then decide",
                record.version
            ),
        },
        Policy::Strict | Policy::Lww => Verdict::Land {
            op: op.clone(),
            conflicts: conflicts(&contested, Winner::Local),
        },
        Policy::ServerWins => match op {
            Op::Delete if record_changed => Verdict::Reject {
                code: ErrorCode::StaleBase,
                message: format!(
                    "server_wins: the record changed on the server (now at version {}) since your base version {base_version}, so the delete was not applied",
                    record.version
                ),
            },
            Op::Put { .. } | Op::Patch { .. }
                if liveness_changed && !record.state.is_live() =>
            {
                Verdict::Reject {
                    code: ErrorCode::StaleBase,
                    message: format!(
                        "server_wins: the record was deleted on the server (version {}) after your base version {base_version}",
                        record.version
                    ),
                }
            }
            Op::Delete => Verdict::Land {
                op: op.clone(),
                conflicts: Vec::new(),
            },
            Op::Put { .. } | Op::Patch { .. } if !record_changed => Verdict::Land {
                op: op.clone(),
                conflicts: Vec::new(),
            },
            Op::Put { .. } | Op::Patch { .. } => {
                // Keep every field someone else changed; write the rest as a patch (a put
                // becomes "set my fields, remove the ones I dropped").
                let fields: Doc = written_fields(record, op)
                    .into_iter()
                    .filter(|(field, _)| !changed(field))
                    .map(|(field, value)| (field, value.unwrap_or(Value::Null)))
                    .collect();
                Verdict::Land {
                    op: Op::Patch { fields },
                    conflicts: conflicts(&contested, Winner::Server),
                }
            }
        },
    }
}

/// Merges `op` with `stamp` into the record at space version `version`. Returns whether the
/// record changed (a mutation whose every part is superseded changes nothing). Fills in the
/// `winner` of each conflict from the outcome.
pub fn land(
    record: &mut ServerRecord,
    op: &Op,
    stamp: &Stamp,
    version: u64,
    conflicts: &mut [FieldConflict],
) -> bool {
    let effect = record.state.apply(op, stamp);
    for conflict in conflicts.iter_mut() {
        let ours = record
            .state
            .field(&conflict.field)
            .is_some_and(|reg| &reg.stamp == stamp);
        if conflict.winner == Winner::Local && !ours {
            conflict.winner = Winner::Server;
        }
    }
    if effect.is_noop() {
        return false;
    }
    for field in &effect.won {
        record.versions.fields.insert(field.clone(), version);
    }
    if effect.liveness_won {
        record.versions.liveness = version;
    }
    if record.state.cleared() == Some(stamp) {
        record.versions.cleared = version;
    }
    let state = &record.state;
    record
        .versions
        .fields
        .retain(|field, _| state.field(field).is_some());
    record.version = version;
    true
}

/// The fields `op` writes and the value it gives each (`None`: removed).
fn written_fields(record: &ServerRecord, op: &Op) -> Vec<(String, Option<Value>)> {
    match op {
        Op::Patch { fields } => fields
            .iter()
            .map(|(f, v)| (f.clone(), (!v.is_null()).then(|| v.clone())))
            .collect(),
        Op::Put { doc } => {
            let mut out: Vec<_> = doc
                .iter()
                .map(|(f, v)| (f.clone(), Some(v.clone())))
                .collect();
            if let Some(current) = record.state.doc() {
                out.extend(
                    current
                        .keys()
                        .filter(|f| !doc.contains_key(*f))
                        .map(|f| (f.clone(), None)),
                );
            }
            out
        }
        Op::Delete => Vec::new(),
    }
}

fn changed_since(record: &ServerRecord, field: &str, base: u64, client: &ClientId) -> bool {
    match record.state.field(field) {
        Some(reg) => {
            record.versions.fields.get(field).copied().unwrap_or(0) > base
                && &reg.stamp.client != client
        }
        None => cleared_by_other_since(record, base, client),
    }
}

fn cleared_by_other_since(record: &ServerRecord, base: u64, client: &ClientId) -> bool {
    record
        .state
        .cleared()
        .is_some_and(|s| record.versions.cleared > base && &s.client != client)
}

#[cfg(test)]
mod tests;
