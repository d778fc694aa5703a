//! The client surfaces over HTTP: chat completions, Anthropic Messages, Responses, legacy
//! completions and Gemini's own API (its routes in `http::gemini`) share one path
//! (authenticate, read the body, translate it in `wire`, route, render the answer or the error
//! in the dialect the client speaks). Only the translation and the rendering differ per
//! surface; the router never knows which one a request came from except to log it.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

use super::{LARGE_BODY, LARGE_PARSES, RequestId, Server, authenticate, read_body, unix_now};
use crate::catalog::Catalog;
use crate::chat::{Answer, Piece, Request};
use crate::error::ApiError;
use crate::router::{self, Incoming};
use crate::wire::{Frames, anthropic, completions, gemini, ollama, openai, responses};

/// The dialect a request came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Chat,
    Messages,
    Responses,
    Completions,
    /// Ollama's `/api/chat`.
    OllamaChat,
    /// Ollama's `/api/generate`.
    OllamaGenerate,
    Gemini,
}

impl Surface {
    /// Its name in the request log and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Surface::Chat => "chat",
            Surface::Messages => "messages",
            Surface::Responses => "responses",
            Surface::Completions => "completions",
            Surface::OllamaChat => "ollama-chat",
            Surface::OllamaGenerate => "ollama-generate",
            Surface::Gemini => "gemini",
        }
    }

    /// An error as this surface's clients expect it; made before any upstream attempt unless
    /// `attempts` says otherwise.
    pub fn error(self, e: ApiError, request_id: &str, attempts: u32) -> Response {
        let mut resp = match self {
            Surface::Messages => {
                let status = axum::http::StatusCode::from_u16(e.status())
                    .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
                let body = anthropic::error_body(&e, &anthropic_request_id(request_id));
                let mut r = (status, axum::Json(body)).into_response();
                super::error_headers(&e, r.headers_mut());
                r
            }
            Surface::OllamaChat | Surface::OllamaGenerate => super::ollama::error(&e),
            Surface::Gemini => {
                let status = axum::http::StatusCode::from_u16(e.status())
                    .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
                let mut r = (status, axum::Json(gemini::error_body(&e))).into_response();
                super::error_headers(&e, r.headers_mut());
                r
            }
            _ => e.into_response(),
        };
        resp.headers_mut()
            .insert("x-fallback-attempts", HeaderValue::from(attempts));
        self.decorate(&mut resp, request_id);
        resp
    }

    /// Headers this surface's clients read on every answer.
    fn decorate(self, resp: &mut Response, request_id: &str) {
        if self == Surface::Messages {
            if let Ok(v) = HeaderValue::from_str(&anthropic_request_id(request_id)) {
                resp.headers_mut().insert("request-id", v);
            }
        }
    }
}

/// The `request-id` the Anthropic SDKs show (`req_…`).
fn anthropic_request_id(request_id: &str) -> String {
    format!("req_{request_id}")
}

/// How the answer to one request is rendered.
pub(super) enum Render {
    Chat {
        include_usage: bool,
    },
    Messages {
        model: String,
        thinking: bool,
    },
    Responses {
        namespaces: HashMap<String, String>,
        echo: Box<responses::Echo>,
    },
    Completions {
        include_usage: bool,
    },
    Ollama(Box<ollama::Reply>),
    Gemini {
        /// How a stream is framed (unused for a whole answer).
        form: gemini::Form,
        /// Show reasoning as `thought` parts.
        thoughts: bool,
    },
}

/// A request translated, with how to answer it.
pub(super) struct Prepared {
    pub(super) req: Request,
    pub(super) notes: Vec<String>,
    pub(super) render: Render,
}

/// Is `name` a model Freeway knows (any id a client may use for it)?
pub(super) fn known(catalog: &Catalog, name: &str) -> bool {
    name == "auto"
        || catalog
            .models
            .iter()
            .any(|m| m.reference == name || m.canonical == name || m.id == name)
}

fn prepare(
    surface: Surface,
    bytes: &[u8],
    families: &crate::config::Families,
    catalog: &Catalog,
) -> Result<Prepared, ApiError> {
    Ok(match surface {
        Surface::Chat => {
            let req = openai::parse(bytes).map_err(ApiError::InvalidRequest)?;
            let include_usage = req.facts.include_usage;
            Prepared {
                req,
                notes: Vec::new(),
                render: Render::Chat { include_usage },
            }
        }
        Surface::Messages => {
            let p = anthropic::parse(bytes, |m| families.map(m, |n| known(catalog, n)))
                .map_err(ApiError::InvalidRequest)?;
            Prepared {
                req: p.req,
                notes: p.notes,
                render: Render::Messages {
                    model: p.model,
                    thinking: p.thinking,
                },
            }
        }
        Surface::Responses => {
            let p = responses::parse(bytes).map_err(ApiError::InvalidRequest)?;
            Prepared {
                req: p.req,
                notes: p.notes,
                render: Render::Responses {
                    namespaces: p.namespaces,
                    echo: Box::new(p.echo),
                },
            }
        }
        Surface::Completions => {
            let p = completions::parse(bytes).map_err(ApiError::InvalidRequest)?;
            Prepared {
                req: p.req,
                notes: Vec::new(),
                render: Render::Completions {
                    include_usage: p.include_usage,
                },
            }
        }
        Surface::OllamaChat | Surface::OllamaGenerate => {
            let mode = match surface {
                Surface::OllamaChat => ollama::Mode::Chat,
                _ => ollama::Mode::Generate,
            };
            let started = std::time::Instant::now();
            let p = ollama::parse(bytes, mode, |name| ollama_model(catalog, name))?;
            let estimate = p.req.facts.prompt_tokens;
            Prepared {
                req: p.req,
                notes: p.notes,
                render: Render::Ollama(Box::new(ollama::Reply {
                    mode,
                    thinking: p.thinking,
                    estimate,
                    started,
                })),
            }
        }
        // Its model and action come from the URL: `http::gemini` prepares it.
        Surface::Gemini => {
            return Err(ApiError::InvalidRequest(
                "a Gemini request needs its URL to be read".into(),
            ));
        }
    })
}

/// The model to route for an Ollama model name (`qwen3:8b`, `x:latest`), if Freeway knows it.
pub(super) fn ollama_model(catalog: &Catalog, name: &str) -> Option<String> {
    ollama::resolve(
        name,
        |n| known(catalog, n),
        catalog
            .models
            .iter()
            .flat_map(|m| [m.canonical.as_str(), m.id.as_str()]),
    )
}

pub async fn chat(
    State(server): State<Arc<Server>>,
    axum::Extension(RequestId(request_id)): axum::Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(&server, Surface::Chat, request_id, &headers, body).await
}

pub async fn messages(
    State(server): State<Arc<Server>>,
    axum::Extension(RequestId(request_id)): axum::Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(&server, Surface::Messages, request_id, &headers, body).await
}

pub async fn responses(
    State(server): State<Arc<Server>>,
    axum::Extension(RequestId(request_id)): axum::Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(&server, Surface::Responses, request_id, &headers, body).await
}

pub async fn completions(
    State(server): State<Arc<Server>>,
    axum::Extension(RequestId(request_id)): axum::Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(&server, Surface::Completions, request_id, &headers, body).await
}

/// `POST /v1/messages/count_tokens`: the prompt estimate the ledger would use.
pub async fn count_tokens(
    State(server): State<Arc<Server>>,
    axum::Extension(RequestId(request_id)): axum::Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let surface = Surface::Messages;
    if let Err(e) = authenticate(&server, &headers) {
        return surface.error(e, &request_id, 0);
    }
    let bytes = match read_body(&server, &headers, body).await {
        Ok(b) => b,
        Err(e) => return surface.error(e, &request_id, 0),
    };
    let catalog = Arc::clone(&server.ops.live().snapshot().catalog);
    let families = server.families.clone();
    let counted = parse_sized(bytes, move |bytes| {
        anthropic::parse(bytes, |m| families.map(m, |n| known(&catalog, n)))
            .map_err(ApiError::InvalidRequest)
            .and_then(|p| {
                // A model the messages route would refuse is refused here too.
                match p.req.facts.model.as_deref() {
                    Some(m) if !known(&catalog, m) => Err(ApiError::ModelNotFound(format!(
                        "the model `{m}` does not exist; GET /v1/models lists what is available (or use \"auto\")"
                    ))),
                    _ => Ok(p.req.facts.prompt_tokens),
                }
            })
    })
    .await
    .and_then(|r| r);
    match counted {
        Ok(n) => {
            let mut resp = axum::Json(json!({"input_tokens": n})).into_response();
            surface.decorate(&mut resp, &request_id);
            resp
        }
        Err(e) => surface.error(e, &request_id, 0),
    }
}

/// Parse a request body with `parse`: on the event loop when it is small, else on the
/// blocking pool, [`super::LARGE_AT_ONCE`] at a time, so one large body (images, long
/// documents) cannot stall the other requests.
pub(super) async fn parse_sized<T: Send + 'static>(
    bytes: bytes::Bytes,
    parse: impl FnOnce(&[u8]) -> T + Send + 'static,
) -> Result<T, ApiError> {
    if bytes.len() <= LARGE_BODY {
        return Ok(parse(&bytes));
    }
    let _turn = LARGE_PARSES.acquire().await;
    crate::offload::run(move || parse(&bytes))
        .await
        .map_err(|_| ApiError::InvalidRequest("the request could not be parsed".into()))
}

async fn handle(
    server: &Arc<Server>,
    surface: Surface,
    request_id: String,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    match authenticate(server, headers) {
        Ok(client) => answer_as(server, surface, client, request_id, headers, body).await,
        Err(e) => surface.error(e, &request_id, 0),
    }
}

/// A request on `surface` from `client` (a client key's name, or the dashboard), answered;
/// through the idempotency keeper when it carries an `Idempotency-Key` (SPEC 2.8).
pub(crate) async fn answer_as(
    server: &Arc<Server>,
    surface: Surface,
    client: Arc<crate::keys::Client>,
    request_id: String,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let bytes = match read_body(server, headers, body).await {
        Ok(b) => b,
        Err(e) => return surface.error(e, &request_id, 0),
    };
    let run = {
        let (server, client, headers) = (Arc::clone(server), Arc::clone(&client), headers.clone());
        let request_id = request_id.clone();
        move |bytes| {
            Box::pin(async move {
                answer_bytes(&server, surface, client, request_id, &headers, bytes).await
            }) as futures_util::future::BoxFuture<'static, Response>
        }
    };
    let refuse = |e| surface.error(e, &request_id, 0);
    let name = surface.name();
    super::idempotent::guard(server, &client.name, name, headers, bytes, run, refuse).await
}

/// A request whose body has arrived, answered.
async fn answer_bytes(
    server: &Server,
    surface: Surface,
    client: Arc<crate::keys::Client>,
    request_id: String,
    headers: &HeaderMap,
    bytes: bytes::Bytes,
) -> Response {
    let catalog = Arc::clone(&server.ops.live().snapshot().catalog);
    let families = server.families.clone();
    let prepared = parse_sized(bytes, move |bytes| {
        prepare(surface, bytes, &families, &catalog)
    })
    .await
    .and_then(|r| r);
    match prepared {
        Ok(p) => answer_prepared(server, surface, client, request_id, headers, p).await,
        Err(e) => surface.error(e, &request_id, 0),
    }
}

/// A translated request on `surface` routed, and its answer rendered.
pub(super) async fn answer_prepared(
    server: &Server,
    surface: Surface,
    client: Arc<crate::keys::Client>,
    request_id: String,
    headers: &HeaderMap,
    prepared: Prepared,
) -> Response {
    let Prepared { req, notes, render } = prepared;
    let estimate = req.facts.prompt_tokens;
    let session = ["x-session-id", "x-claude-code-session-id", "session-id"]
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .map(|s| s.chars().take(256).collect());
    let incoming = Incoming {
        req,
        client,
        request_id: request_id.clone(),
        session,
        surface: surface.name(),
        notes,
        use_cache: !no_cache(headers),
    };
    let reply = match server.router.route(incoming).await {
        Ok(r) => r,
        Err(failed) => return surface.error(failed.error, &request_id, failed.attempts),
    };
    let created = unix_now();
    let mut resp = match reply.body {
        router::Body::Answer(answer) => {
            match answer_body(answer, &render, &request_id, created, estimate) {
                Ok(body) => {
                    let mut r = Response::new(Body::from(body));
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    r
                }
                Err(msg) => {
                    return surface.error(
                        ApiError::UpstreamFailed(format!(
                            "the upstream answer could not be read: {msg}"
                        )),
                        &request_id,
                        reply.attempts,
                    );
                }
            }
        }
        router::Body::Stream(pieces) => {
            // A stream that breaks is an answer not to keep for a retry (SPEC 2.8).
            // Watched only for the idempotency keeper: other streams pass as they are.
            let broke = headers
                .contains_key("idempotency-key")
                .then(super::idempotent::Broke::default);
            let pieces = match &broke {
                Some(b) => {
                    let flag = b.clone();
                    pieces
                        .inspect(move |p| {
                            if matches!(p, Piece::Interrupted(_)) {
                                flag.0.store(true, std::sync::atomic::Ordering::Relaxed);
                            }
                        })
                        .boxed()
                }
                None => pieces,
            };
            let array = matches!(
                render,
                Render::Gemini {
                    form: gemini::Form::Array,
                    ..
                }
            );
            let body = match render {
                Render::Chat { include_usage } => framed(
                    pieces,
                    openai::Framer::new(
                        &format!("chatcmpl-{request_id}"),
                        &reply.model,
                        created,
                        include_usage,
                    ),
                ),
                Render::Messages { model, thinking } => framed(
                    pieces,
                    anthropic::Framer::new(
                        &format!("msg_{request_id}"),
                        &model,
                        thinking,
                        estimate,
                    ),
                ),
                Render::Responses { namespaces, echo } => framed(
                    pieces,
                    responses::Framer::new(
                        responses::Context {
                            id: format!("resp_{request_id}"),
                            created,
                            echo: *echo,
                            namespaces,
                        },
                        &reply.model,
                    ),
                ),
                Render::Completions { include_usage } => framed(
                    pieces,
                    completions::Framer::new(
                        &format!("cmpl-{request_id}"),
                        &reply.model,
                        created,
                        include_usage,
                    ),
                ),
                Render::Ollama(r) => framed(pieces, ollama::Framer::new(*r, &reply.model)),
                Render::Gemini { form, thoughts } => framed(
                    pieces,
                    gemini::Framer::new(form, &request_id, &reply.model, thoughts, estimate),
                ),
            };
            let mut resp = match surface {
                Surface::OllamaChat | Surface::OllamaGenerate => super::ollama::ndjson(body),
                // Google's stream without `alt=sse`: one JSON array, written as it grows.
                _ if array => {
                    let mut r = Response::new(body);
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    r
                }
                _ => super::sse_response(body),
            };
            if let Some(b) = broke {
                resp.extensions_mut().insert(b);
            }
            resp
        }
    };
    super::routed_headers(&mut resp, &reply.routed_via, reply.attempts);
    if !reply.cache.is_empty() {
        resp.headers_mut()
            .insert("x-freeway-cache", HeaderValue::from_static(reply.cache));
    }
    surface.decorate(&mut resp, &request_id);
    resp
}

/// `Cache-Control: no-cache` or `no-store`: the answer cache must not answer.
fn no_cache(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| {
            matches!(
                d.trim().to_ascii_lowercase().as_str(),
                "no-cache" | "no-store"
            )
        })
}

/// A whole answer's body in the surface's dialect.
fn answer_body(
    answer: Answer,
    render: &Render,
    request_id: &str,
    created: i64,
    estimate: u64,
) -> Result<bytes::Bytes, String> {
    if let Render::Chat { .. } = render {
        return Ok(openai::answer_body(
            answer,
            &format!("chatcmpl-{request_id}"),
            created,
        ));
    }
    let m = answer.message()?;
    let v = match render {
        Render::Chat { .. } => unreachable!("answered above"),
        Render::Messages { model, thinking } => {
            anthropic::message_body(&m, &format!("msg_{request_id}"), model, *thinking, estimate)
        }
        Render::Responses { namespaces, echo } => responses::response_body(
            &m,
            &responses::Context {
                id: format!("resp_{request_id}"),
                created,
                echo: (**echo).clone(),
                namespaces: namespaces.clone(),
            },
        ),
        Render::Completions { .. } => {
            completions::completion_body(&m, &format!("cmpl-{request_id}"), created)
        }
        Render::Ollama(r) => ollama::answer_body(&m, r),
        Render::Gemini { thoughts, .. } => gemini::answer_body(&m, request_id, *thoughts, estimate),
    };
    Ok(bytes::Bytes::from(v.to_string()))
}

/// A stream of pieces framed by `framer`, closed by its end.
fn framed<F: Frames>(pieces: BoxStream<'static, Piece>, framer: F) -> Body {
    let events = futures_util::stream::unfold(
        (pieces, framer, false),
        |(mut pieces, mut framer, ended)| async move {
            if ended {
                return None;
            }
            loop {
                match pieces.next().await {
                    Some(p) => {
                        if let Some(b) = framer.frame(p) {
                            return Some((
                                Ok::<_, std::convert::Infallible>(b),
                                (pieces, framer, false),
                            ));
                        }
                    }
                    None => return framer.end().map(|b| (Ok(b), (pieces, framer, true))),
                }
            }
        },
    );
    Body::from_stream(events)
}
