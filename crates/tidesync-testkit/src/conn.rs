//! One forwarded connection: its shared state, its two forwarding threads, and where the
//! per-connection faults (drop mid-request, cut response, latency) are applied.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::plan::{ConnectionPlan, DirectionDice};
use crate::proxy::{lock, Shared};
use crate::stats::{add, bump, Fault};

/// Read buffer per direction.
const CHUNK: usize = 64 * 1024;
/// Upper bound for connecting to the upstream (loopback: either instant or refused).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Delays are slept in slices this long so a killed connection stops promptly.
const SLEEP_SLICE: Duration = Duration::from_millis(5);

/// Turn-taking phases, see [`FaultProxy`](crate::FaultProxy): nobody has spoken yet or the
/// upstream spoke first, the client is sending a request, the upstream is answering it.
const IDLE: u8 = 0;
const REQUESTING: u8 = 1;
const RESPONDING: u8 = 2;

/// A registered connection: what the proxy needs to close it and to join its thread.
#[derive(Debug)]
pub(crate) struct ConnEntry {
    pub(crate) state: Arc<ConnState>,
    handle: JoinHandle<()>,
}

impl ConnEntry {
    /// Whether the connection's threads have ended.
    pub(crate) fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Waits for the connection's threads to end. They end on their own once closed.
    pub(crate) fn join(self) {
        let _ = self.handle.join();
    }
}

/// State shared by a connection's two forwarding threads and the proxy handle.
#[derive(Debug)]
pub(crate) struct ConnState {
    /// Accept sequence number, used in [`FaultEvent`](crate::FaultEvent)s.
    pub(crate) id: u64,
    dead: AtomicBool,
    /// Clones of both sockets, so the proxy can shut them down from outside. Released when
    /// the connection ends so their descriptors close.
    client: Mutex<Option<TcpStream>>,
    upstream: Mutex<Option<TcpStream>>,
    phase: AtomicU8,
    pending_cut: Mutex<Option<PendingCut>>,
}

/// A response that is being cut: how much of it may still reach the client.
#[derive(Debug, Clone, Copy)]
struct PendingCut {
    response: u64,
    remaining: usize,
    forwarded: usize,
}

impl ConnState {
    /// Closes both sides now: shuts down both sockets, which also wakes both forwarding
    /// threads out of blocking reads and writes. Returns `false` if already closed.
    pub(crate) fn close(&self) -> bool {
        self.close_for(None)
    }

    /// Like [`close`](Self::close), recording `fault` if this call is the one that closes.
    /// The fault is recorded *before* the sockets close, so a test that has just seen EOF
    /// also sees the event.
    pub(crate) fn close_for(&self, fault: Option<(&Shared, Fault)>) -> bool {
        if self.dead.swap(true, Ordering::SeqCst) {
            return false;
        }
        if let Some((shared, fault)) = fault {
            shared.counters.record(self.id, fault);
        }
        for socket in [&self.client, &self.upstream] {
            if let Some(s) = lock(socket).as_ref() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        true
    }

    fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    /// Registers the upstream socket; returns `false` (and closes it) if the connection was
    /// closed while the upstream was being contacted.
    fn attach_upstream(&self, upstream: TcpStream) -> bool {
        *lock(&self.upstream) = Some(upstream);
        if self.is_dead() {
            if let Some(s) = lock(&self.upstream).as_ref() {
                let _ = s.shutdown(Shutdown::Both);
            }
            return false;
        }
        true
    }

    /// Drops the socket clones so the descriptors close with the forwarding threads' own.
    fn release(&self) {
        lock(&self.client).take();
        lock(&self.upstream).take();
    }

    /// Sleeps for `d`, returning early if the connection is closed.
    fn sleep(&self, d: Duration) {
        let deadline = Instant::now() + d;
        while !self.is_dead() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            thread::sleep(left.min(SLEEP_SLICE));
        }
    }

    /// Closes the connection for a cut and records it (unless something else closed it).
    fn fire_cut(&self, shared: &Shared, cut: PendingCut) {
        let fault = Fault::ResponseCut {
            response: cut.response,
            forwarded: cut.forwarded,
        };
        self.close_for(Some((shared, fault)));
    }
}

/// Starts the thread that connects to the upstream and forwards the connection.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    id: u64,
    client: TcpStream,
    plan: Option<ConnectionPlan>,
    connect_delay: Duration,
    upstream: SocketAddr,
) -> io::Result<ConnEntry> {
    let state = Arc::new(ConnState {
        id,
        dead: AtomicBool::new(false),
        client: Mutex::new(Some(client.try_clone()?)),
        upstream: Mutex::new(None),
        phase: AtomicU8::new(IDLE),
        pending_cut: Mutex::new(None),
    });
    let handle = {
        let state = Arc::clone(&state);
        thread::Builder::new()
            .name(format!("testkit-conn-{id}"))
            .spawn(move || {
                run(&shared, &state, client, plan, connect_delay, upstream);
                state.release();
                shared.counters.active.fetch_sub(1, Ordering::SeqCst);
                bump(&shared.counters.closed);
            })?
    };
    Ok(ConnEntry { state, handle })
}

/// Connects to the upstream, then forwards both directions until the connection ends.
fn run(
    shared: &Arc<Shared>,
    state: &Arc<ConnState>,
    client: TcpStream,
    plan: Option<ConnectionPlan>,
    connect_delay: Duration,
    upstream_addr: SocketAddr,
) {
    state.sleep(connect_delay);
    if state.is_dead() {
        return;
    }
    let Ok(upstream) = TcpStream::connect_timeout(&upstream_addr, CONNECT_TIMEOUT) else {
        bump(&shared.counters.upstream_connect_failures);
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let Ok((upstream_reader, client_writer, upstream_handle)) = clone_sockets(&client, &upstream)
    else {
        state.close();
        return;
    };
    if !state.attach_upstream(upstream_handle) {
        return;
    }
    let (requests, responses) = match plan.map(ConnectionPlan::into_directions) {
        Some((req, resp)) => (Some(req), Some(resp)),
        None => (None, None),
    };
    let response_thread = {
        let (shared, state) = (Arc::clone(shared), Arc::clone(state));
        thread::Builder::new()
            .name(format!("testkit-conn-{}-resp", state.id))
            .spawn(move || {
                Pump::new(Direction::ToClient, &shared, &state, responses)
                    .run(upstream_reader, client_writer);
            })
    };
    let Ok(response_thread) = response_thread else {
        state.close();
        return;
    };
    Pump::new(Direction::ToUpstream, shared, state, requests).run(client, upstream);
    let _ = response_thread.join();
}

/// The extra socket handles a connection needs: a reader for the response thread, a writer
/// to the client for it, and one upstream handle for [`ConnState::close`].
fn clone_sockets(
    client: &TcpStream,
    upstream: &TcpStream,
) -> io::Result<(TcpStream, TcpStream, TcpStream)> {
    Ok((
        upstream.try_clone()?,
        client.try_clone()?,
        upstream.try_clone()?,
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Client to upstream: requests.
    ToUpstream,
    /// Upstream to client: responses.
    ToClient,
}

/// Whether a forwarding loop goes on after a chunk.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// One direction of a connection: reads chunks, applies faults, writes them on.
struct Pump<'a> {
    direction: Direction,
    shared: &'a Shared,
    state: &'a ConnState,
    dice: Option<DirectionDice>,
    /// Requests (or responses) begun so far on this connection.
    messages: u64,
}

impl<'a> Pump<'a> {
    fn new(
        direction: Direction,
        shared: &'a Shared,
        state: &'a ConnState,
        dice: Option<DirectionDice>,
    ) -> Self {
        Self {
            direction,
            shared,
            state,
            dice,
            messages: 0,
        }
    }

    /// Forwards until EOF, an error, or the connection is closed. Never panics on I/O.
    fn run(mut self, mut from: TcpStream, mut to: TcpStream) {
        let mut buf = vec![0; CHUNK];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) => return self.on_eof(&to),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.state.close();
                    return;
                }
            };
            if self.state.is_dead() {
                return;
            }
            let flow = match self.direction {
                Direction::ToUpstream => self.request_chunk(&buf[..n], &mut to),
                Direction::ToClient => self.response_chunk(&buf[..n], &mut to),
            };
            if flow == Flow::Stop {
                return;
            }
        }
    }

    /// The source finished sending: pass the half-close on, unless a cut is pending, in
    /// which case the cut happens now.
    fn on_eof(&self, to: &TcpStream) {
        if self.direction == Direction::ToClient {
            if let Some(cut) = lock(&self.state.pending_cut).take() {
                self.state.fire_cut(self.shared, cut);
                return;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    }

    fn request_chunk(&mut self, data: &[u8], to: &mut TcpStream) -> Flow {
        if self.state.phase.swap(REQUESTING, Ordering::SeqCst) != REQUESTING {
            let request = self.messages;
            self.messages += 1;
            // A cut connection never carries another exchange.
            if let Some(cut) = lock(&self.state.pending_cut).take() {
                self.state.fire_cut(self.shared, cut);
                return Flow::Stop;
            }
            if self
                .dice
                .as_mut()
                .is_some_and(DirectionDice::next_message_faulted)
            {
                self.delay();
                let half = &data[..data.len() / 2];
                let forwarded = match self.write(to, half) {
                    Flow::Continue => half.len(),
                    Flow::Stop => 0,
                };
                let fault = Fault::DroppedMidRequest { request, forwarded };
                self.state.close_for(Some((self.shared, fault)));
                return Flow::Stop;
            }
        }
        self.delay();
        self.write(to, data)
    }

    fn response_chunk(&mut self, data: &[u8], to: &mut TcpStream) -> Flow {
        let begins = self.state.phase.compare_exchange(
            REQUESTING,
            RESPONDING,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        if begins.is_ok() {
            let response = self.messages;
            self.messages += 1;
            // Roll the plan's dice whatever the manual mode says, so its stream stays aligned.
            let planned = self
                .dice
                .as_mut()
                .is_some_and(DirectionDice::next_message_faulted);
            let (manual, cut_after) = self.shared.take_manual_cut();
            if planned || manual {
                *lock(&self.state.pending_cut) = Some(PendingCut {
                    response,
                    remaining: cut_after,
                    forwarded: 0,
                });
            }
        }
        self.delay();
        let budget = lock(&self.state.pending_cut).map(|cut| cut.remaining);
        let Some(budget) = budget else {
            return self.write(to, data);
        };
        let part = &data[..budget.min(data.len())];
        if self.write(to, part) == Flow::Stop {
            return Flow::Stop;
        }
        let mut pending = lock(&self.state.pending_cut);
        let Some(cut) = pending.as_mut() else {
            // The request side fired the cut meanwhile.
            return Flow::Stop;
        };
        cut.remaining -= part.len();
        cut.forwarded += part.len();
        if cut.remaining > 0 {
            return Flow::Continue;
        }
        let cut = *cut;
        *pending = None;
        drop(pending);
        self.state.fire_cut(self.shared, cut);
        Flow::Stop
    }

    /// Sleeps the manual plus planned latency for one chunk.
    fn delay(&mut self) {
        let mut delay = self.shared.chunk_delay();
        if let Some(dice) = self.dice.as_mut() {
            delay += dice.next_chunk_delay();
        }
        self.state.sleep(delay);
    }

    /// Writes a chunk on and counts it; on failure closes the connection.
    fn write(&self, to: &mut TcpStream, data: &[u8]) -> Flow {
        if self.state.is_dead() {
            return Flow::Stop;
        }
        if data.is_empty() {
            return Flow::Continue;
        }
        if to.write_all(data).is_err() {
            self.state.close();
            return Flow::Stop;
        }
        let counter = match self.direction {
            Direction::ToUpstream => &self.shared.counters.bytes_to_upstream,
            Direction::ToClient => &self.shared.counters.bytes_to_client,
        };
        add(counter, data.len());
        Flow::Continue
    }
}
