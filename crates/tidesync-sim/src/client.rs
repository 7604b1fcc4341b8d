//! A simulated client: the real [`Driver`] (the same sync logic `tidesync_client::Client`
//! runs on its sync thread) over the real [`Store`] on its own SQLite file, with the
//! simulated network as its [`Transport`] and a simulated wall clock.
//!
//! What this module adds to the driver is only what a device is: the transport (a request
//! is a message with a fresh network id; like the HTTP transport, starting an exchange
//! abandons the one before, whose late answer is then dropped), timers on the event queue,
//! crashes (the driver, the transport and the store handle are dropped between two steps; the
//! file stays), and the app (local writes and rejection retries through the store, each
//! followed by `Input::LocalWrite` as `Client` does).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tidesync_client::driver::{Driver, DriverConfig, ExchangeId, Input, StreamId};
use tidesync_client::transport::{check_page, Transport};
use tidesync_core::sync::{Failure, Reachability, SyncConfig};
use tidesync_protocol::{ClientId, Doc, Hlc, Op, PullRequest, PushRequest, RecordKey, SpaceName};
use tidesync_store::{Durability, Store, StoreConfig, StoreError, WallClock, WriteReceipt};

use crate::actions::{key_of, tally_key, LocalOp};
use crate::network::{Answer, Net, Request, Scheduled, ToClient};
use crate::rng::Rng;

/// A local write whose call returned, as the app saw it.
#[derive(Debug, Clone)]
pub(crate) struct Written {
    pub seq: u64,
    pub tx: u64,
    pub key: RecordKey,
    pub op: Op,
    pub hlc: Hlc,
}

/// The driver exchange a network request stands for.
#[derive(Debug, Clone, Copy)]
enum Exchange {
    Health(ExchangeId),
    Push(ExchangeId),
    Pull(ExchangeId),
    Token(ExchangeId),
}

/// The transport's connections: the exchange in flight and the event stream, each with the
/// network id of its request (the process's sockets: lost in a crash).
#[derive(Debug, Default)]
struct Sockets {
    exchange: Option<(u64, Exchange)>,
    /// The stream's request id, its driver id, and whether it is connected yet.
    stream: Option<(u64, StreamId, bool)>,
}

/// The simulated network as the driver's [`Transport`], for one client.
struct SimTransport<'a> {
    net: &'a mut Net,
    client: usize,
    sockets: &'a mut Sockets,
}

impl SimTransport<'_> {
    fn request(&mut self, exchange: Exchange, request: Request) {
        let id = self.net.new_id();
        self.sockets.exchange = Some((id, exchange));
        self.net.send_request(self.client, id, request);
    }
}

impl Transport for SimTransport<'_> {
    fn health(&mut self, exchange: ExchangeId) {
        self.request(Exchange::Health(exchange), Request::Probe);
    }

    fn push(&mut self, exchange: ExchangeId, request: PushRequest) {
        self.request(Exchange::Push(exchange), Request::Push(request));
    }

    fn pull(&mut self, exchange: ExchangeId, request: PullRequest) {
        self.request(Exchange::Pull(exchange), Request::Pull(request));
    }

    fn refresh_token(&mut self, exchange: ExchangeId) {
        // The simulated token provider always has a fresh token, at once.
        let id = self.net.new_id();
        self.sockets.exchange = Some((id, Exchange::Token(exchange)));
        let at = self.net.now;
        self.net.schedule(
            at,
            Scheduled::Local {
                client: self.client,
                id,
            },
        );
    }

    fn open_events(&mut self, stream: StreamId) {
        let id = self.net.new_id();
        self.sockets.stream = Some((id, stream, false));
        self.net.send_request(self.client, id, Request::Subscribe);
    }

    fn close_events(&mut self) {
        self.sockets.stream = None;
    }
}

/// Per-client settings drawn per seed.
#[derive(Debug, Clone)]
pub(crate) struct ClientSetup {
    pub index: usize,
    pub path: PathBuf,
    pub client_id: ClientId,
    /// How far the device's clock is off (ms; > the server's max skew → re-stamped).
    pub skew_ms: i64,
    pub push_batch: usize,
    pub pull_limit: u32,
    pub spaces: Vec<SpaceName>,
}

/// One simulated device.
#[derive(Debug)]
pub(crate) struct SimClient {
    pub setup: ClientSetup,
    clock: Arc<AtomicU64>,
    rng: Rng,
    pub incarnation: u32,
    handle_store: Option<Store>,
    driver: Driver,
    sockets: Sockets,
    /// The app's last network hint (re-sent after a restart, as an app would).
    pub offline_hint: bool,
    /// Every write whose call returned, in seq order (the test's memory, survives crashes).
    pub writes: Vec<Written>,
    /// Seqs of rejected mutations the app queued again (as new mutations).
    pub retried: BTreeSet<u64>,
    tally_next: u64,
}

fn open_store(setup: &ClientSetup, clock: &Arc<AtomicU64>) -> Store {
    let clock = Arc::clone(clock);
    let skew = setup.skew_ms;
    let config = StoreConfig {
        // The simulation kills the app, not the machine: Normal survives that.
        durability: Durability::Normal,
        wall_clock: WallClock::new(move || {
            (clock.load(Ordering::Relaxed) as i64 + skew).max(0) as u64
        }),
        ..StoreConfig::default()
    };
    let store = Store::open(&setup.path, config.clone()).expect("open the client store");
    if store.client_id() == &setup.client_id {
        return store;
    }
    // The store draws its client id from the OS's randomness at creation; ids break LWW
    // ties, so a replayable run needs fixed ones. Workaround (no API sets it): rewrite the
    // meta row of the fresh file before anything else uses it.
    drop(store);
    set_client_id(&setup.path, &setup.client_id);
    let store = Store::open(&setup.path, config).expect("reopen the client store");
    assert_eq!(store.client_id(), &setup.client_id, "client id workaround");
    store
}

fn set_client_id(path: &Path, id: &ClientId) {
    let conn = rusqlite::Connection::open(path).expect("open the client file");
    conn.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'client_id'",
        [id.as_str()],
    )
    .expect("set the client id");
}

impl SimClient {
    /// Creates the device's database and starts its sync engine.
    pub(crate) fn start(setup: ClientSetup, net: &mut Net, rng: Rng) -> SimClient {
        let clock = net.clock();
        let store = open_store(&setup, &clock);
        let driver = new_driver(&setup, 0);
        let mut client = SimClient {
            setup,
            clock,
            rng,
            incarnation: 0,
            handle_store: Some(store),
            driver,
            sockets: Sockets::default(),
            offline_hint: false,
            writes: Vec::new(),
            retried: BTreeSet::new(),
            tally_next: 0,
        };
        client.boot(net);
        client
    }

    /// Kills the app (machine, runtime state and store handle are lost) and starts it again
    /// from its database file.
    pub(crate) fn crash_and_restart(&mut self, net: &mut Net) {
        self.sockets = Sockets::default();
        self.incarnation += 1;
        // The old connection closes first (uncommitted work cannot exist between two
        // simulation steps: every store call is one transaction), then the new process opens.
        self.handle_store = None;
        self.handle_store = Some(open_store(&self.setup, &self.clock));
        self.boot(net);
    }

    fn boot(&mut self, net: &mut Net) {
        self.driver = new_driver(&self.setup, self.rng.next_u64());
        self.handle(net, Input::Start);
        if self.offline_hint {
            self.handle(net, Input::Network(Reachability::Offline));
        }
    }

    /// The store handle of the running process.
    pub(crate) fn store(&mut self) -> &mut Store {
        self.handle_store.as_mut().expect("the process is running")
    }

    /// The store handle, for reading.
    pub(crate) fn store_ref(&self) -> &Store {
        self.handle_store.as_ref().expect("the process is running")
    }

    fn device_now(&self, now: u64) -> u64 {
        (now as i64 + self.setup.skew_ms).max(0) as u64
    }

    /// Hands one input to the driver and carries out its output.
    pub(crate) fn handle(&mut self, net: &mut Net, input: Input) {
        let now = self.device_now(net.now);
        let store = self.handle_store.as_mut().expect("the process is running");
        let output = self.driver.handle(now, input, store);
        let client = self.setup.index;
        let mut transport = SimTransport {
            net,
            client,
            sockets: &mut self.sockets,
        };
        for io in output.io {
            io.start(&mut transport);
        }
        if let Some(timer) = output.timer {
            let at = net.now + timer.at_ms.saturating_sub(now);
            let incarnation = self.incarnation;
            net.schedule(
                at,
                Scheduled::Timer {
                    client,
                    incarnation,
                    id: timer.id,
                },
            );
        }
    }

    /// Whether the engine is idle with nothing in flight.
    pub(crate) fn is_idle(&self) -> bool {
        self.driver.is_idle()
    }

    /// A message arrived.
    pub(crate) fn receive(&mut self, net: &mut Net, msg: ToClient) {
        let input = match msg {
            ToClient::Answer {
                id,
                answer: Answer::StreamOpened,
            } => match &mut self.sockets.stream {
                Some((current, stream, opened)) if *current == id => {
                    *opened = true;
                    Input::StreamOpened(*stream)
                }
                _ => return,
            },
            ToClient::Answer { id, answer } => match self.take_exchange(id) {
                Some(exchange) => answered(exchange, Ok(answer)),
                None => return,
            },
            ToClient::Failed { id, failure } => match self.take_exchange(id) {
                Some(exchange) => answered(exchange, Err(failure)),
                None => match self.sockets.stream {
                    Some((current, stream, _)) if current == id => {
                        self.sockets.stream = None;
                        Input::StreamClosed(stream)
                    }
                    _ => return,
                },
            },
            ToClient::Poke { id } => match self.sockets.stream {
                Some((current, stream, true)) if current == id => Input::Poke(stream),
                _ => return,
            },
        };
        self.handle(net, input);
    }

    /// The request timeout of exchange or stream `id` expired.
    pub(crate) fn timeout(&mut self, net: &mut Net, id: u64) {
        let input = match self.take_exchange(id) {
            Some(exchange) => answered(exchange, Err(Failure::Timeout)),
            None => match self.sockets.stream {
                // A connected stream has no timeout; one still connecting gives up.
                Some((current, stream, false)) if current == id => {
                    self.sockets.stream = None;
                    Input::StreamClosed(stream)
                }
                _ => return,
            },
        };
        self.handle(net, input);
    }

    /// An exchange that needed no network finished (the token refresh).
    pub(crate) fn local_done(&mut self, net: &mut Net, id: u64) {
        if let Some(Exchange::Token(exchange)) = self.take_exchange(id) {
            self.handle(
                net,
                Input::TokenRefreshed {
                    exchange,
                    fresh: true,
                },
            );
        }
    }

    /// A timer fired.
    pub(crate) fn timer_fired(&mut self, net: &mut Net, incarnation: u32, id: u64) {
        // A timer of a process that crashed since is gone with it.
        if incarnation == self.incarnation {
            self.handle(net, Input::TimerFired(id));
        }
    }

    fn take_exchange(&mut self, id: u64) -> Option<Exchange> {
        match self.sockets.exchange {
            Some((current, exchange)) if current == id => {
                self.sockets.exchange = None;
                Some(exchange)
            }
            _ => None,
        }
    }

    // ---- the app ------------------------------------------------------------------------

    /// The app writes: one op alone, or several in one local transaction. Records what the
    /// calls returned, then tells the engine (as `Client`'s write calls do).
    pub(crate) fn write(&mut self, net: &mut Net, ops: &[LocalOp]) {
        let me = self.setup.index;
        let mut tally = self.tally_next;
        let receipts = self
            .store()
            .transaction(|tx| {
                let mut receipts = Vec::new();
                for op in ops {
                    receipts.push(match op {
                        LocalOp::Put { key, doc } => tx.put(&key_of(*key), doc.clone())?,
                        LocalOp::Patch { key, fields } => {
                            tx.patch(&key_of(*key), fields.clone())?
                        }
                        LocalOp::Delete { key } => tx.delete(&key_of(*key))?,
                        LocalOp::Tally => {
                            tally += 1;
                            let mut fields = Doc::new();
                            fields.insert("n".into(), tally.into());
                            tx.patch(&tally_key(me), fields)?
                        }
                    });
                }
                Ok::<_, StoreError>(receipts)
            })
            .expect("a local write");
        self.tally_next = tally;
        self.record(&receipts);
        self.handle(net, Input::LocalWrite);
    }

    /// The app retries the oldest rejected transaction, if any (a new transaction, new seqs).
    pub(crate) fn retry_rejection(&mut self, net: &mut Net) {
        let rejections = self.store().rejections().expect("list rejections");
        let Some(first) = rejections.first() else {
            return;
        };
        let tx = first.tx;
        let receipts = self
            .store()
            .retry_rejection(first.seq)
            .expect("retry a rejection");
        self.retried
            .extend(rejections.iter().filter(|r| r.tx == tx).map(|r| r.seq));
        self.record(&receipts);
        self.handle(net, Input::LocalWrite);
    }

    fn record(&mut self, receipts: &[WriteReceipt]) {
        let Some(first) = receipts.first() else {
            return;
        };
        let entries = self
            .store()
            .outbox_batch(first.seq - 1, receipts.len())
            .expect("read the outbox");
        for receipt in receipts {
            let entry = entries
                .iter()
                .find(|e| e.mutation.seq == receipt.seq)
                .expect("a returned write is in the outbox");
            self.writes.push(Written {
                seq: receipt.seq,
                tx: receipt.tx,
                key: entry.mutation.key.clone(),
                op: entry.mutation.op.clone(),
                hlc: receipt.hlc,
            });
        }
    }
}

fn new_driver(setup: &ClientSetup, seed: u64) -> Driver {
    Driver::new(DriverConfig {
        client_id: setup.client_id.clone(),
        spaces: setup.spaces.clone(),
        push_batch: setup.push_batch,
        pull_limit: setup.pull_limit,
        sync: SyncConfig::default(),
        seed,
    })
}

/// The driver input for exchange `exchange` answered with `outcome` (an answer, or a
/// transport failure).
fn answered(exchange: Exchange, outcome: Result<Answer, Failure>) -> Input {
    match (exchange, outcome) {
        (Exchange::Health(exchange), Ok(Answer::Probe(result))) => {
            Input::Probed { exchange, result }
        }
        (Exchange::Health(exchange), Err(failure)) => Input::Probed {
            exchange,
            result: Err(failure),
        },
        (Exchange::Push(exchange), Ok(Answer::Push(result))) => Input::Pushed { exchange, result },
        (Exchange::Push(exchange), Err(failure)) => Input::Pushed {
            exchange,
            result: Err(failure),
        },
        (Exchange::Pull(exchange), Ok(Answer::Pull(result))) => Input::Pulled {
            exchange,
            result: result.and_then(check_page),
        },
        (Exchange::Pull(exchange), Err(failure)) => Input::Pulled {
            exchange,
            result: Err(failure),
        },
        (Exchange::Token(exchange), _) => Input::TokenRefreshed {
            exchange,
            fresh: true,
        },
        (exchange, Ok(answer)) => panic!("{answer:?} cannot answer {exchange:?}"),
    }
}
