//! WatermelonDB's sync protocol (`synchronize({pullChanges, pushChanges})`) on one space,
//! its collections as WatermelonDB's tables (docs/compat.md):
//!
//! - `GET …/sync?last_pulled_at=T&schema_version=S&migration=M[&tables=a,b]` →
//!   `{"changes": {table: {"created", "updated", "deleted"}}, "timestamp": T2}`: every change
//!   after `T` (all of them on the first sync, or when `migration` is given), of the tables
//!   named or of every collection, live records as `updated`, `T2` the space version read
//!   plus one.
//! - `POST …/sync?last_pulled_at=T` with `{table: {"created", "updated", "deleted"}}` →
//!   `200 {}` when applied, all or none in one transaction; `409 conflict` (nothing written)
//!   when a record was changed on the server after `T`. A resent push is applied once.
//!
//! A raw record is the stored document plus `id`; `_status` and `_changed` are neither
//! stored nor sent.

use std::collections::{BTreeMap, HashSet};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use tidesync_protocol::{
    CollectionName, ErrorCode, Hlc, Mutation, Op, PushOutcome, RecordId, RecordKey,
};

use crate::compat::records::{self, Protocol};
use crate::compat::{query_of, space_of, version_param};
use crate::error::ApiError;
use crate::extract::{Auth, JsonBody};
use crate::state::AppState;

/// Fields WatermelonDB keeps for its own bookkeeping: never stored, never sent.
const WATERMELON_FIELDS: [&str; 3] = ["id", "_status", "_changed"];

/// The query string of both requests. `schema_version` is accepted and not read: every
/// record is sent whole, whatever the client's schema.
#[derive(Debug, Deserialize)]
pub(crate) struct SyncQuery {
    last_pulled_at: Option<String>,
    migration: Option<String>,
    /// Comma-separated: pull only these tables (the app's schema); absent, every collection
    /// of the space.
    tables: Option<String>,
}

/// The changes of one table in a push.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct TableChanges {
    #[serde(default)]
    created: Vec<Value>,
    #[serde(default)]
    updated: Vec<Value>,
    #[serde(default)]
    deleted: Vec<Value>,
}

/// The changes of one table in a pull's answer: raw records as JSON text.
#[derive(Debug, Default, Serialize)]
pub(crate) struct TablePage {
    created: Vec<Box<RawValue>>,
    updated: Vec<Box<RawValue>>,
    deleted: Vec<RecordId>,
}

/// A pull's answer.
#[derive(Debug, Serialize)]
pub(crate) struct PullAnswer {
    changes: BTreeMap<CollectionName, TablePage>,
    timestamp: u64,
}

/// Handles `GET /compat/watermelon/v1/{space}/sync`.
pub(crate) async fn pull(
    State(state): State<AppState>,
    Auth(grants): Auth,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<SyncQuery>, QueryRejection>,
) -> Result<Json<PullAnswer>, ApiError> {
    let space = space_of(path)?;
    let query = query_of(query, "?last_pulled_at=T&schema_version=S&migration=M")?;
    let last_pulled_at = version_param("last_pulled_at", query.last_pulled_at.as_deref())?
        .map(version_of)
        .transpose()?;
    // A client that migrated its schema needs the new tables and columns of records it
    // already has: it is sent every record (a superset of what it asked for).
    let migrating = !matches!(query.migration.as_deref(), None | Some("") | Some("null"));
    let tables = match query.tables.as_deref() {
        None | Some("") => None,
        Some(list) => Some(
            list.split(',')
                .map(|t| {
                    CollectionName::new(t)
                        .map_err(|e| ApiError::invalid(format!("tables: table {t:?}: {e}")))
                })
                .collect::<Result<HashSet<_>, _>>()?,
        ),
    };
    let first = last_pulled_at.is_none();
    let from = if migrating {
        0
    } else {
        last_pulled_at.unwrap_or(0)
    };
    let page = state.limits().max_pull_limit.max(1);
    let read =
        records::changes_since(&state, &grants, &space, from, None, usize::MAX, page).await?;
    let mut changes: BTreeMap<CollectionName, TablePage> = BTreeMap::new();
    let wanted = |c: &CollectionName| tables.as_ref().is_none_or(|t| t.contains(c));
    for change in read.changes.iter().filter(|c| wanted(&c.collection)) {
        let table = changes.entry(change.collection.clone()).or_default();
        let id = Value::String(change.id.as_str().to_owned());
        match records::document_with(change, &[("id", id)])? {
            // Always `updated`: the server keeps registers, not history, so it cannot tell a
            // creation from an update, and WatermelonDB applies an update of a record it
            // lacks as a creation. Its `sendCreatedAsUpdated: true` is then silent (it logs
            // an error for any `created`, even on the first sync).
            Some(raw) => table.updated.push(raw),
            None if first => {}
            None => table.deleted.push(change.id.clone()),
        }
    }
    changes.retain(|_, t| !(t.created.is_empty() && t.updated.is_empty() && t.deleted.is_empty()));
    Ok(Json(PullAnswer {
        changes,
        timestamp: timestamp_of(read.through),
    }))
}

/// Handles `POST /compat/watermelon/v1/{space}/sync`.
pub(crate) async fn push(
    State(state): State<AppState>,
    Auth(grants): Auth,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<SyncQuery>, QueryRejection>,
    JsonBody(body): JsonBody<BTreeMap<String, TableChanges>>,
) -> Result<Json<Value>, ApiError> {
    let space = space_of(path)?;
    let query = query_of(query, "?last_pulled_at=T")?;
    let Some(last_pulled_at) = version_param("last_pulled_at", query.last_pulled_at.as_deref())?
    else {
        return Err(ApiError::invalid(
            "a push needs ?last_pulled_at=T, the timestamp of the pull before it",
        ));
    };
    let mut mutations = Vec::new();
    let mut seen = HashSet::new();
    for (table, changes) in body {
        let collection = CollectionName::new(table.as_str())
            .map_err(|e| ApiError::invalid(format!("table {table:?}: {e}")))?;
        let records = changes.created.into_iter().chain(changes.updated);
        let mut ops = Vec::new();
        for raw in records {
            let (id, doc) = raw_record(&collection, raw)?;
            ops.push((id, Op::Put { doc }));
        }
        for id in changes.deleted {
            ops.push((record_id(&collection, &id)?, Op::Delete));
        }
        for (id, op) in ops {
            if !seen.insert((collection.clone(), id.clone())) {
                return Err(ApiError::invalid(format!(
                    "record {id} of table {collection} appears twice in one push"
                )));
            }
            mutations.push(Mutation {
                seq: mutations.len() as u64 + 1,
                // One transaction: applied all or none.
                tx: 1,
                key: RecordKey::new(space.clone(), collection.clone(), id),
                op,
                // Stamped by the server (PushOrigin::Compat).
                hlc: Hlc::ZERO,
                base_version: version_of(last_pulled_at)?,
            });
        }
    }
    let keys: Vec<RecordKey> = mutations.iter().map(|m| m.key.clone()).collect();
    let refused = records::write(&state, &grants, Protocol::Watermelon, mutations).await?;
    let Some(cause) = refused
        .iter()
        .find(|r| records::rejection_code(r) != Some(ErrorCode::TransactionAborted))
    else {
        return Ok(Json(json!({})));
    };
    let key = keys.get((cause.seq - 1) as usize).map_or_else(
        || "a record".to_owned(),
        |k| format!("record {} of table {}", k.id, k.collection),
    );
    match records::rejection_code(cause) {
        Some(ErrorCode::BaseAhead) => Err(ApiError::new(
            ErrorCode::CursorReset,
            format!(
                "last_pulled_at {last_pulled_at} is above space {space}'s version: it came from \
                 a server state this server does not have; reset the local database and sync \
                 from scratch"
            ),
        )),
        Some(ErrorCode::StaleBase) => Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "{key} was changed on the server after last_pulled_at {last_pulled_at}; nothing \
                 was written: pull, then push again"
            ),
        )),
        // Refused for what the record is (a schema violation, a rule): pulling and pushing
        // again would be refused again, so it is not a conflict; the app must change it.
        _ => match &cause.outcome {
            PushOutcome::Rejected { code, message } => Err(ApiError::new(
                *code,
                format!("{key} was refused, so nothing was written: {message}"),
            )),
            _ => Err(ApiError::internal(
                "a refused compat write without a rejection",
            )),
        },
    }
}

/// The WatermelonDB `timestamp` of a space version: the version plus one, because
/// WatermelonDB refuses a timestamp of 0 (its "never synced"), which an empty space's
/// version would be.
fn timestamp_of(version: u64) -> u64 {
    version + 1
}

/// The space version a WatermelonDB `last_pulled_at` stands for (see [`timestamp_of`]).
fn version_of(timestamp: u64) -> Result<u64, ApiError> {
    timestamp.checked_sub(1).ok_or_else(|| {
        ApiError::invalid(
            "last_pulled_at=0 is not a timestamp this server gave: send the `timestamp` of the \
             last pull, or null on the first sync",
        )
    })
}

/// A pushed raw record: its id and the document to store.
fn raw_record(
    collection: &CollectionName,
    raw: Value,
) -> Result<(RecordId, Map<String, Value>), ApiError> {
    let Value::Object(doc) = raw else {
        return Err(ApiError::invalid(format!(
            "table {collection}: a raw record is not a JSON object"
        )));
    };
    let id = match doc.get("id") {
        Some(id) => record_id(collection, id)?,
        None => {
            return Err(ApiError::invalid(format!(
                "table {collection}: a raw record has no \"id\""
            )))
        }
    };
    Ok((id, records::without(doc, &WATERMELON_FIELDS)))
}

fn record_id(collection: &CollectionName, id: &Value) -> Result<RecordId, ApiError> {
    match id {
        Value::String(id) => RecordId::new(id.as_str())
            .map_err(|e| ApiError::invalid(format!("table {collection}: {e}"))),
        other => Err(ApiError::invalid(format!(
            "table {collection}: record id {other} is not a string"
        ))),
    }
}
