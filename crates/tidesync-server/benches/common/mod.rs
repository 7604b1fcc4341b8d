//! What the server benches share: the workload's mutations, the pull timing, medians and the
//! table rows they print.
#![allow(dead_code)] // each bench uses a different subset

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tidesync_protocol::{ClientId, Cursor, Hlc, Mutation, Op, RecordKey, SpaceName};
use tidesync_server::storage::{PullInput, Storage};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A put of task `id` in `space` at `seq` (its own transaction).
pub fn mutation(space: &str, seq: u64, id: u64) -> Mutation {
    let doc = json!({"title": format!("Buy milk #{id}"), "done": id.is_multiple_of(3), "priority": id % 5});
    Mutation {
        seq,
        tx: seq,
        key: RecordKey::parse(space, "todos", &format!("t{id:08}")).expect("valid key"),
        op: Op::Put {
            doc: doc.as_object().cloned().unwrap_or_default(),
        },
        hlc: Hlc::new(now_ms(), (seq % 60_000) as u16).unwrap_or_default(),
        base_version: 0,
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn row(name: &str, measured: String, baseline: String, ratio: f64, target: &str, pass: bool) {
    println!(
        "| {name:<56} | {measured:>10} | {baseline:>16} | {ratio:>5.2}× | {target:<9} | {} |",
        if pass { "PASS" } else { "MISS" }
    );
}

/// A row without a target, for information.
pub fn info_row(name: &str, measured: String, baseline: String, ratio: f64) {
    println!(
        "| {name:<56} | {measured:>10} | {baseline:>16} | {ratio:>5.2}× | {:<9} | —    |",
        "—"
    );
}

/// The median time (seconds) of pulling the last 100 changes of `space`, at `version`.
pub async fn pull_time(storage: &dyn Storage, space: &str, version: u64, reps: usize) -> f64 {
    let space = SpaceName::new(space).expect("valid space");
    let input = PullInput {
        user: "bench".into(),
        client_id: ClientId::new("reader").expect("valid"),
        cursor: [(space.clone(), version - 100)]
            .into_iter()
            .collect::<Cursor>(),
        spaces: vec![space],
        limit: 100,
        echoes: false,
        refetch: Vec::new(),
    };
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        let page = storage.pull(input.clone()).await.expect("pull");
        times.push(start.elapsed().as_secs_f64());
        assert_eq!(page.changes.len(), 100);
    }
    median(times)
}
