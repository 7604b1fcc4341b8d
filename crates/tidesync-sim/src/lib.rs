//! Deterministic simulation of tidesync: N real clients (the real `SyncMachine` and the real
//! `Store`, each on its own SQLite file, with a simulated wall clock) and the real server
//! logic (`SyncEngine` on its own SQLite file), connected by a simulated network under
//! simulated time. The network drops, delays, duplicates, reorders and cuts messages and
//! partitions clients; clients and the server crash and restart; the app writes, deletes and
//! runs transactions on a small key space under every conflict policy at once. After the
//! network heals and everyone syncs to quiescence, the invariants of DESIGN §10 are asserted
//! (listed in the `invariants` module and in ARCHITECTURE.md).
//!
//! Same seed, same run: every random draw comes from the seed, time is simulated, events are
//! ordered by (time, insertion order), nothing iterates a `HashMap`, and client ids are fixed.
//!
//! What it does not do: HTTP, threads, real time, or process kills (a crash here drops the
//! in-memory state and the database handle between two steps; `kill -9` in the middle of a
//! SQLite commit is the crash-loop tests' job). It never edits the libraries it drives.
//!
//! ```text
//! TIDESYNC_SIM_SEED=123 cargo test -p tidesync-sim -- --nocapture     # replay one seed
//! TIDESYNC_SIM_SEEDS=5000 cargo test -p tidesync-sim --release         # many seeds
//! ```

mod actions;
mod client;
mod invariants;
mod network;
mod rng;
mod server;
mod world;

pub use invariants::Totals;
pub use network::NetStats;
pub use world::{run_seed, Report, SimConfig};

/// The command that replays `seed`, as printed for a failing seed.
pub fn replay_command(seed: u64) -> String {
    format!("TIDESYNC_SIM_SEED={seed} TIDESYNC_SIM_TRACE=1 cargo test -p tidesync-sim --test sim -- --nocapture")
}
