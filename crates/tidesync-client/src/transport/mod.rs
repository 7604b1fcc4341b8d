//! How the driver's network work is carried out: the [`Transport`] trait, and the pieces
//! every implementation shares (the one mapping from an HTTP answer to a [`Failure`], and the
//! check of a pulled page).
//!
//! Two implementations exist: HTTP for apps (the client's sync thread, over reqwest) and the
//! simulated network of `tidesync-sim`. A transport never decides anything about sync: it
//! starts what [`Io`](crate::driver::Io) asks and reports each completion back to the driver
//! as the matching [`Input`](crate::driver::Input), with the same id.

pub(crate) mod compression;
pub(crate) mod http;
pub(crate) mod sse;
pub(crate) mod token;

use tidesync_core::sync::Failure;
use tidesync_protocol::{
    CheckedChange, ErrorBody, ErrorCode, PullRequest, PullResponse, PushRequest, RawChange,
};

use crate::driver::{ExchangeId, StreamId};

/// The network side of a [`Driver`](crate::driver::Driver). Every method starts work and
/// returns at once; the outcome arrives later as an [`Input`](crate::driver::Input) carrying
/// the id it was started with. Starting an exchange abandons the one before (its completion,
/// if it still comes, is ignored by the driver).
pub trait Transport {
    /// `GET /healthz`; report [`Input::Probed`](crate::driver::Input::Probed).
    fn health(&mut self, exchange: ExchangeId);
    /// `POST /v1/push`; report [`Input::Pushed`](crate::driver::Input::Pushed).
    fn push(&mut self, exchange: ExchangeId, request: PushRequest);
    /// `POST /v1/pull`; report [`Input::Pulled`](crate::driver::Input::Pulled), the page
    /// checked with [`check_page`].
    fn pull(&mut self, exchange: ExchangeId, request: PullRequest);
    /// Ask the app for a fresh token (the server refused the current one); report
    /// [`Input::TokenRefreshed`](crate::driver::Input::TokenRefreshed).
    fn refresh_token(&mut self, exchange: ExchangeId);
    /// Connect the event stream for the synced spaces, replacing any earlier connection;
    /// report [`Input::StreamOpened`](crate::driver::Input::StreamOpened), pokes, and
    /// [`Input::StreamClosed`](crate::driver::Input::StreamClosed).
    fn open_events(&mut self, stream: StreamId);
    /// Disconnect the event stream; nothing more is reported for it.
    fn close_events(&mut self);
}

/// The one mapping from a failed HTTP answer to the machine's [`Failure`]: `status`, the
/// `Retry-After` header in seconds, and the body (`{"code", "message"}` when the server
/// wrote it).
///
/// 401 → `Unauthorized` (refresh the token once); 429, and 503 with `Retry-After` →
/// `RateLimited` (retry the same request after the delay); 409 `cursor_reset` →
/// `CursorReset` (bootstrap again); other 5xx → `Server` (retry with backoff); any other
/// 4xx → `Refused` (retrying would fail the same way: surface it).
pub fn classify_answer(status: u16, retry_after_secs: Option<u64>, body: &[u8]) -> Failure {
    let retry_after_ms = retry_after_secs.map(|secs| secs.saturating_mul(1000));
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let code = parsed.as_ref().map(|b| b.code);
    let last_seq = parsed.as_ref().and_then(|b| b.last_seq);
    let message = match parsed {
        Some(body) => body.message,
        None => String::from_utf8_lossy(body).chars().take(200).collect(),
    };
    match status {
        401 => Failure::Unauthorized,
        429 => Failure::RateLimited { retry_after_ms },
        503 if retry_after_ms.is_some() => Failure::RateLimited { retry_after_ms },
        409 if code == Some(ErrorCode::CursorReset) => Failure::CursorReset,
        409 if code == Some(ErrorCode::SeqGap) && last_seq.is_some() => Failure::ServerForgot {
            last_seq: last_seq.unwrap_or_default(),
        },
        500..=599 => Failure::Server { status, message },
        _ => Failure::Refused {
            status,
            code: code.map(|c| c.as_str().to_owned()).unwrap_or_default(),
            message,
        },
    }
}

/// Checks a pulled page as it came off the wire (documents and stamps still JSON text): a
/// page holding an impossible change is a server failure, retried with backoff, and never
/// reaches the store. Done on the transport's side, so the driver's thread only stores.
pub fn check_page(page: PullResponse<RawChange>) -> Result<PullResponse<CheckedChange>, Failure> {
    page.into_checked().map_err(|e| Failure::Server {
        status: 200,
        message: format!("unusable response body: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: &str, message: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"code": code, "message": message}))
            .expect("serializes")
    }

    #[test]
    fn every_class_of_answer_maps_to_its_failure() {
        assert_eq!(classify_answer(401, None, b""), Failure::Unauthorized);
        assert_eq!(
            classify_answer(429, Some(3), &body("rate_limited", "slow down")),
            Failure::RateLimited {
                retry_after_ms: Some(3000)
            }
        );
        assert_eq!(
            classify_answer(503, Some(2), &body("unavailable", "busy")),
            Failure::RateLimited {
                retry_after_ms: Some(2000)
            }
        );
        assert_eq!(
            classify_answer(503, None, b"down"),
            Failure::Server {
                status: 503,
                message: "down".into()
            }
        );
        assert_eq!(
            classify_answer(409, None, &body("cursor_reset", "again")),
            Failure::CursorReset
        );
        assert_eq!(
            classify_answer(
                409,
                None,
                br#"{"code": "seq_gap", "message": "gap", "last_seq": 4}"#
            ),
            Failure::ServerForgot { last_seq: 4 }
        );
        assert_eq!(
            classify_answer(409, None, &body("seq_gap", "gap")),
            Failure::Refused {
                status: 409,
                code: "seq_gap".into(),
                message: "gap".into()
            }
        );
        assert_eq!(
            classify_answer(400, None, b"<html>"),
            Failure::Refused {
                status: 400,
                code: String::new(),
                message: "<html>".into()
            }
        );
    }
}
