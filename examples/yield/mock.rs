//! The mock providers: one axum server on 127.0.0.1, each provider under `/{id}{api_path}`,
//! reading the simulated clock. Each enforces its own caps ([`crate::truth`]) with its own
//! counters ([`crate::window`]) and says no the way the real provider does: 429 with its body,
//! `retry-after` or `retryDelay` where it sends one, `x-ratelimit-*` headers on answers; 404 for
//! models it does not serve ("decommissioned" for retired ones; Google's 429 "limit: 0" for
//! paid-only ones); 400 or 413 for requests it cannot take.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use freeway::ledger::{Clock, ManualClock};
use serde_json::{Value, json};

use crate::trace::{Req, charge, image_tokens};
use crate::truth::{Dialect, ModelFact, ProviderFact, Status};
use crate::window::{Charge, Pool, Refusal};

/// One chat call a mock provider received.
#[derive(Debug, Clone)]
pub struct Call {
    /// Simulated time, ms since the epoch.
    pub at: i64,
    /// The `max_tokens` it carried.
    pub max_tokens: Option<u64>,
    pub provider: &'static str,
    pub model: String,
    pub status: u16,
    /// The cap that refused it (429s).
    pub cap: Option<&'static str>,
    /// What the status means, for the report (`rpd`, `retired`, `too large`, ...).
    pub why: String,
}

/// (provider index, pool owner: key or project, model index or None for the account).
type PoolId = (usize, &'static str, Option<usize>);

struct Counters {
    pools: HashMap<PoolId, Pool>,
    /// The same pools, also charged with every refused request judged servable: so that one
    /// free slot makes one refused request servable, not every request refused at that moment.
    shadow: HashMap<PoolId, Pool>,
    /// Per shadow pool, the refused requests judged servable by a room in it (their credit
    /// ids, oldest first), and the credits withdrawn because a later served request took that
    /// same room (see `decide`).
    credits: HashMap<PoolId, Vec<usize>>,
    withdrawn: Vec<usize>,
    calls: Vec<Call>,
}

/// The mock providers of one simulated day.
pub struct Mock {
    clock: Arc<ManualClock>,
    providers: Vec<ProviderFact>,
    trace: Arc<Vec<Req>>,
    counters: Mutex<Counters>,
}

/// What the mock decided for one request.
enum Verdict {
    Answer {
        prompt: u64,
        completion: u64,
        headers: Vec<(String, String)>,
    },
    Refuse(u16, Value, Vec<(String, String)>),
}

impl Mock {
    /// Start the mock on an ephemeral port; returns it and its address.
    pub async fn start(
        clock: Arc<ManualClock>,
        providers: Vec<ProviderFact>,
        trace: Arc<Vec<Req>>,
    ) -> anyhow::Result<(Arc<Mock>, std::net::SocketAddr)> {
        let mock = Arc::new(Mock {
            clock,
            providers,
            trace,
            counters: Mutex::new(Counters {
                pools: HashMap::new(),
                shadow: HashMap::new(),
                credits: HashMap::new(),
                withdrawn: Vec::new(),
                calls: Vec::new(),
            }),
        });
        let router = Router::new().fallback(handle).with_state(mock.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok((mock, addr))
    }

    /// Every chat call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.counters.lock().expect("mock lock").calls.clone()
    }

    /// Requests and tokens each model pool counted in its day window: (provider, owner, model,
    /// requests, tokens).
    pub fn day_usage(&self) -> Vec<(&'static str, &'static str, &'static str, u64, u64)> {
        let c = self.counters.lock().expect("mock lock");
        let mut out: Vec<_> = c
            .pools
            .iter()
            .filter_map(|(&(pi, owner, mi), pool)| {
                let p = &self.providers[pi];
                let (r, t) = pool.day_totals();
                Some((p.id, owner, p.models[mi?].id, r, t))
            })
            .collect();
        out.sort();
        out
    }

    /// Which model (`provider/model`) could have served `req` right now, if any: a live model
    /// that fits it, with room in every pool it counts in for what the provider charges up
    /// front and for the whole answer (known here, not to Freeway). The room is then taken in
    /// the shadow pools (what was served plus what was judged servable), never in the real ones.
    /// `credit`: the refused request's id, in case a later served request takes that room
    /// ([`Mock::withdrawn`]).
    pub fn could_serve(&self, req: &Req, credit: usize) -> Option<String> {
        let now = self.clock.now_ms();
        let mut c = self.counters.lock().expect("mock lock");
        for (pi, p) in self.providers.iter().enumerate() {
            for (mi, m) in p.models.iter().enumerate() {
                if !req.fits(p, m) {
                    continue;
                }
                let mut upfront = req.charge(p, m);
                let used = req.used_tokens(p.dialect);
                upfront.minute = upfront.minute.max(used);
                upfront.day = upfront.day.max(used);
                for owner in p.owners() {
                    if check(&mut c.shadow, pi, p, owner, mi, m, now, upfront).is_ok() {
                        for id in pool_ids(p, pi, owner, mi, m) {
                            if let Some(pool) = c.shadow.get_mut(&id) {
                                pool.record(now, used);
                            }
                            c.credits.entry(id).or_default().push(credit);
                        }
                        return Some(format!("{}/{}", p.id, m.id));
                    }
                }
            }
        }
        None
    }

    /// The credits (ids given to [`Mock::could_serve`]) withdrawn: a refused request was judged
    /// servable by a room that a request served later took (a daily slot held for later, a
    /// minute's slot): one room, one request, so that refused request was not servable after
    /// all. Without this a room counts twice, once served and once refused, and servable can
    /// exceed what the keys can take.
    pub fn withdrawn(&self) -> Vec<usize> {
        self.counters.lock().expect("mock lock").withdrawn.clone()
    }

    /// A refusal before any counter is looked at, logged.
    fn early(&self, status: u16, body: Value, call: Call) -> Verdict {
        self.counters.lock().expect("mock lock").calls.push(call);
        Verdict::Refuse(status, body, vec![])
    }

    /// Decide one chat call and count it.
    fn decide(&self, pi: usize, key: &str, model_id: &str, body: &Value, stream: bool) -> Verdict {
        let p = &self.providers[pi];
        let now = self.clock.now_ms();
        let max = max_tokens(p.dialect, body);
        let call = |status: u16, cap: Option<&'static str>, why: &str| Call {
            at: now,
            max_tokens: max,
            provider: p.id,
            model: model_id.to_string(),
            status,
            cap,
            why: why.to_string(),
        };
        let Some(owner) = p
            .keys
            .iter()
            .copied()
            .find(|k| *k == key)
            .map(|k| p.owner(k))
        else {
            let (status, body) = bad_key(p.dialect);
            return self.early(status, body, call(status, None, "bad key"));
        };
        let Some((mi, m)) = p.models.iter().enumerate().find(|(_, m)| m.id == model_id) else {
            let body = json!({"error": {"message": format!("The model `{model_id}` does not exist or you do not have access to it."), "type": "invalid_request_error", "code": "model_not_found"}});
            return self.early(404, body, call(404, None, "unknown model"));
        };
        match m.status {
            Status::Live => {}
            Status::Retired => {
                let body = json!({"error": {"message": format!("The model `{model_id}` has been decommissioned and is no longer supported."), "type": "invalid_request_error", "code": "model_decommissioned"}});
                return self.early(404, body, call(404, None, "retired"));
            }
            Status::NotFree if p.dialect == Dialect::Gemini => {
                let body = gemini_quota(
                    model_id,
                    "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                    0,
                    30,
                );
                return self.early(429, body, call(429, Some("not free (limit 0)"), "not free"));
            }
            Status::NotFree => {
                let body = json!({"error": {"message": format!("The model `{model_id}` does not exist or you do not have access to it."), "type": "invalid_request_error", "code": "model_not_found"}});
                return self.early(404, body, call(404, None, "not on the free plan"));
            }
        }
        let prompt = prompt_tokens(p.dialect, body);
        if let (Some(cap), Some(mx)) = (p.max_tokens_cap, max)
            && mx > cap
        {
            let body = openai_error(&format!(
                "`max_tokens` must be less than or equal to `{cap}`, the maximum value for `max_tokens` is less than the `context_window` for this model"
            ));
            return self.early(400, body, call(400, None, "max_tokens over the ceiling"));
        }
        let context_used = match p.dialect {
            Dialect::Gemini => prompt,
            Dialect::Openai => prompt + max.unwrap_or(0),
        };
        if context_used > m.context {
            let body = openai_error(&format!(
                "This model's maximum context length is {} tokens. However, you requested {context_used} tokens. Please reduce the length of the messages or completion.",
                m.context
            ));
            return self.early(400, body, call(400, None, "over the context"));
        }
        let upfront = charge(p, prompt, max);
        // Groq answers 413 to a request its TPM cap could never hold (others just 429).
        if p.id == "groq"
            && let Some(tpm) = m.caps.tpm
            && upfront.minute > tpm
        {
            let body = openai_error(&format!(
                "Request too large for model `{model_id}` on tokens per minute (TPM): Limit {tpm}, Requested {}, please reduce your message size and try again.",
                upfront.minute
            ));
            return self.early(413, body, call(413, None, "over the TPM cap alone"));
        }
        let completion = ticket(body)
            .and_then(|id| self.trace.get(id as usize))
            .map_or(50, |r| r.completion)
            .min(max.unwrap_or(u64::MAX));
        let mut c = self.counters.lock().expect("mock lock");
        if let Err(refusal) = check(&mut c.pools, pi, p, owner, mi, m, now, upfront) {
            let (status, body, headers) = refuse(p, m, &refusal, now);
            let why = refusal.cap;
            c.calls.push(call(status, Some(refusal.cap), why));
            return Verdict::Refuse(status, body, headers);
        }
        let used = prompt + completion;
        // A room already credited to a refused request (its shadow pool is full): this request
        // takes it, and takes the place that request held in the shadow pools (`withdrawn`).
        let mut need = upfront;
        need.minute = need.minute.max(used);
        need.day = need.day.max(used);
        let ids = pool_ids(p, pi, owner, mi, m);
        let mut taken = None;
        for &id in &ids {
            let caps = if id.2.is_some() { m.caps } else { p.account };
            let shadow = c.shadow.entry(id).or_insert_with(|| Pool::new(caps, p.day));
            if shadow.check(now, need).is_err() {
                taken = c.credits.get_mut(&id).and_then(|v| v.pop());
                break;
            }
        }
        if let Some(credit) = taken {
            c.withdrawn.push(credit);
        }
        let mut headers = Vec::new();
        for id in ids {
            let pool = c.pools.get_mut(&id).expect("checked pool exists");
            pool.record(now, used);
            headers.extend(ratelimit_headers(p, id.2.is_some(), pool));
            if let Some(credit) = taken
                && let Some(v) = c.credits.get_mut(&id)
                && let Some(k) = v.iter().rposition(|&x| x == credit)
            {
                v.remove(k);
                continue;
            }
            c.shadow
                .get_mut(&id)
                .expect("shadow pool exists")
                .record(now, used);
        }
        c.calls
            .push(call(200, None, if stream { "ok (stream)" } else { "ok" }));
        Verdict::Answer {
            prompt,
            completion,
            headers,
        }
    }
}

/// The pools a request to `model` through `owner` counts in.
fn pool_ids(
    p: &ProviderFact,
    pi: usize,
    owner: &'static str,
    mi: usize,
    m: &ModelFact,
) -> Vec<PoolId> {
    let mut ids = Vec::new();
    if !m.caps.is_empty() {
        ids.push((pi, owner, Some(mi)));
    }
    if !p.account.is_empty() {
        ids.push((pi, owner, None));
    }
    ids
}

/// Check every pool the request counts in; the first refusal.
#[allow(clippy::too_many_arguments)]
fn check(
    pools: &mut HashMap<PoolId, Pool>,
    pi: usize,
    p: &ProviderFact,
    owner: &'static str,
    mi: usize,
    m: &ModelFact,
    now: i64,
    upfront: Charge,
) -> Result<(), Refusal> {
    for id in pool_ids(p, pi, owner, mi, m) {
        let caps = if id.2.is_some() { m.caps } else { p.account };
        pools
            .entry(id)
            .or_insert_with(|| Pool::new(caps, p.day))
            .check(now, upfront)?;
    }
    Ok(())
}

fn openai_error(message: &str) -> Value {
    json!({"error": {"message": message, "type": "invalid_request_error"}})
}

fn bad_key(dialect: Dialect) -> (u16, Value) {
    match dialect {
        Dialect::Gemini => (
            400,
            json!({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}}),
        ),
        Dialect::Openai => (
            401,
            json!({"error": {"message": "Invalid API Key", "type": "invalid_request_error", "code": "invalid_api_key"}}),
        ),
    }
}

fn gemini_quota(model: &str, quota_id: &str, limit: u64, retry_s: i64) -> Value {
    json!({"error": {
    "code": 429,
    "message": format!("You exceeded your current quota, please check your plan and billing details. Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: {limit}, model: {model}. Please retry in {retry_s}s."),
    "status": "RESOURCE_EXHAUSTED",
    "details": [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "quotaId": quota_id,
            "quotaDimensions": {"location": "global", "model": model},
            "quotaValue": limit.to_string()}]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{retry_s}s")}
    ]}})
}

fn secs(ms: i64) -> i64 {
    (ms + 999) / 1000
}

/// Groq's duration style: `1m26.4s`, `7.66s`.
fn groq_duration(ms: i64) -> String {
    let s = ms as f64 / 1000.0;
    if s >= 60.0 {
        let m = (s / 60.0).floor();
        format!("{}m{:.2}s", m as i64, s - m * 60.0)
    } else {
        format!("{s:.2}s")
    }
}

/// A provider's 429: status, body, headers.
fn refuse(
    p: &ProviderFact,
    m: &ModelFact,
    r: &Refusal,
    now: i64,
) -> (u16, Value, Vec<(String, String)>) {
    let wait = secs(r.frees_in_ms).max(1);
    match p.id {
        "google" => {
            let quota_id = match r.cap {
                "rpd" => "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                "rpm" => "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                _ => "GenerateContentInputTokensPerModelPerMinute-FreeTier",
            };
            // Like the real API, a daily refusal still names a retry delay of seconds.
            let retry = if r.daily() {
                60 - (now / 1000) % 60
            } else {
                wait
            };
            (429, gemini_quota(m.id, quota_id, r.limit, retry), vec![])
        }
        "groq" => {
            let what = match r.cap {
                "rpm" => "requests per minute (RPM)",
                "rpd" => "requests per day (RPD)",
                "tpm" => "tokens per minute (TPM)",
                _ => "tokens per day (TPD)",
            };
            let body = json!({"error": {"message": format!(
                "Rate limit reached for model `{}` in organization `org_yieldsim` service tier `on_demand` on {what}: Limit {}, Used {}, Requested 1. Please try again in {}. Need more tokens? Upgrade to Dev Tier today at https://console.groq.com/settings/billing",
                m.id, r.limit, r.used, groq_duration(r.frees_in_ms)),
                "type": if r.cap.starts_with('t') { "tokens" } else { "requests" }, "code": "rate_limit_exceeded"}});
            (429, body, vec![("retry-after".into(), wait.to_string())])
        }
        "cerebras" => {
            let (message, code) = match r.cap {
                "rpm" => (
                    "Requests per minute limit exceeded - too many requests sent.",
                    "request_quota_exceeded",
                ),
                "rpd" => (
                    "Requests per day limit exceeded - too many requests sent.",
                    "request_quota_exceeded",
                ),
                "tpm" => (
                    "Tokens per minute limit exceeded - too many tokens processed.",
                    "token_quota_exceeded",
                ),
                _ => (
                    "Tokens per day limit exceeded - too many tokens processed.",
                    "token_quota_exceeded",
                ),
            };
            let body = json!({"message": message, "type": "too_many_requests_error", "param": "quota", "code": code});
            (429, body, vec![("retry-after".into(), wait.to_string())])
        }
        "openrouter" => {
            let which = if r.daily() {
                "free-models-per-day. Add 10 credits to unlock 1000 free model requests per day"
            } else {
                "free-models-per-min"
            };
            let body = json!({"error": {"message": format!("Rate limit exceeded: {which}"), "code": 429,
                "metadata": {"headers": {"X-RateLimit-Limit": r.limit.to_string(), "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": (now + r.frees_in_ms).to_string()}}}});
            (429, body, vec![])
        }
        _ => {
            let message = match r.cap {
                "rpm" => "Requests rate limit exceeded",
                "tokens/month" => "Monthly tokens limit exceeded",
                _ => "Tokens per minute rate limit exceeded",
            };
            let body = json!({"object": "error", "message": message, "type": "rate_limited", "param": null, "code": "1300"});
            (429, body, vec![])
        }
    }
}

/// `x-ratelimit-*` headers on an answer, as Groq and Cerebras send them (others send none).
fn ratelimit_headers(p: &ProviderFact, model_pool: bool, pool: &Pool) -> Vec<(String, String)> {
    if !model_pool {
        return vec![];
    }
    let r = pool.remaining();
    let mut h = Vec::new();
    let mut put = |name: &str, v: Option<u64>| {
        if let Some(v) = v {
            h.push((name.to_string(), v.to_string()));
        }
    };
    match p.id {
        "groq" => {
            put("x-ratelimit-remaining-requests", r.day_requests);
            put("x-ratelimit-remaining-tokens", r.minute_tokens);
        }
        "cerebras" => {
            put("x-ratelimit-remaining-requests-day", r.day_requests);
            put("x-ratelimit-remaining-tokens-minute", r.minute_tokens);
        }
        _ => {}
    }
    h
}

/// Prompt tokens as the provider counts them: characters of text (and of tool definitions and
/// calls) / 4, four per message, a fixed price per image.
fn prompt_tokens(dialect: Dialect, body: &Value) -> u64 {
    let mut chars = 0usize;
    let mut messages = 0u64;
    let mut images = 0u64;
    match dialect {
        Dialect::Openai => {
            for m in body["messages"].as_array().into_iter().flatten() {
                messages += 1;
                match &m["content"] {
                    Value::String(s) => chars += s.len(),
                    Value::Array(parts) => {
                        for part in parts {
                            if let Some(t) = part["text"].as_str() {
                                chars += t.len();
                            } else if part.get("image_url").is_some() {
                                images += 1;
                            }
                        }
                    }
                    _ => {}
                }
                if let Some(calls) = m.get("tool_calls") {
                    chars += calls.to_string().len();
                }
            }
            if let Some(tools) = body.get("tools") {
                chars += tools.to_string().len();
            }
        }
        Dialect::Gemini => {
            let system = body["systemInstruction"]["parts"].as_array();
            if system.is_some() {
                messages += 1;
            }
            let turns = body["contents"].as_array().into_iter().flatten();
            for parts in system.into_iter().chain(turns.filter_map(|t| {
                messages += 1;
                t["parts"].as_array()
            })) {
                for part in parts {
                    if let Some(t) = part["text"].as_str() {
                        chars += t.len();
                    } else if part.get("inlineData").is_some() {
                        images += 1;
                    } else {
                        chars += part.to_string().len();
                    }
                }
            }
            if let Some(tools) = body.get("tools") {
                chars += tools.to_string().len();
            }
        }
    }
    (chars as u64).div_ceil(4) + 4 * messages + images * image_tokens(dialect)
}

fn max_tokens(dialect: Dialect, body: &Value) -> Option<u64> {
    match dialect {
        Dialect::Openai => body["max_completion_tokens"]
            .as_u64()
            .or_else(|| body["max_tokens"].as_u64()),
        Dialect::Gemini => body["generationConfig"]["maxOutputTokens"].as_u64(),
    }
}

/// The trace id a request carries in its text (`ticket #123`).
fn ticket(body: &Value) -> Option<u32> {
    let text = body.to_string();
    let at = text.find("ticket #")? + "ticket #".len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

async fn handle(State(mock): State<Arc<Mock>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().clone();
    let headers = req.headers().clone();
    let Some((pi, rest)) = mock.providers.iter().enumerate().find_map(|(i, p)| {
        path.strip_prefix(&format!("/{}{}", p.id, p.api_path))
            .map(|rest| (i, rest.to_string()))
    }) else {
        return json_response(404, &json!({"error": {"message": "no such provider"}}), &[]);
    };
    let p = &mock.providers[pi];
    if method == Method::GET && (rest == "/models" || rest == "/models/") {
        let list: Vec<Value> = p
            .models
            .iter()
            .map(|m| json!({"id": m.id, "name": format!("models/{}", m.id)}))
            .collect();
        return json_response(
            200,
            &json!({"object": "list", "data": list, "models": list}),
            &[],
        );
    }
    let bytes = axum::body::to_bytes(req.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let (key, model, stream) = match p.dialect {
        Dialect::Openai if rest == "/chat/completions" => (
            bearer(&headers),
            body["model"].as_str().unwrap_or("").to_string(),
            body["stream"] == json!(true),
        ),
        Dialect::Gemini if rest.starts_with("/models/") && rest.contains(":") => {
            let (m, verb) = rest["/models/".len()..].split_once(':').unwrap_or(("", ""));
            let key = headers
                .get("x-goog-api-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            (
                key,
                percent_decode(m),
                verb == "streamGenerateContent" && query.contains("alt=sse"),
            )
        }
        _ => {
            return json_response(
                404,
                &json!({"error": {"message": format!("no route {path}")}}),
                &[],
            );
        }
    };
    match mock.decide(pi, &key, &model, &body, stream) {
        Verdict::Refuse(status, body, headers) => json_response(status, &body, &headers),
        Verdict::Answer {
            prompt,
            completion,
            headers,
        } => {
            let include_usage = body["stream_options"]["include_usage"] == json!(true);
            answer(
                p.dialect,
                &model,
                prompt,
                completion,
                stream,
                include_usage,
                &headers,
                mock.clock.now_ms(),
            )
        }
    }
}

fn bearer(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json_response(status: u16, body: &Value, headers: &[(String, String)]) -> Response {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert("content-type", "application/json".parse().expect("header"));
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::from_bytes(k.as_bytes()),
            v.parse::<axum::http::HeaderValue>(),
        ) {
            h.insert(k, v);
        }
    }
    resp
}

/// A successful answer in the provider's dialect, whole or streamed.
#[allow(clippy::too_many_arguments)]
fn answer(
    dialect: Dialect,
    model: &str,
    prompt: u64,
    completion: u64,
    stream: bool,
    include_usage: bool,
    headers: &[(String, String)],
    now_ms: i64,
) -> Response {
    let text = "Here is the answer.";
    let created = now_ms / 1000;
    let total = prompt + completion;
    match (dialect, stream) {
        (Dialect::Openai, false) => json_response(
            200,
            &json!({"id": "chatcmpl-yield", "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}}),
            headers,
        ),
        (Dialect::Openai, true) => {
            let chunk = |delta: Value, finish: Value| {
                json!({"id": "chatcmpl-yield", "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            };
            let mut events = vec![
                chunk(json!({"role": "assistant", "content": text}), Value::Null),
                chunk(json!({}), json!("stop")),
            ];
            if include_usage {
                events.push(json!({"id": "chatcmpl-yield", "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}}));
            }
            let mut sse: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
            sse.push_str("data: [DONE]\n\n");
            sse_response(sse, headers)
        }
        (Dialect::Gemini, false) => json_response(
            200,
            &json!({"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": prompt, "candidatesTokenCount": completion, "totalTokenCount": total},
                "modelVersion": model}),
            headers,
        ),
        (Dialect::Gemini, true) => {
            let first = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}],
                "usageMetadata": {"promptTokenCount": prompt, "totalTokenCount": prompt}, "modelVersion": model});
            let last = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": prompt, "candidatesTokenCount": completion, "totalTokenCount": total},
                "modelVersion": model});
            sse_response(
                format!("data: {first}\r\n\r\ndata: {last}\r\n\r\n"),
                headers,
            )
        }
    }
}

fn sse_response(text: String, headers: &[(String, String)]) -> Response {
    let mut resp = json_response(200, &Value::Null, headers);
    *resp.body_mut() = Body::from(text);
    resp.headers_mut()
        .insert("content-type", "text/event-stream".parse().expect("header"));
    resp
}
