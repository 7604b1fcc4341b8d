//! Fan-out of status and events to subscribers (plain std channels: no runtime needed to
//! receive them), and waiting for a status.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::status::{ClientEvent, Status};

#[derive(Debug)]
pub(crate) struct Notifier {
    status: Mutex<Option<Status>>,
    /// Signalled whenever the status changes.
    changed: Condvar,
    subscribers: Mutex<Vec<Sender<ClientEvent>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here can be left half-updated by a panic: every critical section is one
    // assignment or one push.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
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
        let (tx, rx) = channel();
        // Under the subscriber lock, so no event sent meanwhile is missed or doubled.
        let mut subs = lock(&self.subscribers);
        if let Some(status) = self.current() {
            let _ = tx.send(ClientEvent::Status(status));
        }
        subs.push(tx);
        rx
    }

    pub(crate) fn current(&self) -> Option<Status> {
        lock(&self.status).clone()
    }

    /// Sends an event to every live subscriber (dropped receivers are forgotten); a status
    /// also becomes the current one.
    pub(crate) fn send(&self, event: ClientEvent) {
        let mut subs = lock(&self.subscribers);
        // Subscribers first: whoever wakes up on the new status finds it in their channel.
        subs.retain(|tx| tx.send(event.clone()).is_ok());
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
