//! [`HttpIo`]: the [`Transport`] of the sync thread. It keeps one exchange future (a new one
//! replaces it: dropping a future cancels its request), the event stream, and a prefetched
//! pull page; [`HttpIo::next`] yields their completions as driver [`Input`]s.

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use tidesync_core::sync::Failure;
use tidesync_protocol::{CheckedChange, Cursor, PullRequest, PullResponse, PushRequest, SpaceName};
use tokio::task::JoinHandle;

use crate::driver::{ExchangeId, Input, StreamId};
use crate::transport::http::Http;
use crate::transport::token::TokenSlot;
use crate::transport::Transport;

type Page = Result<PullResponse<CheckedChange>, Failure>;
type Opening = BoxFuture<'static, Result<BoxStream<'static, ()>, Failure>>;

pub(crate) struct HttpIo {
    http: Http,
    tokens: TokenSlot,
    spaces: Vec<SpaceName>,
    exchange: Option<BoxFuture<'static, Input>>,
    opening: Option<(StreamId, Opening)>,
    stream: Option<(StreamId, BoxStream<'static, ()>)>,
    /// The page after the last one received: the cursor it starts at, and its request running
    /// on the runtime's worker thread.
    prefetch: Option<(Cursor, JoinHandle<Page>)>,
    /// The last pull request (the template of a prefetch).
    last_pull: Option<PullRequest>,
}

impl HttpIo {
    pub(crate) fn new(http: Http, tokens: TokenSlot, spaces: Vec<SpaceName>) -> HttpIo {
        HttpIo {
            http,
            tokens,
            spaces,
            exchange: None,
            opening: None,
            stream: None,
            prefetch: None,
            last_pull: None,
        }
    }

    /// The next completion: of the exchange in flight, of the stream's connect, or a poke
    /// or the end of the stream. Cancel-safe: everything is polled by reference.
    pub(crate) async fn next(&mut self) -> Input {
        tokio::select! {
            input = async { self.exchange.as_mut().expect("guarded").await }, if self.exchange.is_some() => {
                self.exchange = None;
                input
            }
            opened = async { self.opening.as_mut().expect("guarded").1.as_mut().await }, if self.opening.is_some() => {
                let (id, _) = self.opening.take().expect("guarded");
                match opened {
                    Ok(stream) => {
                        self.stream = Some((id, stream));
                        Input::StreamOpened(id)
                    }
                    Err(_) => Input::StreamClosed(id),
                }
            }
            poke = async { self.stream.as_mut().expect("guarded").1.next().await }, if self.stream.is_some() => {
                let id = self.stream.as_ref().expect("guarded").0;
                match poke {
                    Some(()) => Input::Poke(id),
                    None => {
                        self.stream = None;
                        Input::StreamClosed(id)
                    }
                }
            }
            else => futures::future::pending().await,
        }
    }

    /// Requests the page after `page` now, on the worker thread, while the sync thread
    /// applies `page`.
    pub(crate) fn prefetch_after(&mut self, page: &PullResponse<CheckedChange>) {
        let Some(template) = self.last_pull.as_ref().filter(|_| page.has_more) else {
            return;
        };
        // Records asked for in full went with the page before; a prefetch asks for none.
        let request = PullRequest {
            cursor: page.cursor.clone(),
            refetch: Vec::new(),
            ..template.clone()
        };
        let cursor = request.cursor.clone();
        let fetch = fetch_page(self.http.clone(), self.tokens.clone(), request);
        if let Some((_, stale)) = self.prefetch.replace((cursor, tokio::spawn(fetch))) {
            stale.abort();
        }
    }
}

async fn fetch_page(http: Http, tokens: TokenSlot, request: PullRequest) -> Page {
    let token = tokens.get();
    let page = http.pull(token.as_deref(), &request).await;
    if matches!(page, Err(Failure::Unauthorized)) {
        tokens.refused(token.as_deref());
    }
    page
}

impl Transport for HttpIo {
    fn health(&mut self, exchange: ExchangeId) {
        let http = self.http.clone();
        self.exchange = Some(
            async move {
                Input::Probed {
                    exchange,
                    result: http.probe().await,
                }
            }
            .boxed(),
        );
    }

    fn push(&mut self, exchange: ExchangeId, request: PushRequest) {
        let http = self.http.clone();
        let tokens = self.tokens.clone();
        self.exchange = Some(
            async move {
                let token = tokens.get();
                let result = http.push(token.as_deref(), &request).await;
                if matches!(result, Err(Failure::Unauthorized)) {
                    tokens.refused(token.as_deref());
                }
                Input::Pushed { exchange, result }
            }
            .boxed(),
        );
    }

    fn pull(&mut self, exchange: ExchangeId, request: PullRequest) {
        self.last_pull = Some(request.clone());
        if let Some((cursor, page)) = self.prefetch.take() {
            // A pull that asks for records in full needs its own request.
            if cursor == request.cursor && request.refetch.is_empty() {
                self.exchange = Some(
                    async move {
                        let result = page.await.unwrap_or_else(|e| {
                            Err(Failure::Network(format!("the prefetched pull failed: {e}")))
                        });
                        Input::Pulled { exchange, result }
                    }
                    .boxed(),
                );
                return;
            }
            page.abort(); // not the page asked for (the cursor moved differently, refetches)
        }
        let fetch = fetch_page(self.http.clone(), self.tokens.clone(), request);
        self.exchange = Some(
            async move {
                Input::Pulled {
                    exchange,
                    result: fetch.await,
                }
            }
            .boxed(),
        );
    }

    fn refresh_token(&mut self, exchange: ExchangeId) {
        let tokens = self.tokens.clone();
        self.exchange = Some(
            async move {
                // The app's provider may block (a network call of its own).
                let fresh = tokio::task::spawn_blocking(move || tokens.refresh())
                    .await
                    .unwrap_or(false);
                Input::TokenRefreshed { exchange, fresh }
            }
            .boxed(),
        );
    }

    fn open_events(&mut self, stream: StreamId) {
        let http = self.http.clone();
        let tokens = self.tokens.clone();
        let spaces = self.spaces.clone();
        self.stream = None;
        self.opening = Some((
            stream,
            async move {
                let token = tokens.get();
                let opened = http.events(token.as_deref(), &spaces).await;
                if matches!(opened, Err(Failure::Unauthorized)) {
                    tokens.refused(token.as_deref());
                }
                opened
            }
            .boxed(),
        ));
    }

    fn close_events(&mut self) {
        // Paused, offline or failing: no request may stay in flight.
        if let Some((_, page)) = self.prefetch.take() {
            page.abort();
        }
        self.stream = None;
        self.opening = None;
    }
}
