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
    /// JWT refusal (401): the token's `exp` is past, beyond the server's leeway; get a
    /// fresh token from the app's sign-in.
    TokenExpired,
    /// JWT refusal (401): the token's `nbf` is in the future, beyond the server's leeway
    /// (check the clocks of the issuer and the server).
    TokenNotYetValid,
    /// JWT refusal (401): the token's `aud` does not name the audience the server expects.
    InvalidAudience,
    /// JWT refusal (401): the token's `iss` is not the issuer the server expects.
    InvalidIssuer,
    /// JWT refusal (401): the signature does not verify with the server's key (tampered
    /// token, or signed by another key).
    InvalidSignature,
    /// JWT refusal (401): the token's `alg` is not the one algorithm the server accepts
    /// (`none` never is).
    AlgorithmNotAllowed,
    /// JWT refusal (401): the token's `kid` names no key the server knows, even after
    /// fetching its key set again (or it names none and the set holds several).
    UnknownKeyId,
    /// JWT refusal (401): the bearer is not a JWT (three base64url parts with a JSON
    /// header and payload) or is not a JWT this server can read.
    MalformedToken,
    /// JWT refusal (401): a claim the server needs (`exp`, the user claim, a claim a space
    /// template names, and `iss`/`aud` when checked) is absent.
    MissingClaim,
    /// JWT refusal (401): a claim has the wrong type, or makes an invalid user or space
    /// name.
    InvalidClaim,
    /// Per-mutation rejection: the record the mutation's transaction would leave behind does
    /// not match its collection's JSON Schema on the server; the message names the failing
    /// paths and rules (e.g. `/title: "" is shorter than 1 character`).
    SchemaViolation,
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
            Self::TokenExpired => "token_expired",
            Self::TokenNotYetValid => "token_not_yet_valid",
            Self::InvalidAudience => "invalid_audience",
            Self::InvalidIssuer => "invalid_issuer",
            Self::InvalidSignature => "invalid_signature",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::UnknownKeyId => "unknown_key_id",
            Self::MalformedToken => "malformed_token",
            Self::MissingClaim => "missing_claim",
            Self::InvalidClaim => "invalid_claim",
            Self::SchemaViolation => "schema_violation",
            Self::Conflict => "conflict",
        }
    }
}

impl ErrorCode {
    /// The code as a client speaking `protocol` knows it: a code newer than that protocol is
    /// sent as the older code that means the same to such a client (`schema_violation`,
    /// protocol 3, is `rule_violation` before), so a server never sends an old client a code
    /// it cannot parse.
    pub fn for_protocol(self, protocol: u32) -> ErrorCode {
        match self {
            Self::SchemaViolation if protocol < 3 => Self::RuleViolation,
            code => code,
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
    fn a_code_newer_than_a_protocol_is_sent_as_one_it_knows() {
        assert_eq!(
            ErrorCode::SchemaViolation.for_protocol(2),
            ErrorCode::RuleViolation
        );
        assert_eq!(
            ErrorCode::SchemaViolation.for_protocol(3),
            ErrorCode::SchemaViolation
        );
        assert_eq!(ErrorCode::StaleBase.for_protocol(1), ErrorCode::StaleBase);
    }

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
            ErrorCode::TokenExpired,
            ErrorCode::TokenNotYetValid,
            ErrorCode::InvalidAudience,
            ErrorCode::InvalidIssuer,
            ErrorCode::InvalidSignature,
            ErrorCode::AlgorithmNotAllowed,
            ErrorCode::UnknownKeyId,
            ErrorCode::MalformedToken,
            ErrorCode::MissingClaim,
            ErrorCode::InvalidClaim,
            ErrorCode::SchemaViolation,
            ErrorCode::Conflict,
        ] {
            let json = serde_json::to_string(&code).expect("serialize");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
