//! The demo's clients: opening, closing, reading their state, and waiting on them with a
//! deadline while the progress display follows along.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde_json::Value;
use tidesync_client::{Client, ClientConfig, ClientError, CollectionName, ListOptions, Status};

use super::progress::{ClientLine, Progress};
use super::setup::{space, Snapshot, ORDERS, TODOS};

/// One demo client.
#[derive(Debug)]
pub struct Replica {
    /// `c1`, `c2`, ...
    pub name: String,
    /// How it was opened (to reopen it after the kill).
    pub config: ClientConfig,
    /// `None` while it is killed.
    pub client: Option<Client>,
    /// Random writes done so far (updated by the editing thread).
    pub ops_done: AtomicU64,
}

impl Replica {
    /// Opens client `name`.
    pub fn open(name: String, config: ClientConfig) -> anyhow::Result<Replica> {
        let client =
            Client::open(config.clone()).with_context(|| format!("cannot open client {name}"))?;
        Ok(Replica {
            name,
            config,
            client: Some(client),
            ops_done: AtomicU64::new(0),
        })
    }

    /// The open client.
    pub fn client(&self) -> anyhow::Result<&Client> {
        self.client
            .as_ref()
            .ok_or_else(|| anyhow!("client {} is not open", self.name))
    }

    /// Its status (`None` while killed or before the first one).
    pub fn status(&self) -> Option<Status> {
        self.client.as_ref().and_then(Client::status)
    }

    /// Mutations handed out so far (its last seq).
    pub fn last_seq(&self) -> anyhow::Result<u64> {
        let counts = self.client()?.counts().context("cannot read the outbox")?;
        Ok(counts.last_seq)
    }

    /// Caught up: idle, nothing pending, a complete pull done.
    pub fn is_synced(&self) -> bool {
        self.status().is_some_and(|s| s.is_synced())
    }

    /// Every live record in its view.
    pub fn snapshot(&self) -> anyhow::Result<Snapshot> {
        let client = self.client()?;
        let space = space()?;
        let mut out = Snapshot::new();
        for name in [TODOS, ORDERS] {
            let collection = CollectionName::new(name)?;
            let mut options = ListOptions {
                after: None,
                limit: 10_000,
            };
            loop {
                let page = client.list(&space, &collection, &options)?;
                for record in page.records {
                    out.insert(
                        (name.to_owned(), record.key.id.to_string()),
                        Value::Object(record.doc),
                    );
                }
                match page.next {
                    Some(next) => options.after = Some(next),
                    None => break,
                }
            }
        }
        Ok(out)
    }

    /// Its progress line: mutations pushed of handed out, and what it is doing.
    pub fn line(&self) -> ClientLine {
        let Some(status) = self.status() else {
            return ClientLine {
                state: "killed".into(),
                ..ClientLine::default()
            };
        };
        let total = self.last_seq().unwrap_or(0);
        let mut state = format!("{:?}", status.phase).to_lowercase();
        if let Some(up) = status.upload {
            state.push_str(&format!(" ↑{}/{}", up.done, up.total));
        }
        if let Some(down) = status.download {
            state.push_str(&format!(" ↓{} (+{})", down.received, down.remaining));
        }
        state.push_str(&format!(", {} pending", status.pending));
        if status.conflicts > 0 {
            state.push_str(&format!(", {} conflicts", status.conflicts));
        }
        if status.rejections > 0 {
            state.push_str(&format!(", {} rejected", status.rejections));
        }
        ClientLine {
            done: total.saturating_sub(status.pending),
            total,
            state,
        }
    }
}

/// Shows every replica's sync line.
pub fn show_sync(progress: &mut Progress, replicas: &[Replica]) {
    for (i, r) in replicas.iter().enumerate() {
        progress.client(i, r.line());
    }
    progress.flush(false);
}

/// Shows every replica's editing progress (`ops` writes each).
pub fn show_edits(progress: &mut Progress, replicas: &[Replica], ops: u64) {
    for (i, r) in replicas.iter().enumerate() {
        let done = r.ops_done.load(Ordering::Relaxed);
        let state = if done < ops {
            "offline, editing".to_owned()
        } else {
            "offline, edits queued".to_owned()
        };
        progress.client(
            i,
            ClientLine {
                done,
                total: ops,
                state,
            },
        );
    }
    progress.flush(false);
}

/// Waits until every replica is synced (`Client::wait_synced`), refreshing the display every
/// 50 ms, or fails at `deadline`.
pub fn wait_synced(
    what: &str,
    deadline: Instant,
    progress: &mut Progress,
    replicas: &[Replica],
) -> anyhow::Result<()> {
    for replica in replicas {
        loop {
            show_sync(progress, replicas);
            match replica.client()?.wait_synced(Duration::from_millis(50)) {
                Ok(_) => break,
                Err(ClientError::Timeout { .. }) if Instant::now() < deadline => continue,
                Err(ClientError::Timeout { .. }) => {
                    progress.flush(true);
                    bail!("timed out waiting for {what}");
                }
                Err(e) => {
                    progress.flush(true);
                    return Err(e).with_context(|| {
                        format!("{} failed while waiting for {what}", replica.name)
                    });
                }
            }
        }
    }
    show_sync(progress, replicas);
    Ok(())
}

/// Polls `done` every 50 ms, refreshing the display, until it holds or `deadline` passes.
pub fn wait_until(
    what: &str,
    deadline: Instant,
    progress: &mut Progress,
    replicas: &[Replica],
    mut done: impl FnMut(&[Replica], &mut Progress) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    loop {
        show_sync(progress, replicas);
        if done(replicas, progress)? {
            show_sync(progress, replicas);
            return Ok(());
        }
        if Instant::now() >= deadline {
            progress.flush(true);
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
