//! Prometheus metrics, served at `GET /metrics` in the OpenMetrics text format.
//!
//! Every name carries the `tidesync_` prefix; counters end in `_total`:
//! `tidesync_pushes_total`, `tidesync_mutations_applied_total`,
//! `tidesync_mutations_merged_total` (applied with conflicts),
//! `tidesync_mutations_rejected_total`, `tidesync_pulls_total`,
//! `tidesync_changes_pulled_total`, `tidesync_echoes_pulled_total` (records sent back to
//! their writer as echoes), `tidesync_auth_failures_total` (401 answers),
//! `tidesync_errors_total{code}` (every error response, by code), the gauge
//! `tidesync_open_event_streams`, and the histograms `tidesync_push_duration_seconds` and
//! `tidesync_pull_duration_seconds`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tidesync_protocol::{ErrorCode, PullResponse, PushOutcome, PushResponse, RawChange};

/// Label set of `errors_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: &'static str,
}

/// The server's metrics; cheap to clone (shared counters).
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    registry: Arc<Registry>,
    pushes: Counter,
    mutations_applied: Counter,
    mutations_merged: Counter,
    mutations_rejected: Counter,
    pulls: Counter,
    changes_pulled: Counter,
    echoes_pulled: Counter,
    auth_failures: Counter,
    errors: Family<CodeLabel, Counter>,
    open_event_streams: Gauge,
    push_duration: Histogram,
    pull_duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Fresh metrics, all zero.
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tidesync");
        let pushes = Counter::default();
        let mutations_applied = Counter::default();
        let mutations_merged = Counter::default();
        let mutations_rejected = Counter::default();
        let pulls = Counter::default();
        let changes_pulled = Counter::default();
        let echoes_pulled = Counter::default();
        let auth_failures = Counter::default();
        let errors = Family::<CodeLabel, Counter>::default();
        let open_event_streams = Gauge::default();
        // 1 ms .. ~16 s.
        let push_duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let pull_duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));

        registry.register("pushes", "Successful pushes", pushes.clone());
        registry.register(
            "mutations_applied",
            "Mutations applied without conflict",
            mutations_applied.clone(),
        );
        registry.register(
            "mutations_merged",
            "Mutations applied with field conflicts",
            mutations_merged.clone(),
        );
        registry.register(
            "mutations_rejected",
            "Mutations rejected by the merge rules",
            mutations_rejected.clone(),
        );
        registry.register("pulls", "Successful pulls", pulls.clone());
        registry.register(
            "changes_pulled",
            "Changes handed out by pulls",
            changes_pulled.clone(),
        );
        registry.register(
            "echoes_pulled",
            "Records handed back to their writer as echoes (key and version, no document)",
            echoes_pulled.clone(),
        );
        registry.register(
            "auth_failures",
            "Requests refused with 401 unauthorized",
            auth_failures.clone(),
        );
        registry.register("errors", "Error responses by code", errors.clone());
        registry.register(
            "open_event_streams",
            "Open GET /v1/events streams",
            open_event_streams.clone(),
        );
        registry.register(
            "push_duration_seconds",
            "Time to handle a successful push",
            push_duration.clone(),
        );
        registry.register(
            "pull_duration_seconds",
            "Time to handle a successful pull",
            pull_duration.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            pushes,
            mutations_applied,
            mutations_merged,
            mutations_rejected,
            pulls,
            changes_pulled,
            echoes_pulled,
            auth_failures,
            errors,
            open_event_streams,
            push_duration,
            pull_duration,
        }
    }

    /// Records a successful push.
    pub(crate) fn push_done(&self, response: &PushResponse, elapsed: Duration) {
        self.pushes.inc();
        for result in &response.results {
            match result.outcome {
                PushOutcome::Applied { .. } => self.mutations_applied.inc(),
                PushOutcome::Merged { .. } => self.mutations_merged.inc(),
                PushOutcome::Rejected { .. } => self.mutations_rejected.inc(),
            };
        }
        self.push_duration.observe(elapsed.as_secs_f64());
    }

    /// Records a successful pull.
    pub(crate) fn pull_done(&self, response: &PullResponse<RawChange>, elapsed: Duration) {
        self.pulls.inc();
        self.changes_pulled.inc_by(response.changes.len() as u64);
        self.echoes_pulled.inc_by(response.echoes.len() as u64);
        self.pull_duration.observe(elapsed.as_secs_f64());
    }

    /// Records an error response.
    pub(crate) fn error(&self, code: ErrorCode) {
        if crate::error::status_of(code) == axum::http::StatusCode::UNAUTHORIZED {
            self.auth_failures.inc();
        }
        self.errors
            .get_or_create(&CodeLabel {
                code: code.as_str(),
            })
            .inc();
    }

    /// Counts an event stream as open until the guard is dropped.
    pub(crate) fn stream_opened(&self) -> StreamGauge {
        self.open_event_streams.inc();
        StreamGauge(self.open_event_streams.clone())
    }

    /// The current value of every counter (and the open-streams gauge), for the admin
    /// dashboard's live rates.
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            pushes: self.pushes.get(),
            mutations_applied: self.mutations_applied.get(),
            mutations_merged: self.mutations_merged.get(),
            mutations_rejected: self.mutations_rejected.get(),
            pulls: self.pulls.get(),
            changes_pulled: self.changes_pulled.get(),
            auth_failures: self.auth_failures.get(),
            open_event_streams: self.open_event_streams.get().max(0) as u64,
        }
    }

    /// The metrics in the OpenMetrics text format.
    pub(crate) fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The counters of [`Metrics`] at one moment (totals since this node started).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub(crate) struct Snapshot {
    pub pushes: u64,
    pub mutations_applied: u64,
    pub mutations_merged: u64,
    pub mutations_rejected: u64,
    pub pulls: u64,
    pub changes_pulled: u64,
    pub auth_failures: u64,
    pub open_event_streams: u64,
}

/// Decrements `open_event_streams` when dropped.
#[derive(Debug)]
pub(crate) struct StreamGauge(Gauge);

impl Drop for StreamGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}
