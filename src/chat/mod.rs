//! The canonical chat: what every client surface translates into, what the router routes, and
//! what every upstream dialect answers with.
//!
//! A request is a body in the OpenAI chat-completions schema (the common ground of nearly every
//! upstream; unknown fields are kept for OpenAI-compatible upstreams), validated once, plus the
//! few facts routing needs. An answer is typed: a [`Message`] when whole, [`Event`]s when
//! streamed. Where the upstream already answered in the OpenAI chat dialect its own bytes travel
//! along ([`Answer::Openai`], [`Piece::Openai`]), so the surface that speaks that dialect can
//! hand them on unchanged (fields Freeway does not model, several choices) without a re-encode;
//! every other surface reads the same content as typed events.

pub mod openai;

use serde_json::{Map, Value};
use std::hash::{DefaultHasher, Hash, Hasher};

/// A validated request.
#[derive(Debug, Clone)]
pub struct Request {
    /// The body, in the OpenAI chat-completions schema.
    pub body: Map<String, Value>,
    pub facts: Facts,
}

impl Request {
    /// Check a body and gather its facts; the error names the field at fault.
    pub fn new(body: Map<String, Value>) -> Result<Request, String> {
        let facts = check(&body)?;
        Ok(Request { body, facts })
    }
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

// ---- answers ----

/// Why an answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The model was done (or hit a stop sequence).
    Stop,
    /// The token limit cut it.
    Length,
    /// It asked for tool calls.
    ToolCalls,
    /// A safety filter stopped it.
    ContentFilter,
}

impl Finish {
    /// The OpenAI `finish_reason` spelling, also how upstream reasons are read.
    pub fn as_openai(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::ToolCalls => "tool_calls",
            Finish::ContentFilter => "content_filter",
        }
    }

    /// Read an OpenAI-style `finish_reason`; unknown reasons (vendors invent some) are a stop.
    pub fn from_openai(reason: &str) -> Finish {
        match reason {
            "length" | "max_tokens" => Finish::Length,
            "tool_calls" | "function_call" | "tool_use" => Finish::ToolCalls,
            "content_filter" => Finish::ContentFilter,
            _ => Finish::Stop,
        }
    }
}

/// Tokens an answer used, as the upstream reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    /// Of `input`, read from the upstream's prompt cache, when reported.
    pub cached: Option<u64>,
    /// Of `output`, spent on reasoning, when reported.
    pub reasoning: Option<u64>,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.input.saturating_add(self.output)
    }
}

/// A whole tool call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub id: String,
    pub name: String,
    /// The arguments as JSON text.
    pub arguments: String,
    /// Vendor data a client should echo back when it replays the call (Gemini's thought
    /// signature, as `{"google": {"thought_signature": ...}}`).
    pub extra: Option<Value>,
}

/// A piece of a streamed tool call: the first piece of each call carries its id and name, the
/// rest only more argument text.
#[derive(Debug, Clone, PartialEq)]
pub struct CallDelta {
    /// Which call of the answer (0, 1, ...).
    pub index: u32,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: String,
    pub extra: Option<Value>,
}

/// One step of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Text(String),
    /// Reasoning ("thinking") text, shown apart from the answer.
    Reasoning(String),
    ToolCall(CallDelta),
    Finish(Finish),
    Usage(Usage),
}

impl Event {
    /// Text, reasoning or a tool call: what commits a stream to its provider.
    pub fn is_content(&self) -> bool {
        match self {
            Event::Text(t) | Event::Reasoning(t) => !t.is_empty(),
            Event::ToolCall(_) => true,
            Event::Finish(_) | Event::Usage(_) => false,
        }
    }
}

/// A whole answer, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The upstream model id that produced it.
    pub model: String,
    pub text: String,
    pub reasoning: String,
    pub calls: Vec<Call>,
    pub finish: Finish,
    pub usage: Option<Usage>,
}

impl Message {
    /// The events a stream of this same answer would have carried.
    pub fn events(&self) -> Vec<Event> {
        let mut out = Vec::new();
        if !self.reasoning.is_empty() {
            out.push(Event::Reasoning(self.reasoning.clone()));
        }
        if !self.text.is_empty() {
            out.push(Event::Text(self.text.clone()));
        }
        for (i, c) in self.calls.iter().enumerate() {
            out.push(Event::ToolCall(CallDelta {
                index: i as u32,
                id: Some(c.id.clone()),
                name: Some(c.name.clone()),
                arguments: c.arguments.clone(),
                extra: c.extra.clone(),
            }));
        }
        out.push(Event::Finish(self.finish));
        if let Some(u) = self.usage {
            out.push(Event::Usage(u));
        }
        out
    }
}

/// A non-streaming answer.
#[derive(Debug, Clone)]
pub enum Answer {
    /// An OpenAI `chat.completion` exactly as the upstream sent it (checked to say something).
    Openai(bytes::Bytes),
    Typed(Message),
}

impl Answer {
    /// The answer as a typed message (the first choice of an OpenAI answer).
    pub fn message(&self) -> Result<Message, String> {
        match self {
            Answer::Openai(body) => openai::message(body),
            Answer::Typed(m) => Ok(m.clone()),
        }
    }
}

/// What a streamed answer delivers, step by step.
#[derive(Debug, Clone)]
pub enum Piece {
    Events(Vec<Event>),
    /// One OpenAI `chat.completion.chunk` as the upstream sent it.
    Openai(openai::Chunk),
    /// The upstream failed after content was sent; nothing follows. Never a made-up finish.
    Interrupted(String),
}

impl Piece {
    /// The piece as typed events (parsing an OpenAI chunk).
    pub fn events(&self) -> Vec<Event> {
        match self {
            Piece::Events(e) => e.clone(),
            Piece::Openai(c) => c.events(),
            Piece::Interrupted(_) => Vec::new(),
        }
    }
}
