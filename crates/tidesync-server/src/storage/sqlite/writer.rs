//! The writer thread: the only connection that writes. It takes pushes from a queue and
//! commits them in groups (one fsync for many pushes), each push in its own savepoint so a
//! failing one does not disturb the others. A prune batch ends a group and runs alone, in
//! its own transaction, so pushes wait for at most one bounded batch.

use std::collections::BTreeMap;
use std::sync::mpsc::Receiver;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension};
use tidesync_core::HlcClock;
use tidesync_protocol::{ClientId, Hlc, PushResponse, SpaceName};
use tokio::sync::{broadcast, oneshot};

use crate::config::MergeRules;
use crate::storage::sqlite::prune::prune_batch;
use crate::storage::sqlite::pull::record_downloads;
use crate::storage::sqlite::push::{apply_push, WriterContext};
use std::sync::Arc;

use crate::storage::{Poke, Prune, Pruned, PushInput, StorageError};

/// Most pushes committed together.
const MAX_GROUP: usize = 256;
/// Most mutations committed together (a group may exceed it by one push).
const MAX_GROUP_MUTATIONS: usize = 50_000;

pub(crate) enum Job {
    /// A push. The caller keeps another reference to the input and the writer drops its own
    /// before replying, so the request's memory is freed on the caller's thread, not here.
    Push(
        Arc<PushInput>,
        oneshot::Sender<Result<PushResponse, StorageError>>,
    ),
    /// One prune batch, run after the pushes queued before it.
    Prune(Prune, oneshot::Sender<Result<Pruned, StorageError>>),
    /// Where a client began downloading spaces past pruned history (see `pull`).
    Downloads(
        ClientId,
        Vec<(SpaceName, u64)>,
        oneshot::Sender<Result<(), StorageError>>,
    ),
    Shutdown(oneshot::Sender<()>),
}

pub(crate) fn run(
    conn: Connection,
    jobs: Receiver<Job>,
    rules: MergeRules,
    pokes: broadcast::Sender<Poke>,
) {
    let mut clock = HlcClock::resume(load_clock(&conn));
    while let Ok(first) = jobs.recv() {
        let mut group = Vec::new();
        let mut stop = None;
        // A job that ends the group and runs alone, in its own transaction.
        let mut solo = None;
        let mut mutations = 0;
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Shutdown(done) => {
                    stop = Some(done);
                    break;
                }
                job @ (Job::Prune(..) | Job::Downloads(..)) => {
                    solo = Some(job);
                    break;
                }
                Job::Push(input, reply) => {
                    mutations += input.mutations.len();
                    group.push((input, reply));
                }
            }
            if group.len() >= MAX_GROUP || mutations >= MAX_GROUP_MUTATIONS {
                break;
            }
            next = jobs.try_recv().ok();
        }
        if !group.is_empty() {
            commit_group(&conn, group, &rules, &mut clock, &pokes);
        }
        match solo {
            Some(Job::Prune(batch, reply)) => {
                let _ = reply.send(prune_batch(&conn, batch));
            }
            Some(Job::Downloads(client, downloads, reply)) => {
                let _ = reply.send(record_downloads(&conn, &client, &downloads));
            }
            _ => {}
        }
        if let Some(done) = stop {
            let _ = done.send(());
            break;
        }
    }
    // Anything still queued after a shutdown is refused, never silently dropped.
    while let Ok(job) = jobs.try_recv() {
        match job {
            Job::Push(_, reply) => {
                let _ = reply.send(Err(StorageError::Unavailable(
                    "the server is shutting down".into(),
                )));
            }
            Job::Prune(_, reply) => {
                let _ = reply.send(Err(StorageError::Unavailable(
                    "the server is shutting down".into(),
                )));
            }
            Job::Downloads(_, _, reply) => {
                let _ = reply.send(Err(StorageError::Unavailable(
                    "the server is shutting down".into(),
                )));
            }
            Job::Shutdown(done) => {
                let _ = done.send(());
            }
        }
    }
}

type Reply = oneshot::Sender<Result<PushResponse, StorageError>>;

fn commit_group(
    conn: &Connection,
    group: Vec<(Arc<PushInput>, Reply)>,
    rules: &MergeRules,
    clock: &mut HlcClock,
    pokes: &broadcast::Sender<Poke>,
) {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let inputs: Vec<&PushInput> = group.iter().map(|(input, _)| input.as_ref()).collect();
    match commit_pushes(conn, &inputs, rules, clock, now_ms) {
        Ok((results, moved)) => {
            for ((input, reply), result) in group.into_iter().zip(results) {
                drop(input);
                let _ = reply.send(result);
            }
            for poke in moved {
                // No subscribers is fine: nobody is listening.
                let _ = pokes.send(poke);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, pushes = group.len(), "group commit failed; every push in it is refused");
            for (input, reply) in group {
                drop(input);
                let _ = reply.send(Err(StorageError::Internal(e.to_string())));
            }
        }
    }
}

/// Each push's result, and the pokes for the spaces that moved.
pub(crate) type Committed = (Vec<Result<PushResponse, StorageError>>, Vec<Poke>);

/// Applies `inputs` in one SQLite transaction, each push in its own savepoint (a failing push
/// is rolled back alone and gets its error). Returns each push's result and the pokes for the
/// spaces that moved. On `Err` nothing was committed and `clock` is as it was.
pub(crate) fn commit_pushes(
    conn: &Connection,
    inputs: &[&PushInput],
    rules: &MergeRules,
    clock: &mut HlcClock,
    now_ms: u64,
) -> Result<Committed, StorageError> {
    let started_clock = *clock;
    let mut moved = BTreeMap::<SpaceName, u64>::new();
    let outcome = (|| {
        let tx =
            rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)
                .map_err(|e| StorageError::Internal(format!("begin a write: {e}")))?;
        let mut results = Vec::with_capacity(inputs.len());
        for input in inputs {
            tx.execute_batch("SAVEPOINT job")
                .map_err(|e| StorageError::Internal(format!("begin a push: {e}")))?;
            let mut job_moved = BTreeMap::new();
            let mut ctx = WriterContext {
                rules,
                clock,
                now_ms,
                moved: &mut job_moved,
            };
            let result = apply_push(&tx, input, &mut ctx);
            let end = if result.is_ok() {
                "RELEASE job"
            } else {
                "ROLLBACK TO job; RELEASE job"
            };
            tx.execute_batch(end)
                .map_err(|e| StorageError::Internal(format!("end a push: {e}")))?;
            if result.is_ok() {
                for (space, v) in job_moved {
                    let m = moved.entry(space).or_default();
                    *m = (*m).max(v);
                }
            }
            results.push(result);
        }
        save_clock(&tx, clock.last())?;
        tx.commit()
            .map_err(|e| StorageError::Internal(format!("commit: {e}")))?;
        Ok(results)
    })();
    match outcome {
        Ok(results) => Ok((
            results,
            moved
                .into_iter()
                .map(|(space, version)| Poke { space, version })
                .collect(),
        )),
        Err(e) => {
            *clock = started_clock;
            Err(e)
        }
    }
}

pub(crate) fn load_clock(conn: &Connection) -> Hlc {
    let raw: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'hlc'", [], |r| r.get(0))
        .optional()
        .ok()
        .flatten();
    raw.and_then(|r| r.parse().ok()).unwrap_or(Hlc::ZERO)
}

fn save_clock(conn: &Connection, hlc: Hlc) -> Result<(), StorageError> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES ('hlc', ?1) ON CONFLICT DO UPDATE SET value = excluded.value",
    )
    .and_then(|mut s| s.execute([hlc.to_string()]))
    .map_err(|e| StorageError::Internal(format!("save the server clock: {e}")))?;
    Ok(())
}
