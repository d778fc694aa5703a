//! `POST /v1/embeddings` over HTTP (SPEC 2.5): authenticate, read and parse the body, embed
//! through the router, answer in OpenAI's shape with the headers of SPEC 2.2. Errors in
//! OpenAI's shape.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use super::surfaces::parse_sized;
use super::{RequestId, Server, authenticate, read_body};
use crate::error::ApiError;
use crate::router::embed::EmbedRequest;
use crate::wire::embeddings;

/// Bytes of vectors above which a base64 answer is written on the blocking pool (a batch of
/// 100 3072-dimensional vectors is 300,000 numbers to read).
const LARGE_ANSWER: usize = 256 << 10;

pub async fn embeddings(
    State(server): State<Arc<Server>>,
    axum::Extension(RequestId(request_id)): axum::Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let client = match authenticate(&server, &headers) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let bytes = match read_body(&server, &headers, body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let run = {
        let (server, client) = (Arc::clone(&server), Arc::clone(&client));
        move |bytes| {
            Box::pin(async move { embed_bytes(&server, client, request_id, bytes).await })
                as futures_util::future::BoxFuture<'static, Response>
        }
    };
    let refuse = IntoResponse::into_response;
    super::idempotent::guard(
        &server,
        &client.name,
        "embeddings",
        &headers,
        bytes,
        run,
        refuse,
    )
    .await
}

/// An embeddings request whose body has arrived, answered.
async fn embed_bytes(
    server: &Server,
    client: Arc<crate::keys::Client>,
    request_id: String,
    bytes: bytes::Bytes,
) -> Response {
    let parsed = parse_sized(bytes, |b| {
        embeddings::parse(b).map_err(ApiError::InvalidRequest)
    })
    .await
    .and_then(|r| r);
    let p = match parsed {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let req = EmbedRequest {
        client,
        request_id,
        surface: "embeddings",
        model: p.model,
        inputs: p.inputs,
        dims: p.dims,
        query: p.query,
        pass: !p.base64,
    };
    let default = server.embeddings.default.as_deref();
    let done = match server.router.embed(req, default).await {
        Ok(d) => d,
        Err(failed) => {
            let mut resp = failed.error.into_response();
            resp.headers_mut()
                .insert("x-fallback-attempts", HeaderValue::from(failed.attempts));
            return resp;
        }
    };
    if let Some(raw) = done.raw {
        return super::routed_json(raw, &done.routed_via, done.attempts);
    }
    // Floats pass through as the upstream wrote them; base64 reads every number, which for a
    // large batch is done on the blocking pool.
    let text: usize = done.vectors.iter().map(|v| v.get().len()).sum();
    let (base64, model, tokens) = (p.base64, done.model.clone(), done.tokens);
    let vectors = done.vectors;
    let write = move || embeddings::answer_body(&vectors, base64, &model, tokens);
    let written = if base64 && text > LARGE_ANSWER {
        crate::offload::run(write)
            .await
            .unwrap_or_else(|_| Err("the answer could not be written".into()))
    } else {
        write()
    };
    let body = match written {
        Ok(b) => b,
        Err(why) => {
            return ApiError::UpstreamFailed(format!(
                "the upstream's vectors could not be read: {why}"
            ))
            .into_response();
        }
    };
    super::routed_json(body, &done.routed_via, done.attempts)
}
