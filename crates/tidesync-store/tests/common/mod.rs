#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::Value;
use tidesync_core::RecordState;
use tidesync_protocol::{
    Change, ClientId, Doc, Hlc, Op, PullResponse, PushOutcome, PushResponse, PushResult, RecordKey,
    Stamp,
};
use tidesync_store::{Store, StoreConfig, WallClock};

pub fn doc(v: Value) -> Doc {
    v.as_object().cloned().expect("a JSON object")
}

pub fn key(id: &str) -> RecordKey {
    RecordKey::parse("user:alice", "todos", id).unwrap()
}

/// A wall clock the test moves by hand.
#[derive(Clone)]
pub struct TestClock(pub Arc<AtomicU64>);

impl TestClock {
    pub fn new(ms: u64) -> TestClock {
        TestClock(Arc::new(AtomicU64::new(ms)))
    }
    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
    pub fn wall(&self) -> WallClock {
        let c = self.0.clone();
        WallClock::new(move || c.load(Ordering::SeqCst))
    }
}

pub struct TestDb {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl TestDb {
    pub fn new() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        TestDb { dir, path }
    }
    pub fn open(&self) -> Store {
        Store::open(&self.path, StoreConfig::default()).unwrap()
    }
    pub fn open_with(&self, config: StoreConfig) -> Store {
        Store::open(&self.path, config).unwrap()
    }
}

pub fn file_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// The server's side of things, reduced to what the store tests need: a record state per
/// key, merged with the real core rules, and a version counter.
pub struct FakeServer {
    pub version: u64,
    pub records: std::collections::BTreeMap<RecordKey, (RecordState, u64)>,
}

impl FakeServer {
    pub fn new() -> FakeServer {
        FakeServer {
            version: 0,
            records: Default::default(),
        }
    }

    /// Another device writes `op` with stamp (ms, client).
    pub fn write(&mut self, k: &RecordKey, op: Op, ms: u64, client: &str) -> u64 {
        let stamp = Stamp::new(Hlc::new(ms, 0).unwrap(), ClientId::new(client).unwrap());
        self.apply(k, &op, &stamp)
    }

    pub fn apply(&mut self, k: &RecordKey, op: &Op, stamp: &Stamp) -> u64 {
        self.version += 1;
        let entry = self.records.entry(k.clone()).or_default();
        entry.0.apply(op, stamp);
        entry.1 = self.version;
        self.version
    }

    /// Everything after `since`, as one pull page.
    pub fn pull(&self, since: u64, acked_through: u64) -> PullResponse {
        let mut changes: Vec<Change> = self
            .records
            .iter()
            .filter(|(_, (_, v))| *v > since)
            .map(|(k, (state, v))| {
                let (doc, stamps) = state.to_wire();
                Change {
                    space: k.space.clone(),
                    collection: k.collection.clone(),
                    id: k.id.clone(),
                    version: *v,
                    deleted: doc.is_none(),
                    doc,
                    stamps,
                }
            })
            .collect();
        changes.sort_by_key(|c| c.version);
        PullResponse {
            changes,
            echoes: Vec::new(),
            cursor: [(key("x").space, self.version)].into_iter().collect(),
            has_more: false,
            remaining: 0,
            acked_through,
        }
    }
}

pub fn applied(seq: u64, version: u64) -> PushResult {
    PushResult {
        seq,
        outcome: PushOutcome::Applied { version },
    }
}

/// Plays the server's part for everything queued: applies it with the real merge and answers.
pub fn push_all(store: &mut Store, server: &mut FakeServer) -> PushResponse {
    let batch = store.outbox_batch(0, 1000).unwrap();
    let client = store.client_id().clone();
    let mut results = Vec::new();
    let mut last = 0;
    for e in batch {
        let stamp = Stamp::new(e.mutation.hlc, client.clone());
        let version = server.apply(&e.mutation.key, &e.mutation.op, &stamp);
        results.push(applied(e.mutation.seq, version));
        last = e.mutation.seq;
    }
    let response = PushResponse {
        acked_through: last,
        results,
    };
    store.apply_push_response(&response).unwrap();
    response
}
