//! Events by "doorbell and drain". Each subscription has a bounded queue that coalesces: the
//! latest status replaces a queued one, `records_changed` of one collection add up, and an
//! overflow empties the queue into one `resync` event (the app re-reads what it shows). The
//! library rings the subscription's doorbell only when its queue goes from empty to
//! non-empty: a C function with its context, or an int64 (the subscription handle) posted to
//! a Dart port through the `Dart_PostCObject` pointer the app passed. The app drains with
//! `ts_poll_events`, or blocks in `ts_wait_events`. A query subscription (`ts_watch_query`)
//! is the same queue holding `query_result`s, merged while undrained: the app always gets
//! the latest result with the diff from the last one it drained. Nothing ever calls into Dart
//! synchronously; a doorbell whose Dart port is closed (a hot restart) just stops ringing.

use std::collections::VecDeque;
use std::ffi::c_void;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidesync_client::{ClientEvent, CollectionName, QueryUpdate, SpaceName, Status, Watch};

use crate::json;

/// A C doorbell: called (from a library thread) when the queue becomes non-empty. It must
/// return quickly and must not call back into the library on that thread.
pub type TsDoorbell = Option<unsafe extern "C" fn(context: *mut c_void)>;

/// Dart's `Dart_PostCObject` (`NativeApi.postCObject`): posts a message to a port, returns
/// whether the port was open. `message` points to a `Dart_CObject`.
pub type TsDartPostCObject = Option<unsafe extern "C" fn(port: i64, message: *mut c_void) -> bool>;

/// `Dart_CObject` holding an int64 (`Dart_CObject_kInt64`): the type, then the value union
/// (the largest member is 40 bytes, 8-aligned).
#[repr(C)]
struct DartInt64 {
    kind: i32,
    value: [i64; 5],
}

const DART_COBJECT_KINT64: i32 = 3;

/// Where a subscription rings.
pub(crate) enum Doorbell {
    None,
    C {
        ring: unsafe extern "C" fn(*mut c_void),
        context: *mut c_void,
    },
    Dart {
        post: unsafe extern "C" fn(i64, *mut c_void) -> bool,
        port: i64,
    },
}

// SAFETY: the doorbell's context belongs to the app, which promises (docs/ffi.md) that its
// function may be called with it from any thread; the Dart post function is thread-safe by
// Dart's API contract. Nothing here dereferences the context.
unsafe impl Send for Doorbell {}
// SAFETY: as above; the doorbell is only read.
unsafe impl Sync for Doorbell {}

impl Doorbell {
    /// Rings; `false` when nobody can hear it any more (the Dart port closed: the isolate is
    /// gone, e.g. after a hot restart).
    fn ring(&self, handle: u64) -> bool {
        match self {
            Doorbell::None => true,
            Doorbell::C { ring, context } => {
                // SAFETY: the app's function and context, called as documented.
                unsafe { ring(*context) };
                true
            }
            Doorbell::Dart { post, port } => {
                let mut message = DartInt64 {
                    kind: DART_COBJECT_KINT64,
                    value: [handle as i64, 0, 0, 0, 0],
                };
                // SAFETY: `post` is Dart_PostCObject, which copies the message before it
                // returns; `message` outlives the call. A closed port returns false.
                unsafe { post(*port, (&mut message as *mut DartInt64).cast()) }
            }
        }
    }
}

/// One queued event.
#[derive(Debug)]
enum Queued {
    Status(Box<Status>),
    Records {
        space: SpaceName,
        collection: CollectionName,
        count: usize,
    },
    Query(Box<QueryUpdate>),
    Other(Value),
    Resync,
}

impl Queued {
    fn json(&self) -> Value {
        match self {
            Queued::Status(s) => json::event(&ClientEvent::Status((**s).clone())),
            Queued::Records {
                space,
                collection,
                count,
            } => json::event(&ClientEvent::RecordsChanged {
                space: space.clone(),
                collection: collection.clone(),
                count: *count,
            }),
            Queued::Query(update) => json::query_update(update),
            Queued::Other(value) => value.clone(),
            Queued::Resync => json!({"v": 1, "type": "resync"}),
        }
    }
}

#[derive(Debug)]
struct Queue {
    events: VecDeque<Queued>,
    capacity: usize,
    closed: bool,
}

impl Queue {
    /// Adds `event`, coalescing; `true` if the queue was empty before.
    fn push(&mut self, event: Queued) -> bool {
        let was_empty = self.events.is_empty();
        match event {
            Queued::Status(status) => {
                if let Some(slot) = self
                    .events
                    .iter_mut()
                    .find(|e| matches!(e, Queued::Status(_)))
                {
                    *slot = Queued::Status(status);
                    return was_empty;
                }
                self.events.push_back(Queued::Status(status));
            }
            Queued::Records {
                space,
                collection,
                count,
            } => {
                let same = self.events.iter_mut().find_map(|e| match e {
                    Queued::Records {
                        space: s,
                        collection: c,
                        count: n,
                    } if *s == space && *c == collection => Some(n),
                    _ => None,
                });
                match same {
                    Some(n) => *n += count,
                    None => self.events.push_back(Queued::Records {
                        space,
                        collection,
                        count,
                    }),
                }
            }
            Queued::Query(update) => {
                let queued = self.events.iter_mut().find_map(|e| match e {
                    Queued::Query(queued) => Some(queued),
                    _ => None,
                });
                match queued {
                    Some(queued) => queued.merge(*update),
                    None => self.events.push_back(Queued::Query(update)),
                }
            }
            other => self.events.push_back(other),
        }
        if self.events.len() > self.capacity {
            // Too much to keep: one `resync`, and the latest status (what a UI shows first).
            let status = self
                .events
                .drain(..)
                .rev()
                .find(|e| matches!(e, Queued::Status(_)));
            self.events.push_back(Queued::Resync);
            self.events.extend(status);
        }
        was_empty
    }
}

/// One subscription: its queue, and its doorbell.
pub(crate) struct Subscription {
    queue: Mutex<Queue>,
    ready: Condvar,
    /// Read while ringing; `close` takes it for writing and empties it, so no doorbell call
    /// is running or starts once `close` returns.
    bell: RwLock<Doorbell>,
    /// Its own handle (what a Dart doorbell posts), set once it has one.
    handle: std::sync::atomic::AtomicU64,
    /// The live query feeding it, for a query subscription (dropped at close).
    watch: Mutex<Option<Watch>>,
}

impl Subscription {
    pub(crate) fn new(capacity: usize, bell: Doorbell) -> Subscription {
        Subscription {
            queue: Mutex::new(Queue {
                events: VecDeque::new(),
                capacity: capacity.max(2),
                closed: false,
            }),
            ready: Condvar::new(),
            bell: RwLock::new(bell),
            handle: std::sync::atomic::AtomicU64::new(0),
            watch: Mutex::new(None),
        }
    }

    /// Makes this a query subscription fed by `watch`.
    pub(crate) fn set_watch(&self, watch: Watch) {
        *self.watch.lock().unwrap_or_else(PoisonError::into_inner) = Some(watch);
    }

    /// Queues a live query's update; `false`: stop delivering (see [`Subscription::push`]).
    pub(crate) fn push_query(&self, update: QueryUpdate) -> bool {
        self.push(Queued::Query(Box::new(update)))
    }

    pub(crate) fn set_handle(&self, handle: u64) {
        self.handle
            .store(handle, std::sync::atomic::Ordering::Release);
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Each critical section is one queue operation: nothing is left half-done.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `event`; `false` if the subscription is closed, or nobody hears its doorbell
    /// any more (then it closes: a Dart isolate that went away without unsubscribing).
    fn push(&self, event: Queued) -> bool {
        let rang = {
            let mut queue = self.lock();
            if queue.closed {
                return false;
            }
            let was_empty = queue.push(event);
            self.ready.notify_all();
            was_empty
        };
        if !rang {
            return true;
        }
        // Outside the queue lock: a doorbell that drains at once must not deadlock.
        let heard = self
            .bell
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .ring(self.handle.load(std::sync::atomic::Ordering::Acquire));
        if !heard {
            self.abandon();
        }
        heard
    }

    /// Closes the queue and silences the doorbell, keeping the watch (this may run inside
    /// its delivery, which stops it by returning `false`).
    fn abandon(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
        *self.bell.write().unwrap_or_else(PoisonError::into_inner) = Doorbell::None;
    }

    /// Takes up to `max` events (0: all), in order.
    pub(crate) fn drain(&self, max: usize) -> Vec<Value> {
        let mut queue = self.lock();
        let n = if max == 0 {
            queue.events.len()
        } else {
            max.min(queue.events.len())
        };
        queue.events.drain(..n).map(|e| e.json()).collect()
    }

    /// Waits until an event is queued, the subscription closes, or `timeout` passes; then
    /// drains like [`Subscription::drain`].
    pub(crate) fn wait(&self, timeout: Duration, max: usize) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut queue = self.lock();
        while queue.events.is_empty() && !queue.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            queue = self
                .ready
                .wait_timeout(queue, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(queue);
        self.drain(max)
    }

    /// No more events will come (the engine stopped or the app unsubscribed); waiters wake,
    /// and the doorbell is never rung again (a ring under way finishes first).
    pub(crate) fn close(&self) {
        self.abandon();
        // Outside every lock above: dropping the watch waits for a delivery under way, which
        // pushes (and finds the queue closed).
        let watch = self
            .watch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(watch);
    }
}

/// The subscriptions of one engine: event subscriptions get the client's events; query
/// subscriptions are fed by their live query. The engine's stop closes both.
#[derive(Default)]
pub(crate) struct Hub {
    subs: Mutex<Vec<Weak<Subscription>>>,
    queries: Mutex<Vec<Weak<Subscription>>>,
}

fn add_to(list: &Mutex<Vec<Weak<Subscription>>>, sub: &std::sync::Arc<Subscription>) {
    let mut list = list.lock().unwrap_or_else(PoisonError::into_inner);
    list.retain(|s| s.strong_count() > 0);
    list.push(std::sync::Arc::downgrade(sub));
}

fn live(list: &Mutex<Vec<Weak<Subscription>>>) -> Vec<std::sync::Arc<Subscription>> {
    list.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter_map(Weak::upgrade)
        .collect()
}

impl Hub {
    /// An event subscription.
    pub(crate) fn add(&self, sub: &std::sync::Arc<Subscription>) {
        add_to(&self.subs, sub);
    }

    /// A query subscription (closed with the engine, sent no client events).
    pub(crate) fn add_query(&self, sub: &std::sync::Arc<Subscription>) {
        add_to(&self.queries, sub);
    }

    fn each(&self, mut f: impl FnMut(&Subscription)) {
        for sub in &live(&self.subs) {
            f(sub);
        }
    }

    /// Queues a client event on every subscription.
    pub(crate) fn publish(&self, event: &ClientEvent) {
        self.each(|sub| self.publish_to(sub, event));
    }

    /// Queues a client event on one subscription.
    pub(crate) fn publish_to(&self, sub: &Subscription, event: &ClientEvent) {
        sub.push(match event {
            ClientEvent::Status(s) => Queued::Status(Box::new(s.clone())),
            ClientEvent::RecordsChanged {
                space,
                collection,
                count,
            } => Queued::Records {
                space: space.clone(),
                collection: collection.clone(),
                count: *count,
            },
            other => Queued::Other(json::event(other)),
        });
    }

    /// The server refused the token: the app should call `ts_set_token`.
    pub(crate) fn token_expired(&self) {
        self.each(|sub| {
            sub.push(Queued::Other(json!({"v": 1, "type": "token_expired"})));
        });
    }

    /// The engine stopped.
    pub(crate) fn close_all(&self) {
        self.each(Subscription::close);
        for sub in &live(&self.queries) {
            sub.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(collection: &str, count: usize) -> Queued {
        Queued::Records {
            space: SpaceName::new("s").expect("valid"),
            collection: CollectionName::new(collection).expect("valid"),
            count,
        }
    }

    #[test]
    fn the_queue_coalesces_and_an_overflow_becomes_one_resync() {
        let mut q = Queue {
            events: VecDeque::new(),
            capacity: 4,
            closed: false,
        };
        assert!(q.push(records("a", 1)), "empty before: ring");
        assert!(!q.push(records("a", 2)), "not empty: no ring");
        assert!(!q.push(records("b", 1)));
        assert_eq!(q.events.len(), 2, "records of one collection add up");
        assert!(matches!(q.events[0], Queued::Records { count: 3, .. }));
        q.push(Queued::Other(json!({"i": 0})));
        q.push(Queued::Other(json!({"i": 1})));
        assert_eq!(q.events.len(), 4, "at capacity");
        q.push(Queued::Other(json!({"i": 2})));
        assert_eq!(q.events.len(), 1, "over it: one resync instead");
        assert!(matches!(q.events[0], Queued::Resync));
        q.push(Queued::Other(json!({"i": 3})));
        assert_eq!(q.events.len(), 2, "then events queue again");
    }

    #[test]
    fn undrained_query_results_merge_into_one() {
        use tidesync_client::{Record, RecordKey};
        let record = |id: &str| Record {
            key: RecordKey::parse("s", "c", id).expect("valid"),
            doc: Default::default(),
            pending: false,
        };
        let id = |id: &str| tidesync_client::RecordId::new(id).expect("valid");
        let mut q = Queue {
            events: VecDeque::new(),
            capacity: 2,
            closed: false,
        };
        let first = QueryUpdate {
            records: vec![record("a")],
            next: None,
            added: vec![id("a")],
            removed: vec![],
            changed: vec![],
        };
        let second = QueryUpdate {
            records: vec![record("b")],
            next: None,
            added: vec![id("b")],
            removed: vec![id("a")],
            changed: vec![],
        };
        assert!(q.push(Queued::Query(Box::new(first))));
        assert!(!q.push(Queued::Query(Box::new(second))));
        assert_eq!(q.events.len(), 1);
        let json = q.events[0].json();
        assert_eq!(json["type"], "query_result");
        assert_eq!(
            json["added"],
            json!(["b"]),
            "a came and went unseen: {json}"
        );
        assert_eq!(json["removed"], json!([]));
    }

    #[test]
    fn an_overflow_keeps_the_latest_status() {
        let status = |pending| Status {
            connectivity: tidesync_client::Connectivity::Online,
            phase: tidesync_client::Phase::Idle,
            upload: None,
            download: None,
            pending,
            oldest_pending_at_ms: None,
            conflicts: 0,
            rejections: 0,
            last_synced_at_ms: None,
            has_synced: true,
            last_error: None,
            next_retry_at_ms: None,
            history_loss: None,
        };
        let mut q = Queue {
            events: VecDeque::new(),
            capacity: 3,
            closed: false,
        };
        q.push(Queued::Status(Box::new(status(1))));
        q.push(Queued::Status(Box::new(status(2))));
        assert_eq!(q.events.len(), 1, "the latest status replaces a queued one");
        q.push(Queued::Other(json!({"i": 0})));
        q.push(Queued::Other(json!({"i": 1})));
        q.push(Queued::Other(json!({"i": 2})));
        assert_eq!(q.events.len(), 2);
        assert!(matches!(q.events[0], Queued::Resync));
        assert!(matches!(&q.events[1], Queued::Status(s) if s.pending == 2));
    }
}
