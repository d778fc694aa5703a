//! The HTTP surface: the only module that knows axum. Routes, client-key auth, request ids,
//! the body limit, and turning router results and errors into responses.

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use crate::app::App;
use crate::error::ApiError;
use crate::ledger::Ask;
use crate::router::{self, Incoming, ReplyBody};

/// Bodies larger than this are parsed on the blocking pool.
const LARGE_BODY: usize = 256 * 1024;

/// The request id, set by the middleware for handlers and the log line.
#[derive(Clone)]
pub struct RequestId(pub String);

/// The whole router.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route("/models", get(models))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(request_id))
        .with_state(app)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, axum::Json(self.body())).into_response();
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
fn authenticate(app: &App, headers: &HeaderMap) -> Result<String, ApiError> {
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
    app.clients.check(presented).ok_or_else(|| {
        ApiError::Unauthorized("invalid client key: it is unknown or was revoked".into())
    })
}

async fn read_body(app: &App, headers: &HeaderMap, body: Body) -> Result<bytes::Bytes, ApiError> {
    let limit = app.config.max_body;
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
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(_) => Err(ApiError::InvalidRequest(
            "the request body could not be read".into(),
        )),
    }
}

async fn chat(
    State(app): State<Arc<App>>,
    axum::Extension(RequestId(request_id)): axum::Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Answers refused before routing made no upstream attempt; they say so too.
    let refused = |e: ApiError| {
        let mut resp = e.into_response();
        resp.headers_mut()
            .insert("x-fallback-attempts", HeaderValue::from(0u32));
        resp
    };
    let client = match authenticate(&app, &headers) {
        Ok(c) => c,
        Err(e) => return refused(e),
    };
    let bytes = match read_body(&app, &headers, body).await {
        Ok(b) => b,
        Err(e) => return refused(e),
    };
    // A large body (images, long documents) is parsed off the event loop, so one request
    // cannot stall the others.
    let parsed = if bytes.len() > LARGE_BODY {
        tokio::task::spawn_blocking(move || crate::wire::openai::parse(&bytes))
            .await
            .unwrap_or_else(|_| Err("the request could not be parsed".into()))
    } else {
        crate::wire::openai::parse(&bytes)
    };
    let req = match parsed {
        Ok(r) => r,
        Err(msg) => return refused(ApiError::InvalidRequest(msg)),
    };
    let session = headers
        .get("x-session-id")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(256).collect());
    let incoming = Incoming {
        req,
        client,
        request_id,
        session,
    };
    match router::chat(&app, incoming).await {
        Ok(reply) => {
            let mut resp = match reply.body {
                ReplyBody::Json(b) => {
                    let mut r = Response::new(Body::from(b));
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    r
                }
                ReplyBody::Stream(s) => {
                    let mut r = Response::new(Body::from_stream(s));
                    let h = r.headers_mut();
                    h.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/event-stream"),
                    );
                    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
                    r
                }
            };
            let h = resp.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&reply.routed_via) {
                h.insert("x-routed-via", v);
            }
            h.insert("x-fallback-attempts", HeaderValue::from(reply.attempts));
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

/// Whether some enabled key of the model's provider could take a small request now.
fn available(app: &App, model_index: usize) -> bool {
    let m = &app.catalog.models[model_index];
    let p = app.catalog.provider_of(m);
    app.keys
        .usable(&p.id)
        .iter()
        .any(|k| app.ledger.check_only(&Ask::new(p, m, &k.id, 1)).is_ok())
}

async fn models(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(e) = authenticate(&app, &headers) {
        return e.into_response();
    }
    let all = q
        .get("all")
        .is_some_and(|v| v == "true" || v == "1" || v.is_empty());
    let catalog = &app.catalog;
    let chain = app.chain();
    // Canonical id → serving models, in chain order.
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for link in chain.iter() {
        let m = &catalog.models[link.model];
        let has_key = app.keys.has_usable(&catalog.provider_of(m).id);
        if !(all || link.enabled && has_key) {
            continue;
        }
        let entry = groups.entry(m.canonical.as_str()).or_default();
        if entry.is_empty() {
            order.push(m.canonical.as_str());
        }
        entry.push(link.model);
    }
    let mut data = Vec::with_capacity(order.len() + 1);
    let any_available = chain.iter().any(|l| l.enabled && available(&app, l.model));
    data.push(json!({
        "id": "auto",
        "object": "model",
        "created": 0,
        "owned_by": "freeway",
        "available": any_available,
        "providers": [],
    }));
    for canonical in order {
        let members = &groups[canonical];
        let first = &catalog.models[members[0]];
        let enabled: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&i| chain.iter().any(|l| l.model == i && l.enabled))
            .collect();
        data.push(json!({
            "id": canonical,
            "object": "model",
            "created": 0,
            "owned_by": catalog.provider_of(first).id,
            "context_window": members.iter().map(|&i| catalog.models[i].context).max().unwrap_or(0),
            "capabilities": {
                "tools": members.iter().any(|&i| catalog.models[i].tools),
                "vision": members.iter().any(|&i| catalog.models[i].vision),
            },
            "available": enabled.iter().any(|&i| available(&app, i)),
            "enabled": !enabled.is_empty(),
            "providers": members.iter().map(|&i| catalog.reference(i)).collect::<Vec<_>>(),
        }));
    }
    axum::Json(json!({"object": "list", "data": Value::Array(data)})).into_response()
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    let chain = app.chain();
    let enabled: Vec<usize> = chain
        .iter()
        .filter(|l| l.enabled)
        .map(|l| l.model)
        .collect();
    let has_keys = enabled.iter().any(|&i| {
        app.keys
            .has_usable(&app.catalog.provider_of(&app.catalog.models[i]).id)
    });
    if enabled.iter().any(|&i| available(&app, i)) {
        return axum::Json(json!({"status": "ready"})).into_response();
    }
    let reason = if !has_keys {
        "no enabled, valid provider key: add one with `freeway keys add <provider>`"
    } else {
        "every enabled model is capped or cooling down right now"
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({"status": "unavailable", "reason": reason})),
    )
        .into_response()
}

/// Prometheus text. Open when `metrics.public`; else a Bearer token equal to `metrics.token`.
/// Client keys never open it.
async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let allowed = app.config.metrics.public
        || app.config.metrics.token.as_ref().is_some_and(|token| {
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
            "metrics need `Authorization: Bearer <metrics.token>` (or set metrics.public = true)"
                .into(),
        )
        .into_response();
    }
    let mut cooling: BTreeMap<String, i64> = BTreeMap::new();
    for (scope, _) in app.ledger.cooldowns() {
        *cooling.entry(scope.provider).or_default() += 1;
    }
    let cooling: Vec<(String, i64)> = cooling.into_iter().collect();
    let mut remaining = Vec::new();
    for link in app.chain().iter().filter(|l| l.enabled) {
        let m = &app.catalog.models[link.model];
        let p = app.catalog.provider_of(m);
        for k in app.keys.usable(&p.id) {
            let u = app
                .ledger
                .usage(&crate::ledger::Scope::model(&p.id, &m.id, &k.id), p.reset);
            let windows = [
                ("rpm", m.limits.rpm, u.minute_requests),
                ("rpd", m.limits.rpd, u.day_requests),
                ("tpm", m.limits.tpm, u.minute_tokens),
                ("tpd", m.limits.tpd, u.day_tokens),
            ];
            for (window, cap, used) in windows {
                if let Some(cap) = cap {
                    remaining.push((
                        p.id.clone(),
                        m.id.clone(),
                        crate::ledger::short(&k.id).to_string(),
                        window.to_string(),
                        cap.saturating_sub(used) as i64,
                    ));
                }
            }
        }
    }
    let body = app.log.metrics.render(&cooling, &remaining);
    let mut resp = Response::new(Body::from(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}
