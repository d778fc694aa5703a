//! The OpenAI chat-completions request as Freeway sees it: the body kept whole (unknown fields
//! pass through untouched) plus the few facts routing needs, checked once with error messages
//! that name the field.

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::hash::{DefaultHasher, Hash, Hasher};

/// A validated chat request.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The body as the client sent it.
    pub body: Map<String, Value>,
    pub facts: Facts,
}

/// What routing needs to know about a request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    /// `model` as requested (`None` = auto).
    pub model: Option<String>,
    pub stream: bool,
    /// The client asked for `stream_options.include_usage`.
    pub include_usage: bool,
    /// `max_completion_tokens` or `max_tokens`.
    pub max_tokens: Option<u64>,
    pub has_tools: bool,
    pub has_images: bool,
    /// Estimated prompt size in tokens.
    pub prompt_tokens: u64,
    /// The conversation already has an assistant turn (sticky routing applies).
    pub has_assistant: bool,
    /// Hash of the system prompt and the first user message (conversation identity).
    pub conversation: u64,
}

impl Facts {
    /// Prompt estimate plus the answer reserve (SPEC 3.2: max_tokens capped at 2048, else 1024).
    pub fn token_estimate(&self) -> u64 {
        self.prompt_tokens + self.max_tokens.map_or(1024, |m| m.min(2048))
    }
}

const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];
/// Tokens charged for an image when estimating a prompt.
const IMAGE_TOKENS: u64 = 1000;

/// Parse and validate a request body.
pub fn parse(bytes: &[u8]) -> Result<ChatRequest, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        format!("the request body is not valid JSON ({e}); send a JSON object with `messages`")
    })?;
    let Value::Object(body) = value else {
        return Err("the request body must be a JSON object with `messages`".into());
    };
    let facts = check(&body)?;
    Ok(ChatRequest { body, facts })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong(field: &str, want: &str, got: &Value) -> String {
    format!("`{field}` must be {want}, got {}", type_name(got))
}

fn opt<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    body.get(key).filter(|v| !v.is_null())
}

fn check(body: &Map<String, Value>) -> Result<Facts, String> {
    let mut f = Facts::default();
    if let Some(m) = opt(body, "model") {
        let s = m.as_str().ok_or_else(|| wrong("model", "a string", m))?;
        if !s.is_empty() && s != "auto" {
            f.model = Some(s.to_string());
        }
    }
    if let Some(v) = opt(body, "stream") {
        f.stream = v.as_bool().ok_or_else(|| wrong("stream", "a boolean", v))?;
    }
    if let Some(v) = opt(body, "stream_options") {
        let o = v
            .as_object()
            .ok_or_else(|| wrong("stream_options", "an object", v))?;
        if let Some(u) = o.get("include_usage").filter(|u| !u.is_null()) {
            f.include_usage = u
                .as_bool()
                .ok_or_else(|| wrong("stream_options.include_usage", "a boolean", u))?;
        }
    }
    for key in ["max_tokens", "max_completion_tokens"] {
        if let Some(v) = opt(body, key) {
            let n = v
                .as_u64()
                .ok_or_else(|| wrong(key, "a non-negative integer", v))?;
            f.max_tokens = Some(n);
        }
    }
    if let Some(v) = opt(body, "max_completion_tokens") {
        f.max_tokens = v.as_u64();
    }
    for key in [
        "temperature",
        "top_p",
        "presence_penalty",
        "frequency_penalty",
    ] {
        if let Some(v) = opt(body, key) {
            if !v.is_number() {
                return Err(wrong(key, "a number", v));
            }
        }
    }
    if let Some(v) = opt(body, "n") {
        if v.as_u64().is_none_or(|n| n == 0) {
            return Err(wrong("n", "a positive integer", v));
        }
    }
    if let Some(v) = opt(body, "stop") {
        let ok = v.is_string() || v.as_array().is_some_and(|a| a.iter().all(Value::is_string));
        if !ok {
            return Err(wrong("stop", "a string or an array of strings", v));
        }
    }
    let mut chars: u64 = 0;
    if let Some(v) = opt(body, "tools") {
        let tools = v.as_array().ok_or_else(|| wrong("tools", "an array", v))?;
        for (i, t) in tools.iter().enumerate() {
            let name = t
                .get("function")
                .and_then(|fun| fun.get("name"))
                .and_then(Value::as_str);
            if !t.is_object() || name.is_none() {
                return Err(format!(
                    "`tools[{i}]` must be an object like {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}"
                ));
            }
            chars += json_len(t);
        }
        f.has_tools = !tools.is_empty();
    }
    if let Some(v) = opt(body, "tool_choice") {
        if !(v.is_string() || v.is_object()) {
            return Err(wrong("tool_choice", "a string or an object", v));
        }
    }

    let Some(messages) = body.get("messages") else {
        return Err("`messages` is required: an array of {\"role\", \"content\"} objects".into());
    };
    let messages = messages
        .as_array()
        .ok_or_else(|| wrong("messages", "an array", messages))?;
    if messages.is_empty() {
        return Err("`messages` must contain at least one message".into());
    }
    let mut hasher = DefaultHasher::new();
    let mut first_user_hashed = false;
    for (i, m) in messages.iter().enumerate() {
        let m = m
            .as_object()
            .ok_or_else(|| wrong(&format!("messages[{i}]"), "an object", m))?;
        let role = match m.get("role") {
            Some(Value::String(r)) if ROLES.contains(&r.as_str()) => r.as_str(),
            Some(Value::String(r)) => {
                return Err(format!(
                    "`messages[{i}].role` must be one of {}, got {r:?}",
                    ROLES.join(", ")
                ));
            }
            Some(other) => return Err(wrong(&format!("messages[{i}].role"), "a string", other)),
            None => return Err(format!("`messages[{i}].role` is required")),
        };
        chars += 16;
        match m.get("content") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => chars += s.len() as u64,
            Some(Value::Array(parts)) => {
                for (j, p) in parts.iter().enumerate() {
                    let kind = p.get("type").and_then(Value::as_str).ok_or_else(|| {
                        format!("`messages[{i}].content[{j}]` must be an object with a `type`")
                    })?;
                    match kind {
                        "text" | "input_text" => {
                            let text = p.get("text").and_then(Value::as_str).ok_or_else(|| {
                                format!("`messages[{i}].content[{j}].text` must be a string")
                            })?;
                            chars += text.len() as u64;
                        }
                        "image_url" | "input_image" => {
                            f.has_images = true;
                            f.prompt_tokens += IMAGE_TOKENS;
                        }
                        _ => chars += json_len(p),
                    }
                }
            }
            Some(other) => {
                return Err(wrong(
                    &format!("messages[{i}].content"),
                    "a string, an array of parts or null",
                    other,
                ));
            }
        }
        if let Some(calls) = m.get("tool_calls").filter(|v| !v.is_null()) {
            let calls = calls
                .as_array()
                .ok_or_else(|| wrong(&format!("messages[{i}].tool_calls"), "an array", calls))?;
            chars += calls.iter().map(json_len).sum::<u64>();
        }
        if role == "tool" && !m.get("tool_call_id").is_some_and(Value::is_string) {
            return Err(format!(
                "`messages[{i}].tool_call_id` is required on tool messages (the id of the call it answers)"
            ));
        }
        match role {
            "assistant" => f.has_assistant = true,
            "system" | "developer" => hash_content(m.get("content"), &mut hasher),
            "user" if !first_user_hashed => {
                hash_content(m.get("content"), &mut hasher);
                first_user_hashed = true;
            }
            _ => {}
        }
    }
    f.conversation = hasher.finish();
    // About four characters a token for English and code; a little overhead per message.
    f.prompt_tokens += chars.div_ceil(4);
    Ok(f)
}

fn hash_content(content: Option<&Value>, h: &mut DefaultHasher) {
    match content {
        Some(Value::String(s)) => s.hash(h),
        Some(v) => v.to_string().hash(h),
        None => 0u8.hash(h),
    }
}

fn json_len(v: &Value) -> u64 {
    serde_json::to_string(v).map_or(0, |s| s.len() as u64)
}

// ---- answers, read lightly: only what failover and the ledger need ----

/// A non-streaming answer, read without copying anything: only what tells whether it says
/// something (and its usage) is looked at.
#[derive(Debug, Deserialize)]
pub struct Answer<'a> {
    #[serde(borrow)]
    pub choices: Vec<AnswerChoice<'a>>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

#[derive(Debug, Deserialize)]
pub struct AnswerChoice<'a> {
    #[serde(default, borrow)]
    pub message: Option<AnswerMessage<'a>>,
    #[serde(default, borrow)]
    pub finish_reason: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
pub struct AnswerMessage<'a> {
    /// The JSON text of the content, unparsed.
    #[serde(default, borrow)]
    pub content: Option<&'a RawValue>,
    #[serde(default)]
    pub tool_calls: Option<Vec<IgnoredAny>>,
    #[serde(default, borrow)]
    pub reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub reasoning: Option<Cow<'a, str>>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
}

impl Answer<'_> {
    /// Whether the answer says anything: text, a tool call, or (at least) reasoning, or a
    /// finish reason that explains its silence (a content filter).
    pub fn has_content(&self) -> bool {
        self.choices.iter().any(|c| {
            c.finish_reason.as_deref() == Some("content_filter")
                || c.message.as_ref().is_some_and(|m| {
                    m.content.is_some_and(says_something)
                        || m.tool_calls.as_ref().is_some_and(|t| !t.is_empty())
                        || m.reasoning_content.as_ref().is_some_and(|r| !r.is_empty())
                        || m.reasoning.as_ref().is_some_and(|r| !r.is_empty())
                })
        })
    }
}

/// A content value that is a non-empty string or a non-empty array (of parts).
fn says_something(raw: &RawValue) -> bool {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => text.len() > 2,
        Some(b'[') => !text[1..text.len() - 1].trim().is_empty(),
        _ => false,
    }
}

/// One streamed chunk, read lightly.
#[derive(Debug, Default, Deserialize)]
pub struct Chunk<'a> {
    #[serde(default, borrow)]
    pub choices: Vec<ChunkChoice<'a>>,
    #[serde(default)]
    pub usage: Option<Usage>,
    #[serde(default)]
    pub error: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ChunkChoice<'a> {
    #[serde(default, borrow)]
    pub delta: Option<Delta<'a>>,
    #[serde(default, borrow)]
    pub finish_reason: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Delta<'a> {
    // Borrowed from the event text: a stream's chunks are read, not kept.
    #[serde(default, borrow)]
    pub content: Option<Cow<'a, str>>,
    #[serde(default)]
    pub tool_calls: Option<Vec<IgnoredAny>>,
    #[serde(default, borrow)]
    pub reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub reasoning: Option<Cow<'a, str>>,
}

impl Chunk<'_> {
    /// Carries text, a tool call or reasoning.
    pub fn has_content(&self) -> bool {
        self.choices.iter().any(|c| {
            c.delta.as_ref().is_some_and(|d| {
                d.content.as_ref().is_some_and(|s| !s.is_empty())
                    || d.tool_calls.as_ref().is_some_and(|t| !t.is_empty())
                    || d.reasoning_content.as_ref().is_some_and(|s| !s.is_empty())
                    || d.reasoning.as_ref().is_some_and(|s| !s.is_empty())
            })
        })
    }

    pub fn finish_reason(&self) -> Option<&str> {
        self.choices.iter().find_map(|c| c.finish_reason.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(v: Value) -> Result<ChatRequest, String> {
        parse(v.to_string().as_bytes())
    }

    #[test]
    fn a_plain_request_yields_its_facts() {
        let r = p(json!({"model": "auto", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]},
            {"role": "assistant", "content": "hello"}
        ], "max_tokens": 5000, "stream": true, "custom_field": {"kept": true}}))
        .unwrap();
        assert_eq!(r.facts.model, None);
        assert!(r.facts.stream && r.facts.has_images && r.facts.has_assistant);
        assert_eq!(r.facts.token_estimate(), r.facts.prompt_tokens + 2048);
        assert!(r.body.contains_key("custom_field"));
    }

    #[test]
    fn conversation_identity_ignores_later_turns() {
        let a = p(json!({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})).unwrap();
        let b = p(json!({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "more"}]})).unwrap();
        let c = p(json!({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "other"}]})).unwrap();
        assert_eq!(a.facts.conversation, b.facts.conversation);
        assert_ne!(a.facts.conversation, c.facts.conversation);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (json!([1, 2]), "JSON object"),
            (json!({"model": "x"}), "`messages` is required"),
            (json!({"messages": "hi"}), "`messages` must be an array"),
            (json!({"messages": []}), "at least one"),
            (
                json!({"messages": [{"content": "x"}]}),
                "`messages[0].role` is required",
            ),
            (
                json!({"messages": [{"role": "robot", "content": "x"}]}),
                "`messages[0].role` must be one of",
            ),
            (
                json!({"messages": [{"role": "user", "content": 5}]}),
                "`messages[0].content`",
            ),
            (
                json!({"model": 7, "messages": [{"role": "user", "content": "x"}]}),
                "`model` must be a string",
            ),
            (
                json!({"stream": "yes", "messages": [{"role": "user", "content": "x"}]}),
                "`stream` must be a boolean",
            ),
            (
                json!({"max_tokens": -1, "messages": [{"role": "user", "content": "x"}]}),
                "`max_tokens`",
            ),
            (
                json!({"temperature": "hot", "messages": [{"role": "user", "content": "x"}]}),
                "`temperature`",
            ),
            (
                json!({"tools": [{"type": "function"}], "messages": [{"role": "user", "content": "x"}]}),
                "`tools[0]`",
            ),
            (
                json!({"messages": [{"role": "tool", "content": "x"}]}),
                "tool_call_id",
            ),
        ];
        for (body, needle) in cases {
            let err = p(body.clone()).unwrap_err();
            assert!(err.contains(needle), "{body} -> {err}");
        }
        assert!(parse(b"{not json").unwrap_err().contains("not valid JSON"));
    }

    #[test]
    fn answers_and_chunks_are_read_lightly() {
        let says = |body: &str| {
            let a: Answer = serde_json::from_str(body).unwrap();
            a.has_content()
        };
        for (message, expected) in [
            (r#"{"role": "assistant", "content": ""}"#, false),
            (r#"{"content": null}"#, false),
            (r#"{"content": []}"#, false),
            (r#"{"content": [ ]}"#, false),
            (r#"{"content": 42}"#, false),
            (r#"{"content": "x"}"#, true),
            (r#"{"content": "\u0000"}"#, true),
            (r#"{"content": [{"type": "text", "text": "x"}]}"#, true),
            (r#"{"content": null, "tool_calls": [{"id": "1"}]}"#, true),
            (r#"{"content": "", "reasoning_content": "hmm"}"#, true),
            (r#"{"content": "", "reasoning": "hmm"}"#, true),
        ] {
            let body = format!(
                r#"{{"model": "m", "choices": [{{"message": {message}, "finish_reason": "stop"}}]}}"#
            );
            assert_eq!(says(&body), expected, "{message}");
        }
        assert!(says(
            r#"{"choices": [{"message": {"content": ""}, "finish_reason": "content_filter"}]}"#
        ));
        assert!(serde_json::from_str::<Answer>(r#"{"object": "error"}"#).is_err());
        let c: Chunk =
            serde_json::from_str(r#"{"choices":[{"delta":{"content":"x"},"finish_reason":null}]}"#)
                .unwrap();
        assert!(c.has_content());
        let c: Chunk = serde_json::from_str(
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
        )
        .unwrap();
        assert_eq!(c.usage.unwrap().completion_tokens, 4);
    }
}
