//! Fan-out of status and events to subscribers (plain std channels: no runtime needed to
//! receive them), and waiting for a status.

use std::sync::mpsc::{channel, Receiver};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Instant;

use crate::runtime::lock;
use crate::status::{ClientEvent, Status};

/// Where events go: `false` once it wants no more.
pub(crate) type Sink = Box<dyn FnMut(&ClientEvent) -> bool + Send>;

pub(crate) struct Notifier {
    status: Mutex<Option<Status>>,
    /// Signalled whenever the status changes.
    changed: Condvar,
    subscribers: Mutex<Vec<Sink>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}

impl Notifier {
    pub(crate) fn new() -> Notifier {
        Notifier {
            status: Mutex::new(None),
            changed: Condvar::new(),
            subscribers: Mutex::new(Vec::new()),
        }
    }

    /// A new subscriber; it first receives the current status.
    pub(crate) fn subscribe(&self) -> Receiver<ClientEvent> {
        let (tx, rx) = channel::<ClientEvent>();
        // Under the subscriber lock, so no event sent meanwhile is missed or doubled.
        let mut subs = lock(&self.subscribers);
        if let Some(status) = self.current() {
            let _ = tx.send(ClientEvent::Status(status));
        }
        subs.push(Box::new(move |event: &ClientEvent| {
            tx.send(event.clone()).is_ok()
        }));
        rx
    }

    /// A sink called with every event (on the thread that emits it: keep it short).
    pub(crate) fn attach(&self, sink: Sink) {
        lock(&self.subscribers).push(sink);
    }

    pub(crate) fn current(&self) -> Option<Status> {
        lock(&self.status).clone()
    }

    /// Sends an event to every live subscriber (dropped receivers are forgotten); a status
    /// also becomes the current one.
    pub(crate) fn send(&self, event: ClientEvent) {
        let mut subs = lock(&self.subscribers);
        // Subscribers first: whoever wakes up on the new status finds it in their channel.
        subs.retain_mut(|sink| sink(&event));
        if let ClientEvent::Status(status) = event {
            *lock(&self.status) = Some(status);
            self.changed.notify_all();
        }
    }

    /// The first status (the current one included) for which `done` holds, waiting until
    /// `deadline`; `Err` with the last status at the deadline.
    pub(crate) fn wait_until(
        &self,
        deadline: Instant,
        mut done: impl FnMut(&Status) -> bool,
    ) -> Result<Status, Option<Box<Status>>> {
        let mut status = lock(&self.status);
        loop {
            if let Some(current) = status.as_ref().filter(|s| done(s)) {
                return Ok(current.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(status.clone().map(Box::new));
            }
            status = self
                .changed
                .wait_timeout(status, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}
