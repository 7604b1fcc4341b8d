//! Who may see the dashboard: a request carrying the admin token (`Authorization: Bearer`,
//! for scripts), or a browser holding a session cookie it got by posting the token to the
//! login form (a browser cannot add a header to a navigation).
//!
//! Sessions live in this node's memory: a random 256-bit id in an `HttpOnly;
//! SameSite=Strict` cookie scoped to `/admin`, kept as its SHA-256, valid for
//! [`SESSION_LIFETIME`], ended by logging out or restarting the node. At most
//! [`MAX_SESSIONS`] are open; a new one beyond that replaces the one closest to expiry.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::admin::config::AdminToken;

/// The session cookie's name.
pub(crate) const COOKIE_NAME: &str = "tidesync_admin";
/// How long a session lasts.
pub(crate) const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
/// Most sessions open at once.
pub(crate) const MAX_SESSIONS: usize = 64;

/// What a request presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// The admin token, or a live session.
    Granted,
    /// Nothing: show the login form.
    Anonymous,
    /// A session cookie that is unknown or expired: log in again.
    Expired,
    /// A wrong token, or a malformed `Authorization` header.
    Refused,
}

/// The open sessions of this node.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    /// SHA-256 of the id → expiry.
    open: Mutex<HashMap<[u8; 32], Instant>>,
}

impl Sessions {
    /// Opens a session; returns its id (the cookie's value).
    pub(crate) fn open(&self) -> String {
        let id = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|_, expires| *expires > now);
        if open.len() >= MAX_SESSIONS {
            let soonest = open
                .iter()
                .min_by_key(|(_, expires)| **expires)
                .map(|(hash, _)| *hash);
            if let Some(hash) = soonest {
                open.remove(&hash);
            }
        }
        open.insert(hash(&id), now + SESSION_LIFETIME);
        id
    }

    /// Whether `id` is a live session.
    fn is_live(&self, id: &str) -> bool {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&hash(id))
            .is_some_and(|expires| *expires > Instant::now())
    }

    /// Ends the session `id`, if it is one.
    pub(crate) fn close(&self, id: &str) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.remove(&hash(id));
    }
}

/// A session id as kept: looked up by its hash, so the map's timing says nothing about ids.
fn hash(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// What `headers` present: an `Authorization` header decides alone (exactly one, `Bearer`
/// with the admin token); without one, the session cookie.
pub(crate) fn access(headers: &HeaderMap, token: &AdminToken, sessions: &Sessions) -> Access {
    let mut authorization = headers.get_all(AUTHORIZATION).iter();
    if let Some(value) = authorization.next() {
        if authorization.next().is_some() {
            return Access::Refused;
        }
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        return match presented {
            Some(presented) if token.matches(presented) => Access::Granted,
            _ => Access::Refused,
        };
    }
    match session_cookie(headers) {
        Some(id) if sessions.is_live(id) => Access::Granted,
        Some(_) => Access::Expired,
        None => Access::Anonymous,
    }
}

/// The value of the session cookie, if the request has one.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.trim())
}

/// The `Set-Cookie` value that opens session `id`.
pub(crate) fn set_cookie(id: &str) -> String {
    format!(
        "{COOKIE_NAME}={id}; Path=/admin; Max-Age={}; HttpOnly; SameSite=Strict",
        SESSION_LIFETIME.as_secs()
    )
}

/// The `Set-Cookie` value that makes the browser forget the session.
pub(crate) fn clear_cookie() -> String {
    format!("{COOKIE_NAME}=; Path=/admin; Max-Age=0; HttpOnly; SameSite=Strict")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const TOKEN: &str = "0123456789abcdef0123";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("header"));
        }
        map
    }

    #[test]
    fn a_bearer_token_decides_alone_and_a_session_cookie_stands_in_for_it() {
        let token = AdminToken::new(TOKEN).expect("valid");
        let sessions = Sessions::default();
        let id = sessions.open();
        let cookie = format!("other=1; {COOKIE_NAME}={id}");
        let cases = [
            (headers(&[]), Access::Anonymous),
            (
                headers(&[("authorization", &format!("Bearer {TOKEN}"))]),
                Access::Granted,
            ),
            (
                headers(&[("authorization", &format!("bearer {TOKEN}"))]),
                Access::Granted,
            ),
            (
                headers(&[("authorization", "Bearer wrong-token-0000000")]),
                Access::Refused,
            ),
            (headers(&[("authorization", TOKEN)]), Access::Refused),
            (
                headers(&[
                    ("authorization", &format!("Bearer {TOKEN}")),
                    ("authorization", &format!("Bearer {TOKEN}")),
                ]),
                Access::Refused,
            ),
            (headers(&[("cookie", &cookie)]), Access::Granted),
            (
                headers(&[("cookie", &format!("{COOKIE_NAME}=forged"))]),
                Access::Expired,
            ),
            // A wrong header is not rescued by a good cookie.
            (
                headers(&[("authorization", "Bearer nope"), ("cookie", &cookie)]),
                Access::Refused,
            ),
        ];
        for (headers, expected) in cases {
            assert_eq!(access(&headers, &token, &sessions), expected, "{headers:?}");
        }
        sessions.close(&id);
        assert_eq!(
            access(&headers(&[("cookie", &cookie)]), &token, &sessions),
            Access::Expired
        );
    }

    #[test]
    fn sessions_are_bounded() {
        let sessions = Sessions::default();
        let ids: Vec<String> = (0..MAX_SESSIONS + 5).map(|_| sessions.open()).collect();
        let live = ids.iter().filter(|id| sessions.is_live(id)).count();
        assert_eq!(live, MAX_SESSIONS);
        assert!(
            sessions.is_live(ids.last().expect("some")),
            "the newest is kept"
        );
    }
}
