//! The simulated server: the real [`SyncService`] (validation, storage, error mapping: what
//! the HTTP routes call) over the real SQLite engine ([`EngineStorage`], the backend's logic
//! on the caller's thread with simulated time), plus the poke streams. Its answers reach
//! clients as HTTP would carry them: an error becomes status, `Retry-After` and JSON body,
//! classified by the client's own [`classify_answer`].
//!
//! A crash drops the engine (its SQLite connection) and every stream; a restart reopens the
//! same file. The server also keeps the simulation's **ledger**: every per-mutation result it
//! produced, in the order it produced them, whether or not the answer reached the client.
//! That ledger is what the exactly-once and ordering invariants are checked against.
//!
//! The server also prunes its history as a node does ([`SimServer::prune`]: tombstones older
//! than a short horizon), and remembers which records it pruned, so the no-loss check knows
//! which records it may no longer find.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::executor::block_on;
use tidesync_client::transport::classify_answer;
use tidesync_core::sync::Failure;
use tidesync_protocol::{
    Change, ClientId, Cursor, Hlc, PullRequest, PullResponse, PushOutcome, PushRequest,
    PushResponse, RawChange, RecordKey, SpaceName,
};
use tidesync_server::auth::Grants;
use tidesync_server::storage::sqlite::EngineStorage;
use tidesync_server::storage::{Poke, Prune, PullInput, Storage};
use tidesync_server::{ApiError, Limits, MergeRules, SyncService};
use tokio::sync::broadcast;

use crate::network::{Answer, Net, Request, ToClient};

/// The one user every simulated client pushes as.
pub(crate) const USER: &str = "sim";

/// One per-mutation result the server produced.
#[derive(Debug, Clone)]
pub(crate) struct Applied {
    pub client: ClientId,
    pub seq: u64,
    pub tx: u64,
    pub hlc: Hlc,
    pub key: RecordKey,
    pub outcome: PushOutcome,
    /// Server time when it was applied (to know whether the stamp was re-stamped).
    pub now_ms: u64,
}

/// The running process: the service over the engine, and where its pokes arrive.
struct Running {
    storage: Arc<EngineStorage>,
    service: SyncService,
    pokes: broadcast::Receiver<Poke>,
}

/// The server process.
pub(crate) struct SimServer {
    path: PathBuf,
    rules: MergeRules,
    /// The simulated time the engine reads.
    clock: Arc<AtomicU64>,
    running: Option<Running>,
    grants: Grants,
    /// Each client's newest event stream (older ones were abandoned by the client).
    subs: BTreeMap<usize, u64>,
    pub ledger: Vec<Applied>,
    pub crashes: u32,
    /// Records whose tombstone the horizon pruned (they may have been written again since).
    pub pruned: BTreeSet<RecordKey>,
    /// Pulls answered `cursor_reset` because their cursor was behind a horizon.
    pub horizon_resets: u64,
}

impl std::fmt::Debug for SimServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimServer")
            .field("path", &self.path)
            .field("running", &self.running.is_some())
            .field("crashes", &self.crashes)
            .finish_non_exhaustive()
    }
}

/// What the client's transport makes of an error answer: status, `Retry-After` and body, as
/// they would cross HTTP.
fn failure_of(err: &ApiError) -> Failure {
    let body = serde_json::to_vec(&err.body()).expect("an error body serializes");
    classify_answer(err.status().as_u16(), err.retry_after_secs(), &body)
}

fn boot(path: &std::path::Path, rules: &MergeRules, clock: &Arc<AtomicU64>) -> Running {
    let clock = Arc::clone(clock);
    let storage = Arc::new(
        EngineStorage::open(
            path,
            rules.clone(),
            Arc::new(move || clock.load(Ordering::Relaxed)),
        )
        .expect("open the server database"),
    );
    Running {
        service: SyncService::new(storage.clone(), Limits::default()),
        pokes: storage.subscribe(),
        storage,
    }
}

impl SimServer {
    pub(crate) fn open(
        path: PathBuf,
        rules: MergeRules,
        spaces: &[SpaceName],
        clock: Arc<AtomicU64>,
    ) -> SimServer {
        let running = boot(&path, &rules, &clock);
        SimServer {
            path,
            rules,
            clock,
            running: Some(running),
            grants: Grants {
                user: USER.into(),
                read: BTreeSet::new(),
                write: spaces.iter().cloned().collect(),
            },
            subs: BTreeMap::new(),
            ledger: Vec::new(),
            crashes: 0,
            pruned: BTreeSet::new(),
            horizon_resets: 0,
        }
    }

    /// Prunes tombstones deleted at or before `cutoff_ms`, in small batches, as a node's
    /// pruner does; notes which records went. Nothing while the server is down.
    pub(crate) fn prune(&mut self, cutoff_ms: u64, spaces: &[SpaceName]) {
        if self.running.is_none() {
            return;
        }
        let batch = Prune {
            cutoff_ms,
            // Rejections stay: a retry later than their retention is acknowledged without
            // its rejection (the documented bound on `retain_deleted`), which the client
            // then shows as applied, and the checks would rightly call that a loss.
            rejections_cutoff_ms: 0,
            batch: 3,
        };
        let storage = self.running().storage.clone();
        let mut tombstones = 0;
        loop {
            let pruned = block_on(storage.prune(batch)).expect("a prune batch");
            tombstones += pruned.tombstones;
            if !pruned.filled(&batch) {
                break;
            }
        }
        if tombstones == 0 {
            return;
        }
        // A record the server applied a write to never leaves it but by pruning.
        let (after, _) = self.full_state(spaces);
        let gone: Vec<RecordKey> = self
            .ledger
            .iter()
            .filter(|a| !matches!(a.outcome, PushOutcome::Rejected { .. }))
            .map(|a| &a.key)
            .filter(|key| !after.contains_key(*key))
            .cloned()
            .collect();
        self.pruned.extend(gone);
    }

    /// Kills the process: the engine and every stream are gone; streams' clients notice.
    pub(crate) fn crash(&mut self, net: &mut Net) {
        self.running = None;
        self.crashes += 1;
        net.server_up = false;
        for (client, id) in std::mem::take(&mut self.subs) {
            let at = net.now + net.draw(1, 100);
            let failure = Failure::Network("event stream reset".into());
            net.local(at, client, ToClient::Failed { id, failure });
        }
    }

    /// Starts the process again on the same file.
    pub(crate) fn restart(&mut self, net: &mut Net) {
        if self.running.is_none() {
            self.running = Some(boot(&self.path, &self.rules, &self.clock));
        }
        net.server_up = true;
    }

    /// Forgets `client`'s stream (its connection broke, e.g. in a partition).
    pub(crate) fn drop_stream(&mut self, client: usize) -> Option<u64> {
        self.subs.remove(&client)
    }

    /// Handles request `id` of `client` and sends the answer (and any pokes).
    pub(crate) fn handle(&mut self, net: &mut Net, client: usize, id: u64, request: Request) {
        let answer = match request {
            Request::Probe => Answer::Probe(Ok(())),
            Request::Subscribe => {
                let current = self.subs.entry(client).or_insert(0);
                *current = (*current).max(id);
                Answer::StreamOpened
            }
            Request::Pull(request) => Answer::Pull(self.pull(request)),
            Request::Push(request) => {
                let (result, moved) = self.push(request, net.now);
                for (subscriber, stream) in self.subs.clone() {
                    for _ in 0..moved {
                        net.send_to_client(subscriber, ToClient::Poke { id: stream });
                    }
                }
                Answer::Push(result)
            }
        };
        net.send_to_client(client, ToClient::Answer { id, answer });
    }

    fn running(&mut self) -> &mut Running {
        self.running
            .as_mut()
            .expect("requests reach only a running server")
    }

    /// `POST /v1/push`; returns the result and how many spaces moved.
    fn push(&mut self, request: PushRequest, now: u64) -> (Result<PushResponse, Failure>, usize) {
        let grants = self.grants.clone();
        let running = self.running();
        let result = block_on(running.service.push(&grants, request.clone()));
        let mut moved = 0;
        while running.pokes.try_recv().is_ok() {
            moved += 1;
        }
        let response = match result {
            Ok(response) => response,
            Err(e) => return (Err(failure_of(&e)), 0),
        };
        for result in &response.results {
            // A duplicate the server refused before is answered with its rejection again (so
            // a lost answer cannot hide it): a repeat, not an application.
            let repeat = matches!(result.outcome, PushOutcome::Rejected { .. })
                && self
                    .ledger
                    .iter()
                    .any(|a| a.client == request.client_id && a.seq == result.seq);
            if repeat {
                continue;
            }
            let m = request
                .mutations
                .iter()
                .find(|m| m.seq == result.seq)
                .expect("a result belongs to a pushed mutation");
            self.ledger.push(Applied {
                client: request.client_id.clone(),
                seq: m.seq,
                tx: m.tx,
                hlc: m.hlc,
                key: m.key.clone(),
                outcome: result.outcome.clone(),
                now_ms: now,
            });
        }
        (Ok(response), moved)
    }

    /// `POST /v1/pull`.
    fn pull(&mut self, request: PullRequest) -> Result<PullResponse<RawChange>, Failure> {
        let grants = self.grants.clone();
        let result =
            block_on(self.running().service.pull(&grants, request)).map_err(|e| failure_of(&e));
        // The simulated server never loses history (it restarts on its own file), so a
        // reset can only come from its horizon.
        if matches!(result, Err(Failure::CursorReset)) {
            self.horizon_resets += 1;
        }
        result
    }

    /// A pull straight from storage (no permission checks), for the checks.
    fn read(&mut self, input: PullInput) -> PullResponse<RawChange> {
        block_on(self.running().storage.pull(input)).expect("a storage pull")
    }

    /// The server's whole state, by a full pull from scratch (as a fresh observer): every
    /// record ever written (tombstones included) and each space's version.
    pub(crate) fn full_state(
        &mut self,
        spaces: &[SpaceName],
    ) -> (BTreeMap<RecordKey, Change>, Cursor) {
        let observer = ClientId::new("sim-observer").expect("valid client id");
        let mut cursor = Cursor::new();
        let mut records = BTreeMap::new();
        loop {
            let input = PullInput {
                user: USER.into(),
                client_id: observer.clone(),
                cursor: cursor.clone(),
                spaces: spaces.to_vec(),
                limit: 1_000,
                echoes: false,
                refetch: Vec::new(),
            };
            let page = self.read(input).parse().expect("the server hands out JSON");
            for change in page.changes {
                let key = RecordKey::new(
                    change.space.clone(),
                    change.collection.clone(),
                    change.id.clone(),
                );
                records.insert(key, change);
            }
            cursor.extend(page.cursor);
            if !page.has_more {
                return (records, cursor);
            }
        }
    }

    /// `clients.last_seq` of `client`, as a pull reports it (`acked_through`).
    pub(crate) fn acked_through(&mut self, client: &ClientId, spaces: &[SpaceName]) -> u64 {
        let input = PullInput {
            user: USER.into(),
            client_id: client.clone(),
            cursor: Cursor::new(),
            spaces: spaces.to_vec(),
            limit: 1,
            echoes: false,
            refetch: Vec::new(),
        };
        self.read(input).acked_through
    }
}
