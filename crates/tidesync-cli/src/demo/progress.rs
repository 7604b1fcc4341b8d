//! Live output while the demo works: on a terminal, one progress bar per client (its
//! mutations, done of total, and its sync phase) under a spinner with the current step; with
//! `--plain` or when stderr is not a terminal, plain timestamped lines on stdout, so CI logs
//! stay readable.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// One client's line: `done` of `total` and a short state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientLine {
    /// Units done (ops written, or mutations pushed).
    pub done: u64,
    /// Units in all.
    pub total: u64,
    /// What it is doing, e.g. `offline` or `uploading, 120 pending`.
    pub state: String,
}

/// The demo's live display.
#[derive(Debug)]
pub struct Progress {
    started: Instant,
    names: Vec<String>,
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    Bars {
        multi: MultiProgress,
        step: ProgressBar,
        clients: Vec<ProgressBar>,
    },
    Plain {
        last: Vec<ClientLine>,
        shown: Vec<ClientLine>,
        printed_at: Instant,
    },
}

/// How often plain mode repeats client lines that changed.
const PLAIN_EVERY: Duration = Duration::from_secs(2);

impl Progress {
    /// Bars on a terminal unless `plain`; plain lines otherwise.
    pub fn new(names: &[String], plain: bool) -> Progress {
        let started = Instant::now();
        let names = names.to_vec();
        if plain || !std::io::stderr().is_terminal() {
            let mode = Mode::Plain {
                last: vec![ClientLine::default(); names.len()],
                shown: vec![ClientLine::default(); names.len()],
                printed_at: started,
            };
            return Progress {
                started,
                names,
                mode,
            };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let step = multi.add(ProgressBar::new_spinner());
        step.set_style(
            ProgressStyle::with_template("{spinner:.cyan} [{elapsed_precise}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        step.enable_steady_tick(Duration::from_millis(100));
        let style = ProgressStyle::with_template(
            "  {prefix:>4} [{bar:32.green/blue}] {pos:>6}/{len:<6} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let clients = names
            .iter()
            .map(|name| {
                let bar = multi.add(ProgressBar::new(0));
                bar.set_style(style.clone());
                bar.set_prefix(name.clone());
                bar
            })
            .collect();
        Progress {
            started,
            names,
            mode: Mode::Bars {
                multi,
                step,
                clients,
            },
        }
    }

    /// A new step of the story.
    pub fn step(&mut self, what: &str) {
        match &mut self.mode {
            Mode::Bars { step, .. } => step.set_message(what.to_owned()),
            Mode::Plain { .. } => println!("[{}] == {what}", self.elapsed()),
        }
    }

    /// A line worth keeping (printed above the bars).
    pub fn note(&mut self, line: &str) {
        match &mut self.mode {
            Mode::Bars { multi, .. } => {
                let _ = multi.println(format!("  {line}"));
            }
            Mode::Plain { .. } => println!("[{}]    {line}", self.elapsed()),
        }
    }

    /// Updates client `i`'s line.
    pub fn client(&mut self, i: usize, line: ClientLine) {
        match &mut self.mode {
            Mode::Bars { clients, .. } => {
                if let Some(bar) = clients.get(i) {
                    bar.set_length(line.total);
                    bar.set_position(line.done.min(line.total));
                    bar.set_message(line.state);
                }
            }
            Mode::Plain { last, .. } => {
                if let Some(slot) = last.get_mut(i) {
                    *slot = line;
                }
            }
        }
    }

    /// In plain mode, prints the client lines that changed, at most every two seconds (or
    /// now, with `force`).
    pub fn flush(&mut self, force: bool) {
        let elapsed = self.elapsed();
        if let Mode::Plain {
            last,
            shown,
            printed_at,
        } = &mut self.mode
        {
            if !force && printed_at.elapsed() < PLAIN_EVERY {
                return;
            }
            *printed_at = Instant::now();
            for ((name, line), seen) in self.names.iter().zip(last.iter()).zip(shown.iter_mut()) {
                if line == seen {
                    continue;
                }
                *seen = line.clone();
                println!(
                    "[{elapsed}]    {name:>4} {:>6}/{:<6} {}",
                    line.done, line.total, line.state
                );
            }
        }
    }

    /// Removes the bars (before the summary).
    pub fn finish(&mut self) {
        if let Mode::Bars {
            multi,
            step,
            clients,
        } = &mut self.mode
        {
            step.finish_and_clear();
            for bar in clients.iter() {
                bar.finish_and_clear();
            }
            let _ = multi.clear();
        }
    }

    fn elapsed(&self) -> String {
        elapsed(self.started)
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

fn elapsed(started: Instant) -> String {
    format!("{:>6.2}s", started.elapsed().as_secs_f64())
}
