//! The simulated network and the event queue under simulated time.
//!
//! Every request and every answer is a message delivered after a seeded delay. While the
//! network is faulty it drops messages, delays some far beyond the client's request timeout
//! (so a retry overtakes the original, which still arrives and is applied later), delivers
//! some requests twice, cuts answers after the server applied the request (the answer is lost,
//! or the connection resets), and partitions clients from the server for a while. Delays are
//! drawn independently per message, so messages reorder freely.
//!
//! What it does not do: look inside messages (the server and clients do), or use a wall clock
//! or threads. The queue is a `BTreeMap` keyed by (time, insertion order): ties resolve in
//! the order events were scheduled, so a seed replays exactly.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tidesync_core::sync::Failure;
use tidesync_protocol::{PullRequest, PullResponse, PushRequest, PushResponse, RawChange};

use crate::rng::Rng;

/// A request from a client to the server.
#[derive(Debug, Clone)]
pub(crate) enum Request {
    /// `GET /healthz`.
    Probe,
    /// `POST /v1/push`.
    Push(PushRequest),
    /// `POST /v1/pull`.
    Pull(PullRequest),
    /// `GET /v1/events`: open the poke stream.
    Subscribe,
}

/// The server's answer to a request.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// Health probe answered.
    Probe(Result<(), Failure>),
    /// Push answered (an HTTP error is the `Err`).
    Push(Result<PushResponse, Failure>),
    /// Pull answered (documents and stamps as the server stored them, as on the wire).
    Pull(Result<PullResponse<RawChange>, Failure>),
    /// The event stream is connected.
    StreamOpened,
}

/// A message for a client. `id` names the exchange or the stream it belongs to; a client
/// ignores ids it no longer waits for (a late answer after a timeout, or after a crash).
#[derive(Debug, Clone)]
pub(crate) enum ToClient {
    /// The server answered request `id`.
    Answer { id: u64, answer: Answer },
    /// The transport failed request or stream `id` (refused, reset, heartbeat lost).
    Failed { id: u64, failure: Failure },
    /// A poke on stream `id`.
    Poke { id: u64 },
}

/// Something that happens at a point of simulated time.
#[derive(Debug, Clone)]
pub(crate) enum Scheduled {
    /// Request `id` of `client` reaches the server.
    ToServer {
        client: usize,
        id: u64,
        request: Request,
    },
    /// A message reaches `client`. `from_server` messages are lost if the client is
    /// partitioned at arrival; local ones (transport errors) are not.
    ToClient {
        client: usize,
        msg: ToClient,
        from_server: bool,
    },
    /// A client's timer, as the driver set it.
    Timer {
        client: usize,
        incarnation: u32,
        id: u64,
    },
    /// The client-side request timeout of exchange or stream `id`.
    Timeout { client: usize, id: u64 },
    /// An exchange that completes without the network (a token refresh).
    Local { client: usize, id: u64 },
    /// The crashed server comes back.
    ServerRestart,
}

/// Fault rates, in percent, and delays, in ms. Drawn per seed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Faults {
    pub drop_pct: u64,
    pub duplicate_pct: u64,
    pub cut_pct: u64,
    pub spike_pct: u64,
    pub max_delay_ms: u64,
}

impl Faults {
    pub(crate) fn random(rng: &mut Rng) -> Faults {
        Faults {
            drop_pct: rng.range(0, 12),
            duplicate_pct: rng.range(0, 12),
            cut_pct: rng.range(0, 12),
            spike_pct: rng.range(0, 6),
            max_delay_ms: rng.range(5, 400),
        }
    }
}

/// What the network did, for the run's report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Messages handed to the network.
    pub sent: u64,
    /// Messages lost (dropped, or arriving at a partitioned or crashed node).
    pub lost: u64,
    /// Requests delivered twice.
    pub duplicated: u64,
    /// Answers cut after the server applied the request.
    pub cut: u64,
    /// Requests refused at once (server down, client partitioned).
    pub refused: u64,
    /// Messages delayed beyond the request timeout.
    pub spikes: u64,
}

/// The network, the clock and the event queue.
#[derive(Debug)]
pub(crate) struct Net {
    /// Simulated time, ms since the epoch.
    pub now: u64,
    /// The same time, readable by the stores' wall clocks.
    shared: Arc<AtomicU64>,
    order: u64,
    queue: BTreeMap<(u64, u64), Scheduled>,
    faults: Faults,
    /// False once the network healed: messages are only delayed.
    pub faulty: bool,
    rng: Rng,
    /// Partitioned clients and when their partition ends.
    partitions: BTreeMap<usize, u64>,
    /// Whether the server process is running.
    pub server_up: bool,
    next_id: u64,
    /// How long a client waits for an answer.
    pub request_timeout_ms: u64,
    pub stats: NetStats,
}

impl Net {
    pub(crate) fn new(start_ms: u64, faults: Faults, rng: Rng) -> Net {
        Net {
            now: start_ms,
            shared: Arc::new(AtomicU64::new(start_ms)),
            order: 0,
            queue: BTreeMap::new(),
            faults,
            faulty: true,
            rng,
            partitions: BTreeMap::new(),
            server_up: true,
            next_id: 0,
            request_timeout_ms: 10_000,
            stats: NetStats::default(),
        }
    }

    /// A fresh id for an exchange or a stream (unique across clients and restarts).
    pub(crate) fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Schedules `event` at `at` (never in the past).
    pub(crate) fn schedule(&mut self, at: u64, event: Scheduled) {
        self.order += 1;
        self.queue.insert((at.max(self.now), self.order), event);
    }

    /// The next event due at or before `until`, advancing the clock to it.
    pub(crate) fn next_before(&mut self, until: u64) -> Option<Scheduled> {
        let (&(at, order), _) = self.queue.first_key_value()?;
        if at > until {
            return None;
        }
        self.set_now(at);
        self.queue.remove(&(at, order))
    }

    /// Advances the clock to `t` once no event is due before it.
    pub(crate) fn advance_to(&mut self, t: u64) {
        self.set_now(self.now.max(t));
    }

    fn set_now(&mut self, t: u64) {
        self.now = t;
        self.shared.store(t, Ordering::Relaxed);
    }

    /// The simulated clock, for wall clocks that read it.
    pub(crate) fn clock(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.shared)
    }

    fn delay(&mut self) -> u64 {
        if self.faulty && self.rng.chance(self.faults.spike_pct) {
            self.stats.spikes += 1;
            // Often beyond the request timeout: the client gives up and retries, and this
            // message still arrives, late.
            return self.rng.range(2_000, 3 * self.request_timeout_ms);
        }
        self.rng.range(1, self.faults.max_delay_ms)
    }

    /// Whether `client` is cut off from the server now.
    pub(crate) fn is_partitioned(&self, client: usize) -> bool {
        self.partitions
            .get(&client)
            .is_some_and(|until| *until > self.now)
    }

    /// Cuts `client` off from the server until `until`.
    pub(crate) fn partition(&mut self, client: usize, until: u64) {
        let end = self.partitions.entry(client).or_insert(0);
        *end = (*end).max(until);
    }

    /// Ends every partition and every fault: from now on messages are only delayed.
    pub(crate) fn heal(&mut self) {
        self.partitions.clear();
        self.faulty = false;
    }

    /// Sends request `id` from `client`; arranges its client-side timeout.
    pub(crate) fn send_request(&mut self, client: usize, id: u64, request: Request) {
        self.stats.sent += 1;
        let timeout_at = self.now + self.request_timeout_ms;
        self.schedule(timeout_at, Scheduled::Timeout { client, id });
        if !self.server_up || self.is_partitioned(client) {
            // Connection refused (or no route): the transport fails at once.
            self.stats.refused += 1;
            let at = self.now + self.rng.range(1, 30);
            let failure = Failure::Network("connection refused".into());
            self.local(at, client, ToClient::Failed { id, failure });
            return;
        }
        if self.faulty && self.rng.chance(self.faults.drop_pct) {
            self.stats.lost += 1;
            return; // the client times out
        }
        if self.faulty && self.rng.chance(self.faults.duplicate_pct) {
            self.stats.duplicated += 1;
            let at = self.now + self.delay() + self.delay();
            let copy = request.clone();
            self.schedule(
                at,
                Scheduled::ToServer {
                    client,
                    id,
                    request: copy,
                },
            );
        }
        let at = self.now + self.delay();
        self.schedule(
            at,
            Scheduled::ToServer {
                client,
                id,
                request,
            },
        );
    }

    /// Sends a message from the server to `client` (an answer or a poke).
    pub(crate) fn send_to_client(&mut self, client: usize, msg: ToClient) {
        self.stats.sent += 1;
        if self.faulty && self.rng.chance(self.faults.cut_pct) {
            self.stats.cut += 1;
            if self.rng.chance(50) {
                // The connection resets: the client hears of it at once, without the answer.
                let id = match &msg {
                    ToClient::Answer { id, .. }
                    | ToClient::Failed { id, .. }
                    | ToClient::Poke { id } => *id,
                };
                let at = self.now + self.rng.range(1, 50);
                let failure = Failure::Network("connection reset by peer".into());
                self.local(at, client, ToClient::Failed { id, failure });
            }
            return; // else: silence, the client times out
        }
        if self.faulty && self.rng.chance(self.faults.drop_pct) {
            self.stats.lost += 1;
            return;
        }
        let at = self.now + self.delay();
        self.schedule(
            at,
            Scheduled::ToClient {
                client,
                msg,
                from_server: true,
            },
        );
    }

    /// Delivers a message that never crosses the network (a transport error) at `at`.
    pub(crate) fn local(&mut self, at: u64, client: usize, msg: ToClient) {
        self.schedule(
            at,
            Scheduled::ToClient {
                client,
                msg,
                from_server: false,
            },
        );
    }

    /// A draw for whoever needs one outside the network (the server's crash handling).
    pub(crate) fn draw(&mut self, lo: u64, hi: u64) -> u64 {
        self.rng.range(lo, hi)
    }
}
