//! The driver's vocabulary: what it is told ([`Input`]) and what it asks ([`Output`]: network
//! work as [`Io`], a [`Timer`], events), and the ids that tie a completion to its start.

use tidesync_core::sync::{Failure, Reachability};
use tidesync_protocol::{CheckedChange, PullRequest, PullResponse, PushRequest, PushResponse};

use crate::status::ClientEvent;
use crate::transport::Transport;

/// Names one exchange (a probe, a push, a pull or a token refresh) from its start to its
/// completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExchangeId(pub(super) u64);

impl ExchangeId {
    /// The number (unique per driver, increasing).
    pub fn get(self) -> u64 {
        self.0
    }
}

/// Names one connection of the event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub(super) u64);

impl StreamId {
    /// The number (unique per driver, increasing; shared with [`ExchangeId`]s).
    pub fn get(self) -> u64 {
        self.0
    }
}

/// Everything the driver reacts to.
#[derive(Debug)]
pub enum Input {
    /// The client started (the store is open). Before it, only [`Input::Pause`] matters.
    Start,
    /// The app wrote locally (the outbox grew, or a conflict or rejection was settled).
    LocalWrite,
    /// The app's network hint.
    Network(Reachability),
    /// The app asks for a sync now (also ends a wait after an error that needed attention).
    SyncNow,
    /// Stop all network activity until [`Input::Resume`].
    Pause,
    /// Resume after [`Input::Pause`].
    Resume,
    /// The health probe finished.
    Probed {
        /// The exchange, as given by [`Io::Health`].
        exchange: ExchangeId,
        /// Its outcome.
        result: Result<(), Failure>,
    },
    /// A push finished.
    Pushed {
        /// The exchange, as given by [`Io::Push`].
        exchange: ExchangeId,
        /// The server's answer, or how the exchange failed.
        result: Result<PushResponse, Failure>,
    },
    /// A pull page arrived (checked by the transport: see
    /// [`check_page`](crate::transport::check_page)).
    Pulled {
        /// The exchange, as given by [`Io::Pull`].
        exchange: ExchangeId,
        /// The page, or how the exchange failed.
        result: Result<PullResponse<CheckedChange>, Failure>,
    },
    /// The token provider answered.
    TokenRefreshed {
        /// The exchange, as given by [`Io::RefreshToken`].
        exchange: ExchangeId,
        /// Whether it produced a fresh token.
        fresh: bool,
    },
    /// The event stream is connected.
    StreamOpened(StreamId),
    /// The event stream ended (or failed to connect).
    StreamClosed(StreamId),
    /// The event stream announced a change on the server.
    Poke(StreamId),
    /// Timer `id` (from [`Output::timer`]) fired.
    TimerFired(u64),
}

/// Network work for the [`Transport`]. Each exchange completes later as the [`Input`] of the
/// same name, carrying its id.
#[derive(Debug, Clone, PartialEq)]
pub enum Io {
    /// `GET /healthz`; completes as [`Input::Probed`].
    Health(ExchangeId),
    /// `POST /v1/push`; completes as [`Input::Pushed`].
    Push(ExchangeId, PushRequest),
    /// `POST /v1/pull`; completes as [`Input::Pulled`].
    Pull(ExchangeId, PullRequest),
    /// Get a fresh token from the app (the old one was refused); completes as
    /// [`Input::TokenRefreshed`].
    RefreshToken(ExchangeId),
    /// Connect `GET /v1/events` (dropping any earlier connection); reports
    /// [`Input::StreamOpened`], then [`Input::Poke`]s, then [`Input::StreamClosed`].
    OpenEvents(StreamId),
    /// Disconnect the event stream (paused, offline, or failing: nothing stays connected).
    CloseEvents,
}

impl Io {
    /// Hands this work to `transport`.
    pub fn start(self, transport: &mut impl Transport) {
        match self {
            Io::Health(exchange) => transport.health(exchange),
            Io::Push(exchange, request) => transport.push(exchange, request),
            Io::Pull(exchange, request) => transport.pull(exchange, request),
            Io::RefreshToken(exchange) => transport.refresh_token(exchange),
            Io::OpenEvents(stream) => transport.open_events(stream),
            Io::CloseEvents => transport.close_events(),
        }
    }
}

/// A timer to set: fire [`Input::TimerFired`]`(id)` at `at_ms` (the driver's clock, ms since
/// the epoch). A new timer replaces the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timer {
    /// Passed back when it fires (stale ids are ignored).
    pub id: u64,
    /// When.
    pub at_ms: u64,
}

/// What one [`Driver::handle`](super::Driver::handle) call asks of the I/O side, in order.
#[derive(Debug, Default)]
pub struct Output {
    /// Network work to start.
    pub io: Vec<Io>,
    /// The timer to set, if it changed.
    pub timer: Option<Timer>,
    /// Events for the app, the new status last (only when it changed).
    pub events: Vec<ClientEvent>,
}
