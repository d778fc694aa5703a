//! What went wrong with an upstream attempt, in the terms of the failover table (SPEC 3.4):
//! status codes, bodies and headers read into a [`Failure`]. Pure; the router decides what to
//! do about each kind.

use serde_json::Value;
use std::time::Duration;

use crate::error::scrub;

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
    /// 410, or a 404 that says the model was decommissioned: the provider retired the model
    /// (not the key). It is switched off until the user enables it again.
    Retired(String),
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
            Failure::Retired(m) => format!("model retired by the provider: {m}"),
            Failure::Request(m) => format!("request rejected: {m}"),
            Failure::Denied(m) => format!("access denied: {m}"),
            Failure::BadAnswer(m) => format!("bad answer: {m}"),
            Failure::TooLarge(_) => "prompt too large for this model".into(),
        }
    }

    /// The same failure with `redact` applied to the upstream's words it carries.
    pub fn redacted(self, redact: impl Fn(&str) -> String) -> Failure {
        match self {
            Failure::RateLimited {
                retry_after,
                daily,
                message,
            } => Failure::RateLimited {
                retry_after,
                daily,
                message: redact(&message),
            },
            Failure::Server(m) => Failure::Server(redact(&m)),
            Failure::InvalidKey(m) => Failure::InvalidKey(redact(&m)),
            Failure::ModelGone(m) => Failure::ModelGone(redact(&m)),
            Failure::Retired(m) => Failure::Retired(redact(&m)),
            Failure::Request(m) => Failure::Request(redact(&m)),
            Failure::Denied(m) => Failure::Denied(redact(&m)),
            Failure::BadAnswer(m) => Failure::BadAnswer(redact(&m)),
            Failure::TooLarge(m) => Failure::TooLarge(redact(&m)),
        }
    }

    /// A short tag for the request log.
    pub fn tag(&self) -> &'static str {
        match self {
            Failure::RateLimited { .. } => "rate_limited",
            Failure::Server(_) => "server_error",
            Failure::InvalidKey(_) => "invalid_key",
            Failure::ModelGone(_) => "model_gone",
            Failure::Retired(_) => "retired",
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
            .or_else(|| json.as_ref().and_then(super::gemini::retry_delay))
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
    // SPEC 3.7: a 410, or a 404 that says the model was decommissioned. Never a 400: its
    // words may echo what the client sent.
    let retired = raw_lower.contains("decommissioned") || raw_lower.contains("no longer supported");
    match status {
        410 => Failure::Retired(truncate(&message, 200)),
        404 if retired => Failure::Retired(truncate(&message, 200)),
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
        return crate::units::secs(secs);
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let secs = at.timestamp() - chrono::Utc::now().timestamp();
    Some(Duration::from_secs(secs.clamp(0, 1_000_000_000) as u64))
}

/// "try again in 7.66s", "retry in 17.5s", "retry after 20 seconds", "try again in 2 minutes".
fn retry_in_text(lower: &str) -> Option<Duration> {
    for marker in ["try again in ", "retry in ", "retry after ", "retry-after "] {
        let Some(pos) = lower.find(marker) else {
            continue;
        };
        let rest = &lower[pos + marker.len()..];
        let mut words = rest.split_whitespace();
        let first = words.next()?.trim_end_matches(['.', ',', ')']);
        if let Ok(n) = first.parse::<f64>() {
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
            return crate::units::secs(n * scale);
        }
        if let Ok(d) = crate::units::parse_duration(first) {
            return Some(d);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

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
            matches!(classify(410, None, b"{\"error\":{\"message\":\"gone\"}}"), Failure::Retired(m) if m == "gone")
        );
        let decommissioned = br#"{"error":{"message":"The model `llama-3.1-8b-instant` has been decommissioned and is no longer supported."}}"#;
        assert!(matches!(
            classify(404, None, decommissioned),
            Failure::Retired(_)
        ));
        assert!(
            !matches!(classify(400, None, decommissioned), Failure::Retired(_)),
            "a 400 may echo the client's own words"
        );
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
