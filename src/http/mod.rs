//! The HTTP surface: the only module that knows axum. Routes, client-key auth, request ids,
//! the body limit, and the client surfaces' requests and answers as HTTP (the pure
//! translation lives in `wire`).

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{LengthLimitError, Limited};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::config::Metrics;
use crate::error::ApiError;
use crate::ops::Ops;
use crate::router::Router;
use crate::wire::openai;

mod admin;
mod embeddings;
mod gemini;
pub mod idempotent;
pub mod ollama;
pub mod serve;
mod surfaces;

pub use surfaces::Surface;

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
    /// Where unknown `claude-*` models go (`[anthropic]`).
    pub families: crate::config::Families,
    /// Origins browsers may call the API from.
    pub cors_origins: Vec<String>,
    /// Where unknown `gemini-*` models go (`[gemini_api]`).
    pub gemini_families: crate::config::GeminiFamilies,
    /// `[embeddings]`: what `auto` means on `/v1/embeddings`.
    pub embeddings: crate::config::Embeddings,
    /// Answers kept for `Idempotency-Key` retries (SPEC 2.8).
    pub idempotency: Arc<idempotent::Idempotency>,
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
    let api = axum::Router::new()
        .route("/v1/chat/completions", post(surfaces::chat))
        .route("/chat/completions", post(surfaces::chat))
        .route("/v1/messages", post(surfaces::messages))
        .route("/v1/messages/count_tokens", post(surfaces::count_tokens))
        .route("/v1/responses", post(surfaces::responses))
        .route("/v1/completions", post(surfaces::completions))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/embeddings", post(embeddings::embeddings))
        .route("/v1/models", get(models))
        .route("/models", get(models))
        .route("/v1/models/{*id}", get(model).post(gemini::action))
        .route("/v1beta/models", get(gemini::models))
        .route(
            "/v1beta/models/{*id}",
            get(gemini::model).post(gemini::action),
        )
        .route("/v1/quota", get(quota))
        .merge(ollama::api().layer(axum::Extension(ollama::Access::Keyed)))
        .fallback(not_found);
    let cors = cors(&server.cors_origins);
    let inner = axum::Router::new()
        .route("/", get(root))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(admin::routes())
        .merge(api)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(request_id))
        .with_state(server);
    // Paths are tidied, and CORS preflights answered, before routing: the layers of an outer
    // router run first.
    // (The last layer added runs first: paths are tidied before CORS judges them.)
    let outer = axum::Router::new().fallback_service(inner);
    let outer = match cors {
        Some(cors) => outer.layer(cors),
        None => outer,
    };
    outer.layer(middleware::map_request(tidy_path))
}

/// CORS for the API (never the dashboard) when `[http] cors_origins` names origins; `"*"`
/// allows any. Preflights are answered; Freeway's own headers are readable by the page.
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let any = origins.iter().any(|o| o == "*");
    let listed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok())
        .collect();
    let allow = AllowOrigin::predicate(move |origin, request| {
        let path = request.uri.path();
        let dashboard = path == "/admin" || path.starts_with("/admin/");
        !dashboard && (any || listed.contains(origin))
    });
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                axum::http::Method::GET,
                axum::http::Method::POST,
                axum::http::Method::OPTIONS,
            ])
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers([
                header::HeaderName::from_static("x-routed-via"),
                header::HeaderName::from_static("x-fallback-attempts"),
                header::HeaderName::from_static("x-request-id"),
                header::HeaderName::from_static("request-id"),
                header::RETRY_AFTER,
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// A doubled slash or a trailing one in a path is tolerated: `/v1//chat/completions/` is
/// `/v1/chat/completions`.
async fn tidy_path(mut req: Request) -> Request {
    let path = req.uri().path();
    if path.len() <= 1 || !(path.ends_with('/') || path.contains("//")) {
        return req;
    }
    let mut clean = String::with_capacity(path.len());
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        clean.push('/');
        clean.push_str(segment);
    }
    if clean.is_empty() {
        clean.push('/');
    }
    if let Some(q) = req.uri().query() {
        clean.push('?');
        clean.push_str(q);
    }
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = clean.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}

/// `GET /` (and `HEAD /`, which Claude Code sends first): where things are.
async fn root() -> &'static str {
    "Freeway is running: OpenAI base URL /v1, Anthropic base URL /, dashboard /admin\n"
}

/// The headers an error carries on every surface: `Retry-After` when there is a time to try
/// again, and `x-should-retry: false` on a 401/403 (the SDKs and agent CLIs would otherwise
/// retry a wrong, expired or revoked key, or a model the key may not use, for minutes).
pub(crate) fn error_headers(e: &ApiError, headers: &mut HeaderMap) {
    if let Some(d) = e.retry_after() {
        let secs = d.as_secs_f64().ceil().max(1.0) as u64;
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if matches!(e.status(), 401 | 403) {
        headers.insert("x-should-retry", HeaderValue::from_static("false"));
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, axum::Json(openai::error_body(&self))).into_response();
        error_headers(&self, resp.headers_mut());
        resp
    }
}

/// A route Freeway does not serve: 404 naming what exists, to a client that authenticated
/// (401 otherwise, so probes learn nothing). Dashboard paths answer a plain 404.
async fn not_found(
    State(server): State<Arc<Server>>,
    axum::Extension(RequestId(request_id)): axum::Extension<RequestId>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let path = uri.path();
    if path == "/admin" || path.starts_with("/admin/") {
        return (
            StatusCode::NOT_FOUND,
            "no such page; the dashboard is at /admin\n",
        )
            .into_response();
    }
    // Anthropic clients (`/v1/messages/batches`, ...) and Gemini's get their own error shape.
    let surface = if path.starts_with("/v1/messages") {
        Surface::Messages
    } else if path.starts_with("/v1beta") {
        Surface::Gemini
    } else {
        Surface::Chat
    };
    if let Err(e) = authenticate(&server, &headers) {
        return surface.error(e, &request_id, 0);
    }
    let shown: String = path.chars().take(200).collect();
    let e = ApiError::NotFound(format!(
        "Freeway does not serve {shown}; it serves POST /v1/chat/completions, /v1/messages, /v1/messages/count_tokens, /v1/responses, /v1/completions, /v1/embeddings, /v1beta/models/{{model}}:generateContent (Gemini's API) and GET /v1/models, /v1/models/{{id}}"
    ));
    surface.error(e, &request_id, 0)
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
fn authenticate(
    server: &Server,
    headers: &HeaderMap,
) -> Result<Arc<crate::keys::Client>, ApiError> {
    check_key(server, presented_key(headers))
}

/// The client key a request carries in its headers: `Authorization: Bearer`, `x-api-key`
/// (Anthropic's clients) or `x-goog-api-key` (Google's).
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .or_else(|| headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The client of a presented key, or 401.
fn check_key(
    server: &Server,
    presented: Option<&str>,
) -> Result<Arc<crate::keys::Client>, ApiError> {
    let Some(presented) = presented else {
        return Err(ApiError::Unauthorized(
            "missing client key: send `Authorization: Bearer <key>` (or `x-api-key`, or Google's `x-goog-api-key`; create a key with `freeway client-keys create NAME`)".into(),
        ));
    };
    let client = server.ops.live().clients.check(presented).ok_or_else(|| {
        ApiError::Unauthorized("invalid client key: it is unknown or was revoked".into())
    })?;
    if client.limits.expired(server.router.ledger.now_ms()) {
        let at = client
            .limits
            .expires_ms
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        return Err(ApiError::Unauthorized(format!(
            "the client key `{}` expired at {at}; ask for a new one, or extend it (`freeway client-keys set {} --expires …`)",
            client.name, client.name
        )));
    }
    Ok(client)
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

/// A chat-completions request from `client` (a client key's name, or the dashboard), answered.
pub(crate) async fn chat_as(
    server: &Arc<Server>,
    client: Arc<crate::keys::Client>,
    request_id: String,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    surfaces::answer_as(server, Surface::Chat, client, request_id, headers, body).await
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
/// A JSON answer from the router with the routing headers of SPEC 2.2.
fn routed_json(body: impl Into<Body>, routed_via: &str, attempts: u32) -> Response {
    let mut resp = Response::new(body.into());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    routed_headers(&mut resp, routed_via, attempts);
    resp
}

fn routed_headers(resp: &mut Response, routed_via: &str, attempts: u32) {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(routed_via) {
        h.insert("x-routed-via", v);
    }
    h.insert("x-fallback-attempts", HeaderValue::from(attempts));
}

fn model_json(g: &crate::ops::ModelGroup) -> Value {
    let mut v = json!({
        "id": g.canonical,
        "object": "model",
        "created": 0,
        "owned_by": g.owned_by,
        "context_window": g.context,
        "capabilities": {"tools": g.tools, "vision": g.vision, "embeddings": g.embedding.is_some()},
        "available": g.available,
        "enabled": g.enabled,
        "providers": g.providers,
    });
    if let Some(dims) = g.embedding {
        v["dimensions"] = dims.into();
    }
    if !g.retired.is_empty() {
        v["retired"] = g
            .retired
            .iter()
            .map(|(r, why)| (r.clone(), json!(why)))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    v
}

fn auto_json(available: bool) -> Value {
    json!({
        "id": "auto",
        "object": "model",
        "created": 0,
        "owned_by": "freeway",
        "available": available,
        "providers": [],
    })
}

async fn models(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if gemini::google_client(&headers, &q) {
        return gemini::models(State(server), headers, Query(q)).await;
    }
    let client = match authenticate(&server, &headers) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let all = q
        .get("all")
        .is_some_and(|v| v == "true" || v == "1" || v.is_empty());
    let (groups, any_available) = server.ops.model_groups(all);
    let groups = allowed_groups(&server, &client, groups);
    if anthropic_client(&headers) {
        // Anthropic's list shape for Anthropic clients (Claude Code asks with its SDK).
        let mut ids = vec!["auto".to_string()];
        // Chat models only: Anthropic clients have no embeddings.
        ids.extend(
            groups
                .iter()
                .filter(|g| g.embedding.is_none())
                .map(|g| g.canonical.clone()),
        );
        let data: Vec<Value> = ids.iter().map(|id| anthropic_model_json(id, id)).collect();
        return axum::Json(json!({
            "data": data,
            "has_more": false,
            "first_id": ids.first(),
            "last_id": ids.last(),
        }))
        .into_response();
    }
    let mut data = Vec::with_capacity(groups.len() + 1);
    data.push(auto_json(any_available));
    data.extend(groups.iter().map(model_json));
    axum::Json(json!({"object": "list", "data": Value::Array(data)})).into_response()
}

/// A request from an Anthropic client (its SDKs send `anthropic-version`).
fn anthropic_client(headers: &HeaderMap) -> bool {
    headers.contains_key("anthropic-version")
}

/// A model in Anthropic's shape.
fn anthropic_model_json(id: &str, display: &str) -> Value {
    json!({"type": "model", "id": id, "display_name": display, "created_at": "2025-01-01T00:00:00Z"})
}

/// `GET /v1/models/{id}` (the SDKs' `models.retrieve`): a canonical id, `auto`, or any
/// `provider/upstream-id` or upstream id of a model.
async fn model(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    if gemini::google_client(&headers, &q) {
        return gemini::model(State(server), headers, Query(q), axum::extract::Path(id)).await;
    }
    let client = match authenticate(&server, &headers) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let (groups, any_available) = server.ops.model_groups(true);
    let groups = allowed_groups(&server, &client, groups);
    if anthropic_client(&headers) {
        // A `claude-*` id `/v1/messages` accepts is one here too: it names what serves it.
        let snap = server.ops.live().snapshot();
        let known = |m: &str| {
            m == "auto"
                || groups.iter().any(|g| g.canonical == m)
                || snap.catalog.model(m).is_some()
        };
        let target = server.families.map(&id, known);
        if known(&id) || (target != id && known(&target)) {
            let display = if target == id {
                id.clone()
            } else {
                format!("{id} (served by {target})")
            };
            return axum::Json(anthropic_model_json(&id, &display)).into_response();
        }
        let e = ApiError::ModelNotFound(format!(
            "the model `{id}` does not exist; GET /v1/models lists what is available"
        ));
        return Surface::Messages.error(e, "", 0);
    }
    if id == "auto" {
        return axum::Json(auto_json(any_available)).into_response();
    }
    let found = groups.iter().find(|g| g.canonical == id).or_else(|| {
        groups.iter().find(|g| {
            g.providers
                .iter()
                .any(|r| *r == id || r.split_once('/').is_some_and(|(_, up)| up == id))
        })
    });
    match found {
        Some(g) => axum::Json(model_json(g)).into_response(),
        None => ApiError::ModelNotFound(format!(
            "the model `{id}` does not exist; GET /v1/models lists what is available"
        ))
        .into_response(),
    }
}

/// The model groups a client key may use (SPEC 3.8), each with only the serving models it may.
fn allowed_groups(
    server: &Server,
    client: &crate::keys::Client,
    groups: Vec<crate::ops::ModelGroup>,
) -> Vec<crate::ops::ModelGroup> {
    let patterns = &client.limits.models;
    if patterns.is_empty() {
        return groups;
    }
    let snap = server.ops.live().snapshot();
    let may = |reference: &str| may_use(&snap.catalog, patterns, reference);
    groups
        .into_iter()
        .filter_map(|mut g| {
            g.providers.retain(|r| may(r));
            (!g.providers.is_empty()).then_some(g)
        })
        .collect()
}

/// Whether a key allowed `patterns` may use the model `reference` (`provider/upstream-id`).
fn may_use(catalog: &crate::catalog::Catalog, patterns: &[String], reference: &str) -> bool {
    catalog
        .model(reference)
        .is_some_and(|m| crate::router::clients::allows(patterns, m))
}

/// A moment as RFC 3339 UTC text (`null` when there is none).
fn when(ms: Option<i64>) -> Value {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map_or(Value::Null, |t| {
            json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        })
}

/// `GET /v1/quota`: what every servable model has left (SPEC 3.7).
async fn quota(State(server): State<Arc<Server>>, headers: HeaderMap) -> Response {
    let client = match authenticate(&server, &headers) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let ops = Arc::clone(&server.ops);
    let models = match crate::offload::run(move || ops.headroom()).await {
        Ok(m) => m,
        Err(_) => {
            return ApiError::UpstreamFailed("headroom could not be computed".into())
                .into_response();
        }
    };
    let snap = server.ops.live().snapshot();
    let patterns = &client.limits.models;
    let data: Vec<Value> = models
        .iter()
        .filter(|h| {
            patterns.is_empty()
                || may_use(
                    &snap.catalog,
                    patterns,
                    &format!("{}/{}", h.provider, h.model),
                )
        })
        .map(|h| {
            json!({
                "model": h.model,
                "provider": h.provider,
                "available": h.available,
                "pools": h.pools.iter().map(|p| json!({
                    "scope": p.scope,
                    "pool": p.pool,
                    "window": p.window,
                    "unit": p.unit,
                    "limit": p.limit,
                    "used": p.used,
                    "remaining": p.remaining,
                    "resets_at": when(p.resets_at),
                })).collect::<Vec<_>>(),
                "exhausts_at": when(h.exhausts_at),
            })
        })
        .collect();
    axum::Json(json!({"object": "list", "data": data, "client": client_quota(&server, &client)}))
        .into_response()
}

/// A client key's own limits and use (SPEC 3.8), for `/v1/quota`.
fn client_quota(server: &Server, client: &crate::keys::Client) -> Value {
    let l = &client.limits;
    let u = server.ops.client_usage(&client.name);
    let limit = |window: &str, unit: &str, cap: Option<u64>, used: u64, resets: Option<i64>| {
        cap.map(|cap| {
            json!({"window": window, "unit": unit, "limit": cap, "used": used,
                "remaining": cap.saturating_sub(used), "resets_at": when(resets)})
        })
    };
    let limits: Vec<Value> = [
        limit("minute", "requests", l.rpm, u.minute_requests, None),
        limit(
            "day",
            "requests",
            l.rpd,
            u.day_requests,
            Some(u.day_resets_ms),
        ),
        limit("day", "tokens", l.tpd, u.day_tokens, Some(u.day_resets_ms)),
        limit(
            "month",
            "tokens",
            l.tpmo,
            u.month_tokens,
            Some(u.month_resets_ms),
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    json!({
        "name": client.name,
        "limits": limits,
        "concurrent": l.concurrent,
        "models": l.models,
        "expires_at": when(l.expires_ms),
        "weight": l.weight(),
        "used_today": {"requests": u.day_requests, "tokens": u.day_tokens},
    })
}

async fn readyz(State(server): State<Arc<Server>>) -> Response {
    // With replicas (SPEC 5.1): whether the ledger is shared, or a local share while Redis is
    // away (still ready: the replica serves, within its share).
    let cluster = server.ops.cluster().map(|c| {
        let h = c.health();
        json!({
            "ledger": h.ledger,
            "replicas": h.replicas,
            "reason": h.why,
            "detail": h.line(),
            "waiting_for_redis": h.pending,
            "dropped": h.dropped,
        })
    });
    match server.ops.readiness() {
        Ok(()) => match cluster {
            Some(c) => axum::Json(json!({"status": "ready", "cluster": c})).into_response(),
            None => axum::Json(json!({"status": "ready"})).into_response(),
        },
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
    let mut allowed = m.public
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
    // An admin session opens it too (the store is asked off the event loop).
    if !allowed {
        allowed = matches!(admin::session_of(&server, &headers).await, Ok(Some(_)));
    }
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
