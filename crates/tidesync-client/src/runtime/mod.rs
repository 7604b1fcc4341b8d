//! The sync thread: a private tokio runtime (this loop on the sync thread, one worker for
//! prefetched pull pages) that runs the [`Driver`] over HTTP with the system clock.
//!
//! One loop, one `select!`, biased: commands from the app first (so `close` is prompt), then
//! the network ([`HttpIo::next`]: the exchange in flight, the event stream), then the timer.
//! Every branch is cancel-safe: the network's futures and streams are owned and polled by
//! reference, and the timer is a plain sleep recreated from its deadline. The store lock is
//! held only while the driver handles one input, never across a network exchange.

mod net;

use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tidesync_store::Store;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::driver::{Driver, Input, Output};
use crate::notify::Notifier;
pub(crate) use net::HttpIo;

/// What the app sends the sync thread.
#[derive(Debug)]
pub(crate) enum Command {
    Input(Input),
    /// Answered once every command sent before it has been handled and its status
    /// published.
    Barrier(SyncSender<()>),
    Shutdown,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Locks `mutex`, poisoned or not. A panic while holding one of the client's locks cannot
/// leave what it guards torn: the store's SQLite transactions roll back on drop and its
/// counts are only replaced after a commit; the notifier's and the live queries' state is
/// replaced whole.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) struct Runtime {
    pub store: Arc<Mutex<Store>>,
    pub notifier: Arc<Notifier>,
    pub driver: Driver,
    /// `None`: the client was opened without a server (local only): nothing ever starts.
    pub net: Option<HttpIo>,
    pub commands: UnboundedReceiver<Command>,
    pub start_online: bool,
    pub timer: Option<(u64, Instant)>,
}

impl Runtime {
    pub(crate) async fn run(mut self) {
        let output = self.driver.refresh_status(&mut lock(&self.store));
        self.carry_out(output);
        if !self.start_online {
            self.handle(Input::Pause); // a driver paused before its start starts paused
        }
        if self.net.is_some() {
            self.handle(Input::Start);
        }
        loop {
            let timer = self.timer.map(|(_, at)| at);
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    Some(Command::Input(input)) => self.handle(input),
                    Some(Command::Barrier(done)) => {
                        let _ = done.send(());
                    }
                    Some(Command::Shutdown) | None => break,
                },
                input = next_completion(&mut self.net) => self.handle(input),
                () = sleep_until(timer), if timer.is_some() => {
                    if let Some((id, _)) = self.timer.take() {
                        self.handle(Input::TimerFired(id));
                    }
                }
            }
        }
        tracing::debug!("sync thread stopped");
    }

    /// Hands one input to the driver, then carries out what it says.
    fn handle(&mut self, input: Input) {
        if let (
            Input::Pulled {
                result: Ok(page), ..
            },
            Some(net),
        ) = (&input, &mut self.net)
        {
            // The server prepares the next page while this thread stores this one.
            net.prefetch_after(page);
        }
        let output = self.driver.handle(now_ms(), input, &mut lock(&self.store));
        self.carry_out(output);
    }

    fn carry_out(&mut self, output: Output) {
        if let Some(net) = &mut self.net {
            for io in output.io {
                io.start(net);
            }
        }
        if let Some(timer) = output.timer {
            let delay = Duration::from_millis(timer.at_ms.saturating_sub(now_ms()));
            self.timer = Some((timer.id, Instant::now() + delay));
        }
        for event in output.events {
            self.notifier.send(event);
        }
    }
}

async fn next_completion(net: &mut Option<HttpIo>) -> Input {
    match net {
        Some(net) => net.next().await,
        None => futures::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => futures::future::pending().await,
    }
}
