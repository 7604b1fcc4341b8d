//! Fan-out of status and events to subscribers (plain std channels: no runtime needed to
//! receive them).

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;

use crate::status::{ClientEvent, Status};

#[derive(Debug)]
pub(crate) struct Notifier {
    status: Mutex<Option<Status>>,
    subscribers: Mutex<Vec<Sender<ClientEvent>>>,
}

impl Notifier {
    pub(crate) fn new() -> Notifier {
        Notifier {
            status: Mutex::new(None),
            subscribers: Mutex::new(Vec::new()),
        }
    }

    /// A new subscriber; it first receives the current status.
    pub(crate) fn subscribe(&self) -> Receiver<ClientEvent> {
        let (tx, rx) = channel();
        if let Some(status) = self.current() {
            let _ = tx.send(ClientEvent::Status(status));
        }
        if let Ok(mut subs) = self.subscribers.lock() {
            subs.push(tx);
        }
        rx
    }

    pub(crate) fn current(&self) -> Option<Status> {
        self.status.lock().ok().and_then(|s| s.clone())
    }

    /// Stores `status` and sends it if it differs from the last one.
    pub(crate) fn publish_status(&self, status: Status) {
        let changed = match self.status.lock() {
            Ok(mut current) if current.as_ref() != Some(&status) => {
                *current = Some(status.clone());
                true
            }
            _ => false,
        };
        if changed {
            self.send(ClientEvent::Status(status));
        }
    }

    /// Sends an event to every live subscriber (dropped receivers are forgotten).
    pub(crate) fn send(&self, event: ClientEvent) {
        if let Ok(mut subs) = self.subscribers.lock() {
            subs.retain(|tx| tx.send(event.clone()).is_ok());
        }
    }
}
