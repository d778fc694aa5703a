//! The OpenAI Responses surface (`/v1/responses`, what Codex CLI and newer OpenAI SDK code
//! speak), pure and stateless: `input` items into the canonical request, canonical answers back
//! as a `response` object or the typed event stream with its `sequence_number`s.
//!
//! Nothing is stored: `store` is accepted and ignored, `previous_response_id` is refused with a
//! message that says to send the whole conversation. Hosted tools (`web_search`, ...) are
//! dropped and noted; `namespace` tools are flattened into their functions, and a call to one
//! of them names its namespace again in the answer.

use bytes::Bytes;
use serde_json::{Map, Value, json};
use std::collections::HashMap;

use super::{Frames, join_text, push_event};
use crate::chat::{self, Event, Finish, Message, Piece, Usage};

/// A Responses request, translated.
#[derive(Debug)]
pub struct Parsed {
    pub req: chat::Request,
    /// Function name → the namespace tool it came from.
    pub namespaces: HashMap<String, String>,
    /// What was dropped, for the request log.
    pub notes: Vec<String>,
    /// Echoed in the `response` object.
    pub echo: Echo,
}

/// Request fields the `response` object repeats.
#[derive(Debug, Clone)]
pub struct Echo {
    pub instructions: Option<String>,
    pub max_output_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub tool_choice: Value,
    pub tools: Value,
    pub parallel_tool_calls: bool,
    pub text: Value,
    pub reasoning: Value,
    pub metadata: Value,
}

impl Default for Echo {
    /// What a request that sets none of them gets back.
    fn default() -> Self {
        Echo {
            instructions: None,
            max_output_tokens: None,
            temperature: None,
            top_p: None,
            tool_choice: json!("auto"),
            tools: json!([]),
            parallel_tool_calls: true,
            text: json!({"format": {"type": "text"}}),
            reasoning: json!({"effort": null, "summary": null}),
            metadata: json!({}),
        }
    }
}

fn wrong(field: &str, want: &str) -> String {
    format!("`{field}` must be {want}")
}

/// Parse a Responses request.
pub fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let body: Map<String, Value> = match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err("the request body must be a JSON object with `input`".into()),
        Err(e) => {
            return Err(format!(
                "the request body is not valid JSON ({e}); send a JSON object with `input`"
            ));
        }
    };
    if body
        .get("previous_response_id")
        .is_some_and(|v| !v.is_null())
    {
        return Err("`previous_response_id` is not supported: Freeway stores no responses; send the whole conversation in `input` (and `store: false`)".into());
    }
    if body.get("conversation").is_some_and(|v| !v.is_null()) {
        return Err("`conversation` is not supported: Freeway stores no conversations; send the whole conversation in `input`".into());
    }
    let mut notes = Vec::new();
    let mut out = Map::new();
    let mut echo = Echo::default();
    match body.get("model") {
        None | Some(Value::Null) => {}
        Some(Value::String(m)) => {
            out.insert("model".into(), json!(m));
        }
        Some(_) => return Err(wrong("model", "a string")),
    }

    let mut messages = Vec::new();
    match body.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            echo.instructions = Some(s.clone());
            if !s.is_empty() {
                messages.push(json!({"role": "system", "content": s}));
            }
        }
        Some(_) => return Err(wrong("instructions", "a string")),
    }
    match body.get("input") {
        None | Some(Value::Null) => {
            return Err("`input` is required: a string, or an array of input items".into());
        }
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(item, i, &mut messages, &mut notes)?;
            }
        }
        Some(_) => return Err(wrong("input", "a string or an array of input items")),
    }
    if messages.is_empty() {
        return Err("`input` must contain at least one message".into());
    }
    out.insert("messages".into(), Value::Array(messages));

    if let Some(v) = body.get("max_output_tokens").filter(|v| !v.is_null()) {
        let n = v
            .as_u64()
            .ok_or_else(|| wrong("max_output_tokens", "a positive integer"))?;
        echo.max_output_tokens = Some(n);
        out.insert("max_tokens".into(), json!(n.max(1)));
    }
    for key in ["temperature", "top_p"] {
        if let Some(v) = body.get(key).filter(|v| !v.is_null()) {
            let n = v.as_f64().ok_or_else(|| wrong(key, "a number"))?;
            if key == "temperature" {
                echo.temperature = Some(n);
            } else {
                echo.top_p = Some(n);
            }
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(v) = body.get("parallel_tool_calls").filter(|v| !v.is_null()) {
        let b = v
            .as_bool()
            .ok_or_else(|| wrong("parallel_tool_calls", "a boolean"))?;
        echo.parallel_tool_calls = b;
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
    let mut namespaces = HashMap::new();
    let tools = tools(body.get("tools"), &mut namespaces, &mut notes)?;
    if let Some(t) = body.get("tools").filter(|v| v.is_array()) {
        echo.tools = t.clone();
    }
    let has_tools = !tools.is_empty();
    if has_tools {
        out.insert("tools".into(), Value::Array(tools));
        if !echo.parallel_tool_calls {
            out.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    if let Some(choice) = body.get("tool_choice").filter(|v| !v.is_null()) {
        echo.tool_choice = choice.clone();
        let mapped = match choice {
            Value::String(s) if ["auto", "none", "required"].contains(&s.as_str()) => {
                Some(choice.clone())
            }
            Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
                let name = o.get("name").and_then(Value::as_str).ok_or_else(|| {
                    "`tool_choice.name` is required with type function".to_string()
                })?;
                Some(json!({"type": "function", "function": {"name": name}}))
            }
            // Hosted-tool choices and allowed-tools lists: the model chooses.
            Value::Object(_) => None,
            _ => {
                return Err(wrong(
                    "tool_choice",
                    "\"auto\", \"none\", \"required\" or {\"type\": \"function\", \"name\"}",
                ));
            }
        };
        if let (true, Some(m)) = (has_tools, mapped) {
            out.insert("tool_choice".into(), m);
        }
    }
    if let Some(text) = body.get("text").filter(|v| !v.is_null()) {
        echo.text = text.clone();
        if let Some(format) = text.get("format").filter(|v| !v.is_null()) {
            match format.get("type").and_then(Value::as_str) {
                Some("text") | None => {}
                Some("json_object") => {
                    out.insert("response_format".into(), json!({"type": "json_object"}));
                }
                Some("json_schema") => {
                    let schema = format
                        .get("schema")
                        .filter(|s| s.is_object())
                        .ok_or_else(|| "`text.format.schema` must be an object".to_string())?;
                    let mut js = Map::new();
                    js.insert(
                        "name".into(),
                        format
                            .get("name")
                            .cloned()
                            .unwrap_or_else(|| json!("answer")),
                    );
                    js.insert("schema".into(), schema.clone());
                    if let Some(s) = format.get("strict").filter(|v| v.is_boolean()) {
                        js.insert("strict".into(), s.clone());
                    }
                    if let Some(d) = format.get("description").filter(|v| v.is_string()) {
                        js.insert("description".into(), d.clone());
                    }
                    out.insert(
                        "response_format".into(),
                        json!({"type": "json_schema", "json_schema": js}),
                    );
                }
                Some(other) => {
                    return Err(format!(
                        "`text.format.type` must be text, json_object or json_schema, got {other:?}"
                    ));
                }
            }
        }
    }
    if let Some(r) = body.get("reasoning").filter(|v| !v.is_null()) {
        echo.reasoning = json!({"effort": r.get("effort").cloned().unwrap_or(Value::Null),
                               "summary": r.get("summary").cloned().unwrap_or(Value::Null)});
        // The efforts chat upstreams take: OpenAI's finer ones fold into them, `none` asks
        // for nothing.
        let effort = match r.get("effort").and_then(Value::as_str) {
            Some("minimal" | "low") => Some("low"),
            Some("medium") => Some("medium"),
            Some("high" | "xhigh") => Some("high"),
            _ => None,
        };
        if let Some(effort) = effort {
            out.insert("reasoning_effort".into(), json!(effort));
        }
    }
    if let Some(m) = body.get("metadata").filter(|v| v.is_object()) {
        echo.metadata = m.clone();
    }
    let req = chat::Request::from_map(out)?;
    Ok(Parsed {
        req,
        namespaces,
        notes,
        echo,
    })
}

/// The text and images of a message's content (a string or typed parts).
fn content_parts(content: &Value, at: &str) -> Result<Vec<Value>, String> {
    match content {
        Value::String(s) => Ok(vec![json!({"type": "text", "text": s})]),
        Value::Null => Ok(Vec::new()),
        Value::Array(parts) => {
            let mut out = Vec::new();
            for (j, p) in parts.iter().enumerate() {
                let pat = format!("{at}[{j}]");
                match p.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text" | "text" | "summary_text") => {
                        let text = p
                            .get("text")
                            .and_then(Value::as_str)
                            .ok_or_else(|| format!("`{pat}.text` must be a string"))?;
                        out.push(json!({"type": "text", "text": text}));
                    }
                    Some("refusal") => {
                        let text = p.get("refusal").and_then(Value::as_str).unwrap_or_default();
                        out.push(json!({"type": "text", "text": text}));
                    }
                    Some("input_image") => {
                        let url = p
                            .get("image_url")
                            .and_then(Value::as_str)
                            .ok_or_else(|| {
                                format!("`{pat}.image_url` must be a URL string (file ids are not supported)")
                            })?;
                        let mut image = json!({"url": url});
                        if let Some(d) = p.get("detail").filter(|d| d.is_string()) {
                            image["detail"] = d.clone();
                        }
                        out.push(json!({"type": "image_url", "image_url": image}));
                    }
                    Some(_) => {}
                    None => return Err(format!("`{pat}` must be an object with a `type`")),
                }
            }
            Ok(out)
        }
        _ => Err(wrong(at, "a string or an array of content parts")),
    }
}

/// Text of parts (for roles that take one string).
fn parts_text(parts: &[Value]) -> String {
    join_text(parts.iter().filter_map(|p| p["text"].as_str()))
}

/// One input item into canonical messages. Consecutive function calls (and the assistant text
/// before them) become one assistant message with its tool calls.
fn input_item(
    item: &Value,
    i: usize,
    out: &mut Vec<Value>,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    let at = format!("input[{i}]");
    if !item.is_object() {
        return Err(format!("`{at}` must be an object"));
    }
    let kind = item
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    match kind {
        "message" => {
            let role = item
                .get("role")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("`{at}.role` is required"))?;
            let parts = content_parts(
                item.get("content").unwrap_or(&Value::Null),
                &format!("{at}.content"),
            )?;
            match role {
                "user" => match parts.len() {
                    0 => {}
                    1 if parts[0]["type"] == "text" => {
                        out.push(json!({"role": "user", "content": parts[0]["text"]}))
                    }
                    _ => out.push(json!({"role": "user", "content": parts})),
                },
                "system" | "developer" => {
                    let text = parts_text(&parts);
                    if !text.is_empty() {
                        out.push(json!({"role": "system", "content": text}));
                    }
                }
                "assistant" => {
                    let text = parts_text(&parts);
                    if !text.is_empty() {
                        out.push(json!({"role": "assistant", "content": text}));
                    }
                }
                other => {
                    return Err(format!(
                        "`{at}.role` must be user, assistant, system or developer, got {other:?}"
                    ));
                }
            }
        }
        "function_call" => {
            let field = |k: &str| {
                item.get(k)
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("`{at}.{k}` must be a string"))
            };
            let call = json!({"id": field("call_id")?, "type": "function",
                "function": {"name": field("name")?, "arguments": field("arguments")?}});
            // Join the assistant message right before it, when it has no calls yet or has some.
            if let Some(last) = out.last_mut().filter(|m| m["role"] == "assistant") {
                if let Some(calls) = last.get_mut("tool_calls").and_then(Value::as_array_mut) {
                    calls.push(call);
                } else {
                    last["tool_calls"] = json!([call]);
                }
            } else {
                out.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
            }
        }
        "function_call_output" => {
            let id = item
                .get("call_id")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("`{at}.call_id` must be a string"))?;
            let text = match item.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(v @ Value::Array(_)) => {
                    parts_text(&content_parts(v, &format!("{at}.output"))?)
                }
                _ => {
                    return Err(wrong(
                        &format!("{at}.output"),
                        "a string or an array of parts",
                    ));
                }
            };
            out.push(json!({"role": "tool", "tool_call_id": id, "content": text}));
        }
        "reasoning" | "item_reference" => {}
        other => notes.push(format!("dropped an input item of type {other}")),
    }
    Ok(())
}

/// Function tools as chat tools; namespace tools flattened; hosted tools dropped and noted.
fn tools(
    v: Option<&Value>,
    namespaces: &mut HashMap<String, String>,
    notes: &mut Vec<String>,
) -> Result<Vec<Value>, String> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(l)) => l,
        Some(_) => return Err(wrong("tools", "an array")),
    };
    let mut out = Vec::new();
    for (i, t) in list.iter().enumerate() {
        match t.get("type").and_then(Value::as_str) {
            Some("function") => out.push(function_tool(t, &format!("tools[{i}]"))?),
            Some("namespace") => {
                let ns = t.get("name").and_then(Value::as_str).unwrap_or_default();
                for (j, inner) in t
                    .get("tools")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    if inner.get("type").and_then(Value::as_str) != Some("function") {
                        continue;
                    }
                    let f = function_tool(inner, &format!("tools[{i}].tools[{j}]"))?;
                    if let Some(name) = f["function"]["name"].as_str() {
                        namespaces.insert(name.to_string(), ns.to_string());
                    }
                    out.push(f);
                }
            }
            Some(kind) => notes.push(format!("dropped the hosted tool {kind}")),
            None => return Err(format!("`tools[{i}]` must be an object with a `type`")),
        }
    }
    Ok(out)
}

fn function_tool(t: &Value, at: &str) -> Result<Value, String> {
    let name = t
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("`{at}.name` must be a string"))?;
    let mut f = Map::new();
    f.insert("name".into(), json!(name));
    if let Some(d) = t.get("description").filter(|d| d.is_string()) {
        f.insert("description".into(), d.clone());
    }
    f.insert(
        "parameters".into(),
        t.get("parameters")
            .filter(|p| p.is_object())
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
    );
    if let Some(s) = t.get("strict").filter(|s| s.is_boolean()) {
        f.insert("strict".into(), s.clone());
    }
    Ok(json!({"type": "function", "function": f}))
}

// ---- answers ----

fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input,
        "input_tokens_details": {"cached_tokens": u.cached.unwrap_or(0), "cache_write_tokens": 0},
        "output_tokens": u.output,
        "output_tokens_details": {"reasoning_tokens": u.reasoning.unwrap_or(0)},
        "total_tokens": u.total(),
    })
}

/// What a `response` object says about its end.
fn status(finish: Option<Finish>) -> (&'static str, Value) {
    match finish {
        Some(Finish::Length) => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some(Finish::ContentFilter) => ("incomplete", json!({"reason": "content_filter"})),
        Some(_) => ("completed", Value::Null),
        None => ("in_progress", Value::Null),
    }
}

/// A `response` object around `output`.
#[allow(clippy::too_many_arguments)]
fn response(
    id: &str,
    created: i64,
    model: &str,
    echo: &Echo,
    status: &str,
    incomplete: Value,
    output: Vec<Value>,
    usage: Option<&Usage>,
    error: Value,
) -> Value {
    json!({
        "id": id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": false,
        "error": error,
        "incomplete_details": incomplete,
        "instructions": echo.instructions,
        "max_output_tokens": echo.max_output_tokens,
        "model": model,
        "output": output,
        "parallel_tool_calls": echo.parallel_tool_calls,
        "previous_response_id": null,
        "reasoning": echo.reasoning,
        "store": false,
        "temperature": echo.temperature,
        "text": echo.text,
        "tool_choice": echo.tool_choice,
        "tools": echo.tools,
        "top_p": echo.top_p,
        "truncation": "disabled",
        "usage": usage.map(usage_json),
        "metadata": echo.metadata,
    })
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"id": id, "type": "message", "status": status, "role": "assistant",
           "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]})
}

fn call_item(
    id: &str,
    call_id: &str,
    name: &str,
    arguments: &str,
    status: &str,
    namespaces: &HashMap<String, String>,
) -> Value {
    let mut item = json!({"id": id, "type": "function_call", "status": status, "name": name,
                          "arguments": arguments, "call_id": call_id});
    if let Some(ns) = namespaces.get(name) {
        item["namespace"] = json!(ns);
    }
    item
}

fn reasoning_item(id: &str, text: &str) -> Value {
    json!({"id": id, "type": "reasoning", "summary": [{"type": "summary_text", "text": text}]})
}

/// What the answer to one request needs to be framed.
#[derive(Debug, Clone)]
pub struct Context {
    /// The `resp_…` id; item ids are made from it.
    pub id: String,
    pub created: i64,
    pub echo: Echo,
    pub namespaces: HashMap<String, String>,
}

/// A whole answer as a `response` object.
pub fn response_body(m: &Message, cx: &Context) -> Value {
    let mut output = Vec::new();
    if !m.reasoning.is_empty() {
        output.push(reasoning_item(&format!("rs_{}", cx.id), &m.reasoning));
    }
    if !m.text.is_empty() || m.calls.is_empty() {
        output.push(message_item(
            &format!("msg_{}", cx.id),
            &m.text,
            "completed",
        ));
    }
    for (i, c) in m.calls.iter().enumerate() {
        output.push(call_item(
            &format!("fc_{}_{i}", cx.id),
            &c.id,
            &c.name,
            &c.arguments,
            "completed",
            &cx.namespaces,
        ));
    }
    let (status, incomplete) = status(Some(m.finish));
    response(
        &cx.id,
        cx.created,
        &m.model,
        &cx.echo,
        status,
        incomplete,
        output,
        m.usage.as_ref(),
        Value::Null,
    )
}

// ---- streams ----

/// The item being streamed.
enum Open {
    Message {
        id: String,
        text: String,
    },
    Reasoning {
        id: String,
        text: String,
    },
    Call {
        index: u32,
        id: String,
        call_id: String,
        name: String,
        arguments: String,
    },
}

/// Frames a streamed answer as the Responses event sequence.
pub struct Framer {
    cx: Context,
    model: String,
    seq: u64,
    started: bool,
    open: Option<Open>,
    output: Vec<Value>,
    finish: Option<Finish>,
    usage: Option<Usage>,
    ended: bool,
}

impl Framer {
    pub fn new(cx: Context, model: &str) -> Framer {
        Framer {
            cx,
            model: model.into(),
            seq: 0,
            started: false,
            open: None,
            output: Vec::new(),
            finish: None,
            usage: None,
            ended: false,
        }
    }

    fn push(&mut self, buf: &mut Vec<u8>, kind: &str, mut data: Value) {
        if let Some(o) = data.as_object_mut() {
            o.insert("type".into(), json!(kind));
            o.insert("sequence_number".into(), json!(self.seq));
        }
        self.seq += 1;
        push_event(buf, kind, &data);
    }

    fn snapshot(&self, status: &str, incomplete: Value, error: Value) -> Value {
        let usage = if status == "in_progress" {
            None
        } else {
            self.usage.as_ref()
        };
        response(
            &self.cx.id,
            self.cx.created,
            &self.model,
            &self.cx.echo,
            status,
            incomplete,
            self.output.clone(),
            usage,
            error,
        )
    }

    fn start(&mut self, buf: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let r = self.snapshot("in_progress", Value::Null, Value::Null);
        self.push(buf, "response.created", json!({"response": r}));
        self.push(buf, "response.in_progress", json!({"response": r}));
    }

    /// Finish the open item: its `.done` events and `output_item.done`.
    fn close(&mut self, buf: &mut Vec<u8>) {
        self.close_as(buf, "completed");
    }

    /// Finish the open item with `status` (`incomplete` when the stream broke inside it).
    fn close_as(&mut self, buf: &mut Vec<u8>, status: &str) {
        let Some(open) = self.open.take() else {
            return;
        };
        let index = self.output.len();
        let item = match open {
            Open::Message { id, text } => {
                let part =
                    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
                self.push(
                    buf,
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": index,
                    "content_index": 0, "text": text, "logprobs": []}),
                );
                self.push(
                    buf,
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index,
                    "content_index": 0, "part": part}),
                );
                message_item(&id, &text, status)
            }
            Open::Reasoning { id, text } => {
                let part = json!({"type": "summary_text", "text": text});
                self.push(
                    buf,
                    "response.reasoning_summary_text.done",
                    json!({"item_id": id,
                    "output_index": index, "summary_index": 0, "text": text}),
                );
                self.push(
                    buf,
                    "response.reasoning_summary_part.done",
                    json!({"item_id": id,
                    "output_index": index, "summary_index": 0, "part": part}),
                );
                let mut item = reasoning_item(&id, &text);
                item["status"] = json!(status);
                item
            }
            Open::Call {
                id,
                call_id,
                name,
                arguments,
                ..
            } => {
                // A call cut short is not announced as done: its arguments are not whole.
                if status == "completed" {
                    self.push(
                        buf,
                        "response.function_call_arguments.done",
                        json!({"item_id": id,
                        "output_index": index, "arguments": arguments}),
                    );
                }
                call_item(
                    &id,
                    &call_id,
                    &name,
                    &arguments,
                    status,
                    &self.cx.namespaces,
                )
            }
        };
        self.push(
            buf,
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
        self.output.push(item);
    }

    fn event(&mut self, buf: &mut Vec<u8>, e: Event) {
        let index = self.output.len();
        match e {
            Event::Text(t) if !t.is_empty() => {
                if !matches!(self.open, Some(Open::Message { .. })) {
                    self.close(buf);
                    let index = self.output.len();
                    let id = format!("msg_{}_{index}", self.cx.id);
                    self.push(buf, "response.output_item.added", json!({"output_index": index,
                        "item": {"id": id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}}));
                    self.push(buf, "response.content_part.added", json!({"item_id": id, "output_index": index,
                        "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}));
                    self.open = Some(Open::Message {
                        id,
                        text: String::new(),
                    });
                }
                let index = self.output.len();
                if let Some(Open::Message { id, text }) = &mut self.open {
                    text.push_str(&t);
                    let id = id.clone();
                    self.push(
                        buf,
                        "response.output_text.delta",
                        json!({"item_id": id, "output_index": index,
                        "content_index": 0, "delta": t, "logprobs": []}),
                    );
                }
            }
            Event::Reasoning(t) if !t.is_empty() => {
                if !matches!(self.open, Some(Open::Reasoning { .. })) {
                    self.close(buf);
                    let index = self.output.len();
                    let id = format!("rs_{}_{index}", self.cx.id);
                    self.push(
                        buf,
                        "response.output_item.added",
                        json!({"output_index": index,
                        "item": {"id": id, "type": "reasoning", "summary": []}}),
                    );
                    self.push(buf, "response.reasoning_summary_part.added", json!({"item_id": id,
                        "output_index": index, "summary_index": 0, "part": {"type": "summary_text", "text": ""}}));
                    self.open = Some(Open::Reasoning {
                        id,
                        text: String::new(),
                    });
                }
                let index = self.output.len();
                if let Some(Open::Reasoning { id, text }) = &mut self.open {
                    text.push_str(&t);
                    let id = id.clone();
                    self.push(
                        buf,
                        "response.reasoning_summary_text.delta",
                        json!({"item_id": id,
                        "output_index": index, "summary_index": 0, "delta": t}),
                    );
                }
            }
            Event::ToolCall(c) => {
                let same =
                    matches!(&self.open, Some(Open::Call { index, .. }) if *index == c.index);
                if !same {
                    self.close(buf);
                    let index = self.output.len();
                    let id = format!("fc_{}_{index}", self.cx.id);
                    let call_id =
                        c.id.clone()
                            .unwrap_or_else(|| format!("call_{}_{}", self.cx.id, c.index));
                    let name = c.name.clone().unwrap_or_default();
                    let item =
                        call_item(&id, &call_id, &name, "", "in_progress", &self.cx.namespaces);
                    self.push(
                        buf,
                        "response.output_item.added",
                        json!({"output_index": index, "item": item}),
                    );
                    self.open = Some(Open::Call {
                        index: c.index,
                        id,
                        call_id,
                        name,
                        arguments: String::new(),
                    });
                }
                let index = self.output.len();
                if let Some(Open::Call { id, arguments, .. }) = &mut self.open {
                    if !c.arguments.is_empty() {
                        arguments.push_str(&c.arguments);
                        let id = id.clone();
                        self.push(
                            buf,
                            "response.function_call_arguments.delta",
                            json!({"item_id": id,
                            "output_index": index, "delta": c.arguments}),
                        );
                    }
                }
            }
            Event::Finish(f) => self.finish = Some(f),
            Event::Usage(u) => self.usage = Some(u),
            Event::Text(_) | Event::Reasoning(_) => {}
        }
        let _ = index;
    }
}

impl Frames for Framer {
    fn frame(&mut self, piece: Piece) -> Option<Bytes> {
        if self.ended {
            return None;
        }
        let mut buf = Vec::new();
        self.start(&mut buf);
        match piece {
            Piece::Interrupted(reason) => {
                self.ended = true;
                self.close_as(&mut buf, "incomplete");
                let error = json!({"code": "server_error",
                    "message": super::interrupted(&reason)});
                let r = self.snapshot("failed", Value::Null, error);
                self.push(&mut buf, "response.failed", json!({"response": r}));
            }
            other => {
                for e in other.events() {
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
        if self.output.is_empty() {
            // An answer with nothing in it is still a message (an empty one).
            let id = format!("msg_{}_0", self.cx.id);
            let item = message_item(&id, "", "completed");
            self.push(&mut buf, "response.output_item.added", json!({"output_index": 0,
                "item": {"id": id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}}));
            self.push(
                &mut buf,
                "response.output_item.done",
                json!({"output_index": 0, "item": item}),
            );
            self.output.push(item);
        }
        match self.finish {
            None => {
                let error = json!({"code": "server_error", "message": super::NO_FINISH});
                let r = self.snapshot("failed", Value::Null, error);
                self.push(&mut buf, "response.failed", json!({"response": r}));
            }
            Some(f) => {
                let (status, incomplete) = status(Some(f));
                let r = self.snapshot(status, incomplete, Value::Null);
                let kind = if status == "completed" {
                    "response.completed"
                } else {
                    "response.incomplete"
                };
                self.push(&mut buf, kind, json!({"response": r}));
            }
        }
        Some(Bytes::from(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{Call, CallDelta};

    fn p(v: Value) -> Result<Parsed, String> {
        parse(v.to_string().as_bytes())
    }

    #[test]
    fn a_codex_request_translates_whole() {
        let fixture: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/codex_0.169.0_responses_request.json"
        ))
        .unwrap();
        let parsed = parse(fixture["body"].to_string().as_bytes()).unwrap();
        let b = parsed.req.to_map();
        assert!(parsed.req.facts.stream && parsed.req.facts.has_tools);
        let m = b["messages"].as_array().unwrap();
        assert_eq!(m[0]["role"], "system");
        assert_eq!(m.last().unwrap()["role"], "user");
        let names: Vec<&str> = b["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["function"]["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"exec_command") && names.contains(&"spawn_agent"));
        assert_eq!(parsed.namespaces["spawn_agent"], "multi_agent_v1");
        assert_eq!(parsed.notes, vec!["dropped the hosted tool web_search"]);
        assert!(b.get("store").is_none() && b.get("include").is_none());
    }

    #[test]
    fn items_round_trip_into_messages() {
        let parsed = p(json!({
            "model": "m", "instructions": "be brief", "max_output_tokens": 50,
            "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}},
            "tools": [{"type": "function", "name": "get", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "get"},
            "reasoning": {"effort": "low", "summary": "auto"},
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "weather?"},
                    {"type": "input_image", "image_url": "https://x/y.png"}]},
                {"type": "reasoning", "id": "rs_1", "summary": [], "content": null},
                {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
                 "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
                {"type": "function_call", "id": "fc_1", "status": "completed", "call_id": "call_1", "name": "get", "arguments": "{}"},
                {"type": "function_call_output", "id": "fco_1", "call_id": "call_1", "output": "sunny"}
            ]
        }))
        .unwrap();
        let b = parsed.req.to_map();
        let m = b["messages"].as_array().unwrap();
        assert_eq!(m[0], json!({"role": "system", "content": "be brief"}));
        assert_eq!(m[1]["content"][1]["image_url"]["url"], "https://x/y.png");
        assert_eq!(m[2]["content"], "Checking.");
        assert_eq!(m[2]["tool_calls"][0]["id"], "call_1");
        assert_eq!(
            m[3],
            json!({"role": "tool", "tool_call_id": "call_1", "content": "sunny"})
        );
        assert_eq!(b["max_tokens"], 50);
        assert_eq!(b["response_format"]["json_schema"]["strict"], true);
        assert_eq!(b["tool_choice"]["function"]["name"], "get");
        assert_eq!(b["reasoning_effort"], "low");
    }

    #[test]
    fn bad_requests_name_the_field() {
        let cases = [
            (json!("x"), "JSON object"),
            (json!({"model": "m"}), "`input` is required"),
            (json!({"input": []}), "at least one message"),
            (
                json!({"input": "hi", "previous_response_id": "resp_1"}),
                "send the whole conversation",
            ),
            (
                json!({"input": [{"type": "function_call", "name": "x"}]}),
                "`input[0].call_id`",
            ),
            (
                json!({"input": [{"role": "robot", "content": "x"}]}),
                "`input[0].role`",
            ),
            (
                json!({"input": "x", "text": {"format": {"type": "yaml"}}}),
                "text.format.type",
            ),
            (
                json!({"input": "x", "max_output_tokens": "many"}),
                "max_output_tokens",
            ),
            (
                json!({"input": "x", "tools": [{"name": "f"}]}),
                "`tools[0]`",
            ),
        ];
        for (body, needle) in cases {
            let err = p(body.clone()).unwrap_err();
            assert!(err.contains(needle), "{body} -> {err}");
        }
    }

    fn cx() -> Context {
        let mut namespaces = HashMap::new();
        namespaces.insert("spawn".to_string(), "agents".to_string());
        Context {
            id: "resp_1".into(),
            created: 5,
            echo: Echo::default(),
            namespaces,
        }
    }

    #[test]
    fn a_whole_answer_is_a_response() {
        let m = Message {
            model: "up".into(),
            text: "hi".into(),
            reasoning: String::new(),
            calls: vec![Call {
                id: "call_1".into(),
                name: "spawn".into(),
                arguments: "{}".into(),
                extra: None,
            }],
            finish: Finish::Length,
            usage: Some(Usage {
                input: 3,
                output: 2,
                ..Usage::default()
            }),
        };
        let v = response_body(&m, &cx());
        assert_eq!(v["status"], "incomplete");
        assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(v["output"][0]["content"][0]["text"], "hi");
        assert_eq!(v["output"][1]["call_id"], "call_1");
        assert_eq!(v["output"][1]["namespace"], "agents");
        assert_eq!(v["usage"]["total_tokens"], 5);
        assert_eq!(v["usage"]["input_tokens_details"]["cache_write_tokens"], 0);
    }

    fn events(bytes: &[u8]) -> Vec<Value> {
        let text = std::str::from_utf8(bytes).unwrap();
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|ev| {
                let (name, data) = ev.split_once('\n').unwrap();
                let v: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(v["type"], name.strip_prefix("event: ").unwrap());
                v
            })
            .collect()
    }

    #[test]
    fn a_stream_is_the_typed_event_sequence() {
        let mut f = Framer::new(cx(), "up");
        let mut all = Vec::new();
        let call = |args: &str, first: bool| {
            Piece::Events(vec![Event::ToolCall(CallDelta {
                index: 0,
                id: first.then(|| "call_1".to_string()),
                name: first.then(|| "spawn".to_string()),
                arguments: args.into(),
                extra: None,
            })])
        };
        for piece in [
            Piece::Events(vec![Event::Text("Hel".into())]),
            Piece::Events(vec![Event::Text("lo".into())]),
            call("{\"a\"", true),
            call(":1}", false),
            Piece::Events(vec![
                Event::Finish(Finish::ToolCalls),
                Event::Usage(Usage {
                    input: 1,
                    output: 2,
                    ..Usage::default()
                }),
            ]),
        ] {
            all.extend_from_slice(&f.frame(piece).unwrap_or_default());
        }
        all.extend_from_slice(&f.end().unwrap());
        let evs = events(&all);
        let kinds: Vec<&str> = evs.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        for (i, e) in evs.iter().enumerate() {
            assert_eq!(e["sequence_number"], i);
        }
        let done = evs.last().unwrap();
        assert_eq!(done["response"]["id"], "resp_1");
        assert_eq!(done["response"]["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(done["response"]["output"][1]["arguments"], "{\"a\":1}");
        assert_eq!(done["response"]["output"][1]["namespace"], "agents");
        assert_eq!(done["response"]["usage"]["output_tokens"], 2);
    }

    #[test]
    fn a_length_cut_is_incomplete_and_a_break_fails() {
        let mut f = Framer::new(cx(), "up");
        let mut all = f
            .frame(Piece::Events(vec![
                Event::Text("a".into()),
                Event::Finish(Finish::Length),
            ]))
            .unwrap()
            .to_vec();
        all.extend_from_slice(&f.end().unwrap());
        let evs = events(&all);
        assert_eq!(evs.last().unwrap()["type"], "response.incomplete");
        assert_eq!(
            evs.last().unwrap()["response"]["incomplete_details"]["reason"],
            "max_output_tokens"
        );

        let mut f = Framer::new(cx(), "up");
        let mut all = f
            .frame(Piece::Events(vec![Event::Text("a".into())]))
            .unwrap()
            .to_vec();
        all.extend_from_slice(&f.frame(Piece::Interrupted("reset".into())).unwrap());
        assert!(f.end().is_none());
        let evs = events(&all);
        assert_eq!(evs.last().unwrap()["type"], "response.failed");
        assert_eq!(evs.last().unwrap()["response"]["status"], "failed");
        let cut = &evs[evs.len() - 2];
        assert_eq!(cut["type"], "response.output_item.done");
        assert_eq!(
            cut["item"]["status"], "incomplete",
            "a cut item is not completed"
        );

        let mut f = Framer::new(cx(), "up");
        let mut all = f
            .frame(Piece::Events(vec![Event::ToolCall(CallDelta {
                index: 0,
                id: Some("call_1".into()),
                name: Some("spawn".into()),
                arguments: "{\"a\"".into(),
                extra: None,
            })]))
            .unwrap()
            .to_vec();
        all.extend_from_slice(&f.frame(Piece::Interrupted("reset".into())).unwrap());
        let evs = events(&all);
        assert!(
            evs.iter()
                .all(|e| e["type"] != "response.function_call_arguments.done")
        );
        let cut = &evs[evs.len() - 2];
        assert_eq!(cut["item"]["status"], "incomplete");
    }
}
