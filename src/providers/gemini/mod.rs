//! Google Gemini's native API (`generateContent`, `streamGenerateContent?alt=sse`), translated
//! both ways: `request` builds the upstream body from a canonical request, `answer` reads a whole
//! answer into a typed message, `stream` reads a streamed answer into events, `schema` cleans
//! tool and response schemas of what Gemini rejects.
//!
//! Everything here is pure but [`Signatures`], the dialect's own memory of thought signatures.
//! Inputs come from clients and from the upstream, so every accessor tolerates missing or
//! mistyped fields instead of indexing or unwrapping.

mod answer;
mod request;
mod schema;
mod stream;

pub use answer::from_upstream;
pub use request::to_upstream;
pub use schema::clean_schema;
pub use stream::Stream;

use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// An error in the client's request that Gemini cannot express (becomes an HTTP 400 for the client).
#[derive(Debug, Clone, PartialEq)]
pub struct TranslateError(pub String);

impl std::fmt::Display for TranslateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TranslateError {}

fn terr(msg: impl Into<String>) -> TranslateError {
    TranslateError(msg.into())
}

/// SDKs routinely serialize unset options as `null`, so null is treated exactly like absence.
fn field<'a>(obj: &'a Value, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn opt_str<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str)
}

fn opt_f64(req: &Value, key: &str) -> Result<Option<f64>, TranslateError> {
    match field(req, key) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| terr(format!("`{key}` must be a number"))),
    }
}

/// Accepts `100` and `100.0` alike: some clients (JS) cannot tell the two apart.
fn as_integer(v: &Value) -> Option<i64> {
    if let Some(i) = v.as_i64() {
        return Some(i);
    }
    let f = v.as_f64()?;
    // 2^53: beyond it f64 no longer represents every integer, so the value is not trustworthy.
    (f.is_finite() && f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0).then_some(f as i64)
}

fn opt_int(req: &Value, key: &str, min: i64) -> Result<Option<i64>, TranslateError> {
    match field(req, key) {
        None => Ok(None),
        Some(v) => as_integer(v)
            .filter(|i| *i >= min)
            .map(Some)
            .ok_or_else(|| terr(format!("`{key}` must be an integer >= {min}"))),
    }
}

/// URL path (relative to base URL like https://generativelanguage.googleapis.com/v1beta) for the call.
/// non-stream: "models/{model}:generateContent"; stream: "models/{model}:streamGenerateContent?alt=sse"
pub fn path(upstream_model: &str, stream: bool) -> String {
    let model = upstream_model
        .strip_prefix("models/")
        .unwrap_or(upstream_model);
    // Percent-encode so a configured model id can never smuggle in `/`, `?` or `#`.
    let mut enc = String::with_capacity(model.len());
    for b in model.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            enc.push(char::from(b));
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    if stream {
        format!("models/{enc}:streamGenerateContent?alt=sse")
    } else {
        format!("models/{enc}:generateContent")
    }
}

/// Gemini 3 wants the thought signature of a function call back when the call is replayed, and
/// most OpenAI clients drop the vendor field that carries it: the dialect remembers signatures
/// by tool-call id (bounded; the oldest are forgotten first).
#[derive(Default)]
pub struct Signatures {
    inner: Mutex<(HashMap<String, String>, VecDeque<String>)>,
}

impl Signatures {
    const CAPACITY: usize = 10_000;

    pub fn get(&self, id: &str) -> Option<String> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .get(id)
            .cloned()
    }

    pub fn put(&self, id: &str, signature: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner
            .0
            .insert(id.to_string(), signature.to_string())
            .is_none()
        {
            inner.1.push_back(id.to_string());
        }
        while inner.1.len() > Self::CAPACITY {
            if let Some(old) = inner.1.pop_front() {
                inner.0.remove(&old);
            }
        }
    }

    /// Remember the signature a tool call carries, if any.
    pub fn remember(&self, id: &str, extra: Option<&Value>) {
        if let Some(sig) = extra
            .and_then(|e| e.pointer("/google/thought_signature"))
            .and_then(Value::as_str)
        {
            self.put(id, sig);
        }
    }
}

/// The vendor field that carries a thought signature on an OpenAI-shaped tool call.
pub(crate) fn signature_extra(signature: Option<&str>) -> Option<Value> {
    signature.map(|s| serde_json::json!({ "google": { "thought_signature": s } }))
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// A duration in a Gemini error: `"17s"` (protobuf JSON), a number of seconds, or
/// `{"seconds", "nanos"}` as some client libraries write it.
fn duration_value(v: &Value) -> Option<Duration> {
    match v {
        Value::String(s) => crate::units::parse_duration(s).ok(),
        Value::Number(n) => n.as_f64().and_then(crate::units::secs),
        Value::Object(o) => {
            let secs = o.get("seconds").and_then(|s| match s {
                Value::String(s) => s.parse::<f64>().ok(),
                other => other.as_f64(),
            })?;
            let nanos = o.get("nanos").and_then(Value::as_f64).unwrap_or(0.0);
            crate::units::secs(secs + nanos / 1e9)
        }
        _ => None,
    }
}

/// The retry delay in a Gemini error body (error.details[].retryDelay like "17s" or "1.5s").
pub fn retry_delay(error_body: &Value) -> Option<Duration> {
    // Streaming endpoints without `alt=sse` wrap the error in a one-element array.
    let body = match error_body {
        Value::Array(items) => items.first()?,
        other => other,
    };
    let err = body.get("error").unwrap_or(body);
    if let Some(details) = err.get("details").and_then(Value::as_array) {
        for detail in details {
            let is_retry_info = opt_str(detail, "@type").is_some_and(|t| t.ends_with("RetryInfo"));
            if is_retry_info && let Some(secs) = detail.get("retryDelay").and_then(duration_value) {
                return Some(secs);
            }
        }
    }
    let message = opt_str(err, "message")?;
    // ASCII lowercasing keeps byte offsets valid for slicing the original.
    let lower = message.to_ascii_lowercase();
    let at = lower.find("retry in ")? + "retry in ".len();
    let token = message.get(at..)?.split_whitespace().next()?;
    crate::units::parse_duration(token.trim_end_matches(['.', ',', ';', ')'])).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{Event, Finish};
    use serde_json::json;

    fn up(req: Value) -> Value {
        match to_upstream(&req, &|_| None) {
            Ok(v) => v,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    #[test]
    fn thought_signature_round_trip() {
        let answer = from_upstream(&json!({
            "candidates": [{"content": {"role": "model", "parts": [
                {"functionCall": {"name": "lookup", "args": {"q": "rust"}}, "thoughtSignature": "SIG-A"},
                {"functionCall": {"name": "lookup", "args": {"q": "go"}}},
            ]}, "finishReason": "STOP"}]
        }), "chatcmpl-1", "gemini-2.5-flash").unwrap();
        let answer = crate::wire::openai::completion(&answer, "chatcmpl-1", 1700);
        let calls = &answer["choices"][0]["message"]["tool_calls"];
        assert_eq!(
            calls[0]["extra_content"],
            json!({"google": {"thought_signature": "SIG-A"}})
        );
        assert!(calls[1].get("extra_content").is_none());
        // What the dialect remembers of the answer's calls.
        let remembered = Signatures::default();
        for call in answer["choices"][0]["message"]["tool_calls"]
            .as_array()
            .unwrap()
        {
            remembered.remember(call["id"].as_str().unwrap(), call.get("extra_content"));
        }
        assert_eq!(
            remembered.get("call_chatcmpl-1_0").as_deref(),
            Some("SIG-A")
        );
        assert_eq!(remembered.get("call_chatcmpl-1_1"), None);

        // The client replays the assistant message verbatim.
        let replay = json!({"messages": [
            {"role": "user", "content": "search"},
            answer["choices"][0]["message"].clone(),
            {"role": "tool", "tool_call_id": "call_chatcmpl-1_0", "content": "r1"},
            {"role": "tool", "tool_call_id": "call_chatcmpl-1_1", "content": "r2"},
        ]});
        let out = up(replay);
        let parts = &out["contents"][1]["parts"];
        assert_eq!(parts[0]["thoughtSignature"], json!("SIG-A"));
        assert_eq!(
            parts[0]["functionCall"],
            json!({"name": "lookup", "args": {"q": "rust"}})
        );
        assert!(parts[1].get("thoughtSignature").is_none());
        assert_eq!(
            out["contents"][2]["parts"][1]["functionResponse"]["name"],
            json!("lookup")
        );

        // A client that strips unknown fields: the signature comes from the runtime's cache.
        let stripped = json!({"messages": [
            {"role": "user", "content": "search"},
            {"role": "assistant", "tool_calls": [
                {"id": "call_chatcmpl-1_0", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
        ]});
        let lookup = |id: &str| remembered.get(id);
        let out = match to_upstream(&stripped, &lookup) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            out["contents"][1]["parts"][0]["thoughtSignature"],
            json!("SIG-A")
        );
    }

    #[test]
    fn retry_delays() {
        let body = json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Quota exceeded", "details": [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"},
        ]}});
        assert_eq!(retry_delay(&body), Some(Duration::from_secs(17)));
        let body = json!({"error": {"details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}]}});
        assert_eq!(retry_delay(&body), Some(Duration::from_millis(1500)));
        let body = json!({"error": {"details": [{"@type": "x.RetryInfo", "retryDelay": "1m30s"}]}});
        assert_eq!(retry_delay(&body), Some(Duration::from_secs(90)));
        let body = json!({"error": {"message": "You exceeded your quota. Please retry in 17.5s.", "details": []}});
        assert_eq!(retry_delay(&body), Some(Duration::from_millis(17500)));
        let body = json!([{"error": {"details": [{"@type": "google.rpc.RetryInfo", "retryDelay": "250ms"}]}}]);
        assert_eq!(retry_delay(&body), Some(Duration::from_millis(250)));
        assert_eq!(retry_delay(&json!({"error": {"message": "nope"}})), None);
        assert_eq!(
            retry_delay(&json!({"error": {"message": "retry in soon"}})),
            None
        );
    }

    #[test]
    fn paths() {
        assert_eq!(
            path("gemini-2.5-flash", false),
            "models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(
            path("models/gemini-2.5-pro", true),
            "models/gemini-2.5-pro:streamGenerateContent?alt=sse"
        );
        assert_eq!(path("a/b?c", false), "models/a%2Fb%3Fc:generateContent");
    }

    #[test]
    fn never_panics_on_odd_values() {
        let odd = vec![
            Value::Null,
            json!(0),
            json!(-1.5),
            json!(u64::MAX),
            json!("str"),
            json!(true),
            json!([]),
            json!([[[[null]]]]),
            json!({}),
            json!({"messages": null}),
            json!({"messages": [null, 1, "x", [], {}]}),
            json!({"messages": [{"role": 5}]}),
            json!({"messages": [{"role": "user", "content": [null, 1, {"type": 3}, {"type": "image_url"}, {"type": "image_url", "image_url": 7}]}]}),
            json!({"messages": [{"role": "assistant", "tool_calls": [null, {"function": 1}, {"function": {"name": "f", "arguments": 3}}]}]}),
            json!({"messages": [{"role": "tool", "content": {"a": 1}}]}),
            json!({"messages": [{"role": "user", "content": "x"}], "tools": [null, {"function": {"name": "f", "parameters": [1]}}]}),
            json!({"messages": [{"role": "user", "content": "x"}], "tool_choice": {"function": []}, "stop": {}, "n": 0, "seed": 1.5}),
            json!({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema", "json_schema": 3}}),
            json!({"candidates": null, "promptFeedback": 1}),
            json!({"candidates": [null, 1, {"content": 1}, {"content": {"parts": [null, {"functionCall": 1}, {"text": 5}]}}]}),
            json!({"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": [1]}}]}, "finishReason": 9, "index": "x"}]}),
            json!({"candidates": [{"index": u64::MAX, "content": {"parts": [{"text": "x"}]}}], "usageMetadata": {"promptTokenCount": u64::MAX, "candidatesTokenCount": u64::MAX, "thoughtsTokenCount": u64::MAX}}),
            json!({"choices": [null, {"message": {"tool_calls": [null, {"id": 1}]}}, {"delta": {"tool_calls": 3}}]}),
            json!({"error": null}),
            json!({"error": {"details": [null, {"@type": 1}, {"@type": "RetryInfo", "retryDelay": {"seconds": "x"}}, {"@type": "RetryInfo", "retryDelay": "-5s"}], "message": 5}}),
            json!({"type": ["null"], "properties": 1, "items": [], "anyOf": 3, "allOf": [1, {"$ref": 5}], "enum": {}, "required": "x", "$ref": "#/$defs/"}),
            json!({"$defs": {"A": {"$ref": "#/$defs/B"}, "B": {"$ref": "#/$defs/A"}}, "$ref": "#/$defs/A"}),
        ];
        let lookup = |_: &str| Some("sig".to_string());
        for v in &odd {
            // Whatever goes in, a request that comes out is one Gemini accepts: turns with parts.
            if let Ok(out) = to_upstream(v, &lookup) {
                let turns = out["contents"].as_array().expect("contents");
                assert!(!turns.is_empty(), "{v}");
                for turn in turns {
                    assert!(
                        turn["parts"].as_array().is_some_and(|p| !p.is_empty()),
                        "{v}"
                    );
                }
            }
            // An answer that comes out says something, or was stopped by the filter.
            if let Ok(m) = from_upstream(v, "id", "m") {
                assert!(
                    !m.text.is_empty() || !m.calls.is_empty() || m.finish == Finish::ContentFilter,
                    "{v}"
                );
            }
            assert!(clean_schema(v).is_object(), "{v}");
            assert!(
                retry_delay(v).is_none_or(|d| d.as_secs() < 1_000_000_000),
                "{v}"
            );
            // A stream finishes at most once and reports content only with content events.
            let mut s = Stream::new("id");
            let mut events = Vec::new();
            for _ in 0..2 {
                if let Ok(e) = s.on_event(&v.to_string()) {
                    events.extend(e);
                }
            }
            let finishes = events
                .iter()
                .filter(|e| matches!(e, Event::Finish(_)))
                .count();
            assert!(finishes <= 1, "{v}");
            assert_eq!(s.finished(), finishes == 1, "{v}");
            assert_eq!(s.has_content(), events.iter().any(Event::is_content), "{v}");
        }
        for data in ["data: {}", "\u{0}", "{\"candidates\":", "null", "9e999"] {
            assert!(Stream::new("").on_event(data).is_err(), "{data:?}");
        }
        assert_eq!(Stream::new("").on_event("[DONE]"), Ok(vec![]));
        assert_eq!(Stream::new("").on_event(""), Ok(vec![]));
        assert_eq!(path("", true), "models/:streamGenerateContent?alt=sse");
        assert_eq!(
            path("models/ü/..", false),
            "models/%C3%BC%2F..:generateContent"
        );
    }
}
