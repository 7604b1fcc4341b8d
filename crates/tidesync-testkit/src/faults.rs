//! The manual fault switches: what the proxy does to traffic right now.

use std::time::Duration;

use crate::plan::FaultPlan;

/// How the proxy treats *new* connections. Established connections are not touched; use
/// [`FaultProxy::kill_all`](crate::FaultProxy::kill_all) for those.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Refuse {
    /// Forward new connections to the upstream.
    #[default]
    No,
    /// Accept, then close at once without contacting the upstream. The client's `connect`
    /// succeeds; its first read sees EOF (or a reset if it had already written).
    AcceptAndClose,
    /// Close the listening socket, so `connect` fails with `ConnectionRefused`, like a server
    /// that is down. The same port is bound again when this is lifted (see the caveat on
    /// [`FaultProxy::offline`](crate::FaultProxy::offline)).
    Unbind,
}

/// Which responses to cut. See [`FaultProxy`](crate::FaultProxy) for what a cut does.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum CutMode {
    /// Cut nothing (a [`FaultPlan`] may still cut).
    #[default]
    Off,
    /// Cut the next `n` responses, on whichever connections they arrive; counts down to 0.
    Next(u32),
    /// Cut each response with this probability (clamped to `0.0..=1.0`). Uses an unseeded
    /// RNG; use a [`FaultPlan`] when the run must be reproducible.
    Probability(f64),
}

/// The complete manual fault configuration, replaced as a whole by
/// [`FaultProxy::set`](crate::FaultProxy::set).
///
/// Manual faults and the [`plan`](Self::plan) combine: a connection is refused if either
/// says so, a response is cut if either says so, and their delays add up.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Faults {
    /// How new connections are treated.
    pub refuse: Refuse,
    /// Fixed latency added before forwarding each read chunk, in both directions. A
    /// request/response round trip therefore gets at least `2 × delay`.
    pub delay: Duration,
    /// Extra uniformly random latency in `0..=jitter`, drawn per chunk.
    pub jitter: Duration,
    /// Latency added once per connection, before the proxy connects to the upstream.
    pub connect_delay: Duration,
    /// Which responses to cut.
    pub cut: CutMode,
    /// How many bytes of a cut response are still forwarded before the connection is
    /// closed. `0` (the default) means the client sees no byte of it.
    pub cut_after: usize,
    /// A seeded random fault plan, if any.
    pub plan: Option<FaultPlan>,
}

impl Faults {
    /// No faults: traffic passes through untouched.
    pub fn pass() -> Self {
        Self::default()
    }
}
