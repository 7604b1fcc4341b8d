//! A simulated client: the real [`SyncMachine`] and the real [`Store`] on its own SQLite
//! file, driven by a small runtime that executes instructions exactly like
//! `tidesync-client`'s `runtime.rs` does, with the simulated network instead of HTTP.
//!
//! Mirrors of the real runtime, kept on purpose: one exchange slot (a new probe, push or pull
//! replaces the one in flight, whose late answer is then ignored), `mark_sending` before a
//! push and `requeue_sending` after a failed one, an empty outbox answering the push at once
//! without a request, the stream opening separately from exchanges, one timer replaced by
//! every `SetTimer`. A crash drops all of it and the store handle; the file stays.
//!
//! Not simulated: status publication and progress counters (they do not feed back into the
//! machine), token refresh (always succeeds at once).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tidesync_core::sync::{
    Event, Failure, Instruction, PullProgress, PushProgress, Reachability, SyncConfig, SyncMachine,
};
use tidesync_protocol::{
    ClientId, Doc, Hlc, Op, PullRequest, PushRequest, RecordKey, SpaceName, PROTOCOL_VERSION,
};
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

/// The exchange in flight (the real runtime's `exchange` future).
#[derive(Debug, Clone)]
enum Pending {
    Probe,
    /// A push of these seqs (empty: nothing was queued, no request was made).
    Push(Vec<u64>),
    Pull,
    Token,
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
    machine: SyncMachine,
    exchange: Option<(u64, Pending)>,
    stream: Option<u64>,
    stream_opening: Option<u64>,
    timer: Option<(u64, u64)>,
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
        let mut client = SimClient {
            setup,
            clock,
            rng,
            incarnation: 0,
            handle_store: Some(store),
            machine: SyncMachine::new(SyncConfig::default(), 0),
            exchange: None,
            stream: None,
            stream_opening: None,
            timer: None,
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
        self.exchange = None;
        self.stream = None;
        self.stream_opening = None;
        self.timer = None;
        self.incarnation += 1;
        // The old connection closes first (uncommitted work cannot exist between two
        // simulation steps: every store call is one transaction), then the new process opens.
        self.handle_store = None;
        self.handle_store = Some(open_store(&self.setup, &self.clock));
        self.boot(net);
    }

    fn boot(&mut self, net: &mut Net) {
        self.machine = SyncMachine::new(SyncConfig::default(), self.rng.next_u64());
        self.handle(net, Event::Start);
        if self.offline_hint {
            self.handle(net, Event::NetworkHint(Reachability::Offline));
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

    /// Feeds one event to the machine and carries out what it says.
    pub(crate) fn handle(&mut self, net: &mut Net, event: Event) {
        let instructions = self.machine.handle(self.device_now(net.now), event);
        for instruction in instructions {
            self.execute(net, instruction);
        }
    }

    /// Whether the engine is idle with nothing in flight.
    pub(crate) fn is_idle(&self) -> bool {
        self.exchange.is_none() && self.machine.status().phase == tidesync_core::sync::Phase::Idle
    }

    fn execute(&mut self, net: &mut Net, instruction: Instruction) {
        let me = self.setup.index;
        match instruction {
            Instruction::Probe => {
                let id = net.new_id();
                self.exchange = Some((id, Pending::Probe));
                net.send_request(me, id, Request::Probe);
            }
            Instruction::Push => self.start_push(net),
            Instruction::Pull => self.start_pull(net),
            Instruction::ResetCursor => self.store().reset_base().expect("reset the base"),
            Instruction::RefreshToken => {
                let id = net.new_id();
                self.exchange = Some((id, Pending::Token));
                net.schedule(net.now, Scheduled::Local { client: me, id });
            }
            Instruction::OpenStream => {
                let id = net.new_id();
                self.stream = None;
                self.stream_opening = Some(id);
                net.send_request(me, id, Request::Subscribe);
            }
            Instruction::CloseStream => {
                self.stream = None;
                self.stream_opening = None;
            }
            Instruction::SetTimer { id, at_ms } => {
                let at = net.now + at_ms.saturating_sub(self.device_now(net.now));
                self.timer = Some((id, at));
                let incarnation = self.incarnation;
                net.schedule(
                    at,
                    Scheduled::Timer {
                        client: me,
                        incarnation,
                        id,
                        at,
                    },
                );
            }
            Instruction::Status(_) => {}
        }
    }

    fn start_push(&mut self, net: &mut Net) {
        let me = self.setup.index;
        let max = self.setup.push_batch;
        let batch = self.store().next_push_batch(max).expect("read the outbox");
        let id = net.new_id();
        if let (Some(first), Some(last)) = (batch.first(), batch.last()) {
            self.store()
                .mark_sending(first.mutation.seq, last.mutation.seq)
                .expect("mark sending");
        } else {
            self.exchange = Some((id, Pending::Push(Vec::new())));
            net.schedule(net.now, Scheduled::Local { client: me, id });
            return;
        }
        let seqs = batch.iter().map(|e| e.mutation.seq).collect();
        let request = PushRequest {
            client_id: self.setup.client_id.clone(),
            protocol: PROTOCOL_VERSION,
            mutations: batch.into_iter().map(|e| e.mutation).collect(),
        };
        self.exchange = Some((id, Pending::Push(seqs)));
        net.send_request(me, id, Request::Push(request));
    }

    fn start_pull(&mut self, net: &mut Net) {
        let cursor = self.store().cursor().expect("read the cursor");
        let request = PullRequest {
            client_id: self.setup.client_id.clone(),
            protocol: PROTOCOL_VERSION,
            cursor: cursor
                .into_iter()
                .filter(|(space, _)| self.setup.spaces.contains(space))
                .collect(),
            spaces: self.setup.spaces.clone(),
            limit: Some(self.setup.pull_limit),
        };
        let id = net.new_id();
        self.exchange = Some((id, Pending::Pull));
        net.send_request(self.setup.index, id, Request::Pull(request));
    }

    /// A message arrived.
    pub(crate) fn receive(&mut self, net: &mut Net, msg: ToClient) {
        match msg {
            ToClient::Answer {
                id,
                answer: Answer::StreamOpened,
            } => {
                if self.stream_opening == Some(id) {
                    self.stream_opening = None;
                    self.stream = Some(id);
                    self.handle(net, Event::StreamOpened);
                }
            }
            ToClient::Answer { id, answer } => {
                if let Some(pending) = self.take_exchange(id) {
                    let event = self.complete(pending, Ok(answer));
                    self.handle(net, event);
                }
            }
            ToClient::Failed { id, failure } => {
                if let Some(pending) = self.take_exchange(id) {
                    let event = self.complete(pending, Err(failure));
                    self.handle(net, event);
                } else if self.stream == Some(id) || self.stream_opening == Some(id) {
                    self.stream = None;
                    self.stream_opening = None;
                    self.handle(net, Event::StreamClosed);
                }
            }
            ToClient::Poke { id } => {
                if self.stream == Some(id) {
                    self.handle(net, Event::Poke);
                }
            }
        }
    }

    /// The request timeout of exchange or stream `id` expired.
    pub(crate) fn timeout(&mut self, net: &mut Net, id: u64) {
        if let Some(pending) = self.take_exchange(id) {
            let event = self.complete(pending, Err(Failure::Timeout));
            self.handle(net, event);
        } else if self.stream_opening == Some(id) {
            self.stream_opening = None;
            self.handle(net, Event::StreamClosed);
        }
    }

    /// An exchange that needed no network finished.
    pub(crate) fn local_done(&mut self, net: &mut Net, id: u64) {
        if let Some(pending) = self.take_exchange(id) {
            let event = match pending {
                Pending::Token => Event::TokenRefreshed(true),
                Pending::Push(seqs) if seqs.is_empty() => {
                    Event::PushDone(Ok(PushProgress { more: false }))
                }
                other => unreachable!("{other:?} completes over the network"),
            };
            self.handle(net, event);
        }
    }

    /// A timer fired.
    pub(crate) fn timer_fired(&mut self, net: &mut Net, incarnation: u32, id: u64, at: u64) {
        if incarnation == self.incarnation && self.timer == Some((id, at)) {
            self.timer = None;
            self.handle(net, Event::TimerFired(id));
        }
    }

    fn take_exchange(&mut self, id: u64) -> Option<Pending> {
        match &self.exchange {
            Some((current, _)) if *current == id => self.exchange.take().map(|(_, p)| p),
            _ => None,
        }
    }

    /// Applies an exchange's outcome to the store and turns it into a machine event (the
    /// real runtime's `complete`, `pushed` and `pulled`).
    fn complete(&mut self, pending: Pending, outcome: Result<Answer, Failure>) -> Event {
        let local_store = |what: &str, e: StoreError| Failure::Refused {
            status: 0,
            code: "local_store".into(),
            message: format!("{what}: {e}"),
        };
        match (pending, outcome) {
            (Pending::Probe, Ok(Answer::Probe(result))) => Event::ProbeDone(result),
            (Pending::Probe, Err(failure)) => Event::ProbeDone(Err(failure)),
            (Pending::Push(_), Ok(Answer::Push(Ok(response)))) => {
                let pushed = self
                    .store()
                    .apply_push_response(&response)
                    .map_err(|e| local_store("cannot record the push response", e))
                    .map(|_| {
                        let more = self.store().unpushed().map(|u| u.mutations > 0);
                        PushProgress {
                            more: more.unwrap_or(false),
                        }
                    });
                Event::PushDone(pushed)
            }
            (Pending::Push(_), Ok(Answer::Push(Err(failure))) | Err(failure)) => {
                self.store().requeue_sending().expect("requeue");
                Event::PushDone(Err(failure))
            }
            (Pending::Pull, Ok(Answer::Pull(Ok(response)))) => {
                let pulled = self
                    .store()
                    .apply_pull(&response)
                    .map_err(|e| local_store("cannot apply pulled changes", e))
                    .map(|_| PullProgress {
                        has_more: response.has_more,
                    });
                Event::PullDone(pulled)
            }
            (Pending::Pull, Ok(Answer::Pull(Err(failure))) | Err(failure)) => {
                Event::PullDone(Err(failure))
            }
            (Pending::Token, _) => Event::TokenRefreshed(true),
            (pending, Ok(answer)) => unreachable!("{answer:?} answers {pending:?}"),
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
        self.handle(net, Event::LocalWrite);
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
        self.handle(net, Event::LocalWrite);
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
