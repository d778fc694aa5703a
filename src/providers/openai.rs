//! The OpenAI dialect: the request passes through with unknown fields intact, changed only by
//! the vendor's quirks (catalog data) and the upstream model id; answers are read lightly and
//! handed on as the upstream sent them.

use bytes::Bytes;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{Decoded, Failure};
use crate::catalog::{Model, Provider};
use crate::chat::openai::{Chunk, LightAnswer, LightChunk};
use crate::chat::{Answer, Piece, Request, Usage};
use crate::error::scrub;
use crate::lessons::Lessons;

/// The most `max_tokens` a request may carry to this model: a larger one is clamped, never
/// refused (coding agents ask for 64000). The vendor's ceiling, what the context window leaves
/// after the prompt, and for vendors that charge `max_tokens` up front, what one minute's token
/// cap leaves after the prompt.
pub fn max_tokens_ceiling(facts: &crate::chat::Facts, provider: &Provider, model: &Model) -> u64 {
    let q = &provider.quirks;
    let mut cap = model.context.saturating_sub(facts.prompt_tokens).max(1);
    if let Some(c) = q.max_tokens_cap {
        cap = cap.min(c);
    }
    if q.reserve_max_tokens {
        if let Some(tpm) = model.limits.tpm {
            // The prompt is an estimate (characters / 4): leave room for it to be a quarter
            // short of the vendor's count, or the vendor refuses the request as too large.
            let prompt = facts.prompt_tokens + facts.prompt_tokens / 4;
            cap = cap.min(tpm.saturating_sub(prompt).max(1));
        }
    }
    cap
}

/// The body to send upstream. Only fields that change are parsed and rebuilt; the rest is
/// written as the client's own JSON text.
/// `lessons`: what the upstream taught about this model (SPEC 3.9): fields it refuses are left
/// out, at the top level and inside messages.
pub fn body(
    req: &Request,
    provider: &Provider,
    model: &Model,
    lessons: Option<&Lessons>,
) -> Vec<u8> {
    let q = &provider.quirks;
    let mut overrides: Vec<(String, Value)> =
        vec![("model".into(), Value::String(model.id.clone()))];
    let mut skip: Vec<&str> = q.drop_params.iter().map(String::as_str).collect();
    if let Some(l) = lessons {
        skip.extend(l.dropped());
    }

    for (from, to) in &q.rename_params {
        if let Some(v) = req.get(from) {
            skip.push(from);
            if req.raw(to).is_none() {
                overrides.push((to.clone(), v));
            }
        }
    }
    let cap = max_tokens_ceiling(&req.facts, provider, model);
    for key in ["max_tokens", "max_completion_tokens"] {
        if let Some(n) = req.get(key).and_then(|v| v.as_u64()) {
            if n > cap {
                overrides.push((key.into(), json!(cap)));
            }
        }
    }
    if req.facts.has_tools {
        for (k, v) in &q.tool_params {
            overrides.push((k.clone(), v.clone()));
        }
        if !q.clean_tool_schema.is_empty() {
            if let Some(tools) = req.get("tools") {
                overrides.push(("tools".into(), clean_tools(&tools, &q.clean_tool_schema)));
            }
        }
    }
    if q.flatten_content {
        if let Some(Value::Array(messages)) = req.get("messages") {
            overrides.push(("messages".into(), flatten(&messages)));
        }
    }
    if req.facts.stream && q.stream_usage && !req.facts.include_usage {
        let mut opts = req
            .get("stream_options")
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
        opts.insert("include_usage".into(), Value::Bool(true));
        overrides.push(("stream_options".into(), Value::Object(opts)));
    }
    if let Some(l) = lessons {
        let drop: Vec<&str> = l.dropped_in_messages().collect();
        if !drop.is_empty() {
            let messages = match overrides.iter().position(|(k, _)| k == "messages") {
                Some(i) => Some(overrides.remove(i).1),
                None => req.get("messages"),
            };
            if let Some(Value::Array(mut messages)) = messages {
                for m in &mut messages {
                    if let Some(o) = m.as_object_mut() {
                        o.retain(|k, _| !drop.contains(&k.as_str()));
                    }
                }
                overrides.push(("messages".into(), Value::Array(messages)));
            }
        }
    }
    // A field the upstream refused stays out even where a quirk would add it.
    if let Some(l) = lessons {
        overrides.retain(|(k, _)| !l.dropped().any(|d| d == k));
    }
    let patched = Patched {
        base: req.fields(),
        overrides: &overrides,
        skip: &skip,
    };
    serde_json::to_vec(&patched).unwrap_or_default()
}

/// Read a whole 200 answer: it must be a chat completion that says something.
pub fn read_answer(body: Bytes) -> Result<(Answer, Option<Usage>), Failure> {
    let answer: LightAnswer = serde_json::from_slice(&body).map_err(|e| {
        super::classify::error_in_answer(&body)
            .unwrap_or_else(|| Failure::BadAnswer(format!("not a chat completion ({e})")))
    })?;
    if !answer.has_content() {
        // Some providers answer 200 with an error object instead of choices.
        if let Some(f) = super::classify::error_in_answer(&body) {
            return Err(f);
        }
        return Err(Failure::BadAnswer("empty answer".into()));
    }
    let usage = answer.usage.map(|u| u.typed());
    // Handed on as received: no re-serialization on the hot path.
    Ok((Answer::Openai(body), usage))
}

/// Reads one streamed answer. Chunks are handed on as the upstream sent them.
#[derive(Debug, Default)]
pub struct Stream {
    usage: Option<Usage>,
    /// Content has been seen: from then on only finish reasons, usage and errors matter, and
    /// chunks that cannot hold one are handed on without parsing.
    seen_content: bool,
}

impl Stream {
    pub fn on_event(&mut self, data: String) -> Decoded {
        let data = match data.trim() {
            t if t.len() == data.len() => data,
            t => t.to_string(),
        };
        if data == "[DONE]" {
            return Decoded {
                done: true,
                ..Decoded::default()
            };
        }
        if self.seen_content && !may_matter(&data) {
            return Decoded {
                // Only content resets the stall clock: a trickle of empty deltas does not.
                content: may_say_something(&data),
                piece: Some(Piece::Openai(Chunk {
                    data,
                    usage_only: false,
                })),
                ..Decoded::default()
            };
        }
        let chunk: LightChunk = match serde_json::from_str(&data) {
            Ok(c) => c,
            Err(e) => {
                return Decoded {
                    error: Some(format!("malformed stream event ({e})")),
                    ..Decoded::default()
                };
            }
        };
        if let Some(err) = &chunk.error {
            let msg = err
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| err.to_string(), str::to_string);
            return Decoded {
                error: Some(scrub(&msg)),
                ..Decoded::default()
            };
        }
        if let Some(u) = chunk.usage {
            self.usage = Some(u.typed());
        }
        let content = chunk.has_content();
        self.seen_content |= content;
        let finished = chunk.finish_reason().is_some();
        let usage_only = chunk.choices.is_empty() && chunk.usage.is_some();
        drop(chunk);
        Decoded {
            piece: Some(Piece::Openai(Chunk { data, usage_only })),
            content,
            finished,
            ..Decoded::default()
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage
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

/// Whether an OpenAI chunk may carry content: text, reasoning, a refusal, or a tool call's
/// name or arguments, as a non-empty string or array. Read by a byte search (the chunk is not
/// parsed once content has been seen); an escaped key inside the text does not match.
fn may_say_something(data: &str) -> bool {
    use memchr::memmem::Finder;
    static KEYS: std::sync::LazyLock<[Finder<'static>; 6]> = std::sync::LazyLock::new(|| {
        [
            Finder::new(b"\"content\""),
            Finder::new(b"\"reasoning_content\""),
            Finder::new(b"\"reasoning\""),
            Finder::new(b"\"refusal\""),
            Finder::new(b"\"arguments\""),
            Finder::new(b"\"name\""),
        ]
    });
    let bytes = data.as_bytes();
    KEYS.iter().any(|key| {
        key.find_iter(bytes).any(|at| {
            let rest = skip_ws(&bytes[at + key.needle().len()..]);
            let Some((b':', value)) = rest.split_first() else {
                return false;
            };
            match skip_ws(value).split_first() {
                Some((b'"', more)) => more.first().is_some_and(|c| *c != b'"'),
                Some((b'[', more)) => skip_ws(more).first().is_some_and(|c| *c != b']'),
                _ => false,
            }
        })
    })
}

fn skip_ws(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

/// An object written as `base` minus `skip`, with `overrides` replacing or adding fields.
struct Patched<'a> {
    base: &'a [(String, Box<RawValue>)],
    overrides: &'a [(String, Value)],
    skip: &'a [&'a str],
}

impl Serialize for Patched<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (i, (k, v)) in self.base.iter().enumerate() {
            let repeated = self.base[i + 1..].iter().any(|(later, _)| later == k);
            if repeated
                || self.skip.contains(&k.as_str())
                || self.overrides.iter().any(|(o, _)| o == k)
            {
                continue;
            }
            map.serialize_entry(k, v)?;
        }
        for (k, v) in self.overrides {
            // A later override of the same key wins; skip the earlier ones.
            if self
                .overrides
                .iter()
                .rev()
                .find(|(o, _)| o == k)
                .map(|(_, x)| x)
                == Some(v)
            {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

/// Message content as plain strings: text parts joined, null as "".
fn flatten(messages: &[Value]) -> Value {
    Value::Array(
        messages
            .iter()
            .map(|m| {
                let mut m = m.clone();
                if let Some(obj) = m.as_object_mut() {
                    let text = match obj.get("content") {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Array(parts)) => parts
                            .iter()
                            .filter_map(|p| p.get("text").and_then(Value::as_str))
                            .collect::<Vec<_>>()
                            .join("\n"),
                        _ => String::new(),
                    };
                    obj.insert("content".into(), Value::String(text));
                }
                m
            })
            .collect(),
    )
}

fn clean_tools(tools: &Value, keys: &[String]) -> Value {
    let mut tools = tools.clone();
    if let Some(list) = tools.as_array_mut() {
        for t in list {
            if let Some(params) = t.pointer_mut("/function/parameters") {
                strip_keys(params, keys, 0);
            }
        }
    }
    tools
}

fn strip_keys(v: &mut Value, keys: &[String], depth: usize) {
    if depth > 64 {
        return;
    }
    match v {
        Value::Object(map) => {
            map.retain(|k, _| !keys.contains(k));
            for child in map.values_mut() {
                strip_keys(child, keys, depth + 1);
            }
        }
        Value::Array(items) => {
            for child in items {
                strip_keys(child, keys, depth + 1);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::wire::openai::parse;

    fn send(provider: &str, model: &str, body: Value) -> Value {
        let c = Catalog::builtin().unwrap();
        let m = c.model(&format!("{provider}/{model}")).unwrap();
        let req = parse(body.to_string().as_bytes()).unwrap();
        serde_json::from_slice(&super::body(&req, c.provider_of(m), m, None)).unwrap()
    }

    #[test]
    fn unknown_fields_pass_through_and_model_is_substituted() {
        let out = send(
            "groq",
            "llama-3.3-70b-versatile",
            json!({"model": "llama-3.3-70b", "messages": [{"role": "user", "content": "hi"}], "my_field": {"x": [1]}, "temperature": 0.2}),
        );
        assert_eq!(out["model"], "llama-3.3-70b-versatile");
        assert_eq!(out["my_field"], json!({"x": [1]}));
        assert_eq!(out["temperature"], 0.2);
    }

    #[test]
    fn groq_drops_logprobs() {
        let out = send(
            "groq",
            "llama-3.3-70b-versatile",
            json!({"messages": [{"role": "user", "content": "hi"}], "logprobs": true, "top_logprobs": 2, "logit_bias": {}}),
        );
        assert!(
            out.get("logprobs").is_none()
                && out.get("top_logprobs").is_none()
                && out.get("logit_bias").is_none()
        );
    }

    #[test]
    fn mistral_drops_and_renames() {
        let out = send(
            "mistral",
            "mistral-small-latest",
            json!({"messages": [{"role": "user", "content": "hi"}], "seed": 7, "top_k": 3, "reasoning_effort": "low", "min_p": 0.1}),
        );
        assert_eq!(out["random_seed"], 7);
        for k in ["seed", "top_k", "reasoning_effort", "min_p"] {
            assert!(out.get(k).is_none(), "{k} kept");
        }
    }

    #[test]
    fn github_caps_max_tokens() {
        let out = send(
            "github",
            "openai/gpt-4.1",
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}),
        );
        assert_eq!(out["max_tokens"], 4000);
        let out = send(
            "github",
            "openai/gpt-4.1",
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}),
        );
        assert_eq!(out["max_tokens"], 10);
    }

    #[test]
    fn max_tokens_beyond_the_vendor_or_the_context_is_clamped() {
        let agent = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 64000});
        // Groq's ceiling is 8192, but it charges max_tokens up front against an 8000-token
        // minute: what fits one minute after the prompt.
        let n = send("groq", "openai/gpt-oss-120b", agent.clone())["max_tokens"]
            .as_u64()
            .unwrap();
        assert!(n < 8000 && n > 7800, "{n}");
        let n = send("openrouter", "z-ai/glm-4.5-air:free", agent.clone())["max_tokens"]
            .as_u64()
            .unwrap();
        assert!(n >= 8192, "{n}: no token cap charged up front");
        let mistral = send("mistral", "mistral-small-latest", agent);
        assert_eq!(mistral["max_tokens"], 64000, "fits a 131072 context");
        let long = "word ".repeat(400_000);
        let out = send(
            "mistral",
            "mistral-small-latest",
            json!({"messages": [{"role": "user", "content": long}], "max_completion_tokens": 64000}),
        );
        let n = out["max_completion_tokens"].as_u64().unwrap();
        assert!(n < 64000 && n > 0, "{n}: what the context leaves");
    }

    #[test]
    fn cloudflare_and_cohere_flatten_content() {
        let body = json!({"messages": [
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": null, "tool_calls": []}
        ]});
        for (p, m) in [
            ("cloudflare", "@cf/openai/gpt-oss-120b"),
            ("cohere", "command-a-03-2025"),
        ] {
            let out = send(p, m, body.clone());
            assert_eq!(out["messages"][0]["content"], "a\nb");
            assert_eq!(out["messages"][1]["content"], "");
        }
    }

    #[test]
    fn cohere_cleans_tool_schemas_and_nvidia_sends_one_tool_call() {
        let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {"$schema": "x", "type": "object", "additionalProperties": false, "properties": {"a": {"type": "object", "additionalProperties": true}}}}}]);
        let out = send(
            "cohere",
            "command-a-03-2025",
            json!({"messages": [{"role": "user", "content": "hi"}], "tools": tools}),
        );
        let params = &out["tools"][0]["function"]["parameters"];
        assert!(params.get("$schema").is_none() && params.get("additionalProperties").is_none());
        assert!(
            params["properties"]["a"]
                .get("additionalProperties")
                .is_none()
        );
        let out = send(
            "nvidia",
            "deepseek-ai/deepseek-v3.1",
            json!({"messages": [{"role": "user", "content": "hi"}], "tools": tools}),
        );
        assert_eq!(out["parallel_tool_calls"], false);
        let out = send(
            "nvidia",
            "deepseek-ai/deepseek-v3.1",
            json!({"messages": [{"role": "user", "content": "hi"}]}),
        );
        assert!(out.get("parallel_tool_calls").is_none(), "only with tools");
    }

    #[test]
    fn streams_ask_for_usage() {
        let out = send(
            "groq",
            "llama-3.3-70b-versatile",
            json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}),
        );
        assert_eq!(out["stream_options"]["include_usage"], true);
    }

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
    fn only_chunks_with_content_count_as_progress() {
        for says in [
            r#"{"choices":[{"delta":{"content":"hi"}}]}"#,
            r#"{"choices":[{"delta":{"content" : " "}}]}"#,
            r#"{"choices":[{"delta":{"reasoning_content":"hm"}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"f"}}]}}]}"#,
            r#"{"choices":[{"delta":{"content":[{"type":"text"}]}}]}"#,
        ] {
            assert!(may_say_something(says), "{says}");
        }
        for empty in [
            r#"{"choices":[{"delta":{"content":""}}]}"#,
            r#"{"choices":[{"delta":{}}]}"#,
            r#"{"choices":[{"delta":{"content":null,"role":"assistant"}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":""}}]}}]}"#,
            r#"{"choices":[{"delta":{"content":[]}}]}"#,
            r#"{"choices":[{"delta":{"content":"","x":"the \"content\": yes"}}]}"#,
        ] {
            assert!(!may_say_something(empty), "{empty}");
        }
    }
}
