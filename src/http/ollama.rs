//! Ollama's API over HTTP (SPEC 2.7): the `/api` routes on the main port behind the client
//! key, and the optional second listener (`[ollama] listen`) that serves nothing but them (and
//! `/`, which Ollama's clients probe), without a client key.
//!
//! `/api/chat` and `/api/generate` take the one path of every surface (`surfaces::answer_as`);
//! the model list, `show`, `ps` and `version` are answered here. Freeway serves models, it does
//! not store them: `pull`, `push`, `create`, `copy`, `delete` and blobs answer 501 saying so.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

use super::surfaces::{Surface, answer_as, ollama_model};
use super::{LARGE_BODY, RequestId, Server, authenticate, read_body};
use crate::error::ApiError;
use crate::keys::Client;
use crate::wire::ollama;

/// Who the requests on a set of Ollama routes come from.
#[derive(Debug, Clone)]
pub enum Access {
    /// The main port: a client key, as on every API route.
    Keyed,
    /// The second listener: no key asked. Requests act as the client key named `as_key` (its
    /// limits apply), or, unset, as an unnamed local client. `require_key`: off loopback, a
    /// request must present that key itself.
    Listener {
        as_key: Option<String>,
        require_key: bool,
    },
}

/// The name the key-less listener's requests go by when `[ollama] api_key` is unset.
pub const LOCAL_CLIENT: &str = "ollama-local";

/// The `/api` routes, for either listener (the `Access` comes as an extension).
pub(super) fn api() -> axum::Router<Arc<Server>> {
    axum::Router::new()
        .route("/api/version", get(version))
        .route("/api/tags", get(tags))
        .route("/api/show", post(show))
        .route("/api/ps", get(ps))
        .route("/api/chat", post(chat))
        .route("/api/generate", post(generate))
        .route("/api/embed", post(embed))
        .route("/api/embeddings", post(embed_legacy))
        .route("/api/pull", post(not_stored))
        .route("/api/push", post(not_stored))
        .route("/api/create", post(not_stored))
        .route("/api/copy", post(not_stored))
        .route("/api/delete", delete(not_stored))
        .route("/api/blobs/{digest}", any(not_stored))
        .route("/api", any(unknown))
        .route("/api/{*rest}", any(unknown))
}

/// The second listener's whole router: `/` and the `/api` routes, nothing else.
pub fn listener_routes(server: Arc<Server>, access: Access) -> axum::Router {
    let origins = Arc::new(server.cors_origins.clone());
    let cors = super::cors(&server.cors_origins);
    let inner = axum::Router::new()
        .route("/", get(|| async { "Ollama is running" }))
        .merge(api())
        .fallback(only_api)
        .method_not_allowed_fallback(super::method_not_allowed)
        .layer(Extension(access))
        .layer(middleware::from_fn(super::request_id))
        .with_state(server);
    let outer = axum::Router::new().fallback_service(inner);
    let outer = match cors {
        Some(cors) => outer.layer(cors),
        None => outer,
    };
    outer
        .layer(middleware::from_fn(move |req, next| {
            same_machine_pages(Arc::clone(&origins), req, next)
        }))
        .layer(middleware::map_request(super::tidy_path))
}

/// Without a key, any web page the user opens could spend their quota through the listener
/// (a browser sends a cross-site POST even when it hides the answer). As Ollama does, a request
/// from a page is served only when the page is on this machine (`localhost`, `127.0.0.1`,
/// `[::1]`) or its origin is in `[http] cors_origins`.
async fn same_machine_pages(
    allowed: Arc<Vec<String>>,
    req: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return next.run(req).await;
    };
    let origin = origin.to_str().unwrap_or_default().trim_end_matches('/');
    let uri = origin.parse::<axum::http::Uri>().ok();
    let host = uri.as_ref().and_then(|u| u.host()).unwrap_or_default();
    let local = matches!(host, "localhost" | "127.0.0.1" | "[::1]");
    if local
        || allowed
            .iter()
            .any(|o| o == "*" || o.trim_end_matches('/') == origin)
    {
        return next.run(req).await;
    }
    let shown: String = origin.chars().take(100).collect();
    let mut r = error(&ApiError::NotFound(format!(
        "requests from web pages at {shown} are not served by the key-less Ollama listener; add the origin to [http] cors_origins"
    )));
    *r.status_mut() = StatusCode::FORBIDDEN;
    r
}

/// Serve the second listener until `shutdown` resolves, with the main port's clocks and cap.
pub async fn serve(
    server: Arc<Server>,
    listener: tokio::net::TcpListener,
    access: Access,
    limits: super::serve::Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: std::time::Duration,
) {
    let stop = tokio_util::sync::CancellationToken::new();
    let signal = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        signal.cancel();
    });
    super::serve::run(
        listener_routes(server, access),
        listener,
        limits,
        stop,
        grace,
    )
    .await;
}

/// An error the way Ollama answers one: `{"error": "..."}` with the status.
pub(super) fn error(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (status, Json(ollama::error_body(e))).into_response();
    super::error_headers(e, r.headers_mut());
    r
}

/// A newline-delimited JSON stream that proxies do not buffer.
pub(super) fn ndjson(body: Body) -> Response {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// The client a request acts as.
fn who(server: &Server, headers: &HeaderMap, access: &Access) -> Result<Arc<Client>, ApiError> {
    let (name, require_key) = match access {
        Access::Keyed => return authenticate(server, headers),
        Access::Listener { as_key: None, .. } => return Ok(Client::unlimited(LOCAL_CLIENT)),
        Access::Listener {
            as_key: Some(name),
            require_key,
        } => (name, *require_key),
    };
    if require_key {
        let client = authenticate(server, headers)?;
        if client.name != *name {
            return Err(ApiError::Unauthorized(format!(
                "this Ollama listener takes only the client key named `{name}` ([ollama] api_key)"
            )));
        }
        return Ok(client);
    }
    let client = server.ops.live().clients.named(name).ok_or_else(|| {
        ApiError::Unauthorized(format!(
            "the Ollama listener acts as the client key `{name}` ([ollama] api_key), which does not exist or was revoked; create it with `freeway client-keys create {name}`"
        ))
    })?;
    if client.limits.expired(server.router.ledger.now_ms()) {
        return Err(ApiError::Unauthorized(format!(
            "the client key `{name}` that the Ollama listener acts as ([ollama] api_key) has expired"
        )));
    }
    Ok(client)
}

/// `GET /api/version`.
async fn version(
    State(server): State<Arc<Server>>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = who(&server, &headers, &access) {
        return error(&e);
    }
    Json(json!({"version": ollama::VERSION})).into_response()
}

/// A model group as the Ollama list describes it.
fn model_of(g: &crate::ops::ModelGroup) -> ollama::Model<'_> {
    ollama::Model {
        id: &g.canonical,
        context: Some(g.context),
        tools: g.tools,
        vision: g.vision,
        embedding: g.embedding,
        providers: &g.providers,
    }
}

/// `auto`, the routing chain, as a model.
fn auto_model() -> ollama::Model<'static> {
    ollama::Model {
        id: "auto",
        context: None,
        tools: true,
        vision: true,
        embedding: None,
        providers: &[],
    }
}

/// `GET /api/tags`: `auto`, then every servable model this client may use.
async fn tags(
    State(server): State<Arc<Server>>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
) -> Response {
    let client = match who(&server, &headers, &access) {
        Ok(c) => c,
        Err(e) => return error(&e),
    };
    let (groups, _) = server.ops.model_groups(false);
    let groups = super::allowed_groups(&server, &client, groups);
    let mut models = Vec::with_capacity(groups.len() + 1);
    models.push(ollama::tag(&auto_model()));
    models.extend(groups.iter().map(|g| ollama::tag(&model_of(g))));
    Json(json!({ "models": models })).into_response()
}

#[derive(Deserialize)]
struct ShowBody {
    #[serde(default)]
    model: Option<String>,
    /// What older clients send.
    #[serde(default)]
    name: Option<String>,
}

/// `POST /api/show`: what a model is (context length, capabilities).
async fn show(
    State(server): State<Arc<Server>>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let client = match who(&server, &headers, &access) {
        Ok(c) => c,
        Err(e) => return error(&e),
    };
    let bytes = match read_body(&server, &headers, body).await {
        Ok(b) => b,
        Err(e) => return error(&e),
    };
    let requested = match serde_json::from_slice::<ShowBody>(&bytes) {
        Ok(ShowBody { model: Some(m), .. }) | Ok(ShowBody { name: Some(m), .. }) => m,
        Ok(_) => {
            return error(&ApiError::InvalidRequest(
                "`model` is required: the name of a model (GET /api/tags lists them)".into(),
            ));
        }
        Err(e) => {
            return error(&ApiError::InvalidRequest(format!(
                "the request body must be a JSON object with `model` ({e})"
            )));
        }
    };
    let (groups, _) = server.ops.model_groups(true);
    let groups = super::allowed_groups(&server, &client, groups);
    // Chat and embedding models alike, by any id that names them.
    let names = |g: &crate::ops::ModelGroup, id: &str| {
        g.canonical == id
            || g.providers
                .iter()
                .any(|r| *r == id || r.split_once('/').is_some_and(|(_, up)| up == id))
    };
    let known = |id: &str| id == "auto" || groups.iter().any(|g| names(g, id));
    let canonical = groups.iter().map(|g| g.canonical.as_str());
    let Some(id) = ollama::resolve(&requested, known, canonical) else {
        return error(&ollama::not_found(&requested));
    };
    if id == "auto" {
        return Json(ollama::show(&auto_model())).into_response();
    }
    let found = groups.iter().find(|g| names(g, &id));
    match found {
        Some(g) => Json(ollama::show(&model_of(g))).into_response(),
        None => error(&ollama::not_found(&requested)),
    }
}

/// `GET /api/ps`: nothing is loaded here (models run at their providers), so the list is empty.
async fn ps(
    State(server): State<Arc<Server>>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = who(&server, &headers, &access) {
        return error(&e);
    }
    Json(json!({"models": []})).into_response()
}

async fn chat(
    State(server): State<Arc<Server>>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mode = ollama::Mode::Chat;
    generation(&server, mode, request_id, &access, &headers, body).await
}

async fn generate(
    State(server): State<Arc<Server>>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mode = ollama::Mode::Generate;
    generation(&server, mode, request_id, &access, &headers, body).await
}

/// `/api/chat` or `/api/generate`: a load call (no prompt, no messages) is answered at once;
/// anything else takes the path every surface takes.
async fn generation(
    server: &Arc<Server>,
    mode: ollama::Mode,
    request_id: String,
    access: &Access,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let surface = match mode {
        ollama::Mode::Chat => Surface::OllamaChat,
        ollama::Mode::Generate => Surface::OllamaGenerate,
    };
    let client = match who(server, headers, access) {
        Ok(c) => c,
        Err(e) => return surface.error(e, &request_id, 0),
    };
    let bytes = match read_body(server, headers, body).await {
        Ok(b) => b,
        Err(e) => return surface.error(e, &request_id, 0),
    };
    // A load call is small; a large body is a real request (parsed off the event loop).
    if bytes.len() <= LARGE_BODY {
        if let Some(load) = ollama::load_call(&bytes, mode) {
            let catalog = Arc::clone(&server.ops.live().snapshot().catalog);
            if ollama_model(&catalog, &load.model).is_none() {
                return surface.error(ollama::not_found(&load.model), &request_id, 0);
            }
            return Json(ollama::load_body(mode, &load.model, load.unload)).into_response();
        }
    }
    answer_as(
        server,
        surface,
        client,
        request_id,
        headers,
        Body::from(bytes),
    )
    .await
}

/// `POST /api/embed`: embeddings (SPEC 2.5) in Ollama's shape.
async fn embed(
    State(server): State<Arc<Server>>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    embedding(&server, request_id, &access, &headers, body, false).await
}

/// `POST /api/embeddings`: the older form (one `prompt`, one `embedding`).
async fn embed_legacy(
    State(server): State<Arc<Server>>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    embedding(&server, request_id, &access, &headers, body, true).await
}

async fn embedding(
    server: &Arc<Server>,
    request_id: String,
    access: &Access,
    headers: &HeaderMap,
    body: Body,
    legacy: bool,
) -> Response {
    let client = match who(server, headers, access) {
        Ok(c) => c,
        Err(e) => return error(&e),
    };
    let bytes = match read_body(server, headers, body).await {
        Ok(b) => b,
        Err(e) => return error(&e),
    };
    let run = {
        let (server, client) = (Arc::clone(server), Arc::clone(&client));
        move |bytes| {
            Box::pin(async move { embed_bytes(&server, client, request_id, bytes, legacy).await })
                as futures_util::future::BoxFuture<'static, Response>
        }
    };
    let route = if legacy {
        "ollama-embeddings"
    } else {
        "ollama-embed"
    };
    let refuse = |e: ApiError| error(&e);
    super::idempotent::guard(server, &client.name, route, headers, bytes, run, refuse).await
}

/// An embedding request whose body has arrived, answered.
async fn embed_bytes(
    server: &Server,
    client: Arc<Client>,
    request_id: String,
    bytes: bytes::Bytes,
    legacy: bool,
) -> Response {
    let e = match ollama::parse_embed(&bytes, legacy) {
        Ok(e) => e,
        Err(m) => return error(&ApiError::InvalidRequest(m)),
    };
    let started = std::time::Instant::now();
    let req = crate::router::embed::EmbedRequest {
        client,
        request_id,
        surface: "ollama-embed",
        model: e.model.clone(),
        inputs: e
            .inputs
            .into_iter()
            .map(crate::providers::embed::Input::Text)
            .collect(),
        dims: e.dims,
        query: false,
        pass: false,
    };
    let default = server.embeddings.default.as_deref();
    match server.router.embed(req, default).await {
        Ok(done) => {
            let nanos = started.elapsed().as_nanos() as u64;
            let body = ollama::embed_body(&e.model, &done.vectors, done.tokens, nanos, legacy);
            super::routed_json(body, &done.routed_via, done.attempts)
        }
        Err(failed) => error(&failed.error),
    }
}

/// `pull`, `push`, `create`, `copy`, `delete`, blobs: Freeway keeps no model files.
async fn not_stored(
    State(server): State<Arc<Server>>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    if let Err(e) = who(&server, &headers, &access) {
        return error(&e);
    }
    // `/api/pull` → pull; `/api/blobs/…` → upload.
    let op = uri.path().trim_start_matches("/api/");
    let what = if op.starts_with("blobs") {
        "upload"
    } else {
        op
    };
    let mut r = error(&ApiError::NotFound(format!(
        "Freeway serves models, it does not store them, so there is nothing to {what}: the models it serves are ready to use (GET /api/tags lists them)"
    )));
    *r.status_mut() = StatusCode::NOT_IMPLEMENTED;
    r
}

/// An `/api` route Ollama may have but Freeway does not serve.
async fn unknown(
    State(server): State<Arc<Server>>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    if let Err(e) = who(&server, &headers, &access) {
        return error(&e);
    }
    let shown: String = uri.path().chars().take(200).collect();
    error(&ApiError::NotFound(format!(
        "Freeway does not serve {shown}; its Ollama API is /api/chat, /api/generate, /api/tags, /api/show, /api/ps and /api/version"
    )))
}

/// Anything but `/` and `/api` on the second listener.
async fn only_api() -> Response {
    (
        StatusCode::NOT_FOUND,
        "404 page not found: this listener serves only Ollama's API (/api); the rest of Freeway is on its main port\n",
    )
        .into_response()
}
