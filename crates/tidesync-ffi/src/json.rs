//! The JSON forms the ABI hands out (records, receipts, statuses, events, conflicts,
//! rejections, mutation states, restoration entries) and the ones it accepts (resolutions,
//! write batches, restoration addresses). Every top-level object carries `"v": 1`; the forms
//! are listed in docs/ffi.md.

use serde::Deserialize;
use serde_json::{json, Value};
use tidesync_client::restoration::json::{from_json, to_json};
use tidesync_client::restoration::{BucketPath, Entry, Lifetime};
use tidesync_client::{
    ClientEvent, Conflict, Connectivity, Doc, FieldConflict, HistoryLoss, MutationState, Op, Phase,
    QueryPage, QueryUpdate, Record, RecordId, Rejection, Resolution, Status, SyncError, Winner,
    WriteReceipt,
};

use crate::abi::FfiError;

pub(crate) fn record(record: &Record) -> Value {
    json!({"key": record.key.to_string(), "doc": record.doc, "pending": record.pending})
}

/// A query's page: `{"v":1, "records": [...], "next": cursor | null}`.
pub(crate) fn query_page(page: &QueryPage) -> Value {
    json!({
        "v": 1,
        "records": page.records.iter().map(record).collect::<Vec<_>>(),
        "next": page.next,
    })
}

/// A live query's update: the page, and the ids added, removed and changed since the last
/// one drained.
pub(crate) fn query_update(update: &QueryUpdate) -> Value {
    let ids = |ids: &[RecordId]| {
        ids.iter()
            .map(RecordId::as_str)
            .map(Value::from)
            .collect::<Vec<_>>()
    };
    json!({
        "v": 1,
        "type": "query_result",
        "records": update.records.iter().map(record).collect::<Vec<_>>(),
        "next": update.next,
        "added": ids(&update.added),
        "removed": ids(&update.removed),
        "changed": ids(&update.changed),
    })
}

pub(crate) fn receipt(receipt: &WriteReceipt) -> Value {
    json!({"seq": receipt.seq, "tx": receipt.tx, "hlc": receipt.hlc.to_string()})
}

fn phase(phase: Phase) -> &'static str {
    match phase {
        Phase::Stopped => "stopped",
        Phase::Paused => "paused",
        Phase::Offline => "offline",
        Phase::Connecting => "connecting",
        Phase::Uploading => "uploading",
        Phase::Downloading => "downloading",
        Phase::Authenticating => "authenticating",
        Phase::Backoff => "backoff",
        Phase::Idle => "idle",
    }
}

fn connectivity(c: Connectivity) -> &'static str {
    match c {
        Connectivity::Unknown => "unknown",
        Connectivity::Online => "online",
        Connectivity::Offline => "offline",
    }
}

fn sync_error(e: &SyncError) -> Value {
    json!({
        "kind": e.kind.as_str(),
        "code": e.code,
        "message": e.message,
        "needs_attention": e.needs_attention,
        "at_ms": e.at_ms,
    })
}

/// A status, without the version tag (it is embedded in events and in `ts_status`'s body).
pub(crate) fn status(s: &Status) -> Value {
    json!({
        "connectivity": connectivity(s.connectivity),
        "phase": phase(s.phase),
        "upload": s.upload.map(|u| json!({
            "done": u.done, "total": u.total, "done_bytes": u.done_bytes, "total_bytes": u.total_bytes,
        })),
        "download": s.download.map(|d| json!({"received": d.received, "remaining": d.remaining})),
        "pending": s.pending,
        "oldest_pending_at_ms": s.oldest_pending_at_ms,
        "conflicts": s.conflicts,
        "rejections": s.rejections,
        "last_synced_at_ms": s.last_synced_at_ms,
        "has_synced": s.has_synced,
        "synced": s.is_synced(),
        "last_error": s.last_error.as_ref().map(sync_error),
        "next_retry_at_ms": s.next_retry_at_ms,
        "history_loss": s.history_loss.as_ref().map(history_loss),
    })
}

fn history_loss(l: &HistoryLoss) -> Value {
    json!({
        "server_last_seq": l.server_last_seq, "local_last_seq": l.local_last_seq,
        "resent": l.resent, "lost": l.lost,
    })
}

fn winner(w: Winner) -> &'static str {
    match w {
        Winner::Local => "local",
        Winner::Server => "server",
    }
}

fn field_conflict(f: &FieldConflict) -> Value {
    json!({"field": f.field, "local": f.local, "server": f.server, "winner": winner(f.winner)})
}

pub(crate) fn conflict(c: &Conflict) -> Value {
    json!({
        "id": c.id,
        "seq": c.seq,
        "key": c.key.to_string(),
        "version": c.version,
        "fields": c.fields.iter().map(field_conflict).collect::<Vec<_>>(),
        "created_at_ms": c.created_at,
    })
}

fn op(op: &Op) -> Value {
    match op {
        Op::Put { doc } => json!({"op": "put", "doc": doc}),
        Op::Patch { fields } => json!({"op": "patch", "doc": fields}),
        Op::Delete => json!({"op": "delete"}),
    }
}

pub(crate) fn rejection(r: &Rejection) -> Value {
    let mut out = op(&r.op);
    out["seq"] = json!(r.seq);
    out["tx"] = json!(r.tx);
    out["key"] = json!(r.key.to_string());
    out["code"] = json!(r.code.as_str());
    out["message"] = json!(r.message);
    out["rejected_at_ms"] = json!(r.rejected_at);
    out
}

pub(crate) fn mutation_state(state: Option<&MutationState>) -> Value {
    match state {
        None => json!({"v": 1, "state": null}),
        Some(MutationState::Queued) => json!({"v": 1, "state": "queued"}),
        Some(MutationState::Sending) => json!({"v": 1, "state": "sending"}),
        Some(MutationState::Acked { version }) => {
            json!({"v": 1, "state": "acked", "version": version})
        }
        Some(MutationState::Confirmed) => json!({"v": 1, "state": "confirmed"}),
        Some(MutationState::Rejected { code, message }) => {
            json!({"v": 1, "state": "rejected", "code": code.as_str(), "message": message})
        }
    }
}

/// A client event as JSON (`type` names it).
pub(crate) fn event(event: &ClientEvent) -> Value {
    match event {
        ClientEvent::Status(s) => json!({"v": 1, "type": "status", "status": status(s)}),
        ClientEvent::Acked { seqs } => json!({"v": 1, "type": "acked", "seqs": seqs}),
        ClientEvent::Confirmed { seqs } => json!({"v": 1, "type": "confirmed", "seqs": seqs}),
        ClientEvent::Rejected { seq, code, message } => json!({
            "v": 1, "type": "rejected", "seq": seq, "code": code.as_str(), "message": message,
        }),
        ClientEvent::Conflict { seq, key, fields } => json!({
            "v": 1, "type": "conflict", "seq": seq, "key": key.to_string(),
            "fields": fields.iter().map(field_conflict).collect::<Vec<_>>(),
        }),
        ClientEvent::RecordsChanged {
            space,
            collection,
            count,
        } => json!({
            "v": 1, "type": "records_changed", "space": space.as_str(),
            "collection": collection.as_str(), "count": count,
        }),
        ClientEvent::BaseReset => json!({"v": 1, "type": "base_reset"}),
        ClientEvent::ChangedElsewhere => json!({"v": 1, "type": "changed_elsewhere"}),
        ClientEvent::ServerForgot(loss) => {
            let mut event = history_loss(loss);
            event["v"] = json!(1);
            event["type"] = json!("server_forgot");
            event
        }
    }
}

/// `{"keep": "local" | "server"}` or `{"merged": {...}}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub(crate) enum ResolutionArg {
    Keep(Keep),
    Merged(Doc),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Keep {
    Local,
    Server,
}

impl From<ResolutionArg> for Resolution {
    fn from(arg: ResolutionArg) -> Resolution {
        match arg {
            ResolutionArg::Keep(Keep::Local) => Resolution::KeepLocal,
            ResolutionArg::Keep(Keep::Server) => Resolution::KeepServer,
            ResolutionArg::Merged(doc) => Resolution::Merged(doc),
        }
    }
}

/// `"session"` or `"persistent"`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LifetimeArg {
    Session,
    Persistent,
}

impl From<LifetimeArg> for Lifetime {
    fn from(arg: LifetimeArg) -> Lifetime {
        match arg {
            LifetimeArg::Session => Lifetime::Session,
            LifetimeArg::Persistent => Lifetime::Persistent,
        }
    }
}

/// Where restoration state lives: `{"lifetime", "bucket": "a/b" ("" = root), "key"?}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RestoreAt {
    pub lifetime: LifetimeArg,
    #[serde(default)]
    pub bucket: String,
    #[serde(default)]
    pub key: Option<String>,
    /// For `ts_restore_set`: the entry.
    #[serde(default)]
    pub entry: Option<EntryArg>,
}

impl RestoreAt {
    pub(crate) fn bucket(&self) -> Result<BucketPath, FfiError> {
        if self.bucket.is_empty() {
            return Ok(BucketPath::root());
        }
        BucketPath::parse(&self.bucket).map_err(|e| FfiError::invalid(e.to_string()))
    }

    pub(crate) fn key(&self) -> Result<&str, FfiError> {
        self.key
            .as_deref()
            .ok_or_else(|| FfiError::invalid("the restoration address needs a \"key\""))
    }
}

/// A restoration entry: `{"tag", "version", "value"}` (value: see docs/ffi.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EntryArg {
    pub tag: String,
    pub version: u32,
    pub value: Value,
}

impl From<EntryArg> for Entry {
    fn from(arg: EntryArg) -> Entry {
        Entry::new(arg.tag, arg.version, from_json(&arg.value))
    }
}

pub(crate) fn entry(key: &str, e: &Entry) -> Value {
    json!({"key": key, "tag": e.tag, "version": e.version, "value": to_json(&e.value)})
}

/// One write of `ts_write_batch`.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum WriteArg {
    Put { key: String, doc: Doc },
    Patch { key: String, doc: Doc },
    Delete { key: String },
}

/// One restoration change of `ts_write_batch`.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum RestoreArg {
    Set {
        lifetime: LifetimeArg,
        #[serde(default)]
        bucket: String,
        key: String,
        entry: EntryArg,
    },
    Remove {
        lifetime: LifetimeArg,
        #[serde(default)]
        bucket: String,
        key: String,
    },
    RemoveBucket {
        lifetime: LifetimeArg,
        bucket: String,
    },
}

/// `ts_write_batch`'s argument: writes and restoration changes, committed together.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Batch {
    #[serde(default)]
    pub writes: Vec<WriteArg>,
    #[serde(default)]
    pub restore: Vec<RestoreArg>,
}

/// `ts_list`'s options: `{"after": id, "limit": n}`, both optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListArg {
    #[serde(default)]
    pub after: Option<String>,
    #[serde(default)]
    pub limit: Option<usize>,
}
