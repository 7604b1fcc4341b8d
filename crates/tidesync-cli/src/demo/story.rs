//! The staged moments of the demo: the shared records, a same-field conflict, a stale edit of
//! a strict order, the kill and reopen of a client with unsent work and a draft, and how the
//! demo settles conflicts and rejections once everyone is back online.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};

use anyhow::Context;
use serde_json::json;
use tidesync_client::restoration::{BucketPath, Entry, Lifetime, Value};
use tidesync_client::{
    Client, ErrorCode, MutationState, Phase, Reachability, RecordKey, Resolution, StoreError,
    Winner,
};

use super::replicas::Replica;
use super::script::{doc, key, record_key};
use super::setup::ORDERS;
use super::summary::{ConflictLine, KillCheck, RejectionLine, Report};

/// The todo both first clients retitle while offline.
pub fn contested() -> RecordKey {
    key("offsite")
}

/// The order under the strict policy.
pub fn order() -> RecordKey {
    record_key(ORDERS, "o1")
}

/// Client 1 creates the shared records everyone starts from.
pub fn seed_shared(c1: &Client) -> anyhow::Result<()> {
    c1.put(
        &contested(),
        doc(json!({"title": "plan the offsite", "done": false, "by": "c1"})),
    )?;
    c1.put(&order(), doc(json!({"item": "coffee beans", "qty": 1})))?;
    Ok(())
}

/// Offline, `c2` retitles the shared todo first and `c1` a moment later (so `c1`'s stamp is
/// newer and wins under lww); both change the strict order's quantity on the same base.
/// `c1` reconnects first, so `c2` meets a conflict on the title and a `stale_base` rejection on
/// the order.
pub fn stage_conflict_and_stale_edit(c1: &Client, c2: &Client) -> anyhow::Result<()> {
    c2.patch(
        &contested(),
        doc(json!({"title": "offsite in Lisbon (c2)"})),
    )?;
    std::thread::sleep(std::time::Duration::from_millis(5));
    c1.patch(&contested(), doc(json!({"title": "offsite in Porto (c1)"})))?;
    c1.patch(&order(), doc(json!({"qty": 2})))?;
    c2.patch(&order(), doc(json!({"qty": 5})))?;
    Ok(())
}

fn compose() -> anyhow::Result<BucketPath> {
    Ok(BucketPath::root().child("compose")?)
}

/// What identifies the outbox: its length and a hash of (seq, tx, op kind, key) in order.
fn outbox_fingerprint(client: &Client) -> anyhow::Result<(u64, u64)> {
    let mut hasher = DefaultHasher::new();
    let mut count = 0u64;
    let mut after = 0;
    loop {
        let page = client
            .outbox(after, 1_000)
            .context("cannot read the outbox")?;
        let Some(last) = page.last() else {
            return Ok((count, hasher.finish()));
        };
        after = last.mutation.seq;
        for entry in &page {
            let m = &entry.mutation;
            (m.seq, m.tx, m.op.kind(), m.key.to_string()).hash(&mut hasher);
            count += 1;
        }
    }
}

fn read_draft(client: &Client) -> anyhow::Result<Option<Value>> {
    Ok(client
        .restore_get(Lifetime::Persistent, &compose()?, "draft")
        .map(|entry| entry.value))
}

/// Writes an unsent draft, kills the client (drops it while offline with unsent mutations),
/// reopens it from its file alone and checks that the queue and the draft came back. Then the
/// draft becomes a todo and is cleared, in one transaction.
pub fn kill_and_reopen(replica: &mut Replica) -> anyhow::Result<KillCheck> {
    let name = replica.name.clone();
    let draft = Value::Map(
        [
            ("title".to_owned(), Value::from("call the caterer")),
            ("done".to_owned(), Value::from(false)),
        ]
        .into_iter()
        .collect(),
    );
    let client = replica.client()?;
    let bucket = compose()?;
    client.transaction(|tx| {
        tx.restore_write(
            Lifetime::Persistent,
            &bucket,
            "draft",
            Entry::new("todo.draft", 1, draft.clone()),
        )
    })?;
    let (pending_before, print_before) = outbox_fingerprint(client)?;

    // The kill: the handle goes away with everything unsent; only the file remains.
    drop(replica.client.take());

    let mut config = replica.config.clone();
    config.start_online = false;
    let client = Client::open(config).with_context(|| format!("cannot reopen client {name}"))?;
    client.set_network(Reachability::Offline);
    client.resume();
    let (pending_after, print_after) = outbox_fingerprint(&client)?;
    let restored = read_draft(&client)?;

    let draft_fate = match &restored {
        Some(value) => {
            let id = format!("{name}-draft");
            let title = value
                .get("title")
                .and_then(Value::as_str)
                .unwrap_or("untitled")
                .to_owned();
            let receipt = client.transaction(|tx| {
                let receipt = tx.put(
                    &key(&id),
                    doc(json!({"title": title, "done": false, "by": name})),
                )?;
                tx.restore_remove(Lifetime::Persistent, &bucket, "draft")?;
                Ok::<_, StoreError>(receipt)
            })?;
            format!(
                "submitted as todos/{id} (seq {}) and cleared from restoration state, in one transaction",
                receipt.seq
            )
        }
        None => "nothing to submit".to_owned(),
    };
    replica.client = Some(client);
    Ok(KillCheck {
        client: name,
        pending_before,
        pending_after,
        queue_same: print_before == print_after,
        draft_before: show_value(&draft),
        draft_after: restored.as_ref().map(show_value),
        draft_fate,
    })
}

/// A restoration value as compact JSON-like text.
pub fn show_value(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Bytes(b) => format!("<{} bytes>", b.len()),
        Value::List(items) => {
            let inner: Vec<String> = items.iter().map(show_value).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Map(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k:?}: {}", show_value(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

/// Settles what the server reported, the way an app would: the contested title is kept
/// (`KeepLocal`: the client whose edit lost re-asserts it), any other conflict accepts the
/// server (`KeepServer`); a `stale_base` rejection of the order is retried once on the fresh
/// base, anything else is discarded.
#[derive(Debug, Default)]
pub struct Settler {
    retried: HashSet<(usize, String)>,
    /// (report index, replica, seq) whose final state is appended to the report at the end.
    follow: Vec<(usize, usize, u64)>,
}

impl Settler {
    /// Acts on every replica that is caught up. Returns whether anything was done.
    pub fn settle(&mut self, replicas: &[Replica], report: &mut Report) -> anyhow::Result<bool> {
        let mut acted = false;
        for (i, replica) in replicas.iter().enumerate() {
            let Some(status) = replica.status() else {
                continue;
            };
            // Act only on a caught-up replica: its base holds what it conflicted with.
            if status.phase != Phase::Idle || status.pending > 0 {
                continue;
            }
            let client = replica.client()?;
            for conflict in client.conflicts()? {
                let resolution = if conflict.key == contested() {
                    Resolution::KeepLocal
                } else {
                    Resolution::KeepServer
                };
                let receipt = client.resolve_conflict(conflict.id, resolution.clone())?;
                let fields: Vec<String> = conflict
                    .fields
                    .iter()
                    .map(|f| {
                        format!(
                            "{}: server {} vs local {}, {} won",
                            f.field,
                            show_json(f.server.as_ref()),
                            show_json(f.local.as_ref()),
                            match f.winner {
                                Winner::Local => "local",
                                Winner::Server => "server",
                            }
                        )
                    })
                    .collect();
                let effect = match receipt {
                    Some(r) => format!("new mutation seq {}", r.seq),
                    None => "nothing to write, its value already stood".to_owned(),
                };
                report.conflicts.push(ConflictLine {
                    client: replica.name.clone(),
                    what: format!(
                        "{} (seq {}) {}",
                        conflict.key,
                        conflict.seq,
                        fields.join("; ")
                    ),
                    how: format!("resolved automatically with {resolution:?}: {effect}"),
                });
                acted = true;
            }
            for rejection in client.rejections()? {
                let first_try = self.retried.insert((i, rejection.key.to_string()));
                let what = format!(
                    "seq {} {} {} {}: rejected {} ({})",
                    rejection.seq,
                    rejection.op.kind(),
                    rejection.key,
                    show_op(&rejection.op),
                    rejection.code.as_str(),
                    rejection.message
                );
                let outcome = if rejection.code == ErrorCode::StaleBase && first_try {
                    let receipts = client.retry_rejection(rejection.seq)?;
                    let seqs: Vec<String> = receipts.iter().map(|r| r.seq.to_string()).collect();
                    if let Some(last) = receipts.last() {
                        self.follow.push((report.rejections.len(), i, last.seq));
                    }
                    format!(
                        "its local effect was rolled back; retried on the fresh base as seq {}",
                        seqs.join(", ")
                    )
                } else {
                    let n = client.discard_rejection(rejection.seq)?;
                    format!("discarded ({n} mutation(s)); the server's state stands")
                };
                report.rejections.push(RejectionLine {
                    client: replica.name.clone(),
                    what,
                    outcome,
                });
                acted = true;
            }
        }
        Ok(acted)
    }

    /// Appends where each retried mutation ended up.
    pub fn finish(&self, replicas: &[Replica], report: &mut Report) {
        for &(line, replica, seq) in &self.follow {
            let state = replicas
                .get(replica)
                .and_then(|r| r.client.as_ref())
                .and_then(|c| c.mutation_state(seq).ok().flatten());
            let said = match state {
                Some(MutationState::Confirmed) => "applied by the server".to_owned(),
                Some(MutationState::Rejected { code, .. }) => {
                    format!("rejected again ({})", code.as_str())
                }
                Some(other) => format!("{other:?}"),
                None => "unknown".to_owned(),
            };
            if let Some(l) = report.rejections.get_mut(line) {
                l.outcome.push_str(&format!(": {said}"));
            }
        }
    }
}

fn show_json(value: Option<&serde_json::Value>) -> String {
    value.map_or("(removed)".to_owned(), serde_json::Value::to_string)
}

fn show_op(op: &tidesync_client::Op) -> String {
    match op {
        tidesync_client::Op::Put { doc } | tidesync_client::Op::Patch { fields: doc } => {
            serde_json::Value::Object(doc.clone()).to_string()
        }
        tidesync_client::Op::Delete => String::new(),
    }
}

/// Record keys on which two snapshots differ.
pub fn differing(a: &super::setup::Snapshot, b: &super::setup::Snapshot) -> usize {
    let keys: BTreeMap<_, ()> = a.keys().chain(b.keys()).map(|k| (k, ())).collect();
    keys.keys().filter(|k| a.get(*k) != b.get(*k)).count()
}
