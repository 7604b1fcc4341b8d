//! The admin dashboard at `GET /admin`: this node's live push and pull rates, the spaces
//! with their versions and record counts, the clients with their owner, last seq and when
//! this node last saw them, and the recent rejections with their reasons. Server-rendered
//! HTML that loads nothing from elsewhere, read-only (nothing on it changes data).
//!
//! Off unless an admin token is configured ([`AdminConfig`], or `tidesync serve` with
//! `TIDESYNC_ADMIN_TOKEN`); then [`AppState::with_admin`](crate::AppState::with_admin)
//! turns it on. Off, every `/admin` route answers `404 not_found` saying how to turn it on.
//!
//! | route | what |
//! |---|---|
//! | `GET /admin` | the dashboard; without credentials `401` and the login form |
//! | `POST /admin/login` | form field `token`: opens a session (cookie) and redirects to `/admin` |
//! | `POST /admin/logout` | ends the session |
//! | `GET /admin/metrics.json` | the counters the page's live rates are computed from |
//!
//! Access (`session.rs`): `Authorization: Bearer <admin token>` (scripts), or the session
//! cookie a browser gets from the login form. Everything shown is escaped (`html.rs`).
//! What "last seen" and the recent rejections are: `activity.rs`; what is read from storage
//! and what it costs: [`crate::storage::overview`].

mod activity;
mod config;
mod dashboard;
mod html;
mod routes;
mod session;

use std::time::SystemTime;

pub use config::{AdminConfig, AdminConfigError, AdminToken, MAX_TOKEN_BYTES, MIN_TOKEN_CHARS};

pub(crate) use activity::{Activity, Request};
pub(crate) use routes::router;

/// Rows per table on the dashboard.
pub const ROWS: usize = 50;

/// The dashboard's state on one node (when it is on).
#[derive(Debug)]
pub(crate) struct Admin {
    token: AdminToken,
    sessions: session::Sessions,
    activity: Activity,
    started: SystemTime,
}

impl Admin {
    pub(crate) fn new(token: AdminToken) -> Admin {
        Admin {
            token,
            sessions: session::Sessions::default(),
            activity: Activity::default(),
            started: SystemTime::now(),
        }
    }

    /// What this node saw of its clients.
    pub(crate) fn activity(&self) -> &Activity {
        &self.activity
    }
}
