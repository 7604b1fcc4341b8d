//! The sync driver: everything the client does to sync, with no I/O, no threads and no clock.
//!
//! [`Driver::handle`] takes one [`Input`] (an app signal, a finished exchange, a poke, a
//! timer) with the current time and the store, and returns an [`Output`]: the network work
//! to start ([`Io`], carried out by a [`Transport`](crate::transport::Transport)), the timer to set, and
//! the [`ClientEvent`]s to emit, the status among them whenever it changed.
//!
//! Inside, it owns the core [`SyncMachine`] and executes its instructions against the store:
//! it reads push batches from the outbox, records push answers and pulled pages, resets the
//! base on `cursor_reset`, and keeps the per-exchange bookkeeping (the batch in flight by seq,
//! upload and download progress). One exchange is in flight at a time; an exchange the
//! machine replaced (after a network hint, a pause) is forgotten, and its late completion is
//! ignored, as are events of an event stream that was closed.
//!
//! A local store failure (the disk is full, the file is not writable, another process holds
//! the lock) is a [`Failure::LocalStore`]: the status says so with the store error's own code,
//! and the machine retries with backoff when the error can clear by itself. Nothing about it
//! is ever reported as a server refusal or as a push that succeeded.
//!
//! The client's sync thread ([`crate::Client`]) and the deterministic simulation
//! (`tidesync-sim`) both run this driver; they differ only in their transport and clock.

mod adaptive;
mod batch;
mod io;
mod status;

use std::collections::VecDeque;

use tidesync_core::sync::{
    EngineStatus, Event, Failure, Instruction, PullProgress, PushProgress, SyncConfig, SyncMachine,
};
use tidesync_protocol::{
    CheckedChange, ClientId, ErrorCode, PullRequest, PullResponse, PushOutcome, PushRequest,
    PushResponse, RecordKey, SpaceName, MAX_REFETCH, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use tidesync_store::{HistoryLoss, Page, Store, StoreError};

use crate::status::{ClientEvent, DownloadProgress, Status};
use adaptive::Adaptive;
use batch::PushBatch;
pub use io::{ExchangeId, Input, Io, Output, StreamId, Timer};
use status::Upload;

pub use tidesync_core::sync::Reachability;

/// The driver's settings.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// This installation's client id (the store's).
    pub client_id: ClientId,
    /// The spaces to sync.
    pub spaces: Vec<SpaceName>,
    /// Most mutations per push (whole transactions; a bigger one goes alone). The first push
    /// of a backlog sends at most [`FIRST_PUSH_BATCH`]; each push that leaves more behind
    /// sends up to four times as many, up to this.
    pub push_batch: usize,
    /// Most changes per pull page; pages start at [`FIRST_PULL_PAGE`] and grow the same way.
    pub pull_limit: u32,
    /// State machine tuning.
    pub sync: SyncConfig,
    /// Seed of the backoff jitter.
    pub seed: u64,
}

/// The first push of a backlog carries at most this many mutations.
pub const FIRST_PUSH_BATCH: usize = 250;

/// The first page of a download asks for at most this many changes.
pub const FIRST_PULL_PAGE: u32 = 250;

/// The exchange in flight.
#[derive(Debug)]
struct InFlight {
    id: ExchangeId,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Probe,
    Push(PushBatch),
    /// A pull, with the records it asked for in full.
    Pull(Vec<RecordKey>),
    Token,
}

/// The client's sync logic over a store. See the module docs.
#[derive(Debug)]
pub struct Driver {
    machine: SyncMachine,
    client_id: ClientId,
    spaces: Vec<SpaceName>,
    push_size: Adaptive,
    pull_size: Adaptive,
    /// The protocol version spoken: [`PROTOCOL_VERSION`] until a server refuses it.
    protocol: u32,
    next_id: u64,
    exchange: Option<InFlight>,
    stream: Option<StreamId>,
    engine: EngineStatus,
    upload: Option<Upload>,
    download: Option<DownloadProgress>,
    published: Option<Status>,
    /// The last time the server was found to have forgotten this client's history.
    history_loss: Option<HistoryLoss>,
    /// The base was reset: the next page's `acked_through` tells whether the server forgot
    /// this client's history too (a client with nothing to push learns it there).
    after_reset: bool,
    /// Mutations were queued again by a recovery found on a pull: push them.
    resend: bool,
}

/// A store failure as the machine sees it.
fn local(error: StoreError) -> Failure {
    Failure::LocalStore {
        code: error.code().to_owned(),
        retryable: error.is_retryable(),
        message: error.to_string(),
    }
}

impl Driver {
    /// A driver that has not started (feed it [`Input::Start`]).
    pub fn new(config: DriverConfig) -> Driver {
        let machine = SyncMachine::new(config.sync, config.seed);
        Driver {
            engine: machine.status(),
            machine,
            client_id: config.client_id,
            spaces: config.spaces,
            push_size: Adaptive::new(FIRST_PUSH_BATCH, config.push_batch),
            pull_size: Adaptive::new(FIRST_PULL_PAGE as usize, config.pull_limit as usize),
            protocol: PROTOCOL_VERSION,
            next_id: 0,
            exchange: None,
            history_loss: None,
            after_reset: false,
            resend: false,
            stream: None,
            upload: None,
            download: None,
            published: None,
        }
    }

    /// The last status emitted.
    pub fn status(&self) -> Option<&Status> {
        self.published.as_ref()
    }

    /// A new sync session: batches and pages start small again (the first changes land
    /// quickly on whatever link there is now).
    fn new_session(&mut self) {
        self.push_size.restart();
        self.pull_size.restart();
    }

    /// Whether the engine is idle with no exchange in flight.
    pub fn is_idle(&self) -> bool {
        self.exchange.is_none() && self.engine.phase == tidesync_core::sync::Phase::Idle
    }

    /// Reacts to `input` at `now_ms` (ms since the epoch), using `store`.
    pub fn handle(&mut self, now_ms: u64, input: Input, store: &mut Store) -> Output {
        let mut out = Output::default();
        if let Some(event) = self.accept(input, store, &mut out) {
            self.run(now_ms, event, store, &mut out);
        }
        if std::mem::take(&mut self.resend) {
            self.run(now_ms, Event::LocalWrite, store, &mut out);
        }
        self.publish_status(store, &mut out);
        out
    }

    /// Turns an input into a machine event, recording what a completed exchange brought.
    /// `None`: nothing for the machine (a stale completion).
    fn accept(&mut self, input: Input, store: &mut Store, out: &mut Output) -> Option<Event> {
        Some(match input {
            Input::Start => {
                self.new_session();
                Event::Start
            }
            Input::LocalWrite => Event::LocalWrite,
            Input::Network(reachability) => {
                self.new_session();
                Event::NetworkHint(reachability)
            }
            Input::SyncNow => Event::SyncNow,
            Input::Pause => Event::Pause,
            Input::Resume => {
                self.new_session();
                Event::Resume
            }
            Input::Probed { exchange, result } => {
                self.take(exchange)?;
                Event::ProbeDone(result)
            }
            Input::Pushed { exchange, result } => match self.take(exchange)? {
                Kind::Push(batch) => Event::PushDone(self.pushed(&batch, result, store, out)),
                _ => return None,
            },
            Input::Pulled { exchange, result } => match self.take(exchange)? {
                Kind::Pull(refetched) => {
                    Event::PullDone(self.pulled(result, &refetched, store, out))
                }
                _ => return None,
            },
            Input::TokenRefreshed { exchange, fresh } => {
                self.take(exchange)?;
                Event::TokenRefreshed(fresh)
            }
            Input::StreamOpened(stream) if self.stream == Some(stream) => Event::StreamOpened,
            Input::StreamClosed(stream) if self.stream == Some(stream) => {
                self.stream = None;
                Event::StreamClosed
            }
            Input::Poke(stream) if self.stream == Some(stream) => Event::Poke,
            Input::StreamOpened(_) | Input::StreamClosed(_) | Input::Poke(_) => return None,
            Input::TimerFired(id) => Event::TimerFired(id),
        })
    }

    /// The exchange `id`, if it is the one in flight.
    fn take(&mut self, id: ExchangeId) -> Option<Kind> {
        match &self.exchange {
            Some(current) if current.id == id => self.exchange.take().map(|e| e.kind),
            _ => None,
        }
    }

    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Starts a new exchange; the one in flight, if any, is forgotten.
    fn begin(&mut self, kind: Kind) -> ExchangeId {
        let id = ExchangeId(self.new_id());
        self.exchange = Some(InFlight { id, kind });
        id
    }

    /// Feeds `first` to the machine and executes its instructions. Work that completes
    /// without the network (an empty outbox, a store failure) is fed back at once.
    fn run(&mut self, now: u64, first: Event, store: &mut Store, out: &mut Output) {
        let mut events = VecDeque::from([first]);
        while let Some(event) = events.pop_front() {
            // A failed base reset must not be followed by a pull with the old cursor (the
            // server would answer `cursor_reset` again, at once, forever).
            let mut reset_failed = None;
            // Likewise a failed recovery must not push the batch the server just refused.
            let mut forget_failed = None;
            for instruction in self.machine.handle(now, event) {
                match instruction {
                    Instruction::Probe => {
                        let id = self.begin(Kind::Probe);
                        out.io.push(Io::Health(id));
                    }
                    Instruction::Push => match forget_failed
                        .take()
                        .map_or_else(|| self.push_request(store), Err)
                    {
                        Ok(Some((id, request))) => out.io.push(Io::Push(id, request)),
                        // Nothing was queued: no request is made.
                        Ok(None) => {
                            events.push_back(Event::PushDone(Ok(PushProgress { more: false })))
                        }
                        Err(failure) => events.push_back(Event::PushDone(Err(failure))),
                    },
                    Instruction::Pull => {
                        let request = match reset_failed.take() {
                            Some(failure) => Err(failure),
                            None => self.pull_request(store),
                        };
                        match request {
                            Ok((id, request)) => out.io.push(Io::Pull(id, request)),
                            Err(failure) => events.push_back(Event::PullDone(Err(failure))),
                        }
                    }
                    Instruction::ForgetServerHistory { last_seq } => {
                        if let Err(e) = self.forget(last_seq, store, out) {
                            forget_failed = Some(e);
                        }
                    }
                    Instruction::ResetCursor => match store.reset_base() {
                        Ok(()) => {
                            self.after_reset = true;
                            out.events.push(ClientEvent::BaseReset);
                        }
                        Err(e) => reset_failed = Some(local(e)),
                    },
                    Instruction::RefreshToken => {
                        let id = self.begin(Kind::Token);
                        out.io.push(Io::RefreshToken(id));
                    }
                    Instruction::OpenStream => {
                        let id = StreamId(self.new_id());
                        self.stream = Some(id);
                        out.io.push(Io::OpenEvents(id));
                    }
                    Instruction::CloseStream => {
                        self.stream = None;
                        out.io.push(Io::CloseEvents);
                    }
                    Instruction::SetTimer { id, at_ms } => out.timer = Some(Timer { id, at_ms }),
                    Instruction::Status(engine) => self.engine = engine,
                }
            }
        }
    }

    /// The server forgot this client's mutations after `last_seq`: queue what is held again
    /// and tell the app.
    fn forget(
        &mut self,
        last_seq: u64,
        store: &mut Store,
        out: &mut Output,
    ) -> Result<HistoryLoss, Failure> {
        let loss = store.forget_server_history(last_seq).map_err(local)?;
        tracing::warn!(
            server_last_seq = loss.server_last_seq,
            local_last_seq = loss.local_last_seq,
            resent = loss.resent,
            lost = loss.lost,
            "the server has forgotten part of this device's history (restored from an older \
             backup?): re-sending what is still held and downloading its state again"
        );
        self.history_loss = Some(loss);
        out.events.push(ClientEvent::ServerForgot(loss));
        Ok(loss)
    }

    /// The next push: whole transactions after what the server acknowledged, marked as
    /// being sent. `None` when nothing is queued.
    fn push_request(
        &mut self,
        store: &mut Store,
    ) -> Result<Option<(ExchangeId, PushRequest)>, Failure> {
        self.exchange = None;
        let entries = store
            .next_push_batch(self.push_size.size())
            .map_err(local)?;
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(None);
        };
        store
            .mark_sending(first.mutation.seq, last.mutation.seq)
            .map_err(local)?;
        self.upload.get_or_insert_with(Upload::default);
        let batch = PushBatch::of(&entries);
        let request = PushRequest {
            client_id: self.client_id.clone(),
            protocol: self.protocol,
            mutations: entries.into_iter().map(|e| e.mutation).collect(),
            recover_from: store.recovering_from().map_err(local)?,
        };
        Ok(Some((self.begin(Kind::Push(batch)), request)))
    }

    /// The next pull page, from the stored cursor.
    fn pull_request(&mut self, store: &mut Store) -> Result<(ExchangeId, PullRequest), Failure> {
        self.exchange = None;
        let cursor = store.cursor().map_err(local)?;
        self.download.get_or_insert_with(DownloadProgress::default);
        // Records of spaces this client no longer syncs cannot be asked for: they count as
        // answered (nothing) and leave the refetch list with this pull.
        let asked = if self.protocol >= 2 {
            store.records_to_refetch(MAX_REFETCH).map_err(local)?
        } else {
            Vec::new()
        };
        let refetch: Vec<RecordKey> = asked
            .iter()
            .filter(|k| self.spaces.contains(&k.space))
            .cloned()
            .collect();
        let request = PullRequest {
            client_id: self.client_id.clone(),
            protocol: self.protocol,
            cursor: cursor
                .into_iter()
                .filter(|(space, _)| self.spaces.contains(space))
                .collect(),
            spaces: self.spaces.clone(),
            limit: Some(u32::try_from(self.pull_size.size()).unwrap_or(u32::MAX)),
            refetch: refetch.clone(),
        };
        Ok((self.begin(Kind::Pull(asked)), request))
    }

    /// Records a push answer: acknowledgements, conflicts, rejections (rolled back).
    fn pushed(
        &mut self,
        batch: &PushBatch,
        result: Result<PushResponse, Failure>,
        store: &mut Store,
        out: &mut Output,
    ) -> Result<PushProgress, Failure> {
        let recorded = result.and_then(|response| {
            let applied = store
                .apply_push_answer(&response, batch.last_seq())
                .map_err(local)?;
            Ok((response, applied))
        });
        let (response, applied) = match recorded {
            Ok(recorded) => recorded,
            Err(failure) => {
                // No answer was recorded: the batch goes again. Its rows being marked
                // `sending` is only for display (the next push marks them again, and an open
                // requeues them), so failing to requeue them is no reason to fail more.
                if let Err(e) = store.requeue_sending() {
                    tracing::warn!(error = %e, "cannot mark mutations as queued again");
                }
                return match self.adapt(&failure, |d| &mut d.push_size, store, out) {
                    // Sent again at once, smaller or in the older protocol.
                    Adapted::Retry => Ok(PushProgress { more: true }),
                    Adapted::No => Err(failure),
                };
            }
        };
        if let Some(upload) = &mut self.upload {
            upload.add(batch.acked(response.acked_through));
        }
        if !applied.acked.is_empty() {
            out.events.push(ClientEvent::Acked {
                seqs: applied.acked,
            });
        }
        for result in &response.results {
            match &result.outcome {
                PushOutcome::Rejected { code, message } => {
                    out.events.push(ClientEvent::Rejected {
                        seq: result.seq,
                        code: *code,
                        message: message.clone(),
                    });
                    if let Some(key) = batch.key_of(result.seq) {
                        // Its local effect was rolled back.
                        out.events.push(ClientEvent::RecordsChanged {
                            space: key.space.clone(),
                            collection: key.collection.clone(),
                            count: 1,
                        });
                    }
                }
                PushOutcome::Merged { conflicts, .. } if !conflicts.is_empty() => {
                    if let Some(key) = batch.key_of(result.seq) {
                        out.events.push(ClientEvent::Conflict {
                            seq: result.seq,
                            key: key.clone(),
                            fields: conflicts.clone(),
                        });
                    }
                }
                _ => {}
            }
        }
        // If the counts cannot be read, pushing once more is the safe guess.
        let more = store.counts().map_or(true, |c| c.unpushed > 0);
        self.push_size.went_through(more);
        if !more {
            self.upload = None;
        }
        Ok(PushProgress { more })
    }

    /// Applies a pulled page: base, rebase, cursor, confirmations.
    fn pulled(
        &mut self,
        result: Result<PullResponse<CheckedChange>, Failure>,
        refetched: &[RecordKey],
        store: &mut Store,
        out: &mut Output,
    ) -> Result<PullProgress, Failure> {
        let page = match result {
            Ok(page) => page,
            Err(failure) => {
                return match self.adapt(&failure, |d| &mut d.pull_size, store, out) {
                    Adapted::Retry => Ok(PullProgress { has_more: true }),
                    Adapted::No => Err(failure),
                }
            }
        };
        // The first page after a base reset (never a prefetched one, which could predate a
        // push answer): a server that has processed less of this client than it once
        // acknowledged forgot part of its history.
        if std::mem::take(&mut self.after_reset)
            && page.acked_through < store.acked_through().map_err(local)?
        {
            let loss = self.forget(page.acked_through, store, out)?;
            self.resend = loss.resent > 0;
        }
        let applied = store
            .apply_pull_page(Page {
                response: &page,
                refetched,
            })
            .map_err(local)?;
        self.pull_size.went_through(page.has_more);
        if let Some(download) = &mut self.download {
            download.received += page.changes.len() as u64;
            download.remaining = page.remaining;
        }
        if !page.has_more {
            self.download = None;
        }
        if !applied.confirmed.is_empty() {
            out.events.push(ClientEvent::Confirmed {
                seqs: applied.confirmed,
            });
        }
        for ((space, collection), count) in applied.changed {
            out.events.push(ClientEvent::RecordsChanged {
                space,
                collection,
                count,
            });
        }
        Ok(PullProgress {
            // Echoes that could not be rebuilt are fetched in full by the next pull.
            has_more: page.has_more || applied.refetch_waiting,
        })
    }

    /// Adapts to a failed exchange: a server that does not speak this protocol version is
    /// spoken to in the one before, a batch that timed out or was too large (`413`) is
    /// made smaller. `Retry`: send again at once.
    fn adapt(
        &mut self,
        failure: &Failure,
        size: fn(&mut Driver) -> &mut Adaptive,
        store: &mut Store,
        out: &mut Output,
    ) -> Adapted {
        match failure {
            Failure::Refused { code, .. }
                if code == ErrorCode::UnsupportedProtocol.as_str()
                    && self.protocol > MIN_PROTOCOL_VERSION =>
            {
                let older = self.protocol - 1;
                tracing::info!(
                    from = self.protocol,
                    to = older,
                    "the server does not speak this protocol version: using the one before"
                );
                self.protocol = older;
                if older >= 2 {
                    return Adapted::Retry;
                }
                // Protocol 1 cannot ask for records by key: echoes still waiting for a
                // refetch (from before the server went back to an older version) are
                // downloaded with everything else.
                match store.records_to_refetch(1) {
                    Ok(waiting) if waiting.is_empty() => Adapted::Retry,
                    Ok(_) => match store.reset_base() {
                        Ok(()) => {
                            self.after_reset = true;
                            out.events.push(ClientEvent::BaseReset);
                            Adapted::Retry
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot reset the base");
                            Adapted::No
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the records to refetch");
                        Adapted::No
                    }
                }
            }
            Failure::Refused { status: 413, .. } if size(self).too_large() => Adapted::Retry,
            Failure::Timeout => {
                size(self).timed_out();
                Adapted::No
            }
            _ => Adapted::No,
        }
    }
}

/// What [`Driver::adapt`] decided.
enum Adapted {
    /// Send again at once.
    Retry,
    /// Report the failure (the machine backs off).
    No,
}

#[cfg(test)]
mod tests;
