//! The state machine itself: one exhaustive `match (state, event)`.

use super::backoff::{BackoffPolicy, SplitMix64};
use super::types::{
    Connectivity, EngineStatus, Event, Failure, FailureKind, Instruction, Phase, PullProgress,
    PushProgress, Reachability, SyncError,
};

/// Tuning of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncConfig {
    /// Retry delays after failures.
    pub backoff: BackoffPolicy,
    /// While idle with the event stream connected, pull anyway this often (a safety net).
    pub idle_poll_ms: u64,
    /// While idle without an event stream, pull (and retry the stream) this often.
    pub stream_retry_ms: u64,
    /// While the app says offline, probe this often anyway (hints can be stale).
    pub offline_probe_ms: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            backoff: BackoffPolicy::default(),
            idle_poll_ms: 5 * 60_000,
            stream_retry_ms: 15_000,
            offline_probe_ms: 60_000,
        }
    }
}

/// The exchange a state is waiting for or will retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Probe,
    Push,
    Pull,
}

/// States own their data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before [`Event::Start`].
    Stopped,
    /// Paused by the app.
    Paused,
    /// The app says the device is offline.
    Offline,
    /// Waiting for timer `timer` before retrying; `stalled` = only the timer, a hint or
    /// `SyncNow` end it (the server refused the request, so local writes must not retrigger).
    Backoff { until: u64, stalled: bool },
    /// An exchange is in flight. `refreshed`: the token was refreshed for this attempt.
    Busy { op: Op, refreshed: bool },
    /// Waiting for the token provider before retrying `op`.
    Authenticating { op: Op },
    /// Nothing to do; timer set for the next poll.
    Idle,
}

/// The sync state machine. See the module docs.
#[derive(Debug, Clone)]
pub struct SyncMachine {
    config: SyncConfig,
    rng: SplitMix64,
    state: State,
    /// Consecutive failures, for the backoff.
    failures: u32,
    /// Work wanted: set by triggers and by results that say "more", cleared when the
    /// exchange is issued (so a trigger that arrives while it is in flight is never lost).
    want_push: bool,
    want_pull: bool,
    /// The app said the device is offline (until it says online).
    device_offline: bool,
    connectivity: Connectivity,
    last_error: Option<SyncError>,
    stream: StreamState,
    timer_id: u64,
    emitted: Option<EngineStatus>,
    /// A recovery from a server that forgot history was started and no push has succeeded
    /// since: a second `ServerForgot` then is a refusal (a server that does not accept the
    /// recovery push must not be retried in a tight loop).
    recovering: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    Closed,
    Opening,
    Open,
}

impl SyncMachine {
    /// A machine in the stopped state; `seed` drives the backoff jitter.
    pub fn new(config: SyncConfig, seed: u64) -> SyncMachine {
        SyncMachine {
            config,
            rng: SplitMix64::new(seed),
            state: State::Stopped,
            failures: 0,
            want_push: false,
            want_pull: false,
            recovering: false,
            device_offline: false,
            connectivity: Connectivity::Unknown,
            last_error: None,
            stream: StreamState::Closed,
            timer_id: 0,
            emitted: None,
        }
    }

    /// The status as it stands.
    pub fn status(&self) -> EngineStatus {
        let phase = match self.state {
            State::Stopped => Phase::Stopped,
            State::Paused => Phase::Paused,
            State::Offline => Phase::Offline,
            State::Backoff { .. } => Phase::Backoff,
            State::Busy { op: Op::Probe, .. } => Phase::Connecting,
            State::Busy { op: Op::Push, .. } => Phase::Uploading,
            State::Busy { op: Op::Pull, .. } => Phase::Downloading,
            State::Authenticating { .. } => Phase::Authenticating,
            State::Idle => Phase::Idle,
        };
        EngineStatus {
            connectivity: self.connectivity,
            phase,
            last_error: self.last_error.clone(),
            next_retry_at_ms: match self.state {
                State::Backoff { until, .. } => Some(until),
                _ => None,
            },
        }
    }

    /// Reacts to `event` at time `now_ms`.
    pub fn handle(&mut self, now_ms: u64, event: Event) -> Vec<Instruction> {
        let mut out = Vec::new();
        self.state = self.step(now_ms, event, &mut out);
        let status = self.status();
        if self.emitted.as_ref() != Some(&status) {
            self.emitted = Some(status.clone());
            out.push(Instruction::Status(status));
        }
        out
    }

    fn step(&mut self, now: u64, event: Event, out: &mut Vec<Instruction>) -> State {
        use Event as E;
        use State as S;
        match (self.state, event) {
            // ---- app controls, valid in every state ----
            (S::Stopped, E::Start) => {
                // The outbox and the server may both hold work from before a restart.
                self.want_push = true;
                self.want_pull = true;
                self.begin(Op::Probe, out)
            }
            (S::Stopped, E::Pause) => {
                // Started paused: the work from before is remembered for the resume.
                self.want_push = true;
                self.want_pull = true;
                S::Paused
            }
            (S::Stopped, _) => S::Stopped,
            (_, E::Pause) => {
                self.close_stream(out);
                S::Paused
            }
            (S::Paused, E::Resume) => {
                self.want_push = true;
                self.want_pull = true;
                if self.device_offline {
                    let at = now + self.config.offline_probe_ms;
                    self.set_timer(at, out);
                    S::Offline
                } else {
                    self.begin(Op::Probe, out)
                }
            }
            (S::Paused, E::NetworkHint(hint)) => {
                self.device_offline = hint == Reachability::Offline;
                if self.device_offline {
                    self.set_connectivity(Connectivity::Offline);
                }
                S::Paused
            }
            (S::Paused, E::LocalWrite) => {
                self.want_push = true;
                S::Paused
            }
            (S::Paused, E::Poke) => {
                self.want_pull = true;
                S::Paused
            }
            (S::Paused, _) => S::Paused,
            (_, E::NetworkHint(Reachability::Offline)) => {
                self.device_offline = true;
                self.set_connectivity(Connectivity::Offline);
                self.close_stream(out);
                let at = now + self.config.offline_probe_ms;
                self.set_timer(at, out);
                S::Offline
            }

            // ---- results of exchanges ----
            (S::Busy { op: Op::Probe, .. }, E::ProbeDone(Ok(()))) => {
                // The server answers; whether the work succeeds is still to be seen, so the
                // error and the backoff count stay until a push or pull succeeds (else a
                // server failing every push would be retried at the base delay forever).
                self.set_connectivity(Connectivity::Online);
                self.next_work(now, out)
            }
            (S::Busy { op: Op::Push, .. }, E::PushDone(Ok(PushProgress { more }))) => {
                self.succeeded();
                self.recovering = false;
                self.want_push |= more;
                // Pull after every push: it confirms what was pushed and brings others' work.
                self.want_pull = true;
                self.next_work(now, out)
            }
            (S::Busy { op: Op::Pull, .. }, E::PullDone(Ok(PullProgress { has_more }))) => {
                self.succeeded();
                self.want_pull |= has_more;
                self.next_work(now, out)
            }
            (
                S::Busy {
                    op: op @ Op::Probe,
                    refreshed,
                },
                E::ProbeDone(Err(failure)),
            )
            | (
                S::Busy {
                    op: op @ Op::Push,
                    refreshed,
                },
                E::PushDone(Err(failure)),
            )
            | (
                S::Busy {
                    op: op @ Op::Pull,
                    refreshed,
                },
                E::PullDone(Err(failure)),
            ) => self.failed(now, op, refreshed, failure, out),
            (S::Authenticating { op }, E::TokenRefreshed(true)) => {
                self.issue(op, out);
                S::Busy {
                    op,
                    refreshed: true,
                }
            }
            (S::Authenticating { .. }, E::TokenRefreshed(false)) => {
                self.record_error(
                    now,
                    FailureKind::Auth,
                    Some("unauthorized".into()),
                    "the server refused the token (401 unauthorized) and the token provider \
                     has no newer one: check the token (revoked, expired, or for another \
                     server)"
                        .into(),
                );
                self.back_off(now, true, None, out)
            }
            // A late result for an exchange this state no longer waits for (sent before a
            // hint or a pause): its effects are already in the store; just note the work.
            (_, E::ProbeDone(_) | E::PushDone(_) | E::PullDone(_) | E::TokenRefreshed(_)) => {
                self.state
            }

            // ---- triggers ----
            (S::Idle, E::LocalWrite) => {
                self.want_push = true;
                self.next_work(now, out)
            }
            (S::Idle, E::Poke) => {
                self.want_pull = true;
                self.next_work(now, out)
            }
            (S::Idle | S::Backoff { .. } | S::Offline, E::SyncNow) => {
                self.want_push = true;
                self.want_pull = true;
                self.begin(Op::Probe, out)
            }
            (S::Offline | S::Backoff { .. }, E::NetworkHint(Reachability::Online)) => {
                self.device_offline = false;
                self.begin(Op::Probe, out)
            }
            (S::Backoff { stalled: false, .. }, E::LocalWrite) => {
                self.want_push = true;
                // Retrying at once only helps if the server was reachable (a 5xx, say);
                // while unreachable, a write per second must not become a request per second.
                if self.connectivity == Connectivity::Offline {
                    self.state
                } else {
                    self.begin(Op::Probe, out)
                }
            }
            (S::Backoff { stalled: false, .. }, E::Poke) => {
                self.want_pull = true;
                self.begin(Op::Probe, out)
            }
            (_, E::LocalWrite) => {
                self.want_push = true;
                self.state
            }
            (_, E::Poke) => {
                self.want_pull = true;
                self.state
            }
            (_, E::SyncNow) => {
                self.want_push = true;
                self.want_pull = true;
                self.state
            }
            (state, E::NetworkHint(Reachability::Online)) => {
                self.device_offline = false;
                state
            }

            // ---- timers ----
            (state, E::TimerFired(id)) if id != self.timer_id => state,
            (S::Backoff { .. } | S::Offline, E::TimerFired(_)) => self.begin(Op::Probe, out),
            (S::Idle, E::TimerFired(_)) => {
                self.want_pull = true;
                self.next_work(now, out)
            }
            (state, E::TimerFired(_)) => state,

            // ---- the event stream ----
            (state, E::StreamOpened) => {
                self.stream = StreamState::Open;
                state
            }
            (state, E::StreamClosed) => {
                self.stream = StreamState::Closed;
                if state == S::Idle {
                    // Without pokes, poll sooner (and reopen the stream then).
                    let at = now + self.config.stream_retry_ms;
                    self.set_timer(at, out);
                }
                state
            }

            // ---- nothing else changes anything ----
            (state, E::Start | E::Resume) => state,
        }
    }

    /// Starts `op` (or the probe first, if the server's reachability is not known).
    fn begin(&mut self, op: Op, out: &mut Vec<Instruction>) -> State {
        let op = if op != Op::Probe && self.connectivity != Connectivity::Online {
            Op::Probe
        } else {
            op
        };
        self.issue(op, out);
        State::Busy {
            op,
            refreshed: false,
        }
    }

    fn issue(&mut self, op: Op, out: &mut Vec<Instruction>) {
        out.push(match op {
            Op::Probe => Instruction::Probe,
            Op::Push => {
                self.want_push = false;
                Instruction::Push
            }
            Op::Pull => {
                self.want_pull = false;
                Instruction::Pull
            }
        });
    }

    /// Pushes first (the server must see local work before we pull its results), then pulls;
    /// idle when there is nothing left.
    fn next_work(&mut self, now: u64, out: &mut Vec<Instruction>) -> State {
        if self.stream == StreamState::Closed {
            self.stream = StreamState::Opening;
            out.push(Instruction::OpenStream);
        }
        if self.want_push {
            self.issue(Op::Push, out);
            return State::Busy {
                op: Op::Push,
                refreshed: false,
            };
        }
        if self.want_pull {
            self.issue(Op::Pull, out);
            return State::Busy {
                op: Op::Pull,
                refreshed: false,
            };
        }
        let wait = if self.stream == StreamState::Open {
            self.config.idle_poll_ms
        } else {
            self.config.stream_retry_ms
        };
        self.set_timer(now + wait, out);
        State::Idle
    }

    fn succeeded(&mut self) {
        self.failures = 0;
        self.last_error = None;
        self.set_connectivity(Connectivity::Online);
    }

    fn failed(
        &mut self,
        now: u64,
        op: Op,
        refreshed: bool,
        failure: Failure,
        out: &mut Vec<Instruction>,
    ) -> State {
        // The exchange did not happen (or its answer was lost): it is still wanted.
        match op {
            Op::Push => self.want_push = true,
            Op::Pull => self.want_pull = true,
            Op::Probe => {}
        }
        match failure {
            Failure::Network(message) => {
                self.set_connectivity(Connectivity::Offline);
                self.close_stream(out);
                self.record_error(
                    now,
                    FailureKind::Network,
                    None,
                    format!("cannot reach the server: {message}"),
                );
                self.back_off(now, false, None, out)
            }
            Failure::Timeout => {
                self.set_connectivity(Connectivity::Offline);
                self.close_stream(out);
                self.record_error(
                    now,
                    FailureKind::Network,
                    None,
                    "the server did not answer in time".into(),
                );
                self.back_off(now, false, None, out)
            }
            Failure::Server { status, message } => {
                self.set_connectivity(Connectivity::Online);
                self.record_error(
                    now,
                    FailureKind::Server,
                    None,
                    format!("server error {status}: {message}"),
                );
                self.back_off(now, false, None, out)
            }
            Failure::RateLimited { retry_after_ms } => {
                self.set_connectivity(Connectivity::Online);
                self.record_error(
                    now,
                    FailureKind::Server,
                    None,
                    "the server asked to slow down".into(),
                );
                self.back_off(now, false, retry_after_ms, out)
            }
            Failure::Unauthorized if !refreshed => {
                out.push(Instruction::RefreshToken);
                State::Authenticating { op }
            }
            Failure::Unauthorized => {
                self.set_connectivity(Connectivity::Online);
                self.record_error(
                    now,
                    FailureKind::Auth,
                    None,
                    "the server refused the credentials, even freshly refreshed ones".into(),
                );
                self.back_off(now, true, None, out)
            }
            Failure::CursorReset => {
                self.set_connectivity(Connectivity::Online);
                out.push(Instruction::ResetCursor);
                self.want_pull = true;
                self.issue(Op::Pull, out);
                State::Busy {
                    op: Op::Pull,
                    refreshed,
                }
            }
            Failure::ServerForgot { last_seq } if !self.recovering => {
                self.recovering = true;
                // Nothing is wrong with this client: re-send what the server lost (still
                // held here), then download the server's state from scratch, since the
                // base holds history the server no longer has.
                self.set_connectivity(Connectivity::Online);
                out.push(Instruction::ForgetServerHistory { last_seq });
                out.push(Instruction::ResetCursor);
                self.want_push = true;
                self.want_pull = true;
                self.next_work(now, out)
            }
            Failure::ServerForgot { last_seq } => {
                self.set_connectivity(Connectivity::Online);
                let text = format!(
                    "the server has forgotten this device's changes after seq {last_seq} and \
                     refused the recovery push; it may not support recovery (upgrade it)"
                );
                self.record_error(now, FailureKind::Refused, Some("seq_gap".into()), text);
                self.back_off(now, true, None, out)
            }
            Failure::Refused {
                status,
                code,
                message,
            } => {
                self.set_connectivity(Connectivity::Online);
                let text = format!("the server refused the request ({status} {code}): {message}");
                self.record_error(now, FailureKind::Refused, Some(code), text);
                self.back_off(now, true, None, out)
            }
            Failure::LocalStore {
                code,
                message,
                retryable,
            } => {
                // Says nothing about the server: connectivity stays what it was. A failure
                // that clears by itself (disk full, lock held) backs off like the network;
                // one that needs someone (a corrupt file) waits like a refusal.
                let text = format!("the local database failed: {message}");
                self.record_error(now, FailureKind::LocalStore, Some(code), text);
                self.back_off(now, !retryable, None, out)
            }
        }
    }

    /// Waits before the next attempt: full-jitter backoff, at least `at_least_ms`; a stalled
    /// machine (the server refused the request itself) waits the cap.
    fn back_off(
        &mut self,
        now: u64,
        stalled: bool,
        at_least_ms: Option<u64>,
        out: &mut Vec<Instruction>,
    ) -> State {
        let delay = if stalled {
            self.config.backoff.cap_ms
        } else {
            self.config.backoff.delay_ms(self.failures, &mut self.rng)
        };
        if let Some(error) = &mut self.last_error {
            error.needs_attention = stalled;
        }
        self.failures = self.failures.saturating_add(1);
        if self.device_offline {
            // The app said so: wait for its hint (or the slow safety probe), not the backoff.
            self.set_connectivity(Connectivity::Offline);
            let at = now + self.config.offline_probe_ms;
            self.set_timer(at, out);
            return State::Offline;
        }
        let until = now + delay.max(at_least_ms.unwrap_or(0));
        self.set_timer(until, out);
        State::Backoff { until, stalled }
    }

    fn record_error(&mut self, now: u64, kind: FailureKind, code: Option<String>, message: String) {
        self.last_error = Some(SyncError {
            kind,
            code,
            message,
            // Set by `back_off`, which knows whether the wait is a stall.
            needs_attention: false,
            at_ms: now,
        });
    }

    fn set_connectivity(&mut self, connectivity: Connectivity) {
        self.connectivity = connectivity;
    }

    fn set_timer(&mut self, at_ms: u64, out: &mut Vec<Instruction>) {
        self.timer_id += 1;
        out.push(Instruction::SetTimer {
            id: self.timer_id,
            at_ms,
        });
    }

    fn close_stream(&mut self, out: &mut Vec<Instruction>) {
        if self.stream != StreamState::Closed {
            self.stream = StreamState::Closed;
            out.push(Instruction::CloseStream);
        }
    }
}

#[cfg(test)]
mod tests;
