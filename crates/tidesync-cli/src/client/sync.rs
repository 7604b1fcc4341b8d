//! `sync`: open a full client against the server, push and pull until caught up, printing
//! status lines as they change (`Client::wait_until`). Failures that clear by themselves (the
//! server unreachable or failing) are retried with backoff until `--timeout`; one that needs
//! someone to act (a refused token, a refused request, a broken local file) ends it at once.
//! Either way the exit is non-zero with the reason on one line, and a database the command
//! created is removed again.

use std::path::Path;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::json;
use tidesync_client::{
    BackoffPolicy, Client, ClientConfig, ClientError, ClientEvent, FailureKind, SpaceName,
    StaticToken, Status, SyncConfig,
};

use super::db::{self, Open};
use super::output::Output;
use super::store_config;
use crate::time::now_ms;

fn status_line(s: &Status) -> String {
    let mut line = format!(
        "{:?} ({:?}): {} pending",
        s.phase, s.connectivity, s.pending
    )
    .to_lowercase();
    if let Some(up) = s.upload {
        line.push_str(&format!(", uploaded {}/{}", up.done, up.total));
    }
    if let Some(down) = s.download {
        line.push_str(&format!(
            ", downloaded {} ({} remaining)",
            down.received, down.remaining
        ));
    }
    if s.conflicts > 0 {
        line.push_str(&format!(", {} conflicts", s.conflicts));
    }
    if s.rejections > 0 {
        line.push_str(&format!(", {} rejections", s.rejections));
    }
    line
}

fn kind_name(kind: FailureKind) -> &'static str {
    match kind {
        FailureKind::Network => "network",
        FailureKind::Server => "server",
        FailureKind::Auth => "authentication",
        FailureKind::Refused => "refused",
        FailureKind::LocalStore => "local database",
    }
}

/// What the event printer saw.
#[derive(Debug, Default)]
struct Seen {
    rejected: u64,
    conflicts: u64,
}

/// Prints status lines as they change, and every rejection and conflict, until the client
/// closes.
fn print_events(events: Receiver<ClientEvent>, quiet: bool) -> Seen {
    let mut seen = Seen::default();
    let mut last_line = String::new();
    for event in events {
        match event {
            ClientEvent::Status(s) => {
                let line = status_line(&s);
                if line != last_line && !quiet {
                    println!("{line}");
                }
                last_line = line;
            }
            ClientEvent::Rejected { seq, code, message } => {
                seen.rejected += 1;
                if !quiet {
                    println!("rejected: seq {seq}: {} ({message})", code.as_str());
                }
            }
            ClientEvent::Conflict { seq, key, fields } => {
                seen.conflicts += 1;
                if !quiet {
                    let names: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
                    println!("conflict: seq {seq} on {key}: {}", names.join(", "));
                }
            }
            _ => {}
        }
    }
    seen
}

/// Syncs `db` with `server` for `spaces`: until synced, an error that retrying alone will
/// not fix, or the timeout.
pub fn run(
    db: &Path,
    server: &str,
    token: &str,
    spaces: Vec<SpaceName>,
    timeout_s: u64,
    out: Output,
) -> anyhow::Result<()> {
    // The first sync of a new client creates its database, but only in an existing
    // directory, and a failed one leaves none behind.
    let prepared = db::prepare_write(db, Open::Create)?;
    let result = sync(db, server, token, spaces, timeout_s, out);
    if result.is_err() {
        prepared.undo();
    }
    result
}

/// [`run`] once the database was checked; the client is closed when this returns.
fn sync(
    db: &Path,
    server: &str,
    token: &str,
    spaces: Vec<SpaceName>,
    timeout_s: u64,
    out: Output,
) -> anyhow::Result<()> {
    let mut config = ClientConfig::new(db, server, spaces, Arc::new(StaticToken(token.into())));
    config.store = store_config();
    config.sync = SyncConfig {
        backoff: BackoffPolicy {
            base_ms: 100,
            cap_ms: 2_000,
        },
        ..SyncConfig::default()
    };
    config.request_timeout = Duration::from_secs(timeout_s.clamp(1, 30));
    let started_ms = now_ms();
    let client = Client::open(config).with_context(|| format!("cannot open {}", db.display()))?;
    let events = client.subscribe();
    let quiet = out.json;
    let printer = std::thread::spawn(move || print_events(events, quiet));
    // This command's errors (not one stored from an earlier run).
    let failed = |s: &Status| {
        s.last_error
            .as_ref()
            .filter(|e| e.at_ms >= started_ms)
            .cloned()
    };
    // Retrying alone will not fix these: stop at once (the engine would wait for the user).
    let stuck = |s: &Status| failed(s).is_some_and(|e| e.needs_attention);
    let result = client.wait_until(Duration::from_secs(timeout_s), |s| {
        s.is_synced() || stuck(s)
    });
    client.close(); // ends the event stream, so the printer finishes
    let seen = printer
        .join()
        .map_err(|_| anyhow!("the event printer panicked"))?;
    let status = match result {
        Ok(status) => status,
        Err(ClientError::Timeout { last, .. }) => {
            if let Some(err) = last.as_deref().and_then(failed) {
                bail!(
                    "sync failed ({} error), still after retrying for {timeout_s} s: {}",
                    kind_name(err.kind),
                    err.message
                );
            }
            let state = last.as_deref().map(status_line).unwrap_or_default();
            bail!("sync did not finish within {timeout_s} s (last state: {state})");
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(err) = failed(&status).filter(|_| !status.is_synced()) {
        bail!(
            "sync failed ({} error): {}",
            kind_name(err.kind),
            err.message
        );
    }
    if status.pending > 0 {
        bail!("{} mutations still pending", status.pending);
    }
    out.emit(
        json!({
            "synced": true,
            "pending": status.pending,
            "conflicts": status.conflicts,
            "rejections": status.rejections,
            "new_conflicts": seen.conflicts,
            "new_rejections": seen.rejected,
            "last_synced_at_ms": status.last_synced_at_ms,
        }),
        || {
            format!(
                "synced: 0 pending, {} conflicts, {} rejections{}",
                status.conflicts,
                status.rejections,
                if status.conflicts + status.rejections > 0 {
                    " (see `tidesync client conflicts` / `rejections`)"
                } else {
                    ""
                }
            )
        },
    );
    Ok(())
}
