//! Ollama's API (`/api/chat`, `/api/generate`, and the model list), pure: a chat or generate
//! body into the canonical request, canonical answers back as Ollama's objects, whole or as
//! newline-delimited JSON (one object per line, the last `"done": true` with the counts), errors
//! as `{"error": "..."}`.
//!
//! Ollama's clients name models the Ollama way (`qwen3:8b`, a `:latest` tag); [`resolve`] finds
//! the model Freeway knows by that name. Ollama tool calls carry no ids and their arguments are
//! objects: ids are made up on the way in (a `tool` message answers the latest unanswered call of
//! its `tool_name`) and arguments become objects again on the way out. Base64 `images` become
//! `data:` URLs. Fill-in-the-middle (`suffix`) is framed as the legacy completions surface frames
//! it.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::time::Instant;

use super::Frames;
use crate::chat::{self, Event, Finish, Message, Piece, Usage};
use crate::error::ApiError;

/// The Ollama version `/api/version` reports: recent enough for the clients that check it.
pub const VERSION: &str = "0.12.6";

/// When Freeway lists its models as modified (they are not files: a fixed, plausible moment).
const MODIFIED_AT: &str = "2025-01-01T00:00:00Z";

/// Which of the two generation routes a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `/api/chat`: answers carry `message`.
    Chat,
    /// `/api/generate`: answers carry `response`.
    Generate,
}

/// A chat or generate request, translated.
#[derive(Debug)]
pub struct Parsed {
    pub req: chat::Request,
    /// The client asked to see the model's thinking (`think`).
    pub thinking: bool,
    /// What was ignored, for the request log.
    pub notes: Vec<String>,
}

/// An Ollama "load the model" call (an empty prompt, or no messages): answered at once.
#[derive(Debug, PartialEq)]
pub struct Load {
    pub model: String,
    /// `keep_alive: 0`: the unload call.
    pub unload: bool,
}

// ---- requests as written ----

#[derive(Deserialize)]
struct ChatBody {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    messages: Option<Vec<InMessage>>,
    #[serde(default)]
    tools: Option<Vec<Tool>>,
    #[serde(default)]
    format: Option<Format>,
    #[serde(default)]
    options: Option<Options>,
    #[serde(default)]
    think: Option<Think>,
    #[serde(default)]
    stream: Option<bool>,
}

#[derive(Deserialize)]
struct GenerateBody {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    suffix: Option<String>,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    images: Option<Vec<String>>,
    #[serde(default)]
    format: Option<Format>,
    #[serde(default)]
    options: Option<Options>,
    #[serde(default)]
    think: Option<Think>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    raw: Option<bool>,
    #[serde(default)]
    context: Option<Vec<i64>>,
    #[serde(default)]
    template: Option<String>,
}

#[derive(Deserialize)]
struct InMessage {
    role: String,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    images: Option<Vec<String>>,
    #[serde(default)]
    tool_calls: Option<Vec<InCall>>,
    /// On a `tool` message: which tool answered.
    #[serde(default)]
    tool_name: Option<String>,
    /// Some clients send the OpenAI spelling too.
    #[serde(default)]
    tool_call_id: Option<String>,
}

#[derive(Deserialize)]
struct InCall {
    #[serde(default)]
    id: Option<String>,
    function: InFunction,
}

#[derive(Deserialize)]
struct InFunction {
    name: String,
    /// An object in Ollama's API (a JSON string is taken too).
    #[serde(default)]
    arguments: Option<Value>,
}

#[derive(Deserialize)]
struct Tool {
    function: ToolFunction,
}

#[derive(Deserialize)]
struct ToolFunction {
    name: String,
    #[serde(default)]
    description: Option<String>,
    /// A JSON schema, passed on as it is.
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

/// `"json"`, or a JSON schema for structured output.
#[derive(Deserialize)]
#[serde(untagged)]
enum Format {
    Named(String),
    Schema(Map<String, Value>),
}

/// `true`/`false`, or a level.
#[derive(Deserialize)]
#[serde(untagged)]
enum Think {
    On(bool),
    Level(String),
}

/// A duration (`"5m"`, `"0"`) or a number of seconds.
#[derive(Deserialize)]
#[serde(untagged)]
enum KeepAlive {
    Seconds(f64),
    Text(String),
}

impl KeepAlive {
    fn is_zero(&self) -> bool {
        match self {
            KeepAlive::Seconds(s) => *s == 0.0,
            KeepAlive::Text(t) => {
                let digits = t.trim().trim_end_matches(|c: char| c.is_ascii_alphabetic());
                digits.parse::<f64>().is_ok_and(|n| n == 0.0)
            }
        }
    }
}

/// A stop sequence or several.
#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

/// The model options Freeway honours; the rest (`num_ctx`, `num_gpu`, `mirostat`, ...) mean
/// nothing to a hosted model and are ignored.
#[derive(Deserialize, Default)]
struct Options {
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    top_k: Option<f64>,
    #[serde(default)]
    num_predict: Option<i64>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    presence_penalty: Option<f64>,
    #[serde(default)]
    frequency_penalty: Option<f64>,
}

/// Read a body into `T` (`wants`: what it must hold); the error names the field at fault.
fn read<'a, T: Deserialize<'a>>(bytes: &'a [u8], wants: &str) -> Result<T, ApiError> {
    super::read::body(bytes, wants).map_err(ApiError::InvalidRequest)
}

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::InvalidRequest(msg.into())
}

/// The error for a model Freeway does not know.
pub fn not_found(model: &str) -> ApiError {
    ApiError::ModelNotFound(format!(
        "model \"{model}\" not found, and Freeway does not pull models: GET /api/tags lists the models it serves (or use \"auto\")"
    ))
}

/// Letters and digits only, lower case: `llama3.3:70b` and `llama-3.3-70b` are one name.
fn squash(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The model to route for an Ollama model name: a name Freeway `known`s as it is, or without
/// its `:latest` tag; else the one model of `names` that is the same name written the Ollama
/// way (`qwen3:32b` for `qwen3-32b`). `None`: unknown.
pub fn resolve<'a>(
    requested: &str,
    known: impl Fn(&str) -> bool,
    names: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let requested = requested.trim();
    let untagged = requested.strip_suffix(":latest").unwrap_or(requested);
    if requested.is_empty() || untagged.eq_ignore_ascii_case("auto") {
        return Some("auto".into());
    }
    for name in [requested, untagged] {
        if known(name) {
            return Some(name.to_string());
        }
    }
    let want = squash(untagged);
    if want.is_empty() {
        return None;
    }
    let mut found: Option<&str> = None;
    for name in names {
        if squash(name) == want {
            match found {
                Some(f) if f != name => return None,
                _ => found = Some(name),
            }
        }
    }
    found.map(str::to_string)
}

/// What a load call is told by: a body read without building its messages or images.
#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    messages: Option<Vec<serde::de::IgnoredAny>>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    suffix: Option<String>,
    #[serde(default)]
    images: Option<Vec<serde::de::IgnoredAny>>,
    #[serde(default)]
    keep_alive: Option<KeepAlive>,
}

/// Is this body a load (or unload) call, with the model it names?
pub fn load_call(bytes: &[u8], mode: Mode) -> Option<Load> {
    let b: Probe = serde_json::from_slice(bytes).ok()?;
    let empty = match mode {
        Mode::Chat => b.messages.as_ref().is_none_or(Vec::is_empty),
        Mode::Generate => {
            b.prompt.as_deref().is_none_or(str::is_empty)
                && b.suffix.as_deref().is_none_or(str::is_empty)
                && b.images.as_ref().is_none_or(Vec::is_empty)
        }
    };
    empty.then(|| Load {
        model: b.model.unwrap_or_default(),
        unload: b.keep_alive.is_some_and(|k| k.is_zero()),
    })
}

/// Parse a chat or generate body; `route_model` turns the requested name into the model to
/// route, or `None` when Freeway does not know it.
pub fn parse(
    bytes: &[u8],
    mode: Mode,
    route_model: impl Fn(&str) -> Option<String>,
) -> Result<Parsed, ApiError> {
    let mut notes = Vec::new();
    let (model, messages, tools, common) = match mode {
        Mode::Chat => {
            let b: ChatBody = read(bytes, "`model` and `messages`")?;
            let messages = chat_messages(b.messages.unwrap_or_default())?;
            let common = Common {
                format: b.format,
                options: b.options,
                think: b.think,
                stream: b.stream,
            };
            (b.model, messages, b.tools.unwrap_or_default(), common)
        }
        Mode::Generate => {
            let b: GenerateBody = read(bytes, "`model` and `prompt`")?;
            if b.raw == Some(true) {
                return Err(invalid(
                    "`raw` is not supported: Freeway's models are hosted chat models that apply their own prompt template; send the prompt without `raw`",
                ));
            }
            if b.context.as_ref().is_some_and(|c| !c.is_empty()) {
                return Err(invalid(
                    "`context` is not supported: hosted models keep no token state between requests; send the conversation to /api/chat with its `messages` instead",
                ));
            }
            if b.template.is_some() {
                notes.push("ignored `template`: hosted models apply their own".to_string());
            }
            let messages = generate_messages(b.prompt, b.suffix, b.system, b.images)?;
            let common = Common {
                format: b.format,
                options: b.options,
                think: b.think,
                stream: b.stream,
            };
            (b.model, messages, Vec::new(), common)
        }
    };
    let requested = model.unwrap_or_default();
    let routed = route_model(&requested).ok_or_else(|| not_found(&requested))?;
    let mut out = Map::new();
    out.insert("model".into(), json!(routed));
    out.insert("messages".into(), Value::Array(messages));
    if !tools.is_empty() {
        let tools: Vec<Value> = tools
            .into_iter()
            .map(|t| {
                let mut f = Map::new();
                f.insert("name".into(), json!(t.function.name));
                if let Some(d) = t.function.description {
                    f.insert("description".into(), json!(d));
                }
                let params = t
                    .function
                    .parameters
                    .map(Value::Object)
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
                f.insert("parameters".into(), params);
                json!({"type": "function", "function": f})
            })
            .collect();
        out.insert("tools".into(), Value::Array(tools));
    }
    let thinking = common.apply(&mut out)?;
    let req = chat::Request::from_map(out).map_err(ApiError::InvalidRequest)?;
    Ok(Parsed {
        req,
        thinking,
        notes,
    })
}

/// What chat and generate share.
struct Common {
    format: Option<Format>,
    options: Option<Options>,
    think: Option<Think>,
    stream: Option<bool>,
}

impl Common {
    /// Lay these onto the canonical body; whether thinking is shown.
    fn apply(self, out: &mut Map<String, Value>) -> Result<bool, ApiError> {
        match self.format {
            None => {}
            Some(Format::Named(f)) if f.is_empty() => {}
            Some(Format::Named(f)) if f == "json" => {
                out.insert("response_format".into(), json!({"type": "json_object"}));
            }
            Some(Format::Named(f)) => {
                return Err(invalid(format!(
                    "`format` must be \"json\" or a JSON schema object, got {f:?}"
                )));
            }
            Some(Format::Schema(schema)) => {
                out.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": true}}),
                );
            }
        }
        let o = self.options.unwrap_or_default();
        for (key, v) in [
            ("temperature", o.temperature),
            ("top_p", o.top_p),
            ("presence_penalty", o.presence_penalty),
            ("frequency_penalty", o.frequency_penalty),
        ] {
            if let Some(v) = v {
                out.insert(key.into(), json!(v));
            }
        }
        if let Some(k) = o.top_k {
            if k < 0.0 || k.fract() != 0.0 {
                return Err(invalid("`options.top_k` must be a non-negative integer"));
            }
            out.insert("top_k".into(), json!(k as u64));
        }
        // -1 (endless) and -2 (fill the context) leave the model its own limit.
        if let Some(n) = o.num_predict.filter(|n| *n >= 0) {
            out.insert("max_tokens".into(), json!(n.max(1)));
        }
        match o.stop {
            None => {}
            Some(Stop::One(s)) => {
                out.insert("stop".into(), json!([s]));
            }
            Some(Stop::Many(list)) if list.is_empty() => {}
            Some(Stop::Many(list)) => {
                out.insert("stop".into(), json!(list));
            }
        }
        if let Some(seed) = o.seed {
            out.insert("seed".into(), json!(seed));
        }
        let thinking = match self.think {
            None | Some(Think::On(false)) => false,
            // The model's own default: a model that does not reason would refuse an effort.
            Some(Think::On(true)) => true,
            Some(Think::Level(level)) => match level.as_str() {
                "low" | "medium" | "high" => {
                    out.insert("reasoning_effort".into(), json!(level));
                    true
                }
                other => {
                    return Err(invalid(format!(
                        "`think` must be true, false, \"low\", \"medium\" or \"high\", got {other:?}"
                    )));
                }
            },
        };
        // Ollama streams unless told not to.
        if self.stream != Some(false) {
            out.insert("stream".into(), json!(true));
            out.insert("stream_options".into(), json!({"include_usage": true}));
        }
        Ok(thinking)
    }
}

/// A base64 image (or a `data:`/http URL) as a URL a chat model takes.
fn image_url(image: &str) -> String {
    let image = image.trim();
    if image.starts_with("data:") || image.starts_with("http://") || image.starts_with("https://") {
        return image.to_string();
    }
    // The type from the first bytes, as base64 text.
    let media = if image.starts_with("/9j/") {
        "image/jpeg"
    } else if image.starts_with("R0lGOD") {
        "image/gif"
    } else if image.starts_with("UklGR") {
        "image/webp"
    } else {
        "image/png"
    };
    format!("data:{media};base64,{image}")
}

/// Text and images as a user message's content.
fn user_content(text: String, images: Option<Vec<String>>) -> Value {
    let images = images.unwrap_or_default();
    if images.is_empty() {
        return json!(text);
    }
    let mut parts = Vec::with_capacity(images.len() + 1);
    if !text.is_empty() {
        parts.push(json!({"type": "text", "text": text}));
    }
    for i in &images {
        parts.push(json!({"type": "image_url", "image_url": {"url": image_url(i)}}));
    }
    Value::Array(parts)
}

/// A tool call's arguments as JSON text.
fn arguments_text(v: Option<Value>) -> String {
    match v {
        None | Some(Value::Null) => "{}".into(),
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
    }
}

fn chat_messages(list: Vec<InMessage>) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::with_capacity(list.len());
    // Calls not answered yet: (id, name), in order.
    let mut open: Vec<(String, String)> = Vec::new();
    for (i, m) in list.into_iter().enumerate() {
        let content = m.content.unwrap_or_default();
        match m.role.as_str() {
            "system" => out.push(json!({"role": "system", "content": content})),
            "user" => out.push(json!({"role": "user", "content": user_content(content, m.images)})),
            "assistant" => {
                let calls = m.tool_calls.unwrap_or_default();
                if calls.is_empty() {
                    out.push(json!({"role": "assistant", "content": content}));
                    continue;
                }
                let calls: Vec<Value> = calls
                    .into_iter()
                    .enumerate()
                    .map(|(j, c)| {
                        let id = c.id.filter(|s| !s.is_empty()).unwrap_or_else(|| format!("call_{i}_{j}"));
                        open.push((id.clone(), c.function.name.clone()));
                        json!({"id": id, "type": "function", "function": {
                            "name": c.function.name, "arguments": arguments_text(c.function.arguments)}})
                    })
                    .collect();
                let content = if content.is_empty() {
                    Value::Null
                } else {
                    json!(content)
                };
                out.push(json!({"role": "assistant", "content": content, "tool_calls": calls}));
            }
            "tool" => {
                // The call it answers: by id when given, else the latest open call of its
                // name, else the oldest open call.
                let at = m
                    .tool_call_id
                    .as_deref()
                    .and_then(|id| open.iter().position(|(o, _)| o == id))
                    .or_else(|| {
                        m.tool_name
                            .as_deref()
                            .and_then(|n| open.iter().rposition(|(_, name)| name == n))
                    })
                    .or(if open.is_empty() { None } else { Some(0) });
                let Some(at) = at else {
                    return Err(invalid(format!(
                        "`messages[{i}]` is a tool result, but no assistant message before it called a tool"
                    )));
                };
                let (id, _) = open.remove(at);
                out.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
            }
            other => {
                return Err(invalid(format!(
                    "`messages[{i}].role` must be \"system\", \"user\", \"assistant\" or \"tool\", got {other:?}"
                )));
            }
        }
    }
    if out.is_empty() {
        return Err(invalid(
            "`messages` must contain at least one message (an empty list only loads the model)",
        ));
    }
    Ok(out)
}

fn generate_messages(
    prompt: Option<String>,
    suffix: Option<String>,
    system: Option<String>,
    images: Option<Vec<String>>,
) -> Result<Vec<Value>, ApiError> {
    let prompt = prompt.unwrap_or_default();
    let system = system.filter(|s| !s.is_empty());
    let mut out = Vec::new();
    match suffix.filter(|s| !s.is_empty()) {
        Some(suffix) => {
            let (fill, user) = super::completions::fill_in_the_middle(&prompt, &suffix);
            let system = match system {
                Some(s) => format!("{fill}\n\n{s}"),
                None => fill.to_string(),
            };
            out.push(json!({"role": "system", "content": system}));
            out.push(json!({"role": "user", "content": user_content(user, images)}));
        }
        None => {
            if prompt.is_empty() && images.as_ref().is_none_or(Vec::is_empty) {
                return Err(invalid(
                    "`prompt` is required (an empty prompt only loads the model)",
                ));
            }
            if let Some(s) = system {
                out.push(json!({"role": "system", "content": s}));
            }
            out.push(json!({"role": "user", "content": user_content(prompt, images)}));
        }
    }
    Ok(out)
}

// ---- answers ----

/// How to answer one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub mode: Mode,
    /// Show reasoning as `thinking`.
    pub thinking: bool,
    /// The prompt estimate, the count when the upstream reports none.
    pub estimate: u64,
    /// When the request arrived: the durations count from here.
    pub started: Instant,
}

/// Now, as Ollama writes `created_at`.
fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn done_reason(f: Finish) -> &'static str {
    match f {
        Finish::Length => "length",
        Finish::Stop | Finish::ToolCalls | Finish::ContentFilter => "stop",
    }
}

/// A tool call's arguments as the object Ollama's clients expect (arguments that are not an
/// object are kept under `"arguments"`, never lost).
fn arguments_object(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ if arguments.trim().is_empty() => json!({}),
        Ok(other) => json!({ "arguments": other }),
        Err(_) => json!({ "arguments": arguments }),
    }
}

fn tool_call(index: usize, id: &str, name: &str, arguments: &str) -> Value {
    json!({"id": id, "function": {"index": index, "name": name, "arguments": arguments_object(arguments)}})
}

/// Nanoseconds, as Ollama counts durations.
fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The counts and durations of the last object.
fn counts(
    obj: &mut Map<String, Value>,
    reply: &Reply,
    usage: Option<Usage>,
    output_chars: usize,
    first: Option<Instant>,
) {
    let end = Instant::now();
    let first = first.unwrap_or(end);
    let (input, output) = match usage {
        Some(u) => (u.input, u.output),
        None => (reply.estimate, output_chars.div_ceil(4) as u64),
    };
    obj.insert("total_duration".into(), json!(nanos(end - reply.started)));
    obj.insert("load_duration".into(), json!(0));
    obj.insert("prompt_eval_count".into(), json!(input));
    obj.insert(
        "prompt_eval_duration".into(),
        json!(nanos(first.saturating_duration_since(reply.started))),
    );
    obj.insert("eval_count".into(), json!(output));
    obj.insert(
        "eval_duration".into(),
        json!(nanos(end.saturating_duration_since(first))),
    );
}

/// The start of every answer object.
fn head(model: &str, done: bool) -> Map<String, Value> {
    let mut o = Map::new();
    o.insert("model".into(), json!(model));
    o.insert("created_at".into(), json!(now()));
    o.insert("done".into(), json!(done));
    o
}

/// A whole answer as Ollama's object (`message` for chat, `response` for generate).
pub fn answer_body(m: &Message, reply: &Reply) -> Value {
    let mut o = head(&m.model, true);
    let thinking = (reply.thinking && !m.reasoning.is_empty()).then_some(&m.reasoning);
    match reply.mode {
        Mode::Chat => {
            let mut msg = json!({"role": "assistant", "content": m.text});
            if let Some(t) = thinking {
                msg["thinking"] = json!(t);
            }
            if !m.calls.is_empty() {
                msg["tool_calls"] = m
                    .calls
                    .iter()
                    .enumerate()
                    .map(|(i, c)| tool_call(i, &c.id, &c.name, &c.arguments))
                    .collect();
            }
            o.insert("message".into(), msg);
        }
        Mode::Generate => {
            o.insert("response".into(), json!(m.text));
            if let Some(t) = thinking {
                o.insert("thinking".into(), json!(t));
            }
        }
    }
    o.insert("done_reason".into(), json!(done_reason(m.finish)));
    counts(
        &mut o,
        reply,
        m.usage,
        m.text.len() + m.reasoning.len(),
        None,
    );
    Value::Object(o)
}

/// The answer to a load (or unload) call.
pub fn load_body(mode: Mode, model: &str, unload: bool) -> Value {
    let mut o = head(model, true);
    match mode {
        Mode::Chat => {
            o.insert(
                "message".into(),
                json!({"role": "assistant", "content": ""}),
            );
        }
        Mode::Generate => {
            o.insert("response".into(), json!(""));
        }
    }
    o.insert(
        "done_reason".into(),
        json!(if unload { "unload" } else { "load" }),
    );
    Value::Object(o)
}

/// `{"error": "..."}`, Ollama's error shape.
pub fn error_body(e: &ApiError) -> Value {
    json!({"error": e.to_string()})
}

fn line(buf: &mut Vec<u8>, v: &Value) {
    // Writing a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, v);
    buf.push(b'\n');
}

/// A tool call being streamed.
#[derive(Default)]
struct OpenCall {
    id: String,
    name: String,
    arguments: String,
}

/// Frames a streamed answer as newline-delimited JSON: one object per piece of text or
/// thinking, tool calls whole in one object once the answer finishes (Ollama's clients read
/// them whole), then the `"done": true` object with the counts. A failure after content ends
/// the stream with `{"error": ...}` and no done object.
pub struct Framer {
    reply: Reply,
    model: String,
    calls: BTreeMap<u32, OpenCall>,
    finish: Option<Finish>,
    usage: Option<Usage>,
    output_chars: usize,
    /// When the first content came: the prompt took until then.
    first: Option<Instant>,
    ended: bool,
}

impl Framer {
    pub fn new(reply: Reply, model: &str) -> Framer {
        Framer {
            reply,
            model: model.into(),
            calls: BTreeMap::new(),
            finish: None,
            usage: None,
            output_chars: 0,
            first: None,
            ended: false,
        }
    }

    /// One object with some text or thinking.
    fn piece(&mut self, text: &str, thinking: bool) -> Value {
        self.first.get_or_insert_with(Instant::now);
        self.output_chars += text.len();
        let mut o = head(&self.model, false);
        match (self.reply.mode, thinking) {
            (Mode::Chat, false) => {
                o.insert(
                    "message".into(),
                    json!({"role": "assistant", "content": text}),
                );
            }
            (Mode::Chat, true) => {
                o.insert(
                    "message".into(),
                    json!({"role": "assistant", "content": "", "thinking": text}),
                );
            }
            (Mode::Generate, false) => {
                o.insert("response".into(), json!(text));
            }
            (Mode::Generate, true) => {
                o.insert("response".into(), json!(""));
                o.insert("thinking".into(), json!(text));
            }
        }
        Value::Object(o)
    }

    /// The object with the finished tool calls, if any.
    fn calls_object(&mut self) -> Option<Value> {
        if self.calls.is_empty() {
            return None;
        }
        let calls: Vec<Value> = std::mem::take(&mut self.calls)
            .into_values()
            .enumerate()
            .map(|(i, c)| tool_call(i, &c.id, &c.name, &c.arguments))
            .collect();
        let mut o = head(&self.model, false);
        o.insert(
            "message".into(),
            json!({"role": "assistant", "content": "", "tool_calls": calls}),
        );
        Some(Value::Object(o))
    }
}

impl Frames for Framer {
    fn frame(&mut self, piece: Piece) -> Option<Bytes> {
        if self.ended {
            return None;
        }
        let mut buf = Vec::new();
        match piece {
            Piece::Interrupted(reason) => {
                line(&mut buf, &json!({"error": super::interrupted(&reason)}));
                self.ended = true;
            }
            other => {
                for e in other.events() {
                    match e {
                        Event::Text(t) if !t.is_empty() => {
                            let v = self.piece(&t, false);
                            line(&mut buf, &v);
                        }
                        Event::Reasoning(t) if self.reply.thinking && !t.is_empty() => {
                            let v = self.piece(&t, true);
                            line(&mut buf, &v);
                        }
                        Event::ToolCall(c) => {
                            self.first.get_or_insert_with(Instant::now);
                            self.output_chars += c.arguments.len();
                            let call = self.calls.entry(c.index).or_default();
                            if let Some(id) = c.id {
                                call.id = id;
                            }
                            if let Some(name) = c.name {
                                call.name.push_str(&name);
                            }
                            call.arguments.push_str(&c.arguments);
                            if call.id.is_empty() {
                                call.id = format!("call_{}", c.index);
                            }
                        }
                        Event::Finish(f) => {
                            self.finish = Some(f);
                            if let Some(v) = self.calls_object() {
                                line(&mut buf, &v);
                            }
                        }
                        Event::Usage(u) => self.usage = Some(u),
                        Event::Text(_) | Event::Reasoning(_) => {}
                    }
                }
            }
        }
        (!buf.is_empty()).then(|| Bytes::from(buf))
    }

    fn end(&mut self) -> Option<Bytes> {
        if self.ended {
            return None;
        }
        self.ended = true;
        let mut buf = Vec::new();
        let Some(finish) = self.finish else {
            line(&mut buf, &json!({"error": super::NO_FINISH}));
            return Some(Bytes::from(buf));
        };
        let mut o = head(&self.model, true);
        match self.reply.mode {
            Mode::Chat => {
                o.insert(
                    "message".into(),
                    json!({"role": "assistant", "content": ""}),
                );
            }
            Mode::Generate => {
                o.insert("response".into(), json!(""));
            }
        }
        o.insert("done_reason".into(), json!(done_reason(finish)));
        counts(
            &mut o,
            &self.reply,
            self.usage,
            self.output_chars,
            self.first,
        );
        line(&mut buf, &Value::Object(o));
        Some(Bytes::from(buf))
    }
}

// ---- the model list ----

/// A model as `/api/tags` and `/api/show` describe it.
#[derive(Debug, Clone)]
pub struct Model<'a> {
    /// Freeway's id for it (canonical, or `auto`).
    pub id: &'a str,
    pub context: Option<u64>,
    pub tools: bool,
    pub vision: bool,
    /// An embedding model: the size of its vectors.
    pub embedding: Option<u32>,
    /// `provider/upstream-id` of what serves it.
    pub providers: &'a [String],
}

/// The name Ollama's clients see: the id with the `:latest` tag they expect (an id that
/// already has a tag keeps it).
pub fn tag_name(id: &str) -> String {
    if id.contains(':') {
        id.to_string()
    } else {
        format!("{id}:latest")
    }
}

/// The family of a model id: its leading letters (`llama-3.3-70b` → `llama`).
fn family(id: &str) -> String {
    if id == "auto" {
        return "freeway".into();
    }
    let f: String = id
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if f.is_empty() { "unknown".into() } else { f }
}

/// The parameter count an id names (`70b`, `8B`, `1.5b`), as Ollama writes it and as a number.
fn parameters(id: &str) -> Option<(String, u64)> {
    id.split(['-', ':', '/', '_']).find_map(|part| {
        let lower = part.to_ascii_lowercase();
        let (digits, scale) = if let Some(d) = lower.strip_suffix('b') {
            (d, 1e9)
        } else if let Some(d) = lower.strip_suffix('m') {
            (d, 1e6)
        } else {
            return None;
        };
        let n: f64 = digits.parse().ok().filter(|n: &f64| *n > 0.0)?;
        let unit = if scale == 1e9 { "B" } else { "M" };
        Some((format!("{digits}{unit}"), (n * scale) as u64))
    })
}

fn details(id: &str) -> Value {
    let family = family(id);
    json!({
        "parent_model": "",
        "format": "api",
        "family": family,
        "families": [family],
        "parameter_size": parameters(id).map(|p| p.0).unwrap_or_else(|| "unknown".into()),
        "quantization_level": "unknown",
    })
}

/// A stable digest of a model id (the same id always has the same digest).
fn digest(id: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// One entry of `/api/tags`.
pub fn tag(m: &Model) -> Value {
    let name = tag_name(m.id);
    json!({
        "name": name,
        "model": name,
        "modified_at": MODIFIED_AT,
        "size": 0,
        "digest": digest(m.id),
        "details": details(m.id),
    })
}

/// `/api/show` of a model.
pub fn show(m: &Model) -> Value {
    let family = family(m.id);
    let mut info = Map::new();
    info.insert("general.architecture".into(), json!(family));
    info.insert("general.basename".into(), json!(m.id));
    if let Some((_, n)) = parameters(m.id) {
        info.insert("general.parameter_count".into(), json!(n));
    }
    if let Some(c) = m.context {
        info.insert(format!("{family}.context_length"), json!(c));
    }
    let mut capabilities = Vec::new();
    if let Some(d) = m.embedding {
        info.insert(format!("{family}.embedding_length"), json!(d));
        capabilities.push("embedding");
    } else {
        capabilities.push("completion");
        if m.tools {
            capabilities.push("tools");
        }
        if m.vision {
            capabilities.push("vision");
        }
    }
    let served = if m.providers.is_empty() {
        "the routing chain".to_string()
    } else {
        m.providers.join(", ")
    };
    json!({
        "license": "",
        "modelfile": format!("# Served by Freeway through {served}: nothing is stored here.\nFROM {}\n", m.id),
        "parameters": "",
        "template": "{{ .Prompt }}",
        "details": details(m.id),
        "model_info": info,
        "capabilities": capabilities,
        "modified_at": MODIFIED_AT,
    })
}

// ---- embeddings (SPEC 2.5 on Ollama's API) ----

/// `/api/embed` (`input`: a string or a list) or the older `/api/embeddings` (`prompt`).
#[derive(Deserialize)]
struct EmbedBody {
    model: Option<String>,
    #[serde(default)]
    input: Option<EmbedInput>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    dimensions: Option<u32>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum EmbedInput {
    One(String),
    Many(Vec<String>),
}

/// An embedding request read: the model (a `:latest` tag dropped), the texts, the size asked.
pub struct Embed {
    pub model: String,
    pub inputs: Vec<String>,
    pub dims: Option<u32>,
}

/// Read `/api/embed` (`legacy = false`) or `/api/embeddings` (`legacy = true`).
pub fn parse_embed(bytes: &[u8], legacy: bool) -> Result<Embed, String> {
    let b: EmbedBody = super::read::body(bytes, "`model` and `input`")?;
    let model = b
        .model
        .filter(|m| !m.trim().is_empty())
        .ok_or("`model` is required: name an embedding model (GET /api/tags lists them)")?;
    let model = model.strip_suffix(":latest").unwrap_or(&model).to_string();
    let inputs = match (legacy, b.input, b.prompt) {
        (true, _, Some(p)) => vec![p],
        (true, _, None) => return Err("`prompt` is required: the text to embed".into()),
        (false, Some(EmbedInput::One(t)), _) => vec![t],
        (false, Some(EmbedInput::Many(t)), _) => t,
        (false, None, _) => return Err("`input` is required: a string or a list of strings".into()),
    };
    if inputs.is_empty() || inputs.iter().any(String::is_empty) {
        return Err("`input`: give at least one text, none of them empty".into());
    }
    if inputs.len() > super::embeddings::MAX_INPUTS {
        return Err(format!(
            "`input`: {} texts; at most {} per request",
            inputs.len(),
            super::embeddings::MAX_INPUTS
        ));
    }
    Ok(Embed {
        model,
        inputs,
        dims: b.dimensions.filter(|d| *d > 0),
    })
}

/// `/api/embed`'s answer: `{"model", "embeddings": [[...]], "prompt_eval_count", durations}`
/// (the vectors as the upstream wrote them); `/api/embeddings`' is `{"embedding": [...]}`.
pub fn embed_body(
    model: &str,
    vectors: &[crate::providers::embed::Vector],
    tokens: u64,
    nanos: u64,
    legacy: bool,
) -> String {
    if legacy {
        let first = vectors.first().map_or("[]", |v| v.get());
        return format!(r#"{{"embedding":{first}}}"#);
    }
    let mut out =
        String::with_capacity(128 + vectors.iter().map(|v| v.get().len() + 1).sum::<usize>());
    out.push_str(r#"{"model":"#);
    out.push_str(&Value::from(model).to_string());
    out.push_str(r#","embeddings":["#);
    for (i, v) in vectors.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(v.get());
    }
    out.push_str(&format!(
        r#"],"total_duration":{nanos},"load_duration":0,"prompt_eval_count":{tokens}}}"#
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{Call, CallDelta};

    fn known(n: &str) -> bool {
        [
            "gpt-oss-120b",
            "llama-3.3-70b",
            "qwen3:8b",
            "groq/llama-3.3-70b-versatile",
        ]
        .contains(&n)
    }

    fn route(n: &str) -> Option<String> {
        resolve(n, known, ["gpt-oss-120b", "llama-3.3-70b", "qwen3:8b"])
    }

    fn chat(v: Value) -> Result<Parsed, ApiError> {
        parse(v.to_string().as_bytes(), Mode::Chat, route)
    }

    fn generate(v: Value) -> Result<Parsed, ApiError> {
        parse(v.to_string().as_bytes(), Mode::Generate, route)
    }

    fn reply(mode: Mode, thinking: bool) -> Reply {
        Reply {
            mode,
            thinking,
            estimate: 9,
            started: Instant::now(),
        }
    }

    #[test]
    fn ollama_names_find_the_model() {
        assert_eq!(route("gpt-oss-120b").as_deref(), Some("gpt-oss-120b"));
        assert_eq!(
            route("gpt-oss-120b:latest").as_deref(),
            Some("gpt-oss-120b")
        );
        assert_eq!(route("gpt-oss:120b").as_deref(), Some("gpt-oss-120b"));
        assert_eq!(route("llama3.3:70b").as_deref(), Some("llama-3.3-70b"));
        assert_eq!(route("qwen3:8b").as_deref(), Some("qwen3:8b"));
        assert_eq!(
            route("groq/llama-3.3-70b-versatile").as_deref(),
            Some("groq/llama-3.3-70b-versatile")
        );
        assert_eq!(route("auto").as_deref(), Some("auto"));
        assert_eq!(route("auto:latest").as_deref(), Some("auto"));
        assert_eq!(route("").as_deref(), Some("auto"));
        assert_eq!(route("llama3.2"), None);
        assert_eq!(route(":::"), None);
        let e = chat(json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}))
            .unwrap_err();
        assert_eq!(e.status(), 404);
        assert!(e.to_string().contains("\"llama3.2\" not found"), "{e}");
        assert!(e.to_string().contains("/api/tags"), "{e}");
    }

    #[test]
    fn a_chat_becomes_the_canonical_request() {
        let p = chat(json!({
            "model": "gpt-oss:120b",
            "messages": [
                {"role": "system", "content": "be terse"},
                {"role": "user", "content": "what is this?", "images": ["iVBORw0KGgoAAAA", "/9j/4AAQ"]},
            ],
            "format": "json",
            "options": {"temperature": 0.2, "top_p": 0.9, "top_k": 40, "num_predict": 64,
                        "stop": ["\n\n"], "seed": 7, "num_ctx": 8192, "mirostat": 1},
            "keep_alive": "5m",
            "unknown_field": true,
        }))
        .unwrap();
        let b = p.req.to_map();
        assert_eq!(b["model"], "gpt-oss-120b");
        assert_eq!(b["stream"], true, "Ollama streams by default");
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(b["temperature"], 0.2);
        assert_eq!(b["top_p"], 0.9);
        assert_eq!(b["top_k"], 40);
        assert_eq!(b["max_tokens"], 64);
        assert_eq!(b["stop"], json!(["\n\n"]));
        assert_eq!(b["seed"], 7);
        assert!(b.get("num_ctx").is_none() && b.get("options").is_none());
        assert_eq!(b["response_format"], json!({"type": "json_object"}));
        let content = &b["messages"][1]["content"];
        assert_eq!(content[0], json!({"type": "text", "text": "what is this?"}));
        assert_eq!(
            content[1]["image_url"]["url"],
            "data:image/png;base64,iVBORw0KGgoAAAA"
        );
        assert_eq!(
            content[2]["image_url"]["url"],
            "data:image/jpeg;base64,/9j/4AAQ"
        );
        assert!(p.req.facts.has_images);
        assert!(!p.thinking);
    }

    #[test]
    fn schemas_thinking_and_no_stream() {
        let schema =
            json!({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]});
        let p = chat(
            json!({"model": "auto", "messages": [{"role": "user", "content": "x"}],
            "format": schema, "think": "high", "stream": false, "options": {"num_predict": -1}}),
        )
        .unwrap();
        let b = p.req.to_map();
        assert_eq!(b["response_format"]["type"], "json_schema");
        assert_eq!(b["response_format"]["json_schema"]["schema"], schema);
        assert_eq!(b["reasoning_effort"], "high");
        assert!(b.get("stream").is_none() && b.get("max_tokens").is_none());
        assert!(p.thinking);
        let p =
            chat(json!({"messages": [{"role": "user", "content": "x"}], "think": true})).unwrap();
        assert!(p.thinking);
        assert!(p.req.to_map().get("reasoning_effort").is_none());
    }

    #[test]
    fn tool_calls_and_results_round_trip() {
        let p = chat(json!({"model": "auto", "stream": false,
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "messages": [
            {"role": "user", "content": "weather in Paris and Rome?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                {"function": {"name": "get_time", "arguments": {}}},
            ]},
            {"role": "tool", "tool_name": "get_time", "content": "noon"},
            {"role": "tool", "content": "sunny"},
        ]}))
        .unwrap();
        let b = p.req.to_map();
        assert_eq!(b["tools"][0]["function"]["name"], "get_weather");
        let calls = &b["messages"][1]["tool_calls"];
        assert_eq!(calls[0]["id"], "call_1_0");
        assert_eq!(calls[0]["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(b["messages"][1]["content"], Value::Null);
        assert_eq!(
            b["messages"][2],
            json!({"role": "tool", "tool_call_id": "call_1_1", "content": "noon"})
        );
        assert_eq!(b["messages"][3]["tool_call_id"], "call_1_0");
        assert!(p.req.facts.has_tools);

        let e = chat(json!({"messages": [{"role": "tool", "content": "x"}]})).unwrap_err();
        assert!(e.to_string().contains("no assistant message"), "{e}");
    }

    #[test]
    fn generate_frames_prompt_system_and_suffix() {
        let p = generate(
            json!({"model": "auto", "prompt": "why?", "system": "be brief",
            "images": ["R0lGODlh"], "stream": false, "template": "{{ .Prompt }}"}),
        )
        .unwrap();
        let b = p.req.to_map();
        assert_eq!(
            b["messages"][0],
            json!({"role": "system", "content": "be brief"})
        );
        assert_eq!(
            b["messages"][1]["content"][1]["image_url"]["url"],
            "data:image/gif;base64,R0lGODlh"
        );
        assert_eq!(p.notes.len(), 1);
        let p = generate(json!({"prompt": "def add(a, b):\n    ", "suffix": "\nprint(add(1, 2))"}))
            .unwrap();
        let b = p.req.to_map();
        assert!(
            b["messages"][0]["content"]
                .as_str()
                .unwrap()
                .contains("between them")
        );
        assert_eq!(
            b["messages"][1]["content"],
            "<prefix>def add(a, b):\n    </prefix>\n<suffix>\nprint(add(1, 2))</suffix>"
        );
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_naming_the_field() {
        for (body, mode, needle) in [
            (json!({"prompt": "x", "raw": true}), Mode::Generate, "`raw`"),
            (
                json!({"prompt": "x", "context": [1, 2]}),
                Mode::Generate,
                "`context`",
            ),
            (
                json!({"prompt": "x", "format": "yaml"}),
                Mode::Generate,
                "`format`",
            ),
            (
                json!({"prompt": "x", "think": "max"}),
                Mode::Generate,
                "`think`",
            ),
            (json!({"prompt": 3}), Mode::Generate, "`prompt`"),
            (
                json!({"prompt": "x", "options": {"temperature": "hot"}}),
                Mode::Generate,
                "`options.temperature`",
            ),
            (
                json!({"prompt": "x", "options": {"top_k": 1.5}}),
                Mode::Generate,
                "`options.top_k`",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x", "images": [1]}]}),
                Mode::Chat,
                "`messages[0].images[0]`",
            ),
            (
                json!({"messages": [{"role": "robot", "content": "x"}]}),
                Mode::Chat,
                "`messages[0].role`",
            ),
            (json!({"messages": [{"content": "x"}]}), Mode::Chat, "role"),
            (json!({"messages": "hi"}), Mode::Chat, "`messages`"),
            (json!([1]), Mode::Chat, "JSON object"),
        ] {
            let e = parse(body.to_string().as_bytes(), mode, route).unwrap_err();
            assert_eq!(e.status(), 400, "{body}");
            assert!(e.to_string().contains(needle), "{body} -> {e}");
        }
        let e = parse(b"{not json", Mode::Chat, route).unwrap_err();
        assert!(e.to_string().contains("not valid JSON"), "{e}");
        // An empty context list is what some clients send on a first turn.
        assert!(generate(json!({"prompt": "x", "context": []})).is_ok());
    }

    #[test]
    fn load_calls_are_recognised() {
        let load = |v: Value, m| load_call(v.to_string().as_bytes(), m);
        assert_eq!(
            load(json!({"model": "auto"}), Mode::Generate),
            Some(Load {
                model: "auto".into(),
                unload: false
            })
        );
        assert_eq!(
            load(
                json!({"model": "m", "messages": [], "keep_alive": 0}),
                Mode::Chat
            ),
            Some(Load {
                model: "m".into(),
                unload: true
            })
        );
        assert_eq!(
            load(
                json!({"model": "m", "prompt": "", "keep_alive": "0s"}),
                Mode::Generate
            )
            .map(|l| l.unload),
            Some(true)
        );
        assert_eq!(
            load(json!({"model": "m", "prompt": "hi"}), Mode::Generate),
            None
        );
        assert_eq!(
            load(
                json!({"model": "m", "messages": [{"role": "user"}]}),
                Mode::Chat
            ),
            None
        );
        assert_eq!(load_body(Mode::Generate, "m", false)["done_reason"], "load");
    }

    fn message(calls: Vec<Call>) -> Message {
        Message {
            model: "up-model".into(),
            text: "hello".into(),
            reasoning: "pondering".into(),
            calls,
            finish: Finish::Length,
            usage: Some(Usage {
                input: 4,
                output: 2,
                ..Usage::default()
            }),
        }
    }

    #[test]
    fn whole_answers_are_ollama_objects() {
        let m = message(vec![Call {
            id: "c1".into(),
            name: "f".into(),
            arguments: "{\"x\":1}".into(),
            extra: None,
        }]);
        let v = answer_body(&m, &reply(Mode::Chat, true));
        assert_eq!(v["model"], "up-model");
        assert_eq!(v["done"], true);
        assert_eq!(v["done_reason"], "length");
        assert_eq!(v["message"]["content"], "hello");
        assert_eq!(v["message"]["thinking"], "pondering");
        assert_eq!(
            v["message"]["tool_calls"][0]["function"]["arguments"],
            json!({"x": 1})
        );
        assert_eq!(v["prompt_eval_count"], 4);
        assert_eq!(v["eval_count"], 2);
        for k in [
            "total_duration",
            "load_duration",
            "prompt_eval_duration",
            "eval_duration",
        ] {
            assert!(v[k].is_u64(), "{k}");
        }
        let v = answer_body(&message(vec![]), &reply(Mode::Generate, false));
        assert_eq!(v["response"], "hello");
        assert!(v.get("thinking").is_none() && v.get("message").is_none());
        assert_eq!(arguments_object("[1]"), json!({"arguments": [1]}));
        assert_eq!(arguments_object("nope"), json!({"arguments": "nope"}));
    }

    fn lines(f: &mut Framer, pieces: Vec<Piece>) -> Vec<Value> {
        let mut all = Vec::new();
        for p in pieces {
            all.extend_from_slice(&f.frame(p).unwrap_or_default());
        }
        all.extend_from_slice(&f.end().unwrap_or_default());
        let text = String::from_utf8(all).unwrap();
        assert!(text.ends_with('\n'));
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn streams_are_ndjson_ending_done() {
        let mut f = Framer::new(reply(Mode::Chat, true), "up-model");
        let out = lines(
            &mut f,
            vec![
                Piece::Events(vec![
                    Event::Reasoning("hm".into()),
                    Event::Text("he".into()),
                ]),
                Piece::Events(vec![Event::Text("llo".into())]),
                Piece::Events(vec![Event::ToolCall(CallDelta {
                    index: 0,
                    id: Some("c9".into()),
                    name: Some("f".into()),
                    arguments: "{\"a\":".into(),
                    extra: None,
                })]),
                Piece::Events(vec![Event::ToolCall(CallDelta {
                    index: 0,
                    id: None,
                    name: None,
                    arguments: "2}".into(),
                    extra: None,
                })]),
                Piece::Events(vec![Event::Finish(Finish::ToolCalls)]),
                Piece::Events(vec![Event::Usage(Usage {
                    input: 3,
                    output: 5,
                    ..Usage::default()
                })]),
            ],
        );
        assert_eq!(out[0]["message"]["thinking"], "hm");
        assert_eq!(out[1]["message"]["content"], "he");
        assert_eq!(out[2]["message"]["content"], "llo");
        assert_eq!(out[2]["done"], false);
        let call = &out[3]["message"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "f");
        assert_eq!(call["function"]["arguments"], json!({"a": 2}));
        let last = out.last().unwrap();
        assert_eq!(out.len(), 5);
        assert_eq!(last["done"], true);
        assert_eq!(last["done_reason"], "stop");
        assert_eq!(last["eval_count"], 5);
        assert_eq!(last["prompt_eval_count"], 3);

        let mut f = Framer::new(reply(Mode::Generate, false), "m");
        let out = lines(
            &mut f,
            vec![
                Piece::Events(vec![
                    Event::Reasoning("hidden".into()),
                    Event::Text("a".into()),
                ]),
                Piece::Events(vec![Event::Finish(Finish::Stop)]),
            ],
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0]["response"], "a");
        assert_eq!(out[1]["done_reason"], "stop");
        assert_eq!(
            out[1]["prompt_eval_count"], 9,
            "the estimate when no usage came"
        );
    }

    #[test]
    fn a_broken_stream_ends_with_an_error_line_never_done() {
        let mut f = Framer::new(reply(Mode::Chat, false), "m");
        let out = lines(
            &mut f,
            vec![
                Piece::Events(vec![Event::Text("par".into())]),
                Piece::Interrupted("connection reset".into()),
            ],
        );
        assert_eq!(out.len(), 2);
        assert!(
            out[1]["error"]
                .as_str()
                .unwrap()
                .contains("connection reset")
        );
        assert!(out.iter().all(|o| o["done"] != true));
        let mut f = Framer::new(reply(Mode::Chat, false), "m");
        let out = lines(&mut f, vec![Piece::Events(vec![Event::Text("x".into())])]);
        assert_eq!(out[1]["error"], super::super::NO_FINISH);
    }

    #[test]
    fn models_are_listed_the_ollama_way() {
        let providers = vec!["groq/llama-3.3-70b-versatile".to_string()];
        let m = Model {
            id: "llama-3.3-70b",
            context: Some(131072),
            tools: true,
            vision: false,
            embedding: None,
            providers: &providers,
        };
        let t = tag(&m);
        assert_eq!(t["name"], "llama-3.3-70b:latest");
        assert_eq!(t["model"], "llama-3.3-70b:latest");
        assert_eq!(t["digest"], tag(&m)["digest"]);
        assert_eq!(t["digest"].as_str().unwrap().len(), 64);
        assert_eq!(t["details"]["family"], "llama");
        assert_eq!(t["details"]["parameter_size"], "70B");
        let s = show(&m);
        assert_eq!(s["model_info"]["general.architecture"], "llama");
        assert_eq!(s["model_info"]["llama.context_length"], 131072);
        assert_eq!(
            s["model_info"]["general.parameter_count"],
            70_000_000_000u64
        );
        assert_eq!(s["capabilities"], json!(["completion", "tools"]));
        assert!(
            s["modelfile"]
                .as_str()
                .unwrap()
                .contains("groq/llama-3.3-70b-versatile")
        );
        assert_eq!(tag_name("qwen3:8b"), "qwen3:8b");
        assert_eq!(family("auto"), "freeway");
        assert_eq!(parameters("qwen3-1.5b").unwrap().0, "1.5B");
        assert_eq!(parameters("gemini-2.5-flash"), None);
        let e = show(&Model {
            id: "mistral-embed",
            context: Some(8192),
            tools: false,
            vision: false,
            embedding: Some(1024),
            providers: &providers,
        });
        assert_eq!(e["capabilities"], json!(["embedding"]));
        assert_eq!(e["model_info"]["mistral.embedding_length"], 1024);
    }

    #[test]
    fn embed_requests_both_ways() {
        let e = parse_embed(br#"{"model":"bge-m3:latest","input":["a","b"]}"#, false).unwrap();
        assert_eq!(e.model, "bge-m3");
        assert_eq!(e.inputs, ["a", "b"]);
        let e = parse_embed(br#"{"model":"m","prompt":"x"}"#, true).unwrap();
        assert_eq!(e.inputs, ["x"]);
        for (body, legacy, field) in [
            (r#"{"input":"x"}"#, false, "`model`"),
            (r#"{"model":"m"}"#, false, "`input`"),
            (r#"{"model":"m","input":[""]}"#, false, "`input`"),
            (r#"{"model":"m"}"#, true, "`prompt`"),
            (
                r#"{"model":"m","input":"x","dimensions":"a"}"#,
                false,
                "dimensions",
            ),
        ] {
            let err = parse_embed(body.as_bytes(), legacy).err().unwrap();
            assert!(err.contains(field), "{body}: {err}");
        }
        let v = serde_json::value::RawValue::from_string("[0.5,1]".into()).unwrap();
        let body: Value = serde_json::from_str(&embed_body("m", &[v], 3, 10, false)).unwrap();
        assert_eq!(body["embeddings"], json!([[0.5, 1]]));
        assert_eq!(body["prompt_eval_count"], 3);
    }
}
