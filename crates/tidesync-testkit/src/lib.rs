//! Test-only helpers for end-to-end tests of tidesync over real loopback sockets.
//!
//! The centrepiece is [`FaultProxy`], a TCP proxy that sits between the sync client and the
//! server and breaks the network on command: it can refuse connections, drop live ones, add
//! latency, cut a response after the server has started answering (the server committed the
//! push, the client never hears about it), and run a seeded random [`FaultPlan`] whose seed
//! a failing test can print and replay. [`ProxyStats`] and [`FaultEvent`]s let a test assert
//! that the faults it asked for really happened.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! use std::time::Duration;
//! use tidesync_testkit::{FaultPlan, FaultProxy};
//!
//! # let server_addr: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
//! let proxy = FaultProxy::start(server_addr)?;
//! // point the client at proxy.addr() instead of server_addr, then:
//! proxy.cut_next_responses(1); // the next push is committed but its answer never arrives
//! proxy.kill_all(); // every live connection is closed now
//! proxy.set_plan(FaultPlan::from_env_or_random().cut(0.2).drop_mid_request(0.1));
//! assert!(tidesync_testkit::wait_until(Duration::from_secs(5), || proxy.stats().responses_cut > 0));
//! # Ok(()) }
//! ```
//!
//! Also here: [`free_port`] and [`wait_until`], two small helpers most socket tests want, and
//! [`TestDatabase`], a PostgreSQL schema of its own for one test.
//!
//! What this crate is **not**:
//! - **Not for production.** It is `publish = false`, has no TLS, no HTTP parsing and no
//!   attempt at performance beyond "several MB in well under a second".
//! - **Loopback only.** The proxy listens on `127.0.0.1` and refuses to forward anywhere but a
//!   loopback address; tests may only talk to loopback.
//! - **Not protocol-aware.** A "request" is whatever the client sends after the last
//!   response started, a "response" whatever the server sends after that (see
//!   [`FaultProxy`] for the exact rule). That fits one-request-at-a-time HTTP/1.1; it does not
//!   understand pipelining, HTTP/2 or server-initiated streams.
//! - **Not a network simulator.** Latency is added per read chunk by sleeping; there is no
//!   bandwidth model, reordering or packet loss (TCP would hide those anyway).
//!
//! Errors are plain [`std::io::Error`]s: the only things that can fail are socket and thread
//! operations, so a crate error enum would add a layer without adding a decision.
//!
//! Implementation: std threads, no async runtime. One listener thread per proxy, two threads
//! per forwarded connection (one per direction). Every thread ends when either side closes,
//! on [`FaultProxy::kill_all`], or when the proxy is dropped; `Drop` joins them all.

mod conn;
mod faults;
mod plan;
mod ports;
pub mod postgres;
mod proxy;
mod stats;
mod wait;

pub use faults::{CutMode, Faults, Refuse};
pub use plan::{ConnectionPlan, DirectionDice, FaultPlan, SEED_ENV};
pub use ports::free_port;
pub use postgres::TestDatabase;
pub use proxy::FaultProxy;
pub use stats::{Fault, FaultEvent, ProxyStats};
pub use wait::wait_until;
