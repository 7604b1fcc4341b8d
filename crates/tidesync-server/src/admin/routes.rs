//! The `/admin` handlers. HTML answers carry `Cache-Control: no-store` and a
//! `Content-Security-Policy` that allows only the page's own style and script (marked with
//! the response's nonce), no framing, and forms posting only to this server.

use std::time::SystemTime;

use axum::extract::rejection::FormRejection;
use axum::extract::State;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, REFERRER_POLICY, SET_COOKIE,
    WWW_AUTHENTICATE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use tidesync_protocol::ErrorCode;

use crate::admin::dashboard::{self, millis, View};
use crate::admin::session::{self, Access};
use crate::admin::{html, Admin, ROWS};
use crate::error::ApiError;
use crate::state::AppState;
use crate::storage::OverviewRequest;

/// The admin routes (merged into [`crate::app`]).
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(dashboard))
        .route("/admin/login", post(login))
        .route("/admin/logout", post(logout))
        .route("/admin/metrics.json", get(metrics))
}

/// The dashboard's state, or the `404` that says how to turn it on.
fn enabled(state: &AppState) -> Result<&Admin, ApiError> {
    state.admin().ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            "the admin dashboard is off; start the server with an admin token to turn it on: \
             TIDESYNC_ADMIN_TOKEN=$(openssl rand -hex 32) tidesync serve, or `[admin] \
             token_file = \"…\"` in its configuration file",
        )
    })
}

/// `GET /admin`.
async fn dashboard(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let admin = enabled(&state)?;
    match session::access(&headers, &admin.token, &admin.sessions) {
        Access::Granted => {}
        Access::Anonymous => return Ok(sign_in(StatusCode::UNAUTHORIZED, None, false)),
        Access::Expired => {
            let mut response = sign_in(
                StatusCode::UNAUTHORIZED,
                Some("Your session ended; sign in again."),
                false,
            );
            response
                .headers_mut()
                .insert(SET_COOKIE, header(&session::clear_cookie()));
            return Ok(response);
        }
        Access::Refused => {
            return Ok(sign_in(
                StatusCode::UNAUTHORIZED,
                Some("The Authorization header does not carry the admin token."),
                true,
            ))
        }
    }
    let recent: Vec<_> = admin
        .activity
        .recent_clients(ROWS)
        .into_iter()
        .map(|seen| seen.client_id)
        .collect();
    let overview = state
        .storage()
        .overview(OverviewRequest {
            limit: ROWS,
            clients: recent,
        })
        .await?;
    let nonce = nonce();
    let page = dashboard::render(&View {
        now: SystemTime::now(),
        started: admin.started,
        overview: &overview,
        activity: &admin.activity,
        metrics: state.metrics().snapshot(),
        limit: ROWS,
        nonce: &nonce,
    });
    Ok(html_response(StatusCode::OK, page, &nonce))
}

/// The login form's body.
#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
}

/// `POST /admin/login`: the admin token from the form opens a session.
async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Result<Response, ApiError> {
    let admin = enabled(&state)?;
    let Ok(Form(form)) = form else {
        return Ok(sign_in(
            StatusCode::BAD_REQUEST,
            Some("Send the form: a field named token, as application/x-www-form-urlencoded."),
            false,
        ));
    };
    if !admin.token.matches(form.token.trim()) {
        tracing::warn!("admin sign-in refused: wrong token");
        return Ok(sign_in(
            StatusCode::UNAUTHORIZED,
            Some("That is not the admin token."),
            true,
        ));
    }
    let id = admin.sessions.open();
    let mut cookie = session::set_cookie(&id);
    // Behind a TLS-terminating proxy, keep the cookie to HTTPS.
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"));
    if https {
        cookie.push_str("; Secure");
    }
    tracing::info!("admin signed in");
    Ok(redirect(Some(&cookie)))
}

/// `POST /admin/logout`: ends the session (if any) and forgets the cookie.
async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let admin = enabled(&state)?;
    if let Some(id) = session::session_cookie(&headers) {
        admin.sessions.close(id);
    }
    Ok(redirect(Some(&session::clear_cookie())))
}

/// `GET /admin/metrics.json`: this node's counters now, with the time they were read.
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let admin = enabled(&state)?;
    if session::access(&headers, &admin.token, &admin.sessions) != Access::Granted {
        return Err(ApiError::unauthorized(
            "send `Authorization: Bearer <admin token>` or sign in at /admin",
        ));
    }
    let mut body = serde_json::to_value(state.metrics().snapshot()).map_err(ApiError::internal)?;
    body["at_ms"] = millis(SystemTime::now()).into();
    body["started_at_ms"] = millis(admin.started).into();
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The login page with `status`. `failed`: a wrong token was presented, counted as an
/// authentication failure in the metrics (a first visit without credentials is not).
fn sign_in(status: StatusCode, problem: Option<&str>, failed: bool) -> Response {
    let nonce = nonce();
    let mut response = html_response(status, html::login(problem, &nonce), &nonce);
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"tidesync admin\""),
        );
    }
    if failed {
        // Read by the request middleware, which counts errors by code.
        response.extensions_mut().insert(ErrorCode::Unauthorized);
    }
    response
}

/// `303 See Other` to the dashboard, setting `cookie`.
fn redirect(cookie: Option<&str>) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(LOCATION, HeaderValue::from_static("/admin"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(cookie) = cookie {
        headers.insert(SET_COOKIE, header(cookie));
    }
    response
}

/// A fresh `Content-Security-Policy` nonce (122 random bits).
fn nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// An HTML answer with the admin pages' security headers; `nonce` allows the page's own
/// style and script, and nothing else inline.
fn html_response(status: StatusCode, page: String, nonce: &str) -> Response {
    let policy = format!(
        "default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    );
    let mut response = (status, page).into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(CONTENT_SECURITY_POLICY, header(&policy));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// A header value built from text this module wrote (ASCII, no control characters).
fn header(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static(""))
}
