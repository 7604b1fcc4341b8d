//! [`TokenSlot`]: the bearer token of the HTTP transport, asked of the app's
//! [`TokenProvider`] when needed and forgotten when the server refuses it. Never stored.

use std::sync::{Arc, Mutex, PoisonError};

use crate::config::TokenProvider;

/// The current token, shared by the requests in flight.
#[derive(Clone)]
pub(crate) struct TokenSlot {
    provider: Arc<dyn TokenProvider>,
    current: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for TokenSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSlot(…)")
    }
}

impl TokenSlot {
    pub(crate) fn new(provider: Arc<dyn TokenProvider>) -> TokenSlot {
        TokenSlot {
            provider,
            current: Arc::new(Mutex::new(None)),
        }
    }

    /// The token to send now: the one we hold, or the provider's current one.
    pub(crate) fn get(&self) -> Option<String> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.is_none() {
            *current = self.provider.token();
        }
        current.clone()
    }

    /// The server refused `sent` (the token a request carried): ask the provider again next
    /// time, unless the slot already holds another one (a refresh that finished while the
    /// refused request was in flight must not be undone).
    pub(crate) fn refused(&self, sent: Option<&str>) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_deref() == sent {
            *current = None;
        }
    }

    /// Asks the provider for a fresh token (may block: call it off the sync loop); `true`
    /// if it gave one.
    pub(crate) fn refresh(&self) -> bool {
        let fresh = self.provider.refresh();
        let ok = fresh.is_some();
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = fresh;
        ok
    }
}
