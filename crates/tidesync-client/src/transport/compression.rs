//! Compression on the wire, negotiated (docs/protocol.md, "Compression").
//!
//! - **Responses**: reqwest's `gzip` and `zstd` features send `Accept-Encoding: gzip, zstd`
//!   and decompress what comes back; nothing to do here but switch them off with
//!   [`ClientConfig::compression`](crate::ClientConfig::compression).
//! - **Requests**: a push or pull body over [`MIN_COMPRESSED`] bytes goes out as zstd, but
//!   only once the server has said it accepts zstd: its latest response carried
//!   `Accept-Encoding` naming `zstd` (RFC 7694; every tidesync server that can decompress
//!   says so on every response, the health probe's included). A server that never says so
//!   (an older one, or one with compression off) gets plain JSON. What the latest response
//!   said wins, so a server restarted with compression off is followed at its first answer.
//!   A compressed body answered `415` is sent again at once, uncompressed, in the same
//!   exchange ([`super::http`]): a refusal of the coding never reaches the sync machine.
//!
//! Never: compresses a body the server has not said it accepts, or fails a request because
//! compression failed (the body then goes plain).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use reqwest::header::{HeaderMap, ACCEPT_ENCODING};

/// Bodies at most this long go uncompressed: the saving would not pay for the work.
pub(crate) const MIN_COMPRESSED: usize = 1024;

/// The `Content-Encoding` of a body from [`Compression::encode`].
pub(crate) const CODING: &str = "zstd";

/// zstd's level for request bodies: its default, fast enough to stay off the profile.
const ZSTD_LEVEL: i32 = 3;

/// The content coding of request bodies, and what the server said it accepts. Clones share
/// what was learned.
#[derive(Debug, Clone)]
pub(crate) struct Compression {
    enabled: bool,
    /// The latest response's `Accept-Encoding` named zstd.
    server_accepts_zstd: Arc<AtomicBool>,
}

impl Compression {
    /// `enabled: false` never compresses (and the HTTP client asks for no compressed
    /// responses).
    pub(crate) fn new(enabled: bool) -> Compression {
        Compression {
            enabled,
            server_accepts_zstd: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Learns from a response's headers whether the server accepts zstd request bodies.
    pub(crate) fn observe(&self, headers: &HeaderMap) {
        if self.enabled {
            self.server_accepts_zstd
                .store(accepts_zstd(headers), Ordering::Relaxed);
        }
    }

    /// The server refused a compressed body (`415`): send plain until it says otherwise.
    pub(crate) fn refused(&self) {
        self.server_accepts_zstd.store(false, Ordering::Relaxed);
    }

    /// `json` compressed, when compression is on, the server accepts it and the body is worth
    /// it; `None`: send `json` as it is.
    pub(crate) fn encode(&self, json: &[u8]) -> Option<Vec<u8>> {
        let worth_it = self.enabled
            && json.len() > MIN_COMPRESSED
            && self.server_accepts_zstd.load(Ordering::Relaxed);
        if !worth_it {
            return None;
        }
        zstd::bulk::compress(json, ZSTD_LEVEL)
            .inspect_err(|e| tracing::debug!(error = %e, "zstd failed; sending the body plain"))
            .ok()
    }
}

/// Whether `Accept-Encoding` names `zstd` with a non-zero quality.
fn accepts_zstd(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|param| {
                param.trim().split_once('=').is_some_and(|(name, q)| {
                    name.trim().eq_ignore_ascii_case("q")
                        && q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
                })
            });
            coding.eq_ignore_ascii_case("zstd") && !refused
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(ACCEPT_ENCODING, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn zstd_is_accepted_when_named_with_a_non_zero_quality() {
        for (values, accepted) in [
            (&["zstd, gzip"][..], true),
            (&["gzip", "ZSTD;q=0.5"], true),
            (&["gzip"], false),
            (&["identity"], false),
            (&["zstd;q=0"], false),
            (&["zstd; q=0.000, gzip"], false),
            (&["zstdx"], false),
            (&[], false),
        ] {
            assert_eq!(accepts_zstd(&headers(values)), accepted, "{values:?}");
        }
    }

    #[test]
    fn bodies_are_compressed_only_when_on_accepted_and_large() {
        let large = br#"{"mutations": []}"#.repeat(200);
        let on = Compression::new(true);
        assert_eq!(on.encode(&large), None, "not yet accepted");
        // Learned by a clone (another exchange), seen by all.
        on.clone().observe(&headers(&["zstd, gzip"]));
        let encoded = on.encode(&large).expect("compressed");
        assert!(encoded.len() < large.len() / 4);
        let back = zstd::stream::decode_all(&encoded[..]).expect("zstd");
        assert_eq!(back, large);
        assert_eq!(on.encode(b"{}"), None, "small");

        // The latest answer wins; a refusal turns it off.
        on.observe(&HeaderMap::new());
        assert_eq!(on.encode(&large), None);
        on.observe(&headers(&["zstd"]));
        on.refused();
        assert_eq!(on.encode(&large), None);

        let off = Compression::new(false);
        off.observe(&headers(&["zstd"]));
        assert_eq!(off.encode(&large), None);
    }
}
