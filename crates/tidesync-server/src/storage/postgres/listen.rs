//! Pokes across nodes: what this node knows of space versions, the NOTIFY payloads a push
//! sends, and the LISTEN loop that turns other nodes' notifications into local pokes.
//!
//! The LISTEN connection is dedicated (a pooled connection would be recycled; PgBouncer must
//! give it a session). On every (re)connect, and every `poll` as a backstop, the node
//! re-reads the versions of the spaces it knows, so a notification lost while disconnected
//! (or dropped by PostgreSQL's queue) only delays a poke. Versions seen here are not
//! authoritative: they only decide whether a poke is news.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tidesync_protocol::SpaceName;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_postgres::{AsyncMessage, NoTls};

use crate::storage::postgres::db_error;
use crate::storage::{Poke, StorageError};

/// Largest NOTIFY payload sent (PostgreSQL's limit is 8,000 bytes).
const MAX_PAYLOAD: usize = 7_000;

/// The newest version this node has seen of each space it knows, and the local broadcast.
#[derive(Debug)]
pub(crate) struct Pokes {
    known: Mutex<HashMap<SpaceName, u64>>,
    sender: broadcast::Sender<Poke>,
}

impl Pokes {
    pub(crate) fn new(sender: broadcast::Sender<Poke>) -> Pokes {
        Pokes {
            known: Mutex::new(HashMap::new()),
            sender,
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Poke> {
        self.sender.subscribe()
    }

    /// `space` is at `version`: pokes if that is news.
    pub(crate) fn saw(&self, space: &SpaceName, version: u64) {
        let news = {
            let Ok(mut known) = self.known.lock() else {
                return;
            };
            let entry = known.entry(space.clone()).or_insert(0);
            let news = version > *entry;
            *entry = (*entry).max(version);
            news
        };
        if news {
            // No subscribers is fine: nobody is listening.
            let _ = self.sender.send(Poke {
                space: space.clone(),
                version,
            });
        }
    }

    /// A stream read `space` at `version`: the space is known from now on (re-read on every
    /// reconnect and poll), without poking.
    pub(crate) fn watch(&self, space: &SpaceName, version: u64) {
        if let Ok(mut known) = self.known.lock() {
            let entry = known.entry(space.clone()).or_insert(version);
            *entry = (*entry).max(version);
        }
    }

    fn known(&self) -> Vec<SpaceName> {
        self.known
            .lock()
            .map(|k| k.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// The NOTIFY payloads for a push that moved `moved`: `[["space", version], …]`, split so
/// none exceeds [`MAX_PAYLOAD`]; none when nothing moved.
pub(crate) fn payloads(moved: &BTreeMap<SpaceName, u64>) -> Vec<String> {
    let mut out = Vec::new();
    let mut batch: Vec<(&str, u64)> = Vec::new();
    let mut size = 2;
    for (space, version) in moved {
        let entry = space.as_str().len() + 26;
        if !batch.is_empty() && size + entry > MAX_PAYLOAD {
            out.push(serde_json::json!(batch).to_string());
            batch.clear();
            size = 2;
        }
        batch.push((space.as_str(), *version));
        size += entry;
    }
    if !batch.is_empty() {
        out.push(serde_json::json!(batch).to_string());
    }
    out
}

/// A payload back as versions; anything unreadable is ignored (the poll catches up).
fn parse(payload: &str) -> Vec<(SpaceName, u64)> {
    serde_json::from_str::<Vec<(String, u64)>>(payload)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(space, version)| Some((SpaceName::new(space).ok()?, version)))
        .collect()
}

/// The current versions of `spaces` (0 for a space never written), in order.
pub(crate) async fn read_versions(
    client: &tokio_postgres::Client,
    spaces: &[SpaceName],
) -> Result<Vec<u64>, StorageError> {
    let names: Vec<&str> = spaces.iter().map(|s| s.as_str()).collect();
    let rows = client
        .query(
            "SELECT space, version FROM ts_spaces WHERE space = ANY($1)",
            &[&names],
        )
        .await
        .map_err(db_error("read space versions"))?;
    let found: HashMap<&str, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    Ok(names
        .iter()
        .map(|s| found.get(s).map_or(0, |v| *v as u64))
        .collect())
}

/// Re-reads every known space and pokes what moved.
async fn catch_up(client: &tokio_postgres::Client, pokes: &Pokes) -> Result<(), StorageError> {
    let spaces = pokes.known();
    if spaces.is_empty() {
        return Ok(());
    }
    let versions = read_versions(client, &spaces).await?;
    for (space, version) in spaces.iter().zip(versions) {
        pokes.saw(space, version);
    }
    Ok(())
}

/// The LISTEN loop, until `stop` turns true: connect, LISTEN, catch up, then pokes from
/// notifications and a catch-up every `poll`; on any failure, reconnect with backoff.
pub(crate) async fn run(
    config: tokio_postgres::Config,
    channel: String,
    pokes: Arc<Pokes>,
    poll: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut healthy = true;
    loop {
        if *stop.borrow() {
            return;
        }
        match listen_once(&config, &channel, &pokes, poll, &mut stop).await {
            Ok(()) => return,
            Err(e) => {
                if healthy {
                    tracing::warn!(error = %e, "lost the PostgreSQL LISTEN connection; reconnecting (pokes from other nodes wait)");
                }
                healthy = false;
            }
        }
        tokio::select! {
            () = stopped(&mut stop) => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
        if healthy {
            backoff = Duration::from_millis(100);
        }
    }
}

/// One LISTEN connection's life: `Ok` when told to stop, `Err` when it broke.
async fn listen_once(
    config: &tokio_postgres::Config,
    channel: &str,
    pokes: &Pokes,
    poll: Duration,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    let (client, mut connection) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
    let (notes, mut received) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if notes.send(n.payload().to_owned()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "LISTEN connection ended");
                    return;
                }
            }
        }
    });
    let result = async {
        let quoted = format!("\"{}\"", channel.replace('"', "\"\""));
        client
            .batch_execute(&format!("LISTEN {quoted}"))
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(channel, "listening for pokes from other nodes");
        catch_up(&client, pokes).await.map_err(|e| e.to_string())?;
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                () = stopped(stop) => return Ok(()),
                note = received.recv() => match note {
                    Some(payload) => {
                        for (space, version) in parse(&payload) {
                            pokes.saw(&space, version);
                        }
                    }
                    None => return Err("the connection closed".to_string()),
                },
                _ = tick.tick() => catch_up(&client, pokes).await.map_err(|e| e.to_string())?,
            }
        }
    }
    .await;
    driver.abort();
    result
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_split_below_the_notify_limit() {
        let moved: BTreeMap<SpaceName, u64> = (0..1_000)
            .map(|i| {
                (
                    SpaceName::new(format!("team:{i:04}")).unwrap_or_else(|_| unreachable!()),
                    i,
                )
            })
            .collect();
        let sent = payloads(&moved);
        assert!(sent.len() > 1);
        assert!(sent.iter().all(|p| p.len() <= MAX_PAYLOAD));
        let back: BTreeMap<SpaceName, u64> = sent.iter().flat_map(|p| parse(p)).collect();
        assert_eq!(back, moved);
        assert!(payloads(&BTreeMap::new()).is_empty());
        assert!(parse("not json").is_empty());
    }
}
