//! Gemini's own API over HTTP (SPEC 2.6): `POST /v1beta/models/{model}:{action}` (also under
//! `/v1/models/`), and the model list and model in Google's shape. The client key comes as
//! `x-goog-api-key`, `?key=` or `Authorization: Bearer`. The translation is `wire::gemini`;
//! routing and rendering are the shared path of `surfaces`.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

use super::surfaces::{Prepared, Render, answer_prepared, known, parse_sized};
use super::{RequestId, Server, Surface, read_body};
use crate::error::ApiError;
use crate::wire::gemini;

/// Does the request authenticate the way Google's clients do (`x-goog-api-key` or `?key=`)?
/// Such a client gets Google's shapes on the routes it shares with others (`GET /v1/models`).
pub(super) fn google_client(headers: &HeaderMap, q: &HashMap<String, String>) -> bool {
    headers.contains_key("x-goog-api-key") || q.contains_key("key")
}

/// The client of the key in the headers, else in `?key=`; or 401.
fn authenticate(
    server: &Server,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
) -> Result<Arc<crate::keys::Client>, ApiError> {
    let presented = super::presented_key(headers)
        .or_else(|| q.get("key").map(|k| k.trim()).filter(|k| !k.is_empty()));
    super::check_key(server, presented)
}

/// `POST …/models/{model}:{action}`.
pub(super) async fn action(
    State(server): State<Arc<Server>>,
    axum::Extension(RequestId(request_id)): axum::Extension<RequestId>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    Path(path): Path<String>,
    body: Body,
) -> Response {
    let surface = Surface::Gemini;
    let client = match authenticate(&server, &headers, &q) {
        Ok(c) => c,
        Err(e) => return surface.error(e, &request_id, 0),
    };
    let Some((model, action)) = path.rsplit_once(':') else {
        let e = ApiError::NotFound(
            "POST needs an action: models/{model}:generateContent, :streamGenerateContent or :countTokens".into(),
        );
        return surface.error(e, &request_id, 0);
    };
    let model = model.strip_prefix("models/").unwrap_or(model).to_string();
    // Inference goes through the Idempotency-Key keeper (SPEC 2.8); the URL's model, action
    // and form are part of what makes two requests the same.
    if matches!(
        action,
        "generateContent" | "streamGenerateContent" | "embedContent" | "batchEmbedContents"
    ) && headers.contains_key("idempotency-key")
    {
        let bytes = match read_body(&server, &headers, body).await {
            Ok(b) => b,
            Err(e) => return surface.error(e, &request_id, 0),
        };
        let alt = q.get("alt").cloned().unwrap_or_default();
        let route = format!("gemini {model}:{action} {alt}");
        let run = {
            let (server, client, headers) =
                (Arc::clone(&server), Arc::clone(&client), headers.clone());
            let (request_id, q, action) = (request_id.clone(), q.clone(), action.to_string());
            move |bytes: bytes::Bytes| {
                Box::pin(async move {
                    let body = Body::from(bytes);
                    dispatch(
                        &server, client, request_id, &headers, &q, body, model, &action,
                    )
                    .await
                }) as futures_util::future::BoxFuture<'static, Response>
            }
        };
        let refuse = |e| surface.error(e, &request_id, 0);
        return super::idempotent::guard(
            &server,
            &client.name,
            &route,
            &headers,
            bytes,
            run,
            refuse,
        )
        .await;
    }
    dispatch(
        &server, client, request_id, &headers, &q, body, model, action,
    )
    .await
}

/// One action on one model.
#[allow(clippy::too_many_arguments)]
async fn dispatch(
    server: &Arc<Server>,
    client: Arc<crate::keys::Client>,
    request_id: String,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    body: Body,
    model: String,
    action: &str,
) -> Response {
    let surface = Surface::Gemini;
    let form = match q.get("alt").map(String::as_str) {
        Some("sse") => gemini::Form::Sse,
        _ => gemini::Form::Array,
    };
    match action {
        "generateContent" => generate(server, client, request_id, headers, body, model, None).await,
        "streamGenerateContent" => {
            generate(server, client, request_id, headers, body, model, Some(form)).await
        }
        "countTokens" => count_tokens(server, request_id, headers, body, model).await,
        "embedContent" => embed(server, client, request_id, headers, body, model, false).await,
        "batchEmbedContents" => embed(server, client, request_id, headers, body, model, true).await,
        other => {
            let shown: String = other.chars().take(100).collect();
            surface.error(
                ApiError::NotFound(format!(
                    "the action `{shown}` is not served; Freeway serves generateContent, streamGenerateContent, countTokens, embedContent and batchEmbedContents"
                )),
                &request_id,
                0,
            )
        }
    }
}

/// The model to route for `requested`: itself when Freeway knows it, else what `[gemini_api]`
/// says a `gemini-…` family means.
fn route_model(server: &Server) -> impl Fn(&str) -> String + Send + 'static {
    let catalog = Arc::clone(&server.ops.live().snapshot().catalog);
    let families = server.gemini_families.clone();
    move |m| families.map(m, |n| known(&catalog, n))
}

/// `generateContent`, or `streamGenerateContent` framed as `form`.
async fn generate(
    server: &Server,
    client: Arc<crate::keys::Client>,
    request_id: String,
    headers: &HeaderMap,
    body: Body,
    model: String,
    form: Option<gemini::Form>,
) -> Response {
    let surface = Surface::Gemini;
    let bytes = match read_body(server, headers, body).await {
        Ok(b) => b,
        Err(e) => return surface.error(e, &request_id, 0),
    };
    let route = route_model(server);
    let parsed = parse_sized(bytes, move |bytes| {
        gemini::parse(bytes, &model, form.is_some(), route).map_err(ApiError::InvalidRequest)
    })
    .await
    .and_then(|r| r);
    match parsed {
        Ok(p) => {
            let prepared = Prepared {
                req: p.req,
                notes: p.notes,
                render: Render::Gemini {
                    form: form.unwrap_or(gemini::Form::Sse),
                    thoughts: p.thoughts,
                },
            };
            answer_prepared(server, surface, client, request_id, headers, prepared).await
        }
        Err(e) => surface.error(e, &request_id, 0),
    }
}

/// `countTokens`: `{"totalTokens": n}`, the prompt estimate the ledger would use.
async fn count_tokens(
    server: &Server,
    request_id: String,
    headers: &HeaderMap,
    body: Body,
    model: String,
) -> Response {
    let surface = Surface::Gemini;
    let bytes = match read_body(server, headers, body).await {
        Ok(b) => b,
        Err(e) => return surface.error(e, &request_id, 0),
    };
    let catalog = Arc::clone(&server.ops.live().snapshot().catalog);
    let route = route_model(server);
    let counted = parse_sized(bytes, move |bytes| {
        let p = gemini::parse_count(bytes, &model, route).map_err(ApiError::InvalidRequest)?;
        // A model generateContent would refuse is refused here too.
        match p.req.facts.model.as_deref() {
            Some(m) if !known(&catalog, m) => Err(not_found(&model)),
            _ => Ok(p.req.facts.prompt_tokens),
        }
    })
    .await
    .and_then(|r| r);
    match counted {
        Ok(n) => axum::Json(json!({"totalTokens": n})).into_response(),
        Err(e) => surface.error(e, &request_id, 0),
    }
}

fn not_found(model: &str) -> ApiError {
    let shown: String = model.chars().take(200).collect();
    ApiError::ModelNotFound(format!(
        "models/{shown} is not found; GET /v1beta/models lists what is available (or use `auto`)"
    ))
}

/// What a chat model does on this surface.
const CHAT_METHODS: &[&str] = &["generateContent", "streamGenerateContent", "countTokens"];
/// What an embedding model does in Google's API.
const EMBED_METHODS: &[&str] = &["embedContent", "batchEmbedContents"];

/// A model in Google's shape.
fn model_json(id: &str, display: &str, description: &str, context: u64, methods: &[&str]) -> Value {
    json!({
        "name": format!("models/{id}"),
        "baseModelId": id,
        "version": "freeway",
        "displayName": display,
        "description": description,
        "inputTokenLimit": context,
        // The catalog knows context windows, not output ceilings: a bound, not a promise.
        "outputTokenLimit": context.min(65_536),
        "supportedGenerationMethods": methods,
        "temperature": 1.0,
        "maxTemperature": 2.0,
        "topP": 0.95,
        "topK": 64,
    })
}

fn group_json(g: &crate::ops::ModelGroup) -> Value {
    let description = format!("served by {}", g.providers.join(", "));
    let methods = match g.embedding {
        Some(_) => EMBED_METHODS,
        None => CHAT_METHODS,
    };
    model_json(&g.canonical, &g.canonical, &description, g.context, methods)
}

fn auto_json(groups: &[crate::ops::ModelGroup]) -> Value {
    let context = groups
        .iter()
        .filter(|g| g.embedding.is_none())
        .map(|g| g.context)
        .max()
        .unwrap_or(0);
    model_json(
        "auto",
        "auto",
        "Freeway's routing chain: whichever model has free capacity",
        context,
        CHAT_METHODS,
    )
}

/// `GET /v1beta/models` (and `GET /v1/models` from a Google client): `{"models": [...]}`.
pub(super) async fn models(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let client = match authenticate(&server, &headers, &q) {
        Ok(c) => c,
        Err(e) => return Surface::Gemini.error(e, "", 0),
    };
    let (groups, _) = server.ops.model_groups(false);
    let groups = super::allowed_groups(&server, &client, groups);
    let mut list = vec![auto_json(&groups)];
    list.extend(groups.iter().map(group_json));
    axum::Json(json!({"models": list})).into_response()
}

/// `GET /v1beta/models/{model}`: a model Freeway knows, `auto`, or a `gemini-*` id that
/// `[gemini_api]` maps (named with what serves it).
pub(super) async fn model(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    Path(id): Path<String>,
) -> Response {
    let client = match authenticate(&server, &headers, &q) {
        Ok(c) => c,
        Err(e) => return Surface::Gemini.error(e, "", 0),
    };
    let id = id.strip_prefix("models/").unwrap_or(&id).to_string();
    let (groups, _) = server.ops.model_groups(true);
    let groups = super::allowed_groups(&server, &client, groups);
    let find = |m: &str| {
        groups.iter().find(|g| {
            g.canonical == m
                || g.providers
                    .iter()
                    .any(|r| r == m || r.split_once('/').is_some_and(|(_, up)| up == m))
        })
    };
    if id == "auto" {
        return axum::Json(auto_json(&groups)).into_response();
    }
    if let Some(g) = find(&id) {
        return axum::Json(group_json(g)).into_response();
    }
    let target = server.gemini_families.map(&id, |m| find(m).is_some());
    let served = if target == "auto" {
        Some(auto_json(&groups))
    } else if target != id {
        find(&target).map(group_json)
    } else {
        None
    };
    match served {
        Some(mut v) => {
            let context = v["inputTokenLimit"].clone();
            v = model_json(
                &id,
                &format!("{id} (served by {target})"),
                &format!("mapped by [gemini_api] to {target}"),
                context.as_u64().unwrap_or(0),
                CHAT_METHODS,
            );
            axum::Json(v).into_response()
        }
        None => Surface::Gemini.error(not_found(&id), "", 0),
    }
}

/// `:embedContent` / `:batchEmbedContents`: embeddings (SPEC 2.5) in Google's shape.
async fn embed(
    server: &Arc<Server>,
    client: Arc<crate::keys::Client>,
    request_id: String,
    headers: &HeaderMap,
    body: Body,
    model: String,
    batch: bool,
) -> Response {
    let surface = Surface::Gemini;
    let bytes = match read_body(server, headers, body).await {
        Ok(b) => b,
        Err(e) => return surface.error(e, &request_id, 0),
    };
    let e = match gemini::parse_embed(&bytes, batch) {
        Ok(e) => e,
        Err(m) => return surface.error(ApiError::InvalidRequest(m), &request_id, 0),
    };
    let req = crate::router::embed::EmbedRequest {
        client,
        request_id: request_id.clone(),
        surface: "gemini-embed",
        model,
        inputs: e
            .texts
            .into_iter()
            .map(crate::providers::embed::Input::Text)
            .collect(),
        dims: e.dims,
        query: e.query,
        pass: false,
    };
    let default = server.embeddings.default.as_deref();
    match server.router.embed(req, default).await {
        Ok(done) => super::routed_json(
            gemini::embed_body(&done.vectors, batch),
            &done.routed_via,
            done.attempts,
        ),
        Err(failed) => surface.error(failed.error, &request_id, failed.attempts),
    }
}
