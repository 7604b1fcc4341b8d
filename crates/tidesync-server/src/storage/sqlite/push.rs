//! Applying one push inside the writer's transaction.

use std::collections::{BTreeMap, HashMap};

use rusqlite::{params, Connection, OptionalExtension};
use tidesync_core::{wire, HlcClock};
use tidesync_protocol::{
    ErrorCode, Mutation, PushOutcome, PushResponse, PushResult, RecordKey, SpaceName, Stamp,
};

use crate::config::MergeRules;
use crate::rules::{judge, land, RegisterVersions, ServerRecord, Verdict};
use crate::storage::{PushInput, StorageError};

fn internal(context: &'static str) -> impl Fn(rusqlite::Error) -> StorageError {
    move |e| StorageError::Internal(format!("{context}: {e}"))
}

/// What the writer keeps between pushes of one group commit.
pub(crate) struct WriterContext<'a> {
    pub rules: &'a MergeRules,
    pub clock: &'a mut HlcClock,
    pub now_ms: u64,
    /// Spaces whose version moved in this push, with the newest version (also the cache of
    /// their current versions: the `spaces` rows are written once, at the end of the push).
    pub moved: &'a mut BTreeMap<SpaceName, u64>,
}

impl WriterContext<'_> {
    fn space_version(&self, conn: &Connection, space: &SpaceName) -> Result<u64, StorageError> {
        match self.moved.get(space) {
            Some(v) => Ok(*v),
            None => space_version(conn, space),
        }
    }
}

/// Applies `input` on `conn` (inside a transaction and a savepoint the caller owns). On `Err`
/// the caller rolls the savepoint back.
pub(crate) fn apply_push(
    conn: &Connection,
    input: &PushInput,
    ctx: &mut WriterContext<'_>,
) -> Result<PushResponse, StorageError> {
    let client = input.client_id.as_str();
    let row: Option<(String, i64)> = conn
        .prepare_cached("SELECT user_id, last_seq FROM clients WHERE client_id = ?1")
        .and_then(|mut s| {
            s.query_row([client], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(internal("read the client"))?;
    let mut last_seq = match row {
        Some((user, _)) if user != input.user => {
            return Err(StorageError::ForeignClient(input.client_id.clone()))
        }
        Some((_, last_seq)) => last_seq as u64,
        None => {
            conn.prepare_cached(
                "INSERT INTO clients (client_id, user_id, last_seq) VALUES (?1, ?2, 0)",
            )
            .and_then(|mut s| s.execute(params![client, input.user]))
            .map_err(internal("register the client"))?;
            0
        }
    };
    if let Some(first) = input.mutations.first() {
        if first.seq > last_seq + 1 {
            return Err(StorageError::SeqGap {
                last_seq,
                first_seq: first.seq,
            });
        }
    }
    // Duplicates the server refused before: say so again, so a lost answer can never turn a
    // rejection into a silent acknowledgement.
    let mut results = rejected_again(conn, input, last_seq)?;
    let fresh: Vec<&Mutation> = input
        .mutations
        .iter()
        .filter(|m| m.seq > last_seq)
        .collect();
    for group in fresh.chunk_by(|a, b| a.tx == b.tx) {
        apply_transaction(conn, input, group, ctx, &mut results)?;
        last_seq = group.last().map_or(last_seq, |m| m.seq);
    }
    conn.prepare_cached("UPDATE clients SET last_seq = ?2 WHERE client_id = ?1")
        .and_then(|mut s| s.execute(params![client, last_seq as i64]))
        .map_err(internal("advance last_seq"))?;
    for (space, version) in ctx.moved.iter() {
        conn.prepare_cached(
            "INSERT INTO spaces (space, version) VALUES (?1, ?2)
             ON CONFLICT DO UPDATE SET version = excluded.version",
        )
        .and_then(|mut s| s.execute(params![space.as_str(), *version as i64]))
        .map_err(internal("bump the space version"))?;
    }
    Ok(PushResponse {
        acked_through: last_seq,
        results,
    })
}

/// The remembered rejections of the duplicates (`seq <= last_seq`) in `input`.
fn rejected_again(
    conn: &Connection,
    input: &PushInput,
    last_seq: u64,
) -> Result<Vec<PushResult>, StorageError> {
    let duplicates = input.mutations.iter().filter(|m| m.seq <= last_seq);
    let (Some(low), Some(high)) = (
        duplicates.clone().map(|m| m.seq).min(),
        duplicates.map(|m| m.seq).max(),
    ) else {
        return Ok(Vec::new());
    };
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, code, message FROM rejected
             WHERE client_id = ?1 AND seq BETWEEN ?2 AND ?3 ORDER BY seq",
        )
        .map_err(internal("read remembered rejections"))?;
    let rows = stmt
        .query_map(
            params![input.client_id.as_str(), low as i64, high as i64],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            },
        )
        .map_err(internal("read remembered rejections"))?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, code, message) = row.map_err(internal("read remembered rejections"))?;
        let code = serde_json::from_value(serde_json::Value::String(code))
            .unwrap_or(ErrorCode::RuleViolation);
        out.push(PushResult {
            seq: seq as u64,
            outcome: PushOutcome::Rejected { code, message },
        });
    }
    Ok(out)
}

/// One local transaction: all its mutations land, or (one was refused) none does.
fn apply_transaction(
    conn: &Connection,
    input: &PushInput,
    group: &[&Mutation],
    ctx: &mut WriterContext<'_>,
    results: &mut Vec<PushResult>,
) -> Result<(), StorageError> {
    // A mutation is judged before it writes anything, so a one-mutation transaction needs no
    // savepoint: a refusal has nothing to undo.
    let savepoint = group.len() > 1;
    if savepoint {
        conn.execute_batch("SAVEPOINT tx")
            .map_err(internal("begin a transaction"))?;
    }
    let mut versions: HashMap<SpaceName, u64> = HashMap::new();
    let mut outcomes = Vec::with_capacity(group.len());
    let mut refused = None;
    for m in group {
        let stamp = stamp_of(m, input, ctx);
        let policy = ctx.rules.policies.of(&m.key.collection);
        let mut record = load(conn, &m.key)?;
        let stored_at = record.version;
        match judge(&record, &m.op, m.base_version, &input.client_id, policy) {
            Verdict::Reject { code, message } => {
                refused = Some((m.seq, code, message));
                break;
            }
            Verdict::Land { op, mut conflicts } => {
                let current = match versions.get(&m.key.space) {
                    Some(v) => *v,
                    None => ctx.space_version(conn, &m.key.space)?,
                };
                let next = current + 1;
                let version = if land(&mut record, &op, &stamp, next, &mut conflicts) {
                    store(conn, &m.key, &record, stored_at)?;
                    versions.insert(m.key.space.clone(), next);
                    next
                } else {
                    current
                };
                outcomes.push(if conflicts.is_empty() {
                    PushOutcome::Applied { version }
                } else {
                    PushOutcome::Merged { version, conflicts }
                });
            }
        }
    }
    if let Some((bad_seq, code, message)) = refused {
        if savepoint {
            conn.execute_batch("ROLLBACK TO tx; RELEASE tx")
                .map_err(internal("roll back a refused transaction"))?;
        }
        for m in group {
            let outcome = if m.seq == bad_seq {
                PushOutcome::Rejected {
                    code,
                    message: message.clone(),
                }
            } else {
                PushOutcome::Rejected {
                    code: ErrorCode::TransactionAborted,
                    message: format!(
                        "mutation {bad_seq} of the same transaction was rejected ({code})"
                    ),
                }
            };
            if let PushOutcome::Rejected { code, message } = &outcome {
                conn.prepare_cached(
                    "INSERT OR REPLACE INTO rejected (client_id, seq, code, message) VALUES (?1, ?2, ?3, ?4)",
                )
                .and_then(|mut s| {
                    s.execute(params![input.client_id.as_str(), m.seq as i64, code.as_str(), message])
                })
                .map_err(internal("remember a rejection"))?;
            }
            results.push(PushResult {
                seq: m.seq,
                outcome,
            });
        }
        return Ok(());
    }
    for (space, version) in versions {
        let moved = ctx.moved.entry(space).or_default();
        *moved = (*moved).max(version);
    }
    if savepoint {
        conn.execute_batch("RELEASE tx")
            .map_err(internal("commit a transaction"))?;
    }
    results.extend(group.iter().zip(outcomes).map(|(m, outcome)| PushResult {
        seq: m.seq,
        outcome,
    }));
    Ok(())
}

/// The mutation's stamp; re-stamped with the server clock when the client's clock is too far
/// ahead, so a wrong device clock cannot win every race.
fn stamp_of(m: &Mutation, input: &PushInput, ctx: &mut WriterContext<'_>) -> Stamp {
    let skew = ctx.rules.max_clock_skew.as_millis() as u64;
    let hlc = if m.hlc.millis() > ctx.now_ms.saturating_add(skew) {
        ctx.clock.tick(ctx.now_ms).unwrap_or(m.hlc)
    } else {
        ctx.clock.observe(m.hlc);
        m.hlc
    };
    Stamp::new(hlc, input.client_id.clone())
}

pub(crate) fn space_version(conn: &Connection, space: &SpaceName) -> Result<u64, StorageError> {
    let v: Option<i64> = conn
        .prepare_cached("SELECT version FROM spaces WHERE space = ?1")
        .and_then(|mut s| s.query_row([space.as_str()], |r| r.get(0)).optional())
        .map_err(internal("read a space version"))?;
    Ok(v.unwrap_or(0) as u64)
}

/// Reads a record's registers (its stored wire form, decoded) and register versions; a record
/// never written is the default.
fn load(conn: &Connection, key: &RecordKey) -> Result<ServerRecord, StorageError> {
    let bad = |e: String| StorageError::Internal(format!("stored record {key} is invalid: {e}"));
    let mut stmt = conn
        .prepare_cached(
            "SELECT version, doc, stamps, versions FROM records
             WHERE space = ?1 AND collection = ?2 AND id = ?3",
        )
        .map_err(internal("read a record"))?;
    let mut rows = stmt
        .query([key.space.as_str(), key.collection.as_str(), key.id.as_str()])
        .map_err(internal("read a record"))?;
    let Some(row) = rows.next().map_err(internal("read a record"))? else {
        return Ok(ServerRecord::default());
    };
    // Parsed straight from SQLite's buffers: no copy of the text.
    let text = |i: usize| row.get_ref(i).map_err(internal("read a record"));
    let version: i64 = row.get(0).map_err(internal("read a record"))?;
    let doc = text(1)?
        .as_str_or_null()
        .map_err(|e| bad(format!("doc: {e}")))?;
    let stamps = text(2)?.as_str().map_err(|e| bad(format!("stamps: {e}")))?;
    let versions = text(3)?
        .as_str()
        .map_err(|e| bad(format!("versions: {e}")))?;
    Ok(ServerRecord {
        state: wire::decode(doc, stamps).map_err(|e| bad(e.to_string()))?,
        versions: serde_json::from_str::<RegisterVersions>(versions)
            .map_err(|e| bad(format!("versions: {e}")))?,
        version: version as u64,
    })
}

/// Writes a record back in its wire form, at its new version. Rows are keyed by
/// (space, version), so the row stored at `stored_at` (0: none) moves.
fn store(
    conn: &Connection,
    key: &RecordKey,
    record: &ServerRecord,
    stored_at: u64,
) -> Result<(), StorageError> {
    let wire = wire::encode(&record.state);
    let versions = serde_json::to_string(&record.versions)
        .map_err(|e| StorageError::Internal(format!("serialize record {key}: {e}")))?;
    if stored_at > 0 {
        conn.prepare_cached("DELETE FROM records WHERE space = ?1 AND version = ?2")
            .and_then(|mut s| s.execute(params![key.space.as_str(), stored_at as i64]))
            .map_err(internal("move a record"))?;
    }
    conn.prepare_cached(
        "INSERT INTO records (space, version, collection, id, doc, stamps, versions)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![
            key.space.as_str(),
            record.version as i64,
            key.collection.as_str(),
            key.id.as_str(),
            wire.doc,
            wire.stamps,
            versions
        ])
    })
    .map_err(internal("write a record"))?;
    Ok(())
}
