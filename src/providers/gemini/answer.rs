//! Answers: a whole Gemini `GenerateContentResponse` into a typed message, and the pieces of
//! one that the stream reader shares (parts, finish reasons, usage, errors).

use serde_json::Value;

use super::{TranslateError, opt_str, signature_extra, terr};
use crate::chat::{Call, Finish, Message, Usage};

/// One part of a candidate that matters to a client.
pub(super) enum Part {
    Text(String),
    Call {
        name: String,
        args: String,
        signature: Option<String>,
    },
}

/// A candidate's parts in order; thought summaries are dropped because clients would show them
/// as answer text.
pub(super) fn parts(candidate: &Value) -> Result<Vec<Part>, TranslateError> {
    let Some(parts) = candidate
        .pointer("/content/parts")
        .and_then(Value::as_array)
    else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for part in parts {
        if part.get("thought").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        if let Some(text) = opt_str(part, "text") {
            if !text.is_empty() {
                out.push(Part::Text(text.to_string()));
            }
        } else if let Some(call) = part.get("functionCall") {
            let name = opt_str(call, "name")
                .filter(|n| !n.is_empty())
                .ok_or_else(|| terr("Gemini returned a function call without a name"))?;
            let args = match call.get("args") {
                Some(a @ Value::Object(_)) => a.to_string(),
                _ => "{}".to_string(),
            };
            let signature = opt_str(part, "thoughtSignature")
                .filter(|s| !s.is_empty())
                .map(String::from);
            out.push(Part::Call {
                name: name.to_string(),
                args,
                signature,
            });
        }
    }
    Ok(out)
}

/// A Gemini finish reason in canonical terms; a botched tool call is an error (another provider
/// or a retry can do better).
pub(super) fn finish(reason: Option<&str>) -> Result<Finish, TranslateError> {
    Ok(match reason.unwrap_or("STOP") {
        "MAX_TOKENS" => Finish::Length,
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT" => Finish::ContentFilter,
        r @ ("MALFORMED_FUNCTION_CALL" | "UNEXPECTED_TOOL_CALL") => {
            return Err(terr(format!("Gemini finished with {r}")));
        }
        _ => Finish::Stop,
    })
}

fn u64_at(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// `usageMetadata` in canonical terms. Thinking tokens are billed as output, as OpenAI's
/// reasoning tokens are.
pub(super) fn usage(meta: &Value) -> Usage {
    let thoughts = meta.get("thoughtsTokenCount").and_then(Value::as_u64);
    Usage {
        input: u64_at(meta, "promptTokenCount"),
        output: u64_at(meta, "candidatesTokenCount").saturating_add(thoughts.unwrap_or(0)),
        cached: meta.get("cachedContentTokenCount").and_then(Value::as_u64),
        reasoning: thoughts,
    }
}

pub(super) fn upstream_error(err: &Value) -> TranslateError {
    let msg = opt_str(err, "message")
        .map(String::from)
        .unwrap_or_else(|| err.to_string());
    terr(format!("Gemini returned an error: {msg}"))
}

pub(super) fn block_reason(body: &Value) -> Option<&str> {
    body.pointer("/promptFeedback/blockReason")
        .and_then(Value::as_str)
}

/// The id of the `n`-th tool call of an answer: Gemini names none, clients need one.
pub(super) fn call_id(seed: &str, n: u64) -> String {
    format!("call_{seed}_{n}")
}

/// Read a whole answer. `model` is the upstream model id that served it, `seed` makes tool-call
/// ids unique. An answer that says nothing (no candidate, no text and no call, except a safety
/// stop) is an error: the caller fails over.
pub fn from_upstream(body: &Value, seed: &str, model: &str) -> Result<Message, TranslateError> {
    if let Some(err) = body.get("error") {
        return Err(upstream_error(err));
    }
    let usage = body
        .get("usageMetadata")
        .filter(|m| m.is_object())
        .map(usage);
    let candidates = body
        .get("candidates")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    // One choice: the canonical answer has one (the request asks for one candidate).
    let Some(candidate) = candidates.first() else {
        if block_reason(body).is_none() {
            return Err(terr("Gemini returned no candidates"));
        }
        // A blocked prompt is a legitimate answer, and failing over would just get it blocked again.
        return Ok(Message {
            model: model.to_string(),
            text: String::new(),
            reasoning: String::new(),
            calls: Vec::new(),
            finish: Finish::ContentFilter,
            usage,
        });
    };
    let raw_finish = opt_str(candidate, "finishReason");
    let mapped = finish(raw_finish)?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for part in parts(candidate)? {
        match part {
            Part::Text(t) => text.push_str(&t),
            Part::Call {
                name,
                args,
                signature,
            } => calls.push(Call {
                id: call_id(seed, calls.len() as u64),
                name,
                arguments: args,
                extra: signature_extra(signature.as_deref()),
            }),
        }
    }
    if text.is_empty() && calls.is_empty() && mapped != Finish::ContentFilter {
        return Err(terr(format!(
            "Gemini answer has no text and no function call (finishReason {})",
            raw_finish.unwrap_or("<none>")
        )));
    }
    let finish = if calls.is_empty() {
        mapped
    } else {
        Finish::ToolCalls
    };
    Ok(Message {
        model: model.to_string(),
        text,
        reasoning: String::new(),
        calls,
        finish,
        usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The answer as the OpenAI chat surface shows it.
    fn down(body: Value) -> Value {
        match from_upstream(&body, "chatcmpl-1", "gemini-2.5-flash") {
            Ok(m) => crate::wire::openai::completion(&m, "chatcmpl-1", 1700),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    #[test]
    fn finish_reasons_map() {
        let body = |reason: &str| json!({"candidates": [{"content": {"parts": [{"text": "hi"}]}, "finishReason": reason}]});
        for (reason, expected) in [
            ("STOP", "stop"),
            ("MAX_TOKENS", "length"),
            ("SAFETY", "content_filter"),
            ("RECITATION", "content_filter"),
            ("BLOCKLIST", "content_filter"),
            ("PROHIBITED_CONTENT", "content_filter"),
            ("SPII", "content_filter"),
            ("IMAGE_SAFETY", "content_filter"),
            ("OTHER", "stop"),
            ("LANGUAGE", "stop"),
        ] {
            assert_eq!(
                down(body(reason))["choices"][0]["finish_reason"],
                json!(expected),
                "{reason}"
            );
        }
        assert!(from_upstream(&body("MALFORMED_FUNCTION_CALL"), "i", "m").is_err());
        // Safety stop with nothing produced is still an answer, not a provider failure.
        let out = down(json!({"candidates": [{"finishReason": "SAFETY"}]}));
        assert_eq!(out["choices"][0]["message"]["content"], json!(""));
        assert_eq!(out["choices"][0]["finish_reason"], json!("content_filter"));
    }

    #[test]
    fn text_answer_with_usage() {
        let out = down(json!({
            "candidates": [{"content": {"role": "model", "parts": [
                {"text": "thinking...", "thought": true}, {"text": "Hello"}, {"text": ", world"}]},
                "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5,
                              "thoughtsTokenCount": 7, "totalTokenCount": 22, "cachedContentTokenCount": 4},
            "modelVersion": "gemini-2.5-flash",
        }));
        assert_eq!(
            out,
            json!({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1700, "model": "gemini-2.5-flash",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello, world"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 12, "total_tokens": 22,
                          "prompt_tokens_details": {"cached_tokens": 4},
                          "completion_tokens_details": {"reasoning_tokens": 7}},
            })
        );
    }

    #[test]
    fn answer_with_two_function_calls() {
        let out = down(json!({
            "candidates": [{"content": {"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
            ]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5},
        }));
        assert_eq!(
            out["choices"][0],
            json!({"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_chatcmpl-1_0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_chatcmpl-1_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}},
            ]}, "finish_reason": "tool_calls"})
        );
        assert_eq!(
            out["usage"],
            json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})
        );
    }

    #[test]
    fn unusable_answers_are_errors() {
        assert!(from_upstream(&json!({}), "i", "m").is_err());
        assert!(from_upstream(&json!({"candidates": []}), "i", "m").is_err());
        assert!(
            from_upstream(
                &json!({"candidates": [{"content": {"parts": []}, "finishReason": "STOP"}]}),
                "i",
                "m"
            )
            .is_err()
        );
        assert!(from_upstream(&json!({"candidates": [{"content": {"parts": [{"text": "x", "thought": true}]}, "finishReason": "MAX_TOKENS"}]}), "i", "m").is_err());
        assert!(
            from_upstream(
                &json!({"error": {"code": 500, "message": "boom"}}),
                "i",
                "m"
            )
            .is_err()
        );
    }

    #[test]
    fn blocked_prompt_is_a_content_filter_answer() {
        let out = down(json!({"promptFeedback": {"blockReason": "SAFETY"},
            "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8}}));
        assert_eq!(
            out["choices"],
            json!([{"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "content_filter"}])
        );
        assert_eq!(out["usage"]["prompt_tokens"], json!(8));
    }
}
