//! Validation errors and the stable error codes of the wire protocol.

use serde::{Deserialize, Serialize};

/// Why a name, id or stamp was refused. The message names the rule that was broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {rule}")]
pub struct ValidationError {
    /// What was being validated ("record id", "space name", ...).
    pub what: &'static str,
    /// The offending input, cut to 80 characters.
    pub value: String,
    /// The rule it broke, in words.
    pub rule: &'static str,
}

impl ValidationError {
    pub(crate) fn new(what: &'static str, value: &str, rule: &'static str) -> Self {
        let value: String = value.chars().take(80).collect();
        Self { what, value, rule }
    }
}

/// A stable, machine-readable error code. Its string form (snake case) is part of the
/// protocol and never changes meaning; new codes may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The body is not valid JSON or does not have the documented shape (400).
    MalformedRequest,
    /// A name, id or value breaks a documented rule (400).
    InvalidInput,
    /// The `protocol` field names a version this server does not speak (400).
    UnsupportedProtocol,
    /// The request body's `Content-Encoding` is not one the server accepts: send it
    /// uncompressed or in a coding its `Accept-Encoding` names (415).
    UnsupportedEncoding,
    /// No credentials, or credentials the server does not accept (401).
    Unauthorized,
    /// The caller may not read or write this space (403).
    Forbidden,
    /// A push skipped sequence numbers: `seq > last_seq + 1` (409).
    SeqGap,
    /// The pull cursor is older than the server's retained history, or from the future:
    /// drop local base state and bootstrap again (409).
    CursorReset,
    /// The body, a document or a batch is larger than the server allows (413).
    TooLarge,
    /// Slow down and retry after the `Retry-After` delay (429).
    RateLimited,
    /// The server is shutting down or overloaded; retry after `Retry-After` (503).
    Unavailable,
    /// The server failed; the request may be retried (500).
    Internal,
    /// No such endpoint (404).
    NotFound,
    /// The endpoint exists but not with this HTTP method (405).
    MethodNotAllowed,
    /// Per-mutation rejection: the collection's `strict` policy refused a mutation made on
    /// an outdated base version.
    StaleBase,
    /// Per-mutation rejection: the mutation is not allowed by the server's rules.
    RuleViolation,
    /// Per-mutation rejection: another mutation of the same local transaction was
    /// rejected, so this one was not applied either.
    TransactionAborted,
    /// Per-mutation rejection: the mutation's `base_version` is above its space's current
    /// version, so it was made on a server state this server does not have (another
    /// server, or this one before it was restored from an older backup); pull from
    /// scratch, then decide.
    BaseAhead,
    /// An RxDB or WatermelonDB push (docs/compat.md) touched records changed on the server
    /// since the client last pulled; nothing was written: pull, then push again (409).
    Conflict,
}

impl ErrorCode {
    /// The code's wire spelling, e.g. `"seq_gap"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedRequest => "malformed_request",
            Self::InvalidInput => "invalid_input",
            Self::UnsupportedProtocol => "unsupported_protocol",
            Self::UnsupportedEncoding => "unsupported_encoding",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::SeqGap => "seq_gap",
            Self::CursorReset => "cursor_reset",
            Self::TooLarge => "too_large",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::StaleBase => "stale_base",
            Self::RuleViolation => "rule_violation",
            Self::TransactionAborted => "transaction_aborted",
            Self::BaseAhead => "base_ahead",
            Self::Conflict => "conflict",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every error response: `{"code": "...", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code to branch on.
    pub code: ErrorCode,
    /// Human-readable explanation; not stable, do not parse.
    pub message: String,
    /// With `seq_gap`: the last seq the server has processed for this client. A client whose
    /// own record says the server had processed more knows the server forgot part of its
    /// history (restored from an older backup) and recovers (docs/protocol.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_documented_spelling() {
        for code in [
            ErrorCode::MalformedRequest,
            ErrorCode::InvalidInput,
            ErrorCode::UnsupportedProtocol,
            ErrorCode::UnsupportedEncoding,
            ErrorCode::Unauthorized,
            ErrorCode::Forbidden,
            ErrorCode::SeqGap,
            ErrorCode::CursorReset,
            ErrorCode::TooLarge,
            ErrorCode::RateLimited,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
            ErrorCode::NotFound,
            ErrorCode::MethodNotAllowed,
            ErrorCode::StaleBase,
            ErrorCode::RuleViolation,
            ErrorCode::TransactionAborted,
            ErrorCode::BaseAhead,
            ErrorCode::Conflict,
        ] {
            let json = serde_json::to_string(&code).expect("serialize");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
