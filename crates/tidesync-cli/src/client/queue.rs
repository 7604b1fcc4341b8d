//! `pending`, `conflicts`, `rejections`: what waits for the server and what it decided.

use std::ops::ControlFlow;
use std::path::Path;

use serde_json::{json, Value};
use tidesync_protocol::{Op, Winner};
use tidesync_store::{Conflict, MutationState, OutboxEntry, Rejection, Resolution};

use super::db::{self, Open};
use super::output::Output;
use crate::table::table;

fn state_name(state: &MutationState) -> &'static str {
    match state {
        MutationState::Queued => "queued",
        MutationState::Sending => "sending",
        MutationState::Acked { .. } => "acked",
        MutationState::Confirmed => "confirmed",
        MutationState::Rejected { .. } => "rejected",
    }
}

fn op_body(op: &Op) -> Value {
    match op {
        Op::Put { doc } => Value::Object(doc.clone()),
        Op::Patch { fields } => Value::Object(fields.clone()),
        Op::Delete => Value::Null,
    }
}

fn entry_json(e: &OutboxEntry) -> Value {
    let m = &e.mutation;
    json!({
        "seq": m.seq,
        "tx": m.tx,
        "op": m.op.kind(),
        "key": m.key.to_string(),
        "body": op_body(&m.op),
        "hlc": m.hlc.to_string(),
        "base_version": m.base_version,
        "state": state_name(&e.state),
        "acked_version": match e.state { MutationState::Acked { version } => version, _ => None },
        "attempts": e.attempts,
        "created_at_ms": e.created_at,
    })
}

/// `pending [--limit N]`: the outbox in seq order.
pub fn pending(db: &Path, limit: usize, out: Output) -> anyhow::Result<()> {
    let store = db::read(db)?;
    let total = store.outbox_stats()?.pending;
    let mut entries = Vec::new();
    store.for_each_outbox(|e| {
        if entries.len() >= limit {
            return ControlFlow::Break(());
        }
        entries.push(e);
        ControlFlow::Continue(())
    })?;
    let json = json!({
        "total": total,
        "mutations": entries.iter().map(entry_json).collect::<Vec<_>>(),
    });
    out.emit(json, || {
        if entries.is_empty() {
            return "the outbox is empty: nothing waits for the server".to_owned();
        }
        let mut rows = vec![["seq", "tx", "op", "key", "state"]
            .map(String::from)
            .to_vec()];
        for e in &entries {
            let m = &e.mutation;
            rows.push(vec![
                m.seq.to_string(),
                m.tx.to_string(),
                m.op.kind().to_owned(),
                m.key.to_string(),
                state_name(&e.state).to_owned(),
            ]);
        }
        let mut text = table(&rows);
        text.push_str(&format!("{total} pending"));
        if (entries.len() as u64) < total {
            text.push_str(&format!(" ({} shown; --limit to see more)", entries.len()));
        }
        text
    });
    Ok(())
}

fn conflict_json(c: &Conflict) -> Value {
    json!({
        "id": c.id,
        "seq": c.seq,
        "key": c.key.to_string(),
        "version": c.version,
        "fields": c.fields.iter().map(|f| json!({
            "field": f.field,
            "local": f.local,
            "server": f.server,
            "winner": match f.winner { Winner::Local => "local", Winner::Server => "server" },
        })).collect::<Vec<_>>(),
        "created_at_ms": c.created_at,
    })
}

fn show(value: Option<&Value>) -> String {
    value.map_or("(removed)".to_owned(), Value::to_string)
}

/// `conflicts`.
pub fn conflicts(db: &Path, out: Output) -> anyhow::Result<()> {
    let store = db::read(db)?;
    let list = store.conflicts()?;
    out.emit(
        json!({"conflicts": list.iter().map(conflict_json).collect::<Vec<_>>()}),
        || {
            if list.is_empty() {
                return "no conflicts".to_owned();
            }
            let mut text = String::new();
            for c in &list {
                text.push_str(&format!(
                    "conflict {} on {} (seq {}, version {})\n",
                    c.id, c.key, c.seq, c.version
                ));
                for f in &c.fields {
                    text.push_str(&format!(
                        "  {}: local {} / server {}; {} won\n",
                        f.field,
                        show(f.local.as_ref()),
                        show(f.server.as_ref()),
                        match f.winner {
                            Winner::Local => "local",
                            Winner::Server => "server",
                        }
                    ));
                }
            }
            text.push_str(
                "settle with: tidesync client --db FILE conflicts resolve ID local|server",
            );
            text
        },
    );
    Ok(())
}

/// `conflicts resolve ID local|server`.
pub fn resolve(db: &Path, id: i64, keep_local: bool, out: Output) -> anyhow::Result<()> {
    let resolution = if keep_local {
        Resolution::KeepLocal
    } else {
        Resolution::KeepServer
    };
    let receipt = db::write(db, Open::Existing, |store| {
        Ok(store.resolve_conflict(id, resolution)?)
    })?;
    out.emit(
        json!({"resolved": id, "seq": receipt.map(|r| r.seq)}),
        || match receipt {
            Some(r) => format!("conflict {id} resolved: queued seq {} to enforce it", r.seq),
            None => format!("conflict {id} resolved: nothing to change, that side already stood"),
        },
    );
    Ok(())
}

fn rejection_json(r: &Rejection) -> Value {
    json!({
        "seq": r.seq,
        "tx": r.tx,
        "key": r.key.to_string(),
        "op": r.op.kind(),
        "body": op_body(&r.op),
        "code": r.code.as_str(),
        "message": r.message,
        "rejected_at_ms": r.rejected_at,
    })
}

/// `rejections`.
pub fn rejections(db: &Path, out: Output) -> anyhow::Result<()> {
    let store = db::read(db)?;
    let list = store.rejections()?;
    out.emit(
        json!({"rejections": list.iter().map(rejection_json).collect::<Vec<_>>()}),
        || {
            if list.is_empty() {
                return "no rejections".to_owned();
            }
            let mut rows = vec![["seq", "tx", "op", "key", "code", "message"]
                .map(String::from)
                .to_vec()];
            for r in &list {
                rows.push(vec![
                    r.seq.to_string(),
                    r.tx.to_string(),
                    r.op.kind().to_owned(),
                    r.key.to_string(),
                    r.code.as_str().to_owned(),
                    r.message.clone(),
                ]);
            }
            let mut text = table(&rows);
            text.push_str(
                "retry or drop with: tidesync client --db FILE rejections retry|discard SEQ",
            );
            text
        },
    );
    Ok(())
}

/// `rejections retry SEQ`.
pub fn retry(db: &Path, seq: u64, out: Output) -> anyhow::Result<()> {
    let receipts = db::write(db, Open::Existing, |store| Ok(store.retry_rejection(seq)?))?;
    let seqs: Vec<u64> = receipts.iter().map(|r| r.seq).collect();
    out.emit(json!({"retried": seq, "seqs": seqs}), || {
        let list: Vec<String> = seqs.iter().map(u64::to_string).collect();
        format!(
            "rejected transaction of seq {seq} queued again as seq {}",
            list.join(", ")
        )
    });
    Ok(())
}

/// `rejections discard SEQ`.
pub fn discard(db: &Path, seq: u64, out: Output) -> anyhow::Result<()> {
    let n = db::write(
        db,
        Open::Existing,
        |store| Ok(store.discard_rejection(seq)?),
    )?;
    out.emit(json!({"discarded": seq, "mutations": n}), || {
        format!("rejected transaction of seq {seq} discarded ({n} mutation(s))")
    });
    Ok(())
}
