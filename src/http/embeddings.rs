//! `POST /v1/embeddings` over HTTP (SPEC 2.5): authenticate, read and parse the body, embed
//! through the router, answer in OpenAI's shape with the headers of SPEC 2.2. Errors in
//! OpenAI's shape.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use super::surfaces::parse_sized;
use super::{RequestId, Server, authenticate, read_body, routed_headers};
use crate::error::ApiError;
use crate::router::embed::EmbedRequest;
use crate::wire::embeddings;

/// Vector numbers above which the answer is written on the blocking pool (a batch of 100
/// 3072-dimensional vectors is 300,000 numbers to print).
const LARGE_ANSWER: usize = 50_000;

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
    let numbers: usize = done.vectors.iter().map(Vec::len).sum();
    let (base64, model, tokens) = (p.base64, done.model.clone(), done.tokens);
    let vectors = done.vectors;
    let write = move || embeddings::answer_body(&vectors, base64, &model, tokens);
    let body = if numbers > LARGE_ANSWER {
        match crate::offload::run(write).await {
            Ok(b) => b,
            Err(_) => {
                return ApiError::UpstreamFailed("the answer could not be written".into())
                    .into_response();
            }
        }
    } else {
        write()
    };
    let mut resp = Response::new(Body::from(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    routed_headers(&mut resp, &done.routed_via, done.attempts);
    resp
}
