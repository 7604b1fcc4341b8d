//! The demo's closing report: what each client pushed, the conflicts and how they were
//! resolved, the rejections and what happened to them, the kill/reopen check, the time
//! taken and the final equality check. Plain aligned text.

use std::fmt::Write as _;
use std::time::Duration;

use crate::table::table;
use crate::time::seconds;

/// One client's row.
#[derive(Debug, Clone, Default)]
pub struct ClientRow {
    /// `c1`, `c2`, ...
    pub name: String,
    /// Random offline writes it made.
    pub local_ops: u64,
    /// Mutations it pushed (every seq it handed out and the server processed).
    pub pushed: u64,
    /// Conflicts it saw.
    pub conflicts: u64,
    /// Rejections it got.
    pub rejections: u64,
    /// Live records in its view at the end.
    pub records: usize,
    /// Whether its view equals the server's.
    pub equal: bool,
    /// How many records differ from the server (when not equal).
    pub differing: usize,
}

/// A conflict and how the demo resolved it.
#[derive(Debug, Clone)]
pub struct ConflictLine {
    /// Who saw it.
    pub client: String,
    /// Record and field.
    pub what: String,
    /// The values and the resolution, in words.
    pub how: String,
}

/// A rejection and what the demo did with it.
#[derive(Debug, Clone)]
pub struct RejectionLine {
    /// Who got it.
    pub client: String,
    /// seq, record and code.
    pub what: String,
    /// What happened next.
    pub outcome: String,
}

/// The kill/reopen check.
#[derive(Debug, Clone, Default)]
pub struct KillCheck {
    /// The client that was killed.
    pub client: String,
    /// Unsent mutations before the kill.
    pub pending_before: u64,
    /// ... and after the reopen.
    pub pending_after: u64,
    /// Whether the outbox held the same mutations (seq, tx, op, key) after the reopen.
    pub queue_same: bool,
    /// The draft as written before the kill.
    pub draft_before: String,
    /// The draft as read after the reopen (`None` if it was gone).
    pub draft_after: Option<String>,
    /// Where the draft went afterwards.
    pub draft_fate: String,
}

impl KillCheck {
    /// Queue and draft both came back.
    pub fn ok(&self) -> bool {
        self.queue_same
            && self.pending_after == self.pending_before
            && self.draft_after.as_deref() == Some(self.draft_before.as_str())
    }
}

/// Everything the summary shows.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The seed of the random edits.
    pub seed: u64,
    /// Random writes per client.
    pub ops: u64,
    /// Per client.
    pub clients: Vec<ClientRow>,
    /// Conflicts seen and resolved.
    pub conflicts: Vec<ConflictLine>,
    /// Rejections seen.
    pub rejections: Vec<RejectionLine>,
    /// The kill/reopen check.
    pub kill: Option<KillCheck>,
    /// (step, time) in order.
    pub steps: Vec<(String, Duration)>,
    /// Wall time of the whole run.
    pub total: Duration,
    /// Live records on the server at the end.
    pub server_records: usize,
    /// The space's final version.
    pub server_version: u64,
    /// Whether every replica equals the server.
    pub converged: bool,
}

impl Report {
    /// The summary as text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let n = self.clients.len();
        let _ = writeln!(
            out,
            "\n== tidesync demo summary: {n} clients × {} ops, seed {}",
            self.ops, self.seed
        );
        let mut rows = vec![vec![
            "client".to_owned(),
            "local ops".to_owned(),
            "pushed".to_owned(),
            "conflicts".to_owned(),
            "rejections".to_owned(),
            "records".to_owned(),
            "equals server".to_owned(),
        ]];
        for c in &self.clients {
            rows.push(vec![
                c.name.clone(),
                c.local_ops.to_string(),
                c.pushed.to_string(),
                c.conflicts.to_string(),
                c.rejections.to_string(),
                c.records.to_string(),
                if c.equal {
                    "✔".to_owned()
                } else {
                    format!("✘ ({} records differ)", c.differing)
                },
            ]);
        }
        let sum = |f: fn(&ClientRow) -> u64| self.clients.iter().map(f).sum::<u64>().to_string();
        rows.push(vec![
            "total".to_owned(),
            sum(|c| c.local_ops),
            sum(|c| c.pushed),
            sum(|c| c.conflicts),
            sum(|c| c.rejections),
            format!("server: {}", self.server_records),
            format!("version {}", self.server_version),
        ]);
        out.push_str(&table(&rows));

        let _ = writeln!(out, "\nconflicts ({}):", self.conflicts.len());
        if self.conflicts.is_empty() {
            let _ = writeln!(out, "  none");
        }
        for c in &self.conflicts {
            let _ = writeln!(out, "  {:<4} {}\n       {}", c.client, c.what, c.how);
        }
        let _ = writeln!(out, "\nrejections ({}):", self.rejections.len());
        if self.rejections.is_empty() {
            let _ = writeln!(out, "  none");
        }
        for r in &self.rejections {
            let _ = writeln!(out, "  {:<4} {}\n       {}", r.client, r.what, r.outcome);
        }
        if let Some(k) = &self.kill {
            let mark = if k.ok() { "✔" } else { "✘" };
            let _ = writeln!(out, "\nkill/reopen of {}: {mark}", k.client);
            let _ = writeln!(
                out,
                "  queue: {} unsent mutations before the kill, {} after the reopen, {}",
                k.pending_before,
                k.pending_after,
                if k.queue_same {
                    "the same mutations: queue restored"
                } else {
                    "NOT the same mutations"
                }
            );
            let _ = writeln!(
                out,
                "  draft: {} before, {} after: {}",
                k.draft_before,
                k.draft_after.as_deref().unwrap_or("(missing)"),
                if k.draft_after.as_deref() == Some(k.draft_before.as_str()) {
                    "draft restored"
                } else {
                    "draft LOST"
                }
            );
            let _ = writeln!(out, "  then: {}", k.draft_fate);
        }
        let _ = writeln!(out, "\ntime:");
        let mut rows: Vec<Vec<String>> = self
            .steps
            .iter()
            .map(|(step, took)| vec![format!("  {step}"), seconds(*took)])
            .collect();
        rows.push(vec!["  total".to_owned(), seconds(self.total)]);
        out.push_str(&table(&rows));
        let _ = writeln!(
            out,
            "\n{} final equality check: {}",
            if self.converged { "✔" } else { "✘" },
            if self.converged {
                format!(
                    "converged, all {n} clients equal the server ({} records)",
                    self.server_records
                )
            } else {
                let bad: Vec<&str> = self
                    .clients
                    .iter()
                    .filter(|c| !c.equal)
                    .map(|c| c.name.as_str())
                    .collect();
                format!("NOT converged: {} differ from the server", bad.join(", "))
            }
        );
        out
    }
}
