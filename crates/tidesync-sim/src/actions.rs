//! What happens to the system: the action enum the simulation draws from, and the key space
//! it writes to.
//!
//! The key space is deliberately small (three collections of four records, three fields
//! with a handful of values) so concurrent edits collide all the time, under each conflict
//! policy at once: `notes` is `lww`, `prefs` is `server_wins`, `orders` is `strict`; `notes`
//! also has a JSON Schema that some writes break (`a` at most 2; `c` only with `b`, which a
//! patch meets or breaks depending on the record it lands on). A second
//! space, `tally`, holds one counter record per client that only its client writes, always
//! to a new value: every such mutation changes the server's state, so the space's version
//! counts exactly how many were applied (see `invariants`).

use serde_json::Value;
use tidesync_protocol::{CollectionName, Doc, RecordId, RecordKey, SpaceName};
use tidesync_server::{Policies, Policy, Schemas};

use crate::rng::Rng;

/// The space the app data lives in.
pub(crate) const SHARED_SPACE: &str = "team";
/// The counting space.
pub(crate) const TALLY_SPACE: &str = "tally";
const TALLY_COLLECTION: &str = "counts";
/// The collections of the shared space and their policies.
pub(crate) const COLLECTIONS: [(&str, Policy); 3] = [
    ("notes", Policy::Lww),
    ("prefs", Policy::ServerWins),
    ("orders", Policy::Strict),
];
const RECORDS: usize = 4;
const FIELDS: [&str; 3] = ["a", "b", "c"];

/// A record of the shared space: (collection index, record index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyRef {
    pub collection: usize,
    pub record: usize,
}

/// One local write.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LocalOp {
    Put {
        key: KeyRef,
        doc: Doc,
    },
    Patch {
        key: KeyRef,
        fields: Doc,
    },
    Delete {
        key: KeyRef,
    },
    /// Set this client's tally record to its next value.
    Tally,
}

/// One step of the simulation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// A local write; several ops are one local transaction.
    Write { client: usize, ops: Vec<LocalOp> },
    /// The app's network hint.
    Hint { client: usize, online: bool },
    /// The app asks for a sync now.
    SyncNow { client: usize },
    /// The app retries its oldest rejected transaction.
    RetryRejection { client: usize },
    /// Cut the client off from the server for a while.
    Partition { client: usize, ms: u64 },
    /// Kill the app and start it again from its database.
    CrashClient { client: usize },
    /// Kill the server; it restarts after `down_ms`.
    CrashServer { down_ms: u64 },
    /// Let time pass.
    Wait { ms: u64 },
}

/// The spaces every client syncs.
pub(crate) fn spaces() -> Vec<SpaceName> {
    [SHARED_SPACE, TALLY_SPACE]
        .iter()
        .map(|s| SpaceName::new(*s).expect("valid space"))
        .collect()
}

/// The server's policies for the key space.
pub(crate) fn policies() -> Policies {
    Policies {
        default: Policy::Lww,
        per_collection: COLLECTIONS
            .iter()
            .map(|(name, policy)| (CollectionName::new(*name).expect("valid"), *policy))
            .collect(),
    }
}

/// The server's record schemas: `notes` only (see the module docs).
pub(crate) fn schemas() -> Schemas {
    let mut schemas = Schemas::new();
    schemas
        .insert(
            CollectionName::new("notes").expect("valid"),
            &serde_json::json!({
                "properties": {"a": {"maximum": 2}},
                "dependentRequired": {"c": ["b"]}
            }),
        )
        .expect("a valid schema");
    schemas
}

/// The policy of `key`'s collection.
pub(crate) fn policy_of(key: &RecordKey) -> Policy {
    policies().of(&key.collection)
}

/// The record behind `key`.
pub(crate) fn key_of(key: KeyRef) -> RecordKey {
    RecordKey::new(
        SpaceName::new(SHARED_SPACE).expect("valid space"),
        CollectionName::new(COLLECTIONS[key.collection].0).expect("valid collection"),
        RecordId::new(format!("r{}", key.record)).expect("valid id"),
    )
}

/// Client `client`'s tally record.
pub(crate) fn tally_key(client: usize) -> RecordKey {
    RecordKey::new(
        SpaceName::new(TALLY_SPACE).expect("valid space"),
        CollectionName::new(TALLY_COLLECTION).expect("valid collection"),
        RecordId::new(format!("c{client}")).expect("valid id"),
    )
}

/// How often each kind of action is drawn (relative weights), per seed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Weights {
    write: u64,
    transaction: u64,
    hint: u64,
    sync_now: u64,
    retry: u64,
    partition: u64,
    crash_client: u64,
    crash_server: u64,
    wait: u64,
}

impl Weights {
    pub(crate) fn random(rng: &mut Rng) -> Weights {
        Weights {
            write: rng.range(20, 60),
            transaction: rng.range(3, 15),
            hint: rng.range(0, 6),
            sync_now: rng.range(0, 3),
            retry: rng.range(0, 3),
            partition: rng.range(0, 5),
            crash_client: rng.range(0, 4),
            crash_server: rng.range(0, 3),
            wait: rng.range(2, 10),
        }
    }
}

impl Action {
    /// Draws one action.
    pub(crate) fn random(rng: &mut Rng, clients: usize, w: &Weights) -> Action {
        let client = rng.index(clients);
        let table = [
            w.write,
            w.transaction,
            w.hint,
            w.sync_now,
            w.retry,
            w.partition,
            w.crash_client,
            w.crash_server,
            w.wait,
        ];
        let total: u64 = table.iter().sum();
        let mut pick = rng.range(0, total - 1);
        let mut kind = 0;
        while pick >= table[kind] {
            pick -= table[kind];
            kind += 1;
        }
        match kind {
            0 => Action::Write {
                client,
                ops: vec![random_op(rng)],
            },
            1 => {
                let n = rng.range(2, 5);
                Action::Write {
                    client,
                    ops: (0..n).map(|_| random_op(rng)).collect(),
                }
            }
            2 => Action::Hint {
                client,
                online: rng.chance(50),
            },
            3 => Action::SyncNow { client },
            4 => Action::RetryRejection { client },
            5 => Action::Partition {
                client,
                ms: rng.range(500, 40_000),
            },
            6 => Action::CrashClient { client },
            7 => Action::CrashServer {
                down_ms: rng.range(10, 20_000),
            },
            _ => Action::Wait {
                ms: rng.range(100, 30_000),
            },
        }
    }
}

fn random_key(rng: &mut Rng) -> KeyRef {
    KeyRef {
        collection: rng.index(COLLECTIONS.len()),
        record: rng.index(RECORDS),
    }
}

fn random_value(rng: &mut Rng) -> Value {
    Value::from(rng.range(0, 4))
}

fn random_op(rng: &mut Rng) -> LocalOp {
    match rng.range(0, 9) {
        0..=2 => {
            let mut doc = Doc::new();
            for field in FIELDS {
                if rng.chance(60) {
                    doc.insert(field.into(), random_value(rng));
                }
            }
            LocalOp::Put {
                key: random_key(rng),
                doc,
            }
        }
        3..=5 => {
            let mut fields = Doc::new();
            let first = rng.index(FIELDS.len());
            for (i, field) in FIELDS.iter().enumerate() {
                if i == first || rng.chance(30) {
                    let value = if rng.chance(15) {
                        Value::Null
                    } else {
                        random_value(rng)
                    };
                    fields.insert((*field).into(), value);
                }
            }
            LocalOp::Patch {
                key: random_key(rng),
                fields,
            }
        }
        6 => LocalOp::Delete {
            key: random_key(rng),
        },
        _ => LocalOp::Tally,
    }
}
