//! Request extractors whose every rejection is an [`ApiError`] (JSON `{code, message}`).
//!
//! - [`JsonBody`]: the body, at most `Limits::max_body_bytes` (enforced by axum's
//!   `DefaultBodyLimit`, whose rejection becomes `413 too_large`), parsed with serde_json.
//!   A body sent with `Content-Encoding: gzip` or `zstd` arrives here decompressed
//!   ([`crate::compression`]), and the limit counts decompressed bytes; one that does not
//!   decompress is `400 malformed_request` naming its coding.
//!   Syntax errors and wrong types are `400 malformed_request` with serde's message (line and
//!   column); a name, id or clock stamp that breaks its rule is `400 invalid_input`.
//!   The `Content-Type` header is **not** checked: every body is read as JSON, so a client that
//!   forgets the header (curl `-d`) is served rather than refused with a 415.
//! - [`Auth`]: `Authorization: Bearer <token>` resolved to the token's [`Grants`] by
//!   [`AppState::authenticate`] (an API token, or a JWT when JWT auth is configured); a
//!   missing or malformed header, more than one `Authorization` header, or an unknown API
//!   token is `401 unauthorized` with `WWW-Authenticate: Bearer`; a refused JWT is a `401`
//!   with the code of the failed check and `WWW-Authenticate: Bearer error="invalid_token"`.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use crate::auth::Grants;
use crate::compression::ContentCoding;
use crate::error::ApiError;
use crate::state::AppState;

/// What the protocol's validated types call themselves in their error messages
/// (`tidesync_protocol::ValidationError::what`): a deserialization error that starts with
/// `invalid <what> ` is a broken naming rule, not a wrongly shaped body.
const VALIDATED_THINGS: [&str; 6] = [
    "record id",
    "space name",
    "collection name",
    "client id",
    "hlc",
    "stamp",
];

/// A JSON request body parsed into `T`. See the module docs for the errors.
#[derive(Debug, Clone)]
pub(crate) struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let coding = req.extensions().get::<ContentCoding>().copied();
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            match (rejection.status(), coding) {
                (StatusCode::PAYLOAD_TOO_LARGE, None) => {
                    ApiError::too_large("the request body is larger than the server accepts")
                }
                (StatusCode::PAYLOAD_TOO_LARGE, Some(coding)) => ApiError::too_large(format!(
                    "the request body, {}-decompressed, is larger than the server accepts",
                    coding.as_str()
                )),
                (_, None) => {
                    ApiError::malformed(format!("could not read the request body: {rejection}"))
                }
                (_, Some(coding)) => ApiError::malformed(format!(
                    "could not read the {}-compressed request body (is it valid {0}?): {rejection}",
                    coding.as_str()
                )),
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses a JSON body, classifying serde's error as described in the module docs.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|err| {
        let message = err.to_string();
        let broken_rule = err.classify() == Category::Data
            && VALIDATED_THINGS.iter().any(|what| {
                message
                    .strip_prefix("invalid ")
                    .is_some_and(|rest| rest.starts_with(what))
            });
        if broken_rule {
            ApiError::invalid(message)
        } else {
            ApiError::malformed(format!("the body is not a valid request: {message}"))
        }
    })
}

/// The grants of the request's bearer token.
#[derive(Debug, Clone)]
pub(crate) struct Auth(pub Grants);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let grants = state.authenticate(bearer_token(parts)?).await?;
        tracing::Span::current().record("user", grants.user.as_str());
        Ok(Auth(grants))
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
///
/// Exactly one `Authorization` header: with two, which one counts would depend on which a
/// proxy or the server reads first, so neither does (`401 unauthorized`).
fn bearer_token(parts: &Parts) -> Result<&str, ApiError> {
    let mut headers = parts.headers.get_all(AUTHORIZATION).iter();
    let header = headers.next().ok_or_else(|| {
        ApiError::unauthorized("missing Authorization header; send `Authorization: Bearer <token>`")
    })?;
    if headers.next().is_some() {
        return Err(ApiError::unauthorized(
            "more than one Authorization header; send exactly one `Authorization: Bearer <token>`",
        ));
    }
    let malformed =
        || ApiError::unauthorized("malformed Authorization header; expected `Bearer <token>`");
    let value = header.to_str().map_err(|_| malformed())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(malformed());
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidesync_protocol::{
        ClientId, CollectionName, ErrorCode, Hlc, PushRequest, RecordId, SpaceName, Stamp,
    };

    #[test]
    fn every_validated_type_is_recognized_as_invalid_input() {
        let whats = [
            RecordId::new("").err().map(|e| e.what),
            SpaceName::new("").err().map(|e| e.what),
            CollectionName::new("").err().map(|e| e.what),
            ClientId::new("").err().map(|e| e.what),
            "x".parse::<Hlc>().err().map(|e| e.what),
            "x".parse::<Stamp>().err().map(|e| e.what),
        ];
        for what in whats {
            let what = what.expect("empty or garbage input is refused");
            assert!(VALIDATED_THINGS.contains(&what), "{what} not listed");
        }
    }

    fn parts_with_authorization(values: &[&str]) -> Parts {
        let mut builder = axum::http::Request::builder();
        for value in values {
            builder = builder.header(AUTHORIZATION, *value);
        }
        builder.body(()).expect("request").into_parts().0
    }

    #[test]
    fn exactly_one_authorization_header_is_read() {
        let one = parts_with_authorization(&["Bearer tsk_a"]);
        assert_eq!(bearer_token(&one).expect("one header"), "tsk_a");
        for values in [
            &[][..],
            &["Bearer tsk_a", "Bearer tsk_a"][..],
            &["Bearer tsk_a", "Bearer tsk_b"][..],
            &["Bearer tsk_a", ""][..],
        ] {
            let err = bearer_token(&parts_with_authorization(values)).expect_err("refused");
            assert_eq!(err.code(), ErrorCode::Unauthorized, "{values:?}");
        }
        let two = parts_with_authorization(&["Bearer tsk_a", "Bearer tsk_b"]);
        let err = bearer_token(&two).expect_err("refused");
        assert!(err.message().contains("more than one"), "{}", err.message());
    }

    #[test]
    fn syntax_and_type_errors_are_malformed_and_rule_breaks_are_invalid() {
        let syntax = parse_json::<PushRequest>(b"{\"client_id\": ").expect_err("syntax");
        assert_eq!(syntax.code(), ErrorCode::MalformedRequest);
        assert!(syntax.message().contains("line 1"), "{}", syntax.message());

        let types =
            parse_json::<PushRequest>(br#"{"client_id": 5, "protocol": 1, "mutations": []}"#)
                .expect_err("types");
        assert_eq!(types.code(), ErrorCode::MalformedRequest);

        let rule = parse_json::<PushRequest>(
            br#"{"client_id": "no spaces", "protocol": 1, "mutations": []}"#,
        )
        .expect_err("rule");
        assert_eq!(rule.code(), ErrorCode::InvalidInput);
    }
}
