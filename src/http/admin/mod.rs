//! The admin side over HTTP (SPEC 6): the JSON API under `/admin/api` (`api.rs`), the pages
//! under `/admin` (`pages.rs`) and their embedded assets, and what every admin request passes:
//! a session cookie (never a client key), a CSRF token on every change, security headers.
//!
//! The operations behind it are the CLI's (`ops`); the locks are `crate::admin`.

mod api;
mod pages;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

use super::Server;
use crate::admin::{self, Session};

/// The cookie that carries a session.
const COOKIE: &str = "freeway_session";
/// Admin request bodies larger than this are refused (a `.env` text fits many times over).
const MAX_BODY: usize = 1 << 20;

/// Every admin route.
pub fn routes() -> axum::Router<Arc<Server>> {
    axum::Router::new()
        .route("/admin", get(pages::home))
        .route("/admin/", get(pages::home))
        .route("/admin/login", get(pages::login))
        .route("/admin/setup", get(pages::setup))
        .route("/admin/keys", get(pages::keys))
        .route("/admin/chain", get(pages::chain))
        .route("/admin/static/app.css", get(pages::css))
        .route("/admin/static/app.js", get(pages::js))
        .route("/admin/api/session", get(api::session))
        .route("/admin/api/setup", post(api::setup))
        .route("/admin/api/login", post(api::login))
        .route("/admin/api/logout", post(api::logout))
        .route("/admin/api/keys", get(api::keys).post(api::add_key))
        .route("/admin/api/keys/import", post(api::import_keys))
        .route(
            "/admin/api/keys/{id}",
            axum::routing::patch(api::patch_key).delete(api::delete_key),
        )
        .route("/admin/api/keys/{id}/check", post(api::check_key))
        .route(
            "/admin/api/keys/{id}/cooldowns",
            delete(api::clear_cooldowns),
        )
        .route(
            "/admin/api/client-keys",
            get(api::client_keys).post(api::create_client_key),
        )
        .route(
            "/admin/api/client-keys/{name}",
            delete(api::revoke_client_key).patch(api::patch_client_key),
        )
        .route(
            "/admin/api/chain",
            get(api::chain)
                .put(api::reorder_chain)
                .patch(api::switch_model),
        )
        .route("/admin/api/analytics", get(api::analytics))
        .route("/admin/api/requests", get(api::requests))
        .route("/admin/api/playground", post(api::playground))
        .route("/admin/analytics", get(pages::analytics))
        .route("/admin/playground", get(pages::playground))
        .route("/admin/api/{*rest}", axum::routing::any(api::no_route))
        .layer(middleware::from_fn(security_headers))
}

/// Pages and answers of the admin side run no inline script, are never framed, and leak no
/// referrer.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; form-action 'self'; frame-ancestors 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// An admin request that was refused, as JSON in the documented error shape.
#[derive(Debug)]
pub enum Error {
    /// 400.
    Invalid(String),
    /// 401: no session (or a client key instead of one), or a wrong password.
    Unauthorized(String, &'static str),
    /// 403: no or a wrong CSRF token; a wrong setup token.
    Forbidden(String, &'static str),
    /// 404.
    NotFound(String),
    /// 409.
    Conflict(String),
    /// 413.
    TooLarge,
    /// 408: the body did not arrive within this.
    Timeout(Duration),
    /// 429, with when to try again.
    SlowDown(Duration),
    /// 503: too many password checks at once; try again in a second.
    Busy,
    /// 500: logged, and said without detail; 503 `store_unavailable` when the store cannot be
    /// reached.
    Internal(anyhow::Error),
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, kind, code, message) = match self {
            Error::Invalid(m) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request",
                m,
            ),
            Error::Unauthorized(m, code) => {
                (StatusCode::UNAUTHORIZED, "authentication_error", code, m)
            }
            Error::Forbidden(m, code) => (StatusCode::FORBIDDEN, "permission_error", code, m),
            Error::NotFound(m) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "not_found",
                m,
            ),
            Error::Conflict(m) => (StatusCode::CONFLICT, "invalid_request_error", "conflict", m),
            Error::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request_too_large",
                format!("the request body is larger than {MAX_BODY} bytes"),
            ),
            Error::Timeout(d) => (
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                "request_timeout",
                format!("the request body did not arrive within {}s", d.as_secs()),
            ),
            Error::Busy => {
                let body = json!({"error": {
                    "message": "too many logins at once; try again in a second",
                    "type": "server_error",
                    "code": "busy",
                }});
                let mut resp = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return resp;
            }
            Error::SlowDown(wait) => {
                let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                let body = json!({"error": {
                    "message": format!("too many wrong passwords; try again in {secs}s"),
                    "type": "rate_limit_error",
                    "code": "slow_down",
                }});
                let mut resp = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                return resp;
            }
            // PostgreSQL is down (SPEC 5.1): say so, and that it is not the caller's fault.
            Error::Internal(e) if crate::ops::store_unreachable(&e).is_some() => {
                tracing::warn!(error = %format!("{e:#}"), "admin request: the store cannot be reached");
                let reason = crate::ops::store_unreachable(&e).unwrap_or_default();
                let body = json!({"error": {
                    "message": format!("{reason}; /v1 keeps serving with the keys it holds, try the admin side again when the store is back"),
                    "type": "server_error",
                    "code": "store_unavailable",
                }});
                let mut resp = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                return resp;
            }
            Error::Internal(e) => {
                tracing::error!(error = %format!("{e:#}"), "admin request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "internal_error",
                    "Freeway could not do this; its log says why".to_string(),
                )
            }
        };
        let body = json!({"error": {"message": message, "type": kind, "code": code}});
        (status, axum::Json(body)).into_response()
    }
}

impl From<crate::ops::Error> for Error {
    fn from(e: crate::ops::Error) -> Error {
        match e {
            crate::ops::Error::NotFound(m) => Error::NotFound(m),
            crate::ops::Error::Invalid(m) => Error::Invalid(m),
            crate::ops::Error::Conflict(m) => Error::Conflict(m),
            crate::ops::Error::Internal(e) => Error::Internal(e),
        }
    }
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Error {
        Error::Internal(e)
    }
}

impl From<admin::Error> for Error {
    fn from(e: admin::Error) -> Error {
        match e {
            admin::Error::Conflict(m) => Error::Conflict(m),
            admin::Error::Forbidden(m) => Error::Forbidden(m, "bad_setup_token"),
            admin::Error::Invalid(m) => Error::Invalid(m),
            admin::Error::WrongPassword => {
                Error::Unauthorized("the password is wrong".into(), "wrong_password")
            }
            admin::Error::SlowDown(d) => Error::SlowDown(d),
            admin::Error::Internal(e) => Error::Internal(e),
        }
    }
}

/// The session token the request's cookie carries, if any.
pub(super) fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The live session of the request, if it has one (the store is asked off the event loop).
pub(super) async fn session_of(
    server: &Arc<Server>,
    headers: &HeaderMap,
) -> Result<Option<Session>, Error> {
    match cookie(headers) {
        Some(token) => {
            let admin = Arc::clone(&server.admin);
            blocking(move || Ok(admin.session(&token)?)).await
        }
        None => Ok(None),
    }
}

/// The request's session, or 401; for a change (`write`), also its CSRF token, or 403.
async fn require(server: &Arc<Server>, headers: &HeaderMap, write: bool) -> Result<Session, Error> {
    let Some(session) = session_of(server, headers).await? else {
        return Err(Error::Unauthorized(
            "log in first: the admin API needs a session (POST /admin/api/login); client keys do not open it"
                .into(),
            "no_session",
        ));
    };
    if write {
        // Exactly one token: a second one must not ride along with a right one.
        let mut all = headers.get_all("x-csrf-token").iter();
        let given = match (all.next(), all.next()) {
            (Some(v), None) => v.to_str().ok(),
            _ => None,
        };
        if !admin::Admin::csrf_ok(&session, given) {
            return Err(Error::Forbidden(
                "missing or wrong X-CSRF-Token header (GET /admin/api/session returns it)".into(),
                "csrf",
            ));
        }
    }
    Ok(session)
}

/// Blocking work (the store, password hashes, probes' writes) off the event loop, bounded
/// (`offload::run`).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    crate::offload::run(f).await.map_err(Error::from)?
}

impl From<crate::offload::Error> for Error {
    fn from(e: crate::offload::Error) -> Error {
        match e {
            crate::offload::Error::Busy => Error::Busy,
            crate::offload::Error::Failed(m) => Error::Internal(anyhow::anyhow!(m)),
        }
    }
}

/// The `Set-Cookie` value of a new session (or, with `None`, of one that ended).
fn session_cookie(token: Option<&str>, headers: &HeaderMap) -> HeaderValue {
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let secure = if secure { "; Secure" } else { "" };
    let value = match token {
        Some(t) => format!(
            "{COOKIE}={t}; HttpOnly; SameSite=Strict; Path=/admin; Max-Age={}{secure}",
            admin::SESSION_IDLE.as_secs()
        ),
        None => format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/admin; Max-Age=0{secure}"),
    };
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A request body as JSON of type `T`, at most [`MAX_BODY`] bytes, arrived whole within the
/// body-read timeout (a body sent a byte at a time does not hold a connection slot).
async fn json_body<T: serde::de::DeserializeOwned>(
    server: &Server,
    body: Body,
) -> Result<T, Error> {
    let read = http_body_util::BodyExt::collect(http_body_util::Limited::new(body, MAX_BODY));
    let Ok(read) = tokio::time::timeout(server.body_read_timeout, read).await else {
        return Err(Error::Timeout(server.body_read_timeout));
    };
    let bytes = match read {
        Ok(c) => c.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Err(Error::TooLarge);
        }
        Err(_) => return Err(Error::Invalid("the request body could not be read".into())),
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::Invalid(format!("the request body is not the JSON expected: {e}")))
}

/// The client's address, for the login slow-down.
fn peer(req_extensions: &axum::http::Extensions) -> std::net::IpAddr {
    req_extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.ip())
}

/// A moment as RFC 3339 (UTC), for JSON.
fn rfc3339(ms: Option<i64>) -> serde_json::Value {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map_or(serde_json::Value::Null, |t| {
            json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        })
}
