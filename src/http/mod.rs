//! The HTTP surface: the only module that knows axum. Routes, client-key auth, request ids,
//! the body limit, and the client surfaces' requests and answers as HTTP (the pure
//! translation lives in `wire`).

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use http_body_util::{LengthLimitError, Limited};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::config::Metrics;
use crate::error::ApiError;
use crate::ops::Ops;
use crate::router::{self, Incoming, Router};
use crate::wire::openai;

mod admin;
pub mod serve;

/// Bodies larger than this are parsed on the blocking pool, [`LARGE_AT_ONCE`] at a time.
const LARGE_BODY: usize = 256 * 1024;
/// Large bodies parsed at once, at most: parsing costs memory (about the body's size again).
const LARGE_AT_ONCE: usize = 2;
static LARGE_PARSES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(LARGE_AT_ONCE);

/// The request id, set by the middleware for handlers and the log line.
#[derive(Clone)]
pub struct RequestId(pub String);

/// What the handlers need.
pub struct Server {
    pub router: Router,
    pub ops: Arc<Ops>,
    /// The admin side's password, sessions and setup link.
    pub admin: Arc<crate::admin::Admin>,
    /// Request body limit in bytes.
    pub max_body: usize,
    /// A request body must arrive whole within this.
    pub body_read_timeout: std::time::Duration,
    pub metrics: Metrics,
}

/// Serve `server` on `listener` until `shutdown` resolves; then let in-flight requests finish
/// for at most `grace`.
pub async fn serve(
    server: Arc<Server>,
    listener: tokio::net::TcpListener,
    limits: serve::Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: std::time::Duration,
) {
    let stop = tokio_util::sync::CancellationToken::new();
    let signal = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        signal.cancel();
    });
    serve::run(routes(server), listener, limits, stop, grace).await;
}

/// The whole HTTP router.
pub fn routes(server: Arc<Server>) -> axum::Router {
    axum::Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route("/models", get(models))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(admin::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(request_id))
        .with_state(server)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, axum::Json(openai::error_body(&self))).into_response();
        if let ApiError::RateLimited {
            retry_after: Some(d),
            ..
        } = &self
        {
            let secs = d.as_secs_f64().ceil().max(1.0) as u64;
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound(
        "no such route; the API lives under /v1 (POST /v1/chat/completions, GET /v1/models)".into(),
    )
}

async fn method_not_allowed() -> Response {
    let err = ApiError::InvalidRequest("this route does not take that method".into());
    let mut resp = err.into_response();
    *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    resp
}

/// Echo or create `X-Request-Id`, and log each request once.
async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(new_request_id);
    let method = req.method().clone();
    // A clone of the URI shares its bytes: no copy for a log line that is usually filtered out.
    let uri = req.uri().clone();
    req.extensions_mut().insert(RequestId(id.clone()));
    let started = Instant::now();
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let status = resp.status().as_u16();
    let routed = resp
        .headers()
        .get("x-routed-via")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if status >= 500 {
        tracing::warn!(%method, path = %uri.path(), status, routed_via = routed, ms, request_id = %id, "request");
    } else {
        tracing::debug!(%method, path = %uri.path(), status, routed_via = routed, ms, request_id = %id, "request");
    }
    resp
}

fn new_request_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 12];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// The client key's name, or 401.
fn authenticate(server: &Server, headers: &HeaderMap) -> Result<String, ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let Some(presented) = presented else {
        return Err(ApiError::Unauthorized(
            "missing client key: send `Authorization: Bearer <key>` (create a key with `freeway client-keys create NAME`)".into(),
        ));
    };
    server.ops.live().clients.check(presented).ok_or_else(|| {
        ApiError::Unauthorized("invalid client key: it is unknown or was revoked".into())
    })
}

async fn read_body(
    server: &Server,
    headers: &HeaderMap,
    body: Body,
) -> Result<bytes::Bytes, ApiError> {
    let limit = server.max_body;
    let too_large = || {
        ApiError::TooLarge(format!(
            "the request body is larger than the limit of {limit} bytes (max_body)"
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let within = server.body_read_timeout;
    match serve::collect_within(Limited::new(body, limit), within).await {
        Some(Ok(bytes)) => Ok(bytes),
        Some(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Some(Err(_)) => Err(ApiError::InvalidRequest(
            "the request body could not be read".into(),
        )),
        None => Err(ApiError::RequestTimeout(format!(
            "the request body did not arrive within {}s (http.body_read_timeout)",
            within.as_secs()
        ))),
    }
}

async fn chat(
    State(server): State<Arc<Server>>,
    axum::Extension(RequestId(request_id)): axum::Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match authenticate(&server, &headers) {
        Ok(client) => chat_as(&server, client, request_id, &headers, body).await,
        Err(e) => refused(e),
    }
}

/// An answer refused before routing: it made no upstream attempt, and says so too.
fn refused(e: ApiError) -> Response {
    let mut resp = e.into_response();
    resp.headers_mut()
        .insert("x-fallback-attempts", HeaderValue::from(0u32));
    resp
}

/// A chat-completions request from `client` (a client key's name, or the dashboard), answered.
pub(crate) async fn chat_as(
    server: &Server,
    client: String,
    request_id: String,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let bytes = match read_body(server, headers, body).await {
        Ok(b) => b,
        Err(e) => return refused(e),
    };
    // A large body (images, long documents) is parsed off the event loop, so one request
    // cannot stall the others.
    let parsed = if bytes.len() > LARGE_BODY {
        let _turn = LARGE_PARSES.acquire().await;
        tokio::task::spawn_blocking(move || openai::parse(&bytes))
            .await
            .unwrap_or_else(|_| Err("the request could not be parsed".into()))
    } else {
        openai::parse(&bytes)
    };
    let req = match parsed {
        Ok(r) => r,
        Err(msg) => return refused(ApiError::InvalidRequest(msg)),
    };
    let include_usage = req.facts.include_usage;
    let session = headers
        .get("x-session-id")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(256).collect());
    let id = format!("chatcmpl-{request_id}");
    let incoming = Incoming {
        req,
        client,
        request_id,
        session,
        surface: "chat",
    };
    match server.router.route(incoming).await {
        Ok(reply) => {
            let created = unix_now();
            let mut resp = match reply.body {
                router::Body::Answer(a) => {
                    let mut r = Response::new(Body::from(openai::answer_body(a, &id, created)));
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    r
                }
                router::Body::Stream(pieces) => {
                    let mut framer = openai::Framer::new(&id, &reply.model, created, include_usage);
                    let events = pieces
                        .filter_map(move |p| std::future::ready(framer.frame(p)))
                        .chain(futures_util::stream::once(async { openai::Framer::done() }))
                        .map(Ok::<_, std::convert::Infallible>);
                    sse_response(Body::from_stream(events))
                }
            };
            routed_headers(&mut resp, &reply.routed_via, reply.attempts);
            resp
        }
        Err(failed) => {
            let mut resp = failed.error.into_response();
            resp.headers_mut()
                .insert("x-fallback-attempts", HeaderValue::from(failed.attempts));
            resp
        }
    }
}

/// Seconds since the Unix epoch, for `created` fields.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A `text/event-stream` response that proxies do not buffer.
fn sse_response(body: Body) -> Response {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// `X-Routed-Via` and `X-Fallback-Attempts` (SPEC 2.2).
fn routed_headers(resp: &mut Response, routed_via: &str, attempts: u32) {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(routed_via) {
        h.insert("x-routed-via", v);
    }
    h.insert("x-fallback-attempts", HeaderValue::from(attempts));
}

async fn models(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(e) = authenticate(&server, &headers) {
        return e.into_response();
    }
    let all = q
        .get("all")
        .is_some_and(|v| v == "true" || v == "1" || v.is_empty());
    let (groups, any_available) = server.ops.model_groups(all);
    let mut data = Vec::with_capacity(groups.len() + 1);
    data.push(json!({
        "id": "auto",
        "object": "model",
        "created": 0,
        "owned_by": "freeway",
        "available": any_available,
        "providers": [],
    }));
    for g in groups {
        data.push(json!({
            "id": g.canonical,
            "object": "model",
            "created": 0,
            "owned_by": g.owned_by,
            "context_window": g.context,
            "capabilities": {"tools": g.tools, "vision": g.vision},
            "available": g.available,
            "enabled": g.enabled,
            "providers": g.providers,
        }));
    }
    axum::Json(json!({"object": "list", "data": Value::Array(data)})).into_response()
}

async fn readyz(State(server): State<Arc<Server>>) -> Response {
    match server.ops.readiness() {
        Ok(()) => axum::Json(json!({"status": "ready"})).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "unavailable", "reason": reason})),
        )
            .into_response(),
    }
}

/// Prometheus text. Open when `metrics.public`; else a Bearer token equal to `metrics.token`.
/// Client keys never open it.
async fn metrics(State(server): State<Arc<Server>>, headers: HeaderMap) -> Response {
    let m = &server.metrics;
    let admin = matches!(admin::session_of(&server, &headers), Ok(Some(_)));
    let allowed = m.public
        || admin
        || m.token.as_ref().is_some_and(|token| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .is_some_and(|given| {
                    crate::crypto::digest_eq(
                        &crate::crypto::hash_client_key(given),
                        &crate::crypto::hash_client_key(token.expose()),
                    )
                })
        });
    if !allowed {
        return ApiError::Unauthorized(
            "metrics need an admin session, `Authorization: Bearer <metrics.token>`, or metrics.public = true"
                .into(),
        )
        .into_response();
    }
    let body = server
        .router
        .log
        .metrics
        .render(&server.ops.cooldown_counts(), &server.ops.quota_left());
    let mut resp = Response::new(Body::from(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}
