//! The Anthropic Messages surface (`/v1/messages`, what Claude Code and the Anthropic SDKs
//! speak), pure: a Messages request into the canonical request, canonical answers back as a
//! `message` object or the Messages event stream, errors as `{"type": "error", ...}`.
//!
//! Requests are tolerant the way Claude Code needs: system text blocks with `cache_control`, a
//! `system` role inside `messages`, thinking blocks echoed back, `context_management`,
//! `output_config` and the like are accepted; what cannot be honoured is dropped (server tools,
//! documents that are not text), and the drop is noted for the request log, never a 400.
//! The body is read into typed request structs (fields Freeway does not read are skipped; a
//! message's blocks are read once its role is known), then translated.

use bytes::Bytes;
use serde::de;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value, json};
use std::borrow::Cow;

use super::read::{self, Lenient, Listed, Obj, StrOr, Tagged, inside, tagged, variant};
use super::{Frames, join_text, push_event};
use crate::chat::{self, Event, Finish, Message, Piece, Usage};
use crate::error::ApiError;

/// A Messages request, translated.
#[derive(Debug)]
pub struct Parsed {
    pub req: chat::Request,
    /// The model as the client named it: the answer echoes it.
    pub model: String,
    /// The client asked for thinking: reasoning is shown as thinking blocks.
    pub thinking: bool,
    /// What was dropped, for the request log.
    pub notes: Vec<String>,
}

fn wrong(field: &str, want: &str) -> String {
    format!("`{field}` must be {want}")
}

/// A Messages request as the client sends it. Fields Freeway does not read (`metadata`,
/// `context_management`, …) are skipped; optional extras of the wrong type are ignored
/// (`Lenient`), as they always were.
#[derive(Deserialize)]
#[serde(expecting = "a JSON object")]
struct Request<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    system: Option<StrOr<'a, SystemBlock<'a>>>,
    #[serde(borrow)]
    messages: Option<Vec<Obj<Turn<'a>>>>,
    max_tokens: Option<u64>,
    temperature: Option<Number>,
    top_p: Option<Number>,
    top_k: Option<Number>,
    stop_sequences: Option<Vec<String>>,
    stream: Option<bool>,
    #[serde(borrow)]
    tools: Option<Vec<Obj<Tool<'a>>>>,
    #[serde(borrow)]
    tool_choice: Option<Lenient<Obj<ToolChoice<'a>>>>,
    #[serde(borrow)]
    thinking: Option<Lenient<Obj<Thinking<'a>>>>,
    #[serde(borrow)]
    output_config: Option<Lenient<Obj<OutputConfig<'a>>>>,
    #[serde(borrow)]
    output_format: Option<&'a RawValue>,
}

/// One message; its blocks are read once its role says which blocks it may hold.
#[derive(Deserialize)]
#[serde(expecting = "an object with `role` and `content`")]
struct Turn<'a> {
    #[serde(borrow, default)]
    role: Lenient<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<StrOr<'a, RawBlock<'a>>>,
}

/// A content block kept as its JSON text until its message's role is known.
struct RawBlock<'a>(&'a RawValue);

impl<'de: 'a, 'a> Deserialize<'de> for RawBlock<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Deserialize::deserialize(d).map(RawBlock)
    }
}

impl Listed for RawBlock<'_> {
    const ITEMS: &'static str = "blocks";
}

#[derive(Deserialize)]
struct Text<'a> {
    #[serde(borrow)]
    text: Cow<'a, str>,
}

/// A block of `system` (or of a `system` message): its text counts, other blocks are ignored.
enum SystemBlock<'a> {
    Text(Text<'a>),
    Other,
}

impl Listed for SystemBlock<'_> {
    const ITEMS: &'static str = "text blocks";
}

/// A block of a user message.
enum UserBlock<'a> {
    Text(Text<'a>),
    Image(Image<'a>),
    ToolResult(ToolResult<'a>),
    Document(Document<'a>),
    Thinking,
    Other(Cow<'a, str>),
}

/// A block of an assistant message.
enum AssistantBlock<'a> {
    Text(Text<'a>),
    ToolUse(ToolUse<'a>),
    Thinking,
    Other(Cow<'a, str>),
}

/// A block of a tool result's content: text and images count, the rest is ignored.
enum ResultBlock<'a> {
    Text(LenientText<'a>),
    Image(Image<'a>),
    Other,
}

impl Listed for ResultBlock<'_> {
    const ITEMS: &'static str = "blocks";
}

#[derive(Deserialize)]
struct LenientText<'a> {
    #[serde(borrow, default)]
    text: Lenient<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Image<'a> {
    #[serde(borrow)]
    source: Source<'a>,
}

enum Source<'a> {
    Base64(Base64<'a>),
    Url(Url<'a>),
}

#[derive(Deserialize)]
struct Base64<'a> {
    #[serde(borrow)]
    media_type: Cow<'a, str>,
    #[serde(borrow)]
    data: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Url<'a> {
    #[serde(borrow)]
    url: Cow<'a, str>,
}

#[derive(Deserialize)]
struct ToolResult<'a> {
    #[serde(borrow)]
    tool_use_id: Cow<'a, str>,
    #[serde(borrow)]
    content: Option<StrOr<'a, ResultBlock<'a>>>,
    #[serde(default)]
    is_error: Lenient<bool>,
}

#[derive(Deserialize)]
struct Document<'a> {
    #[serde(borrow, default)]
    source: Lenient<Obj<DocumentSource<'a>>>,
}

#[derive(Deserialize)]
struct DocumentSource<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Lenient<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Lenient<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ToolUse<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    name: Cow<'a, str>,
    /// Opaque: its JSON becomes the call's arguments (`null` stays `null`).
    #[serde(default = "empty_object")]
    input: Value,
}

fn empty_object() -> Value {
    json!({})
}

/// A tool; one with a `type` other than `custom` is a server tool.
#[derive(Deserialize)]
#[serde(expecting = "an object")]
struct Tool<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Lenient<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Lenient<Cow<'a, str>>,
    #[serde(borrow, default)]
    description: Lenient<Cow<'a, str>>,
    /// Opaque: the JSON schema of the tool's input.
    input_schema: Option<Value>,
}

#[derive(Deserialize)]
struct ToolChoice<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Lenient<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Lenient<Cow<'a, str>>,
    #[serde(default)]
    disable_parallel_tool_use: Lenient<bool>,
}

#[derive(Deserialize)]
struct Thinking<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Lenient<Cow<'a, str>>,
    #[serde(default)]
    budget_tokens: Lenient<u64>,
    #[serde(borrow, default)]
    display: Lenient<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct OutputConfig<'a> {
    #[serde(borrow)]
    format: Option<&'a RawValue>,
}

/// `output_config.format` with `type: "json_schema"`.
#[derive(Deserialize)]
struct SchemaFormat {
    /// Opaque: the JSON schema the answer follows.
    schema: Option<Value>,
}

impl<'a> Tagged<'a> for SystemBlock<'a> {
    fn read<E: de::Error>(tag: Option<Cow<'a, str>>, raw: &'a RawValue) -> Result<Self, E> {
        match tag.as_deref() {
            Some("text") => Ok(SystemBlock::Text(variant(raw)?)),
            Some(_) => Ok(SystemBlock::Other),
            None => Err(de::Error::custom(NO_TYPE)),
        }
    }
}

impl<'a> Tagged<'a> for UserBlock<'a> {
    fn read<E: de::Error>(tag: Option<Cow<'a, str>>, raw: &'a RawValue) -> Result<Self, E> {
        let Some(tag) = tag else {
            return Err(de::Error::custom(NO_TYPE));
        };
        Ok(match tag.as_ref() {
            "text" => UserBlock::Text(variant(raw)?),
            "image" => UserBlock::Image(variant(raw)?),
            "tool_result" => UserBlock::ToolResult(variant(raw)?),
            "document" => UserBlock::Document(variant(raw)?),
            "thinking" | "redacted_thinking" => UserBlock::Thinking,
            _ => UserBlock::Other(tag),
        })
    }
}

impl<'a> Tagged<'a> for AssistantBlock<'a> {
    fn read<E: de::Error>(tag: Option<Cow<'a, str>>, raw: &'a RawValue) -> Result<Self, E> {
        let Some(tag) = tag else {
            return Err(de::Error::custom(NO_TYPE));
        };
        Ok(match tag.as_ref() {
            "text" => AssistantBlock::Text(variant(raw)?),
            "tool_use" => AssistantBlock::ToolUse(variant(raw)?),
            "thinking" | "redacted_thinking" => AssistantBlock::Thinking,
            _ => AssistantBlock::Other(tag),
        })
    }
}

impl<'a> Tagged<'a> for ResultBlock<'a> {
    fn read<E: de::Error>(tag: Option<Cow<'a, str>>, raw: &'a RawValue) -> Result<Self, E> {
        Ok(match tag.as_deref() {
            Some("text") => ResultBlock::Text(variant(raw)?),
            Some("image") => ResultBlock::Image(variant(raw)?),
            _ => ResultBlock::Other,
        })
    }
}

impl<'a> Tagged<'a> for Source<'a> {
    fn read<E: de::Error>(tag: Option<Cow<'a, str>>, raw: &'a RawValue) -> Result<Self, E> {
        match tag.as_deref() {
            Some("base64") => Ok(Source::Base64(variant(raw)?)),
            Some("url") => Ok(Source::Url(variant(raw)?)),
            _ => Err(inside("type", "must be \"base64\" or \"url\"")),
        }
    }
}

macro_rules! deserialize_tagged {
    ($($t:ident),*) => {$(
        impl<'de: 'a, 'a> Deserialize<'de> for $t<'a> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                tagged(d)
            }
        }
    )*};
}
deserialize_tagged!(SystemBlock, UserBlock, AssistantBlock, ResultBlock, Source);

const NO_TYPE: &str = "must be an object with a `type`";

/// Parse a Messages request; `route_model` turns the requested model into the one to route.
pub fn parse(bytes: &[u8], route_model: impl Fn(&str) -> String) -> Result<Parsed, String> {
    let body: Request = read::body(bytes, "`model` and `messages`")?;
    let model = match body.model {
        Some(m) if !m.is_empty() => m.into_owned(),
        None => return Err("`model` is required (a model id, `auto`, or a claude-… id)".into()),
        Some(_) => return Err(wrong("model", "a string")),
    };
    let mut notes = Vec::new();
    let mut out = Map::new();
    out.insert("model".into(), json!(route_model(&model)));
    let messages = conversation(body.system, body.messages, &mut notes)?;
    out.insert("messages".into(), Value::Array(messages));
    if let Some(n) = body.max_tokens {
        out.insert("max_tokens".into(), json!(n.max(1)));
    }
    for (key, n) in [
        ("temperature", body.temperature),
        ("top_p", body.top_p),
        ("top_k", body.top_k),
    ] {
        if let Some(n) = n {
            out.insert(key.into(), Value::Number(n));
        }
    }
    if let Some(stops) = body.stop_sequences.filter(|s| !s.is_empty()) {
        out.insert("stop".into(), json!(stops));
    }
    if body.stream == Some(true) {
        out.insert("stream".into(), json!(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let tools = tools(body.tools.unwrap_or_default(), &mut notes)?;
    let has_tools = !tools.is_empty();
    if has_tools {
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = body.tool_choice {
        tool_choice(choice.0.map(|c| c.0), has_tools, &mut out)?;
    }
    let thinking = match body.thinking {
        Some(t) => thinking(t.0.map(|t| t.0), &mut out)?,
        None => false,
    };
    // Structured output (`output_config.format`, or the earlier beta `output_format`): the
    // same JSON-schema output chat and Responses carry. An `output_config` without a format
    // hides `output_format`.
    let format = match body.output_config {
        Some(Lenient(config)) => config.and_then(|c| c.0.format),
        None => body.output_format,
    };
    if let Some(f) = format {
        out.insert("response_format".into(), response_format(f)?);
    }
    let req = chat::Request::from_map(out)?;
    Ok(Parsed {
        req,
        model,
        thinking,
        notes,
    })
}

/// `system` and `messages` into canonical messages, system text first.
fn conversation(
    system: Option<StrOr<'_, SystemBlock<'_>>>,
    turns: Option<Vec<Obj<Turn<'_>>>>,
    notes: &mut Vec<String>,
) -> Result<Vec<Value>, String> {
    let mut messages = Vec::new();
    let text = match system {
        None => String::new(),
        Some(StrOr::Str(s)) => s.into_owned(),
        Some(StrOr::List(blocks)) => system_text(blocks),
    };
    if !text.is_empty() {
        messages.push(json!({"role": "system", "content": text}));
    }
    let Some(turns) = turns else {
        return Err("`messages` is required: an array of {\"role\", \"content\"} objects".into());
    };
    if turns.is_empty() {
        return Err("`messages` must contain at least one message".into());
    }
    for (i, turn) in turns.into_iter().enumerate() {
        message(turn.0, i, &mut messages, notes)?;
    }
    Ok(system_first(messages))
}

/// System text that appears inside the conversation (Claude Code's `system` role in
/// `messages`) joins the leading system message: several upstreams take system text only first.
fn system_first(messages: Vec<Value>) -> Vec<Value> {
    let (system, rest): (Vec<Value>, Vec<Value>) =
        messages.into_iter().partition(|m| m["role"] == "system");
    if system.is_empty() {
        return rest;
    }
    let text = join_text(system.iter().filter_map(|m| m["content"].as_str()));
    let mut out = Vec::with_capacity(rest.len() + 1);
    out.push(json!({"role": "system", "content": text}));
    out.extend(rest);
    out
}

/// The text of system blocks (other blocks are ignored).
fn system_text(blocks: Vec<SystemBlock<'_>>) -> String {
    let texts: Vec<Cow<str>> = blocks
        .into_iter()
        .filter_map(|b| match b {
            SystemBlock::Text(t) => Some(t.text),
            SystemBlock::Other => None,
        })
        .collect();
    join_text(texts.iter().map(Cow::as_ref))
}

/// An image block's source as a URL (a `data:` URL for base64).
fn image_url(image: Image<'_>) -> String {
    match image.source {
        Source::Base64(b) => format!("data:{};base64,{}", b.media_type, b.data),
        Source::Url(u) => u.url.into_owned(),
    }
}

fn image_part(url: String) -> Value {
    json!({"type": "image_url", "image_url": {"url": url}})
}

/// The blocks of a message, read as its role's blocks (`at` is the message's path).
fn blocks<'a, T: Tagged<'a> + Deserialize<'a>>(
    content: Option<StrOr<'a, RawBlock<'a>>>,
    at: &str,
    text: impl Fn(Cow<'a, str>) -> T,
) -> Result<Vec<T>, String> {
    match content {
        None => Ok(Vec::new()),
        Some(StrOr::Str(s)) => Ok(vec![text(s)]),
        Some(StrOr::List(raws)) => raws
            .into_iter()
            .enumerate()
            .map(|(j, b)| read::piece(b.0, &format!("{at}.content[{j}]")))
            .collect(),
    }
}

/// One Messages message into canonical messages (a user turn with tool results becomes the
/// tool messages, then the user message with the rest).
fn message(
    turn: Turn<'_>,
    i: usize,
    out: &mut Vec<Value>,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    let at = format!("messages[{i}]");
    let Some(role) = turn.role.0 else {
        return Err(format!(
            "`{at}.role` is required: \"user\" or \"assistant\""
        ));
    };
    match role.as_ref() {
        "system" => {
            let text = system_text(blocks(turn.content, &at, |text| {
                SystemBlock::Text(Text { text })
            })?);
            if !text.is_empty() {
                out.push(json!({"role": "system", "content": text}));
            }
        }
        "user" => {
            let blocks = blocks(turn.content, &at, |text| UserBlock::Text(Text { text }))?;
            user(blocks, &at, out, notes);
        }
        "assistant" => {
            let blocks = blocks(turn.content, &at, |text| {
                AssistantBlock::Text(Text { text })
            })?;
            assistant(blocks, &at, out, notes);
        }
        other => {
            return Err(format!(
                "`{at}.role` must be \"user\" or \"assistant\", got {other:?}"
            ));
        }
    }
    Ok(())
}

/// A user message: its tool results as tool messages, then the rest as one user message.
fn user(blocks: Vec<UserBlock<'_>>, at: &str, out: &mut Vec<Value>, notes: &mut Vec<String>) {
    let mut parts: Vec<Value> = Vec::new();
    for b in blocks {
        match b {
            UserBlock::Text(t) => parts.push(json!({"type": "text", "text": t.text})),
            UserBlock::Image(image) => parts.push(image_part(image_url(image))),
            UserBlock::ToolResult(r) => {
                let (text, images) = tool_result_content(r.content);
                let text = if r.is_error.0 == Some(true) {
                    format!("[tool error] {text}")
                } else {
                    text
                };
                out.push(json!({"role": "tool", "tool_call_id": r.tool_use_id, "content": text}));
                parts.extend(images.into_iter().map(image_part));
            }
            UserBlock::Document(d) => match d.source.0 {
                Some(Obj(s)) if s.kind.0.as_deref() == Some("text") => {
                    let text = s.data.0.unwrap_or_default();
                    parts.push(json!({"type": "text", "text": text}));
                }
                _ => notes.push(format!(
                    "dropped a document block in {at}: only text documents reach a chat model"
                )),
            },
            UserBlock::Thinking => {}
            UserBlock::Other(kind) => notes.push(format!("dropped a {kind} block in {at}")),
        }
    }
    match parts.len() {
        0 => {}
        1 if parts[0]["type"] == "text" => {
            out.push(json!({"role": "user", "content": parts[0]["text"]}));
        }
        _ => out.push(json!({"role": "user", "content": parts})),
    }
}

/// An assistant message: its text, and its tool uses as tool calls.
fn assistant(
    blocks: Vec<AssistantBlock<'_>>,
    at: &str,
    out: &mut Vec<Value>,
    notes: &mut Vec<String>,
) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in blocks {
        match b {
            AssistantBlock::Text(t) => text.push_str(&t.text),
            AssistantBlock::ToolUse(u) => calls.push(json!({"id": u.id, "type": "function",
                "function": {"name": u.name, "arguments": u.input.to_string()}})),
            AssistantBlock::Thinking => {}
            AssistantBlock::Other(kind) => notes.push(format!("dropped a {kind} block in {at}")),
        }
    }
    if calls.is_empty() {
        if !text.is_empty() {
            out.push(json!({"role": "assistant", "content": text}));
        }
    } else {
        let content = if text.is_empty() {
            Value::Null
        } else {
            json!(text)
        };
        out.push(json!({"role": "assistant", "content": content, "tool_calls": calls}));
    }
}

/// A tool result's content: its text, and the URLs of its images.
fn tool_result_content(content: Option<StrOr<'_, ResultBlock<'_>>>) -> (String, Vec<String>) {
    match content {
        None => (String::new(), Vec::new()),
        Some(StrOr::Str(s)) => (s.into_owned(), Vec::new()),
        Some(StrOr::List(blocks)) => {
            let mut texts = Vec::new();
            let mut images = Vec::new();
            for b in blocks {
                match b {
                    ResultBlock::Text(t) => texts.push(t.text.0.unwrap_or_default()),
                    ResultBlock::Image(image) => images.push(image_url(image)),
                    ResultBlock::Other => {}
                }
            }
            (join_text(texts.iter().map(Cow::as_ref)), images)
        }
    }
}

/// Client tools as chat tools; server tools (with a `type` such as `web_search_20250305`)
/// are dropped and noted.
fn tools(list: Vec<Obj<Tool<'_>>>, notes: &mut Vec<String>) -> Result<Vec<Value>, String> {
    let mut out = Vec::with_capacity(list.len());
    for (i, Obj(t)) in list.into_iter().enumerate() {
        match t.kind.0.as_deref() {
            None | Some("custom") => {}
            Some(kind) => {
                notes.push(format!(
                    "dropped the server tool {} ({kind})",
                    t.name.0.as_deref().unwrap_or("without a name")
                ));
                continue;
            }
        }
        let name = t
            .name
            .0
            .ok_or_else(|| format!("`tools[{i}].name` must be a string"))?;
        let mut function = Map::new();
        function.insert("name".into(), json!(name));
        if let Some(d) = t.description.0 {
            function.insert("description".into(), json!(d));
        }
        let schema = match t.input_schema {
            Some(s @ Value::Object(_)) => s,
            None => json!({"type": "object", "properties": {}}),
            Some(_) => return Err(format!("`tools[{i}].input_schema` must be an object")),
        };
        function.insert("parameters".into(), schema);
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(out)
}

/// `tool_choice` as chat's, kept only when there are tools to choose from.
fn tool_choice(
    choice: Option<ToolChoice<'_>>,
    has_tools: bool,
    out: &mut Map<String, Value>,
) -> Result<(), String> {
    let choice = choice.unwrap_or(ToolChoice {
        kind: Lenient(None),
        name: Lenient(None),
        disable_parallel_tool_use: Lenient(None),
    });
    let mapped = match choice.kind.0.as_deref() {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = choice.name.0.ok_or_else(|| {
                "`tool_choice.name` is required with `type: \"tool\"`".to_string()
            })?;
            json!({"type": "function", "function": {"name": name}})
        }
        Some(other) => {
            return Err(format!(
                "`tool_choice.type` must be auto, any, tool or none, got {other:?}"
            ));
        }
        None => {
            return Err(wrong(
                "tool_choice",
                "an object with `type` auto, any, tool or none",
            ));
        }
    };
    if has_tools {
        out.insert("tool_choice".into(), mapped);
        if choice.disable_parallel_tool_use.0 == Some(true) {
            out.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    Ok(())
}

/// Whether thinking is shown; an explicit budget becomes a reasoning effort ("adaptive"
/// leaves the model its default).
fn thinking(t: Option<Thinking<'_>>, out: &mut Map<String, Value>) -> Result<bool, String> {
    let t = t.unwrap_or(Thinking {
        kind: Lenient(None),
        budget_tokens: Lenient(None),
        display: Lenient(None),
    });
    let shown = t.display.0.as_deref() != Some("omitted");
    match t.kind.0.as_deref() {
        Some("enabled") => {
            let effort = match t.budget_tokens.0.unwrap_or(0) {
                0..4096 => "low",
                4096..16384 => "medium",
                _ => "high",
            };
            out.insert("reasoning_effort".into(), json!(effort));
            Ok(shown)
        }
        Some("adaptive") => Ok(shown),
        Some("disabled") => Ok(false),
        _ => Err(wrong(
            "thinking",
            "an object with `type` enabled, adaptive or disabled",
        )),
    }
}

/// `output_config.format` as chat's `response_format`.
fn response_format(format: &RawValue) -> Result<Value, String> {
    if read::tag(format).as_deref() != Some("json_schema") {
        return Err(wrong(
            "output_config.format",
            "an object with `type: \"json_schema\"` and a `schema`",
        ));
    }
    let f: SchemaFormat = read::piece(format, "output_config.format")?;
    let schema = f
        .schema
        .filter(Value::is_object)
        .ok_or_else(|| wrong("output_config.format.schema", "a JSON schema object"))?;
    Ok(
        json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": true}}),
    )
}

// ---- answers ----

fn stop_reason(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
        Finish::ToolCalls => "tool_use",
        Finish::ContentFilter => "refusal",
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input,
        "output_tokens": u.output,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": u.cached.unwrap_or(0),
    })
}

/// A tool call's arguments as the `input` object (arguments that are not an object are kept
/// under `"arguments"`, never lost).
fn input_of(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ if arguments.trim().is_empty() => json!({}),
        Ok(other) => json!({ "arguments": other }),
        Err(_) => json!({ "arguments": arguments }),
    }
}

/// A whole answer as a `message` object. `estimate` fills usage an upstream did not report.
pub fn message_body(m: &Message, id: &str, model: &str, thinking: bool, estimate: u64) -> Value {
    let mut content = Vec::new();
    if thinking && !m.reasoning.is_empty() {
        content.push(json!({"type": "thinking", "thinking": m.reasoning, "signature": ""}));
    }
    if !m.text.is_empty() || m.calls.is_empty() {
        content.push(json!({"type": "text", "text": m.text}));
    }
    for c in &m.calls {
        content.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input_of(&c.arguments)}));
    }
    let usage = m.usage.unwrap_or(Usage {
        input: estimate,
        output: (m.text.len() + m.reasoning.len()).div_ceil(4) as u64,
        ..Usage::default()
    });
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(m.finish),
        "stop_sequence": null,
        "usage": usage_json(&usage),
    })
}

/// The Anthropic `error.type` of an error.
pub fn error_type(e: &ApiError) -> &'static str {
    match e {
        ApiError::InvalidRequest(_)
        | ApiError::ContextTooLong(_)
        | ApiError::IdempotencyKeyReused(_) => "invalid_request_error",
        ApiError::Unauthorized(_) => "authentication_error",
        ApiError::ModelNotFound(_) | ApiError::NotFound(_) => "not_found_error",
        ApiError::TooLarge(_) => "request_too_large",
        ApiError::RequestTimeout(_) => "timeout_error",
        ApiError::RateLimited { .. } | ApiError::ClientQuota { .. } => "rate_limit_error",
        ApiError::ModelNotAllowed(_) => "permission_error",
        ApiError::UpstreamFailed(_) => "api_error",
        ApiError::NoProviders(_) => "overloaded_error",
    }
}

/// `{"type": "error", "error": {"type", "message"}, "request_id"}`.
pub fn error_body(e: &ApiError, request_id: &str) -> Value {
    json!({
        "type": "error",
        "error": {"type": error_type(e), "message": e.to_string()},
        "request_id": request_id,
    })
}

// ---- streams ----

#[derive(Debug, Clone, Copy, PartialEq)]
enum Block {
    Text,
    Thinking,
    /// A tool call, by its index in the answer.
    Tool(u32),
}

/// Frames a streamed answer as the Messages event sequence: `message_start`, then each
/// content block (`content_block_start`, deltas, `content_block_stop`) one after another,
/// `message_delta` with the stop reason and usage, `message_stop`.
pub struct Framer {
    id: String,
    model: String,
    thinking: bool,
    estimate: u64,
    started: bool,
    open: Option<(Block, u32)>,
    next_index: u32,
    finish: Option<Finish>,
    usage: Option<Usage>,
    output_chars: usize,
    ended: bool,
}

impl Framer {
    /// `estimate`: the prompt estimate, the `input_tokens` of `message_start` (the upstream's
    /// count follows in `message_delta`).
    pub fn new(id: &str, model: &str, thinking: bool, estimate: u64) -> Framer {
        Framer {
            id: id.into(),
            model: model.into(),
            thinking,
            estimate,
            started: false,
            open: None,
            next_index: 0,
            finish: None,
            usage: None,
            output_chars: 0,
            ended: false,
        }
    }

    fn start(&mut self, buf: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        push_event(
            buf,
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": self.estimate, "output_tokens": 0,
                          "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
        );
        push_event(buf, "ping", &json!({"type": "ping"}));
    }

    fn close(&mut self, buf: &mut Vec<u8>) {
        if let Some((_, index)) = self.open.take() {
            push_event(
                buf,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
        }
    }

    /// Make `block` the open one (closing another), opening it with `start` when new.
    fn open(&mut self, buf: &mut Vec<u8>, block: Block, start: Value) -> u32 {
        if let Some((b, index)) = self.open {
            if b == block {
                return index;
            }
        }
        self.close(buf);
        let index = self.next_index;
        self.next_index += 1;
        push_event(
            buf,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
        );
        self.open = Some((block, index));
        index
    }

    fn delta(buf: &mut Vec<u8>, index: u32, delta: Value) {
        push_event(
            buf,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": delta}),
        );
    }

    fn event(&mut self, buf: &mut Vec<u8>, e: Event) {
        match e {
            Event::Text(t) if !t.is_empty() => {
                self.output_chars += t.len();
                let i = self.open(buf, Block::Text, json!({"type": "text", "text": ""}));
                Self::delta(buf, i, json!({"type": "text_delta", "text": t}));
            }
            Event::Reasoning(t) if self.thinking && !t.is_empty() => {
                self.output_chars += t.len();
                let i = self.open(
                    buf,
                    Block::Thinking,
                    json!({"type": "thinking", "thinking": "", "signature": ""}),
                );
                Self::delta(buf, i, json!({"type": "thinking_delta", "thinking": t}));
            }
            Event::ToolCall(c) => {
                self.output_chars += c.arguments.len();
                let start = json!({
                    "type": "tool_use",
                    "id": c.id.clone().unwrap_or_else(|| format!("toolu_{}_{}", self.id, c.index)),
                    "name": c.name.clone().unwrap_or_default(),
                    "input": {},
                });
                let i = self.open(buf, Block::Tool(c.index), start);
                if !c.arguments.is_empty() {
                    Self::delta(
                        buf,
                        i,
                        json!({"type": "input_json_delta", "partial_json": c.arguments}),
                    );
                }
            }
            Event::Finish(f) => self.finish = Some(f),
            Event::Usage(u) => self.usage = Some(u),
            Event::Text(_) | Event::Reasoning(_) => {}
        }
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
                self.start(&mut buf);
                self.ended = true;
                push_event(
                    &mut buf,
                    "error",
                    &json!({"type": "error", "error": {"type": "api_error",
                        "message": super::interrupted(&reason)}}),
                );
            }
            other => {
                let events = other.events();
                if events.iter().any(Event::is_content) {
                    self.start(&mut buf);
                }
                for e in events {
                    self.event(&mut buf, e);
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
        self.start(&mut buf);
        self.close(&mut buf);
        let Some(finish) = self.finish else {
            push_event(
                &mut buf,
                "error",
                &json!({"type": "error", "error": {"type": "api_error",
                    "message": super::NO_FINISH}}),
            );
            return Some(Bytes::from(buf));
        };
        let mut usage = json!({"output_tokens": self.output_chars.div_ceil(4)});
        if let Some(u) = self.usage {
            usage = usage_json(&u);
        }
        push_event(
            &mut buf,
            "message_delta",
            &json!({"type": "message_delta",
                "delta": {"stop_reason": stop_reason(finish), "stop_sequence": null},
                "usage": usage}),
        );
        push_event(&mut buf, "message_stop", &json!({"type": "message_stop"}));
        Some(Bytes::from(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{Call, CallDelta};
    use crate::config::Families;

    fn p(v: Value) -> Result<Parsed, String> {
        parse(v.to_string().as_bytes(), |m| m.to_string())
    }

    #[test]
    fn structured_output_becomes_a_json_schema_response_format() {
        let schema = json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]});
        for body in [
            json!({"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "x"}],
                "output_config": {"format": {"type": "json_schema", "schema": schema}}}),
            json!({"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "x"}],
                "output_format": {"type": "json_schema", "schema": schema}}),
        ] {
            let parsed = p(body).unwrap();
            let rf = parsed.req.get("response_format").unwrap();
            assert_eq!(rf["type"], "json_schema");
            assert_eq!(rf["json_schema"]["schema"], schema);
        }
        let bad = p(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "output_config": {"format": {"type": "xml"}}}),
        );
        assert!(bad.unwrap_err().contains("output_config.format"));
    }

    #[test]
    fn a_claude_code_request_translates_whole() {
        let fixture: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/claude_code_2.1.197_messages_request.json"
        ))
        .unwrap();
        let parsed = parse(fixture["body"].to_string().as_bytes(), |m| {
            Families::default().map(m, |_| false)
        })
        .unwrap();
        let body = parsed.req.to_map();
        assert_eq!(body["model"], "auto");
        assert_eq!(parsed.model, fixture["body"]["model"]);
        assert!(parsed.req.facts.stream && parsed.req.facts.has_tools);
        let messages = body["messages"].as_array().unwrap();
        // The system blocks, then the system role inside messages, then the user turn.
        assert_eq!(messages[0]["role"], "system");
        let system = messages[0]["content"].as_str().unwrap();
        assert!(system.starts_with("<text: 74 characters"), "{system}");
        assert!(system.contains("<text: 5764 characters"));
        assert_eq!(messages.iter().filter(|m| m["role"] == "system").count(), 1);
        assert_eq!(messages[1]["role"], "user");
        let tools = body["tools"].as_array().unwrap();
        assert!(
            tools
                .iter()
                .all(|t| t["function"]["parameters"].is_object())
        );
        assert!(tools.iter().any(|t| t["function"]["name"] == "Bash"));
        // adaptive thinking: shown, no effort forced on the model.
        assert!(parsed.thinking);
        assert!(body.get("reasoning_effort").is_none());
        assert_eq!(body["stream_options"]["include_usage"], true);
    }

    #[test]
    fn blocks_tool_results_and_images_translate() {
        let parsed = p(json!({
            "model": "m", "max_tokens": 100, "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
            "stop_sequences": ["END"], "temperature": 0.2, "top_k": 5,
            "tools": [{"name": "get", "description": "d", "input_schema": {"type": "object"}},
                      {"type": "web_search_20250305", "name": "web_search"}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "thinking": {"type": "enabled", "budget_tokens": 20000},
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "look"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}}]},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "text", "text": "calling"}, {"type": "tool_use", "id": "toolu_1", "name": "get", "input": {"q": 1}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "42"}], "is_error": true},
                    {"type": "text", "text": "and?"}]}
            ]
        }))
        .unwrap();
        let b = parsed.req.to_map();
        assert_eq!(b["max_tokens"], 100);
        assert_eq!(b["stop"], json!(["END"]));
        assert_eq!(b["top_k"], 5);
        assert_eq!(b["tool_choice"], "required");
        assert_eq!(b["parallel_tool_calls"], false);
        assert_eq!(b["reasoning_effort"], "high");
        assert_eq!(b["tools"].as_array().unwrap().len(), 1);
        assert_eq!(
            parsed.notes,
            vec!["dropped the server tool web_search (web_search_20250305)"]
        );
        let m = b["messages"].as_array().unwrap();
        assert_eq!(m[0], json!({"role": "system", "content": "be brief"}));
        assert_eq!(
            m[1]["content"][1]["image_url"]["url"],
            "data:image/png;base64,AAA"
        );
        assert_eq!(m[2]["content"], "calling");
        assert_eq!(m[2]["tool_calls"][0]["function"]["arguments"], "{\"q\":1}");
        assert_eq!(
            m[3],
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": "[tool error] 42"})
        );
        assert_eq!(m[4], json!({"role": "user", "content": "and?"}));
        assert!(parsed.req.facts.has_images && parsed.req.facts.has_assistant);
    }

    #[test]
    fn bad_requests_name_the_field() {
        let cases = [
            (json!([1]), "JSON object"),
            (json!({"messages": []}), "`model` is required"),
            (json!({"model": "m"}), "`messages` is required"),
            (json!({"model": "m", "messages": []}), "at least one"),
            (
                json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]}),
                "`messages[0].role`",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": 5}]}),
                "`messages[0].content`",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file"}}]}]}),
                "source.type",
            ),
            (
                json!({"model": "m", "max_tokens": -3, "messages": [{"role": "user", "content": "x"}]}),
                "`max_tokens`",
            ),
            (
                json!({"model": "m", "tool_choice": {"type": "tool"}, "messages": [{"role": "user", "content": "x"}]}),
                "tool_choice.name",
            ),
            (
                json!({"model": "m", "thinking": {"type": "maybe"}, "messages": [{"role": "user", "content": "x"}]}),
                "`thinking`",
            ),
        ];
        for (body, needle) in cases {
            let err = p(body.clone()).unwrap_err();
            assert!(err.contains(needle), "{body} -> {err}");
        }
    }

    #[test]
    fn claude_ids_map_by_family() {
        let f = Families {
            opus: "groq/big".into(),
            sonnet: "auto".into(),
            haiku: "small".into(),
        };
        assert_eq!(f.map("claude-opus-4-8", |_| false), "groq/big");
        assert_eq!(f.map("claude-3-5-haiku-latest", |_| false), "small");
        assert_eq!(f.map("claude-sonnet-4-5", |_| false), "auto");
        assert_eq!(f.map("claude-next", |_| false), "auto");
        assert_eq!(f.map("claude-opus-4-8", |_| true), "claude-opus-4-8");
        assert_eq!(f.map("gpt-oss-120b", |_| false), "gpt-oss-120b");
    }

    #[test]
    fn a_whole_answer_is_a_message() {
        let m = Message {
            model: "up".into(),
            text: "hi".into(),
            reasoning: "think".into(),
            calls: vec![Call {
                id: "call_1".into(),
                name: "get".into(),
                arguments: "{\"q\":1}".into(),
                extra: None,
            }],
            finish: Finish::ToolCalls,
            usage: Some(Usage {
                input: 10,
                output: 3,
                ..Usage::default()
            }),
        };
        let v = message_body(&m, "msg_1", "claude-x", true, 99);
        assert_eq!(v["model"], "claude-x");
        assert_eq!(v["stop_reason"], "tool_use");
        assert_eq!(v["content"][0]["type"], "thinking");
        assert_eq!(v["content"][1], json!({"type": "text", "text": "hi"}));
        assert_eq!(v["content"][2]["input"], json!({"q": 1}));
        assert_eq!(v["usage"]["input_tokens"], 10);
        let v = message_body(&m, "msg_1", "claude-x", false, 99);
        assert_eq!(v["content"][0]["type"], "text");
        assert_eq!(input_of("not json"), json!({"arguments": "not json"}));
    }

    /// The event names of framed bytes, with the JSON `type` checked to match.
    fn names(bytes: &[u8]) -> Vec<String> {
        let text = std::str::from_utf8(bytes).unwrap();
        let mut out = Vec::new();
        for ev in text.split("\n\n").filter(|e| !e.is_empty()) {
            let (name, data) = ev.split_once('\n').unwrap();
            let name = name.strip_prefix("event: ").unwrap();
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(data["type"], name);
            out.push(name.to_string());
        }
        out
    }

    #[test]
    fn a_stream_is_the_exact_event_sequence() {
        let mut f = Framer::new("msg_1", "claude-x", false, 12);
        let mut all = Vec::new();
        for piece in [
            Piece::Events(vec![Event::Reasoning("hidden".into())]),
            Piece::Events(vec![Event::Text("Hel".into())]),
            Piece::Events(vec![Event::Text("lo".into())]),
            Piece::Events(vec![Event::ToolCall(CallDelta {
                index: 0,
                id: Some("call_1".into()),
                name: Some("get".into()),
                arguments: "{\"q\"".into(),
                extra: None,
            })]),
            Piece::Events(vec![Event::ToolCall(CallDelta {
                index: 0,
                id: None,
                name: None,
                arguments: ":1}".into(),
                extra: None,
            })]),
            Piece::Events(vec![Event::Finish(Finish::ToolCalls)]),
            Piece::Events(vec![Event::Usage(Usage {
                input: 7,
                output: 4,
                ..Usage::default()
            })]),
        ] {
            all.extend_from_slice(&f.frame(piece).unwrap_or_default());
        }
        all.extend_from_slice(&f.end().unwrap());
        assert_eq!(
            names(&all),
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let text = String::from_utf8(all).unwrap();
        assert!(text.contains(r#""stop_reason":"tool_use""#), "{text}");
        assert!(text.contains(r#""output_tokens":4"#));
        assert!(!text.contains("hidden"), "reasoning shown without thinking");
        assert!(
            text.contains(r#""index":1,"type":"content_block_start""#)
                || text.contains(r#""index":1"#)
        );
    }

    #[test]
    fn a_break_after_content_is_an_error_event_and_nothing_else() {
        let mut f = Framer::new("msg_1", "m", false, 1);
        let a = f
            .frame(Piece::Events(vec![Event::Text("x".into())]))
            .unwrap();
        let b = f.frame(Piece::Interrupted("reset".into())).unwrap();
        assert!(f.end().is_none());
        let all = [a.as_ref(), b.as_ref()].concat();
        let n = names(&all);
        assert_eq!(n.last().unwrap(), "error");
        assert!(!n.contains(&"message_delta".to_string()));
    }
}
