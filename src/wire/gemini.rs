//! Gemini's own API as a client surface (`/v1beta/models/{model}:generateContent` and
//! `:streamGenerateContent`, what Google's SDKs and the Gemini CLI speak), pure: a
//! `GenerateContentRequest` into the canonical request, canonical answers back as
//! `GenerateContentResponse`s (whole, or one per streamed step, as SSE or as a JSON array that
//! grows), errors as `{"error": {"code", "message", "status"}}`.
//!
//! This is the reverse of `providers::gemini` (Freeway talking to Google): here Freeway is the
//! one being talked to. Bodies are read into typed structs; unknown fields are ignored, as
//! Google's SDKs send fields this surface has no use for. Field names are camelCase, and, as
//! Google's own JSON parsing allows, also the proto's snake_case (the Python SDK sends
//! `mime_type`).

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

use super::{Frames, join_text};
use crate::chat::{self, Event, Finish, Message, Piece, Usage};
use crate::error::ApiError;

// ---- requests ----

/// A `GenerateContentRequest` (also the body of `countTokens`, which may wrap one in
/// `generateContentRequest`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    #[serde(default)]
    contents: Vec<Content>,
    #[serde(alias = "system_instruction")]
    system_instruction: Option<Content>,
    #[serde(default)]
    tools: Vec<Tool>,
    #[serde(alias = "tool_config")]
    tool_config: Option<ToolConfig>,
    #[serde(alias = "generation_config")]
    generation_config: Option<GenerationConfig>,
    /// Server-side cached context Freeway does not have: refused, never silently ignored.
    #[serde(alias = "cached_content")]
    cached_content: Option<String>,
    /// `countTokens`' other form.
    #[serde(alias = "generate_content_request")]
    generate_content_request: Option<Box<Body>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Content {
    role: Option<String>,
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part {
    text: Option<String>,
    #[serde(alias = "inline_data")]
    inline_data: Option<Blob>,
    #[serde(alias = "file_data")]
    file_data: Option<FileData>,
    #[serde(alias = "function_call")]
    function_call: Option<FunctionCall>,
    #[serde(alias = "function_response")]
    function_response: Option<FunctionResponse>,
    /// A thought summary the client echoes back: dropped (no upstream could use it).
    #[serde(default)]
    thought: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Blob {
    #[serde(alias = "mime_type")]
    mime_type: String,
    data: String,
}

/// A file by URI (its `mimeType` is not needed: the URL is passed on as it is).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileData {
    #[serde(alias = "file_uri")]
    file_uri: String,
}

#[derive(Debug, Deserialize)]
struct FunctionCall {
    name: String,
    #[serde(default)]
    args: Option<Map<String, Value>>,
    id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct FunctionResponse {
    name: String,
    #[serde(default)]
    response: Option<Value>,
    id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Tool {
    #[serde(alias = "function_declarations")]
    function_declarations: Option<Vec<FunctionDeclaration>>,
    /// Google's own tools (`googleSearch`, `codeExecution`, `urlContext`, ...): dropped, noted.
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FunctionDeclaration {
    name: String,
    description: Option<String>,
    /// Google's OpenAPI-subset schema (upper-case types).
    parameters: Option<Value>,
    /// A plain JSON schema.
    #[serde(alias = "parameters_json_schema")]
    parameters_json_schema: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig {
    #[serde(alias = "function_calling_config")]
    function_calling_config: Option<FunctionCallingConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FunctionCallingConfig {
    mode: Option<String>,
    #[serde(alias = "allowed_function_names")]
    allowed_function_names: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig {
    temperature: Option<f64>,
    #[serde(alias = "top_p")]
    top_p: Option<f64>,
    #[serde(alias = "top_k")]
    top_k: Option<f64>,
    #[serde(alias = "max_output_tokens")]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    #[serde(alias = "stop_sequences")]
    stop_sequences: Vec<String>,
    #[serde(alias = "candidate_count")]
    candidate_count: Option<u64>,
    seed: Option<i64>,
    #[serde(alias = "presence_penalty")]
    presence_penalty: Option<f64>,
    #[serde(alias = "frequency_penalty")]
    frequency_penalty: Option<f64>,
    #[serde(alias = "response_mime_type")]
    response_mime_type: Option<String>,
    #[serde(alias = "response_schema")]
    response_schema: Option<Value>,
    #[serde(alias = "response_json_schema")]
    response_json_schema: Option<Value>,
    #[serde(alias = "thinking_config")]
    thinking_config: Option<ThinkingConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ThinkingConfig {
    #[serde(alias = "include_thoughts")]
    include_thoughts: Option<bool>,
    #[serde(alias = "thinking_budget")]
    thinking_budget: Option<i64>,
    #[serde(alias = "thinking_level")]
    thinking_level: Option<String>,
}

/// A Gemini request, translated.
#[derive(Debug)]
pub struct Parsed {
    pub req: chat::Request,
    /// The client asked for thought summaries (`includeThoughts`): reasoning is shown as
    /// `thought: true` parts.
    pub thoughts: bool,
    /// What was dropped, for the request log.
    pub notes: Vec<String>,
}

/// Parse a `generateContent` / `streamGenerateContent` body for `model` (from the URL);
/// `route_model` turns the requested model into the one to route.
pub fn parse(
    bytes: &[u8],
    model: &str,
    stream: bool,
    route_model: impl Fn(&str) -> String,
) -> Result<Parsed, String> {
    let body: Body = super::read::body(bytes, "`contents` (a GenerateContentRequest)")?;
    translate(body, model, stream, &route_model)
}

/// Parse a `countTokens` body (`contents`, or a whole `generateContentRequest`).
pub fn parse_count(
    bytes: &[u8],
    model: &str,
    route_model: impl Fn(&str) -> String,
) -> Result<Parsed, String> {
    let mut body: Body = super::read::body(bytes, "`contents` (a GenerateContentRequest)")?;
    let body = match body.generate_content_request.take() {
        Some(inner) if body.contents.is_empty() => *inner,
        _ => body,
    };
    translate(body, model, false, &route_model)
}

fn translate(
    body: Body,
    model: &str,
    stream: bool,
    route_model: &dyn Fn(&str) -> String,
) -> Result<Parsed, String> {
    if body.cached_content.is_some() {
        return Err(
            "`cachedContent` is not served: Freeway keeps no cached contents; send the whole conversation in `contents`".into(),
        );
    }
    if body.contents.is_empty() {
        return Err("`contents` must contain at least one content".into());
    }
    let mut notes = Vec::new();
    let mut out = Map::new();
    out.insert("model".into(), json!(route_model(model)));

    let mut messages = Vec::new();
    if let Some(system) = &body.system_instruction {
        let text = join_text(system.parts.iter().filter_map(|p| p.text.as_deref()));
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    let mut calls = Calls::default();
    for (i, c) in body.contents.iter().enumerate() {
        content(c, i, &mut calls, &mut messages, &mut notes)?;
    }
    if messages.iter().all(|m| m["role"] == "system") {
        return Err("`contents` has no text, image or function part to answer".into());
    }
    out.insert("messages".into(), Value::Array(messages));

    let (tools, names) = tools(&body.tools, &mut notes)?;
    if let Some(config) = body
        .tool_config
        .as_ref()
        .and_then(|c| c.function_calling_config.as_ref())
    {
        if !tools.is_empty() {
            tool_choice(config, tools, &names, &mut out)?;
        }
    } else if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
    }

    if let Some(g) = &body.generation_config {
        generation(g, &mut out)?;
    }
    if stream {
        out.insert("stream".into(), json!(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let thoughts = body
        .generation_config
        .as_ref()
        .and_then(|g| g.thinking_config.as_ref())
        .and_then(|t| t.include_thoughts)
        .unwrap_or(false);
    let req = chat::Request::from_map(out)?;
    Ok(Parsed {
        req,
        thoughts,
        notes,
    })
}

/// Tool calls seen so far, to pair each `functionResponse` with its call.
#[derive(Default)]
struct Calls {
    /// (name, id) of calls not answered yet, oldest first.
    open: Vec<(String, String)>,
}

impl Calls {
    /// The id of the call a response answers: the call with its `id` if it names one that is
    /// open, else the oldest open call of the same name.
    fn answer(&mut self, name: &str, id: Option<&str>) -> Option<String> {
        let at = id
            .and_then(|id| self.open.iter().position(|(_, i)| i == id))
            .or_else(|| self.open.iter().position(|(n, _)| n == name))?;
        Some(self.open.remove(at).1)
    }
}

/// One content into canonical messages: a `model` turn becomes an assistant message (text and
/// tool calls); a `user` turn's function responses become tool messages, then its other parts
/// a user message.
fn content(
    c: &Content,
    i: usize,
    calls: &mut Calls,
    out: &mut Vec<Value>,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    let at = format!("contents[{i}]");
    match c.role.as_deref().unwrap_or("user") {
        "model" => {
            let mut texts = Vec::new();
            let mut tool_calls = Vec::new();
            for (j, p) in c.parts.iter().enumerate() {
                if p.thought {
                    continue;
                }
                if let Some(t) = &p.text {
                    texts.push(t.as_str());
                } else if let Some(f) = &p.function_call {
                    if f.name.is_empty() {
                        return Err(format!(
                            "`{at}.parts[{j}].functionCall.name` must not be empty"
                        ));
                    }
                    // Google's id when the client kept it; else one that is the same each
                    // time the conversation is sent again (its place in it).
                    let id =
                        f.id.clone()
                            .filter(|id| !id.is_empty())
                            .unwrap_or_else(|| format!("call_{i}_{j}"));
                    let args = Value::Object(f.args.clone().unwrap_or_default());
                    calls.open.push((f.name.clone(), id.clone()));
                    tool_calls.push(json!({"id": id, "type": "function",
                        "function": {"name": f.name, "arguments": args.to_string()}}));
                } else if p.inline_data.is_some() || p.file_data.is_some() {
                    notes.push(format!("dropped media in the model turn {at}"));
                }
            }
            let text = texts.concat();
            if tool_calls.is_empty() {
                if !text.is_empty() {
                    out.push(json!({"role": "assistant", "content": text}));
                }
            } else {
                let content = if text.is_empty() {
                    Value::Null
                } else {
                    json!(text)
                };
                out.push(
                    json!({"role": "assistant", "content": content, "tool_calls": tool_calls}),
                );
            }
        }
        "user" | "function" | "tool" => {
            let mut parts = Vec::new();
            for (j, p) in c.parts.iter().enumerate() {
                let pat = format!("{at}.parts[{j}]");
                if p.thought {
                    continue;
                }
                if let Some(t) = &p.text {
                    parts.push(json!({"type": "text", "text": t}));
                } else if let Some(b) = &p.inline_data {
                    if b.mime_type.is_empty() || b.data.is_empty() {
                        return Err(format!(
                            "`{pat}.inlineData` needs a `mimeType` and base64 `data`"
                        ));
                    }
                    let url = format!("data:{};base64,{}", b.mime_type, b.data);
                    parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
                } else if let Some(f) = &p.file_data {
                    let uri = f.file_uri.as_str();
                    if !(uri.starts_with("https://") || uri.starts_with("http://")) {
                        return Err(format!(
                            "`{pat}.fileData.fileUri` must be an http(s) URL: Freeway has no Files API or Cloud Storage; send the bytes as `inlineData`"
                        ));
                    }
                    parts.push(json!({"type": "image_url", "image_url": {"url": uri}}));
                } else if let Some(r) = &p.function_response {
                    let id = calls.answer(&r.name, r.id.as_deref()).ok_or_else(|| {
                        format!(
                            "`{pat}.functionResponse` answers no earlier `functionCall` named `{}`",
                            r.name
                        )
                    })?;
                    let result = tool_result(r.response.as_ref());
                    out.push(json!({"role": "tool", "tool_call_id": id, "content": result}));
                } else if p.function_call.is_some() {
                    return Err(format!(
                        "`{pat}.functionCall` belongs in a content with role \"model\""
                    ));
                } else {
                    notes.push(format!(
                        "dropped a part of {pat} with no text, media or function"
                    ));
                }
            }
            if parts.is_empty() {
                return Ok(());
            }
            let only_text = parts.iter().all(|p| p["type"] == "text");
            if only_text {
                let text = join_text(parts.iter().filter_map(|p| p["text"].as_str()));
                if !text.is_empty() {
                    out.push(json!({"role": "user", "content": text}));
                }
            } else {
                out.push(json!({"role": "user", "content": parts}));
            }
        }
        other => {
            return Err(format!(
                "`{at}.role` must be \"user\" or \"model\", got {other:?}"
            ));
        }
    }
    Ok(())
}

/// A function response as a tool message's text. Google's convention is `{"output": …}` or
/// `{"error": …}` (the Gemini CLI's): a lone string there is the text itself (an error marked
/// as Anthropic's `is_error` results are); anything else is its JSON.
fn tool_result(response: Option<&Value>) -> String {
    let Some(v) = response else {
        return String::new();
    };
    if let Value::Object(m) = v {
        if m.len() == 1 {
            match (m.get("output"), m.get("error")) {
                (Some(Value::String(s)), _) => return s.clone(),
                (_, Some(Value::String(s))) => return format!("[tool error] {s}"),
                _ => {}
            }
        }
    }
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// Function declarations as chat tools (and their names); Google's own tools are dropped and
/// noted.
fn tools(list: &[Tool], notes: &mut Vec<String>) -> Result<(Vec<Value>, Vec<String>), String> {
    let mut out = Vec::new();
    let mut names = Vec::new();
    for (i, t) in list.iter().enumerate() {
        for kind in t.other.keys() {
            notes.push(format!("dropped the Google tool {kind}"));
        }
        for (j, d) in t.function_declarations.iter().flatten().enumerate() {
            let at = format!("tools[{i}].functionDeclarations[{j}]");
            if d.name.is_empty() {
                return Err(format!("`{at}.name` must not be empty"));
            }
            let parameters = match (&d.parameters_json_schema, &d.parameters) {
                // Google takes upper-case types in either form (the Gemini CLI sends them).
                (Some(s @ Value::Object(_)), _) => to_json_schema(s, 0),
                (Some(Value::Null) | None, Some(s @ Value::Object(_))) => to_json_schema(s, 0),
                (Some(Value::Null) | None, None | Some(Value::Null)) => {
                    json!({"type": "object", "properties": {}})
                }
                (Some(_), _) => {
                    return Err(format!("`{at}.parametersJsonSchema` must be an object"));
                }
                (_, Some(_)) => return Err(format!("`{at}.parameters` must be an object")),
            };
            let mut function = Map::new();
            function.insert("name".into(), json!(d.name));
            if let Some(desc) = &d.description {
                function.insert("description".into(), json!(desc));
            }
            function.insert("parameters".into(), parameters);
            out.push(json!({"type": "function", "function": function}));
            names.push(d.name.clone());
        }
    }
    Ok((out, names))
}

/// `toolConfig.functionCallingConfig` as `tool_choice` (and the tools it allows).
fn tool_choice(
    config: &FunctionCallingConfig,
    mut tools: Vec<Value>,
    names: &[String],
    out: &mut Map<String, Value>,
) -> Result<(), String> {
    let at = "toolConfig.functionCallingConfig";
    let allowed = config.allowed_function_names.as_deref().unwrap_or(&[]);
    for a in allowed {
        if !names.contains(a) {
            return Err(format!(
                "`{at}.allowedFunctionNames` names `{a}`, which no function declaration has"
            ));
        }
    }
    let choice = match config
        .mode
        .as_deref()
        .unwrap_or("AUTO")
        .to_ascii_uppercase()
        .as_str()
    {
        "AUTO" | "MODE_UNSPECIFIED" | "VALIDATED" => json!("auto"),
        "NONE" => json!("none"),
        "ANY" => match allowed {
            [one] => json!({"type": "function", "function": {"name": one}}),
            [] => json!("required"),
            many => {
                // Only the allowed functions are offered, one of which must be called.
                tools.retain(|t| {
                    t["function"]["name"]
                        .as_str()
                        .is_some_and(|n| many.iter().any(|a| a == n))
                });
                json!("required")
            }
        },
        other => {
            return Err(format!(
                "`{at}.mode` must be AUTO, ANY, NONE or VALIDATED, got {other:?}"
            ));
        }
    };
    out.insert("tools".into(), Value::Array(tools));
    out.insert("tool_choice".into(), choice);
    Ok(())
}

/// `generationConfig` onto the chat body.
fn generation(g: &GenerationConfig, out: &mut Map<String, Value>) -> Result<(), String> {
    let at = "generationConfig";
    if let Some(n) = g.candidate_count {
        if n != 1 {
            return Err(format!(
                "`{at}.candidateCount` must be 1: Freeway answers one candidate"
            ));
        }
    }
    for (key, v) in [
        ("temperature", g.temperature),
        ("top_p", g.top_p),
        ("presence_penalty", g.presence_penalty),
        ("frequency_penalty", g.frequency_penalty),
    ] {
        if let Some(x) = v {
            if !x.is_finite() {
                return Err(format!("`{at}` has a {key} that is not a finite number"));
            }
            out.insert(key.into(), json!(x));
        }
    }
    if let Some(k) = g.top_k {
        if !(k.is_finite() && k >= 1.0 && k.fract() == 0.0) {
            return Err(format!("`{at}.topK` must be a whole number of at least 1"));
        }
        out.insert("top_k".into(), json!(k as u64));
    }
    if let Some(n) = g.max_output_tokens {
        out.insert("max_tokens".into(), json!(n.max(1)));
    }
    if let Some(seed) = g.seed {
        out.insert("seed".into(), json!(seed));
    }
    if !g.stop_sequences.is_empty() {
        out.insert("stop".into(), json!(g.stop_sequences));
    }
    match g.response_mime_type.as_deref() {
        None | Some("text/plain") | Some("") => {}
        Some("application/json") => {
            let schema = match (&g.response_json_schema, &g.response_schema) {
                (Some(s @ Value::Object(_)), _) => Some(to_json_schema(s, 0)),
                (Some(Value::Null) | None, Some(s @ Value::Object(_))) => {
                    Some(to_json_schema(s, 0))
                }
                (Some(Value::Null) | None, None | Some(Value::Null)) => None,
                (Some(_), _) => return Err(format!("`{at}.responseJsonSchema` must be an object")),
                (_, Some(_)) => return Err(format!("`{at}.responseSchema` must be an object")),
            };
            let format = match schema {
                Some(schema) => json!({"type": "json_schema",
                    "json_schema": {"name": "output", "schema": schema, "strict": true}}),
                None => json!({"type": "json_object"}),
            };
            out.insert("response_format".into(), format);
        }
        Some(other) => {
            return Err(format!(
                "`{at}.responseMimeType` must be text/plain or application/json, got {other:?}"
            ));
        }
    }
    if let Some(t) = &g.thinking_config {
        if let Some(effort) = effort(t)? {
            out.insert("reasoning_effort".into(), json!(effort));
        }
    }
    Ok(())
}

/// A thinking config as a reasoning effort: a level names one; a budget maps as Anthropic's
/// does (under 4096 low, under 16384 medium, else high); a budget of 0 (off) or -1 (dynamic)
/// leaves the model its default (a model that cannot reason would refuse an effort).
fn effort(t: &ThinkingConfig) -> Result<Option<&'static str>, String> {
    if let Some(level) = &t.thinking_level {
        return match level.to_ascii_uppercase().as_str() {
            "THINKING_LEVEL_UNSPECIFIED" => Ok(None),
            "MINIMAL" => Ok(Some("minimal")),
            "LOW" => Ok(Some("low")),
            "MEDIUM" => Ok(Some("medium")),
            "HIGH" => Ok(Some("high")),
            other => Err(format!(
                "`generationConfig.thinkingConfig.thinkingLevel` must be MINIMAL, LOW, MEDIUM or HIGH, got {other:?}"
            )),
        };
    }
    Ok(match t.thinking_budget {
        None | Some(..=0) => None,
        Some(1..4096) => Some("low"),
        Some(4096..16384) => Some("medium"),
        Some(_) => Some("high"),
    })
}

/// Deeper than this, a schema is cut to `{}` (no panic, no stack overflow on hostile input).
const MAX_SCHEMA_DEPTH: usize = 64;

/// Google's OpenAPI-subset schema (`"type": "OBJECT"`, `nullable`, ...) as a JSON schema; a
/// JSON schema passes unchanged but for its types, lower-cased.
pub fn to_json_schema(node: &Value, depth: usize) -> Value {
    let Some(obj) = node.as_object() else {
        return json!({});
    };
    if depth > MAX_SCHEMA_DEPTH {
        return json!({});
    }
    let mut out = Map::new();
    let mut nullable = false;
    for (key, value) in obj {
        match key.as_str() {
            "type" => match value {
                Value::String(t) => {
                    let t = t.to_ascii_lowercase();
                    if t != "type_unspecified" {
                        out.insert("type".into(), json!(t));
                    }
                }
                Value::Array(ts) => {
                    let ts: Vec<Value> = ts
                        .iter()
                        .filter_map(Value::as_str)
                        .map(|t| json!(t.to_ascii_lowercase()))
                        .collect();
                    out.insert("type".into(), Value::Array(ts));
                }
                _ => {}
            },
            "nullable" => nullable = value.as_bool() == Some(true),
            "properties" => {
                if let Some(props) = value.as_object() {
                    let props: Map<String, Value> = props
                        .iter()
                        .map(|(k, v)| (k.clone(), to_json_schema(v, depth + 1)))
                        .collect();
                    out.insert("properties".into(), Value::Object(props));
                }
            }
            "items" => {
                out.insert("items".into(), to_json_schema(value, depth + 1));
            }
            "anyOf" => {
                if let Some(list) = value.as_array() {
                    let list: Vec<Value> =
                        list.iter().map(|v| to_json_schema(v, depth + 1)).collect();
                    out.insert("anyOf".into(), Value::Array(list));
                }
            }
            // Gemini's own ordering hint means nothing to a JSON schema.
            "propertyOrdering" => {}
            "minItems" | "maxItems" | "minLength" | "maxLength" | "minProperties"
            | "maxProperties" => {
                // Google sends int64 fields as strings.
                let n = match value {
                    Value::String(s) => s.parse::<u64>().ok().map(Value::from),
                    Value::Number(_) => Some(value.clone()),
                    _ => None,
                };
                if let Some(n) = n {
                    out.insert(key.clone(), n);
                }
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    if nullable {
        if let Some(Value::String(t)) = out.get("type").cloned() {
            out.insert("type".into(), json!([t, "null"]));
        }
    }
    Value::Object(out)
}

// ---- answers ----

/// Google's `finishReason` for a canonical one (a tool call ends with STOP, as Google's does).
fn finish_reason(f: Finish) -> &'static str {
    match f {
        Finish::Stop | Finish::ToolCalls => "STOP",
        Finish::Length => "MAX_TOKENS",
        Finish::ContentFilter => "SAFETY",
    }
}

/// `usageMetadata`: Google counts thoughts apart from the candidates, OpenAI within them.
fn usage_json(u: &Usage) -> Value {
    let thoughts = u.reasoning.unwrap_or(0).min(u.output);
    let mut v = json!({
        "promptTokenCount": u.input,
        "candidatesTokenCount": u.output - thoughts,
        "totalTokenCount": u.total(),
    });
    if thoughts > 0 {
        v["thoughtsTokenCount"] = json!(thoughts);
    }
    if let Some(c) = u.cached.filter(|c| *c > 0) {
        v["cachedContentTokenCount"] = json!(c);
    }
    v
}

/// A tool call's arguments as the `args` object (arguments that are not an object are kept
/// under `"arguments"`, never lost).
fn args_of(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ if arguments.trim().is_empty() => json!({}),
        Ok(other) => json!({ "arguments": other }),
        Err(_) => json!({ "arguments": arguments }),
    }
}

/// A `functionCall` part; a Gemini upstream's thought signature rides along, as Google sends
/// it (the client echoes it back, and Freeway also remembers it by the call's id).
fn call_part(id: &str, name: &str, arguments: &str, extra: Option<&Value>) -> Value {
    let mut part = json!({"functionCall": {"name": name, "args": args_of(arguments), "id": id}});
    if let Some(sig) = extra
        .and_then(|e| e.pointer("/google/thought_signature"))
        .and_then(Value::as_str)
    {
        part["thoughtSignature"] = json!(sig);
    }
    part
}

/// One `GenerateContentResponse`.
fn response(
    parts: Vec<Value>,
    finish: Option<Finish>,
    usage: Option<Usage>,
    model: &str,
    id: &str,
) -> Value {
    let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
    if let Some(f) = finish {
        candidate["finishReason"] = json!(finish_reason(f));
    }
    let mut v = json!({"candidates": [candidate]});
    if let Some(u) = usage {
        v["usageMetadata"] = usage_json(&u);
    }
    v["modelVersion"] = json!(model);
    v["responseId"] = json!(id);
    v
}

/// A whole answer as a `GenerateContentResponse`. `estimate` fills usage an upstream did not
/// report.
pub fn answer_body(m: &Message, id: &str, thoughts: bool, estimate: u64) -> Value {
    let mut parts = Vec::new();
    if thoughts && !m.reasoning.is_empty() {
        parts.push(json!({"text": m.reasoning, "thought": true}));
    }
    if !m.text.is_empty() || m.calls.is_empty() {
        parts.push(json!({"text": m.text}));
    }
    for c in &m.calls {
        parts.push(call_part(&c.id, &c.name, &c.arguments, c.extra.as_ref()));
    }
    let usage = m.usage.unwrap_or(Usage {
        input: estimate,
        output: (m.text.len() + m.reasoning.len()).div_ceil(4) as u64,
        ..Usage::default()
    });
    response(parts, Some(m.finish), Some(usage), &m.model, id)
}

/// Google's `status` for an HTTP status.
fn status_name(code: u16) -> &'static str {
    match code {
        400 | 413 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        408 => "DEADLINE_EXCEEDED",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    }
}

/// `{"error": {"code", "message", "status"}}`; a 429 names when to retry the way Google does
/// (`RetryInfo`, which the Gemini CLI reads).
pub fn error_body(e: &ApiError) -> Value {
    let code = e.status();
    let mut v =
        json!({"error": {"code": code, "message": e.to_string(), "status": status_name(code)}});
    if let Some(d) = e.retry_after() {
        let secs = d.as_secs_f64().ceil().max(1.0) as u64;
        v["error"]["details"] = json!([{
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": format!("{secs}s"),
        }]);
    }
    v
}

// ---- streams ----

/// How a stream is framed: Server-Sent Events (`?alt=sse`), or a JSON array written as it grows
/// (`[`, then each response, `,\r\n` between them, `]`), as Google does without `alt=sse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Sse,
    Array,
}

/// A tool call being streamed, gathered whole: Google sends each `functionCall` in one part.
#[derive(Default)]
struct Pending {
    id: Option<String>,
    name: String,
    arguments: String,
    extra: Option<Value>,
}

/// Frames a streamed answer as `GenerateContentResponse` chunks: one per step with its new
/// text, then a last one with the tool calls, `finishReason` and `usageMetadata`.
pub struct Framer {
    form: Form,
    id: String,
    model: String,
    thoughts: bool,
    estimate: u64,
    /// Something was written (the array's `[` is open).
    started: bool,
    calls: BTreeMap<u32, Pending>,
    finish: Option<Finish>,
    usage: Option<Usage>,
    output_chars: usize,
    ended: bool,
}

impl Framer {
    /// `model`: what serves the answer (`modelVersion`); `estimate`: the prompt estimate, for
    /// usage an upstream did not report.
    pub fn new(form: Form, id: &str, model: &str, thoughts: bool, estimate: u64) -> Framer {
        Framer {
            form,
            id: id.into(),
            model: model.into(),
            thoughts,
            estimate,
            started: false,
            calls: BTreeMap::new(),
            finish: None,
            usage: None,
            output_chars: 0,
            ended: false,
        }
    }

    /// One chunk, in the stream's form.
    fn push(&mut self, buf: &mut Vec<u8>, v: &Value) {
        match self.form {
            Form::Sse => {
                buf.extend_from_slice(b"data: ");
                // Writing a Value into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *buf, v);
                buf.extend_from_slice(b"\r\n\r\n");
            }
            Form::Array => {
                buf.extend_from_slice(if self.started { b",\r\n" } else { b"[" });
                let _ = serde_json::to_writer(&mut *buf, v);
            }
        }
        self.started = true;
    }

    /// What closes the stream (the array's `]`).
    fn close(&mut self, buf: &mut Vec<u8>) {
        if self.form == Form::Array {
            if !self.started {
                buf.push(b'[');
            }
            buf.push(b']');
        }
        self.ended = true;
    }

    fn error(&mut self, buf: &mut Vec<u8>, message: String) {
        let e = ApiError::UpstreamFailed(message);
        self.push(buf, &error_body(&e));
        self.close(buf);
    }
}

impl Frames for Framer {
    fn frame(&mut self, piece: Piece) -> Option<Bytes> {
        if self.ended {
            return None;
        }
        let mut buf = Vec::new();
        if let Piece::Interrupted(reason) = piece {
            self.error(&mut buf, super::interrupted(&reason));
            return Some(Bytes::from(buf));
        }
        let mut parts = Vec::new();
        for e in piece.events() {
            match e {
                Event::Text(t) if !t.is_empty() => {
                    self.output_chars += t.len();
                    parts.push(json!({"text": t}));
                }
                Event::Reasoning(t) if !t.is_empty() => {
                    self.output_chars += t.len();
                    if self.thoughts {
                        parts.push(json!({"text": t, "thought": true}));
                    }
                }
                Event::ToolCall(c) => {
                    self.output_chars += c.arguments.len();
                    let p = self.calls.entry(c.index).or_default();
                    if c.id.is_some() {
                        p.id = c.id;
                    }
                    if let Some(n) = c.name {
                        p.name.push_str(&n);
                    }
                    p.arguments.push_str(&c.arguments);
                    if c.extra.is_some() {
                        p.extra = c.extra;
                    }
                }
                Event::Finish(f) => self.finish = Some(f),
                Event::Usage(u) => self.usage = Some(u),
                Event::Text(_) | Event::Reasoning(_) => {}
            }
        }
        if !parts.is_empty() {
            let v = response(parts, None, None, &self.model, &self.id);
            self.push(&mut buf, &v);
        }
        (!buf.is_empty()).then(|| Bytes::from(buf))
    }

    fn end(&mut self) -> Option<Bytes> {
        if self.ended {
            return None;
        }
        let mut buf = Vec::new();
        let Some(finish) = self.finish else {
            self.error(&mut buf, super::NO_FINISH.to_string());
            return Some(Bytes::from(buf));
        };
        let calls = std::mem::take(&mut self.calls);
        let mut parts: Vec<Value> = calls
            .into_iter()
            .map(|(index, p)| {
                let id = p.id.unwrap_or_else(|| format!("call_{}_{index}", self.id));
                call_part(&id, &p.name, &p.arguments, p.extra.as_ref())
            })
            .collect();
        if parts.is_empty() {
            parts.push(json!({"text": ""}));
        }
        let usage = self.usage.unwrap_or(Usage {
            input: self.estimate,
            output: self.output_chars.div_ceil(4) as u64,
            ..Usage::default()
        });
        let v = response(parts, Some(finish), Some(usage), &self.model, &self.id);
        self.push(&mut buf, &v);
        self.close(&mut buf);
        Some(Bytes::from(buf))
    }
}

// ---- embeddings (SPEC 2.5 on Gemini's API) ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EmbedOne {
    content: EmbedContent,
    #[serde(default, alias = "task_type")]
    task_type: Option<String>,
    #[serde(default, alias = "output_dimensionality")]
    output_dimensionality: Option<u32>,
}

#[derive(Deserialize)]
struct EmbedContent {
    #[serde(default)]
    parts: Vec<EmbedPart>,
}

#[derive(Deserialize)]
struct EmbedPart {
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct EmbedBatch {
    requests: Vec<EmbedOne>,
}

/// An `embedContent` or `batchEmbedContents` request read: one text per content, the size
/// asked, whether they are queries (`RETRIEVAL_QUERY`, `QUESTION_ANSWERING`,
/// `FACT_VERIFICATION`, `CODE_RETRIEVAL_QUERY`) or documents (every other task type).
pub struct Embed {
    pub texts: Vec<String>,
    pub dims: Option<u32>,
    pub query: bool,
}

/// Read `:embedContent` (`batch = false`) or `:batchEmbedContents`.
pub fn parse_embed(bytes: &[u8], batch: bool) -> Result<Embed, String> {
    let requests = if batch {
        super::read::body::<EmbedBatch>(bytes, "`requests`")?.requests
    } else {
        vec![super::read::body::<EmbedOne>(bytes, "`content`")?]
    };
    let Some(first) = requests.first() else {
        return Err("`requests`: give at least one content to embed".into());
    };
    let dims = first.output_dimensionality.filter(|d| *d > 0);
    let query = matches!(
        first.task_type.as_deref(),
        Some(
            "RETRIEVAL_QUERY" | "QUESTION_ANSWERING" | "FACT_VERIFICATION" | "CODE_RETRIEVAL_QUERY"
        )
    );
    let mut texts = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        if r.output_dimensionality.filter(|d| *d > 0) != dims {
            return Err(format!(
                "`requests[{i}].outputDimensionality` differs from the first request's: one batch is one vector size"
            ));
        }
        let text = join_text(r.content.parts.iter().filter_map(|p| p.text.as_deref()));
        if text.is_empty() {
            return Err(format!("`requests[{i}].content` has no text to embed"));
        }
        texts.push(text);
    }
    if texts.len() > super::embeddings::MAX_INPUTS {
        return Err(format!(
            "`requests`: {} contents; at most {} per request",
            texts.len(),
            super::embeddings::MAX_INPUTS
        ));
    }
    Ok(Embed { texts, dims, query })
}

/// `{"embedding": {"values": [...]}}`, or `{"embeddings": [...]}` for a batch; the vectors as
/// the upstream wrote them.
pub fn embed_body(vectors: &[crate::providers::embed::Vector], batch: bool) -> String {
    let one = |v: &crate::providers::embed::Vector| format!(r#"{{"values":{}}}"#, v.get());
    if !batch {
        return format!(
            r#"{{"embedding":{}}}"#,
            vectors
                .first()
                .map_or_else(|| r#"{"values":[]}"#.to_string(), one)
        );
    }
    let list: Vec<String> = vectors.iter().map(one).collect();
    format!(r#"{{"embeddings":[{}]}}"#, list.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{Call, CallDelta};
    use crate::config::GeminiFamilies;

    fn p(v: Value) -> Result<Parsed, String> {
        parse(v.to_string().as_bytes(), "m", false, |m| m.to_string())
    }

    fn body(v: Value) -> Map<String, Value> {
        p(v).unwrap().req.to_map()
    }

    #[test]
    fn text_system_and_generation_config_translate() {
        let b = body(json!({
            "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Use English."}]},
            "contents": [
                {"role": "user", "parts": [{"text": "hello"}]},
                {"role": "model", "parts": [{"text": "thinking…", "thought": true}, {"text": "Hi!"}]},
                {"parts": [{"text": "say"}, {"text": "more"}]}
            ],
            "generationConfig": {"temperature": 0.2, "topP": 0.9, "topK": 40, "maxOutputTokens": 100,
                "stopSequences": ["END"], "candidateCount": 1, "seed": 7},
            "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
            "labels": {"x": "y"}
        }));
        assert_eq!(b["model"], "m");
        let m = b["messages"].as_array().unwrap();
        assert_eq!(
            m[0],
            json!({"role": "system", "content": "Be brief.\nUse English."})
        );
        assert_eq!(m[1], json!({"role": "user", "content": "hello"}));
        assert_eq!(m[2], json!({"role": "assistant", "content": "Hi!"}));
        assert_eq!(m[3], json!({"role": "user", "content": "say\nmore"}));
        assert_eq!(b["temperature"], 0.2);
        assert_eq!(b["top_p"], 0.9);
        assert_eq!(b["top_k"], 40);
        assert_eq!(b["max_tokens"], 100);
        assert_eq!(b["stop"], json!(["END"]));
        assert_eq!(b["seed"], 7);
        assert!(b.get("stream").is_none());
    }

    #[test]
    fn images_and_file_uris_become_image_parts() {
        let parsed = p(json!({"contents": [{"role": "user", "parts": [
            {"text": "what is it"},
            {"inlineData": {"mimeType": "image/png", "data": "AAA"}},
            {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/a.jpg"}}
        ]}]}))
        .unwrap();
        assert!(parsed.req.facts.has_images);
        let b = parsed.req.to_map();
        let c = &b["messages"][0]["content"];
        assert_eq!(c[0], json!({"type": "text", "text": "what is it"}));
        assert_eq!(c[1]["image_url"]["url"], "data:image/png;base64,AAA");
        assert_eq!(c[2]["image_url"]["url"], "https://example.com/a.jpg");
        // The proto's snake_case names, as Google accepts them (the Python SDK's `mime_type`).
        let b = body(
            json!({"contents": [{"parts": [{"inline_data": {"mime_type": "image/png", "data": "BBB"}}]}],
            "generation_config": {"max_output_tokens": 5}}),
        );
        assert_eq!(
            b["messages"][0]["content"][0]["image_url"]["url"],
            "data:image/png;base64,BBB"
        );
        assert_eq!(b["max_tokens"], 5);
        let err = p(json!({"contents": [{"parts": [{"fileData": {"fileUri": "gs://b/o.png"}}]}]}))
            .unwrap_err();
        assert!(
            err.contains("contents[0].parts[0].fileData.fileUri"),
            "{err}"
        );
    }

    #[test]
    fn function_calls_and_responses_pair_up() {
        let parsed = p(json!({
            "tools": [{"functionDeclarations": [
                {"name": "get_weather", "description": "Weather", "parameters": {"type": "OBJECT",
                    "properties": {"city": {"type": "STRING", "nullable": true}}, "required": ["city"]}},
                {"name": "ls", "parametersJsonSchema": {"type": "object", "properties": {"dir": {"type": "string"}}}}
            ]}, {"googleSearch": {}}, {"codeExecution": {}}],
            "contents": [
                {"role": "user", "parts": [{"text": "weather?"}]},
                {"role": "model", "parts": [
                    {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}},
                    {"functionCall": {"name": "ls", "args": {}, "id": "g-1"}},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Bergen"}}}
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "ls", "response": {"output": "a b"}, "id": "g-1"}},
                    {"functionResponse": {"name": "get_weather", "response": {"error": "no such city"}, "id": "made-up-by-cli"}},
                    {"functionResponse": {"name": "get_weather", "response": {"t": 5}}}
                ]}
            ]
        }))
        .unwrap();
        assert_eq!(
            parsed.notes,
            vec![
                "dropped the Google tool googleSearch",
                "dropped the Google tool codeExecution"
            ]
        );
        let b = parsed.req.to_map();
        let tools = b["tools"].as_array().unwrap();
        assert_eq!(tools.len(), 2);
        assert_eq!(
            tools[0]["function"]["parameters"],
            json!({"type": "object", "properties": {"city": {"type": ["string", "null"]}}, "required": ["city"]})
        );
        assert_eq!(
            tools[1]["function"]["parameters"]["properties"]["dir"]["type"],
            "string"
        );
        let m = b["messages"].as_array().unwrap();
        let calls = m[1]["tool_calls"].as_array().unwrap();
        assert_eq!(calls[0]["id"], "call_1_0");
        assert_eq!(calls[0]["function"]["arguments"], "{\"city\":\"Oslo\"}");
        assert_eq!(calls[1]["id"], "g-1");
        assert_eq!(calls[2]["id"], "call_1_2");
        assert_eq!(
            m[2],
            json!({"role": "tool", "tool_call_id": "g-1", "content": "a b"})
        );
        // An id the call never had: paired by name, oldest first.
        assert_eq!(m[3]["tool_call_id"], "call_1_0");
        assert_eq!(m[3]["content"], "[tool error] no such city");
        assert_eq!(m[4]["content"], "{\"t\":5}");
        assert_eq!(m[4]["tool_call_id"], "call_1_2");
        let err = p(
            json!({"contents": [{"parts": [{"functionResponse": {"name": "x", "response": {}}}]}]}),
        )
        .unwrap_err();
        assert!(
            err.contains("contents[0].parts[0].functionResponse"),
            "{err}"
        );
    }

    #[test]
    fn tool_config_modes() {
        let tools =
            json!([{"functionDeclarations": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}]);
        let with = |config: Value| {
            p(
                json!({"contents": [{"parts": [{"text": "x"}]}], "tools": tools,
                "toolConfig": {"functionCallingConfig": config}}),
            )
        };
        let b = with(json!({"mode": "ANY", "allowedFunctionNames": ["b"]}))
            .unwrap()
            .req
            .to_map();
        assert_eq!(
            b["tool_choice"],
            json!({"type": "function", "function": {"name": "b"}})
        );
        let b = with(json!({"mode": "ANY", "allowedFunctionNames": ["a", "c"]}))
            .unwrap()
            .req
            .to_map();
        assert_eq!(b["tool_choice"], "required");
        assert_eq!(b["tools"].as_array().unwrap().len(), 2);
        let b = with(json!({"mode": "ANY"})).unwrap().req.to_map();
        assert_eq!(b["tool_choice"], "required");
        let b = with(json!({"mode": "NONE"})).unwrap().req.to_map();
        assert_eq!(b["tool_choice"], "none");
        let b = with(json!({"mode": "AUTO"})).unwrap().req.to_map();
        assert_eq!(b["tool_choice"], "auto");
        assert!(
            with(json!({"mode": "SOMETIMES"}))
                .unwrap_err()
                .contains("mode")
        );
        assert!(
            with(json!({"mode": "ANY", "allowedFunctionNames": ["zz"]}))
                .unwrap_err()
                .contains("allowedFunctionNames")
        );
    }

    #[test]
    fn json_output_thinking_and_streams() {
        let parsed = parse(
            json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {
                "responseMimeType": "application/json",
                "responseSchema": {"type": "OBJECT", "properties": {"n": {"type": "INTEGER", "minimum": 1},
                    "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "maxItems": "3"}},
                    "propertyOrdering": ["n", "tags"]},
                "thinkingConfig": {"thinkingBudget": 8192, "includeThoughts": true}}})
            .to_string()
            .as_bytes(),
            "gemini-x",
            true,
            |_| "auto".into(),
        )
        .unwrap();
        assert!(parsed.thoughts);
        let b = parsed.req.to_map();
        assert_eq!(b["model"], "auto");
        assert_eq!(b["stream"], true);
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(b["reasoning_effort"], "medium");
        assert_eq!(
            b["response_format"]["json_schema"]["schema"],
            json!({"type": "object", "properties": {"n": {"type": "integer", "minimum": 1},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3}}})
        );
        let b = body(
            json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {
            "responseMimeType": "application/json", "responseJsonSchema": {"type": "object"},
            "thinkingConfig": {"thinkingLevel": "low"}}}),
        );
        assert_eq!(
            b["response_format"]["json_schema"]["schema"],
            json!({"type": "object"})
        );
        assert_eq!(b["reasoning_effort"], "low");
        // What the Gemini CLI's model router sends: a JSON schema with Google's types.
        let b = body(
            json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {
            "responseMimeType": "application/json", "responseJsonSchema": {"type": "OBJECT",
                "properties": {"score": {"type": "INTEGER"}}, "required": ["score"]}}}),
        );
        assert_eq!(
            b["response_format"]["json_schema"]["schema"],
            json!({"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"]})
        );
        let b = body(
            json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {
            "responseMimeType": "application/json", "thinkingConfig": {"thinkingBudget": -1}}}),
        );
        assert_eq!(b["response_format"], json!({"type": "json_object"}));
        assert!(b.get("reasoning_effort").is_none());
    }

    #[test]
    fn count_tokens_takes_both_forms() {
        let inner = json!({"contents": [{"parts": [{"text": "hello there"}]}]});
        let a = parse_count(inner.to_string().as_bytes(), "m", |m| m.into()).unwrap();
        let wrapped =
            json!({"generateContentRequest": {"model": "models/m", "contents": inner["contents"]}});
        let b = parse_count(wrapped.to_string().as_bytes(), "m", |m| m.into()).unwrap();
        assert!(a.req.facts.prompt_tokens > 0);
        assert_eq!(a.req.facts.prompt_tokens, b.req.facts.prompt_tokens);
    }

    #[test]
    fn bad_requests_name_the_field() {
        let cases = [
            (json!([1]), "GenerateContentRequest"),
            (json!({}), "`contents`"),
            (json!({"contents": "hi"}), "`contents`"),
            (
                json!({"contents": [{"parts": [{"text": 5}]}]}),
                "`contents[0].parts[0].text`",
            ),
            (
                json!({"contents": [{"role": "robot", "parts": [{"text": "x"}]}]}),
                "`contents[0].role`",
            ),
            (
                json!({"contents": [{"parts": [{"inlineData": {"mimeType": "image/png"}}]}]}),
                "contents[0].parts[0].inlineData",
            ),
            (
                json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"candidateCount": 2}}),
                "candidateCount",
            ),
            (
                json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"maxOutputTokens": "many"}}),
                "generationConfig.maxOutputTokens",
            ),
            (
                json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"responseMimeType": "text/xml"}}),
                "responseMimeType",
            ),
            (
                json!({"contents": [{"parts": [{"text": "x"}]}], "cachedContent": "cachedContents/1"}),
                "cachedContent",
            ),
            (
                json!({"contents": [{"role": "user", "parts": [{"functionCall": {"name": "f"}}]}]}),
                "role \"model\"",
            ),
        ];
        for (b, needle) in cases {
            let err = p(b.clone()).unwrap_err();
            assert!(err.contains(needle), "{b} -> {err}");
        }
        assert!(
            parse(b"{not json", "m", false, |m| m.into())
                .unwrap_err()
                .contains("not valid JSON")
        );
    }

    #[test]
    fn gemini_ids_map_by_family() {
        let f = GeminiFamilies {
            pro: "groq/big".into(),
            flash: "auto".into(),
            flash_lite: "small".into(),
        };
        assert_eq!(f.map("gemini-9-pro-preview", |_| false), "groq/big");
        assert_eq!(f.map("gemini-9-flash-lite", |_| false), "small");
        assert_eq!(f.map("gemini-9-flash", |_| false), "auto");
        assert_eq!(f.map("gemini-next", |_| false), "auto");
        assert_eq!(f.map("gemini-2.5-pro", |_| true), "gemini-2.5-pro");
        assert_eq!(f.map("gpt-oss-120b", |_| false), "gpt-oss-120b");
    }

    fn message(calls: Vec<Call>, finish: Finish) -> Message {
        Message {
            model: "up-model".into(),
            text: "hi".into(),
            reasoning: "hmm".into(),
            calls,
            finish,
            usage: Some(Usage {
                input: 10,
                output: 7,
                reasoning: Some(2),
                ..Usage::default()
            }),
        }
    }

    #[test]
    fn a_whole_answer_is_a_generate_content_response() {
        let m = message(
            vec![Call {
                id: "call_1".into(),
                name: "get".into(),
                arguments: "{\"q\":1}".into(),
                extra: Some(json!({"google": {"thought_signature": "SIG"}})),
            }],
            Finish::ToolCalls,
        );
        let v = answer_body(&m, "r1", false, 99);
        let c = &v["candidates"][0];
        assert_eq!(c["index"], 0);
        assert_eq!(c["finishReason"], "STOP");
        assert_eq!(c["content"]["role"], "model");
        assert_eq!(c["content"]["parts"][0], json!({"text": "hi"}));
        assert_eq!(
            c["content"]["parts"][1],
            json!({"functionCall": {"name": "get", "args": {"q": 1}, "id": "call_1"}, "thoughtSignature": "SIG"})
        );
        assert_eq!(
            v["usageMetadata"],
            json!({"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 17, "thoughtsTokenCount": 2})
        );
        assert_eq!(v["modelVersion"], "up-model");
        assert_eq!(v["responseId"], "r1");
        let v = answer_body(&message(vec![], Finish::ContentFilter), "r1", true, 1);
        assert_eq!(v["candidates"][0]["finishReason"], "SAFETY");
        assert_eq!(
            v["candidates"][0]["content"]["parts"][0],
            json!({"text": "hmm", "thought": true})
        );
        assert_eq!(
            answer_body(&message(vec![], Finish::Length), "r", false, 1)["candidates"][0]["finishReason"],
            "MAX_TOKENS"
        );
    }

    #[test]
    fn errors_have_googles_shape() {
        let cases = [
            (
                ApiError::InvalidRequest("x".into()),
                400,
                "INVALID_ARGUMENT",
            ),
            (ApiError::Unauthorized("x".into()), 401, "UNAUTHENTICATED"),
            (
                ApiError::ModelNotAllowed("x".into()),
                403,
                "PERMISSION_DENIED",
            ),
            (ApiError::ModelNotFound("x".into()), 404, "NOT_FOUND"),
            (ApiError::UpstreamFailed("x".into()), 502, "INTERNAL"),
            (ApiError::NoProviders("x".into()), 503, "UNAVAILABLE"),
        ];
        for (e, code, status) in cases {
            let v = error_body(&e);
            assert_eq!(v["error"]["code"], code);
            assert_eq!(v["error"]["status"], status);
            assert_eq!(v["error"]["message"], "x");
        }
        let v = error_body(&ApiError::RateLimited {
            message: "later".into(),
            retry_after: Some(std::time::Duration::from_millis(2500)),
        });
        assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED");
        assert_eq!(v["error"]["details"][0]["retryDelay"], "3s");
    }

    fn call_delta(index: u32, id: Option<&str>, name: Option<&str>, args: &str) -> Piece {
        Piece::Events(vec![Event::ToolCall(CallDelta {
            index,
            id: id.map(String::from),
            name: name.map(String::from),
            arguments: args.into(),
            extra: None,
        })])
    }

    fn run(form: Form, pieces: Vec<Piece>) -> String {
        let mut f = Framer::new(form, "r1", "up", false, 12);
        let mut all = Vec::new();
        for piece in pieces {
            all.extend_from_slice(&f.frame(piece).unwrap_or_default());
        }
        all.extend_from_slice(&f.end().unwrap_or_default());
        String::from_utf8(all).unwrap()
    }

    fn steps() -> Vec<Piece> {
        vec![
            Piece::Events(vec![Event::Reasoning("hidden".into())]),
            Piece::Events(vec![Event::Text("Hel".into())]),
            Piece::Events(vec![Event::Text("lo".into())]),
            call_delta(0, Some("call_1"), Some("get"), "{\"q\""),
            call_delta(0, None, None, ":1}"),
            Piece::Events(vec![Event::Finish(Finish::ToolCalls)]),
            Piece::Events(vec![Event::Usage(Usage {
                input: 7,
                output: 4,
                ..Usage::default()
            })]),
        ]
    }

    #[test]
    fn a_stream_as_sse_and_as_a_growing_array_says_the_same() {
        let sse = run(Form::Sse, steps());
        let chunks: Vec<Value> = sse
            .split("\r\n\r\n")
            .filter(|e| !e.is_empty())
            .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
            .collect();
        let array = run(Form::Array, steps());
        assert!(array.starts_with("[{") && array.ends_with("}]"), "{array}");
        assert!(array.contains("},\r\n{"));
        let parsed: Vec<Value> = serde_json::from_str(&array).unwrap();
        assert_eq!(parsed, chunks);
        assert_eq!(chunks.len(), 3);
        assert_eq!(
            chunks[0]["candidates"][0]["content"]["parts"],
            json!([{"text": "Hel"}])
        );
        assert!(chunks[0]["candidates"][0].get("finishReason").is_none());
        let last = &chunks[2];
        assert_eq!(last["candidates"][0]["finishReason"], "STOP");
        assert_eq!(
            last["candidates"][0]["content"]["parts"],
            json!([{"functionCall": {"name": "get", "args": {"q": 1}, "id": "call_1"}}])
        );
        assert_eq!(last["usageMetadata"]["totalTokenCount"], 11);
        assert_eq!(last["modelVersion"], "up");
        assert!(!sse.contains("hidden"), "thoughts shown unasked");
        // Nothing at all still makes a whole array.
        let mut f = Framer::new(Form::Array, "r", "m", false, 1);
        let text = String::from_utf8(f.end().unwrap().to_vec()).unwrap();
        let v: Vec<Value> = serde_json::from_str(&text).unwrap();
        assert!(v[0]["error"]["message"].is_string());
    }

    #[test]
    fn a_break_after_content_ends_with_an_error_object_and_nothing_else() {
        for form in [Form::Sse, Form::Array] {
            let text = run(
                form,
                vec![
                    Piece::Events(vec![Event::Text("x".into())]),
                    Piece::Interrupted("reset".into()),
                    Piece::Events(vec![Event::Finish(Finish::Stop)]),
                ],
            );
            let chunks: Vec<Value> = match form {
                Form::Array => serde_json::from_str(&text).unwrap(),
                Form::Sse => text
                    .split("\r\n\r\n")
                    .filter(|e| !e.is_empty())
                    .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
                    .collect(),
            };
            assert_eq!(chunks.len(), 2, "{text}");
            assert_eq!(chunks[1]["error"]["status"], "INTERNAL");
            assert!(!text.contains("finishReason"));
        }
    }

    #[test]
    fn schema_conversion_never_panics_on_odd_values() {
        for v in [
            json!(null),
            json!(5),
            json!({"type": 5, "properties": [], "items": "x", "anyOf": {}}),
            json!({"type": "TYPE_UNSPECIFIED", "nullable": "yes"}),
        ] {
            let _ = to_json_schema(&v, 0);
        }
        let mut deep = json!({"type": "STRING"});
        for _ in 0..500 {
            deep = json!({"type": "ARRAY", "items": deep});
        }
        let _ = to_json_schema(&deep, 0);
    }

    #[test]
    fn embed_requests_one_and_batched() {
        let e = parse_embed(
            br#"{"content":{"parts":[{"text":"a"},{"text":"b"}]},"taskType":"RETRIEVAL_QUERY","outputDimensionality":768}"#,
            false,
        )
        .unwrap();
        assert_eq!(e.texts, ["a\nb"]);
        assert!(e.query);
        assert_eq!(e.dims, Some(768));
        let e = parse_embed(
            br#"{"requests":[{"model":"models/x","content":{"parts":[{"text":"a"}]}},{"content":{"parts":[{"text":"c"}]}}]}"#,
            true,
        )
        .unwrap();
        assert_eq!(e.texts, ["a", "c"]);
        assert!(!e.query);
        for (body, batch, field) in [
            (r#"{}"#, false, "content"),
            (r#"{"requests":[]}"#, true, "`requests`"),
            (
                r#"{"requests":[{"content":{"parts":[]}}]}"#,
                true,
                "requests[0].content",
            ),
            (
                r#"{"content":{"parts":[{"text":5}]}}"#,
                false,
                "content.parts[0].text",
            ),
        ] {
            let err = parse_embed(body.as_bytes(), batch).err().unwrap();
            assert!(err.contains(field), "{body}: {err}");
        }
        let v = serde_json::value::RawValue::from_string("[1,2]".into()).unwrap();
        let one: Value =
            serde_json::from_str(&embed_body(std::slice::from_ref(&v), false)).unwrap();
        assert_eq!(one["embedding"]["values"], json!([1, 2]));
        let many: Value = serde_json::from_str(&embed_body(&[v], true)).unwrap();
        assert_eq!(many["embeddings"][0]["values"], json!([1, 2]));
    }
}
