//! The HTTP error type: every failure a handler, an extractor or the router can produce
//! becomes an [`ApiError`], answered as JSON `{"code": "...", "message": "..."}`.
//!
//! This is the **one place** where error codes are mapped to HTTP statuses
//! ([`status_of`]) and where storage failures are turned into wire errors
//! ([`From<StorageError>`](ApiError#impl-From<StorageError>-for-ApiError)). Internal details
//! (database messages, paths) are logged with `tracing`, never sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tidesync_protocol::{ErrorBody, ErrorCode};

use crate::storage::StorageError;

/// Seconds a client is told to wait (`Retry-After`) after a `503 unavailable`.
pub const RETRY_AFTER_SECS: u64 = 2;

/// An error answered to the client as JSON `{code, message}` with the status of its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    retry_after: Option<u64>,
    /// `seq_gap`'s `last_seq`.
    last_seq: Option<u64>,
    /// The `Accept-Encoding` a `415` is answered with (the codings the server accepts).
    accept_encoding: Option<&'static str>,
}

/// The HTTP status of each error code. Per-mutation rejection codes (`stale_base`,
/// `rule_violation`, `transaction_aborted`) never make a whole request fail; should one
/// reach here it is a 400.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::MalformedRequest | ErrorCode::InvalidInput | ErrorCode::UnsupportedProtocol => {
            StatusCode::BAD_REQUEST
        }
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        code if is_token_refusal(code) => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::SeqGap | ErrorCode::CursorReset | ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::UnsupportedEncoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// Whether `code` is one of the JWT refusals (`token_expired`, `invalid_signature`, …,
/// docs/protocol.md): each is a `401` answered with `WWW-Authenticate: Bearer
/// error="invalid_token"` (RFC 6750).
pub(crate) fn is_token_refusal(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::TokenExpired
            | ErrorCode::TokenNotYetValid
            | ErrorCode::InvalidAudience
            | ErrorCode::InvalidIssuer
            | ErrorCode::InvalidSignature
            | ErrorCode::AlgorithmNotAllowed
            | ErrorCode::UnknownKeyId
            | ErrorCode::MalformedToken
            | ErrorCode::MissingClaim
            | ErrorCode::InvalidClaim
    )
}

impl ApiError {
    /// An error with `code`'s status and a human-readable message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        let retry_after = matches!(code, ErrorCode::Unavailable | ErrorCode::RateLimited)
            .then_some(RETRY_AFTER_SECS);
        ApiError {
            status: status_of(code),
            code,
            message: message.into(),
            retry_after,
            last_seq: None,
            accept_encoding: None,
        }
    }

    /// `415 unsupported_encoding`: the request body's `Content-Encoding` is not one the
    /// server accepts. Answered with `Accept-Encoding: accepted` (RFC 7694), the codings it
    /// does accept (`identity` when none).
    pub fn unsupported_encoding(message: impl Into<String>, accepted: &'static str) -> ApiError {
        ApiError {
            accept_encoding: Some(accepted),
            ..ApiError::new(ErrorCode::UnsupportedEncoding, message)
        }
    }

    /// `400 malformed_request`.
    pub fn malformed(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::MalformedRequest, message)
    }

    /// `400 invalid_input`.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidInput, message)
    }

    /// `401 unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unauthorized, message)
    }

    /// `403 forbidden`.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Forbidden, message)
    }

    /// `413 too_large`.
    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::TooLarge, message)
    }

    /// `503 unavailable` with `Retry-After`.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unavailable, message)
    }

    /// `500 internal`: `detail` is logged, the client gets a generic message.
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %detail, "internal error");
        ApiError::new(
            ErrorCode::Internal,
            "internal server error; retrying is safe",
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable error code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The `Retry-After` header it is answered with, in seconds.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after
    }

    /// The JSON body it is answered with.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code,
            message: self.message.clone(),
            last_seq: self.last_seq,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl From<StorageError> for ApiError {
    fn from(err: StorageError) -> ApiError {
        match err {
            StorageError::SeqGap { last_seq, .. } => ApiError {
                last_seq: Some(last_seq),
                ..ApiError::new(ErrorCode::SeqGap, err.to_string())
            },
            StorageError::ForeignClient(_) => ApiError::forbidden(err.to_string()),
            StorageError::CursorReset { .. } | StorageError::CursorBehindHorizon { .. } => {
                ApiError::new(ErrorCode::CursorReset, err.to_string())
            }
            StorageError::Unavailable(detail) => {
                tracing::warn!(%detail, "storage unavailable");
                ApiError::unavailable("the server is busy or shutting down; retry later")
            }
            StorageError::Internal(detail) => ApiError::internal(detail),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code,
            message: self.message,
            last_seq: self.last_seq,
        };
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.code == ErrorCode::Unauthorized {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        } else if is_token_refusal(self.code) {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        if let Some(accepted) = self.accept_encoding {
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(accepted));
        }
        // Read back by the request middleware to count errors by code.
        response.extensions_mut().insert(self.code);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_errors_map_to_their_documented_status_and_code() {
        let space = tidesync_protocol::SpaceName::new("s").expect("valid");
        let client = tidesync_protocol::ClientId::new("c").expect("valid");
        let cases = [
            (
                StorageError::SeqGap {
                    last_seq: 1,
                    first_seq: 5,
                },
                409,
                ErrorCode::SeqGap,
            ),
            (
                StorageError::ForeignClient(client),
                403,
                ErrorCode::Forbidden,
            ),
            (
                StorageError::CursorReset {
                    space,
                    cursor: 9,
                    current: 3,
                },
                409,
                ErrorCode::CursorReset,
            ),
            (
                StorageError::CursorBehindHorizon {
                    space: tidesync_protocol::SpaceName::new("s").expect("valid"),
                    cursor: 2,
                    horizon: 7,
                },
                409,
                ErrorCode::CursorReset,
            ),
            (
                StorageError::Unavailable("pool timeout".into()),
                503,
                ErrorCode::Unavailable,
            ),
            (
                StorageError::Internal("disk I/O error at /secret/path".into()),
                500,
                ErrorCode::Internal,
            ),
        ];
        for (err, status, code) in cases {
            let api = ApiError::from(err);
            assert_eq!(api.status().as_u16(), status);
            assert_eq!(api.code(), code);
            assert!(!api.message().contains("/secret/path"), "leaks internals");
        }
    }

    #[test]
    fn unavailable_carries_retry_after_and_unauthorized_a_challenge() {
        let response = ApiError::unavailable("busy").into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let response = ApiError::unauthorized("no token").into_response();
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(
            response.extensions().get::<ErrorCode>(),
            Some(&ErrorCode::Unauthorized)
        );
        let response = ApiError::new(ErrorCode::TokenExpired, "expired").into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\""
        );
    }
}
