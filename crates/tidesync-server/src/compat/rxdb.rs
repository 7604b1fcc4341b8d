//! RxDB's HTTP replication (`replicateRxCollection` with pull and push handlers and a pull
//! stream) on one collection of one space (docs/compat.md):
//!
//! - `GET …/pull?limit=N&checkpoint=C` → `{"documents": [...], "checkpoint": {"version": V}}`,
//!   the collection's changes after `C` in version order.
//! - `POST …/push` with `[{"assumedMasterState", "newDocumentState"}]` → the current server
//!   documents of the rows that conflicted (not written); `[]` when all were written.
//! - `GET …/pullStream` → Server-Sent Events: `"RESYNC"` first, then `{documents,
//!   checkpoint}` whenever the collection changed.
//!
//! A document is the stored document plus the primary-key field (the record id) and
//! `_deleted`; `_meta`, `_rev` and `_attachments` are neither stored nor returned.

use std::collections::HashSet;
use std::convert::Infallible;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::sse::Event;
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tidesync_protocol::{
    CollectionName, Hlc, Mutation, Op, RawChange, RecordId, RecordKey, SpaceName,
};

use crate::auth::Grants;
use crate::compat::records::{self, Protocol};
use crate::compat::{collection_of, query_of};
use crate::error::ApiError;
use crate::extract::{Auth, JsonBody};
use crate::routes::events::{sse_response, PokeStream};
use crate::state::AppState;

/// Page size when a pull names none.
const DEFAULT_LIMIT: u32 = 100;

/// Fields RxDB adds to a document that are not data: never stored, never returned.
const RXDB_FIELDS: [&str; 4] = ["_deleted", "_meta", "_rev", "_attachments"];

/// The checkpoint: the space version the documents sent so far reach. Opaque to RxDB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    version: u64,
}

/// `{documents, checkpoint}`: a pull's answer and a pull stream's event.
#[derive(Debug, Serialize)]
pub(crate) struct Batch {
    documents: Vec<Box<RawValue>>,
    checkpoint: Checkpoint,
}

/// The query string of `GET …/pull`.
#[derive(Debug, Deserialize)]
pub(crate) struct PullQuery {
    limit: Option<u64>,
    checkpoint: Option<String>,
}

/// One row of a push.
#[derive(Debug, Deserialize)]
pub(crate) struct PushRow {
    #[serde(rename = "assumedMasterState", default)]
    assumed: Option<Value>,
    #[serde(rename = "newDocumentState")]
    new: Value,
}

/// The collection a request is about, with its primary-key field.
struct Target {
    space: SpaceName,
    collection: CollectionName,
    pk: String,
}

impl Target {
    fn of(
        state: &AppState,
        path: Result<Path<(String, String)>, PathRejection>,
    ) -> Result<Target, ApiError> {
        let (space, collection) = collection_of(path)?;
        let pk = state.compat().rxdb_primary_key(&collection).to_owned();
        Ok(Target {
            space,
            collection,
            pk,
        })
    }

    /// A stored record as an RxDB document (JSON text).
    fn document(&self, change: &RawChange) -> Result<Box<RawValue>, ApiError> {
        let pk = Value::String(change.id.as_str().to_owned());
        let live = [(self.pk.as_str(), pk), ("_deleted", Value::Bool(false))];
        match records::document_with(change, &live)? {
            Some(doc) if !change.deleted => Ok(doc),
            _ => Ok(self.absent(&change.id)),
        }
    }

    /// The document of a deleted record, or of one never written: `{pk: id, "_deleted":
    /// true}`.
    fn absent(&self, id: &RecordId) -> Box<RawValue> {
        let mut doc = Map::new();
        doc.insert(self.pk.clone(), Value::String(id.as_str().to_owned()));
        doc.insert("_deleted".to_owned(), Value::Bool(true));
        // Infallible: an object built here.
        RawValue::from_string(records::json_text(&doc)).expect("valid JSON")
    }

    /// The server's state of a record, for comparison: its data fields, `None` when it is
    /// deleted.
    fn master_state(&self, change: &RawChange) -> Result<Option<Map<String, Value>>, ApiError> {
        if change.deleted {
            return Ok(None);
        }
        Ok(records::document(change)?.map(|doc| self.data(doc)))
    }

    /// A document as RxDB states it, for comparison: its data fields, or `None` when it is
    /// deleted (a deleted document's other fields do not count).
    fn state_of(&self, doc: &Value) -> Option<Map<String, Value>> {
        let doc = doc.as_object()?;
        if doc.get("_deleted").is_some_and(|d| d == &Value::Bool(true)) {
            return None;
        }
        Some(self.data(doc.clone()))
    }

    /// A document without its primary key and RxDB's own fields.
    fn data(&self, mut doc: Map<String, Value>) -> Map<String, Value> {
        doc.remove(&self.pk);
        for field in RXDB_FIELDS {
            doc.remove(field);
        }
        doc
    }

    /// The record id a pushed document names, or why it names none.
    fn id_of(&self, row: usize, what: &str, doc: &Value) -> Result<RecordId, ApiError> {
        let Some(object) = doc.as_object() else {
            return Err(ApiError::invalid(format!(
                "row {row}: {what} is not a JSON object"
            )));
        };
        match object.get(&self.pk) {
            Some(Value::String(id)) => RecordId::new(id.as_str())
                .map_err(|e| ApiError::invalid(format!("row {row}: {what}: {e}"))),
            _ => Err(ApiError::invalid(format!(
                "row {row}: {what} has no string field {:?}, the primary key of collection {} \
                 (a collection keyed by another field needs `tidesync serve \
                 --rxdb-primary-key {}=FIELD`)",
                self.pk, self.collection, self.collection
            ))),
        }
    }
}

/// Handles `GET /compat/rxdb/v1/{space}/{collection}/pull`.
pub(crate) async fn pull(
    State(state): State<AppState>,
    Auth(grants): Auth,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<PullQuery>, QueryRejection>,
) -> Result<Json<Batch>, ApiError> {
    let target = Target::of(&state, path)?;
    let query = query_of(query, "?limit=N&checkpoint=C")?;
    let sent = match query.checkpoint.as_deref() {
        None | Some("") | Some("null") | Some("undefined") => None,
        Some(text) => Some(serde_json::from_str::<Checkpoint>(text).map_err(|e| {
            ApiError::invalid(format!(
                "checkpoint {text:?} is not one this server gave ({e}); send the `checkpoint` \
                 of the last pull as encodeURIComponent(JSON.stringify(checkpoint)), or none \
                 on the first pull"
            ))
        })?),
    };
    let max = state.limits().max_pull_limit.max(1);
    let limit = query
        .limit
        .map_or(DEFAULT_LIMIT, |l| u32::try_from(l).unwrap_or(u32::MAX))
        .clamp(1, max);
    let from = sent.unwrap_or_default();
    let read = records::changes_since(
        &state,
        &grants,
        &target.space,
        from.version,
        Some(&target.collection),
        limit as usize,
        limit,
    )
    .await?;
    let documents = read
        .changes
        .iter()
        .map(|change| target.document(change))
        .collect::<Result<Vec<_>, _>>()?;
    // Nothing new: the checkpoint sent stays (RxDB keeps its own when a pull is empty).
    let checkpoint = if documents.is_empty() {
        from
    } else {
        Checkpoint {
            version: read.through,
        }
    };
    Ok(Json(Batch {
        documents,
        checkpoint,
    }))
}

/// A row of a push once checked: its record, the state RxDB assumed, the state it wants.
struct Row {
    id: RecordId,
    assumed: Option<Map<String, Value>>,
    new: Option<Map<String, Value>>,
}

/// Handles `POST /compat/rxdb/v1/{space}/{collection}/push`.
pub(crate) async fn push(
    State(state): State<AppState>,
    Auth(grants): Auth,
    path: Result<Path<(String, String)>, PathRejection>,
    JsonBody(rows): JsonBody<Vec<PushRow>>,
) -> Result<Json<Vec<Box<RawValue>>>, ApiError> {
    let target = Target::of(&state, path)?;
    if !grants.can_write(&target.space) {
        return Err(ApiError::forbidden(format!(
            "user {} may not write to space {}",
            grants.user, target.space
        )));
    }
    let max = state.limits().max_mutations_per_push;
    if rows.len() > max {
        return Err(ApiError::too_large(format!(
            "{} rows in one push; the limit is {max} (lower the push batchSize)",
            rows.len()
        )));
    }
    let rows = check_rows(&target, rows)?;
    let ids: Vec<RecordId> = rows.iter().map(|row| row.id.clone()).collect();
    let masters =
        records::current(&state, &grants, &target.space, &target.collection, &ids).await?;
    let mut conflicts = Vec::new();
    let mut mutations = Vec::new();
    for row in rows {
        let master = masters.get(&row.id);
        let master_state = match master {
            Some(change) => target.master_state(change)?,
            None => None,
        };
        if same_state(&row.new, &master_state) {
            // Already the server's state: written by this push's first attempt, or by
            // someone else; nothing to do either way.
            continue;
        }
        if !same_state(&row.assumed, &master_state) {
            conflicts.push(match master {
                Some(change) => target.document(change)?,
                None => target.absent(&row.id),
            });
            continue;
        }
        let seq = mutations.len() as u64 + 1;
        let op = match row.new {
            None => Op::Delete,
            Some(doc) => Op::Put { doc },
        };
        mutations.push(Mutation {
            seq,
            // Each row on its own: one conflict refuses only its own row.
            tx: seq,
            key: RecordKey::new(target.space.clone(), target.collection.clone(), row.id),
            op,
            // Stamped by the server (PushOrigin::Compat).
            hlc: Hlc::ZERO,
            base_version: master.map_or(0, |change| change.version),
        });
    }
    let ids: Vec<RecordId> = mutations.iter().map(|m| m.key.id.clone()).collect();
    let refused = records::write(&state, &grants, Protocol::Rxdb, mutations).await?;
    if !refused.is_empty() {
        // Changed by someone else between the read and the write: the storage refused
        // them (stale_base); their master documents are read again.
        let refused_ids: Vec<RecordId> = refused
            .iter()
            .filter_map(|r| ids.get((r.seq - 1) as usize).cloned())
            .collect();
        let now = records::current(
            &state,
            &grants,
            &target.space,
            &target.collection,
            &refused_ids,
        )
        .await?;
        for id in refused_ids {
            conflicts.push(match now.get(&id) {
                Some(change) => target.document(change)?,
                None => target.absent(&id),
            });
        }
    }
    Ok(Json(conflicts))
}

/// Checks every row (a document naming a valid id, the same in both states, each record
/// once) before anything is read or written.
fn check_rows(target: &Target, rows: Vec<PushRow>) -> Result<Vec<Row>, ApiError> {
    let mut seen = HashSet::with_capacity(rows.len());
    rows.into_iter()
        .enumerate()
        .map(|(i, row)| {
            let id = target.id_of(i, "newDocumentState", &row.new)?;
            if let Some(assumed) = row.assumed.as_ref().filter(|a| !a.is_null()) {
                let assumed_id = target.id_of(i, "assumedMasterState", assumed)?;
                if assumed_id != id {
                    return Err(ApiError::invalid(format!(
                        "row {i}: assumedMasterState is record {assumed_id} but newDocumentState \
                         is record {id}"
                    )));
                }
            }
            if !seen.insert(id.clone()) {
                return Err(ApiError::invalid(format!(
                    "row {i}: record {id} appears twice in one push"
                )));
            }
            let assumed = row.assumed.as_ref().and_then(|a| target.state_of(a));
            Ok(Row {
                id,
                assumed,
                new: target.state_of(&row.new),
            })
        })
        .collect()
}

fn same_state(a: &Option<Map<String, Value>>, b: &Option<Map<String, Value>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => records::same_fields(a, b),
        _ => false,
    }
}

/// Handles `GET /compat/rxdb/v1/{space}/{collection}/pullStream`.
pub(crate) async fn pull_stream(
    State(state): State<AppState>,
    Auth(grants): Auth,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let target = Target::of(&state, path)?;
    if !grants.can_read(&target.space) {
        return Err(ApiError::forbidden(format!(
            "user {} may not read space {}",
            grants.user, target.space
        )));
    }
    let pokes = PokeStream::open(&state, vec![target.space.clone()]).await?;
    let stream = LiveStream {
        checkpoint: pokes.announced(&target.space),
        pokes,
        state: state.clone(),
        grants,
        target,
        resync_sent: false,
        behind: false,
    };
    tracing::info!("rxdb pull stream opened");
    let events = futures::stream::unfold(stream, |mut s| async move {
        let event = s.next_event().await?;
        Some((Ok::<_, Infallible>(event), s))
    });
    Ok(sse_response(&state, events))
}

/// One open pull stream.
struct LiveStream {
    pokes: PokeStream,
    state: AppState,
    grants: Grants,
    target: Target,
    /// The space version the events sent so far reach.
    checkpoint: u64,
    resync_sent: bool,
    /// More changes than one event carries were waiting at the last read.
    behind: bool,
}

impl LiveStream {
    /// The next event, or `None` when the stream ends (shutdown, or storage failed: the
    /// client reconnects, gets `RESYNC` and pulls from its checkpoint).
    async fn next_event(&mut self) -> Option<Event> {
        if !self.resync_sent {
            self.resync_sent = true;
            return Some(Event::default().data("\"RESYNC\""));
        }
        loop {
            if !self.behind {
                self.pokes.next_poke().await?;
            }
            match self.read_page().await {
                Ok(Some(event)) => return Some(event),
                Ok(None) => {}
                Err(err) => {
                    tracing::info!(code = %err.code(), error = %err.message(), "rxdb pull stream ended");
                    return None;
                }
            }
        }
    }

    /// One page of the collection's changes since the checkpoint, as an event (`None`: no
    /// documents). `behind` stays set while more remain.
    async fn read_page(&mut self) -> Result<Option<Event>, ApiError> {
        let page = self.state.limits().default_pull_limit.max(1);
        let read = records::changes_since(
            &self.state,
            &self.grants,
            &self.target.space,
            self.checkpoint,
            Some(&self.target.collection),
            page as usize,
            page,
        )
        .await?;
        self.checkpoint = read.through;
        self.behind = !read.complete;
        if read.changes.is_empty() {
            return Ok(None);
        }
        let documents = read
            .changes
            .iter()
            .map(|change| self.target.document(change))
            .collect::<Result<Vec<_>, _>>()?;
        let batch = Batch {
            documents,
            checkpoint: Checkpoint {
                version: read.through,
            },
        };
        let data = serde_json::to_string(&batch).map_err(ApiError::internal)?;
        Ok(Some(Event::default().data(data)))
    }
}
