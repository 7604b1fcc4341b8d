//! `GET /v1/events?spaces=a,b`: Server-Sent Events telling a client *that* a space moved,
//! never *what* changed: each event is `event: poke` with the space name as its data. The
//! client then pulls, with its own token, through the same permission checks.
//!
//! - On connect: one poke per requested space that has any version (> 0), so a client that
//!   missed pokes while disconnected pulls once.
//! - Then one poke whenever storage reports a new version of a subscribed space, newer than
//!   the version this stream already announced for it (a commit that raced the connect is
//!   not poked twice). Pokes for a space not yet sent are coalesced.
//! - If the stream falls behind storage's broadcast (lagged), it pokes every subscribed
//!   space: a missed poke could hide a change, an extra one only costs an empty pull.
//! - Heartbeat comments (`:`) every `Limits::heartbeat` keep proxies from closing idle
//!   connections and let the server notice a vanished client.
//! - At most `Limits::max_event_streams` streams are open; more get `503 unavailable`.
//!   A client disconnect drops the stream and frees its slot; server shutdown ends it.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderValue;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use tidesync_protocol::SpaceName;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch, OwnedSemaphorePermit};

use crate::error::ApiError;
use crate::extract::Auth;
use crate::metrics::StreamGauge;
use crate::state::AppState;
use crate::storage::Poke;
use crate::validate;

/// The query string of `GET /v1/events`.
#[derive(Debug, Deserialize)]
pub(crate) struct EventsQuery {
    /// Comma-separated space names.
    spaces: String,
}

/// Handles `GET /v1/events`.
pub(crate) async fn events(
    State(state): State<AppState>,
    Auth(grants): Auth,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::invalid(format!(
            "expected ?spaces=name1,name2 ({})",
            rejection.body_text()
        ))
    })?;
    let spaces = validate::event_spaces(&query.spaces, &grants, state.limits())?;
    let stream = PokeStream::open(&state, spaces).await?;
    tracing::info!(spaces = stream.announced.len(), "event stream opened");
    let events = futures::stream::unfold(stream, |mut s| async move {
        let space = s.next_poke().await?;
        Some((Ok(Event::default().event("poke").data(space.as_str())), s))
    });
    Ok(sse_response(&state, events))
}

/// An event stream as the response: heartbeat comments every `Limits::heartbeat`, and the
/// header that asks reverse proxies (nginx) not to buffer it.
pub(crate) fn sse_response<S>(state: &AppState, events: S) -> Response
where
    S: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    let keep_alive = KeepAlive::new().interval(state.limits().heartbeat);
    let mut response = Sse::new(events).keep_alive(keep_alive).into_response();
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// The state of one open stream. Dropping it (client gone, shutdown) frees the stream slot
/// and decrements the open-streams gauge. Also what the RxDB pull stream waits on
/// (`crate::compat::rxdb`).
pub(crate) struct PokeStream {
    /// Per subscribed space, the newest version a poke has covered (on connect: the version
    /// read then).
    announced: BTreeMap<SpaceName, u64>,
    /// Spaces to poke next, each at most once.
    pending: VecDeque<SpaceName>,
    pokes: broadcast::Receiver<Poke>,
    shutdown: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
    _gauge: StreamGauge,
}

impl PokeStream {
    /// Opens a stream over `spaces` (checked readable by the caller): `503 unavailable` while
    /// shutting down or when `max_event_streams` are open. Every space that has a version is
    /// poked first.
    pub(crate) async fn open(
        state: &AppState,
        spaces: Vec<SpaceName>,
    ) -> Result<PokeStream, ApiError> {
        if state.is_shutting_down() {
            return Err(ApiError::unavailable("the server is shutting down"));
        }
        let permit = state
            .try_open_stream()
            .ok_or_else(|| ApiError::unavailable("too many open event streams; retry later"))?;
        // Subscribe before reading versions: a change committed in between is then poked
        // twice rather than never.
        let pokes = state.storage().subscribe();
        let versions = state.storage().space_versions(&spaces).await?;
        let pending = spaces
            .iter()
            .zip(&versions)
            .filter(|(_, version)| **version > 0)
            .map(|(space, _)| space.clone())
            .collect();
        Ok(PokeStream {
            announced: spaces.iter().cloned().zip(versions).collect(),
            pending,
            pokes,
            shutdown: state.shutdown_signal(),
            _permit: permit,
            _gauge: state.metrics().stream_opened(),
        })
    }

    /// The version of `space` read when the stream opened, or the newest one poked since
    /// (0 for a space not subscribed).
    pub(crate) fn announced(&self, space: &SpaceName) -> u64 {
        self.announced.get(space).copied().unwrap_or(0)
    }

    /// The next space to poke, or `None` when the stream must end.
    pub(crate) async fn next_poke(&mut self) -> Option<SpaceName> {
        loop {
            if let Some(space) = self.pending.pop_front() {
                return Some(space);
            }
            let received = tokio::select! {
                biased;
                // Cancel-safe: `wait_for` only observes the watch value. An error means the
                // sender is gone, which is a shutdown too.
                _ = self.shutdown.wait_for(|down| *down) => return None,
                // Cancel-safe: `broadcast::Receiver::recv` loses nothing when dropped.
                received = self.pokes.recv() => received,
            };
            match received {
                Ok(poke) => {
                    if let Some(announced) = self.announced.get_mut(&poke.space) {
                        if poke.version > *announced {
                            *announced = poke.version;
                            self.queue(poke.space);
                        }
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "event stream lagged; poking every space");
                    let all: Vec<_> = self.announced.keys().cloned().collect();
                    all.into_iter().for_each(|space| self.queue(space));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }

    fn queue(&mut self, space: SpaceName) {
        if self.announced.contains_key(&space) && !self.pending.contains(&space) {
            self.pending.push_back(space);
        }
    }
}
