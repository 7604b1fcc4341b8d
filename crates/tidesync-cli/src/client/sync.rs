//! `sync`: open a full client against the server, push and pull until caught up, printing
//! status lines as they change. Exits non-zero on an error status or at the timeout.

use std::path::Path;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde_json::json;
use tidesync_client::{Client, ClientConfig, ClientEvent, Phase, StaticToken, Status, SyncConfig};
use tidesync_core::sync::{BackoffPolicy, FailureKind};
use tidesync_protocol::SpaceName;

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
    }
}

/// Syncs `db` with `server` for `spaces`.
pub fn run(
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
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    let mut last_line = String::new();
    let mut rejected = 0u64;
    let mut conflicts = 0u64;
    let result = loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        let event = match events.recv_timeout(wait.min(Duration::from_millis(200))) {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) => {
                if Instant::now() >= deadline {
                    break Err(anyhow!(
                        "sync did not finish within {timeout_s} s (last state: {last_line})"
                    ));
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => {
                break Err(anyhow!("the sync thread stopped unexpectedly"))
            }
        };
        match event {
            ClientEvent::Status(s) => {
                if let Some(err) = s.last_error.as_ref().filter(|e| e.at_ms >= started_ms) {
                    break Err(anyhow!(
                        "sync failed ({} error): {}",
                        kind_name(err.kind),
                        err.message
                    ));
                }
                let line = status_line(&s);
                if line != last_line && !out.json {
                    println!("{line}");
                }
                last_line = line;
                let pulled = s.last_synced_at_ms.is_some_and(|at| at >= started_ms);
                if s.phase == Phase::Idle && s.pending == 0 && pulled {
                    break Ok(s);
                }
            }
            ClientEvent::Rejected { seq, code, message } => {
                rejected += 1;
                if !out.json {
                    println!("rejected: seq {seq}: {} ({message})", code.as_str());
                }
            }
            ClientEvent::Conflict { seq, key, fields } => {
                conflicts += 1;
                if !out.json {
                    let names: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
                    println!("conflict: seq {seq} on {key}: {}", names.join(", "));
                }
            }
            _ => {}
        }
    };
    client.close();
    let status = result?;
    if status.pending > 0 {
        bail!("{} mutations still pending", status.pending);
    }
    out.emit(
        json!({
            "synced": true,
            "pending": status.pending,
            "conflicts": status.conflicts,
            "rejections": status.rejections,
            "new_conflicts": conflicts,
            "new_rejections": rejected,
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
