//! What the proxy did: counters, their snapshot, and the log of injected faults.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A snapshot of a proxy's counters, from [`FaultProxy::stats`](crate::FaultProxy::stats).
/// All counts are since the proxy started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections the listener accepted, including refused ones.
    pub accepted: u64,
    /// Accepted connections closed at once by [`Refuse`](crate::Refuse) or the plan.
    pub refused: u64,
    /// Connections that could not be forwarded because connecting to the upstream failed.
    pub upstream_connect_failures: u64,
    /// Forwarded connections that are still open.
    pub active: u64,
    /// Forwarded connections that have ended, for whatever reason.
    pub closed: u64,
    /// Bytes forwarded from clients to the upstream.
    pub bytes_to_upstream: u64,
    /// Bytes forwarded from the upstream to clients.
    pub bytes_to_client: u64,
    /// Requests dropped midway by the plan.
    pub requests_dropped: u64,
    /// Responses cut (manually or by the plan).
    pub responses_cut: u64,
    /// Connections closed by [`FaultProxy::kill_all`](crate::FaultProxy::kill_all).
    pub connections_killed: u64,
}

/// One fault the proxy injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultEvent {
    /// The connection's sequence number: 0 for the first connection the proxy accepted.
    pub connection: u64,
    /// What was done to it.
    pub fault: Fault,
}

/// The kinds of injected faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Accepted and closed without contacting the upstream.
    Refused,
    /// The `request`-th request (0-based, per connection) was truncated after `forwarded`
    /// bytes and the connection closed.
    DroppedMidRequest {
        /// Index of the request on its connection.
        request: u64,
        /// Bytes of it the server received.
        forwarded: usize,
    },
    /// The `response`-th response (0-based, per connection) was cut after `forwarded` bytes
    /// reached the client, and the connection closed.
    ResponseCut {
        /// Index of the response on its connection.
        response: u64,
        /// Bytes of it the client received.
        forwarded: usize,
    },
    /// Closed by [`FaultProxy::kill_all`](crate::FaultProxy::kill_all).
    Killed,
}

/// The live counters behind [`ProxyStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub upstream_connect_failures: AtomicU64,
    pub active: AtomicU64,
    pub closed: AtomicU64,
    pub bytes_to_upstream: AtomicU64,
    pub bytes_to_client: AtomicU64,
    pub requests_dropped: AtomicU64,
    pub responses_cut: AtomicU64,
    pub connections_killed: AtomicU64,
    events: Mutex<Vec<FaultEvent>>,
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::SeqCst);
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::SeqCst);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> ProxyStats {
        let get = |c: &AtomicU64| c.load(Ordering::SeqCst);
        ProxyStats {
            accepted: get(&self.accepted),
            refused: get(&self.refused),
            upstream_connect_failures: get(&self.upstream_connect_failures),
            active: get(&self.active),
            closed: get(&self.closed),
            bytes_to_upstream: get(&self.bytes_to_upstream),
            bytes_to_client: get(&self.bytes_to_client),
            requests_dropped: get(&self.requests_dropped),
            responses_cut: get(&self.responses_cut),
            connections_killed: get(&self.connections_killed),
        }
    }

    /// Counts a fault in its counter and appends it to the event log.
    pub(crate) fn record(&self, connection: u64, fault: Fault) {
        let counter = match fault {
            Fault::Refused => &self.refused,
            Fault::DroppedMidRequest { .. } => &self.requests_dropped,
            Fault::ResponseCut { .. } => &self.responses_cut,
            Fault::Killed => &self.connections_killed,
        };
        bump(counter);
        crate::proxy::lock(&self.events).push(FaultEvent { connection, fault });
    }

    pub(crate) fn events(&self) -> Vec<FaultEvent> {
        crate::proxy::lock(&self.events).clone()
    }
}
