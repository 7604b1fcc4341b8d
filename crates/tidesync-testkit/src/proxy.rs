//! The proxy: its control surface, its listener thread and its shutdown.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rand::Rng;

use crate::conn::{self, ConnEntry};
use crate::faults::{CutMode, Faults, Refuse};
use crate::plan::FaultPlan;
use crate::stats::{bump, Counters, Fault, FaultEvent, ProxyStats};

/// How long the listener sleeps when there is nothing to accept. Control changes wake it
/// early; this only bounds the latency of a new connection.
const ACCEPT_POLL: Duration = Duration::from_millis(2);
/// How long the listener waits before retrying after an accept or bind error.
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// A fault-injecting TCP proxy on `127.0.0.1`, for tests.
///
/// Every accepted connection gets its own connection to the upstream and two forwarding
/// threads, one per direction. Faults are switched at runtime through `&self` methods, so a
/// test can hold the proxy while the client under test runs on its own threads.
///
/// # Requests, responses and cuts
///
/// The proxy knows nothing of HTTP; it tracks turns per connection. Bytes from the client
/// after the last response started (or the first bytes ever) begin a **request**. The first
/// bytes from the upstream after a request began begin a **response**. Bytes the upstream
/// sends without a preceding request (a server that speaks first, further chunks of a
/// streamed response) are plain forwarding.
///
/// When a response begins and a cut is due (see [`CutMode`], [`FaultPlan::cut`]), the
/// request has already been forwarded in full and the server has started answering, so it
/// has processed it (for a push: committed it). The proxy then forwards only the first
/// [`Faults::cut_after`] bytes (default 0) and closes both the client and the upstream
/// socket. The client sees EOF (or a reset) where it expected the answer. If the response
/// is shorter than `cut_after` it arrives whole and the connection is closed when the
/// server sends anything more, closes, or the client starts its next request, whichever
/// comes first; a cut connection never carries another exchange.
///
/// # Shutdown
///
/// Dropping the proxy stops the listener (new connects are refused), closes every
/// connection and joins every thread it started.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    listener: Option<JoinHandle<()>>,
}

/// State shared by the proxy handle, the listener and the connection threads.
#[derive(Debug)]
pub(crate) struct Shared {
    control: Mutex<Control>,
    /// Signalled on every control change and on stop, to wake the listener.
    changed: Condvar,
    stop: AtomicBool,
    pub(crate) counters: Counters,
    conns: Mutex<Vec<ConnEntry>>,
}

#[derive(Debug)]
struct Control {
    faults: Faults,
    upstream: SocketAddr,
    /// Index the next connection gets within the installed plan.
    plan_index: u64,
}

/// Locks a mutex, ignoring poisoning: no lock here guards an invariant a panic could break,
/// and the proxy must keep working (and shut down) after a panicking test thread.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FaultProxy {
    /// Starts a proxy listening on `127.0.0.1:0` that forwards to `upstream`, passing traffic
    /// through untouched until told otherwise.
    ///
    /// Fails with `InvalidInput` if `upstream` is not a loopback address.
    pub fn start(upstream: SocketAddr) -> io::Result<Self> {
        check_loopback(upstream)?;
        let listener = bind_nonblocking(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            control: Mutex::new(Control {
                faults: Faults::pass(),
                upstream,
                plan_index: 0,
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            counters: Counters::default(),
            conns: Mutex::new(Vec::new()),
        });
        let listener = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("testkit-proxy-{}", addr.port()))
                .spawn(move || listen(&shared, listener, addr))?
        };
        Ok(Self {
            addr,
            shared,
            listener: Some(listener),
        })
    }

    /// The address clients should connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where connections are forwarded.
    pub fn upstream(&self) -> SocketAddr {
        lock(&self.shared.control).upstream
    }

    /// Forwards new connections to `upstream` (for a server restarted on another port).
    /// Existing connections stay where they are.
    pub fn set_upstream(&self, upstream: SocketAddr) -> io::Result<()> {
        check_loopback(upstream)?;
        self.update(|c| c.upstream = upstream);
        Ok(())
    }

    /// The current manual faults (with [`CutMode::Next`] showing the cuts still to come).
    pub fn faults(&self) -> Faults {
        lock(&self.shared.control).faults.clone()
    }

    /// Replaces all manual faults. A plan in `faults` starts again at connection index 0.
    pub fn set(&self, faults: Faults) {
        self.update(|c| {
            if faults.plan.is_some() {
                c.plan_index = 0;
            }
            c.faults = faults;
        });
    }

    /// Accept-and-close new connections (`true`) or forward them again (`false`).
    pub fn refuse(&self, on: bool) {
        self.set_refuse(if on {
            Refuse::AcceptAndClose
        } else {
            Refuse::No
        });
    }

    /// Close the listening socket so connects fail with `ConnectionRefused` (`true`), or
    /// listen on the same port again (`false`). Live connections are not touched; add
    /// [`kill_all`](Self::kill_all) to simulate a server going down.
    ///
    /// Caveat: while offline the port is free, and in theory another socket could take it
    /// before the proxy binds it again; the listener keeps retrying until it succeeds.
    pub fn offline(&self, on: bool) {
        self.set_refuse(if on { Refuse::Unbind } else { Refuse::No });
    }

    /// Sets how new connections are treated.
    pub fn set_refuse(&self, refuse: Refuse) {
        self.update(|c| c.faults.refuse = refuse);
    }

    /// Closes every live connection now (both sides) and returns how many it closed.
    pub fn kill_all(&self) -> usize {
        let conns = lock(&self.shared.conns);
        let mut killed = 0;
        for entry in conns.iter() {
            if entry.state.close_for(Some((&self.shared, Fault::Killed))) {
                killed += 1;
            }
        }
        killed
    }

    /// Cuts the next `n` responses (replacing any other cut mode).
    pub fn cut_next_responses(&self, n: u32) {
        self.set_cut(CutMode::Next(n));
    }

    /// Cuts each response with probability `p`, unseeded (replacing any other cut mode).
    pub fn cut_responses_with_probability(&self, p: f64) {
        self.set_cut(CutMode::Probability(p));
    }

    /// Sets which responses to cut.
    pub fn set_cut(&self, cut: CutMode) {
        self.update(|c| c.faults.cut = cut);
    }

    /// Forwards the first `k` bytes of a cut response before closing (default 0).
    pub fn cut_after_bytes(&self, k: usize) {
        self.update(|c| c.faults.cut_after = k);
    }

    /// Adds `delay` plus a random `0..=jitter` before forwarding each chunk, both directions.
    pub fn set_delay(&self, delay: Duration, jitter: Duration) {
        self.update(|c| {
            c.faults.delay = delay;
            c.faults.jitter = jitter;
        });
    }

    /// Adds `delay` once per new connection, before the upstream is contacted.
    pub fn set_connect_delay(&self, delay: Duration) {
        self.update(|c| c.faults.connect_delay = delay);
    }

    /// Installs a seeded fault plan; the next accepted connection is its index 0.
    /// Connections already open keep the plan (or lack of one) they were accepted with.
    pub fn set_plan(&self, plan: FaultPlan) {
        self.update(|c| {
            c.faults.plan = Some(plan);
            c.plan_index = 0;
        });
    }

    /// Removes the fault plan for new connections.
    pub fn clear_plan(&self) {
        self.update(|c| c.faults.plan = None);
    }

    /// The seed of the installed plan, if any.
    pub fn plan_seed(&self) -> Option<u64> {
        lock(&self.shared.control)
            .faults
            .plan
            .as_ref()
            .map(FaultPlan::seed)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ProxyStats {
        self.shared.counters.snapshot()
    }

    /// Every fault injected so far, in the order they happened.
    pub fn events(&self) -> Vec<FaultEvent> {
        self.shared.counters.events()
    }

    fn update(&self, change: impl FnOnce(&mut Control)) {
        change(&mut lock(&self.shared.control));
        self.shared.changed.notify_all();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        if let Some(listener) = self.listener.take() {
            let _ = listener.join();
        }
        // The listener is gone, so no entry can be added any more.
        let conns = std::mem::take(&mut *lock(&self.shared.conns));
        for entry in &conns {
            entry.state.close();
        }
        for entry in conns {
            entry.join();
        }
    }
}

impl Shared {
    /// The manual latency for the next chunk: `delay` plus a random `0..=jitter`.
    pub(crate) fn chunk_delay(&self) -> Duration {
        let (delay, jitter) = {
            let c = lock(&self.control);
            (c.faults.delay, c.faults.jitter)
        };
        if jitter.is_zero() {
            return delay;
        }
        let jitter_ns = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX);
        delay + Duration::from_nanos(rand::rng().random_range(0..=jitter_ns))
    }

    /// Whether the manual cut mode cuts the response that is beginning (consuming one of
    /// [`CutMode::Next`]), and how many bytes of a cut response to forward.
    pub(crate) fn take_manual_cut(&self) -> (bool, usize) {
        let mut c = lock(&self.control);
        let cut = match &mut c.faults.cut {
            CutMode::Off | CutMode::Next(0) => false,
            CutMode::Next(n) => {
                *n -= 1;
                true
            }
            CutMode::Probability(p) => {
                let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
                rand::rng().random_bool(p)
            }
        };
        (cut, c.faults.cut_after)
    }

    /// Waits for a control change, a stop, or `timeout`.
    fn wait_for_change(&self, timeout: Duration) {
        let control = lock(&self.control);
        if self.stop.load(Ordering::SeqCst) {
            return;
        }
        let _ = self.changed.wait_timeout(control, timeout);
    }
}

fn check_loopback(addr: SocketAddr) -> io::Result<()> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("tidesync-testkit only proxies to loopback, not {addr}"),
        ))
    }
}

/// Binds a listener in non-blocking mode, so the listener thread can poll for stop.
fn bind_nonblocking(addr: SocketAddr) -> io::Result<TcpListener> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// The listener thread: accepts until stopped, unbinding while [`Refuse::Unbind`] is set.
fn listen(shared: &Arc<Shared>, listener: TcpListener, addr: SocketAddr) {
    let mut listener = Some(listener);
    while !shared.stop.load(Ordering::SeqCst) {
        if lock(&shared.control).faults.refuse == Refuse::Unbind {
            listener = None;
            shared.wait_for_change(Duration::from_millis(50));
            continue;
        }
        let bound = match &listener {
            Some(l) => l,
            // std sets SO_REUSEADDR on Unix, so TIME_WAIT connections do not block this.
            None => match bind_nonblocking(addr) {
                Ok(l) => listener.insert(l),
                Err(_) => {
                    shared.wait_for_change(RETRY_PAUSE);
                    continue;
                }
            },
        };
        match bound.accept() {
            Ok((stream, _peer)) => accept(shared, stream),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => shared.wait_for_change(ACCEPT_POLL),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // ECONNABORTED, EMFILE and friends: transient for a test proxy; back off a little.
            Err(_) => shared.wait_for_change(RETRY_PAUSE),
        }
    }
}

/// Handles one accepted connection: refuse it, or register it and start forwarding.
fn accept(shared: &Arc<Shared>, stream: TcpStream) {
    let id = shared.counters.accepted.fetch_add(1, Ordering::SeqCst);
    let (refuse, plan, connect_delay, upstream) = {
        let mut guard = lock(&shared.control);
        let c = &mut *guard;
        let plan = c.faults.plan.as_ref().map(|p| p.connection(c.plan_index));
        if plan.is_some() {
            c.plan_index += 1;
        }
        (
            c.faults.refuse != Refuse::No,
            plan,
            c.faults.connect_delay,
            c.upstream,
        )
    };
    if refuse || plan.as_ref().is_some_and(|p| p.refused()) {
        shared.counters.record(id, Fault::Refused);
        let _ = stream.shutdown(std::net::Shutdown::Both);
        return;
    }
    // Some platforms hand out accepted sockets in the listener's non-blocking mode.
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let mut conns = lock(&shared.conns);
    // Reap finished connections so a long test does not accumulate handles.
    let (done, live): (Vec<_>, Vec<_>) = conns.drain(..).partition(ConnEntry::is_finished);
    *conns = live;
    for entry in done {
        entry.join();
    }
    bump(&shared.counters.active);
    match conn::spawn(
        Arc::clone(shared),
        id,
        stream,
        plan,
        connect_delay,
        upstream,
    ) {
        Ok(entry) => conns.push(entry),
        Err(_) => {
            shared.counters.active.fetch_sub(1, Ordering::SeqCst);
            bump(&shared.counters.closed);
        }
    }
}
