//! The client's sync state machine, sans I/O.
//!
//! [`SyncMachine::handle`] takes an [`Event`] (a local write, a network hint, the result of a
//! push or pull the runtime performed, a timer, a poke, pause/resume) and the current time,
//! and returns [`Instruction`]s (send a push, send a pull, probe the server, open the event
//! stream, set a timer, emit a status). It never performs I/O, reads a clock or draws
//! entropy itself: time arrives with every event and randomness comes from the seed given
//! at construction, so a run replays exactly, in unit tests and in the simulation.
//!
//! The runtime (`tidesync-client`) executes the instructions and feeds back what happened.

mod backoff;
mod machine;
mod types;

pub use backoff::{BackoffPolicy, SplitMix64};
pub use machine::{SyncConfig, SyncMachine};
pub use types::{
    Connectivity, EngineStatus, Event, Failure, FailureKind, Instruction, Phase, PullProgress,
    PushProgress, Reachability, SyncError,
};
