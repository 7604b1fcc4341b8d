//! Pure tidesync logic shared by the client and the server.
//!
//! - [`clock`]: the hybrid logical clock that stamps every write.
//! - [`record`]: a record as last-writer-wins registers, and how a mutation merges onto it.
//! - [`patch`]: JSON merge patch (RFC 7396) resolved against a document.
//! - [`wire`]: a record state as JSON text (document + stamps), as servers and clients store it.
//! - [`sync`]: the client's sync state machine (events in, instructions out) and its backoff.
//!
//! What it does not do: this crate never touches a socket, a file, the system clock, a thread
//! or a random number generator. Wall-clock time is a parameter (`wall_ms`), so the same code
//! runs in the app, on the server and under a simulated clock in tests.

pub mod clock;
pub mod patch;
pub mod record;
pub mod sync;
pub mod wire;

pub use clock::{ClockError, HlcClock};
pub use record::{ApplyEffect, FieldRegister, RecordState, StateError};
