//! Events in, instructions out, and the engine's status.

/// What the app says about the network (e.g. from Flutter's connectivity_plus).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reachability {
    /// The device has a network.
    Online,
    /// The device has no network: don't even try.
    Offline,
}

/// What the engine believes about reaching the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Connectivity {
    /// Not tried yet.
    #[default]
    Unknown,
    /// The last exchange with the server succeeded, or failed with an answer from it.
    Online,
    /// The server could not be reached (or the app said the device is offline).
    Offline,
}

/// Why an exchange with the server failed, as classified by the runtime's transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No answer: connection refused or reset, DNS, TLS. The server is unreachable.
    Network(String),
    /// No answer in time.
    Timeout,
    /// The server answered 5xx (other than 503 with Retry-After).
    Server {
        /// HTTP status.
        status: u16,
        /// What it said.
        message: String,
    },
    /// 429, or 503 with `Retry-After`: retry the same request later.
    RateLimited {
        /// The server's `Retry-After`, if any, in milliseconds.
        retry_after_ms: Option<u64>,
    },
    /// 401: the token is missing, expired or revoked.
    Unauthorized,
    /// 409 `cursor_reset`: the pull cursor cannot be served; bootstrap again.
    CursorReset,
    /// 409 `seq_gap` with the server's `last_seq`: the server has processed fewer of this
    /// client's mutations than it once acknowledged. It forgot part of its history (it was
    /// restored from an older backup): recover (re-send what is still held, bootstrap).
    ServerForgot {
        /// The last seq the server has processed for this client.
        last_seq: u64,
    },
    /// Any other 4xx: retrying the same request would fail the same way.
    Refused {
        /// HTTP status.
        status: u16,
        /// The stable error code from the body.
        code: String,
        /// The message from the body.
        message: String,
    },
    /// The exchange could not be prepared or its answer could not be recorded, because the
    /// local database failed (disk full, file not writable, locked by another process).
    /// Nothing about the server is known from it.
    LocalStore {
        /// The store error's stable code (`disk_full`, `busy`, ...).
        code: String,
        /// The store error's message.
        message: String,
        /// Whether the same work may succeed later without anyone acting (then it is
        /// retried with backoff like a network failure; otherwise it waits like a refusal).
        retryable: bool,
    },
}

/// A failure's class, for status displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Unreachable or timed out.
    Network,
    /// The server failed or is overloaded.
    Server,
    /// Authentication failed even with a fresh token.
    Auth,
    /// The server refused the request (a client-side problem); needs attention.
    Refused,
    /// The local database failed (see the error's code: `disk_full`, `read_only`, `busy`,
    /// ...); retried with backoff when the failure can clear by itself.
    LocalStore,
}

impl FailureKind {
    /// The kind's stable name: `network`, `server`, `auth`, `refused`, `local_store`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Network => "network",
            FailureKind::Server => "server",
            FailureKind::Auth => "auth",
            FailureKind::Refused => "refused",
            FailureKind::LocalStore => "local_store",
        }
    }
}

/// The last sync error, as shown to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncError {
    /// Its class.
    pub kind: FailureKind,
    /// The stable code of the failure where there is one: the server's error code for a
    /// refusal or a server error that said one, the store error's code for a local store
    /// failure (`disk_full`, `read_only`, `disk_io`, `busy`, ...).
    pub code: Option<String>,
    /// What happened, in words.
    pub message: String,
    /// `true` when retrying alone will not help and the engine waits (the backoff cap, a
    /// network hint or `sync_now`) for the app or the user to act: a refusal, credentials,
    /// a corrupt local file. `false` for failures that clear by themselves (the network, a
    /// server error, a full disk, a held lock), retried with backoff.
    pub needs_attention: bool,
    /// When it happened (ms since the epoch).
    pub at_ms: u64,
}

/// Result of a push the runtime performed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushProgress {
    /// Unpushed mutations remain after this batch: push again.
    pub more: bool,
}

/// Result of a pull page the runtime applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullProgress {
    /// The server has more changes: pull again.
    pub has_more: bool,
}

/// Everything the machine reacts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The runtime started (after opening the store).
    Start,
    /// The app wrote locally: the outbox grew.
    LocalWrite,
    /// The app's network hint.
    NetworkHint(Reachability),
    /// The app asked for a sync now (also clears a stalled error).
    SyncNow,
    /// Stop all network activity until [`Event::Resume`].
    Pause,
    /// Resume after [`Event::Pause`].
    Resume,
    /// The event stream announced a change on the server.
    Poke,
    /// The health probe finished.
    ProbeDone(Result<(), Failure>),
    /// A push finished (its results are already in the store).
    PushDone(Result<PushProgress, Failure>),
    /// A pull page finished (its changes are already in the store).
    PullDone(Result<PullProgress, Failure>),
    /// The token provider answered: `true` if it produced a new token.
    TokenRefreshed(bool),
    /// The event stream is connected.
    StreamOpened,
    /// The event stream ended.
    StreamClosed,
    /// Timer `id` fired.
    TimerFired(u64),
}

/// What the runtime must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// Check that the server answers (cheap: `GET /healthz`), then report [`Event::ProbeDone`].
    Probe,
    /// Push the next batch of whole transactions after the highest acknowledged seq, then
    /// report [`Event::PushDone`].
    Push,
    /// Pull one page, apply it, then report [`Event::PullDone`].
    Pull,
    /// Drop the local base and cursor (keep pending mutations), then pull from scratch.
    ResetCursor,
    /// The server forgot this client's mutations after `last_seq`: queue every mutation
    /// after it that is still held to be pushed again (a recovery push, which may skip the
    /// seqs no longer held), and report what the server lost that is no longer held.
    ForgetServerHistory {
        /// The last seq the server has processed for this client.
        last_seq: u64,
    },
    /// Ask the app's token provider for a fresh token, then report [`Event::TokenRefreshed`].
    RefreshToken,
    /// Connect the event stream; report [`Event::StreamOpened`] / [`Event::StreamClosed`].
    OpenStream,
    /// Disconnect the event stream.
    CloseStream,
    /// Fire [`Event::TimerFired`]`(id)` at `at_ms`; replaces any earlier timer.
    SetTimer {
        /// Timer id (stale ids are ignored when they fire).
        id: u64,
        /// When, in ms since the epoch.
        at_ms: u64,
    },
    /// The engine's status changed.
    Status(EngineStatus),
}

/// What the engine is doing, for the UI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not started.
    Stopped,
    /// Paused by the app.
    Paused,
    /// The device is offline (app hint): waiting for the network.
    Offline,
    /// Checking that the server answers.
    Connecting,
    /// Sending local changes.
    Uploading,
    /// Receiving changes.
    Downloading,
    /// Getting a fresh token.
    Authenticating,
    /// Waiting before the next attempt.
    Backoff,
    /// Up to date; listening for changes.
    Idle,
}

/// The machine's part of the sync status (the runtime adds counts and progress).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineStatus {
    /// Reachability of the server.
    pub connectivity: Connectivity,
    /// What it is doing.
    pub phase: Phase,
    /// The last error, until the next success.
    pub last_error: Option<SyncError>,
    /// When the next attempt happens, while backing off.
    pub next_retry_at_ms: Option<u64>,
}
