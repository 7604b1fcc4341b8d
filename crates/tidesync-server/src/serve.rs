//! Running the app on a socket: the accept loop, per-connection time limits, graceful
//! shutdown.
//!
//! `axum::serve` reads request headers and bodies for as long as a client cares to take, so a
//! slow-loris client (headers one byte a second, or a connection that never says anything)
//! holds a socket and a task forever and blocks graceful shutdown. This module serves the
//! same router, over HTTP/1.1 like `axum::serve` with axum's default features, with hyper's
//! connection builder and these bounds (docs/protocol.md, "Limits"):
//!
//! - **headers**: hyper's `header_read_timeout` ([`Limits::header_read_timeout`]), counted
//!   from when the connection starts waiting for a request head: a new connection that says
//!   nothing, a head that trickles in, and a keep-alive connection left idle are all closed;
//! - **head size**: a request head (request line and headers) over
//!   [`Limits::max_header_bytes`], or with more than 100 header fields (hyper's
//!   `max_headers` default), is answered `431 Request Header Fields Too Large` by hyper
//!   itself (an empty body, not the JSON error body: the router never sees the request) and
//!   the connection is closed;
//! - **body**: the body must arrive within [`Limits::body_read_timeout`] of its head, else the
//!   body read fails (`400 malformed_request`) and the connection is closed;
//! - **declared size**: a body whose `Content-Length` is over [`Limits::max_body_bytes`] is
//!   answered `413 too_large` before a byte of it is read (the router alone would read up to
//!   the limit first, and wait for a body that never comes).
//!
//! What it does not do: TLS, HTTP/2, rate limiting, or a cap on connections (put a proxy in
//! front).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::app::app;
use crate::config::Limits;
use crate::error::ApiError;
use crate::horizon::Pruner;
use crate::state::AppState;

/// Serves the app on `listener` until `shutdown` completes, then shuts down gracefully:
///
/// 1. stop accepting connections and close idle keep-alive connections;
/// 2. end every `GET /v1/events` stream ([`AppState::begin_shutdown`]);
/// 3. wait for requests in flight (pushes, pulls) to finish and their responses to be sent
///    (a client still sending headers or a body is bounded by the read timeouts);
/// 4. [`crate::storage::Storage::shutdown`]: finish queued writes, stop the storage.
///
/// Accept errors (out of file descriptors, ...) are logged and retried after a second, as
/// `axum::serve` does, so this returns `Ok(())` once shut down.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = app(state.clone());
    let limits = Arc::new(state.limits().clone());
    // The history horizon's pruner runs while the server does and stops before the storage.
    let pruner = state.horizon().map(|config| {
        let pruner = Pruner::new(state.storage().clone(), config);
        tokio::spawn(pruner.run(state.shutdown_signal()))
    });
    // Connections watch `signal_tx.closed()`: dropping `signal_rx` tells them to drain.
    let (signal_tx, signal_rx) = watch::channel(());
    // Every connection holds a `close_rx`; `close_tx.closed()` is "all connections are done".
    let (close_tx, close_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            // Cancel-safe: `TcpListener::accept` loses no connection when dropped.
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) if is_connection_error(&err) => continue,
                Err(err) => {
                    tracing::error!(error = %err, "accept failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        tokio::spawn(serve_connection(
            stream,
            router.clone(),
            limits.clone(),
            signal_tx.clone(),
            close_rx.clone(),
        ));
    }
    tracing::info!("shutting down: finishing requests in flight, ending event streams");
    drop(listener);
    state.begin_shutdown();
    if let Some(pruner) = pruner {
        let _ = pruner.await;
    }
    drop(signal_rx);
    drop(close_rx);
    close_tx.closed().await;
    state.storage().shutdown().await;
    tracing::info!("shut down");
    Ok(())
}

/// Errors of one incoming connection (the peer gave up before it was accepted), not of the
/// listener.
fn is_connection_error(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Serves one connection until it closes; on shutdown, lets the request in flight finish.
async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: Arc<Limits>,
    signal_tx: watch::Sender<()>,
    _close_rx: watch::Receiver<()>,
) {
    let service = {
        let limits = limits.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let router = router.clone();
            let limits = limits.clone();
            async move { Ok::<_, std::convert::Infallible>(handle(router, &limits, request).await) }
        })
    };
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
                break;
            }
            // Cancel-safe: `closed` only observes the channel.
            () = signal_tx.closed(), if !draining => {
                connection.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
}

/// One request: refuses a declared body over the limit without reading it, bounds the body's
/// arrival time, then runs the router.
async fn handle(router: Router, limits: &Limits, request: Request<Incoming>) -> Response {
    let declared = request.body().size_hint().lower();
    if declared > limits.max_body_bytes as u64 {
        return ApiError::too_large(format!(
            "the request body is {declared} bytes; the limit is {}",
            limits.max_body_bytes
        ))
        .into_response();
    }
    let deadline = Instant::now() + limits.body_read_timeout;
    let request = request.map(|body| {
        Body::new(DeadlineBody {
            inner: body,
            deadline,
            sleep: None,
            timeout: limits.body_read_timeout,
        })
    });
    match tower::ServiceExt::oneshot(router, request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// A request body that fails once `deadline` passes before it has fully arrived.
struct DeadlineBody {
    inner: Incoming,
    deadline: Instant,
    /// Created on the first wait, so bodies that are already there cost no timer.
    sleep: Option<Pin<Box<Sleep>>>,
    timeout: Duration,
}

/// The error of a [`DeadlineBody`] whose deadline passed.
#[derive(Debug)]
struct BodyTimeout(Duration);

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body did not arrive within {} s",
            self.0.as_secs_f64()
        )
    }
}

impl std::error::Error for BodyTimeout {}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        // The body first: data that is there is taken even at the deadline.
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = self.deadline;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout(self.timeout).into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
