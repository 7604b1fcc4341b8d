//! [`Engine`]: one open database behind the ABI — a [`Client`], its token provider, and its
//! subscriptions, fed by one thread that forwards the client's events.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once, PoisonError, RwLock};

use tidesync_client::Client;

use crate::abi::{FfiError, TS_ERR_ALREADY_OPEN};
use crate::config::{Identity, OpenConfig};
use crate::events::Hub;
use crate::tokens::FfiTokens;

pub(crate) struct Engine {
    path: PathBuf,
    identity: Identity,
    /// `None` once stopped. Calls clone the `Arc` and release the lock at once, so a long
    /// wait never blocks other calls.
    client: RwLock<Option<Arc<Client>>>,
    tokens: Arc<FfiTokens>,
    hub: Arc<Hub>,
    /// The thread forwarding the client's events to the hub starts with the first
    /// subscription: an engine nobody listens to pays nothing for events.
    pumping: Once,
}

impl Engine {
    /// Opens the database of `config` at its canonical `path`.
    pub(crate) fn open(config: &OpenConfig, path: PathBuf) -> Result<Arc<Engine>, FfiError> {
        let hub = Arc::new(Hub::default());
        let tokens = Arc::new(FfiTokens::new(
            config.token.clone(),
            config.token_wait(),
            hub.clone(),
        ));
        let client = Client::open(config.client_config(path.clone(), tokens.clone())?)?;
        Ok(Arc::new(Engine {
            path,
            identity: config.identity(),
            client: RwLock::new(Some(Arc::new(client))),
            tokens,
            hub,
            pumping: Once::new(),
        }))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Refuses a second open of this file that disagrees on the server or the spaces.
    pub(crate) fn check(&self, config: &OpenConfig) -> Result<(), FfiError> {
        let wanted = config.identity();
        if wanted == self.identity {
            return Ok(());
        }
        Err(FfiError::new(
            TS_ERR_ALREADY_OPEN,
            "already_open",
            format!(
                "{} is already open with server {:?} and spaces {:?}; close every handle of it before opening it with server {:?} and spaces {:?}",
                self.path.display(),
                self.identity.server_url,
                self.identity.spaces,
                wanted.server_url,
                wanted.spaces
            ),
        ))
    }

    /// The client, unless the engine stopped.
    pub(crate) fn client(&self) -> Result<Arc<Client>, FfiError> {
        self.client
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| FfiError::closed("database"))
    }

    pub(crate) fn tokens(&self) -> &FfiTokens {
        &self.tokens
    }

    pub(crate) fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Makes sure the client's events reach the hub (from now on).
    pub(crate) fn start_events(&self, client: &Client) -> Result<(), FfiError> {
        let mut started = Ok(());
        self.pumping.call_once(|| {
            let events = client.subscribe();
            let hub = self.hub.clone();
            // Ends when the client is gone (its event senders drop).
            let spawned = std::thread::Builder::new()
                .name("tidesync-ffi-events".into())
                .spawn(move || {
                    for event in events {
                        hub.publish(&event);
                    }
                });
            if let Err(e) = spawned {
                started = Err(FfiError::from(tidesync_client::ClientError::Thread(
                    e.to_string(),
                )));
            }
        });
        started
    }

    /// Stops the engine: its subscriptions are closed, and its sync thread stops once the
    /// calls in flight return (unsynced work stays in the file).
    pub(crate) fn stop(&self) {
        let client = self
            .client
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // A refresh waiting for a token must not hold the sync thread: wake it.
        self.tokens.set(None);
        self.hub.close_all();
        drop(client);
    }
}
