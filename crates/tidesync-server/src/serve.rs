//! Running the app on a socket, with graceful shutdown.

use std::future::Future;

use tokio::net::TcpListener;

use crate::app::{app, AppState};

/// Serves the app on `listener` until `shutdown` completes, then shuts down gracefully:
///
/// 1. stop accepting connections and close idle keep-alive connections;
/// 2. end every `GET /v1/events` stream ([`AppState::begin_shutdown`]);
/// 3. wait for requests in flight (pushes, pulls) to finish and their responses to be sent;
/// 4. [`crate::storage::Storage::shutdown`]: finish queued writes, stop the storage.
///
/// Returns the accept loop's I/O error, if any (after the storage was shut down).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let signal_state = state.clone();
    let result = axum::serve(listener, app(state.clone()))
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: finishing requests in flight, ending event streams");
            signal_state.begin_shutdown();
        })
        .await;
    state.storage().shutdown().await;
    tracing::info!("shut down");
    result
}
