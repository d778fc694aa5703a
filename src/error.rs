//! The one error type a client can see, whatever surface it speaks; each surface renders it in
//! its own dialect (`wire::openai::error_body` for the OpenAI shape).
//!
//! Error policy:
//! - Errors are grouped by who is at fault: the client (4xx), the upstreams (429/502/503 after
//!   failover), or Freeway itself (500).
//! - Every message says what to do next, and never contains an upstream key, a fragment of one,
//!   or an upstream URL that carries one. Upstream text passes through [`scrub`] first.
//! - A failed request is logged once, in the request log (and at `warn` by the HTTP layer for
//!   5xx); the failover loop logs each failed attempt at `info` as it happens.

use std::time::Duration;

/// What a client can be told went wrong. Rendered by `http` as `{"error": {...}}`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON, lacks a required field or has a field of the wrong type.
    #[error("{0}")]
    InvalidRequest(String),
    /// Missing or wrong client key.
    #[error("{0}")]
    Unauthorized(String),
    /// Unknown or disabled model.
    #[error("{0}")]
    ModelNotFound(String),
    /// Body over `max_body`.
    #[error("{0}")]
    TooLarge(String),
    /// The body did not arrive in time.
    #[error("{0}")]
    RequestTimeout(String),
    /// The prompt does not fit any candidate's context window.
    #[error("{0}")]
    ContextTooLong(String),
    /// Every candidate is capped, cooling down or answered 429.
    #[error("{message}")]
    RateLimited {
        message: String,
        /// Soonest moment a candidate frees up.
        retry_after: Option<Duration>,
    },
    /// The client key is over one of its own limits (SPEC 3.8): not an upstream's.
    #[error("{message}")]
    ClientQuota {
        message: String,
        /// When the limit frees up.
        retry_after: Option<Duration>,
    },
    /// The client key may not use the model.
    #[error("{0}")]
    ModelNotAllowed(String),
    /// Every attempt failed and at least one for a reason other than a rate limit.
    #[error("{0}")]
    UpstreamFailed(String),
    /// No enabled, valid key can serve the requested model at all.
    #[error("{0}")]
    NoProviders(String),
    /// The route does not exist.
    #[error("{0}")]
    NotFound(String),
    /// An `Idempotency-Key` sent again with another request (SPEC 2.8).
    #[error("{0}")]
    IdempotencyKeyReused(String),
}

impl ApiError {
    /// When to try again, for the `Retry-After` header.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after, .. }
            | ApiError::ClientQuota { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// HTTP status as SPEC 2.3 gives it.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::InvalidRequest(_) => 400,
            ApiError::Unauthorized(_) => 401,
            ApiError::ModelNotAllowed(_) => 403,
            ApiError::ModelNotFound(_) | ApiError::NotFound(_) => 404,
            ApiError::RequestTimeout(_) => 408,
            ApiError::IdempotencyKeyReused(_) => 422,
            ApiError::TooLarge(_) | ApiError::ContextTooLong(_) => 413,
            ApiError::RateLimited { .. } | ApiError::ClientQuota { .. } => 429,
            ApiError::UpstreamFailed(_) => 502,
            ApiError::NoProviders(_) => 503,
        }
    }

    /// The machine-readable code (SPEC 2.3).
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::Unauthorized(_) => "invalid_api_key",
            ApiError::ModelNotFound(_) => "model_not_found",
            ApiError::TooLarge(_) => "request_too_large",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::ContextTooLong(_) => "context_length_exceeded",
            ApiError::RateLimited { .. } => "rate_limit_exceeded",
            ApiError::ClientQuota { .. } => "client_quota_exceeded",
            ApiError::ModelNotAllowed(_) => "model_not_allowed",
            ApiError::UpstreamFailed(_) => "upstream_failed",
            ApiError::NoProviders(_) => "no_providers_configured",
            ApiError::NotFound(_) => "not_found",
            ApiError::IdempotencyKeyReused(_) => "idempotency_key_reused",
        }
    }
}

/// Remove anything that looks like a credential from text that came from an upstream.
///
/// Upstream error messages sometimes echo the key ("Incorrect API key provided: gsk_abc...") or
/// a URL with `key=` in it. Long runs of key-ish characters are replaced, as are `key=` query
/// values. Ordinary words and numbers are far shorter than any real key, so they survive.
pub fn scrub(text: &str) -> String {
    const MIN_SECRET: usize = 20;
    let mut out = String::with_capacity(text.len());
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        if looks_secret(token, MIN_SECRET) {
            out.push_str("[redacted]");
        } else {
            out.push_str(token);
        }
        token.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '~' | '+' | '/' | '=') {
            token.push(c);
        } else {
            flush(&mut token, &mut out);
            out.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

/// Prefixes vendors put in front of their keys.
const KEY_PREFIXES: &[&str] = &[
    "AIza",
    "gsk_",
    "sk-",
    "csk-",
    "nvapi-",
    "hf_",
    "r8_",
    "xai-",
    "pk-",
    "ghp_",
    "github_pat_",
];

fn looks_secret(token: &str, min: usize) -> bool {
    if token.contains("key=") {
        return true;
    }
    // Split on separators a URL or a sentence would use, then judge each piece.
    token.split(['/', '=', '.']).any(|piece| {
        if piece.len() < min {
            return false;
        }
        let mixed = |s: &str| {
            s.chars().any(|c| c.is_ascii_digit()) && s.chars().any(|c| c.is_ascii_alphabetic())
        };
        // A vendor's key prefix; or one long run that mixes letters and digits (a model id is
        // short words joined by `-`: `llama-4-scout-17b-16e-instruct` is no key); or a long
        // piece mixing upper case, lower case and digits, as encoded keys do.
        KEY_PREFIXES.iter().any(|p| piece.starts_with(p)) && mixed(piece)
            || piece
                .split(['-', '_'])
                .any(|run| run.len() >= 16 && mixed(run))
            || piece.len() >= 32
                && mixed(piece)
                && piece.chars().any(|c| c.is_ascii_uppercase())
                && piece.chars().any(|c| c.is_ascii_lowercase())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes_follow_the_spec() {
        let cases = [
            (ApiError::InvalidRequest("x".into()), 400, "invalid_request"),
            (ApiError::Unauthorized("x".into()), 401, "invalid_api_key"),
            (ApiError::ModelNotFound("x".into()), 404, "model_not_found"),
            (ApiError::TooLarge("x".into()), 413, "request_too_large"),
            (
                ApiError::ContextTooLong("x".into()),
                413,
                "context_length_exceeded",
            ),
            (
                ApiError::RateLimited {
                    message: "x".into(),
                    retry_after: None,
                },
                429,
                "rate_limit_exceeded",
            ),
            (ApiError::UpstreamFailed("x".into()), 502, "upstream_failed"),
            (
                ApiError::ClientQuota {
                    message: "x".into(),
                    retry_after: None,
                },
                429,
                "client_quota_exceeded",
            ),
            (
                ApiError::ModelNotAllowed("x".into()),
                403,
                "model_not_allowed",
            ),
            (
                ApiError::NoProviders("x".into()),
                503,
                "no_providers_configured",
            ),
        ];
        for (err, status, code) in cases {
            assert_eq!(err.status(), status);
            assert_eq!(err.code(), code);
            let body = crate::wire::openai::error_body(&err);
            assert_eq!(body["error"]["code"], code);
            assert_eq!(body["error"]["message"], "x");
        }
    }

    #[test]
    fn scrub_removes_keys_but_keeps_prose() {
        let msg = "Incorrect API key provided: gsk_Zq81bL0x3f2A9cdEfGh12345. See https://x.dev/docs?key=AIzaSyA1234567890abcdefgh";
        let s = scrub(msg);
        assert!(!s.contains("gsk_Zq81bL0x3f2A9cdEfGh12345"), "{s}");
        assert!(!s.contains("AIzaSyA1234567890abcdefgh"), "{s}");
        assert!(s.starts_with("Incorrect API key provided: [redacted]"));
        let plain = "max_tokens must be at most 4096, got 10000";
        assert_eq!(scrub(plain), plain);
        for model in [
            "The model `meta-llama/llama-4-scout-17b-16e-instruct` does not support tools",
            "Qwen/Qwen2.5-Coder-32B-Instruct is busy",
            "mistralai/Mistral-Small-3.2-24B-Instruct-2506",
            "nvidia/llama-3.1-nemotron-ultra-253b-v1 and gemini-2.5-flash-preview-09-2025",
        ] {
            assert_eq!(scrub(model), model, "a model id is not a key");
        }
        for key in [
            "sk-or-v1-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "csk-abcd1234efgh5678ijkl9012mnop",
            "nvapi-Ab3_dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5zA7bC9",
            "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
            "hf_AbCdEfGhIjKlMnOpQrStUvWxYz12345678",
        ] {
            let s = scrub(&format!("bad key {key} here"));
            assert_eq!(s, "bad key [redacted] here", "{key}");
        }
    }
}
