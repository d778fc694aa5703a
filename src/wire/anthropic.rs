//! The Anthropic Messages surface (`/v1/messages`, what Claude Code and the Anthropic SDKs
//! speak), pure: a Messages request into the canonical request, canonical answers back as a
//! `message` object or the Messages event stream, errors as `{"type": "error", ...}`.
//!
//! Requests are tolerant the way Claude Code needs: system text blocks with `cache_control`, a
//! `system` role inside `messages`, thinking blocks echoed back, `context_management`,
//! `output_config` and the like are accepted; what cannot be honoured is dropped (server tools,
//! documents that are not text), and the drop is noted for the request log, never a 400.

use bytes::Bytes;
use serde_json::{Map, Value, json};

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

/// Parse a Messages request; `route_model` turns the requested model into the one to route.
pub fn parse(bytes: &[u8], route_model: impl Fn(&str) -> String) -> Result<Parsed, String> {
    let body: Map<String, Value> = match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => m,
        Ok(_) => {
            return Err(
                "the request body must be a JSON object with `model` and `messages`".into(),
            );
        }
        Err(e) => {
            return Err(format!(
                "the request body is not valid JSON ({e}); send a JSON object with `model` and `messages`"
            ));
        }
    };
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        None | Some(Value::Null) => {
            return Err("`model` is required (a model id, `auto`, or a claude-… id)".into());
        }
        Some(_) => return Err(wrong("model", "a string")),
    };
    let mut notes = Vec::new();
    let mut out = Map::new();
    out.insert("model".into(), json!(route_model(&model)));

    let mut messages = Vec::new();
    match body.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if !s.is_empty() {
                messages.push(json!({"role": "system", "content": s}));
            }
        }
        Some(Value::Array(blocks)) => {
            let text = text_of_blocks(blocks, "system")?;
            if !text.is_empty() {
                messages.push(json!({"role": "system", "content": text}));
            }
        }
        Some(_) => return Err(wrong("system", "a string or an array of text blocks")),
    }
    let Some(list) = body.get("messages") else {
        return Err("`messages` is required: an array of {\"role\", \"content\"} objects".into());
    };
    let Value::Array(list) = list else {
        return Err(wrong("messages", "an array"));
    };
    if list.is_empty() {
        return Err("`messages` must contain at least one message".into());
    }
    for (i, m) in list.iter().enumerate() {
        message(m, i, &mut messages, &mut notes)?;
    }
    out.insert("messages".into(), Value::Array(system_first(messages)));

    if let Some(v) = body.get("max_tokens").filter(|v| !v.is_null()) {
        let n = v
            .as_u64()
            .ok_or_else(|| wrong("max_tokens", "a positive integer"))?;
        out.insert("max_tokens".into(), json!(n.max(1)));
    }
    for key in ["temperature", "top_p", "top_k"] {
        if let Some(v) = body.get(key).filter(|v| !v.is_null()) {
            if !v.is_number() {
                return Err(wrong(key, "a number"));
            }
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(v) = body.get("stop_sequences").filter(|v| !v.is_null()) {
        let stops: Vec<String> = serde_json::from_value(v.clone())
            .map_err(|_| wrong("stop_sequences", "an array of strings"))?;
        if !stops.is_empty() {
            out.insert("stop".into(), json!(stops));
        }
    }
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(wrong("stream", "a boolean")),
    };
    if stream {
        out.insert("stream".into(), json!(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let tools = tools(body.get("tools"), &mut notes)?;
    let has_tools = !tools.is_empty();
    if has_tools {
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = body.get("tool_choice").filter(|v| !v.is_null()) {
        let kind = choice.get("type").and_then(Value::as_str).ok_or_else(|| {
            wrong(
                "tool_choice",
                "an object with `type` auto, any, tool or none",
            )
        })?;
        let mapped = match kind {
            "auto" => json!("auto"),
            "any" => json!("required"),
            "none" => json!("none"),
            "tool" => {
                let name = choice.get("name").and_then(Value::as_str).ok_or_else(|| {
                    "`tool_choice.name` is required with `type: \"tool\"`".to_string()
                })?;
                json!({"type": "function", "function": {"name": name}})
            }
            other => {
                return Err(format!(
                    "`tool_choice.type` must be auto, any, tool or none, got {other:?}"
                ));
            }
        };
        if has_tools {
            out.insert("tool_choice".into(), mapped);
            if choice.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) {
                out.insert("parallel_tool_calls".into(), json!(false));
            }
        }
    }
    let thinking = match body.get("thinking").filter(|v| !v.is_null()) {
        None => false,
        Some(t) => match t.get("type").and_then(Value::as_str) {
            Some("enabled") => {
                // An explicit budget becomes an effort; "adaptive" leaves the model its default.
                let budget = t.get("budget_tokens").and_then(Value::as_u64).unwrap_or(0);
                let effort = match budget {
                    0..4096 => "low",
                    4096..16384 => "medium",
                    _ => "high",
                };
                out.insert("reasoning_effort".into(), json!(effort));
                t.get("display").and_then(Value::as_str) != Some("omitted")
            }
            Some("adaptive") => t.get("display").and_then(Value::as_str) != Some("omitted"),
            Some("disabled") => false,
            _ => {
                return Err(wrong(
                    "thinking",
                    "an object with `type` enabled, adaptive or disabled",
                ));
            }
        },
    };
    // Structured output (`output_config.format`, or the earlier beta `output_format`): the
    // same JSON-schema output chat and Responses carry.
    let format = body
        .get("output_config")
        .filter(|v| !v.is_null())
        .map(|c| c.get("format").unwrap_or(&Value::Null))
        .or_else(|| body.get("output_format"))
        .filter(|v| !v.is_null());
    if let Some(f) = format {
        match f.get("type").and_then(Value::as_str) {
            Some("json_schema") => {
                let schema = f
                    .get("schema")
                    .filter(|s| s.is_object())
                    .ok_or_else(|| wrong("output_config.format.schema", "a JSON schema object"))?;
                out.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": true}}),
                );
            }
            _ => {
                return Err(wrong(
                    "output_config.format",
                    "an object with `type: \"json_schema\"` and a `schema`",
                ));
            }
        }
    }
    let req = chat::Request::from_map(out)?;
    Ok(Parsed {
        req,
        model,
        thinking,
        notes,
    })
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

/// The text of an array of text blocks (other blocks are ignored).
fn text_of_blocks(blocks: &[Value], at: &str) -> Result<String, String> {
    let mut texts = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => texts.push(
                b.get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("`{at}[{j}].text` must be a string"))?,
            ),
            Some(_) => {}
            None => return Err(format!("`{at}[{j}]` must be an object with a `type`")),
        }
    }
    Ok(join_text(texts))
}

/// An image block's source as a URL (a `data:` URL for base64).
fn image_url(block: &Value, at: &str) -> Result<String, String> {
    let src = block
        .get("source")
        .ok_or_else(|| format!("`{at}.source` is required on an image block"))?;
    match src.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media = src
                .get("media_type")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("`{at}.source.media_type` must be a string"))?;
            let data = src
                .get("data")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("`{at}.source.data` must be a base64 string"))?;
            Ok(format!("data:{media};base64,{data}"))
        }
        Some("url") => src
            .get("url")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("`{at}.source.url` must be a string")),
        _ => Err(format!("`{at}.source.type` must be \"base64\" or \"url\"")),
    }
}

/// One Messages message into canonical messages (a user turn with tool results becomes the
/// tool messages, then the user message with the rest).
fn message(
    m: &Value,
    i: usize,
    out: &mut Vec<Value>,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    let at = format!("messages[{i}]");
    let role = m
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("`{at}.role` is required: \"user\" or \"assistant\""))?;
    let content = m.get("content").unwrap_or(&Value::Null);
    let blocks: Vec<Value> = match content {
        Value::String(s) => vec![json!({"type": "text", "text": s})],
        Value::Array(b) => b.clone(),
        Value::Null => Vec::new(),
        _ => {
            return Err(wrong(
                &format!("{at}.content"),
                "a string or an array of blocks",
            ));
        }
    };
    match role {
        "system" => {
            let text = text_of_blocks(&blocks, &format!("{at}.content"))?;
            if !text.is_empty() {
                out.push(json!({"role": "system", "content": text}));
            }
        }
        "user" => {
            let mut parts: Vec<Value> = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                let bat = format!("{at}.content[{j}]");
                let kind = b
                    .get("type")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("`{bat}` must be an object with a `type`"))?;
                match kind {
                    "text" => {
                        let text = b
                            .get("text")
                            .and_then(Value::as_str)
                            .ok_or_else(|| format!("`{bat}.text` must be a string"))?;
                        parts.push(json!({"type": "text", "text": text}));
                    }
                    "image" => {
                        let url = image_url(b, &bat)?;
                        parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
                    }
                    "tool_result" => {
                        let id = b
                            .get("tool_use_id")
                            .and_then(Value::as_str)
                            .ok_or_else(|| format!("`{bat}.tool_use_id` must be a string"))?;
                        let (text, images) = tool_result_content(b.get("content"), &bat)?;
                        let text = if b.get("is_error") == Some(&Value::Bool(true)) {
                            format!("[tool error] {text}")
                        } else {
                            text
                        };
                        out.push(json!({"role": "tool", "tool_call_id": id, "content": text}));
                        for url in images {
                            parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
                        }
                    }
                    "document" => match b.pointer("/source/type").and_then(Value::as_str) {
                        Some("text") => {
                            let text = b.pointer("/source/data").and_then(Value::as_str);
                            parts.push(json!({"type": "text", "text": text.unwrap_or("")}));
                        }
                        _ => notes.push(format!(
                            "dropped a document block in {at}: only text documents reach a chat model"
                        )),
                    },
                    "thinking" | "redacted_thinking" => {}
                    other => notes.push(format!("dropped a {other} block in {at}")),
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
        "assistant" => {
            let mut texts = Vec::new();
            let mut calls = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                let bat = format!("{at}.content[{j}]");
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => texts.push(
                        b.get("text")
                            .and_then(Value::as_str)
                            .ok_or_else(|| format!("`{bat}.text` must be a string"))?,
                    ),
                    Some("tool_use") => {
                        let id = b
                            .get("id")
                            .and_then(Value::as_str)
                            .ok_or_else(|| format!("`{bat}.id` must be a string"))?;
                        let name = b
                            .get("name")
                            .and_then(Value::as_str)
                            .ok_or_else(|| format!("`{bat}.name` must be a string"))?;
                        let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                        calls.push(json!({"id": id, "type": "function",
                            "function": {"name": name, "arguments": input.to_string()}}));
                    }
                    Some("thinking" | "redacted_thinking") => {}
                    Some(other) => notes.push(format!("dropped a {other} block in {at}")),
                    None => return Err(format!("`{bat}` must be an object with a `type`")),
                }
            }
            let text = texts.concat();
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
        other => {
            return Err(format!(
                "`{at}.role` must be \"user\" or \"assistant\", got {other:?}"
            ));
        }
    }
    Ok(())
}

/// A tool result's content: its text, and the URLs of its images.
fn tool_result_content(content: Option<&Value>, at: &str) -> Result<(String, Vec<String>), String> {
    match content {
        None | Some(Value::Null) => Ok((String::new(), Vec::new())),
        Some(Value::String(s)) => Ok((s.clone(), Vec::new())),
        Some(Value::Array(blocks)) => {
            let mut texts = Vec::new();
            let mut images = Vec::new();
            for (k, b) in blocks.iter().enumerate() {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        texts.push(b.get("text").and_then(Value::as_str).unwrap_or_default())
                    }
                    Some("image") => images.push(image_url(b, &format!("{at}.content[{k}]"))?),
                    _ => {}
                }
            }
            Ok((join_text(texts), images))
        }
        Some(_) => Err(wrong(
            &format!("{at}.content"),
            "a string or an array of blocks",
        )),
    }
}

/// Client tools as chat tools; server tools (with a `type` such as `web_search_20250305`)
/// are dropped and noted.
fn tools(v: Option<&Value>, notes: &mut Vec<String>) -> Result<Vec<Value>, String> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(l)) => l,
        Some(_) => return Err(wrong("tools", "an array")),
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let name = t.get("name").and_then(Value::as_str);
        match t.get("type").and_then(Value::as_str) {
            None | Some("custom") => {}
            Some(kind) => {
                notes.push(format!(
                    "dropped the server tool {} ({kind})",
                    name.unwrap_or("without a name")
                ));
                continue;
            }
        }
        let name = name.ok_or_else(|| format!("`tools[{i}].name` must be a string"))?;
        let mut function = Map::new();
        function.insert("name".into(), json!(name));
        if let Some(d) = t.get("description").and_then(Value::as_str) {
            function.insert("description".into(), json!(d));
        }
        let schema = match t.get("input_schema") {
            Some(s @ Value::Object(_)) => s.clone(),
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(_) => return Err(format!("`tools[{i}].input_schema` must be an object")),
        };
        function.insert("parameters".into(), schema);
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(out)
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
