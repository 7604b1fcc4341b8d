//! The simulated server: the real [`SyncEngine`] (the SQLite backend's logic, synchronous)
//! behind the same validation and error mapping as the HTTP routes, plus the poke streams.
//!
//! A crash drops the engine (its SQLite connection) and every stream; a restart reopens the
//! same file. The server also keeps the simulation's **ledger**: every per-mutation result it
//! produced, in the order it produced them, whether or not the answer reached the client.
//! That ledger is what the exactly-once and ordering invariants are checked against.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use tidesync_core::sync::Failure;
use tidesync_protocol::{
    Change, ClientId, Cursor, ErrorCode, Hlc, PullRequest, PushOutcome, PushRequest, RecordKey,
    SpaceName,
};
use tidesync_server::auth::Grants;
use tidesync_server::error::RETRY_AFTER_SECS;
use tidesync_server::storage::sqlite::SyncEngine;
use tidesync_server::storage::{PullInput, PushInput};
use tidesync_server::{validate, ApiError, Limits, MergeRules};

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

/// The server process.
#[derive(Debug)]
pub(crate) struct SimServer {
    path: PathBuf,
    rules: MergeRules,
    engine: Option<SyncEngine>,
    grants: Grants,
    limits: Limits,
    /// Each client's newest event stream (older ones were abandoned by the client).
    subs: BTreeMap<usize, u64>,
    pub ledger: Vec<Applied>,
    pub crashes: u32,
}

/// The answer an HTTP error would give the client's transport (the same classification as
/// `tidesync-client`'s `classify_status`).
pub(crate) fn failure_of(err: &ApiError) -> Failure {
    let status = err.status().as_u16();
    match err.code() {
        ErrorCode::Unauthorized => Failure::Unauthorized,
        ErrorCode::RateLimited | ErrorCode::Unavailable => Failure::RateLimited {
            retry_after_ms: Some(RETRY_AFTER_SECS * 1000),
        },
        ErrorCode::CursorReset => Failure::CursorReset,
        _ if status >= 500 => Failure::Server {
            status,
            message: err.message().to_owned(),
        },
        code => Failure::Refused {
            status,
            code: code.as_str().to_owned(),
            message: err.message().to_owned(),
        },
    }
}

impl SimServer {
    pub(crate) fn open(path: PathBuf, rules: MergeRules, spaces: &[SpaceName]) -> SimServer {
        let engine = SyncEngine::open(&path, rules.clone()).expect("open the server database");
        SimServer {
            path,
            rules,
            engine: Some(engine),
            grants: Grants {
                user: USER.into(),
                read: BTreeSet::new(),
                write: spaces.iter().cloned().collect(),
            },
            limits: Limits::default(),
            subs: BTreeMap::new(),
            ledger: Vec::new(),
            crashes: 0,
        }
    }

    /// Kills the process: the engine and every stream are gone; streams' clients notice.
    pub(crate) fn crash(&mut self, net: &mut Net) {
        self.engine = None;
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
        if self.engine.is_none() {
            let engine = SyncEngine::open(&self.path, self.rules.clone())
                .expect("reopen the server database");
            self.engine = Some(engine);
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

    fn engine(&mut self) -> &mut SyncEngine {
        self.engine
            .as_mut()
            .expect("requests reach only a running server")
    }

    /// `POST /v1/push`; returns the result and how many spaces moved.
    fn push(
        &mut self,
        request: PushRequest,
        now: u64,
    ) -> (Result<tidesync_protocol::PushResponse, Failure>, usize) {
        let checked = validate::protocol(request.protocol)
            .and_then(|()| validate::push(&request.mutations, &self.grants, &self.limits));
        if let Err(e) = checked {
            return (Err(failure_of(&e)), 0);
        }
        let input = PushInput {
            user: USER.into(),
            client_id: request.client_id,
            mutations: request.mutations,
        };
        match self.engine().push(&input, now) {
            Ok((response, pokes)) => {
                for result in &response.results {
                    // A duplicate the server refused before is answered with its rejection
                    // again (so a lost answer cannot hide it): a repeat, not an application.
                    let repeat = matches!(result.outcome, PushOutcome::Rejected { .. })
                        && self
                            .ledger
                            .iter()
                            .any(|a| a.client == input.client_id && a.seq == result.seq);
                    if repeat {
                        continue;
                    }
                    let m = input
                        .mutations
                        .iter()
                        .find(|m| m.seq == result.seq)
                        .expect("a result belongs to a pushed mutation");
                    self.ledger.push(Applied {
                        client: input.client_id.clone(),
                        seq: m.seq,
                        tx: m.tx,
                        hlc: m.hlc,
                        key: m.key.clone(),
                        outcome: result.outcome.clone(),
                        now_ms: now,
                    });
                }
                (Ok(response), pokes.len())
            }
            Err(e) => (Err(failure_of(&ApiError::from(e))), 0),
        }
    }

    /// `POST /v1/pull`.
    fn pull(
        &mut self,
        request: PullRequest,
    ) -> Result<tidesync_protocol::PullResponse<tidesync_protocol::RawChange>, Failure> {
        let checked = validate::protocol(request.protocol)
            .and_then(|()| validate::pull(request, &self.grants, &self.limits));
        let input = checked.map_err(|e| failure_of(&e))?;
        self.engine()
            .pull(&input)
            .map_err(|e| failure_of(&ApiError::from(e)))
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
            };
            let page = self
                .engine()
                .pull(&input)
                .expect("observer pull")
                .parse()
                .expect("the server hands out JSON");
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
        };
        self.engine()
            .pull(&input)
            .expect("pull for acked_through")
            .acked_through
    }
}
