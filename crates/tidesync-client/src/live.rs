//! Live queries: a query's result now, and again whenever a local write, a pulled page, a
//! rolled-back rejection or a resolved conflict changes it, with what changed.
//!
//! One thread per client (started by the first watch) owns a read-only connection to the
//! file ([`Reader`]), so evaluating never runs on the app's thread, never waits for the
//! store's lock and never holds up a write. It learns what changed from the client's events
//! (records changed per collection, a base reset) and coalesces a burst: the first change
//! opens a window of `throttle` (or of the last pass's duration, if longer), and at its end
//! each query over a changed collection runs once. A result equal to the last one delivered (same records, same documents, same
//! pending flags, same order) is not delivered again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tidesync_protocol::{CollectionName, RecordId, SpaceName};
use tidesync_store::{Query, QueryPage, Reader, Record, StoreConfig};

use crate::error::ClientError;
use crate::notify::Notifier;
use crate::runtime::lock;
use crate::status::ClientEvent;

/// One delivery of a live query: the whole current page, and how it differs from the one
/// delivered before (the first delivery lists every record as added).
#[derive(Debug, Clone, PartialEq)]
pub struct QueryUpdate {
    /// The records, in the query's order.
    pub records: Vec<Record>,
    /// The next page's cursor, if the query has more than one page.
    pub next: Option<String>,
    /// Records now in the result that were not.
    pub added: Vec<RecordId>,
    /// Records no longer in it.
    pub removed: Vec<RecordId>,
    /// Records still in it whose document or pending flag changed.
    pub changed: Vec<RecordId>,
}

impl QueryUpdate {
    /// Folds `later` (the update delivered after this one) in, for a receiver that has seen
    /// neither: `later`'s records, and the diff from before this update to after `later`.
    /// `added` and `removed` are exact; `changed` may also list a record that changed and
    /// changed back.
    pub fn merge(&mut self, later: QueryUpdate) {
        let before: BTreeSet<&RecordId> = self
            .records
            .iter()
            .map(|r| &r.key.id)
            .filter(|id| !self.added.contains(id))
            .chain(&self.removed)
            .collect();
        let after: BTreeSet<&RecordId> = later.records.iter().map(|r| &r.key.id).collect();
        let touched: BTreeSet<&RecordId> = self
            .changed
            .iter()
            .chain(&later.changed)
            .chain(&later.added)
            .collect();
        let removed: Vec<RecordId> = self
            .records
            .iter()
            .map(|r| &r.key.id)
            .chain(&self.removed)
            .filter(|id| before.contains(id) && !after.contains(id))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let (added, changed) = {
            let mut added = Vec::new();
            let mut changed = Vec::new();
            for id in later.records.iter().map(|r| &r.key.id) {
                if !before.contains(id) {
                    added.push(id.clone());
                } else if touched.contains(id) {
                    changed.push(id.clone());
                }
            }
            (added, changed)
        };
        *self = QueryUpdate {
            records: later.records,
            next: later.next,
            added,
            removed,
            changed,
        };
    }
}

/// What the live-query thread did so far: to see what live queries cost (a pass per burst,
/// an evaluation per distinct query over a changed collection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LiveQueryStats {
    /// Live queries registered now.
    pub watching: usize,
    /// Passes run (one per burst of changes, or per new live query).
    pub passes: u64,
    /// Queries run in SQLite (equal queries of one pass run once).
    pub evaluations: u64,
    /// Updates delivered (results that changed).
    pub deliveries: u64,
}

#[derive(Debug, Default)]
struct Counters {
    passes: AtomicU64,
    evaluations: AtomicU64,
    deliveries: AtomicU64,
}

/// Where a watcher's updates go.
pub(crate) type Deliver = Box<dyn FnMut(QueryUpdate) -> bool + Send>;

struct Watcher {
    query: Query,
    /// `None` once unwatched (checked under this watcher's lock, so nothing is delivered
    /// after `unwatch` returned).
    deliver: Option<Deliver>,
    last: Option<QueryPage>,
}

type Shared = Arc<Mutex<Watcher>>;

enum Msg {
    Changed(SpaceName, CollectionName),
    Everything,
    Watch(u64),
    Stop,
}

/// The live-query thread of one client.
pub(crate) struct Live {
    watchers: Arc<Mutex<BTreeMap<u64, Shared>>>,
    counters: Arc<Counters>,
    next_id: Mutex<u64>,
    tx: Mutex<Sender<Msg>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

impl Live {
    /// Starts the thread on `path` (a read-only connection), fed by `notifier`.
    pub(crate) fn start(
        path: &std::path::Path,
        config: &StoreConfig,
        notifier: &Notifier,
        throttle: Duration,
    ) -> Result<Live, ClientError> {
        let reader = Reader::open(path, config)?;
        let (tx, rx) = channel();
        let events = tx.clone();
        notifier.attach(Box::new(move |event: &ClientEvent| {
            let msg = match event {
                ClientEvent::RecordsChanged {
                    space, collection, ..
                } => Msg::Changed(space.clone(), collection.clone()),
                ClientEvent::BaseReset | ClientEvent::ChangedElsewhere => Msg::Everything,
                _ => return true,
            };
            events.send(msg).is_ok()
        }));
        let watchers: Arc<Mutex<BTreeMap<u64, Shared>>> = Arc::default();
        let counters: Arc<Counters> = Arc::default();
        let (shared, counting) = (watchers.clone(), counters.clone());
        let thread = std::thread::Builder::new()
            .name("tidesync-live".into())
            .spawn(move || run(&reader, &shared, &counting, &rx, throttle))
            .map_err(|e| ClientError::Thread(e.to_string()))?;
        Ok(Live {
            watchers,
            counters,
            next_id: Mutex::new(0),
            tx: Mutex::new(tx),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Registers a watcher; the live thread delivers its first result at once.
    pub(crate) fn watch(&self, query: Query, deliver: Deliver) -> u64 {
        let id = {
            let mut next = lock(&self.next_id);
            *next += 1;
            *next
        };
        let watcher = Watcher {
            query,
            deliver: Some(deliver),
            last: None,
        };
        lock(&self.watchers).insert(id, Arc::new(Mutex::new(watcher)));
        let _ = lock(&self.tx).send(Msg::Watch(id));
        id
    }

    /// Forgets watcher `id`: once this returns, nothing more is delivered to it (it waits
    /// for a delivery to it under way).
    pub(crate) fn unwatch(&self, id: u64) {
        let watcher = lock(&self.watchers).remove(&id);
        if let Some(watcher) = watcher {
            lock(&watcher).deliver = None;
        }
    }

    pub(crate) fn stats(&self) -> LiveQueryStats {
        LiveQueryStats {
            watching: lock(&self.watchers).len(),
            passes: self.counters.passes.load(Ordering::Relaxed),
            evaluations: self.counters.evaluations.load(Ordering::Relaxed),
            deliveries: self.counters.deliveries.load(Ordering::Relaxed),
        }
    }

    /// Stops the thread and waits for it.
    pub(crate) fn stop(&self) {
        let _ = lock(&self.tx).send(Msg::Stop);
        let thread = lock(&self.thread).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

/// What the next pass runs.
#[derive(Default)]
struct Pending {
    collections: BTreeSet<(SpaceName, CollectionName)>,
    everything: bool,
    fresh: BTreeSet<u64>,
}

fn run(
    reader: &Reader,
    watchers: &Mutex<BTreeMap<u64, Shared>>,
    counters: &Counters,
    rx: &Receiver<Msg>,
    throttle: Duration,
) {
    let mut pending = Pending::default();
    // The end of the current window: the first change opens it, its end runs the pass.
    let mut window: Option<Instant> = None;
    // A window lasts the throttle, or as long as the last pass took if that was longer:
    // however fast changes come, live queries take at most about half of one core.
    let mut gather = throttle;
    loop {
        let msg = match window {
            Some(end) => rx.recv_timeout(end.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match msg {
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Ok(Msg::Changed(space, collection)) => {
                pending.collections.insert((space, collection));
                window.get_or_insert_with(|| Instant::now() + gather);
            }
            Ok(Msg::Everything) => {
                pending.everything = true;
                window.get_or_insert_with(|| Instant::now() + gather);
            }
            Ok(Msg::Watch(id)) => {
                // A new watcher is answered at once (its first result).
                pending.fresh.insert(id);
                window = Some(Instant::now());
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        if window.is_some_and(|end| Instant::now() >= end) {
            let snapshot: Vec<(u64, Shared)> = lock(watchers)
                .iter()
                .map(|(id, w)| (*id, w.clone()))
                .collect();
            counters.passes.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let gone = evaluate(reader, &snapshot, counters, &std::mem::take(&mut pending));
            gather = throttle.max(started.elapsed());
            let mut watchers = lock(watchers);
            for id in gone {
                watchers.remove(&id);
            }
            window = None;
        }
    }
}

/// Runs every watcher whose collection changed (or that is new) once; equal queries run
/// once. Returns the watchers whose receiver is gone.
fn evaluate(
    reader: &Reader,
    watchers: &[(u64, Shared)],
    counters: &Counters,
    pending: &Pending,
) -> Vec<u64> {
    let mut ran: Vec<(Query, QueryPage)> = Vec::new();
    let mut gone = Vec::new();
    for (id, watcher) in watchers {
        let mut w = lock(watcher);
        let touched = pending.everything
            || pending.fresh.contains(id)
            || pending
                .collections
                .contains(&(w.query.space.clone(), w.query.collection.clone()));
        if !touched || w.deliver.is_none() {
            continue;
        }
        let page = match ran.iter().find(|(q, _)| *q == w.query) {
            Some((_, page)) => page.clone(),
            None => match reader.query(&w.query) {
                Ok(page) => {
                    counters.evaluations.fetch_add(1, Ordering::Relaxed);
                    ran.push((w.query.clone(), page.clone()));
                    page
                }
                Err(e) => {
                    // Kept as it was; the next change runs it again.
                    tracing::warn!(error = %e, "a live query failed");
                    continue;
                }
            },
        };
        if w.last.as_ref() == Some(&page) {
            continue;
        }
        let update = diff(w.last.as_ref(), &page);
        w.last = Some(page);
        counters.deliveries.fetch_add(1, Ordering::Relaxed);
        let delivered = w.deliver.as_mut().is_some_and(|deliver| deliver(update));
        if !delivered {
            w.deliver = None;
            gone.push(*id);
        }
    }
    gone
}

fn diff(before: Option<&QueryPage>, now: &QueryPage) -> QueryUpdate {
    let old: BTreeMap<&RecordId, &Record> = before
        .map(|p| p.records.iter().map(|r| (&r.key.id, r)).collect())
        .unwrap_or_default();
    let new: BTreeMap<&RecordId, &Record> = now.records.iter().map(|r| (&r.key.id, r)).collect();
    QueryUpdate {
        records: now.records.clone(),
        next: now.next.clone(),
        added: now
            .records
            .iter()
            .filter(|r| !old.contains_key(&r.key.id))
            .map(|r| r.key.id.clone())
            .collect(),
        removed: before
            .map(|p| {
                p.records
                    .iter()
                    .filter(|r| !new.contains_key(&r.key.id))
                    .map(|r| r.key.id.clone())
                    .collect()
            })
            .unwrap_or_default(),
        changed: now
            .records
            .iter()
            .filter(|r| old.get(&r.key.id).is_some_and(|o| *o != *r))
            .map(|r| r.key.id.clone())
            .collect(),
    }
}

/// A registered live query: dropping it stops the updates (see [`crate::Client::watch_with`]).
#[derive(Debug)]
pub struct Watch {
    id: u64,
    live: Weak<Live>,
}

impl Watch {
    pub(crate) fn new(id: u64, live: &Arc<Live>) -> Watch {
        Watch {
            id,
            live: Arc::downgrade(live),
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(live) = self.live.upgrade() {
            live.unwatch(self.id);
        }
    }
}

/// A live query's updates, in order, until dropped (see [`crate::Client::watch`]).
#[derive(Debug)]
pub struct LiveQuery {
    updates: Receiver<QueryUpdate>,
    _watch: Watch,
}

impl LiveQuery {
    pub(crate) fn new(updates: Receiver<QueryUpdate>, watch: Watch) -> LiveQuery {
        LiveQuery {
            updates,
            _watch: watch,
        }
    }

    /// The next update, waiting for it (`None` once the client closed).
    pub fn recv(&self) -> Option<QueryUpdate> {
        self.updates.recv().ok()
    }

    /// The next update, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<QueryUpdate> {
        self.updates.recv_timeout(timeout).ok()
    }

    /// An update, if one is waiting.
    pub fn try_recv(&self) -> Option<QueryUpdate> {
        self.updates.try_recv().ok()
    }

    /// Updates as they come, until the client closes.
    pub fn iter(&self) -> impl Iterator<Item = QueryUpdate> + '_ {
        self.updates.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tidesync_protocol::RecordKey;

    fn page(records: &[(&str, i64)]) -> QueryPage {
        QueryPage {
            records: records
                .iter()
                .map(|(id, n)| Record {
                    key: RecordKey::parse("s", "c", id).unwrap(),
                    doc: json!({ "n": n }).as_object().unwrap().clone(),
                    pending: false,
                })
                .collect(),
            next: None,
        }
    }

    fn names(ids: &[RecordId]) -> Vec<&str> {
        let mut names: Vec<&str> = ids.iter().map(RecordId::as_str).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn a_diff_names_what_came_went_and_changed() {
        let before = page(&[("a", 1), ("b", 1), ("c", 1)]);
        let now = page(&[("c", 2), ("a", 1), ("d", 1)]);
        let u = diff(Some(&before), &now);
        assert_eq!(names(&u.added), ["d"]);
        assert_eq!(names(&u.removed), ["b"]);
        assert_eq!(names(&u.changed), ["c"]);
        let first = diff(None, &before);
        assert_eq!(names(&first.added), ["a", "b", "c"]);
    }

    #[test]
    fn merged_updates_diff_from_before_the_first_to_after_the_last() {
        // Every sequence of three results over four ids with two document versions.
        let all: Vec<Vec<(&str, i64)>> = (0..81u32)
            .map(|mut code| {
                ["a", "b", "c", "d"]
                    .iter()
                    .filter_map(|id| {
                        let state = code % 3;
                        code /= 3;
                        (state > 0).then_some((*id, i64::from(state)))
                    })
                    .collect()
            })
            .collect();
        for s0 in all.iter().step_by(7) {
            for s1 in all.iter().step_by(5) {
                for s2 in all.iter().step_by(3) {
                    let (p0, p1, p2) = (page(s0), page(s1), page(s2));
                    let mut merged = diff(Some(&p0), &p1);
                    merged.merge(diff(Some(&p1), &p2));
                    let direct = diff(Some(&p0), &p2);
                    assert_eq!(merged.records, p2.records);
                    assert_eq!(
                        names(&merged.added),
                        names(&direct.added),
                        "{s0:?} {s1:?} {s2:?}"
                    );
                    assert_eq!(names(&merged.removed), names(&direct.removed));
                    // Exact changes are all there; extra ones only where something changed
                    // and changed back.
                    for id in &direct.changed {
                        assert!(merged.changed.contains(id), "{s0:?} {s1:?} {s2:?}");
                    }
                    for id in &merged.changed {
                        assert!(p0.ids().contains(&id) && p2.ids().contains(&id));
                    }
                }
            }
        }
    }
}
