//! Routing: plan the candidates for a request, then walk them in one failover loop.
//!
//! For each candidate (model, key) the loop reserves quota in the ledger, sends, and reads the
//! answer up to its first real content. Every failure before that is invisible to the client:
//! the loop classifies it (SPEC 3.4), cools down what must rest, and moves on. Streams are
//! committed only once content has arrived; after that, [`Tail`] forwards the rest event by
//! event and owns the reservation and the request-log row, so a client that goes away drops
//! the upstream request, releases the tokens and still leaves a log line.

pub mod plan;
pub mod sticky;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::App;
use crate::catalog::{Model, Provider, Reset};
use crate::error::ApiError;
use crate::keys::{ProviderKey, Status};
use crate::ledger::{Ask, Denied, Reservation, Scope, Span, parse_quota_headers};
use crate::providers::{self, Failure, StreamMap};
use crate::store::{AttemptRow, RequestRow};
use crate::upstream;
use crate::wire::openai::ChatRequest;
use crate::wire::sse;
use plan::Target;
use sticky::Sticky;

/// The largest SSE event accepted from an upstream.
const MAX_EVENT: usize = 8 << 20;
/// The largest non-streaming answer accepted from an upstream.
const MAX_ANSWER: usize = 64 << 20;
/// Cooldowns on a local endpoint stay short: it is a machine on the desk, not a quota.
const LOCAL_COOLDOWN_MS: i64 = 5_000;
const DAY_MS: i64 = 86_400_000;

/// One request as the HTTP layer hands it over.
pub struct Incoming {
    pub req: ChatRequest,
    /// Name of the client key.
    pub client: String,
    pub request_id: String,
    /// `X-Session-Id`, if sent.
    pub session: Option<String>,
}

/// A successful answer.
pub struct Reply {
    /// `provider/model` that served it.
    pub routed_via: String,
    /// Upstream requests that failed before this answer.
    pub attempts: u32,
    pub body: ReplyBody,
}

pub enum ReplyBody {
    Json(Bytes),
    /// SSE bytes, already framed.
    Stream(BoxStream<'static, Result<Bytes, std::convert::Infallible>>),
}

/// A request that got no answer.
pub struct Failed {
    pub error: ApiError,
    pub attempts: u32,
}

enum Success {
    Json { body: Bytes, usage: (u64, u64) },
    Stream { pump: Pump, first: Vec<Bytes> },
}

/// Route one chat request.
pub async fn chat(app: &Arc<App>, inc: Incoming) -> Result<Reply, Failed> {
    let started = Instant::now();
    let facts = &inc.req.facts;
    let mut pending = PendingLog {
        app,
        started,
        done: false,
        row: RequestRow {
            id: inc.request_id.clone(),
            at_ms: app.ledger.now_ms(),
            client: inc.client.clone(),
            requested_model: facts.model.clone().unwrap_or_else(|| "auto".into()),
            stream: facts.stream,
            tokens_in: facts.prompt_tokens,
            ..RequestRow::default()
        },
    };
    let result = route(app, &inc, &mut pending.row, started).await;
    pending.done = true;
    if let Err(failed) = &result {
        let mut row = std::mem::take(&mut pending.row);
        row.status = failed.error.status();
        row.error = Some(failed.error.to_string());
        row.latency_ms = started.elapsed().as_millis() as u64;
        app.log.record(row);
    }
    result
}

/// The log row of a request still being routed. If the client goes away mid-way, the
/// handler's future is dropped, and so is this: the request is still recorded, as a 499.
struct PendingLog<'a> {
    app: &'a Arc<App>,
    started: Instant,
    done: bool,
    row: RequestRow,
}

impl Drop for PendingLog<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut row = std::mem::take(&mut self.row);
            row.status = 499;
            row.error = Some("client disconnected".into());
            row.latency_ms = self.started.elapsed().as_millis() as u64;
            self.app.log.record(row);
        }
    }
}

async fn route(
    app: &Arc<App>,
    inc: &Incoming,
    log: &mut RequestRow,
    started: Instant,
) -> Result<Reply, Failed> {
    let catalog = &app.catalog;
    let facts = &inc.req.facts;
    let fail0 = |error: ApiError| Failed { error, attempts: 0 };
    let chain = app.chain();
    let (target, models) = plan::resolve(catalog, &chain, facts.model.as_deref()).map_err(fail0)?;
    // Only models some key can serve are candidates; the others cannot answer either way.
    let models: Vec<usize> = models
        .into_iter()
        .filter(|&m| {
            app.keys
                .has_usable(&catalog.provider_of(&catalog.models[m]).id)
        })
        .collect();
    if models.is_empty() {
        let what = facts.model.as_deref().unwrap_or("auto");
        return Err(fail0(ApiError::NoProviders(format!(
            "no enabled, valid provider key can serve `{what}`; add one with `freeway keys add <provider>` (see `freeway models --all` for who serves what)"
        ))));
    }
    let mut models = plan::fit(catalog, models, facts).map_err(fail0)?;

    let now = app.ledger.now_ms();
    let sticky_id = (target == Target::Auto)
        .then(|| Sticky::identity(&inc.client, inc.session.as_deref(), facts.conversation));
    if let (Some(id), true) = (&sticky_id, facts.has_assistant) {
        if let Some(m) = app.sticky.get(id, now) {
            if let Some(pos) = models.iter().position(|&x| x == m) {
                models.remove(pos);
                models.insert(0, m);
            }
        }
    }
    let routing = &app.config.routing;
    let deadline = started + routing.time_budget;
    let tokens = facts.token_estimate();
    let mut attempts: u32 = 0;
    let mut notes: Vec<String> = Vec::new();
    let mut soonest: Option<i64> = None;
    let mut other_failure = false;
    let mut out_of_budget = false;
    let mut skip_providers: HashSet<usize> = HashSet::new();

    'models: for &mi in &models {
        let model = &catalog.models[mi];
        let provider = catalog.provider_of(model);
        let reference = catalog.reference(mi);
        if skip_providers.contains(&model.provider) {
            continue;
        }
        for key in app.keys.rotated(&provider.id) {
            if attempts >= routing.max_attempts {
                break 'models;
            }
            if Instant::now() >= deadline {
                out_of_budget = true;
                break 'models;
            }
            let ask = Ask::new(provider, model, &key.id, tokens);
            let reservation = match app.ledger.try_reserve(&ask) {
                Ok(r) => r,
                Err(denied) => {
                    if let Some(t) = denied.until_ms() {
                        soonest = Some(soonest.map_or(t, |s: i64| s.min(t)));
                    }
                    notes.push(format!("{reference}: {}", describe_denied(&denied, app)));
                    continue;
                }
            };
            let t0 = Instant::now();
            let mut host_failures = 0;
            let outcome = attempt(app, provider, model, &key, inc, &ask, &mut host_failures).await;
            let latency_ms = t0.elapsed().as_millis() as u64;
            // A key tried on another host (Z.ai) first failed once per host.
            attempts += host_failures;
            match outcome {
                Ok(success) => {
                    log.attempts.push(AttemptRow {
                        target: reference.clone(),
                        key_id: Some(key.id.clone()),
                        outcome: "ok".into(),
                        status: Some(200),
                        latency_ms,
                    });
                    if app.keys.mark_success(&key.id, app.ledger.now_ms()) && key.stored {
                        app.persist_key_health(&key.id);
                    }
                    if let Some(id) = sticky_id {
                        app.sticky.put(id, mi, app.ledger.now_ms());
                    }
                    log.served_by = Some(reference.clone());
                    return Ok(finish(
                        app,
                        success,
                        reservation,
                        log,
                        started,
                        reference,
                        attempts,
                    ));
                }
                Err(AttemptError::Client(message)) => {
                    reservation.unsent();
                    return Err(Failed {
                        error: ApiError::InvalidRequest(message),
                        attempts,
                    });
                }
                Err(AttemptError::Upstream(failure, status)) => {
                    drop(reservation);
                    attempts += 1;
                    log.attempts.push(AttemptRow {
                        target: reference.clone(),
                        key_id: Some(key.id.clone()),
                        outcome: failure.tag().into(),
                        status,
                        latency_ms,
                    });
                    notes.push(format!("{reference}: {}", failure.reason()));
                    tracing::info!(request_id = %inc.request_id, target = %reference, key = %crate::ledger::short(&key.id), reason = %failure.reason(), "attempt failed");
                    let until = penalize(app, provider, model, &key, &failure);
                    match failure {
                        Failure::RateLimited { .. } => {
                            if let Some(t) = until {
                                soonest = Some(soonest.map_or(t, |s: i64| s.min(t)));
                            }
                            continue;
                        }
                        Failure::Request(message) => {
                            return Err(Failed {
                                error: ApiError::InvalidRequest(format!(
                                    "{reference} rejected the request: {message}"
                                )),
                                attempts,
                            });
                        }
                        Failure::InvalidKey(_) | Failure::Denied(_) => {
                            other_failure = true;
                            continue;
                        }
                        Failure::Server(_) => {
                            other_failure = true;
                            skip_providers.insert(model.provider);
                            continue 'models;
                        }
                        Failure::ModelGone(_) | Failure::BadAnswer(_) | Failure::TooLarge(_) => {
                            other_failure = true;
                            continue 'models;
                        }
                    }
                }
            }
        }
    }

    let tried = summarize(&notes);
    let error = if out_of_budget {
        ApiError::UpstreamFailed(format!(
            "the time budget of {}s ran out after {attempts} failed attempt(s): {tried}",
            routing.time_budget.as_secs()
        ))
    } else if notes.is_empty() {
        ApiError::NoProviders(
            "no enabled, valid provider key can serve this request; add one with `freeway keys add <provider>`"
                .into(),
        )
    } else if other_failure {
        ApiError::UpstreamFailed(format!(
            "every candidate failed ({attempts} attempt(s)): {tried}"
        ))
    } else {
        let now = app.ledger.now_ms();
        let retry_after = soonest.map(|t| Duration::from_millis((t - now).max(0) as u64));
        let when = retry_after.map_or_else(String::new, |d| {
            format!("; the soonest frees up in {}s", d.as_secs_f64().ceil())
        });
        ApiError::RateLimited {
            message: format!("every candidate is rate limited or cooling down{when}: {tried}"),
            retry_after,
        }
    };
    Err(Failed { error, attempts })
}

fn describe_denied(d: &Denied, app: &App) -> String {
    let now = app.ledger.now_ms();
    match d.until_ms() {
        Some(t) => format!(
            "{d}, free in {}s",
            ((t - now).max(0) as f64 / 1000.0).ceil()
        ),
        None => format!("{d} (this request is larger than the cap)"),
    }
}

fn summarize(notes: &[String]) -> String {
    const SHOWN: usize = 12;
    let mut s = notes
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if notes.len() > SHOWN {
        s.push_str(&format!("; and {} more", notes.len() - SHOWN));
    }
    s
}

/// Cool down or mark what failed; returns when a rate-limited candidate frees up.
fn penalize(
    app: &Arc<App>,
    provider: &Provider,
    model: &Model,
    key: &ProviderKey,
    failure: &Failure,
) -> Option<i64> {
    let now = app.ledger.now_ms();
    let routing = &app.config.routing;
    let cap = |ms: i64| {
        if provider.local {
            ms.min(LOCAL_COOLDOWN_MS)
        } else {
            ms
        }
    };
    let model_scope = Scope::model(&provider.id, &model.id, &key.id);
    match failure {
        Failure::RateLimited {
            retry_after, daily, ..
        } => {
            let wait = match (retry_after, daily) {
                (Some(d), _) => d.as_millis() as i64,
                (None, true) => match provider.reset {
                    Reset::Midnight(tz) => {
                        let span = Span::Calendar(tz);
                        span.expiry(span.bucket_start(now)) - now
                    }
                    Reset::Rolling => 3_600_000,
                },
                (None, false) => routing.cooldown_on_429.as_millis() as i64,
            };
            let until = now + cap(wait.max(1));
            let why = if *daily {
                "daily quota exhausted"
            } else {
                "429"
            };
            app.ledger.cool(model_scope, until, why);
            Some(until)
        }
        Failure::Server(reason) => {
            let until = now + cap(routing.cooldown_on_5xx.as_millis() as i64);
            app.ledger
                .cool(Scope::key(&provider.id, &key.id), until, reason.clone());
            if app.keys.status(&key.id) != Status::Invalid {
                app.keys
                    .set_status(&key.id, Status::Error, Some(reason.clone()), now);
            }
            None
        }
        Failure::Denied(reason) => {
            app.ledger
                .cool(model_scope, now + cap(DAY_MS), format!("denied: {reason}"));
            None
        }
        Failure::InvalidKey(reason) => {
            app.keys
                .set_status(&key.id, Status::Invalid, Some(reason.clone()), now);
            if key.stored {
                app.persist_key_health(&key.id);
            }
            tracing::warn!(provider = %provider.id, key = %crate::ledger::short(&key.id), "provider rejected a key as invalid; it is skipped until a health check passes");
            None
        }
        _ => None,
    }
}

enum AttemptError {
    /// The client's request cannot be expressed for this provider: 400, no failover.
    Client(String),
    /// The upstream failed, with its HTTP status if it answered.
    Upstream(Failure, Option<u16>),
}

/// One upstream request, read up to its first content.
async fn attempt(
    app: &Arc<App>,
    provider: &Provider,
    model: &Model,
    key: &ProviderKey,
    inc: &Incoming,
    ask: &Ask,
    host_failures: &mut u32,
) -> Result<Success, AttemptError> {
    let routing = &app.config.routing;
    let known = app.known_host(key);
    let mut hosts: Vec<String> = match &known {
        Some(url) => vec![url.clone()],
        None => vec![provider.base_url.clone()],
    };
    if known.is_none() {
        hosts.extend(provider.quirks.alt_base_urls.iter().cloned());
    }
    let mut last = AttemptError::Upstream(Failure::Server("no host".into()), None);
    for (host_index, base) in hosts.iter().enumerate() {
        let signatures = |id: &str| app.signatures.get(id);
        let key_text = (!key.secret.expose().is_empty()).then(|| key.secret.expose());
        let out = providers::build(provider, model, key_text, base, &inc.req, &signatures)
            .map_err(AttemptError::Client)?;
        let url = app.url(&out.url).map_err(|e| {
            AttemptError::Upstream(Failure::Server(format!("bad upstream URL: {e}")), None)
        })?;
        let first_byte = provider
            .first_byte_timeout
            .unwrap_or(routing.first_byte_timeout);
        let send = app
            .http
            .send(http::Method::POST, url, &out.headers, out.body.into());
        let resp = match tokio::time::timeout(first_byte, send).await {
            Err(_) => {
                return Err(AttemptError::Upstream(
                    Failure::Server(format!("no answer within {}s", first_byte.as_secs())),
                    None,
                ));
            }
            Ok(Err(e)) => {
                return Err(AttemptError::Upstream(Failure::Server(e.to_string()), None));
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        let quotas = parse_quota_headers(
            resp.headers()
                .iter()
                .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?))),
        );
        if !quotas.is_empty() {
            app.ledger.observe(ask, &quotas);
        }
        if !(200..300).contains(&status) {
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = upstream::read_limited(resp, routing.stall_timeout, 1 << 20)
                .await
                .unwrap_or_default();
            let failure = providers::classify(status, retry_after.as_deref(), &body);
            let try_next_host =
                matches!(failure, Failure::InvalidKey(_)) && host_index + 1 < hosts.len();
            last = AttemptError::Upstream(failure, Some(status));
            if try_next_host {
                *host_failures += 1;
                continue;
            }
            return Err(last);
        }
        if known.is_none() && !provider.quirks.alt_base_urls.is_empty() {
            app.remember_host(key, base);
        }
        let id = format!("chatcmpl-{}", inc.request_id);
        let created = app.ledger.now_ms() / 1000;
        if !inc.req.facts.stream {
            let body = upstream::read_limited(resp, routing.stall_timeout, MAX_ANSWER)
                .await
                .map_err(|e| AttemptError::Upstream(Failure::BadAnswer(e), Some(status)))?;
            let (body, usage) =
                providers::read_answer(provider.dialect, body, &id, &model.id, created)
                    .map_err(|f| AttemptError::Upstream(f, Some(status)))?;
            if let crate::catalog::Dialect::Gemini = provider.dialect {
                app.signatures.remember_from(&body);
            }
            return Ok(Success::Json { body, usage });
        }
        let hide_usage = providers::openai::injects_usage(&inc.req, &provider.quirks);
        let map = StreamMap::new(provider.dialect, hide_usage, &id, &model.id, created);
        let mut pump = Pump {
            body: resp.into_body(),
            decoder: sse::Decoder::new(MAX_EVENT),
            map,
            stall: routing.stall_timeout,
            content: false,
            finished: false,
            signatures: Vec::new(),
        };
        let mut first = Vec::new();
        loop {
            let step = pump.step().await;
            first.extend(step.out);
            match step.state {
                State::More if pump.content => return Ok(Success::Stream { pump, first }),
                State::More => {}
                State::End if pump.content => {
                    // The whole answer arrived before we committed: still a stream.
                    first.push(sse::frame("[DONE]"));
                    pump.finished = true;
                    return Ok(Success::Stream { pump, first });
                }
                State::End => {
                    return Err(AttemptError::Upstream(
                        Failure::BadAnswer("the stream ended without any content".into()),
                        Some(status),
                    ));
                }
                State::Broken(reason) => {
                    return Err(AttemptError::Upstream(
                        Failure::BadAnswer(format!("{reason} before any content")),
                        Some(status),
                    ));
                }
            }
        }
    }
    Err(last)
}

/// Turn a success into the reply, and settle or hand over the reservation and log row.
fn finish(
    app: &Arc<App>,
    success: Success,
    reservation: Reservation,
    log: &mut RequestRow,
    started: Instant,
    routed_via: String,
    attempts: u32,
) -> Reply {
    match success {
        Success::Json { body, usage } => {
            let total = usage.0 + usage.1;
            if total > 0 {
                reservation.settle(total);
                log.tokens_in = usage.0;
                log.tokens_out = usage.1;
            } else {
                // No usage reported: keep the estimate as the charge.
                reservation.settle_as_estimated();
            }
            log.status = 200;
            log.latency_ms = started.elapsed().as_millis() as u64;
            log.ttft_ms = Some(log.latency_ms);
            app.log.record(std::mem::take(log));
            Reply {
                routed_via,
                attempts,
                body: ReplyBody::Json(body),
            }
        }
        Success::Stream { pump, first } => {
            log.ttft_ms = Some(started.elapsed().as_millis() as u64);
            let done = pump.finished;
            let tail = Tail {
                app: Arc::clone(app),
                pending: first.into(),
                pump,
                done,
                reservation: Some(reservation),
                log: Some(std::mem::take(log)),
                started,
            };
            let mut tail = tail;
            if done {
                // Everything is already in `pending`; close the books now.
                tail.close(None);
            }
            Reply {
                routed_via,
                attempts,
                body: ReplyBody::Stream(tail.into_stream()),
            }
        }
    }
}

/// Reads an upstream stream event by event.
struct Pump {
    body: upstream::Body,
    decoder: sse::Decoder,
    map: StreamMap,
    stall: Duration,
    /// Some content has been seen.
    content: bool,
    /// A finish reason has been seen.
    finished: bool,
    /// Gemini thought signatures seen, to remember.
    signatures: Vec<(String, String)>,
}

enum State {
    More,
    /// The upstream ended cleanly (finish reason seen).
    End,
    Broken(String),
}

struct StepOut {
    out: Vec<Bytes>,
    state: State,
}

impl Pump {
    /// Read one upstream chunk and map the events it completes.
    async fn step(&mut self) -> StepOut {
        let mut out = Vec::new();
        let events = match tokio::time::timeout(self.stall, upstream::next_chunk(&mut self.body))
            .await
        {
            Err(_) => {
                return StepOut {
                    out,
                    state: State::Broken(format!(
                        "the stream stalled for {}s",
                        self.stall.as_secs()
                    )),
                };
            }
            Ok(Some(Err(e))) => {
                return StepOut {
                    out,
                    state: State::Broken(format!("the stream was cut ({e})")),
                };
            }
            Ok(Some(Ok(bytes))) => match self.decoder.feed(&bytes) {
                Ok(events) => events,
                Err(e) => {
                    return StepOut {
                        out,
                        state: State::Broken(e.to_string()),
                    };
                }
            },
            Ok(None) => {
                let last = self.decoder.finish();
                let state = self.apply(last.into_iter().collect(), &mut out);
                let state = match state {
                    State::More if self.finished => State::End,
                    State::More => State::Broken("the stream ended without a finish reason".into()),
                    other => other,
                };
                return StepOut { out, state };
            }
        };
        let state = self.apply(events, &mut out);
        StepOut { out, state }
    }

    fn apply(&mut self, events: Vec<sse::Event>, out: &mut Vec<Bytes>) -> State {
        for ev in events {
            let m = self.map.on_event(&ev);
            out.extend(m.out);
            self.content |= m.content;
            self.finished |= m.finished;
            self.signatures.extend(m.signatures);
            if let Some(err) = m.error {
                return State::Broken(format!("the upstream reported an error ({err})"));
            }
            if m.done {
                return if self.finished {
                    State::End
                } else {
                    State::Broken("the stream ended without a finish reason".into())
                };
            }
        }
        State::More
    }
}

/// The committed part of a stream: forwards events as they arrive and closes the books.
struct Tail {
    app: Arc<App>,
    pending: VecDeque<Bytes>,
    pump: Pump,
    /// Nothing more to read from the upstream.
    done: bool,
    reservation: Option<Reservation>,
    log: Option<RequestRow>,
    started: Instant,
}

impl Tail {
    fn into_stream(self) -> BoxStream<'static, Result<Bytes, std::convert::Infallible>> {
        futures_util::stream::unfold(self, |mut tail| async move {
            loop {
                if let Some(b) = tail.pending.pop_front() {
                    return Some((Ok(b), tail));
                }
                if tail.done {
                    return None;
                }
                let step = tail.pump.step().await;
                tail.pending.extend(step.out);
                match step.state {
                    State::More => {}
                    State::End => {
                        tail.pending.push_back(sse::frame("[DONE]"));
                        tail.close(None);
                    }
                    State::Broken(reason) => {
                        let body = serde_json::json!({"error": {
                            "message": format!("the upstream stream broke after content was sent: {reason}"),
                            "type": "upstream_error",
                            "code": "stream_interrupted"
                        }});
                        tail.pending.push_back(sse::frame(&body.to_string()));
                        tail.pending.push_back(sse::frame("[DONE]"));
                        tracing::warn!(reason = %reason, "stream interrupted after content");
                        tail.close(Some(format!("stream_interrupted: {reason}")));
                    }
                }
            }
        })
        .boxed()
    }

    /// The stream is over: settle, remember signatures, write the log row.
    fn close(&mut self, error: Option<String>) {
        self.done = true;
        let usage = self.pump.map.usage();
        if let Some(r) = self.reservation.take() {
            match usage {
                Some((p, c)) if error.is_none() => r.settle(p + c),
                _ if error.is_none() => r.settle_as_estimated(),
                _ => drop(r),
            }
        }
        for (id, sig) in self.pump.signatures.drain(..) {
            self.app.signatures.put(id, sig);
        }
        if let Some(mut log) = self.log.take() {
            if let Some((p, c)) = usage {
                log.tokens_in = p;
                log.tokens_out = c;
            }
            log.status = 200;
            log.latency_ms = self.started.elapsed().as_millis() as u64;
            log.error = error;
            self.app.log.record(log);
        }
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        // Dropped before the end: the client went away. The reservation's drop gives the
        // tokens back; the upstream request is dropped with the pump.
        if let Some(mut log) = self.log.take() {
            log.status = 499;
            log.latency_ms = self.started.elapsed().as_millis() as u64;
            log.error = Some("client disconnected".into());
            self.app.log.record(log);
        }
    }
}
