//! [`FfiTokens`]: the token provider behind the ABI. The app sets the token
//! (`ts_set_token`, or `"token"` in `ts_open`'s config); when the server refuses it, every
//! subscription gets a `token_expired` event and the sync thread waits, bounded, for the app
//! to set a new one.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use tidesync_client::TokenProvider;

use crate::events::Hub;

#[derive(Default)]
struct Current {
    token: Option<String>,
    /// Moves with every `set`.
    generation: u64,
}

pub(crate) struct FfiTokens {
    current: Mutex<Current>,
    changed: Condvar,
    /// How long a refresh waits for the app.
    wait: Duration,
    hub: Arc<Hub>,
}

impl FfiTokens {
    pub(crate) fn new(token: Option<String>, wait: Duration, hub: Arc<Hub>) -> FfiTokens {
        FfiTokens {
            current: Mutex::new(Current {
                token,
                generation: 0,
            }),
            changed: Condvar::new(),
            wait,
            hub,
        }
    }

    /// The app's new token (`None`: it has none).
    pub(crate) fn set(&self, token: Option<String>) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        current.token = token;
        current.generation += 1;
        self.changed.notify_all();
    }
}

impl TokenProvider for FfiTokens {
    fn token(&self) -> Option<String> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .token
            .clone()
    }

    /// Runs on a blocking worker of the sync thread, never on an app thread.
    fn refresh(&self) -> Option<String> {
        let seen = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .generation;
        self.hub.token_expired();
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let (current, _) = self
            .changed
            .wait_timeout_while(current, self.wait, |c| c.generation == seen)
            .unwrap_or_else(PoisonError::into_inner);
        (current.generation != seen)
            .then(|| current.token.clone())
            .flatten()
    }
}
