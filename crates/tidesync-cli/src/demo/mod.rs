//! `tidesync demo`: the whole offline-to-online story in one command, on the embedded default.
//!
//! A server in this process (free loopback port, SQLite in a temporary directory or
//! `--data-dir`), `--clients` clients with their own databases. Everyone syncs, goes offline
//! and edits (`--ops` random writes each, some in transactions, plus a staged same-field
//! conflict and a stale edit of a strict order); one client is killed with unsent work and a
//! draft and reopened; everyone reconnects; conflicts and rejections are settled; the demo
//! waits until every replica equals the server and prints a summary. Exit code 1 when a step
//! times out or the replicas do not converge.
//!
//! Modules: `setup` (workspace, in-process server, client configuration), `script` (random
//! edits), `story` (the staged moments), `replicas` (the clients and waiting on them),
//! `progress` (live display), `summary` (the closing report).

mod progress;
mod replicas;
mod script;
mod setup;
mod story;
mod summary;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Args;
use tidesync_client::{Phase, Reachability};

use crate::time::{now_ms, seconds};
use progress::Progress;
use replicas::{show_edits, wait_synced, wait_until, Replica};
use setup::{client_config, DemoServer, Workspace};
use summary::{ClientRow, Report};

/// Flags of `tidesync demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of clients (2 to 64).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=64))]
    clients: u32,
    /// Random offline writes per client (puts, patches, deletes; some in transactions).
    #[arg(long, default_value_t = 200)]
    ops: u64,
    /// Seed of the random writes (printed; default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Keep the server and client databases here (an empty or new directory) instead of a
    /// temporary directory removed at the end.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Plain lines instead of progress bars (automatic when stderr is not a terminal).
    #[arg(long)]
    plain: bool,
    /// Seconds each step may take before the demo gives up.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let seed = args
        .seed
        .unwrap_or_else(|| now_ms() ^ (u64::from(std::process::id()) << 32));
    let n = args.clients as usize;
    let ops = args.ops;
    let timeout = Duration::from_secs(args.timeout);
    let deadline = || Instant::now() + timeout;

    let workspace = Workspace::new(args.data_dir.as_deref())?;
    let server = DemoServer::start(&workspace.server_db())?;
    let token = server.token()?;
    println!("tidesync demo: {n} clients × {ops} offline writes, seed {seed} (replay with --seed {seed})");
    println!(
        "server on {} (embedded SQLite in {}); collection `orders` is strict, `todos` lww",
        server.url(),
        workspace.root().display()
    );

    let names: Vec<String> = (1..=n).map(|i| format!("c{i}")).collect();
    let mut replicas = Vec::with_capacity(n);
    for (i, name) in names.iter().enumerate() {
        let config = client_config(
            workspace.client_db(name),
            &server.url(),
            &token,
            seed.wrapping_add(i as u64),
        )?;
        replicas.push(Replica::open(name.clone(), config)?);
    }
    let mut progress = Progress::new(&names, args.plain);
    let mut report = Report {
        seed,
        ops,
        ..Report::default()
    };
    let mut lap = Instant::now();
    let mut mark = |report: &mut Report, step: &str| {
        report.steps.push((step.to_owned(), lap.elapsed()));
        lap = Instant::now();
    };

    progress.step("connecting: every client's first sync");
    wait_synced(
        "every client's first sync",
        deadline(),
        &mut progress,
        &replicas,
    )?;
    let c1 = replicas[0].client()?;
    story::seed_shared(c1)?;
    progress.note("c1 created todos/offsite and orders/o1 (qty 1)");
    wait_until(
        "everyone to receive the shared records",
        deadline(),
        &mut progress,
        &replicas,
        |rs, _| everyone_has_seed(rs),
    )?;
    mark(&mut report, "connect and share the first records");

    progress.step("going offline");
    for r in &replicas {
        r.client()?.set_network(Reachability::Offline);
    }
    wait_until(
        "every client to be offline",
        deadline(),
        &mut progress,
        &replicas,
        |rs, _| {
            Ok(rs
                .iter()
                .all(|r| r.status().is_some_and(|s| s.phase == Phase::Offline)))
        },
    )?;
    let version_offline = server.version()?;

    progress.step(&format!("offline: every client writes {ops} times"));
    story::stage_conflict_and_stale_edit(replicas[0].client()?, replicas[1].client()?)?;
    progress.note("c2 retitled todos/offsite, then c1 did too (c1's edit is newer)");
    progress.note("c1 and c2 both changed the strict orders/o1 on the same base (qty 2, qty 5)");
    edit_offline(&replicas, &mut progress, seed, ops)?;
    if server.version()? != version_offline {
        bail!("the server changed while every client was offline");
    }
    progress.note("while offline the server received nothing (its version did not move)");
    mark(&mut report, "offline edits");

    let victim = n - 1;
    progress.step(&format!(
        "killing {} with unsent work and a draft",
        names[victim]
    ));
    let kill = story::kill_and_reopen(&mut replicas[victim])?;
    progress.note(&format!(
        "{} killed with {} unsent mutations and a draft; reopened with {} and draft {}",
        kill.client,
        kill.pending_before,
        kill.pending_after,
        kill.draft_after.as_deref().unwrap_or("(missing)")
    ));
    let kill_ok = kill.ok();
    report.kill = Some(kill);
    mark(&mut report, "kill and reopen");

    progress.step("reconnecting c1 first, then everyone");
    replicas[0].client()?.set_network(Reachability::Online);
    wait_synced(
        "c1 to upload its edits",
        deadline(),
        &mut progress,
        &replicas[..1],
    )?;
    for r in &replicas[1..] {
        r.client()?.set_network(Reachability::Online);
    }
    mark(&mut report, "reconnect c1");

    progress.step("syncing: pushing, pulling, settling conflicts and rejections");
    let mut settler = story::Settler::default();
    let converge_deadline = deadline();
    let outcome = converge(
        &server,
        &replicas,
        &mut progress,
        &mut settler,
        &mut report,
        converge_deadline,
    );
    settler.finish(&replicas, &mut report);
    mark(&mut report, "sync until every replica converges");
    progress.finish();

    let server_snapshot = server.snapshot()?;
    report.server_records = server_snapshot.len();
    report.server_version = server.version()?;
    for r in &replicas {
        let view = r.snapshot()?;
        let differ = story::differing(&view, &server_snapshot);
        let name = r.name.clone();
        report.clients.push(ClientRow {
            local_ops: r.ops_done.load(std::sync::atomic::Ordering::Relaxed),
            pushed: r
                .last_seq()?
                .saturating_sub(r.status().map_or(0, |s| s.pending)),
            conflicts: report.conflicts.iter().filter(|c| c.client == name).count() as u64,
            rejections: report
                .rejections
                .iter()
                .filter(|c| c.client == name)
                .count() as u64,
            records: view.len(),
            equal: differ == 0,
            differing: differ,
            name,
        });
    }
    report.converged = outcome.is_ok() && report.clients.iter().all(|c| c.equal);
    report.total = started.elapsed();
    print!("{}", report.render());
    for r in &mut replicas {
        if let Some(client) = r.client.take() {
            client.close();
        }
    }
    server.stop();

    outcome.with_context(|| format!("replicas did not converge within {}", seconds(timeout)))?;
    if !report.converged {
        bail!("replicas did not converge: the final equality check failed");
    }
    if !kill_ok {
        bail!("the killed client did not come back with its queue and its draft");
    }
    Ok(())
}

fn everyone_has_seed(replicas: &[Replica]) -> anyhow::Result<bool> {
    for r in replicas {
        let client = r.client()?;
        if client.get(&story::contested())?.is_none() || client.get(&story::order())?.is_none() {
            return Ok(false);
        }
        if !r.is_synced() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Every client writes `ops` times in its own thread while the display follows.
fn edit_offline(
    replicas: &[Replica],
    progress: &mut Progress,
    seed: u64,
    ops: u64,
) -> anyhow::Result<()> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = replicas
            .iter()
            .enumerate()
            .map(|(i, r)| {
                scope.spawn(move || -> anyhow::Result<()> {
                    let mut script = script::Script::new(seed, i, &r.name);
                    script::run(r.client()?, &mut script, ops, &r.ops_done)
                })
            })
            .collect();
        while handles.iter().any(|h| !h.is_finished()) {
            show_edits(progress, replicas, ops);
            std::thread::sleep(Duration::from_millis(50));
        }
        show_edits(progress, replicas, ops);
        progress.flush(true);
        for handle in handles {
            handle
                .join()
                .map_err(|_| anyhow!("a client's editing thread panicked"))??;
        }
        Ok(())
    })
}

/// Settles conflicts and rejections and waits until every replica is caught up and equals
/// the server.
fn converge(
    server: &DemoServer,
    replicas: &[Replica],
    progress: &mut Progress,
    settler: &mut story::Settler,
    report: &mut Report,
    deadline: Instant,
) -> anyhow::Result<()> {
    let mut last_compare: Option<Instant> = None;
    wait_until(
        "every replica to equal the server",
        deadline,
        progress,
        replicas,
        |rs, progress| {
            let (conflicts, rejections) = (report.conflicts.len(), report.rejections.len());
            if settler.settle(rs, report)? {
                for c in &report.conflicts[conflicts..] {
                    progress.note(&format!("{}: conflict on {}, {}", c.client, c.what, c.how));
                }
                for r in &report.rejections[rejections..] {
                    progress.note(&format!("{}: {}; {}", r.client, r.what, r.outcome));
                }
                return Ok(false);
            }
            let quiet = rs.iter().all(|r| {
                r.is_synced()
                    && r.status()
                        .is_some_and(|s| s.conflicts == 0 && s.rejections == 0)
            });
            if !quiet || last_compare.is_some_and(|t| t.elapsed() < Duration::from_millis(250)) {
                return Ok(false);
            }
            last_compare = Some(Instant::now());
            let truth = server.snapshot()?;
            for r in rs {
                if r.snapshot()? != truth {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
}
