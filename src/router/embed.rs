//! Embeddings on the one router (SPEC 2.5): the same ledger, client limits, failover table,
//! cooldowns and request log as chat, with one rule of their own: **a vector space never
//! changes silently**. A request names its model; failover moves only between the keys and
//! providers that serve that same model with vectors of the same size, never to another model.
//!
//! Inputs larger than one upstream call takes are split into calls of the candidates' batch
//! size (the smallest of them, so any candidate can serve any call), sent one after another,
//! and the vectors put back in input order. Every call is reserved and settled in the ledger
//! like a chat request.

use std::sync::Arc;
use std::time::Instant;

use super::{AttemptError, Failed, PendingLog, Router, Tally, attempt_row, clients};
use crate::catalog::{Catalog, Model, Provider};
use crate::config::EmbedApi;
use crate::error::ApiError;
use crate::keys::Client;
use crate::ledger::{Ask, parse_quota_headers};
use crate::providers::embed::{self, Batch, Input, Vectors};
use crate::providers::{Failure, classify};
use crate::record::RequestRow;
use crate::upstream;

/// The largest embedding answer read from an upstream.
const MAX_ANSWER: usize = 256 << 20;

/// One embedding request as a client surface hands it over.
pub struct EmbedRequest {
    pub client: Arc<Client>,
    pub request_id: String,
    /// The client surface (`embeddings`, `gemini`, `ollama`), for the request log.
    pub surface: &'static str,
    /// The model as the client named it (`auto` allowed).
    pub model: String,
    pub inputs: Vec<Input>,
    /// The vector size asked for, if any.
    pub dims: Option<u32>,
    /// The inputs are search queries (else documents).
    pub query: bool,
    /// The client takes an OpenAI-dialect answer of floats as the upstream wrote it (see
    /// `providers::embed::passable`).
    pub pass: bool,
}

/// One call of one model through one key.
#[derive(Clone, Copy)]
struct EmbedCall<'a> {
    provider: &'a Provider,
    model: &'a Model,
    embed: &'a crate::catalog::Embedding,
    key: &'a crate::keys::ProviderKey,
    ask: &'a Ask,
    /// The answer may pass on as it came.
    pass: bool,
}

/// The vectors of a request, in input order.
pub struct Embedded {
    pub vectors: Vec<embed::Vector>,
    /// The upstream's answer to pass on as it came, when the request asked for it and one
    /// OpenAI-dialect call answered it all (`vectors` is then empty).
    pub raw: Option<bytes::Bytes>,
    /// Input tokens, as the upstreams counted them (else estimated).
    pub tokens: u64,
    /// `provider/model` of the last call (the headers of SPEC 2.2).
    pub routed_via: String,
    /// The canonical id of the model: the same for every call.
    pub model: String,
    pub attempts: u32,
}

/// The models that may serve `name`: one vector space, in catalog order.
pub fn candidates<'a>(
    catalog: &'a Catalog,
    name: &str,
    default: Option<&str>,
    allowed: &[String],
    dims: Option<u32>,
) -> Result<Vec<&'a Model>, ApiError> {
    let name = match name {
        "auto" | "" => default.ok_or_else(|| {
            ApiError::InvalidRequest(
                "`auto` means [embeddings] default in the config, and none is set: name an embedding model (GET /v1/models lists those with capabilities.embeddings)".into(),
            )
        })?,
        n => n,
    };
    let usable = |m: &&Model| m.enabled && m.retired.is_none() && catalog.provider_of(m).enabled;
    let named: Vec<&Model> = match catalog.embedding(name) {
        Some(m) if name.contains('/') => vec![m],
        _ => catalog
            .embeddings
            .iter()
            .filter(|m| m.canonical == name || m.id == name)
            .collect(),
    };
    if named.is_empty() {
        let what = if catalog
            .models
            .iter()
            .any(|m| m.canonical == name || m.reference == name || m.id == name)
        {
            format!("`{name}` is a chat model; embeddings come from an embedding model")
        } else {
            format!("the embedding model `{name}` does not exist")
        };
        let mut known: Vec<&str> = catalog
            .embeddings
            .iter()
            .filter(usable)
            .map(|m| m.canonical.as_str())
            .collect();
        known.dedup();
        return Err(ApiError::ModelNotFound(format!(
            "{what}; known embedding models: {}",
            known.join(", ")
        )));
    }
    let enabled: Vec<&Model> = named.into_iter().filter(usable).collect();
    let Some(first) = enabled.first().copied() else {
        return Err(ApiError::ModelNotFound(format!(
            "the embedding model `{name}` is disabled or its provider is; enable it in the config ([[providers.X.models]] enabled = true)"
        )));
    };
    // One vector space: the first candidate's size is the model's.
    let own = first.embed.as_ref().map_or(0, |e| e.dims);
    let same: Vec<&Model> = enabled
        .into_iter()
        .filter(|m| m.embed.as_ref().is_some_and(|e| e.dims == own))
        .collect();
    if let Some(d) = dims {
        if !same
            .iter()
            .any(|m| m.embed.as_ref().is_some_and(|e| e.gives(d)))
        {
            let sizes = match first.embed.as_ref().map(|e| &e.shrinks) {
                Some(crate::config::Shrink::Any(true)) => format!("any size up to {own}"),
                Some(crate::config::Shrink::Sizes(s)) if !s.is_empty() => {
                    let s: Vec<String> = s.iter().map(u32::to_string).collect();
                    format!("{own} or {}", s.join(", "))
                }
                _ => format!("{own} only"),
            };
            return Err(ApiError::InvalidRequest(format!(
                "`dimensions`: {name} gives {own}-dimensional vectors and cannot give {d} (it gives {sizes})"
            )));
        }
    }
    let same: Vec<&Model> = same
        .into_iter()
        .filter(|m| dims.is_none_or(|d| m.embed.as_ref().is_some_and(|e| e.gives(d))))
        .collect();
    let allowed_ones: Vec<&Model> = same
        .iter()
        .copied()
        .filter(|m| clients::allows(allowed, m))
        .collect();
    if allowed_ones.is_empty() {
        return Err(ApiError::ModelNotAllowed(format!(
            "this client key may not use `{name}`; it may use: {}",
            allowed.join(", ")
        )));
    }
    Ok(allowed_ones)
}

impl Router {
    /// Embed a request's inputs, failing over only within one vector space.
    pub async fn embed(
        &self,
        req: EmbedRequest,
        default: Option<&str>,
    ) -> Result<Embedded, Failed> {
        let started = Instant::now();
        let estimate: u64 = req.inputs.iter().map(Input::estimate).sum();
        let mut pending = PendingLog {
            log: &self.log,
            started,
            done: false,
            row: RequestRow {
                id: req.request_id.clone(),
                at_ms: self.ledger.now_ms(),
                client: req.client.name.clone(),
                requested_model: req.model.clone(),
                tokens_in: estimate,
                surface: Some(req.surface.to_string()),
                ..RequestRow::default()
            },
        };
        let result = match self.admit(&req.client, estimate).await {
            Ok(mut admission) => {
                let result = self.embed_all(&req, default, &mut pending.row).await;
                match &result {
                    Ok(e) => admission.settle(Some(e.tokens)),
                    Err(failed) => admission.release(failed.attempts > 0),
                }
                result
            }
            Err(error) => Err(Failed { error, attempts: 0 }),
        };
        pending.done = true;
        let mut row = std::mem::take(&mut pending.row);
        row.latency_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(e) => {
                row.status = 200;
                row.tokens_in = e.tokens;
                row.ttft_ms = Some(row.latency_ms);
            }
            Err(failed) => {
                row.status = failed.error.status();
                row.error = Some(failed.error.to_string());
            }
        }
        self.log.record(row);
        result
    }

    async fn embed_all(
        &self,
        req: &EmbedRequest,
        default: Option<&str>,
        row: &mut RequestRow,
    ) -> Result<Embedded, Failed> {
        let fail = |error| Failed { error, attempts: 0 };
        if req.inputs.is_empty() {
            return Err(fail(ApiError::InvalidRequest(
                "`input`: give at least one text to embed".into(),
            )));
        }
        let snap = self.live.snapshot();
        let mut models = candidates(
            &snap.catalog,
            &req.model,
            default,
            &req.client.limits.models,
            req.dims,
        )
        .map_err(fail)?;
        if req.inputs.iter().any(|i| matches!(i, Input::Tokens(_))) {
            models.retain(|m| m.embed.as_ref().is_some_and(|e| e.api == EmbedApi::Openai));
            if models.is_empty() {
                return Err(fail(ApiError::InvalidRequest(format!(
                    "`input`: {} takes text, not token ids",
                    req.model
                ))));
            }
        }
        models.retain(|m| self.live.keys.has_usable(&m.provider));
        if models.is_empty() {
            return Err(fail(ApiError::NoProviders(format!(
                "no enabled, valid provider key can serve `{}`; add one with `freeway keys add <provider>` (see `freeway models --all`)",
                req.model
            ))));
        }
        let batch = models
            .iter()
            .filter_map(|m| m.embed.as_ref().map(|e| e.batch))
            .min()
            .unwrap_or(1)
            .max(1);
        let deadline = Instant::now() + self.settings.time_budget;
        let mut tally = Tally::default();
        let mut vectors = Vec::with_capacity(req.inputs.len());
        let mut tokens = 0;
        let mut routed_via = String::new();
        let mut raw = None;
        let pass = req.pass && req.inputs.len() <= batch;
        for chunk in req.inputs.chunks(batch) {
            let b = Batch {
                inputs: chunk,
                dims: req.dims,
                query: req.query,
            };
            let (got, via) = self
                .embed_one(&models, &b, &mut tally, deadline, req, row, pass)
                .await?;
            raw = got.raw;
            tokens += got
                .tokens
                .unwrap_or_else(|| chunk.iter().map(Input::estimate).sum());
            vectors.extend(got.vectors);
            routed_via = via;
        }
        row.served_by = Some(routed_via.clone());
        Ok(Embedded {
            vectors,
            raw,
            tokens,
            routed_via,
            model: models[0].canonical.clone(),
            attempts: tally.attempts,
        })
    }

    /// One upstream call's worth of inputs, walked over the candidates and their keys.
    #[allow(clippy::too_many_arguments)]
    async fn embed_one(
        &self,
        models: &[&Model],
        b: &Batch<'_>,
        tally: &mut Tally,
        deadline: Instant,
        req: &EmbedRequest,
        row: &mut RequestRow,
        pass: bool,
    ) -> Result<(Vectors, String), Failed> {
        let snap = self.live.snapshot();
        let tokens: u64 = b.inputs.iter().map(Input::estimate).sum();
        'models: for model in models {
            let provider = snap.catalog.provider_of(model);
            let Some(e) = model.embed.as_deref() else {
                continue;
            };
            // The model's own size is not asked for: some upstreams refuse the field.
            let dims = b.dims.filter(|d| *d != e.dims);
            let body = embed::body(
                model,
                e,
                &Batch {
                    inputs: b.inputs,
                    dims,
                    query: b.query,
                },
            )
            .map_err(|m| tally.fail(ApiError::InvalidRequest(m)))?;
            for key in self.live.keys.rotated(&provider.id) {
                if tally.attempts >= self.settings.max_attempts {
                    break 'models;
                }
                if Instant::now() >= deadline {
                    tally.out_of_budget = true;
                    break 'models;
                }
                let ask = Ask::new(provider, model, &key.id, tokens);
                let taken = crate::cluster::take(&self.ledger, self.cluster.as_ref(), &ask).await;
                let reservation = match taken {
                    Ok(r) => r,
                    Err(denied) => {
                        tally.denied(&model.reference, &denied, self.ledger.now_ms());
                        continue;
                    }
                };
                let t0 = Instant::now();
                let base = self
                    .dialects
                    .hosts(provider, &key)
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| provider.base_url.clone());
                let sent = tokio::time::timeout_at(
                    deadline.into(),
                    self.embed_call(
                        &EmbedCall {
                            provider,
                            model,
                            embed: e,
                            key: &key,
                            ask: &ask,
                            pass,
                        },
                        &base,
                        body.clone(),
                        b.inputs.len(),
                    ),
                )
                .await
                .unwrap_or_else(|_| {
                    let why = "no answer before the time budget ran out".to_string();
                    Err(AttemptError(Failure::Server(why), None))
                });
                match sent {
                    Ok(v) => {
                        reservation.settle(v.tokens);
                        row.attempts
                            .push(attempt_row(model, &key, "ok", Some(200), t0, None));
                        self.live.keys.mark_success(&key.id, self.ledger.now_ms());
                        return Ok((v, model.reference.clone()));
                    }
                    Err(AttemptError(failure, status)) => {
                        reservation.release();
                        let failure = failure.redacted(|t| self.live.keys.redact(t));
                        let why = Some(failure.reason());
                        row.attempts
                            .push(attempt_row(model, &key, failure.tag(), status, t0, why));
                        tally.attempts += 1;
                        tally
                            .notes
                            .push(format!("{}: {}", model.reference, failure.reason()));
                        tracing::info!(request_id = %req.request_id, target = %model.reference, key = %crate::ledger::short(&key.id), reason = %failure.reason(), "embedding attempt failed");
                        let decision =
                            super::decide(&failure, provider, &self.policy(), self.ledger.now_ms());
                        self.apply(&decision, provider, model, &key);
                        tally.learn(&decision);
                        match decision.next {
                            super::Next::Key | super::Next::Again => continue,
                            super::Next::Model | super::Next::Provider => continue 'models,
                            super::Next::Refuse => {
                                let why = match failure {
                                    Failure::Request(m) => m,
                                    other => other.reason(),
                                };
                                return Err(tally.fail(ApiError::InvalidRequest(format!(
                                    "{} rejected the request: {why}",
                                    model.reference
                                ))));
                            }
                        }
                    }
                }
            }
        }
        let error = tally.exhausted(&self.settings, self.ledger.now_ms());
        Err(tally.fail(error))
    }

    /// One upstream embedding call.
    async fn embed_call(
        &self,
        c: &EmbedCall<'_>,
        base: &str,
        body: bytes::Bytes,
        inputs: usize,
    ) -> Result<Vectors, AttemptError> {
        let EmbedCall {
            provider,
            model,
            embed: e,
            key,
            ask,
            pass,
        } = *c;
        let (base, mut headers) =
            crate::providers::credentials(provider, key.secret.expose(), base);
        headers.push(("content-type", "application/json".into()));
        let url = self
            .dialects
            .url(&embed::url(model, e, &base))
            .map_err(|m| AttemptError(Failure::Server(format!("bad upstream URL: {m}")), None))?;
        let first_byte = provider
            .first_byte_timeout
            .unwrap_or(self.settings.first_byte_timeout);
        let send = self.http.send(http::Method::POST, url, &headers, body);
        let resp = match tokio::time::timeout(first_byte, send).await {
            Err(_) => {
                let why = format!("no answer within {}s", first_byte.as_secs());
                return Err(AttemptError(Failure::Server(why), None));
            }
            Ok(Err(e)) => return Err(AttemptError(Failure::Server(e.to_string()), None)),
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        let quotas = parse_quota_headers(
            resp.headers()
                .iter()
                .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?))),
        );
        if !quotas.is_empty() {
            self.observe(ask, &quotas);
        }
        let stall = self.settings.stall_timeout;
        if !(200..300).contains(&status) {
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = upstream::read_limited(resp, stall, super::MAX_ERROR)
                .await
                .unwrap_or_default();
            return Err(AttemptError(
                classify(status, retry_after.as_deref(), &body),
                Some(status),
            ));
        }
        let body = upstream::read_limited(resp, stall, MAX_ANSWER)
            .await
            .map_err(|m| AttemptError(Failure::BadAnswer(m), Some(status)))?;
        if pass && e.api == EmbedApi::Openai {
            if let Some((raw, tokens)) = embed::passable(&body, inputs) {
                return Ok(Vectors {
                    vectors: Vec::new(),
                    raw: Some(raw),
                    tokens,
                });
            }
        }
        embed::read(e.api, &body, inputs).map_err(|f| AttemptError(f, Some(status)))
    }
}
