//! The sync thread: a private tokio runtime (this loop on the sync thread, one worker for
//! prefetched pull pages) that executes the state
//! machine's instructions and feeds their outcomes back as events.
//!
//! One loop, one `select!`, biased: commands from the app first (so `close` is prompt), then
//! the exchange in flight, the event stream, and the timer. Every branch is cancel-safe: the
//! exchange and the stream are owned futures/streams polled by reference, and the timer is a
//! plain sleep recreated from its deadline.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use tidesync_core::sync::{
    Event, Failure, Instruction, Phase, PullProgress, PushProgress, SyncMachine,
};
use tidesync_protocol::{
    CheckedChange, ClientId, Cursor, PullRequest, PullResponse, PushOutcome, PushRequest,
    PushResponse, RecordKey, PROTOCOL_VERSION,
};
use tidesync_store::Store;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::config::ClientConfig;
use crate::notify::Notifier;
use crate::status::{ClientEvent, DownloadProgress, Status, UploadProgress};
use crate::transport::Http;

/// What the app sends the sync thread.
#[derive(Debug)]
pub(crate) enum Command {
    Event(Event),
    Shutdown,
}

/// One pull page as it came off the wire (documents and stamps still JSON text), checked.
pub(crate) type PullPage = Result<PullResponse<CheckedChange>, Failure>;

/// What an exchange produced, before it becomes a machine event.
pub(crate) enum Completion {
    Probe(Result<(), Failure>),
    Push(Vec<(u64, RecordKey, u64)>, Result<PushResponse, Failure>),
    Pull(PullPage),
    Token(Option<String>),
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn lock(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    // A panic while holding the lock cannot leave the store torn (SQLite transactions roll
    // back on drop), so a poisoned lock is still safe to use.
    store
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) struct Runtime {
    pub store: Arc<Mutex<Store>>,
    pub notifier: Arc<Notifier>,
    pub config: ClientConfig,
    pub client_id: ClientId,
    pub http: Http,
    pub machine: SyncMachine,
    pub commands: UnboundedReceiver<Command>,
    pub token: Option<String>,
    pub timer: Option<(u64, Instant)>,
    pub exchange: Option<BoxFuture<'static, Completion>>,
    pub stream: Option<BoxStream<'static, ()>>,
    pub stream_opening: Option<BoxFuture<'static, Result<BoxStream<'static, ()>, Failure>>>,
    pub upload: Option<UploadProgress>,
    pub download: Option<DownloadProgress>,
    /// The next pull page, requested before the current one is applied (its cursor, and the
    /// request running on the runtime's worker thread), so the server prepares page k+1
    /// while this thread applies page k.
    pub prefetch: Option<(Cursor, tokio::task::JoinHandle<PullPage>)>,
}

impl Runtime {
    pub(crate) async fn run(mut self) {
        if !self.config.start_online {
            self.handle(Event::Pause); // a machine paused before its start starts paused
        }
        self.handle(Event::Start);
        loop {
            let timer = self.timer.map(|(_, at)| at);
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    Some(Command::Event(event)) => self.handle(event),
                    Some(Command::Shutdown) | None => break,
                },
                completion = async { self.exchange.as_mut().expect("guarded").await }, if self.exchange.is_some() => {
                    self.exchange = None;
                    let event = self.complete(completion);
                    self.handle(event);
                }
                opened = async { self.stream_opening.as_mut().expect("guarded").await }, if self.stream_opening.is_some() => {
                    self.stream_opening = None;
                    match opened {
                        Ok(stream) => {
                            self.stream = Some(stream);
                            self.handle(Event::StreamOpened);
                        }
                        Err(_) => self.handle(Event::StreamClosed),
                    }
                }
                poke = async { self.stream.as_mut().expect("guarded").next().await }, if self.stream.is_some() => {
                    match poke {
                        Some(()) => self.handle(Event::Poke),
                        None => {
                            self.stream = None;
                            self.handle(Event::StreamClosed);
                        }
                    }
                }
                () = sleep_until(timer), if timer.is_some() => {
                    if let Some((id, _)) = self.timer.take() {
                        self.handle(Event::TimerFired(id));
                    }
                }
            }
        }
        tracing::debug!("sync thread stopped");
    }

    /// Feeds one event to the machine and carries out what it says.
    fn handle(&mut self, event: Event) {
        if matches!(event, Event::LocalWrite) {
            if let Some(upload) = &mut self.upload {
                // More work joined the upload in progress.
                if let Ok(left) = lock(&self.store).unpushed() {
                    upload.total = upload.done + left.mutations;
                    upload.total_bytes = upload.done_bytes + left.bytes;
                }
            }
        }
        let instructions = self.machine.handle(now_ms(), event);
        for instruction in instructions {
            self.execute(instruction);
        }
        self.publish_status();
    }

    fn execute(&mut self, instruction: Instruction) {
        match instruction {
            Instruction::Probe => {
                let http = self.http.clone();
                self.exchange = Some(async move { Completion::Probe(http.probe().await) }.boxed());
            }
            Instruction::Push => self.start_push(),
            Instruction::Pull => self.start_pull(),
            Instruction::ResetCursor => {
                if let Err(e) = lock(&self.store).reset_base() {
                    tracing::error!(error = %e, "cannot reset the local base");
                }
            }
            Instruction::RefreshToken => {
                let tokens = self.config.tokens.clone();
                self.exchange = Some(
                    async move {
                        let fresh = tokio::task::spawn_blocking(move || tokens.refresh())
                            .await
                            .ok()
                            .flatten();
                        Completion::Token(fresh)
                    }
                    .boxed(),
                );
            }
            Instruction::OpenStream => {
                let http = self.http.clone();
                let token = self.current_token();
                let spaces = self.config.spaces.clone();
                self.stream = None;
                self.stream_opening =
                    Some(async move { http.events(token.as_deref(), &spaces).await }.boxed());
            }
            Instruction::CloseStream => {
                // Paused, offline or failing: no request may stay in flight.
                if let Some((_, page)) = self.prefetch.take() {
                    page.abort();
                }
                self.stream = None;
                self.stream_opening = None;
            }
            Instruction::SetTimer { id, at_ms } => {
                let delay = Duration::from_millis(at_ms.saturating_sub(now_ms()));
                self.timer = Some((id, Instant::now() + delay));
            }
            Instruction::Status(_) => {} // folded into the full status below
        }
    }

    fn current_token(&mut self) -> Option<String> {
        if self.token.is_none() {
            self.token = self.config.tokens.token();
        }
        self.token.clone()
    }

    fn start_push(&mut self) {
        let batch = {
            let mut store = lock(&self.store);
            let batch = match store.next_push_batch(self.config.push_batch) {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the outbox");
                    Vec::new()
                }
            };
            if let (Some(first), Some(last)) = (batch.first(), batch.last()) {
                if self.upload.is_none() {
                    let left = store.unpushed().unwrap_or_default();
                    self.upload = Some(UploadProgress {
                        total: left.mutations,
                        total_bytes: left.bytes,
                        ..UploadProgress::default()
                    });
                }
                if let Err(e) = store.mark_sending(first.mutation.seq, last.mutation.seq) {
                    tracing::warn!(error = %e, "cannot mark mutations as sending");
                }
            }
            batch
        };
        if batch.is_empty() {
            self.upload = None;
            self.exchange = Some(
                futures::future::ready(Completion::Push(
                    Vec::new(),
                    Ok(PushResponse {
                        acked_through: 0,
                        results: Vec::new(),
                    }),
                ))
                .boxed(),
            );
            return;
        }
        let meta: Vec<(u64, RecordKey, u64)> = batch
            .iter()
            .map(|e| {
                let bytes = serde_json::to_vec(&e.mutation.op).map_or(0, |b| b.len() as u64);
                (e.mutation.seq, e.mutation.key.clone(), bytes)
            })
            .collect();
        let request = PushRequest {
            client_id: self.client_id.clone(),
            protocol: PROTOCOL_VERSION,
            mutations: batch.into_iter().map(|e| e.mutation).collect(),
        };
        let http = self.http.clone();
        let token = self.current_token();
        self.exchange = Some(
            async move {
                let result = http.push(token.as_deref(), &request).await;
                Completion::Push(meta, result)
            }
            .boxed(),
        );
    }

    fn start_pull(&mut self) {
        let cursor = match lock(&self.store).cursor() {
            Ok(cursor) => cursor,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the pull cursor");
                Default::default()
            }
        };
        if self.download.is_none() {
            self.download = Some(DownloadProgress::default());
        }
        let request = self.pull_request(cursor);
        if let Some((cursor, page)) = self.prefetch.take() {
            if cursor == request.cursor {
                self.exchange = Some(
                    async move {
                        let page = page.await.unwrap_or_else(|e| {
                            Err(Failure::Network(format!("the prefetched pull failed: {e}")))
                        });
                        Completion::Pull(page)
                    }
                    .boxed(),
                );
                return;
            }
            page.abort(); // the cursor moved differently: that page is not the next one
        }
        let http = self.http.clone();
        let token = self.current_token();
        self.exchange = Some(
            async move { Completion::Pull(http.pull(token.as_deref(), &request).await) }.boxed(),
        );
    }

    fn pull_request(&self, cursor: Cursor) -> PullRequest {
        PullRequest {
            client_id: self.client_id.clone(),
            protocol: PROTOCOL_VERSION,
            cursor: cursor
                .into_iter()
                .filter(|(space, _)| self.config.spaces.contains(space))
                .collect(),
            spaces: self.config.spaces.clone(),
            limit: Some(self.config.pull_limit),
        }
    }

    /// Requests the page after `response` now, on the worker thread, while this one applies
    /// `response`.
    fn prefetch_after(&mut self, response: &PullResponse<CheckedChange>) {
        if !response.has_more {
            return;
        }
        let request = self.pull_request(response.cursor.clone());
        let http = self.http.clone();
        let token = self.current_token();
        let cursor = request.cursor.clone();
        let page = tokio::spawn(async move { http.pull(token.as_deref(), &request).await });
        if let Some((_, stale)) = self.prefetch.replace((cursor, page)) {
            stale.abort();
        }
    }

    /// Applies an exchange's outcome to the store and turns it into a machine event.
    fn complete(&mut self, completion: Completion) -> Event {
        match completion {
            Completion::Probe(result) => Event::ProbeDone(result),
            Completion::Token(fresh) => {
                let ok = fresh.is_some();
                self.token = fresh;
                Event::TokenRefreshed(ok)
            }
            // Nothing was queued: no request was made.
            Completion::Push(meta, Ok(_)) if meta.is_empty() => {
                Event::PushDone(Ok(PushProgress { more: false }))
            }
            Completion::Push(meta, Ok(response)) => Event::PushDone(self.pushed(&meta, &response)),
            Completion::Push(_, Err(failure)) => {
                if let Err(e) = lock(&self.store).requeue_sending() {
                    tracing::warn!(error = %e, "cannot requeue mutations");
                }
                if failure == Failure::Unauthorized {
                    self.token = None;
                }
                Event::PushDone(Err(failure))
            }
            Completion::Pull(Ok(response)) => {
                self.prefetch_after(&response);
                Event::PullDone(self.pulled(&response))
            }
            Completion::Pull(Err(failure)) => {
                if failure == Failure::Unauthorized {
                    self.token = None;
                }
                Event::PullDone(Err(failure))
            }
        }
    }

    fn pushed(
        &mut self,
        meta: &[(u64, RecordKey, u64)],
        response: &PushResponse,
    ) -> Result<PushProgress, Failure> {
        let mut store = lock(&self.store);
        let applied = store
            .apply_push_response(response)
            .map_err(|e| Failure::Refused {
                status: 0,
                code: "local_store".into(),
                message: format!("cannot record the push response: {e}"),
            })?;
        let more = store.unpushed().map(|u| u.mutations > 0).unwrap_or(false);
        drop(store);
        let acked_bytes: u64 = meta
            .iter()
            .filter(|(seq, _, _)| *seq <= response.acked_through)
            .map(|m| m.2)
            .sum();
        let acked_count = meta
            .iter()
            .filter(|(seq, _, _)| *seq <= response.acked_through)
            .count() as u64;
        if let Some(upload) = &mut self.upload {
            upload.done += acked_count;
            upload.done_bytes += acked_bytes;
        }
        if !more {
            self.upload = None;
        }
        if !applied.acked.is_empty() {
            self.notifier.send(ClientEvent::Acked {
                seqs: applied.acked.clone(),
            });
        }
        let key_of = |seq: u64| meta.iter().find(|(s, _, _)| *s == seq).map(|m| m.1.clone());
        for result in &response.results {
            match &result.outcome {
                PushOutcome::Rejected { code, message } => {
                    self.notifier.send(ClientEvent::Rejected {
                        seq: result.seq,
                        code: *code,
                        message: message.clone(),
                    });
                    if let Some(key) = key_of(result.seq) {
                        self.notifier.send(ClientEvent::RecordsChanged {
                            space: key.space,
                            collection: key.collection,
                            count: 1,
                        });
                    }
                }
                PushOutcome::Merged { conflicts, .. } if !conflicts.is_empty() => {
                    if let Some(key) = key_of(result.seq) {
                        self.notifier.send(ClientEvent::Conflict {
                            seq: result.seq,
                            key,
                            fields: conflicts.clone(),
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(PushProgress { more })
    }

    fn pulled(&mut self, response: &PullResponse<CheckedChange>) -> Result<PullProgress, Failure> {
        let applied = lock(&self.store)
            .apply_pull(response)
            .map_err(|e| Failure::Refused {
                status: 0,
                code: "local_store".into(),
                message: format!("cannot apply pulled changes: {e}"),
            })?;
        if let Some(download) = &mut self.download {
            download.received += response.changes.len() as u64;
            download.remaining = response.remaining;
        }
        if !response.has_more {
            self.download = None;
        }
        if !applied.confirmed.is_empty() {
            self.notifier.send(ClientEvent::Confirmed {
                seqs: applied.confirmed,
            });
        }
        for ((space, collection), count) in applied.changed {
            self.notifier.send(ClientEvent::RecordsChanged {
                space,
                collection,
                count,
            });
        }
        Ok(PullProgress {
            has_more: response.has_more,
        })
    }

    /// Rebuilds the full status and emits it if anything changed.
    fn publish_status(&mut self) {
        let engine = self.machine.status();
        let store = lock(&self.store);
        let stats = store.outbox_stats().unwrap_or_default();
        let status = Status {
            connectivity: engine.connectivity,
            phase: engine.phase,
            upload: self.upload.filter(|_| engine.phase == Phase::Uploading),
            download: self.download.filter(|_| engine.phase == Phase::Downloading),
            pending: stats.pending,
            oldest_pending_at_ms: stats.oldest_created_at,
            conflicts: store.conflict_count().unwrap_or(0),
            rejections: store.rejection_count().unwrap_or(0),
            last_synced_at_ms: store.last_synced_at().ok().flatten(),
            has_synced: store.has_synced().unwrap_or(false),
            last_error: engine.last_error,
            next_retry_at_ms: engine.next_retry_at_ms,
        };
        drop(store);
        self.log_transition(&status);
        self.notifier.publish_status(status);
    }

    /// One log line per change of connectivity or error, never one per retry.
    fn log_transition(&self, status: &Status) {
        let previous = self.notifier.current();
        let before = previous
            .as_ref()
            .map(|s| (s.connectivity, s.last_error.as_ref().map(|e| e.kind)));
        let now = (
            status.connectivity,
            status.last_error.as_ref().map(|e| e.kind),
        );
        if before == Some(now) {
            return;
        }
        match &status.last_error {
            Some(error)
                if previous
                    .as_ref()
                    .and_then(|p| p.last_error.as_ref())
                    .map(|e| e.kind)
                    != Some(error.kind) =>
            {
                tracing::warn!(connectivity = ?status.connectivity, kind = ?error.kind, error = %error.message, "sync failing; retrying with backoff");
            }
            _ => {
                tracing::info!(connectivity = ?status.connectivity, phase = ?status.phase, "sync connectivity changed")
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => futures::future::pending().await,
    }
}
