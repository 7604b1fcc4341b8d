//! The driver alone: a real store on a temp file, inputs fed by hand, outputs inspected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use tidesync_core::sync::{FailureKind, Phase};
use tidesync_protocol::{ErrorCode, PullRequest};
use tidesync_protocol::{PushOutcome, PushResult, RecordKey};
use tidesync_store::{Durability, StoreConfig};

use super::*;

struct Rig {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    store: Store,
    driver: Driver,
    now: u64,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("driver.db");
        let store = Store::open(
            &path,
            StoreConfig {
                durability: Durability::Normal,
                busy_timeout: Duration::from_millis(50),
                ..StoreConfig::default()
            },
        )
        .unwrap();
        let driver = Driver::new(DriverConfig {
            client_id: store.client_id().clone(),
            spaces: vec![SpaceName::new("s").unwrap()],
            push_batch: 100,
            pull_limit: 100,
            sync: SyncConfig::default(),
            seed: 1,
        });
        Rig {
            _dir: dir,
            path,
            store,
            driver,
            now: 1_000,
        }
    }

    fn feed(&mut self, input: Input) -> Output {
        self.now += 1;
        self.driver.handle(self.now, input, &mut self.store)
    }

    fn write(&mut self, id: &str) {
        let key = RecordKey::parse("s", "c", id).unwrap();
        let doc = json!({"id": id}).as_object().unwrap().clone();
        self.store.put(&key, doc).unwrap();
    }

    /// Another connection takes the write lock until the returned guard is dropped.
    fn lock(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(&self.path).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        conn
    }
}

fn the_health_probe(out: &Output) -> ExchangeId {
    match out.io.as_slice() {
        [Io::Health(id)] => *id,
        other => panic!("expected one probe, got {other:?}"),
    }
}

fn statuses(out: &Output) -> Vec<&Status> {
    out.events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Status(s) => Some(s),
            _ => None,
        })
        .collect()
}

/// Start and answer the probe: the driver asks for the event stream and a push.
fn started(rig: &mut Rig) -> Output {
    let out = rig.feed(Input::Start);
    let probe = the_health_probe(&out);
    rig.feed(Input::Probed {
        exchange: probe,
        result: Ok(()),
    })
}

#[test]
fn an_empty_outbox_needs_no_push_request() {
    let mut rig = Rig::new();
    let out = started(&mut rig);
    assert!(
        matches!(out.io.as_slice(), [Io::OpenEvents(_), Io::Pull(..)]),
        "nothing to push: straight to the pull, {:?}",
        out.io
    );
}

#[test]
fn a_push_answer_is_recorded_and_reported_with_progress() {
    let mut rig = Rig::new();
    rig.write("a");
    rig.write("b");
    let out = started(&mut rig);
    let (exchange, request) = out
        .io
        .iter()
        .find_map(|io| match io {
            Io::Push(id, request) => Some((*id, request.clone())),
            _ => None,
        })
        .expect("a push");
    assert_eq!(request.mutations.len(), 2);
    let upload = statuses(&out)
        .last()
        .unwrap()
        .upload
        .expect("upload progress");
    assert_eq!((upload.done, upload.total), (0, 2));
    let results = request
        .mutations
        .iter()
        .map(|m| PushResult {
            seq: m.seq,
            outcome: PushOutcome::Applied { version: m.seq },
        })
        .collect();
    let out = rig.feed(Input::Pushed {
        exchange,
        result: Ok(PushResponse {
            acked_through: 2,
            results,
        }),
    });
    assert!(out
        .events
        .iter()
        .any(|e| matches!(e, ClientEvent::Acked { seqs } if seqs == &[1, 2])));
    assert!(matches!(out.io.as_slice(), [Io::Pull(..)]), "{:?}", out.io);
    assert_eq!(rig.store.counts().unwrap().unpushed, 0);
}

#[test]
fn a_late_answer_to_a_replaced_exchange_changes_nothing() {
    let mut rig = Rig::new();
    rig.write("a");
    let out = started(&mut rig);
    let old = out
        .io
        .iter()
        .find_map(|io| match io {
            Io::Push(id, _) => Some(*id),
            _ => None,
        })
        .unwrap();
    rig.feed(Input::Network(Reachability::Offline));
    let out = rig.feed(Input::Network(Reachability::Online));
    let _probe = the_health_probe(&out);
    let out = rig.feed(Input::Pushed {
        exchange: old,
        result: Ok(PushResponse {
            acked_through: 1,
            results: vec![],
        }),
    });
    assert!(out.io.is_empty() && out.events.is_empty(), "{out:?}");
    assert_eq!(rig.store.counts().unwrap().acked_through, 0, "not recorded");
}

#[test]
fn a_store_that_cannot_prepare_a_push_is_a_local_failure_not_an_empty_push() {
    let mut rig = Rig::new();
    rig.write("a");
    let out = rig.feed(Input::Start);
    let probe = the_health_probe(&out);
    let lock = rig.lock();
    let out = rig.feed(Input::Probed {
        exchange: probe,
        result: Ok(()),
    });
    assert!(
        !out.io
            .iter()
            .any(|io| matches!(io, Io::Push(..) | Io::Pull(..))),
        "no request: {:?}",
        out.io
    );
    let status = statuses(&out).last().copied().cloned().unwrap();
    assert_eq!(status.phase, Phase::Backoff);
    let error = status.last_error.unwrap();
    assert_eq!(error.kind, FailureKind::LocalStore);
    assert_eq!(error.code.as_deref(), Some("busy"));
    assert!(!error.needs_attention);
    assert!(out.timer.is_some(), "retried with backoff");
    assert_eq!(status.pending, 1, "the write is still queued");
    drop(lock);

    // The timer retries, and now it pushes.
    let timer = out.timer.unwrap();
    let out = rig.feed(Input::TimerFired(timer.id));
    let probe = the_health_probe(&out);
    let out = rig.feed(Input::Probed {
        exchange: probe,
        result: Ok(()),
    });
    assert!(
        out.io.iter().any(|io| matches!(io, Io::Push(..))),
        "{:?}",
        out.io
    );
}

#[test]
fn a_base_reset_that_fails_is_not_followed_by_a_pull_with_the_old_cursor() {
    let mut rig = Rig::new();
    let out = started(&mut rig);
    let pull = out
        .io
        .iter()
        .find_map(|io| match io {
            Io::Pull(id, _) => Some(*id),
            _ => None,
        })
        .unwrap();
    let lock = rig.lock();
    let out = rig.feed(Input::Pulled {
        exchange: pull,
        result: Err(Failure::CursorReset),
    });
    assert!(
        !out.io.iter().any(|io| matches!(io, Io::Pull(..))),
        "{:?}",
        out.io
    );
    let status = statuses(&out).last().copied().cloned().unwrap();
    assert_eq!(status.phase, Phase::Backoff);
    assert_eq!(
        status.last_error.and_then(|e| e.code).as_deref(),
        Some("busy")
    );
    drop(lock);
}

fn the_pull(out: &Output) -> (ExchangeId, PullRequest) {
    out.io
        .iter()
        .find_map(|io| match io {
            Io::Pull(id, request) => Some((*id, request.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("expected a pull, got {:?}", out.io))
}

fn the_push(out: &Output) -> (ExchangeId, PushRequest) {
    out.io
        .iter()
        .find_map(|io| match io {
            Io::Push(id, request) => Some((*id, request.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("expected a push, got {:?}", out.io))
}

fn refused(status: u16, code: ErrorCode) -> Failure {
    Failure::Refused {
        status,
        code: code.as_str().into(),
        message: "no".into(),
    }
}

#[test]
fn a_server_that_does_not_speak_a_protocol_is_spoken_to_in_the_one_before_at_once() {
    let mut rig = Rig::new();
    let (exchange, request) = the_pull(&started(&mut rig));
    assert_eq!(request.protocol, PROTOCOL_VERSION);
    let mut exchange = exchange;
    for expected in (MIN_PROTOCOL_VERSION..PROTOCOL_VERSION).rev() {
        let out = rig.feed(Input::Pulled {
            exchange,
            result: Err(refused(400, ErrorCode::UnsupportedProtocol)),
        });
        let (id, again) = the_pull(&out);
        assert_eq!(
            again.protocol, expected,
            "retried at once, one version down"
        );
        assert!(again.refetch.is_empty());
        exchange = id;
    }
    // Refused in the oldest one too: a refusal like any other, shown and waited out.
    let out = rig.feed(Input::Pulled {
        exchange,
        result: Err(refused(400, ErrorCode::UnsupportedProtocol)),
    });
    assert!(
        !out.io.iter().any(|io| matches!(io, Io::Pull(..))),
        "no pull at once: {:?}",
        out.io
    );
}

#[test]
fn a_413_halves_the_push_sends_it_again_at_once_and_caps_later_ones() {
    let mut rig = Rig::new();
    for i in 0..1_000 {
        rig.write(&format!("r{i}"));
    }
    // The rig's cap is 100 and a backlog starts at FIRST_PUSH_BATCH: capped.
    let (exchange, request) = the_push(&started(&mut rig));
    assert_eq!(request.mutations.len(), 100);
    let out = rig.feed(Input::Pushed {
        exchange,
        result: Err(refused(413, ErrorCode::TooLarge)),
    });
    let (exchange, request) = the_push(&out);
    assert_eq!(request.mutations.len(), 50, "halved and sent again at once");
    let last = request.mutations.last().unwrap().seq;
    let out = rig.feed(Input::Pushed {
        exchange,
        result: Ok(PushResponse {
            acked_through: last,
            results: Vec::new(),
        }),
    });
    let (_, request) = the_push(&out);
    assert_eq!(
        request.mutations.len(),
        50,
        "never above what the server refused"
    );
}

#[test]
fn pull_pages_start_small_and_grow_while_changes_remain() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path().join("grow.db"), StoreConfig::default()).unwrap();
    let mut driver = Driver::new(DriverConfig {
        client_id: store.client_id().clone(),
        spaces: vec![SpaceName::new("s").unwrap()],
        push_batch: 5_000,
        pull_limit: 10_000,
        sync: SyncConfig::default(),
        seed: 1,
    });
    driver.handle(1, Input::Start, &mut store);
    let out = driver.handle(
        2,
        Input::Probed {
            exchange: ExchangeId(1),
            result: Ok(()),
        },
        &mut store,
    );
    let mut limits = Vec::new();
    let (mut exchange, mut request) = the_pull(&out);
    for version in 1..=4u64 {
        limits.push(request.limit.unwrap());
        let page = PullResponse {
            changes: Vec::new(),
            echoes: Vec::new(),
            cursor: [(SpaceName::new("s").unwrap(), version)]
                .into_iter()
                .collect(),
            has_more: true,
            remaining: 100_000,
            acked_through: 0,
        };
        let out = driver.handle(
            2 + version,
            Input::Pulled {
                exchange,
                result: Ok(page),
            },
            &mut store,
        );
        (exchange, request) = the_pull(&out);
    }
    assert_eq!(limits, [FIRST_PULL_PAGE, 1_000, 4_000, 10_000]);
}

#[test]
fn a_record_to_refetch_in_a_space_no_longer_synced_leaves_the_list_instead_of_looping() {
    let mut rig = Rig::new();
    let other = SpaceName::new("no-longer-synced").unwrap();
    let echo = tidesync_protocol::Echo {
        space: other.clone(),
        collection: tidesync_protocol::CollectionName::new("c").unwrap(),
        id: tidesync_protocol::RecordId::new("r").unwrap(),
        version: 3,
        from: 1,
        first_seq: 1,
        last_seq: 1,
        count: 1,
    };
    let page = |echoes| PullResponse::<CheckedChange> {
        changes: Vec::new(),
        echoes,
        cursor: [(SpaceName::new("s").unwrap(), 0)].into_iter().collect(),
        has_more: false,
        remaining: 0,
        acked_through: 0,
    };
    // An echo this store cannot rebuild (from an earlier configuration of spaces).
    assert!(
        rig.store
            .apply_pull(&page(vec![echo]))
            .unwrap()
            .refetch_waiting
    );
    let (exchange, request) = the_pull(&started(&mut rig));
    assert!(
        request.refetch.is_empty(),
        "not asked of a space it does not pull"
    );
    rig.feed(Input::Pulled {
        exchange,
        result: Ok(page(Vec::new())),
    });
    assert!(rig.store.records_to_refetch(10).unwrap().is_empty());
    assert!(
        rig.store.has_synced().unwrap(),
        "the pull is complete: no loop"
    );
}

#[test]
fn going_back_to_protocol_1_with_records_to_refetch_downloads_the_base_again() {
    let mut rig = Rig::new();
    let echo = tidesync_protocol::Echo {
        space: SpaceName::new("s").unwrap(),
        collection: tidesync_protocol::CollectionName::new("c").unwrap(),
        id: tidesync_protocol::RecordId::new("r").unwrap(),
        version: 3,
        from: 1,
        first_seq: 1,
        last_seq: 1,
        count: 1,
    };
    let page = PullResponse::<CheckedChange> {
        changes: Vec::new(),
        echoes: vec![echo],
        cursor: [(SpaceName::new("s").unwrap(), 3)].into_iter().collect(),
        has_more: false,
        remaining: 0,
        acked_through: 0,
    };
    rig.store.apply_pull(&page).unwrap();
    let (mut exchange, request) = the_pull(&started(&mut rig));
    assert_eq!(request.refetch.len(), 1);
    // Down to protocol 2, which still asks for records by key.
    for _ in 2..PROTOCOL_VERSION {
        let out = rig.feed(Input::Pulled {
            exchange,
            result: Err(refused(400, ErrorCode::UnsupportedProtocol)),
        });
        let (id, again) = the_pull(&out);
        assert_eq!(again.refetch.len(), 1, "protocol {}", again.protocol);
        assert!(!out
            .events
            .iter()
            .any(|e| matches!(e, ClientEvent::BaseReset)));
        exchange = id;
    }
    let out = rig.feed(Input::Pulled {
        exchange,
        result: Err(refused(400, ErrorCode::UnsupportedProtocol)),
    });
    assert!(out
        .events
        .iter()
        .any(|e| matches!(e, ClientEvent::BaseReset)));
    let (_, again) = the_pull(&out);
    assert_eq!(again.protocol, MIN_PROTOCOL_VERSION);
    assert!(again.cursor.is_empty(), "downloaded from scratch");
    assert!(rig.store.records_to_refetch(10).unwrap().is_empty());
}
