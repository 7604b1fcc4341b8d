//! The history horizon below HTTP, on both backends: a prune batch deletes exactly the
//! tombstones and remembered rejections at or before its cutoff (oldest first, at most a
//! batch of rows), leaves live records alone, moves the horizon of the spaces it pruned,
//! and a pull from a cursor behind that horizon is reset. Time is an input: every cutoff is
//! read from the clock around the writes, never waited for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{on_both_backends, Backend, Store};
use serde_json::json;
use tidesync_protocol::{
    ClientId, Cursor, Hlc, Mutation, Op, PushOutcome, PushResponse, RecordKey, SpaceName,
};
use tidesync_server::horizon::{HorizonConfig, Pruner};
use tidesync_server::storage::{
    Prune, Pruned, PullInput, PushInput, PushOrigin, Storage, StorageError,
};
use tidesync_server::MergeRules;

const SPACE: &str = "team:1";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn space() -> SpaceName {
    SpaceName::new(SPACE).unwrap()
}

fn mutation(seq: u64, id: &str, op: Op, base_version: u64) -> Mutation {
    Mutation {
        seq,
        tx: seq,
        key: RecordKey::parse(SPACE, "todos", id).unwrap(),
        op,
        hlc: Hlc::new(1_000_000 + seq, 0).unwrap(),
        base_version,
    }
}

fn put(seq: u64, id: &str) -> Mutation {
    let doc = json!({ "n": seq }).as_object().cloned().unwrap();
    mutation(seq, id, Op::Put { doc }, 0)
}

fn delete(seq: u64, id: &str) -> Mutation {
    mutation(seq, id, Op::Delete, 0)
}

/// A mutation every policy refuses (`base_ahead`): remembered as a rejection.
fn refused(seq: u64) -> Mutation {
    let doc = json!({}).as_object().cloned().unwrap();
    mutation(seq, "refused", Op::Put { doc }, 1_000_000)
}

async fn push(storage: &dyn Storage, client: &str, mutations: Vec<Mutation>) -> PushResponse {
    storage
        .push(PushInput {
            user: "alice".into(),
            client_id: ClientId::new(client).unwrap(),
            mutations,
            recover_from: None,
            origin: PushOrigin::Client,
        })
        .await
        .unwrap()
}

fn pull_from(from: u64) -> PullInput {
    PullInput {
        user: "alice".into(),
        client_id: ClientId::new("reader").unwrap(),
        cursor: Cursor::from([(space(), from)]),
        spaces: vec![space()],
        limit: 1_000,
        echoes: false,
        refetch: Vec::new(),
    }
}

/// The record rows (tombstones, live) and remembered rejections the database holds.
fn rows(store: &Store) -> (usize, usize, usize) {
    let tables = store.dump_tables();
    let table = |name: &str| {
        tables
            .iter()
            .find(|(t, _)| *t == name)
            .map(|(_, rows)| rows.clone())
            .unwrap()
    };
    // `doc` is the fifth column on both backends.
    let records = table("records");
    let tombstones = records.iter().filter(|r| r[4].is_none()).count();
    (
        tombstones,
        records.len() - tombstones,
        table("rejected").len(),
    )
}

/// `n` records created then deleted by `client` from seq `first`, and the next seq.
async fn churn(storage: &dyn Storage, client: &str, first: u64, n: u64) -> u64 {
    let ids: Vec<String> = (0..n).map(|i| format!("{client}-{first}-{i}")).collect();
    let puts = ids
        .iter()
        .enumerate()
        .map(|(i, id)| put(first + i as u64, id))
        .collect();
    push(storage, client, puts).await;
    let deletes = ids
        .iter()
        .enumerate()
        .map(|(i, id)| delete(first + n + i as u64, id))
        .collect();
    push(storage, client, deletes).await;
    first + 2 * n
}

async fn old_tombstones_and_rejections_go_and_live_records_stay(backend: Backend) {
    let Some(store) = Store::open(backend, MergeRules::default()).await else {
        return;
    };
    let storage = store.storage.as_ref();
    push(
        storage,
        "c1",
        (1..=5).map(|i| put(i, &format!("r{i}"))).collect(),
    )
    .await;
    let answer = push(
        storage,
        "c1",
        vec![delete(6, "r1"), delete(7, "r2"), refused(8)],
    )
    .await;
    assert!(matches!(
        answer.results.last().map(|r| &r.outcome),
        Some(PushOutcome::Rejected { .. })
    ));
    let written = now_ms();
    assert_eq!(rows(&store), (2, 3, 1));
    let before = storage.pull(pull_from(0)).await.unwrap().parse().unwrap();
    let live_before: Vec<_> = before
        .changes
        .iter()
        .filter(|c| !c.deleted)
        .cloned()
        .collect();

    // A cutoff before the writes prunes nothing; one after prunes the tombstones and the
    // rejection, and nothing else.
    let early = Prune {
        cutoff_ms: written - 60_000,
        rejections_cutoff_ms: written - 60_000,
        batch: 100,
    };
    assert_eq!(storage.prune(early).await.unwrap(), Pruned::default());
    let pruned = storage
        .prune(Prune {
            cutoff_ms: written,
            rejections_cutoff_ms: written,
            batch: 100,
        })
        .await
        .unwrap();
    assert_eq!(
        pruned,
        Pruned {
            tombstones: 2,
            rejections: 1
        }
    );
    assert_eq!(rows(&store), (0, 3, 0));
    let after = storage.pull(pull_from(0)).await.unwrap().parse().unwrap();
    assert_eq!(after.changes, live_before, "live records are untouched");
    assert_eq!(after.cursor, before.cursor);

    // The horizon is the newest pruned tombstone (r2's delete, version 7): a cursor before
    // it is reset (for a client that did not begin downloading at this horizon), at it or
    // after it served, and 0 is a bootstrap.
    let stale = PullInput {
        client_id: ClientId::new("stale").unwrap(),
        ..pull_from(6)
    };
    let err = storage.pull(stale).await.expect_err("behind");
    assert!(
        matches!(
            err,
            StorageError::CursorBehindHorizon {
                cursor: 6,
                horizon: 7,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("pull from scratch"), "{err}");
    for served in [0, 7] {
        storage.pull(pull_from(served)).await.unwrap();
    }

    // Pruning again finds nothing and leaves the horizon where it is.
    assert_eq!(
        storage
            .prune(Prune {
                cutoff_ms: now_ms(),
                rejections_cutoff_ms: now_ms(),
                batch: 100
            })
            .await
            .unwrap(),
        Pruned::default()
    );
    storage.pull(pull_from(7)).await.unwrap();
}

async fn a_batch_deletes_at_most_its_size_oldest_first(backend: Backend) {
    let Some(store) = Store::open(backend, MergeRules::default()).await else {
        return;
    };
    let storage = store.storage.as_ref();
    let seq = churn(storage, "c1", 1, 7).await;
    let first = now_ms();
    // Later ones, on a clock at least a millisecond on.
    while now_ms() <= first {
        std::thread::yield_now();
    }
    let seq = churn(storage, "c1", seq, 5).await;
    push(storage, "c1", (seq..seq + 5).map(refused).collect()).await;
    assert_eq!(rows(&store), (12, 0, 5));

    // The first cutoff only covers the first seven: the later tombstones stay.
    let batch = |cutoff_ms| Prune {
        cutoff_ms,
        rejections_cutoff_ms: cutoff_ms,
        batch: 4,
    };
    let mut seen = Vec::new();
    loop {
        let pruned = storage.prune(batch(first)).await.unwrap();
        assert!(pruned.tombstones + pruned.rejections <= 4, "{pruned:?}");
        seen.push(pruned);
        if !pruned.filled(&batch(first)) {
            break;
        }
    }
    let tombstones: Vec<u64> = seen.iter().map(|p| p.tombstones).collect();
    assert_eq!(tombstones, [4, 3]);
    assert_eq!(rows(&store), (5, 0, 5));

    // Then the rest: tombstones first, rejections with what a batch has left.
    let now = now_ms();
    let seen: Vec<Pruned> = {
        let mut seen = Vec::new();
        loop {
            let pruned = storage.prune(batch(now)).await.unwrap();
            seen.push(pruned);
            if !pruned.filled(&batch(now)) {
                break seen;
            }
        }
    };
    let split: Vec<(u64, u64)> = seen.iter().map(|p| (p.tombstones, p.rejections)).collect();
    assert_eq!(split, [(4, 0), (1, 3), (0, 2)]);
    assert_eq!(rows(&store), (0, 0, 0));
}

async fn concurrent_prunes_delete_every_row_once(backend: Backend) {
    let Some(store) = Store::open(backend, MergeRules::default()).await else {
        return;
    };
    let storage = store.storage.clone();
    for client in ["c1", "c2", "c3"] {
        churn(storage.as_ref(), client, 1, 10).await;
    }
    push(storage.as_ref(), "c4", (1..=6).map(refused).collect()).await;
    let cutoff = now_ms();
    // Four pruners at once (several nodes on one database), each until its batches run dry.
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let storage = storage.clone();
            tokio::spawn(async move {
                let mut total = Pruned::default();
                let batch = Prune {
                    cutoff_ms: cutoff,
                    rejections_cutoff_ms: cutoff,
                    batch: 5,
                };
                loop {
                    let pruned = storage.prune(batch).await.unwrap();
                    total.add(pruned);
                    if !pruned.filled(&batch) {
                        return total;
                    }
                }
            })
        })
        .collect();
    let mut total = Pruned::default();
    for run in runs {
        total.add(run.await.unwrap());
    }
    assert_eq!(
        total,
        Pruned {
            tombstones: 30,
            rejections: 6
        }
    );
    assert_eq!(rows(&store), (0, 0, 0));
    // The horizon is the newest tombstone of all (the space's version), whoever pruned it.
    let version = storage.space_versions(&[space()]).await.unwrap()[0];
    assert!(storage.pull(pull_from(version - 1)).await.is_err());
    storage.pull(pull_from(version)).await.unwrap();
}

async fn a_late_retry_of_a_pruned_rejection_is_acknowledged_without_it(backend: Backend) {
    let Some(store) = Store::open(backend, MergeRules::default()).await else {
        return;
    };
    let storage = store.storage.as_ref();
    push(storage, "c1", vec![put(1, "a"), refused(2)]).await;
    // A retry within the horizon gets its rejection again.
    let retry = push(storage, "c1", vec![put(1, "a"), refused(2)]).await;
    assert_eq!(retry.acked_through, 2);
    assert!(matches!(
        retry.results.as_slice(),
        [r] if r.seq == 2 && matches!(r.outcome, PushOutcome::Rejected { .. })
    ));
    storage
        .prune(Prune {
            cutoff_ms: now_ms(),
            rejections_cutoff_ms: now_ms(),
            batch: 100,
        })
        .await
        .unwrap();
    // After it (the documented bound on retain_deleted): acknowledged, no result.
    let late = push(storage, "c1", vec![put(1, "a"), refused(2)]).await;
    assert_eq!(late.acked_through, 2);
    assert!(late.results.is_empty(), "{:?}", late.results);
}

async fn every_push_records_the_client_s_last_push_time(backend: Backend) {
    let Some(store) = Store::open(backend, MergeRules::default()).await else {
        return;
    };
    let storage = store.storage.as_ref();
    let last_push_at = || -> Vec<Option<u64>> {
        let tables = store.dump_tables();
        let (_, clients) = tables.iter().find(|(t, _)| *t == "clients").unwrap();
        // `last_push_at` is the fourth column on both backends.
        clients
            .iter()
            .map(|r| r[3].as_deref().map(|v| v.parse().unwrap()))
            .collect()
    };
    let before = now_ms();
    push(storage, "c1", vec![put(1, "a")]).await;
    let first = last_push_at()[0].expect("set by the push");
    assert!(first >= before && first <= now_ms());
    while now_ms() <= first {
        std::thread::yield_now();
    }
    // A push of duplicates only is a push too.
    push(storage, "c1", vec![put(1, "a")]).await;
    assert!(last_push_at()[0].expect("set") > first);
}

async fn the_pruner_runs_on_its_interval_until_shutdown(backend: Backend) {
    let Some(store) = Store::open(backend, MergeRules::default()).await else {
        return;
    };
    let storage: Arc<dyn Storage> = store.storage.clone();
    churn(storage.as_ref(), "c1", 1, 30).await;
    let config = HorizonConfig {
        retain_deleted: Duration::from_secs(3_600),
        prune_interval: Duration::from_millis(10),
        prune_batch: 7,
    };
    // A clock two hours ahead: everything written now is past the retention.
    let ahead = Arc::new(|| now_ms() + 7_200_000);
    let pruner = Pruner::new(storage.clone(), config).with_clock(ahead.clone());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(pruner.run(stopped));
    let pruned = tokio::task::block_in_place(|| {
        tidesync_testkit::wait_until(Duration::from_secs(20), || rows(&store).0 == 0)
    });
    assert!(
        pruned,
        "the pruner pruned every tombstone: {:?}",
        rows(&store)
    );
    stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the pruner stops on shutdown")
        .unwrap();
    // On the real clock the same settings prune nothing written now.
    churn(storage.as_ref(), "c1", 61, 3).await;
    let on_time = Pruner::new(storage.clone(), config);
    assert_eq!(on_time.run_once().await.unwrap(), Pruned::default());
    let early = Pruner::new(storage.clone(), config).with_clock(ahead);
    assert_eq!(early.run_once().await.unwrap().tombstones, 3);
}

/// Pages of `client` from an empty cursor until the last, or the first error.
async fn download(storage: &dyn Storage, client: &str, limit: u32) -> Result<usize, StorageError> {
    let mut cursor = Cursor::new();
    let mut live = 0;
    loop {
        let page = storage
            .pull(PullInput {
                client_id: ClientId::new(client).unwrap(),
                cursor: cursor.clone(),
                limit,
                ..pull_from(0)
            })
            .await?;
        live += page.changes.iter().filter(|c| !c.deleted).count();
        cursor = page.cursor;
        if !page.has_more {
            return Ok(live);
        }
    }
}

async fn a_download_longer_than_a_page_goes_on_below_the_horizon(backend: Backend) {
    let Some(store) = Store::open(backend, MergeRules::default()).await else {
        return;
    };
    let storage = store.storage.as_ref();
    // Ten old live records (versions 1 to 10) under three pruned deletes (up to 16).
    push(
        storage,
        "w",
        (1..=10).map(|i| put(i, &format!("live{i}"))).collect(),
    )
    .await;
    let seq = churn(storage, "w", 11, 3).await;
    let prune = |cutoff_ms| Prune {
        cutoff_ms,
        rejections_cutoff_ms: cutoff_ms,
        batch: 100,
    };
    storage.prune(prune(now_ms())).await.unwrap();
    // A download three records a page: every page after the first is below the horizon,
    // and is served because the download began at this horizon.
    assert_eq!(download(storage, "reader", 3).await.unwrap(), 10);
    // The same cursor from a client that never downloaded is reset.
    let err = storage
        .pull(PullInput {
            client_id: ClientId::new("stale").unwrap(),
            ..pull_from(3)
        })
        .await
        .expect_err("a stale cursor");
    assert!(
        matches!(err, StorageError::CursorBehindHorizon { .. }),
        "{err}"
    );
    // When the horizon moves during a download, the download is reset; the next one
    // completes.
    let first_page = storage
        .pull(PullInput {
            client_id: ClientId::new("slow").unwrap(),
            limit: 3,
            ..pull_from(0)
        })
        .await
        .unwrap();
    churn(storage, "w", seq, 2).await;
    storage.prune(prune(now_ms())).await.unwrap();
    let err = storage
        .pull(PullInput {
            client_id: ClientId::new("slow").unwrap(),
            cursor: first_page.cursor,
            limit: 3,
            ..pull_from(0)
        })
        .await
        .expect_err("the horizon moved");
    assert!(
        matches!(err, StorageError::CursorBehindHorizon { .. }),
        "{err}"
    );
    assert_eq!(download(storage, "slow", 3).await.unwrap(), 10);
}

on_both_backends!(
    old_tombstones_and_rejections_go_and_live_records_stay,
    a_batch_deletes_at_most_its_size_oldest_first,
    concurrent_prunes_delete_every_row_once(flavor = "multi_thread", worker_threads = 2),
    a_late_retry_of_a_pruned_rejection_is_acknowledged_without_it,
    every_push_records_the_client_s_last_push_time,
    the_pruner_runs_on_its_interval_until_shutdown(flavor = "multi_thread", worker_threads = 2),
    a_download_longer_than_a_page_goes_on_below_the_horizon,
);
