//! HTTP compression, negotiated in both directions (docs/protocol.md, "Compression").
//!
//! - **Responses** are compressed by tower-http's `CompressionLayer` with gzip or zstd, as
//!   the request's `Accept-Encoding` asks, under its `DefaultPredicate`: never
//!   `text/event-stream` (a poke must not wait in an encoder's buffer for more bytes), never
//!   a body under 32 bytes.
//! - **Request bodies** with `Content-Encoding: gzip` or `zstd` are decompressed by
//!   `RequestDecompressionLayer` as the handler reads them. The body limit
//!   (`Limits::max_body_bytes`, axum's `DefaultBodyLimit`) is enforced where the handler
//!   reads the body, so it counts **decompressed** bytes: a small body that inflates past
//!   the limit is `413 too_large` after at most the limit was inflated, like an uncompressed
//!   one. (The declared `Content-Length` checked by [`crate::serve()`] is the compressed size.)
//! - [`negotiate`] runs first: it refuses a coding the server does not accept (`br`, two
//!   codings, or any coding with compression off) with `415` and the JSON error body, so
//!   tower-http's own empty 415 is never sent; it normalizes the one it accepts (`GZIP`,
//!   `x-gzip`) to what the decompression layer matches; and it adds `Accept-Encoding:
//!   zstd, gzip` to every response (RFC 7694), which is how clients learn they may compress
//!   their requests.
//!
//! With [`Limits::compression`](crate::Limits::compression) off none of this runs: responses
//! go uncompressed, no `Accept-Encoding` is advertised, and a compressed request is answered
//! `415` with `Accept-Encoding: identity`.
//!
//! Memory: a zstd frame may ask its decoder for a window of up to 128 MiB (zstd's default
//! decoding limit, `ZSTD_WINDOWLOG_LIMIT_DEFAULT`); the decoder refuses larger windows, so a
//! request costs at most that plus the body limit whatever it declares.

use axum::extract::{Request, State};
use axum::http::header::{ACCEPT_ENCODING, CONTENT_ENCODING};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::compression::CompressionLayer;
use tower_http::decompression::RequestDecompressionLayer;

use crate::error::ApiError;
use crate::state::AppState;

/// What the server accepts in requests and advertises in `Accept-Encoding`, preferred first.
pub(crate) const ACCEPTED: &str = "zstd, gzip";

/// The coding a request body arrived in, put in the request's extensions by [`negotiate`] so
/// a body that fails to decompress is reported as such.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContentCoding {
    Gzip,
    Zstd,
}

impl ContentCoding {
    /// The token as the decompression layer matches it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ContentCoding::Gzip => "gzip",
            ContentCoding::Zstd => "zstd",
        }
    }
}

/// Response compression: gzip or zstd, the default predicate (no SSE, nothing tiny).
pub(crate) fn response_layer() -> CompressionLayer {
    CompressionLayer::new()
        .gzip(true)
        .zstd(true)
        .no_br()
        .no_deflate()
}

/// Request decompression: gzip or zstd ([`negotiate`] has refused anything else before).
pub(crate) fn request_layer() -> RequestDecompressionLayer {
    RequestDecompressionLayer::new()
        .gzip(true)
        .zstd(true)
        .no_br()
        .no_deflate()
}

/// Checks and normalizes the request's `Content-Encoding`, runs the rest, and advertises
/// what the server accepts on the response. See the module docs.
pub(crate) async fn negotiate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let enabled = state.limits().compression;
    match request_coding(request.headers_mut(), enabled) {
        Ok(Some(coding)) => {
            request.extensions_mut().insert(coding);
        }
        Ok(None) => {}
        Err(refusal) => return refusal.into_response(),
    }
    let mut response = next.run(request).await;
    if enabled {
        response
            .headers_mut()
            .insert(ACCEPT_ENCODING, HeaderValue::from_static(ACCEPTED));
    }
    response
}

/// The one coding of the request body, if any, with the header rewritten to its canonical
/// token (or removed when it only says `identity`); a `415` when the server does not accept
/// what it says.
fn request_coding(
    headers: &mut HeaderMap,
    enabled: bool,
) -> Result<Option<ContentCoding>, ApiError> {
    let accepted = if enabled { ACCEPTED } else { "identity" };
    let mut codings = Vec::new();
    for value in headers.get_all(CONTENT_ENCODING) {
        let text = value.to_str().map_err(|_| {
            ApiError::unsupported_encoding(
                "the Content-Encoding header is not visible ASCII".to_owned(),
                accepted,
            )
        })?;
        codings.extend(
            text.split(',')
                .map(|token| token.trim().to_ascii_lowercase())
                .filter(|token| !token.is_empty() && token != "identity"),
        );
    }
    headers.remove(CONTENT_ENCODING);
    let coding = match codings.as_slice() {
        [] => return Ok(None),
        [one] => one.as_str(),
        several => {
            return Err(ApiError::unsupported_encoding(
                format!(
                    "the request body has {} content codings ({}); send it uncompressed or in one of: {accepted}",
                    several.len(),
                    several.join(", ")
                ),
                accepted,
            ))
        }
    };
    if !enabled {
        return Err(ApiError::unsupported_encoding(
            format!(
                "the request body is {coding}-compressed, but this server does not accept compressed requests; send it uncompressed"
            ),
            accepted,
        ));
    }
    let coding = match coding {
        "gzip" | "x-gzip" => ContentCoding::Gzip,
        "zstd" => ContentCoding::Zstd,
        other => {
            return Err(ApiError::unsupported_encoding(
                format!(
                    "the request body is encoded with {other:?}, which this server does not accept; send it uncompressed or in one of: {accepted}"
                ),
                accepted,
            ))
        }
    };
    headers.insert(CONTENT_ENCODING, HeaderValue::from_static(coding.as_str()));
    Ok(Some(coding))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                CONTENT_ENCODING,
                HeaderValue::from_bytes(value).expect("header value"),
            );
        }
        headers
    }

    #[test]
    fn accepted_codings_are_normalized_and_identity_is_dropped() {
        for (values, expected) in [
            (&[&b"gzip"[..]][..], Some("gzip")),
            (&[b"GZIP"], Some("gzip")),
            (&[b"x-gzip"], Some("gzip")),
            (&[b" zstd "], Some("zstd")),
            (&[b"identity, zstd"], Some("zstd")),
            (&[b"identity"], None),
            (&[b"Identity"], None),
            (&[], None),
        ] {
            let mut headers = headers(values);
            let coding = request_coding(&mut headers, true).expect("accepted");
            assert_eq!(coding.map(ContentCoding::as_str), expected, "{values:?}");
            assert_eq!(
                headers
                    .get(CONTENT_ENCODING)
                    .map(|v| v.to_str().expect("ascii")),
                expected,
                "{values:?}"
            );
        }
    }

    #[test]
    fn unknown_several_or_unreadable_codings_are_415_with_what_is_accepted() {
        for values in [
            &[&b"br"[..]][..],
            &[b"deflate"],
            &[b"gzip, zstd"],
            &[b"gzip", b"gzip"],
            &[b"gz\xffip"],
        ] {
            let err = request_coding(&mut headers(values), true).expect_err("refused");
            assert_eq!(
                err.status(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{values:?}"
            );
            let response = err.into_response();
            assert_eq!(response.headers()[ACCEPT_ENCODING], ACCEPTED);
        }
    }

    #[test]
    fn with_compression_off_every_coding_is_refused_and_identity_advertised() {
        for values in [&[&b"gzip"[..]][..], &[b"zstd"]] {
            let err = request_coding(&mut headers(values), false).expect_err("refused");
            assert!(err.message().contains("uncompressed"), "{}", err.message());
            assert_eq!(err.into_response().headers()[ACCEPT_ENCODING], "identity");
        }
        let mut plain = headers(&[b"identity"]);
        assert_eq!(request_coding(&mut plain, false).expect("plain"), None);
    }
}
