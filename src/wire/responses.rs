//! The OpenAI Responses surface (`/v1/responses`, what Codex CLI and newer OpenAI SDK code
//! speak), pure and stateless: `input` items into the canonical request, canonical answers back
//! as a `response` object or the typed event stream with its `sequence_number`s.
//!
//! Nothing is stored: `store` is accepted and ignored, `previous_response_id` is refused with a
//! message that says to send the whole conversation. Hosted tools (`web_search`, ...) are
//! dropped and noted; `namespace` tools are flattened into their functions, and a call to one
//! of them names its namespace again in the answer. The body is read into typed request
//! structs (fields Freeway does not read are skipped; what the `response` object echoes is kept
//! as it came), then translated.

use bytes::Bytes;
use serde::de::{self, IgnoredAny};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value, json};
use std::borrow::Cow;
use std::collections::HashMap;

use super::read::{self, Lenient, Listed, Obj, StrOr, Tagged, inside, tagged, variant};
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

/// A Responses request as the client sends it. Fields Freeway does not read (`store`,
/// `include`, `prompt_cache_key`, …) are skipped; the pieces the `response` object echoes are
/// kept as their JSON text.
#[derive(Deserialize)]
#[serde(expecting = "a JSON object")]
struct Request<'a> {
    previous_response_id: Option<IgnoredAny>,
    conversation: Option<IgnoredAny>,
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    instructions: Option<String>,
    #[serde(borrow)]
    input: Option<StrOr<'a, Item<'a>>>,
    max_output_tokens: Option<u64>,
    temperature: Option<Number>,
    top_p: Option<Number>,
    parallel_tool_calls: Option<bool>,
    stream: Option<bool>,
    #[serde(borrow)]
    tools: Option<&'a RawValue>,
    #[serde(borrow)]
    tool_choice: Option<&'a RawValue>,
    #[serde(borrow)]
    text: Option<&'a RawValue>,
    reasoning: Option<Lenient<Obj<Reasoning>>>,
    #[serde(default)]
    metadata: Lenient<Map<String, Value>>,
}

/// An input item; one without a `type` is a message.
enum Item<'a> {
    Message(MessageItem<'a>),
    FunctionCall(FunctionCall<'a>),
    FunctionCallOutput(FunctionCallOutput<'a>),
    Skipped,
    Other(Cow<'a, str>),
}

impl Listed for Item<'_> {
    const ITEMS: &'static str = "input items";
}

#[derive(Deserialize)]
struct MessageItem<'a> {
    #[serde(borrow, default)]
    role: Lenient<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<StrOr<'a, Part<'a>>>,
}

#[derive(Deserialize)]
struct FunctionCall<'a> {
    #[serde(borrow)]
    call_id: Cow<'a, str>,
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    arguments: Cow<'a, str>,
}

#[derive(Deserialize)]
struct FunctionCallOutput<'a> {
    #[serde(borrow)]
    call_id: Cow<'a, str>,
    #[serde(borrow)]
    output: StrOr<'a, Part<'a>>,
}

/// A content part: text (of any of its kinds) and images count, the rest is ignored.
enum Part<'a> {
    Text(Text<'a>),
    Refusal(Refusal<'a>),
    Image(InputImage<'a>),
    Other,
}

impl Listed for Part<'_> {
    const ITEMS: &'static str = "content parts";
}

#[derive(Deserialize)]
struct Text<'a> {
    #[serde(borrow)]
    text: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Refusal<'a> {
    #[serde(borrow, default)]
    refusal: Lenient<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct InputImage<'a> {
    #[serde(borrow, default)]
    image_url: Lenient<Cow<'a, str>>,
    #[serde(borrow, default)]
    detail: Lenient<Cow<'a, str>>,
}

/// A tool: a function, a namespace of functions, or a hosted tool (dropped).
enum Tool<'a> {
    Function(FunctionTool<'a>),
    Namespace(Namespace<'a>),
    Hosted(Cow<'a, str>),
}

#[derive(Deserialize)]
struct FunctionTool<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    description: Lenient<Cow<'a, str>>,
    /// Opaque: the JSON schema of the function's arguments.
    #[serde(default)]
    parameters: Lenient<Map<String, Value>>,
    #[serde(default)]
    strict: Lenient<bool>,
}

#[derive(Deserialize)]
struct Namespace<'a> {
    #[serde(borrow, default)]
    name: Lenient<Cow<'a, str>>,
    /// Read one by one: only the functions among them count.
    #[serde(borrow, default)]
    tools: Lenient<Vec<&'a RawValue>>,
}

/// `tool_choice`: a mode, or an object (a function by name; hosted-tool choices and
/// allowed-tools lists leave the choice to the model).
enum ToolChoice<'a> {
    Mode(Cow<'a, str>),
    Function(Option<Cow<'a, str>>),
    Model,
}

#[derive(Deserialize)]
struct FunctionChoice<'a> {
    #[serde(borrow, default)]
    name: Lenient<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct TextConfig<'a> {
    #[serde(borrow)]
    format: Option<&'a RawValue>,
}

/// `text.format` with `type: "json_schema"`.
#[derive(Deserialize)]
struct SchemaFormat {
    /// Opaque: the JSON schema the answer follows.
    schema: Option<Value>,
    #[serde(default = "answer")]
    name: Value,
    #[serde(default)]
    strict: Lenient<bool>,
    #[serde(default)]
    description: Lenient<String>,
}

fn answer() -> Value {
    json!("answer")
}

/// `reasoning`, echoed as it came (`effort` and `summary` of any type).
#[derive(Deserialize)]
struct Reasoning {
    effort: Option<Value>,
    summary: Option<Value>,
}

impl<'a> Tagged<'a> for Item<'a> {
    fn read<E: de::Error>(tag: Option<Cow<'a, str>>, raw: &'a RawValue) -> Result<Self, E> {
        if !raw.get().starts_with('{') {
            return Err(de::Error::custom("must be an object"));
        }
        Ok(match tag.as_deref().unwrap_or("message") {
            "message" => Item::Message(variant(raw)?),
            "function_call" => Item::FunctionCall(variant(raw)?),
            "function_call_output" => Item::FunctionCallOutput(variant(raw)?),
            "reasoning" | "item_reference" => Item::Skipped,
            _ => Item::Other(tag.unwrap_or_default()),
        })
    }
}

impl<'a> Tagged<'a> for Part<'a> {
    fn read<E: de::Error>(tag: Option<Cow<'a, str>>, raw: &'a RawValue) -> Result<Self, E> {
        let Some(tag) = tag else {
            return Err(de::Error::custom("must be an object with a `type`"));
        };
        Ok(match tag.as_ref() {
            "input_text" | "output_text" | "text" | "summary_text" => Part::Text(variant(raw)?),
            "refusal" => Part::Refusal(variant(raw)?),
            "input_image" => {
                let image: InputImage = variant(raw)?;
                if image.image_url.0.is_none() {
                    return Err(inside(
                        "image_url",
                        "must be a URL string (file ids are not supported)",
                    ));
                }
                Part::Image(image)
            }
            _ => Part::Other,
        })
    }
}

impl<'a> Tagged<'a> for Tool<'a> {
    fn read<E: de::Error>(tag: Option<Cow<'a, str>>, raw: &'a RawValue) -> Result<Self, E> {
        match tag {
            Some(t) if t == "function" => Ok(Tool::Function(variant(raw)?)),
            Some(t) if t == "namespace" => Ok(Tool::Namespace(variant(raw)?)),
            Some(t) => Ok(Tool::Hosted(t)),
            None => Err(de::Error::custom("must be an object with a `type`")),
        }
    }
}

impl<'a> Tagged<'a> for ToolChoice<'a> {
    fn read<E: de::Error>(tag: Option<Cow<'a, str>>, raw: &'a RawValue) -> Result<Self, E> {
        if raw.get().starts_with('{') {
            if tag.as_deref() != Some("function") {
                return Ok(ToolChoice::Model);
            }
            let f: FunctionChoice = variant(raw)?;
            return Ok(ToolChoice::Function(f.name.0));
        }
        match serde_json::from_str::<Cow<str>>(raw.get()) {
            Ok(mode) if ["auto", "none", "required"].contains(&mode.as_ref()) => {
                Ok(ToolChoice::Mode(mode))
            }
            _ => Err(de::Error::custom(
                "must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"name\"}",
            )),
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
deserialize_tagged!(Item, Part, Tool, ToolChoice);

/// Parse a Responses request.
pub fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let body: Request = read::body(bytes, "`input`")?;
    if body.previous_response_id.is_some() {
        return Err("`previous_response_id` is not supported: Freeway stores no responses; send the whole conversation in `input` (and `store: false`)".into());
    }
    if body.conversation.is_some() {
        return Err("`conversation` is not supported: Freeway stores no conversations; send the whole conversation in `input`".into());
    }
    let mut notes = Vec::new();
    let mut out = Map::new();
    let mut echo = Echo::default();
    sampling(&body, &mut echo, &mut out);
    if let Some(m) = body.model {
        out.insert("model".into(), json!(m));
    }
    let messages = conversation(body.instructions, body.input, &mut echo, &mut notes)?;
    out.insert("messages".into(), Value::Array(messages));
    let mut namespaces = HashMap::new();
    let tools = tools(body.tools, &mut echo, &mut namespaces, &mut notes)?;
    let has_tools = !tools.is_empty();
    if has_tools {
        out.insert("tools".into(), Value::Array(tools));
        if !echo.parallel_tool_calls {
            out.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    if let Some(choice) = body.tool_choice {
        echo.tool_choice = opaque(choice);
        if let (true, Some(m)) = (has_tools, tool_choice(choice)?) {
            out.insert("tool_choice".into(), m);
        }
    }
    if let Some(text) = body.text {
        echo.text = opaque(text);
        if let Some(format) = response_format(text)? {
            out.insert("response_format".into(), format);
        }
    }
    if let Some(Lenient(r)) = body.reasoning {
        reasoning(r.map(|r| r.0), &mut echo, &mut out);
    }
    if let Some(m) = body.metadata.0 {
        echo.metadata = Value::Object(m);
    }
    let req = chat::Request::from_map(out)?;
    Ok(Parsed {
        req,
        namespaces,
        notes,
        echo,
    })
}

/// Length, sampling and streaming, echoed where the `response` object repeats them.
fn sampling(body: &Request<'_>, echo: &mut Echo, out: &mut Map<String, Value>) {
    if let Some(n) = body.max_output_tokens {
        echo.max_output_tokens = Some(n);
        out.insert("max_tokens".into(), json!(n.max(1)));
    }
    if let Some(n) = body.temperature.clone() {
        echo.temperature = n.as_f64();
        out.insert("temperature".into(), Value::Number(n));
    }
    if let Some(n) = body.top_p.clone() {
        echo.top_p = n.as_f64();
        out.insert("top_p".into(), Value::Number(n));
    }
    if let Some(b) = body.parallel_tool_calls {
        echo.parallel_tool_calls = b;
    }
    if body.stream == Some(true) {
        out.insert("stream".into(), json!(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
}

/// A piece of the body as a value, for the echo (it was read from valid JSON).
fn opaque(raw: &RawValue) -> Value {
    serde_json::from_str(raw.get()).unwrap_or_default()
}

/// `instructions` and `input` into canonical messages.
fn conversation(
    instructions: Option<String>,
    input: Option<StrOr<'_, Item<'_>>>,
    echo: &mut Echo,
    notes: &mut Vec<String>,
) -> Result<Vec<Value>, String> {
    let mut messages = Vec::new();
    if let Some(s) = instructions {
        if !s.is_empty() {
            messages.push(json!({"role": "system", "content": s}));
        }
        echo.instructions = Some(s);
    }
    match input {
        None => return Err("`input` is required: a string, or an array of input items".into()),
        Some(StrOr::Str(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(StrOr::List(items)) => {
            for (i, item) in items.into_iter().enumerate() {
                input_item(item, i, &mut messages, notes)?;
            }
        }
    }
    if messages.is_empty() {
        return Err("`input` must contain at least one message".into());
    }
    Ok(messages)
}

/// The text and images of a message's content, as chat content parts.
fn content_parts(content: Option<StrOr<'_, Part<'_>>>) -> Vec<Value> {
    let parts = match content {
        None => return Vec::new(),
        Some(StrOr::Str(s)) => return vec![json!({"type": "text", "text": s})],
        Some(StrOr::List(parts)) => parts,
    };
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        match p {
            Part::Text(t) => out.push(json!({"type": "text", "text": t.text})),
            Part::Refusal(r) => {
                let text = r.refusal.0.unwrap_or_default();
                out.push(json!({"type": "text", "text": text}));
            }
            Part::Image(image) => {
                let mut url = json!({"url": image.image_url.0.unwrap_or_default()});
                if let Some(d) = image.detail.0 {
                    url["detail"] = json!(d);
                }
                out.push(json!({"type": "image_url", "image_url": url}));
            }
            Part::Other => {}
        }
    }
    out
}

/// Text of parts (for roles that take one string).
fn parts_text(parts: &[Value]) -> String {
    join_text(parts.iter().filter_map(|p| p["text"].as_str()))
}

/// One input item into canonical messages. Consecutive function calls (and the assistant text
/// before them) become one assistant message with its tool calls.
fn input_item(
    item: Item<'_>,
    i: usize,
    out: &mut Vec<Value>,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    match item {
        Item::Message(m) => message(m, i, out)?,
        Item::FunctionCall(c) => {
            let call = json!({"id": c.call_id, "type": "function",
                "function": {"name": c.name, "arguments": c.arguments}});
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
        Item::FunctionCallOutput(o) => {
            let text = match o.output {
                StrOr::Str(s) => s.into_owned(),
                list => parts_text(&content_parts(Some(list))),
            };
            out.push(json!({"role": "tool", "tool_call_id": o.call_id, "content": text}));
        }
        Item::Skipped => {}
        Item::Other(kind) => notes.push(format!("dropped an input item of type {kind}")),
    }
    Ok(())
}

/// A `message` item by its role.
fn message(m: MessageItem<'_>, i: usize, out: &mut Vec<Value>) -> Result<(), String> {
    let at = format!("input[{i}]");
    let role = m.role.0.ok_or_else(|| format!("`{at}.role` is required"))?;
    let parts = content_parts(m.content);
    match role.as_ref() {
        "user" => match parts.len() {
            0 => {}
            1 if parts[0]["type"] == "text" => {
                out.push(json!({"role": "user", "content": parts[0]["text"]}))
            }
            _ => out.push(json!({"role": "user", "content": parts})),
        },
        "system" | "developer" | "assistant" => {
            let text = parts_text(&parts);
            let role = if role == "assistant" {
                "assistant"
            } else {
                "system"
            };
            if !text.is_empty() {
                out.push(json!({"role": role, "content": text}));
            }
        }
        other => {
            return Err(format!(
                "`{at}.role` must be user, assistant, system or developer, got {other:?}"
            ));
        }
    }
    Ok(())
}

/// Function tools as chat tools; namespace tools flattened; hosted tools dropped and noted.
/// The tools are echoed as they came.
fn tools(
    raw: Option<&RawValue>,
    echo: &mut Echo,
    namespaces: &mut HashMap<String, String>,
    notes: &mut Vec<String>,
) -> Result<Vec<Value>, String> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let list: Vec<Tool> = read::piece(raw, "tools")?;
    echo.tools = opaque(raw);
    let mut out = Vec::new();
    for (i, t) in list.into_iter().enumerate() {
        match t {
            Tool::Function(f) => out.push(function_tool(f)),
            Tool::Namespace(ns) => {
                let name = ns.name.0.unwrap_or_default();
                for (j, inner) in ns.tools.0.unwrap_or_default().into_iter().enumerate() {
                    if read::tag(inner).as_deref() != Some("function") {
                        continue;
                    }
                    let f: FunctionTool = read::piece(inner, &format!("tools[{i}].tools[{j}]"))?;
                    namespaces.insert(f.name.to_string(), name.to_string());
                    out.push(function_tool(f));
                }
            }
            Tool::Hosted(kind) => notes.push(format!("dropped the hosted tool {kind}")),
        }
    }
    Ok(out)
}

fn function_tool(t: FunctionTool<'_>) -> Value {
    let mut f = Map::new();
    f.insert("name".into(), json!(t.name));
    if let Some(d) = t.description.0 {
        f.insert("description".into(), json!(d));
    }
    let parameters = match t.parameters.0 {
        Some(p) => Value::Object(p),
        None => json!({"type": "object", "properties": {}}),
    };
    f.insert("parameters".into(), parameters);
    if let Some(s) = t.strict.0 {
        f.insert("strict".into(), json!(s));
    }
    json!({"type": "function", "function": f})
}

/// `tool_choice` as chat's (`None`: the model chooses).
fn tool_choice(raw: &RawValue) -> Result<Option<Value>, String> {
    Ok(match read::piece(raw, "tool_choice")? {
        ToolChoice::Mode(mode) => Some(json!(mode)),
        ToolChoice::Function(name) => {
            let name = name
                .ok_or_else(|| "`tool_choice.name` is required with type function".to_string())?;
            Some(json!({"type": "function", "function": {"name": name}}))
        }
        ToolChoice::Model => None,
    })
}

/// `text.format` as chat's `response_format` (`None`: plain text).
fn response_format(text: &RawValue) -> Result<Option<Value>, String> {
    let Ok(Obj(TextConfig {
        format: Some(format),
    })) = serde_json::from_str::<Obj<TextConfig>>(text.get())
    else {
        return Ok(None);
    };
    match read::tag(format).as_deref() {
        Some("text") | None => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let f: SchemaFormat = read::piece(format, "text.format")?;
            let schema = f
                .schema
                .filter(Value::is_object)
                .ok_or_else(|| "`text.format.schema` must be an object".to_string())?;
            let mut js = Map::new();
            js.insert("name".into(), f.name);
            js.insert("schema".into(), schema);
            if let Some(s) = f.strict.0 {
                js.insert("strict".into(), json!(s));
            }
            if let Some(d) = f.description.0 {
                js.insert("description".into(), json!(d));
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": js})))
        }
        Some(other) => Err(format!(
            "`text.format.type` must be text, json_object or json_schema, got {other:?}"
        )),
    }
}

/// `reasoning`: echoed, and its effort folded into the efforts chat upstreams take (OpenAI's
/// finer ones fold into them, `none` asks for nothing).
fn reasoning(r: Option<Reasoning>, echo: &mut Echo, out: &mut Map<String, Value>) {
    let (effort, summary) = r.map_or((None, None), |r| (r.effort, r.summary));
    let mapped = match effort.as_ref().and_then(Value::as_str) {
        Some("minimal" | "low") => Some("low"),
        Some("medium") => Some("medium"),
        Some("high" | "xhigh") => Some("high"),
        _ => None,
    };
    if let Some(effort) = mapped {
        out.insert("reasoning_effort".into(), json!(effort));
    }
    echo.reasoning = json!({"effort": effort, "summary": summary});
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
