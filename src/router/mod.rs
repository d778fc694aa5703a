//! Routing: plan the candidates for a request, then walk them in one failover loop.
//!
//! The router knows no HTTP and no client dialect. It takes a canonical request and yields a
//! canonical answer, a whole [`Answer`] or a stream of [`Piece`]s, for the client's surface to
//! frame. For each candidate (model, key) it reserves quota in the ledger, sends, and reads the
//! answer up to its first real content. Every failure before that is invisible to the client:
//! [`decide`] says what it means (SPEC 3.4), the router cools down what must rest and moves on.
//! Streams are committed only once content has arrived; after that, [`stream::Tail`] hands on
//! the rest and owns the reservation and the request-log row, so a client that goes away drops
//! the upstream request, releases the tokens and still leaves a log line.

pub mod clients;
pub mod decide;
pub mod embed;
pub mod fair;
pub mod flaky;
pub mod plan;
pub mod sticky;
pub mod stream;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::catalog::{Model, Provider};
use crate::chat::{Answer, Piece, Request, Usage};
use crate::config::{Pacing, Routing};
use crate::error::ApiError;
use crate::keys::{ProviderKey, Status};
use crate::ledger::{Ask, Denied, Ledger, Pace, Reservation, Scope, parse_quota_headers};
use crate::lessons::Lesson;
use crate::live::{Live, Snapshot};
use crate::providers::{Call, Dialects, Failure, Outgoing, classify};
use crate::record::{AttemptRow, RequestRow};
use crate::reqlog::RequestLog;
use crate::upstream;
pub use decide::{Decision, Next, Policy, Rest, decide};
use flaky::{Flaky, Route};
use plan::Target;
use sticky::Sticky;
use stream::{Pump, State, Tail};

/// The largest non-streaming answer accepted from an upstream.
const MAX_ANSWER: usize = 64 << 20;
/// The largest error body read from an upstream.
const MAX_ERROR: usize = 1 << 20;
/// Conversations remembered for sticky routing at most.
const STICKY_CAPACITY: usize = 100_000;

/// What the router needs, and nothing more.
pub struct Router {
    /// Catalog, chain and keys.
    pub live: Arc<Live>,
    pub ledger: Arc<dyn Ledger>,
    pub dialects: Arc<Dialects>,
    /// Pooled upstream connections.
    pub http: upstream::Client,
    pub log: Arc<RequestLog>,
    pub settings: Routing,
    sticky: Sticky,
    /// Counts cut streams per route and benches flaky ones (SPEC 3.9).
    flaky: Arc<Flaky>,
    /// Client keys' own limits (SPEC 3.8).
    gate: clients::Gate,
    /// Client keys' fair share of capped models (SPEC 3.8).
    fair: fair::Fair,
    /// The exact answer cache, when `[cache] enabled` (SPEC 2.8).
    cache: Option<Arc<crate::cache::AnswerCache>>,
    /// The ledger, cooldowns and sticky sessions several replicas share (`[cluster]`).
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// One request as a client surface hands it over.
pub struct Incoming {
    pub req: Request,
    /// Name of the client key.
    /// The client key it came with (its name, limits, allowed models).
    pub client: Arc<crate::keys::Client>,
    pub request_id: String,
    /// `X-Session-Id`, if sent.
    pub session: Option<String>,
    /// The client surface it came in on (`chat`, `messages`, `responses`, `completions`), for
    /// the request log and metrics.
    pub surface: &'static str,
    /// What the surface could not pass on (dropped server tools, ...), for the request log.
    pub notes: Vec<String>,
    /// The answer cache may answer it (`false`: the client sent `Cache-Control: no-cache`).
    pub use_cache: bool,
}

/// A successful answer.
pub struct Reply {
    /// `provider/model` that served it.
    pub routed_via: String,
    /// The upstream model id that served it.
    pub model: String,
    /// Upstream requests that failed before this answer.
    pub attempts: u32,
    pub body: Body,
    /// What the answer cache did: `hit`, `miss`, `bypass`; empty when it is off.
    pub cache: &'static str,
}

pub enum Body {
    Answer(Answer),
    /// Pieces as they arrive; the stream ends after the last one (or after an
    /// [`Piece::Interrupted`]).
    Stream(BoxStream<'static, Piece>),
}

/// A request that got no answer.
pub struct Failed {
    pub error: ApiError,
    pub attempts: u32,
}

enum Success {
    Answer(Answer, Option<Usage>),
    Stream {
        pump: Pump,
        first: Vec<Piece>,
        done: bool,
    },
}

/// One try of one model on one key: what every step of an attempt needs.
struct Try<'a> {
    /// The model, the key, and how the dialect sends it.
    call: Call<'a>,
    inc: &'a Incoming,
    /// What the try claimed of the ledger (upstream quota headers correct it).
    ask: &'a Ask,
}

/// An attempt failed upstream, with the HTTP status if the upstream answered.
struct AttemptError(Failure, Option<u16>);

impl Router {
    pub fn new(
        live: Arc<Live>,
        ledger: Arc<dyn Ledger>,
        dialects: Arc<Dialects>,
        http: upstream::Client,
        log: Arc<RequestLog>,
        settings: Routing,
    ) -> Router {
        Router {
            sticky: Sticky::new(settings.sticky_ttl.as_millis() as i64, STICKY_CAPACITY),
            gate: clients::Gate::default(),
            fair: fair::Fair::default(),
            cache: None,
            cluster: None,
            flaky: Arc::new(Flaky::new(
                Arc::clone(&ledger),
                Arc::clone(&live),
                settings.cooldown_on_5xx.as_millis() as i64,
            )),
            live,
            ledger,
            dialects,
            http,
            log,
            settings,
        }
    }

    /// With the exact answer cache (SPEC 2.8).
    pub fn with_cache(mut self, cache: Arc<crate::cache::AnswerCache>) -> Router {
        self.cache = Some(cache);
        self
    }

    /// Sharing the ledger, cooldowns and sticky sessions with other replicas (SPEC 5.1).
    pub fn with_cluster(mut self, cluster: Option<Arc<crate::cluster::Cluster>>) -> Router {
        self.cluster = cluster;
        self
    }

    /// Admit a request of `tokens` from `client` under its own limits, in this replica's
    /// ledger and the shared one.
    async fn admit(
        &self,
        client: &crate::keys::Client,
        tokens: u64,
    ) -> Result<clients::Admission, ApiError> {
        let mut admission = self.gate.admit(&self.ledger, client, tokens)?;
        let Some(cluster) = &self.cluster else {
            return Ok(admission);
        };
        if let Some(max) = client.limits.concurrent {
            match cluster.enter(&client.name, max).await {
                Ok(seat) => admission.seat = seat,
                Err(()) => {
                    // Refused before anything was sent: the key's own counts go back whole.
                    if let Some(r) = admission.reservation.take() {
                        r.unsent();
                    }
                    return Err(clients::busy(&client.name, max));
                }
            }
        }
        if let Some(r) = admission.reservation.take() {
            let ask = Ask::client(&client.name, &client.limits, tokens);
            match crate::cluster::share(r, cluster, &ask).await {
                Ok(r) => admission.reservation = Some(r),
                Err(denied) => {
                    return Err(clients::over(
                        &client.name,
                        &client.limits,
                        &denied,
                        self.ledger.now_ms(),
                    ));
                }
            }
        }
        Ok(admission)
    }

    /// Route one request: from the answer cache when it holds the answer, else upstream.
    pub async fn route(&self, inc: Incoming) -> Result<Reply, Failed> {
        let Some(cache) = self.cache.clone() else {
            return self.route_upstream(inc).await;
        };
        // A key with limits or allowed models takes the whole path: its limits and models are
        // checked there, and a hit must not answer what the key may not ask.
        let limits = &inc.client.limits;
        if !inc.use_cache || limits.counts() || !limits.models.is_empty() {
            let mut reply = self.route_upstream(inc).await?;
            reply.cache = "bypass";
            return Ok(reply);
        }
        let Some(key) = cache.key(&inc.req, &inc.client.name) else {
            return self.route_upstream(inc).await;
        };
        if let Some(hit) = cache.get(&key, self.ledger.now_ms()) {
            return Ok(self.answer_cached(&inc, hit));
        }
        // Another replica may have answered it.
        if let Some(cluster) = &self.cluster {
            if let Some((m, via, at_ms)) = cluster.cache_get(&key).await {
                let hit = cache.adopt(key, m, via, at_ms);
                return Ok(self.answer_cached(&inc, hit));
            }
        }
        let mut reply = self.route_upstream(inc).await?;
        reply.cache = "miss";
        let now = self.ledger.now_ms();
        let cluster = self.cluster.clone();
        let keep = move |m: crate::chat::Message, via: &str| {
            let shared = cluster.as_ref().map(|_| m.clone());
            if cache.put(key, m, via, now) {
                if let (Some(c), Some(m)) = (&cluster, shared) {
                    c.cache_put(&key, &m, via, now, cache.ttl());
                }
            }
        };
        reply.body = match reply.body {
            Body::Answer(answer) => {
                if let Ok(m) = answer.message() {
                    keep(m, &reply.routed_via);
                }
                Body::Answer(answer)
            }
            Body::Stream(pieces) => {
                let via = reply.routed_via.clone();
                let model = reply.model.clone();
                Body::Stream(caching(pieces, model, move |m| keep(m, &via)))
            }
        };
        Ok(reply)
    }

    /// A request answered from the cache: no upstream call, no quota; logged as served by
    /// `cache/<what first served it>`, so analytics count the requests and tokens it saved.
    fn answer_cached(&self, inc: &Incoming, hit: crate::cache::Hit) -> Reply {
        let usage = hit.message.usage.unwrap_or_default();
        self.log.record(RequestRow {
            id: inc.request_id.clone(),
            at_ms: self.ledger.now_ms(),
            client: inc.client.name.clone(),
            requested_model: inc.req.facts.model.clone().unwrap_or_else(|| "auto".into()),
            served_by: Some(format!("cache/{}", hit.routed_via)),
            status: 200,
            ttft_ms: Some(0),
            tokens_in: usage.input,
            tokens_out: usage.output,
            stream: inc.req.facts.stream,
            surface: Some(inc.surface.to_string()),
            notes: Some("answered from the cache".into()),
            ..RequestRow::default()
        });
        let model = hit.message.model.clone();
        let body = if inc.req.facts.stream {
            let events = hit.message.events();
            Body::Stream(Box::pin(futures_util::stream::iter([Piece::Events(
                events,
            )])))
        } else {
            Body::Answer(Answer::Typed(hit.message))
        };
        Reply {
            routed_via: hit.routed_via,
            model,
            attempts: 0,
            body,
            cache: "hit",
        }
    }

    /// Route one request upstream.
    async fn route_upstream(&self, inc: Incoming) -> Result<Reply, Failed> {
        let started = Instant::now();
        let facts = &inc.req.facts;
        let mut pending = PendingLog {
            log: &self.log,
            started,
            done: false,
            row: RequestRow {
                id: inc.request_id.clone(),
                at_ms: self.ledger.now_ms(),
                client: inc.client.name.clone(),
                requested_model: facts.model.clone().unwrap_or_else(|| "auto".into()),
                stream: facts.stream,
                tokens_in: facts.prompt_tokens,
                surface: Some(inc.surface.to_string()),
                notes: (!inc.notes.is_empty()).then(|| inc.notes.join("; ")),
                ..RequestRow::default()
            },
        };
        // The client key's own limits, before any upstream call.
        let result = match self.admit(&inc.client, facts.token_estimate()).await {
            Ok(mut admission) => {
                let result = self
                    .walk(&inc, &mut pending.row, started, &mut admission)
                    .await;
                if let Err(failed) = &result {
                    admission.release(failed.attempts > 0);
                }
                result
            }
            Err(error) => Err(Failed { error, attempts: 0 }),
        };
        pending.done = true;
        // An answer's log row left with it (written now, or by the stream's tail).
        if let Err(failed) = &result {
            let mut row = std::mem::take(&mut pending.row);
            row.status = failed.error.status();
            row.error = Some(failed.error.to_string());
            row.latency_ms = started.elapsed().as_millis() as u64;
            self.log.record(row);
        }
        result
    }

    /// The failover loop.
    async fn walk(
        &self,
        inc: &Incoming,
        row: &mut RequestRow,
        started: Instant,
        admission: &mut clients::Admission,
    ) -> Result<Reply, Failed> {
        let snap = self.live.snapshot();
        let (mut models, sticky_id) = self
            .candidates(&snap, inc)
            .map_err(|error| Failed { error, attempts: 0 })?;
        // A conversation another replica answered stays on its model (one round trip, only
        // for a later turn this replica does not know).
        if let (Some(cluster), Some(id)) = (&self.cluster, &sticky_id) {
            let now = self.ledger.now_ms();
            if inc.req.facts.has_assistant && self.sticky.get(id, now).is_none() {
                if let Some(m) = cluster.sticky(id).await {
                    if let Some(pos) = models.iter().position(|x| x.reference == m) {
                        let first = models.remove(pos);
                        models.insert(0, first);
                    }
                    self.sticky.put(id.clone(), &m, now);
                }
            }
        }
        let deadline = started + self.settings.time_budget;
        let mut tally = Tally::default();
        // Pacing holds `auto` requests to a paced use of daily caps (SPEC 3.7: evenly, or along
        // the demand the gateway expects), so the strongest still serve late in the day. What
        // it held back is tried again before the request is refused, with a looser pace that
        // still keeps half of what the pace saves for later: when nothing else has room a
        // paced model beats a 429, yet is not spent by the first busy hour either.
        let first_pace = match self.settings.pacing {
            _ if inc.req.facts.model.is_some() => Pace::Off,
            Pacing::Even => Pace::Even,
            Pacing::Demand => Pace::Demand,
            Pacing::Off => Pace::Off,
        };
        let mut pace = first_pace;
        let mut queue = models;
        loop {
            let mut held_back: Vec<&Model> = Vec::new();
            'models: for model in queue {
                if tally.skipped_providers.contains(&model.provider) {
                    continue;
                }
                let provider = snap.catalog.provider_of(model);
                let tokens = plan::claim(&inc.req.facts, provider, model);
                // Fair share between client keys of a model with a daily cap (checked and
                // counted per attempt, below).
                let shared = self.shared_cap(provider, model);
                // Built at the first key that has room, then the same for every other.
                let mut body: Option<Bytes> = None;
                // What this model taught during this request: each lesson buys one more try.
                let mut taught: Vec<Lesson> = Vec::new();
                let mut keys: VecDeque<_> = self.live.keys.rotated(&provider.id).into();
                while let Some(key) = keys.pop_front() {
                    if tally.attempts >= self.settings.max_attempts {
                        break 'models;
                    }
                    if Instant::now() >= deadline {
                        tally.out_of_budget = true;
                        break 'models;
                    }
                    let ask = Ask::new(provider, model, &key.id, tokens).paced(pace);
                    // Fair share counts this request before it is reserved (under its own lock,
                    // so two cannot pass just below a share); a refusal takes it back.
                    let fair_mark = match &shared {
                        Some((resource, cap)) => {
                            let now = self.ledger.now_ms();
                            let day = crate::ledger::day_span(provider.reset);
                            let weight = inc.client.limits.weight();
                            let name = &inc.client.name;
                            match self.fair.check(resource, name, weight, *cap, day, now) {
                                Ok(()) => Some((resource, day, now)),
                                Err(frees_at_ms) => {
                                    tally.denied(
                                        &model.reference,
                                        &Denied::Shared { frees_at_ms },
                                        now,
                                    );
                                    continue 'models;
                                }
                            }
                        }
                        None => None,
                    };
                    let unmark = |fair: &fair::Fair| {
                        if let Some((resource, day, at)) = fair_mark {
                            fair.uncount(resource, &inc.client.name, day, at);
                        }
                    };
                    let taken =
                        crate::cluster::take(&self.ledger, self.cluster.as_ref(), &ask).await;
                    let reservation = match taken {
                        Ok(r) => r,
                        Err(Denied::Paced { .. }) if pace == first_pace => {
                            unmark(&self.fair);
                            if !held_back.iter().any(|m| m.reference == model.reference) {
                                held_back.push(model);
                            }
                            continue;
                        }
                        Err(denied) => {
                            unmark(&self.fair);
                            tally.denied(&model.reference, &denied, self.ledger.now_ms());
                            continue;
                        }
                    };
                    let sent = match &body {
                        Some(b) => b.clone(),
                        None => match self.dialects.body(
                            provider,
                            model,
                            &inc.req,
                            self.live.lessons(&model.reference).as_deref(),
                        ) {
                            Ok(b) => body.insert(b).clone(),
                            Err(message) => {
                                reservation.unsent();
                                unmark(&self.fair);
                                return Err(tally.fail(ApiError::InvalidRequest(message)));
                            }
                        },
                    };
                    let t0 = Instant::now();
                    // The time budget bounds the whole attempt until its first content.
                    let t = Try {
                        call: Call {
                            provider,
                            model,
                            key: &key,
                            stream: inc.req.facts.stream,
                            seed: &inc.request_id,
                        },
                        inc,
                        ask: &ask,
                    };
                    let attempt = self.attempt(&t, sent);
                    let (outcome, host_failures) =
                        tokio::time::timeout_at(deadline.into(), attempt)
                            .await
                            .unwrap_or_else(|_| {
                                let why = "no content before the time budget ran out".to_string();
                                (Err(AttemptError(Failure::Server(why), None)), 0)
                            });
                    // A key tried on another host (Z.ai) first failed once per host.
                    tally.attempts += host_failures;
                    let (failure, status) = match outcome {
                        Ok(success) => {
                            let ok = attempt_row(model, &key, "ok", Some(200), t0, None);
                            row.attempts.push(ok);
                            if let Some(id) = sticky_id {
                                if let Some(c) = &self.cluster {
                                    c.stick(&id, &model.reference);
                                }
                                self.sticky.put(id, &model.reference, self.ledger.now_ms());
                            }
                            self.live.keys.mark_success(&key.id, self.ledger.now_ms());
                            row.served_by = Some(model.reference.clone());
                            return Ok(Reply {
                                cache: "",
                                routed_via: model.reference.clone(),
                                model: model.id.clone(),
                                attempts: tally.attempts,
                                body: self.finish(
                                    success,
                                    reservation,
                                    admission,
                                    row,
                                    started,
                                    model,
                                ),
                            });
                        }
                        Err(AttemptError(failure, status)) => {
                            // Upstream words can carry a key, of any shape: never past here.
                            (failure.redacted(|t| self.live.keys.redact(t)), status)
                        }
                    };
                    reservation.release();
                    let why = Some(failure.reason());
                    let failed = attempt_row(model, &key, failure.tag(), status, t0, why);
                    row.attempts.push(failed);
                    let decision = self.failed(&failure, &t, &mut tally);
                    let next = match (decision.next, decision.learn) {
                        // A lesson already applied in this request did not help: the client's.
                        (Next::Again, Some(lesson)) if taught.contains(&lesson) => Next::Refuse,
                        (Next::Again, Some(lesson)) => {
                            // Only a lesson that changes what is sent is worth a second call
                            // (and remembering): the field may sit where it is not dropped, or
                            // the dialect may not send it at all.
                            let mut with = self
                                .live
                                .lessons(&model.reference)
                                .map(|l| (*l).clone())
                                .unwrap_or_default();
                            with.add(lesson.clone(), "");
                            let rebuilt =
                                self.dialects.body(provider, model, &inc.req, Some(&with));
                            match (rebuilt, &body) {
                                (Ok(new), Some(old)) if new != *old => {
                                    self.remember(model, &lesson, &failure);
                                    taught.push(lesson);
                                    body = Some(new);
                                    keys.push_front(key);
                                    continue;
                                }
                                _ => Next::Refuse,
                            }
                        }
                        (next, _) => next,
                    };
                    match next {
                        Next::Key | Next::Again => continue,
                        Next::Model => {
                            // Failed on one key: not worth a second, looser pass either.
                            held_back.retain(|m| m.reference != model.reference);
                            continue 'models;
                        }
                        Next::Provider => {
                            tally.skipped_providers.push(model.provider.clone());
                            continue 'models;
                        }
                        Next::Refuse => {
                            let why = match failure {
                                Failure::Request(m) => m,
                                Failure::UnknownField { message, .. } => message,
                                other => other.reason(),
                            };
                            let error = ApiError::InvalidRequest(format!(
                                "{} rejected the request: {why}",
                                model.reference
                            ));
                            return Err(tally.fail(error));
                        }
                    }
                }
            }
            let looser = match pace.looser() {
                Some(p) if pace == first_pace => p,
                _ => break,
            };
            if held_back.is_empty()
                || tally.out_of_budget
                || tally.attempts >= self.settings.max_attempts
            {
                break;
            }
            pace = looser;
            queue = held_back;
        }
        let error = tally.exhausted(&self.settings, self.ledger.now_ms());
        Err(tally.fail(error))
    }

    /// An attempt failed: note it, decide what it means, cool down what must rest, remember
    /// what the upstream taught.
    fn failed(&self, failure: &Failure, t: &Try<'_>, tally: &mut Tally) -> Decision {
        let Call {
            provider,
            model,
            key,
            ..
        } = t.call;
        let inc = t.inc;
        tally.attempts += 1;
        tally
            .notes
            .push(format!("{}: {}", model.reference, failure.reason()));
        tracing::info!(request_id = %inc.request_id, target = %model.reference, key = %crate::ledger::short(&key.id), reason = %failure.reason(), "attempt failed");
        if let Failure::Retired(why) = failure {
            if self.live.retire(&model.reference, why) {
                tracing::warn!(target = %model.reference, reason = %why, "the provider retired this model; switched off");
            }
        }
        let decision = decide(failure, provider, &self.policy(), self.ledger.now_ms());
        self.apply(&decision, provider, model, key);
        tally.learn(&decision);
        // A capability is learned lost only from a request that needed it; a dropped field only
        // once the walk saw that dropping it changes what is sent (`Next::Again`).
        let facts = &inc.req.facts;
        let relevant = match &decision.learn {
            Some(Lesson::NoTools) => facts.has_tools,
            Some(Lesson::NoImages) => facts.has_images,
            Some(_) => decision.next != Next::Again,
            None => false,
        };
        if let (true, Some(lesson)) = (relevant, &decision.learn) {
            self.remember(model, lesson, failure);
        }
        decision
    }

    /// Remember what `failure` taught about `model` (in force at once, stored soon after).
    fn remember(&self, model: &Model, lesson: &Lesson, failure: &Failure) {
        let words = failure.words().unwrap_or_default();
        if self.live.learn(&model.reference, lesson.clone(), words) {
            tracing::warn!(target = %model.reference, lesson = %lesson, reason = %words, "learned from the upstream's answer");
        }
    }

    /// The models that may serve this request, in order (the conversation's model first), and
    /// the conversation's identity when sticky routing applies.
    fn candidates<'a>(
        &self,
        snap: &'a Snapshot,
        inc: &Incoming,
    ) -> Result<(Vec<&'a Model>, Option<String>), ApiError> {
        let facts = &inc.req.facts;
        let (target, models) = plan::resolve(&snap.catalog, &snap.chain, facts.model.as_deref())?;
        // Only what the client key may use (SPEC 3.8).
        let allowed = &inc.client.limits.models;
        let models: Vec<&Model> = if allowed.is_empty() {
            models
        } else {
            let any = !models.is_empty();
            let models: Vec<&Model> = models
                .into_iter()
                .filter(|m| clients::allows(allowed, m))
                .collect();
            if any && models.is_empty() {
                let what = facts.model.as_deref().unwrap_or("auto");
                return Err(ApiError::ModelNotAllowed(format!(
                    "the client key `{}` may not use `{what}`; it may use: {} (GET /v1/models lists them)",
                    inc.client.name,
                    allowed.join(", ")
                )));
            }
            models
        };
        // Only models some key can serve are candidates; the others cannot answer either way.
        let models: Vec<&Model> = models
            .into_iter()
            .filter(|m| self.live.keys.has_usable(&m.provider))
            .collect();
        if models.is_empty() {
            let what = facts.model.as_deref().unwrap_or("auto");
            return Err(ApiError::NoProviders(format!(
                "no enabled, valid provider key can serve `{what}`; add one with `freeway keys add <provider>` (see `freeway models --all` for who serves what)"
            )));
        }
        let many =
            |m: &Model| snap.catalog.provider_of(m).dialect != crate::catalog::Dialect::Gemini;
        let still_takes = |m: &Model| {
            self.live
                .lessons(&m.reference)
                .is_none_or(|l| l.allows(facts.has_tools, facts.has_images))
        };
        let mut models = plan::fit(models, facts, &many, &still_takes)?;
        // Benched routes (streams cut again and again) go last.
        let now = self.ledger.now_ms();
        if models
            .iter()
            .any(|m| self.live.benched(&m.reference, now).is_some())
        {
            let (fine, benched): (Vec<&Model>, Vec<&Model>) = models
                .into_iter()
                .partition(|m| self.live.benched(&m.reference, now).is_none());
            models = fine;
            models.extend(benched);
        }
        let sticky_id = (target == Target::Auto).then(|| {
            Sticky::identity(&inc.client.name, inc.session.as_deref(), facts.conversation)
        });
        if let (Some(id), true) = (&sticky_id, facts.has_assistant) {
            if let Some(m) = self.sticky.get(id, self.ledger.now_ms()) {
                if let Some(pos) = models.iter().position(|x| x.reference == m) {
                    let m = models.remove(pos);
                    models.insert(0, m);
                }
            }
        }
        Ok((models, sticky_id))
    }

    /// What a model's fair share is taken of: its own daily request cap, else its provider
    /// account's (`provider/*`), times the quota pools that can serve it; `None` when fairness
    /// is off or nothing caps its day.
    fn shared_cap(&self, provider: &Provider, model: &Model) -> Option<(String, u64)> {
        if self.settings.fairness == crate::config::Fairness::Off {
            return None;
        }
        let (resource, per_pool) = match (model.limits.rpd, provider.account.rpd) {
            (Some(cap), _) => (model.reference.clone(), cap),
            (None, Some(cap)) => (format!("{}/*", provider.id), cap),
            (None, None) => return None,
        };
        // Keys of a provider with a shared quota are one pool; else each key is its own.
        let pools = if provider.shared_quota {
            1
        } else {
            self.live.keys.usable_count(&provider.id).max(1)
        };
        Some((resource, per_pool * pools as u64))
    }

    fn policy(&self) -> Policy {
        Policy {
            cooldown_on_429_ms: self.settings.cooldown_on_429.as_millis() as i64,
            cooldown_on_5xx_ms: self.settings.cooldown_on_5xx.as_millis() as i64,
        }
    }

    /// Believe an upstream's count of what is left; a model it says is spent cools on every
    /// replica too.
    fn observe(&self, ask: &Ask, quotas: &[crate::ledger::UpstreamQuota]) {
        self.ledger.observe(ask, quotas);
        if let Some(cluster) = &self.cluster {
            if quotas.iter().any(|q| q.remaining == 0) {
                let scope = ask.model_scope();
                if let Some(c) = self.ledger.cooldown(&scope) {
                    cluster.cool(&scope, c.until_ms, &c.reason);
                }
            }
        }
    }

    /// Carry out a decision's cooldown and key verdict.
    fn apply(&self, d: &Decision, provider: &Provider, model: &Model, key: &ProviderKey) {
        let now = self.ledger.now_ms();
        if let Some((rest, until, why)) = &d.cool {
            let scope = match rest {
                // A rate limit belongs to the quota pool, which several keys may share; any
                // other trouble (a 403 for this key) to the key alone.
                Rest::Model if d.rate_limited => Scope::model(
                    &provider.id,
                    &model.id,
                    &crate::ledger::pool_of(provider, &key.id),
                ),
                Rest::Model => Scope::model(&provider.id, &model.id, &key.id),
                Rest::Key => Scope::key(&provider.id, &key.id),
            };
            if let Some(c) = &self.cluster {
                c.cool(&scope, *until, why);
            }
            self.ledger.cool(scope, *until, why);
        }
        match d.key {
            // A rejected key stays rejected until a probe passes: an error says nothing new.
            Some(Status::Error) if key.status() == Status::Invalid => {}
            Some(status) => {
                let error = d.cool.as_ref().map(|(_, _, why)| why.clone());
                self.live.keys.set_status(&key.id, status, error, now);
                if status == Status::Invalid {
                    tracing::warn!(provider = %provider.id, key = %crate::ledger::short(&key.id), "provider rejected a key as invalid; it is skipped until a health check passes");
                }
            }
            None => {}
        }
    }

    /// One upstream request, read up to its first content; also returns how many hosts failed
    /// first (a key of a multi-host provider tried where it does not belong).
    async fn attempt(&self, t: &Try<'_>, body: Bytes) -> (Result<Success, AttemptError>, u32) {
        let hosts = self.dialects.hosts(t.call.provider, t.call.key);
        let mut host_failures = 0;
        let mut last = AttemptError(Failure::Server("no host".into()), None);
        for (i, base) in hosts.iter().enumerate() {
            let out = self.dialects.build(&t.call, base, body.clone());
            match self.attempt_on(t, out).await {
                Err(AttemptError(Failure::InvalidKey(m), s)) if i + 1 < hosts.len() => {
                    host_failures += 1;
                    last = AttemptError(Failure::InvalidKey(m), s);
                }
                other => return (other, host_failures),
            }
        }
        (Err(last), host_failures)
    }

    async fn attempt_on(&self, t: &Try<'_>, out: Outgoing) -> Result<Success, AttemptError> {
        let Call {
            provider,
            model,
            key,
            ..
        } = t.call;
        let upstream_err = |f: Failure, status: Option<u16>| AttemptError(f, status);
        let url = self
            .dialects
            .url(&out.url)
            .map_err(|e| upstream_err(Failure::Server(format!("bad upstream URL: {e}")), None))?;
        let first_byte = provider
            .first_byte_timeout
            .unwrap_or(self.settings.first_byte_timeout);
        let Outgoing {
            host,
            headers,
            body,
            reader,
            ..
        } = out;
        let send = self.http.send(http::Method::POST, url, &headers, body);
        let resp = match tokio::time::timeout(first_byte, send).await {
            Err(_) => {
                let why = format!("no answer within {}s", first_byte.as_secs());
                return Err(upstream_err(Failure::Server(why), None));
            }
            Ok(Err(e)) => return Err(upstream_err(Failure::Server(e.to_string()), None)),
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        let quotas = parse_quota_headers(
            resp.headers()
                .iter()
                .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?))),
        );
        if !quotas.is_empty() {
            self.observe(t.ask, &quotas);
        }
        let stall = self.settings.stall_timeout;
        if !(200..300).contains(&status) {
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = upstream::read_limited(resp, stall, MAX_ERROR)
                .await
                .unwrap_or_default();
            let failure = classify(status, retry_after.as_deref(), &body);
            return Err(upstream_err(failure, Some(status)));
        }
        self.dialects.worked_on(provider, key, &host);
        if !t.call.stream {
            let body = upstream::read_limited(resp, stall, MAX_ANSWER)
                .await
                .map_err(|e| upstream_err(Failure::BadAnswer(e), Some(status)))?;
            let (answer, usage) = reader
                .answer(body)
                .map_err(|f| upstream_err(f, Some(status)))?;
            return Ok(Success::Answer(answer, usage));
        }
        let mut pump = Pump::new(resp.into_body(), reader.stream(), stall);
        let mut first = Vec::new();
        loop {
            match pump.step(&mut first).await {
                State::More if pump.content => {
                    return Ok(Success::Stream {
                        pump,
                        first,
                        done: false,
                    });
                }
                State::More => {}
                // The whole answer arrived before we committed: still a stream.
                State::End if pump.content => {
                    return Ok(Success::Stream {
                        pump,
                        first,
                        done: true,
                    });
                }
                State::End => {
                    let why = "the stream ended without any content".into();
                    return Err(upstream_err(Failure::BadAnswer(why), Some(status)));
                }
                State::Broken(reason) => {
                    let why = format!("{reason} before any content");
                    self.flaky.cut(&route(model), &why);
                    return Err(upstream_err(Failure::BadAnswer(why), Some(status)));
                }
                // An error event instead of content: the failure its words describe.
                State::Error(words) => {
                    let failure = crate::providers::classify::error_in_stream(&words);
                    return Err(upstream_err(failure, Some(status)));
                }
            }
        }
    }

    /// Turn a success into the reply's body; settle or hand over the reservation and log row.
    fn finish(
        &self,
        success: Success,
        reservation: Reservation,
        admission: &mut clients::Admission,
        row: &mut RequestRow,
        started: Instant,
        model: &Model,
    ) -> Body {
        match success {
            Success::Answer(answer, usage) => {
                match usage.filter(|u| u.total() > 0) {
                    Some(u) => {
                        reservation.settle(Some(u.total()));
                        admission.settle(Some(u.total()));
                        row.tokens_in = u.input;
                        row.tokens_out = u.output;
                    }
                    // No usage reported: keep the estimate as the charge.
                    None => {
                        reservation.settle(None);
                        admission.settle(None);
                    }
                }
                row.status = 200;
                row.latency_ms = started.elapsed().as_millis() as u64;
                row.ttft_ms = Some(row.latency_ms);
                self.log.record(std::mem::take(row));
                Body::Answer(answer)
            }
            Success::Stream { pump, first, done } => {
                row.ttft_ms = Some(started.elapsed().as_millis() as u64);
                let mut tail = Tail {
                    log: Arc::clone(&self.log),
                    live: Arc::clone(&self.live),
                    pending: first.into(),
                    pump,
                    reservation: Some(reservation),
                    row: Some(std::mem::take(row)),
                    started,
                    flaky: Arc::clone(&self.flaky),
                    route: route(model),
                    client: std::mem::take(admission),
                };
                if done {
                    // Everything is already pending; close the books now.
                    self.flaky.ended(&tail.route);
                    tail.close(None);
                }
                Body::Stream(tail.into_stream())
            }
        }
    }
}

/// `pieces` passed on as they come, and the whole message handed to `keep` once the stream
/// finished (never when it broke).
fn caching(
    pieces: BoxStream<'static, Piece>,
    model: String,
    keep: impl FnOnce(crate::chat::Message) + Send + 'static,
) -> BoxStream<'static, Piece> {
    use futures_util::StreamExt;
    let state = Arc::new(std::sync::Mutex::new((
        crate::cache::Collector::default(),
        false,
    )));
    let seen = Arc::clone(&state);
    let watched = pieces.inspect(move |p| {
        let mut g = seen.lock().unwrap_or_else(|e| e.into_inner());
        match p {
            Piece::Interrupted(_) => g.1 = true,
            p => {
                for e in p.events() {
                    g.0.add(&e);
                }
            }
        }
    });
    let end = futures_util::stream::once(async move {
        let (collector, broke) =
            std::mem::take(&mut *state.lock().unwrap_or_else(|e| e.into_inner()));
        if !broke {
            if let Some(m) = collector.message(&model) {
                keep(m);
            }
        }
    })
    .filter_map(|()| async { None::<Piece> });
    Box::pin(watched.chain(end))
}

/// The route a model's requests take, for the flaky-stream count.
fn route(model: &Model) -> Route {
    Route {
        provider: model.provider.clone(),
        model: model.id.clone(),
        reference: model.reference.clone(),
    }
}

/// What the failover loop has learned so far.
#[derive(Default)]
struct Tally {
    attempts: u32,
    /// One line per candidate tried or skipped, for the final error.
    notes: Vec<String>,
    /// When the soonest rate-limited candidate frees up.
    soonest: Option<i64>,
    /// Some attempt failed for another reason than a rate limit.
    other_failure: bool,
    out_of_budget: bool,
    skipped_providers: Vec<String>,
}

impl Tally {
    fn fail(&self, error: ApiError) -> Failed {
        Failed {
            error,
            attempts: self.attempts,
        }
    }

    fn frees_at(&mut self, t: i64) {
        self.soonest = Some(self.soonest.map_or(t, |s| s.min(t)));
    }

    fn denied(&mut self, reference: &str, d: &Denied, now: i64) {
        let what = match d.until_ms() {
            Some(t) => {
                self.frees_at(t);
                format!(
                    "{d}, free in {}s",
                    ((t - now).max(0) as f64 / 1000.0).ceil()
                )
            }
            None => format!("{d} (this request is larger than the cap)"),
        };
        self.notes.push(format!("{reference}: {what}"));
    }

    fn learn(&mut self, d: &Decision) {
        if d.rate_limited {
            if let Some((_, until, _)) = &d.cool {
                self.frees_at(*until);
            }
        } else {
            self.other_failure = true;
        }
    }

    /// The error for a request no candidate answered.
    fn exhausted(&self, settings: &Routing, now: i64) -> ApiError {
        let tried = summarize(&self.notes);
        let attempts = self.attempts;
        if self.out_of_budget {
            ApiError::UpstreamFailed(format!(
                "the time budget of {}s ran out after {attempts} failed attempt(s): {tried}",
                settings.time_budget.as_secs()
            ))
        } else if self.notes.is_empty() {
            ApiError::NoProviders(
                "no enabled, valid provider key can serve this request; add one with `freeway keys add <provider>`"
                    .into(),
            )
        } else if self.other_failure {
            ApiError::UpstreamFailed(format!(
                "every candidate failed ({attempts} attempt(s)): {tried}"
            ))
        } else {
            let retry_after = self
                .soonest
                .map(|t| Duration::from_millis((t - now).max(0) as u64));
            let when = retry_after.map_or_else(String::new, |d| {
                format!("; the soonest frees up in {}s", d.as_secs_f64().ceil())
            });
            ApiError::RateLimited {
                message: format!("every candidate is rate limited or cooling down{when}: {tried}"),
                retry_after,
            }
        }
    }
}

/// One attempt for the request log.
fn attempt_row(
    model: &Model,
    key: &ProviderKey,
    outcome: &str,
    status: Option<u16>,
    t0: Instant,
    error: Option<String>,
) -> AttemptRow {
    AttemptRow {
        target: model.reference.clone(),
        key_id: Some(key.id.clone()),
        outcome: outcome.into(),
        status,
        latency_ms: t0.elapsed().as_millis() as u64,
        error,
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

/// The log row of a request still being routed. If the client goes away mid-way, the
/// surface drops the routing future, and this with it: the request is still recorded, as a 499.
struct PendingLog<'a> {
    log: &'a RequestLog,
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
            self.log.record(row);
        }
    }
}
