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
use crate::status::ClientEvent;
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
    /// How often to look for commits of other connections to the file (`None`: never).
    pub elsewhere_poll: Option<Duration>,
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
        let mut elsewhere = self.elsewhere_poll.map(|every| {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        });
        loop {
            let timer = self.timer.map(|(_, at)| at);
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    Some(Command::Input(input)) => self.handle(input),
                    Some(Command::Barrier(done)) => {
                        // A wait that starts now counts what other connections wrote before
                        // it, not only what the next poll would have found.
                        if self.elsewhere_poll.is_some() {
                            self.look_elsewhere();
                        }
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
                () = tick(&mut elsewhere) => self.look_elsewhere(),
            }
        }
        tracing::debug!("sync thread stopped");
    }

    /// Another connection (a process, an extension) may have written the file: its outbox
    /// entries are pushed like the app's own, and every live query runs again.
    fn look_elsewhere(&mut self) {
        let changed = lock(&self.store).committed_elsewhere();
        match changed {
            Ok(false) => {}
            Ok(true) => {
                tracing::debug!("another connection committed to the database file");
                self.handle(Input::LocalWrite);
                self.notifier.send(ClientEvent::ChangedElsewhere);
            }
            // The next store call reports it through the driver; nothing to do here.
            Err(e) => tracing::debug!(error = %e, "cannot read the data version"),
        }
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

async fn tick(every: &mut Option<tokio::time::Interval>) {
    match every {
        Some(every) => {
            every.tick().await;
        }
        None => futures::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => futures::future::pending().await,
    }
}
