//! Wire dialects: how a request goes out and how an answer comes back, per dialect.
//!
//! `openai` covers every OpenAI-compatible vendor (their differences are catalog data);
//! `gemini` translates Google's native API. This module builds the outgoing request, reads
//! answers and stream events back into OpenAI shapes, and classifies failures for the router.
//! No I/O happens here.

pub mod gemini;
pub mod openai;

use bytes::Bytes;
use serde_json::Value;
use std::time::Duration;

use crate::catalog::{AuthStyle, Dialect, Model, Provider};
use crate::error::scrub;
use crate::wire::openai::{Answer, ChatRequest, Chunk};
use crate::wire::sse;

/// A request ready to send.
#[derive(Debug)]
pub struct Outgoing {
    pub url: String,
    /// Header name and value; values may hold the key, so this type is never logged.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// Build the upstream request for one attempt. `base_url` is the provider's (or the host a
/// key is known to belong to). Errors are the client's request that this dialect cannot
/// express.
pub fn build(
    provider: &Provider,
    model: &Model,
    key: Option<&str>,
    base_url: &str,
    req: &ChatRequest,
    signatures: &dyn Fn(&str) -> Option<String>,
) -> Result<Outgoing, String> {
    let mut headers: Vec<(&'static str, String)> =
        vec![("content-type", "application/json".into())];
    let mut base = base_url.to_string();
    let mut secret = key.map(str::to_string);
    if provider.quirks.account_in_url {
        if let Some(k) = key {
            // `account_id:token`: the account fills the URL, the token authenticates.
            let (account, token) = k.split_once(':').unwrap_or(("", k));
            base = base.replace("{account_id}", account);
            secret = Some(token.to_string());
        }
    }
    if let Some(s) = secret.filter(|s| !s.is_empty()) {
        match provider.auth {
            AuthStyle::Bearer => headers.push(("authorization", format!("Bearer {s}"))),
            AuthStyle::Goog => headers.push(("x-goog-api-key", s)),
            AuthStyle::None => {}
        }
    }
    for (name, value) in &provider.quirks.headers {
        // Catalog header names are static data; leak-free lookup by known names.
        if let Some(n) = static_header(name) {
            headers.push((n, value.clone()));
        }
    }
    match provider.dialect {
        Dialect::Openai => Ok(Outgoing {
            url: format!("{base}/chat/completions"),
            headers,
            body: openai::body(req, provider, model),
        }),
        Dialect::Gemini => {
            let body = Value::Object(req.body.clone());
            let translated = gemini::to_upstream(&body, signatures).map_err(|e| e.0)?;
            Ok(Outgoing {
                url: format!("{base}/{}", gemini::path(&model.id, req.facts.stream)),
                headers,
                body: serde_json::to_vec(&translated).unwrap_or_default(),
            })
        }
    }
}

fn static_header(name: &str) -> Option<&'static str> {
    const KNOWN: &[&str] = &["HTTP-Referer", "X-Title", "User-Agent"];
    KNOWN.iter().find(|k| k.eq_ignore_ascii_case(name)).copied()
}

/// Why an attempt failed, in the terms of SPEC 3.4.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// 429 or a quota message.
    RateLimited {
        retry_after: Option<Duration>,
        daily: bool,
        message: String,
    },
    /// 5xx, connection error, timeout before the first byte.
    Server(String),
    /// The provider rejected the credential.
    InvalidKey(String),
    /// 404: the model is gone at this provider.
    ModelGone(String),
    /// 400/422 caused by the request: relayed to the client, no failover.
    Request(String),
    /// 402 out of credit, 403 not in this key's tier (or region): a day off for this key.
    Denied(String),
    /// A 200 that is not a usable answer, or a stream that broke before content.
    BadAnswer(String),
    /// The prompt is too large for this model.
    TooLarge(String),
}

impl Failure {
    /// Short words for logs and exhaustion messages.
    pub fn reason(&self) -> String {
        match self {
            Failure::RateLimited { daily: true, .. } => "429 daily quota exhausted".into(),
            Failure::RateLimited { retry_after, .. } => match retry_after {
                Some(d) => format!("429 rate limited (retry after {}s)", d.as_secs_f64().ceil()),
                None => "429 rate limited".into(),
            },
            Failure::Server(m) => m.clone(),
            Failure::InvalidKey(_) => "key rejected as invalid".into(),
            Failure::ModelGone(_) => "model not found at provider".into(),
            Failure::Request(m) => format!("request rejected: {m}"),
            Failure::Denied(m) => format!("access denied: {m}"),
            Failure::BadAnswer(m) => format!("bad answer: {m}"),
            Failure::TooLarge(_) => "prompt too large for this model".into(),
        }
    }

    /// A short tag for the request log.
    pub fn tag(&self) -> &'static str {
        match self {
            Failure::RateLimited { .. } => "rate_limited",
            Failure::Server(_) => "server_error",
            Failure::InvalidKey(_) => "invalid_key",
            Failure::ModelGone(_) => "model_gone",
            Failure::Request(_) => "request_error",
            Failure::Denied(_) => "denied",
            Failure::BadAnswer(_) => "bad_answer",
            Failure::TooLarge(_) => "too_large",
        }
    }
}

/// Classify a non-2xx answer.
pub fn classify(status: u16, retry_after: Option<&str>, body: &[u8]) -> Failure {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let message = scrub(&error_message(json.as_ref(), body));
    let lower = message.to_ascii_lowercase();
    let quota_words = [
        "rate limit",
        "rate_limit",
        "quota",
        "too many requests",
        "resource_exhausted",
    ];
    let is_quota = quota_words.iter().any(|w| lower.contains(w));
    let raw_lower = String::from_utf8_lossy(body).to_ascii_lowercase();
    let invalid_key = raw_lower.contains("api_key_invalid")
        || lower.contains("api key not valid")
        || lower.contains("invalid api key")
        || lower.contains("incorrect api key")
        || lower.contains("invalid_api_key")
        || lower.contains("invalid authentication")
        || lower.contains("unauthorized");
    if status == 429 || (is_quota && (400..500).contains(&status) && status != 401) {
        let retry = retry_after
            .and_then(parse_retry_after)
            .or_else(|| {
                json.as_ref()
                    .and_then(gemini::retry_delay_secs)
                    .and_then(crate::ledger::secs)
            })
            .or_else(|| retry_in_text(&lower));
        let daily = [
            "per day",
            "perday",
            "daily",
            "rpd",
            "per-day",
            "requests per day",
            "tokens per day",
        ]
        .iter()
        .any(|w| raw_lower.contains(w));
        return Failure::RateLimited {
            retry_after: retry,
            daily,
            message,
        };
    }
    match status {
        401 => Failure::InvalidKey(message),
        400 if invalid_key => Failure::InvalidKey(message),
        403 if invalid_key => Failure::InvalidKey(message),
        402 | 403 => Failure::Denied(message),
        404 => Failure::ModelGone(message),
        413 => Failure::TooLarge(message),
        400 | 422 => Failure::Request(message),
        s if s >= 500 => Failure::Server(format!("upstream {s}")),
        s => Failure::Server(format!("upstream {s}: {}", truncate(&message, 120))),
    }
}

fn error_message(json: Option<&Value>, body: &[u8]) -> String {
    let from_json = json.and_then(|v| {
        let v = v.as_array().and_then(|a| a.first()).unwrap_or(v);
        v.pointer("/error/message")
            .or_else(|| v.get("error").filter(|e| e.is_string()))
            .or_else(|| v.get("message"))
            .or_else(|| v.get("detail"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    from_json.unwrap_or_else(|| truncate(String::from_utf8_lossy(body).trim(), 500))
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// `Retry-After`: seconds, or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return crate::ledger::secs(secs);
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let secs = at.timestamp() - chrono::Utc::now().timestamp();
    Some(Duration::from_secs(secs.clamp(0, 1_000_000_000) as u64))
}

/// "try again in 7.66s", "retry in 17.5s", "retry after 20 seconds".
fn retry_in_text(lower: &str) -> Option<Duration> {
    for marker in ["try again in ", "retry in ", "retry after ", "retry-after "] {
        let Some(pos) = lower.find(marker) else {
            continue;
        };
        let rest = &lower[pos + marker.len()..];
        let mut words = rest.split_whitespace();
        let first = words.next()?.trim_end_matches(['.', ',', ')']);
        if let Some(d) = crate::ledger::parse_reset(first) {
            let unit = words.next().unwrap_or("");
            let scale = if unit.starts_with("min") {
                60.0
            } else if unit.starts_with("hour") {
                3600.0
            } else if unit.starts_with("ms") || unit.starts_with("milli") {
                0.001
            } else {
                1.0
            };
            let plain_number = first.parse::<f64>().is_ok();
            return if plain_number {
                crate::ledger::secs(d.as_secs_f64() * scale)
            } else {
                Some(d)
            };
        }
    }
    None
}

/// Read a non-streaming 200 answer: the bytes to hand the client and the usage.
pub fn read_answer(
    dialect: Dialect,
    body: Bytes,
    id: &str,
    model: &str,
    created: i64,
) -> Result<(Bytes, (u64, u64)), Failure> {
    match dialect {
        Dialect::Openai => {
            let answer: Answer = serde_json::from_slice(&body)
                .map_err(|e| Failure::BadAnswer(format!("not a chat completion ({e})")))?;
            if !answer.has_content() {
                return Err(Failure::BadAnswer("empty answer".into()));
            }
            let usage = answer
                .usage
                .map_or((0, 0), |u| (u.prompt_tokens, u.completion_tokens));
            // Passed through as received: no re-serialization on the hot path.
            Ok((body, usage))
        }
        Dialect::Gemini => {
            let v: Value = serde_json::from_slice(&body)
                .map_err(|e| Failure::BadAnswer(format!("not JSON ({e})")))?;
            let out = gemini::from_upstream(&v, id, model, created)
                .map_err(|e| Failure::BadAnswer(e.0))?;
            let usage = (
                out.pointer("/usage/prompt_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
                out.pointer("/usage/completion_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
            );
            Ok((
                Bytes::from(serde_json::to_vec(&out).unwrap_or_default()),
                usage,
            ))
        }
    }
}

/// What one upstream event turned into.
#[derive(Debug, Default)]
pub struct Mapped {
    /// Framed SSE bytes for the client.
    pub out: Vec<Bytes>,
    /// Some text, tool call or reasoning was in it.
    pub content: bool,
    /// A finish reason was in it.
    pub finished: bool,
    /// The upstream said the stream is over (`[DONE]`).
    pub done: bool,
    /// The upstream reported an error inside the stream.
    pub error: Option<String>,
    /// Gemini thought signatures of tool calls (id, signature) to remember.
    pub signatures: Vec<(String, String)>,
}

/// Turns upstream stream events into client events, per dialect; keeps the usage.
pub enum StreamMap {
    Openai {
        /// Drop usage-only chunks: Freeway asked for them, the client did not.
        hide_usage: bool,
        usage: Option<(u64, u64)>,
        /// Content has been seen: from then on only finish reasons, usage and errors matter,
        /// and chunks that cannot hold one are forwarded without parsing.
        seen_content: bool,
    },
    Gemini(Box<gemini::Stream>),
}

impl StreamMap {
    pub fn new(
        dialect: Dialect,
        hide_usage: bool,
        id: &str,
        model: &str,
        created: i64,
    ) -> StreamMap {
        match dialect {
            Dialect::Openai => StreamMap::Openai {
                hide_usage,
                usage: None,
                seen_content: false,
            },
            Dialect::Gemini => StreamMap::Gemini(Box::new(gemini::Stream::new(id, model, created))),
        }
    }

    pub fn on_event(&mut self, ev: &sse::Event) -> Mapped {
        let mut m = Mapped::default();
        match self {
            StreamMap::Openai {
                hide_usage,
                usage,
                seen_content,
            } => {
                let data = ev.data.trim();
                if data == "[DONE]" {
                    m.done = true;
                    return m;
                }
                if *seen_content && !may_matter(data) {
                    m.out.push(sse::frame(data));
                    return m;
                }
                let chunk: Chunk = match serde_json::from_str(data) {
                    Ok(c) => c,
                    Err(e) => {
                        m.error = Some(format!("malformed stream event ({e})"));
                        return m;
                    }
                };
                if let Some(err) = &chunk.error {
                    let msg = err
                        .get("message")
                        .and_then(Value::as_str)
                        .map_or_else(|| err.to_string(), str::to_string);
                    m.error = Some(scrub(&msg));
                    return m;
                }
                if let Some(u) = chunk.usage {
                    *usage = Some((u.prompt_tokens, u.completion_tokens));
                }
                m.content = chunk.has_content();
                *seen_content |= m.content;
                m.finished = chunk.finish_reason().is_some();
                let usage_only = chunk.choices.is_empty() && chunk.usage.is_some();
                if !(usage_only && *hide_usage) {
                    m.out.push(sse::frame(data));
                }
            }
            StreamMap::Gemini(s) => match s.on_event(&ev.data) {
                Ok(chunks) => {
                    for c in chunks {
                        m.signatures.extend(gemini::signatures(&c));
                        if let Ok(text) = serde_json::to_string(&c) {
                            m.out.push(sse::frame(&text));
                        }
                    }
                    m.content = s.has_content();
                    m.finished = s.finished();
                }
                Err(e) => m.error = Some(scrub(&e.0)),
            },
        }
        m
    }

    /// (prompt, completion) tokens reported so far.
    pub fn usage(&self) -> Option<(u64, u64)> {
        match self {
            StreamMap::Openai { usage, .. } => *usage,
            StreamMap::Gemini(s) => s.usage(),
        }
    }
}

/// Whether an OpenAI chunk may carry a finish reason, usage or an error: one of those keys with
/// a value other than `null`. A false "yes" costs only a parse; a key inside the text is escaped
/// (`\"usage\"`) and does not match.
fn may_matter(data: &str) -> bool {
    use memchr::memmem::Finder;
    // Built once: building a searcher costs more than running it on a chunk.
    static KEYS: std::sync::LazyLock<[Finder<'static>; 3]> = std::sync::LazyLock::new(|| {
        [
            Finder::new(b"\"finish_reason\""),
            Finder::new(b"\"usage\""),
            Finder::new(b"\"error\""),
        ]
    });
    let bytes = data.as_bytes();
    KEYS.iter().any(|key| {
        key.find_iter(bytes).any(|at| {
            let rest = skip_ws(&bytes[at + key.needle().len()..]);
            match rest.split_first() {
                Some((b':', value)) => !skip_ws(value).starts_with(b"null"),
                _ => false,
            }
        })
    })
}

fn skip_ws(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_chunks_that_may_matter_are_parsed() {
        assert!(!may_matter(
            r#"{"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#
        ));
        assert!(!may_matter(
            r#"{"choices":[{"delta":{"content":"the \"usage\": 5 and \"error\""},"finish_reason" : null}],"usage":null}"#
        ));
        assert!(may_matter(
            r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#
        ));
        assert!(may_matter(
            r#"{"choices":[{"delta":{},"finish_reason" :  "length"}]}"#
        ));
        assert!(may_matter(r#"{"choices":[],"usage":{"prompt_tokens":1}}"#));
        assert!(may_matter(r#"{"error":{"message":"boom"}}"#));
    }

    #[test]
    fn classification_follows_the_failover_table() {
        let f = classify(429, Some("7"), b"{\"error\":{\"message\":\"slow down\"}}");
        assert_eq!(
            f,
            Failure::RateLimited {
                retry_after: Some(Duration::from_secs(7)),
                daily: false,
                message: "slow down".into()
            }
        );
        let f = classify(429, None, b"{\"error\":{\"message\":\"Rate limit reached for requests per day (RPD): Limit 1000. Please try again in 7.66s.\"}}");
        assert!(
            matches!(f, Failure::RateLimited { daily: true, retry_after: Some(d), .. } if (d.as_secs_f64() - 7.66).abs() < 0.01)
        );
        let gemini_429 = br#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"17s"}]}}"#;
        assert!(
            matches!(classify(429, None, gemini_429), Failure::RateLimited { retry_after: Some(d), .. } if d.as_secs() == 17)
        );
        assert!(matches!(classify(500, None, b"oops"), Failure::Server(_)));
        assert!(matches!(classify(503, None, b""), Failure::Server(_)));
        assert!(matches!(classify(401, None, b"{}"), Failure::InvalidKey(_)));
        let gemini_bad_key = br#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"reason":"API_KEY_INVALID"}]}}"#;
        assert!(matches!(
            classify(400, None, gemini_bad_key),
            Failure::InvalidKey(_)
        ));
        assert!(matches!(
            classify(
                403,
                None,
                b"{\"error\":{\"message\":\"User location is not supported\"}}"
            ),
            Failure::Denied(_)
        ));
        assert!(matches!(classify(402, None, b"{}"), Failure::Denied(_)));
        assert!(matches!(classify(404, None, b"{}"), Failure::ModelGone(_)));
        assert!(
            matches!(classify(400, None, b"{\"error\":{\"message\":\"messages: bad\"}}"), Failure::Request(m) if m == "messages: bad")
        );
        assert!(matches!(
            classify(422, None, b"{\"detail\":\"extra field\"}"),
            Failure::Request(_)
        ));
    }

    #[test]
    fn relayed_messages_are_scrubbed() {
        let f = classify(
            400,
            None,
            b"{\"error\":{\"message\":\"bad request for key sk-proj-ABCDEFGHIJ1234567890xyz\"}}",
        );
        let Failure::Request(m) = f else { panic!() };
        assert!(!m.contains("ABCDEFGHIJ1234567890"), "{m}");
    }

    /// Found by the `classify` fuzz target: huge waits from an upstream must not panic.
    #[test]
    fn absurd_retry_delays_are_ignored_not_fatal() {
        let bodies: [&[u8]; 3] = [
            br#"{"error":{"details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"100000000000000000000s"}]}}"#,
            br#"{"error":{"message":"Please retry in 100000000000000000000s."}}"#,
            br#"[{"error":{"code":429,"message":"33 retry in 333333333333333333333333333333333333333 08:00"}}]"#,
        ];
        for body in bodies {
            assert!(matches!(
                classify(429, Some("1e300"), body),
                Failure::RateLimited {
                    retry_after: None,
                    ..
                }
            ));
        }
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT"),
            Some(Duration::from_secs(1_000_000_000))
        );
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("12"), Some(Duration::from_secs(12)));
        assert_eq!(
            retry_in_text("please retry after 20 seconds"),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            retry_in_text("try again in 2 minutes."),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            retry_in_text("try again in 1m30s."),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
    }
}
