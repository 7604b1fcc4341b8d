//! One simulated run: set up the server and clients for a seed, play random actions under
//! faults, heal, let everyone sync to quiescence, check the invariants.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use tidesync_client::driver::{Input, Reachability};
use tidesync_protocol::ClientId;
use tidesync_server::MergeRules;

use crate::actions::{policies, schemas, spaces, Action, Weights};
use crate::client::{ClientSetup, SimClient};
use crate::invariants::{self, Totals};
use crate::network::{Faults, Net, NetStats, Scheduled, ToClient};
use crate::rng::Rng;
use crate::server::SimServer;

/// Simulated time at the start of every run (2024-01-01, in ms): realistic HLC values.
const START_MS: u64 = 1_704_067_200_000;
/// The server re-stamps mutations stamped further ahead than this.
const MAX_SKEW_MS: u64 = 60_000;
/// How long a stream takes to notice its connection died (heartbeat timeout).
const HEARTBEAT_MS: u64 = 15_000;
/// After healing, how long (simulated) everyone gets to settle before that is a failure.
const SETTLE_LIMIT_MS: u64 = 60 * 60_000;
/// The server's history horizon (`retain_deleted`), short enough that partitions, waits and
/// crashes outlast it: clients come back behind it and are reset.
const RETAIN_MS: u64 = 20_000;
/// The server prunes after every this many actions (and settle steps).
const PRUNE_EVERY: usize = 4;

/// Knobs of a run (the seed decides everything else).
#[derive(Debug, Clone, Copy)]
pub struct SimConfig {
    /// Random actions before the network heals.
    pub actions: usize,
    /// Print every action as it happens.
    pub trace: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            actions: 100,
            trace: false,
        }
    }
}

/// What a passing run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Number of clients.
    pub clients: usize,
    /// Events processed.
    pub events: u64,
    /// Client crashes and server crashes.
    pub crashes: (u32, u32),
    /// Simulated time the run covered, ms.
    pub sim_ms: u64,
    /// What the network did.
    pub net: NetStats,
    /// Writes, rejections, conflicts, records.
    pub totals: Totals,
    /// A digest of the final state and the action trace: equal for equal seeds.
    pub digest: u64,
}

struct World {
    net: Net,
    server: SimServer,
    clients: Vec<SimClient>,
    trace: bool,
    events: u64,
    /// Every action, as text (part of the digest).
    log: String,
}

/// A temp dir, on tmpfs when there is one (the simulation fsyncs a lot).
fn temp_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new()
            .prefix("tidesync-sim")
            .tempdir_in(shm)
        {
            return dir;
        }
    }
    tempfile::Builder::new()
        .prefix("tidesync-sim")
        .tempdir()
        .expect("create a temp dir")
}

/// Runs seed `seed`; `Err` describes the violated invariant (or the panic).
pub fn run_seed(seed: u64, config: &SimConfig) -> Result<Report, String> {
    let run = std::panic::catch_unwind(|| run_inner(seed, config));
    match run {
        Ok(result) => result,
        Err(panic) => Err(format!(
            "panicked: {}",
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default()
        )),
    }
}

fn run_inner(seed: u64, config: &SimConfig) -> Result<Report, String> {
    let mut rng = Rng::new(seed);
    let clients = rng.range(2, 4) as usize;
    let faults = Faults::random(&mut rng);
    let weights = Weights::random(&mut rng);
    let dir = temp_dir();
    let mut net = Net::new(START_MS, faults, rng.fork());
    let rules = MergeRules {
        policies: policies(),
        max_clock_skew: Duration::from_millis(MAX_SKEW_MS),
        schemas: schemas(),
    };
    let server = SimServer::open(dir.path().join("server.db"), rules, &spaces(), net.clock());
    let mut log = String::new();
    let mut started = Vec::new();
    for index in 0..clients {
        // Client 0 sometimes runs far ahead (re-stamped by the server); others a bit off.
        let skew_ms = match rng.range(0, 9) {
            0 if index == 0 => 2 * MAX_SKEW_MS as i64,
            0..=1 => -(rng.range(0, 30_000) as i64),
            2..=3 => rng.range(0, 5_000) as i64,
            _ => 0,
        };
        let setup = ClientSetup {
            index,
            path: dir.path().join(format!("client{index}.db")),
            client_id: ClientId::new(format!("client-{index}")).expect("valid client id"),
            skew_ms,
            push_batch: rng.range(1, 8) as usize,
            pull_limit: rng.range(1, 6) as u32,
            spaces: spaces(),
        };
        let _ = writeln!(
            log,
            "client {index}: skew {skew_ms} ms, push batch {}, pull limit {}",
            setup.push_batch, setup.pull_limit
        );
        started.push(SimClient::start(setup, &mut net, rng.fork()));
    }
    let _ = writeln!(
        log,
        "{clients} clients, faults {faults:?}, weights {weights:?}"
    );
    if config.trace {
        print!("{log}");
    }
    let mut world = World {
        net,
        server,
        clients: started,
        trace: config.trace,
        events: 0,
        log,
    };

    for i in 0..config.actions {
        let action = Action::random(&mut rng, clients, &weights);
        world.act(&action);
        let gap = rng.range(0, 3_000);
        world.run_until(world.net.now + gap);
        if i % PRUNE_EVERY == 0 {
            world.prune();
        }
        for client in &mut world.clients {
            invariants::counts_are_kept(client)?;
        }
    }
    world.heal();
    let settled_at = world.settle()?;
    let totals = invariants::check(&mut world.server, &mut world.clients, MAX_SKEW_MS)?;
    let _ = writeln!(world.log, "settled at {settled_at} {totals:?}");
    let (records, cursor) = world.server.full_state(&spaces());
    let _ = writeln!(world.log, "{records:?} {cursor:?}");
    let report = Report {
        seed,
        clients,
        events: world.events,
        crashes: (
            world.clients.iter().map(|c| c.incarnation).sum(),
            world.server.crashes,
        ),
        sim_ms: world.net.now - START_MS,
        net: world.net.stats,
        totals,
        digest: fnv1a(world.log.as_bytes()),
    };
    drop(world);
    drop(dir);
    Ok(report)
}

/// One line per network event (with `TIDESYNC_SIM_TRACE`); pokes and timers are left out.
fn trace_event(t: u64, event: &Scheduled) {
    use crate::network::{Answer, Request};
    let seqs = |m: &[tidesync_protocol::Mutation]| {
        let first = m.first().map_or(0, |m| m.seq);
        let last = m.last().map_or(0, |m| m.seq);
        format!("{first}..={last}")
    };
    match event {
        Scheduled::ToServer {
            client,
            id,
            request: Request::Push(p),
        } => {
            println!(
                "t+{t}   server <- client {client} #{id} push {}",
                seqs(&p.mutations)
            );
        }
        Scheduled::ToServer {
            client,
            id,
            request: Request::Pull(p),
        } => {
            println!(
                "t+{t}   server <- client {client} #{id} pull {:?}",
                p.cursor
            );
        }
        Scheduled::ToClient {
            client,
            msg:
                ToClient::Answer {
                    id,
                    answer: Answer::Push(r),
                },
            ..
        } => {
            let r = r.as_ref().map(|r| {
                (
                    r.acked_through,
                    r.results
                        .iter()
                        .map(|x| {
                            (
                                x.seq,
                                format!("{:?}", x.outcome)
                                    .chars()
                                    .take(20)
                                    .collect::<String>(),
                            )
                        })
                        .collect::<Vec<_>>(),
                )
            });
            println!("t+{t}   client {client} <- #{id} push answer {r:?}");
        }
        Scheduled::ToClient {
            client,
            msg:
                ToClient::Answer {
                    id,
                    answer: Answer::Pull(r),
                },
            ..
        } => {
            let r = r
                .as_ref()
                .map(|r| (r.changes.len(), r.has_more, r.acked_through, &r.cursor));
            println!("t+{t}   client {client} <- #{id} pull answer {r:?}");
        }
        Scheduled::ToClient {
            client,
            msg: ToClient::Failed { id, failure },
            ..
        } => {
            println!("t+{t}   client {client} <- #{id} failed {failure:?}");
        }
        Scheduled::Timeout { client, id } => println!("t+{t}   client {client} timeout #{id}"),
        _ => {}
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl World {
    fn act(&mut self, action: &Action) {
        let line = format!("t+{} {action:?}", self.net.now - START_MS);
        if self.trace {
            println!("{line}");
        }
        self.log.push_str(&line);
        self.log.push('\n');
        let net = &mut self.net;
        match action {
            Action::Write { client, ops } => self.clients[*client].write(net, ops),
            Action::Hint { client, online } => {
                let c = &mut self.clients[*client];
                c.offline_hint = !online;
                let hint = if *online {
                    Reachability::Online
                } else {
                    Reachability::Offline
                };
                c.handle(net, Input::Network(hint));
            }
            Action::SyncNow { client } => self.clients[*client].handle(net, Input::SyncNow),
            Action::RetryRejection { client } => self.clients[*client].retry_rejection(net),
            Action::Partition { client, ms } => {
                net.partition(*client, net.now + ms);
                // The stream's connection is dead; the client notices at the next missed
                // heartbeat.
                if let Some(id) = self.server.drop_stream(*client) {
                    let failure = tidesync_core::sync::Failure::Network("heartbeat lost".into());
                    net.local(
                        net.now + HEARTBEAT_MS,
                        *client,
                        ToClient::Failed { id, failure },
                    );
                }
            }
            Action::CrashClient { client } => self.clients[*client].crash_and_restart(net),
            Action::CrashServer { down_ms } => {
                if net.server_up {
                    self.server.crash(net);
                    net.schedule(net.now + down_ms, Scheduled::ServerRestart);
                }
            }
            Action::Wait { ms } => {
                let until = net.now + ms;
                self.run_until(until);
            }
        }
    }

    /// Processes every event due up to `until`, then sets the clock to `until`.
    fn run_until(&mut self, until: u64) {
        while let Some(event) = self.net.next_before(until) {
            self.events += 1;
            self.dispatch(event);
        }
        self.net.advance_to(until);
    }

    fn dispatch(&mut self, event: Scheduled) {
        if self.trace {
            trace_event(self.net.now - START_MS, &event);
        }
        let net = &mut self.net;
        match event {
            Scheduled::ToServer {
                client,
                id,
                request,
            } => {
                if net.server_up && !net.is_partitioned(client) {
                    self.server.handle(net, client, id, request);
                } else {
                    net.stats.lost += 1;
                }
            }
            Scheduled::ToClient {
                client,
                msg,
                from_server,
            } => {
                if from_server && net.is_partitioned(client) {
                    net.stats.lost += 1;
                } else {
                    self.clients[client].receive(net, msg);
                }
            }
            Scheduled::Timer {
                client,
                incarnation,
                id,
            } => self.clients[client].timer_fired(net, incarnation, id),
            Scheduled::Timeout { client, id } => self.clients[client].timeout(net, id),
            Scheduled::Local { client, id } => self.clients[client].local_done(net, id),
            Scheduled::ServerRestart => self.server.restart(net),
        }
    }

    /// The network heals, the server is up, every app says "online" and asks for a sync.
    fn heal(&mut self) {
        let _ = writeln!(self.log, "heal at t+{}", self.net.now - START_MS);
        self.net.heal();
        self.server.restart(&mut self.net);
        for client in &mut self.clients {
            client.offline_hint = false;
            client.handle(&mut self.net, Input::Network(Reachability::Online));
            client.handle(&mut self.net, Input::SyncNow);
        }
    }

    /// Runs until every client is idle with an empty outbox and the server's versions in its
    /// cursor; `Err` if that takes longer than [`SETTLE_LIMIT_MS`].
    /// The server prunes its history at the horizon of now.
    fn prune(&mut self) {
        let cutoff = self.net.now.saturating_sub(RETAIN_MS);
        self.server.prune(cutoff, &spaces());
    }

    fn settle(&mut self) -> Result<u64, String> {
        let deadline = self.net.now + SETTLE_LIMIT_MS;
        let spaces = spaces();
        let mut steps = 0;
        while self.net.now < deadline {
            let step = self.net.now + 500;
            self.run_until(step);
            steps += 1;
            if steps % PRUNE_EVERY == 0 {
                self.prune();
            }
            let (_, versions) = self.server.full_state(&spaces);
            let settled = self.clients.iter().all(|c| {
                let store = c.store_ref();
                let pending = store.outbox_stats().map(|s| s.pending).unwrap_or(1);
                let cursor = store.cursor().unwrap_or_default();
                c.is_idle()
                    && pending == 0
                    && spaces.iter().all(|s| {
                        cursor.get(s).copied().unwrap_or(0) == versions.get(s).copied().unwrap_or(0)
                    })
            });
            if settled {
                return Ok(self.net.now - START_MS);
            }
        }
        let states: Vec<String> = self
            .clients
            .iter()
            .map(|c| {
                let store = c.store_ref();
                format!(
                    "client {}: idle {} outbox {:?} cursor {:?} rejections {:?}",
                    c.setup.index,
                    c.is_idle(),
                    store.outbox_stats(),
                    store.cursor(),
                    store.rejection_count()
                )
            })
            .collect();
        Err(format!(
            "liveness: not settled {} min after the network healed: {}",
            SETTLE_LIMIT_MS / 60_000,
            states.join("; ")
        ))
    }
}
