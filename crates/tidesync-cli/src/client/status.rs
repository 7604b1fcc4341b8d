//! `status`: local counts, from the store alone (no server).

use std::path::Path;

use serde_json::json;

use super::db;
use super::output::Output;
use crate::time::describe_ms;

/// Prints pending, conflicts, rejections, last synced and the cursor.
pub fn show(db: &Path, out: Output) -> anyhow::Result<()> {
    let store = db::read(db)?;
    let stats = store.outbox_stats()?;
    let unpushed = store.unpushed()?;
    let conflicts = store.conflict_count()?;
    let rejections = store.rejection_count()?;
    let last_synced = store.last_synced_at()?;
    let has_synced = store.has_synced()?;
    let cursor = store.cursor()?;
    let acked = store.acked_through()?;
    let entries = store.restoration().entry_count();
    let json = json!({
        "db": db.display().to_string(),
        "client_id": store.client_id().as_str(),
        "pending": stats.pending,
        "unpushed": unpushed.mutations,
        "last_seq": stats.last_seq,
        "acked_through": acked,
        "oldest_pending_at_ms": stats.oldest_created_at,
        "conflicts": conflicts,
        "rejections": rejections,
        "has_synced": has_synced,
        "last_synced_at_ms": last_synced,
        "cursor": cursor.iter().map(|(s, v)| (s.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "restoration_entries": entries,
    });
    out.emit(json, || {
        let cursor_text = if cursor.is_empty() {
            "(nothing pulled yet)".to_owned()
        } else {
            cursor
                .iter()
                .map(|(s, v)| format!("{s}@{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let rows = vec![
            vec!["database".to_owned(), db.display().to_string()],
            vec!["client id".to_owned(), store.client_id().to_string()],
            vec![
                "pending".to_owned(),
                format!(
                    "{} ({} not yet pushed; last seq {}, acked through {})",
                    stats.pending, unpushed.mutations, stats.last_seq, acked
                ),
            ],
            vec!["conflicts".to_owned(), conflicts.to_string()],
            vec!["rejections".to_owned(), rejections.to_string()],
            vec![
                "last synced".to_owned(),
                last_synced.map_or("never".to_owned(), describe_ms),
            ],
            vec!["cursor".to_owned(), cursor_text],
            vec!["restoration".to_owned(), format!("{entries} entries")],
        ];
        crate::table::table(&rows)
    });
    Ok(())
}
