//! Google Gemini native API provider: translates OpenAI chat-completions requests and answers to and
//! from Gemini's `generateContent` / `streamGenerateContent?alt=sse` wire format.
//!
//! Everything here is pure (no I/O). Inputs come from clients and from the upstream, so every
//! accessor tolerates missing or mistyped fields instead of indexing or unwrapping.

use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// An error in the client's request that Gemini cannot express (becomes an HTTP 400 for the client).
#[derive(Debug, Clone, PartialEq)]
pub struct TranslateError(pub String);

impl std::fmt::Display for TranslateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TranslateError {}

fn terr(msg: impl Into<String>) -> TranslateError {
    TranslateError(msg.into())
}

/// SDKs routinely serialize unset options as `null`, so null is treated exactly like absence.
fn field<'a>(obj: &'a Value, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn opt_str<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str)
}

fn opt_f64(req: &Value, key: &str) -> Result<Option<f64>, TranslateError> {
    match field(req, key) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| terr(format!("`{key}` must be a number"))),
    }
}

/// Accepts `100` and `100.0` alike: some clients (JS) cannot tell the two apart.
fn as_integer(v: &Value) -> Option<i64> {
    if let Some(i) = v.as_i64() {
        return Some(i);
    }
    let f = v.as_f64()?;
    // 2^53: beyond it f64 no longer represents every integer, so the value is not trustworthy.
    (f.is_finite() && f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0).then_some(f as i64)
}

fn opt_int(req: &Value, key: &str, min: i64) -> Result<Option<i64>, TranslateError> {
    match field(req, key) {
        None => Ok(None),
        Some(v) => as_integer(v)
            .filter(|i| *i >= min)
            .map(Some)
            .ok_or_else(|| terr(format!("`{key}` must be an integer >= {min}"))),
    }
}

// ---------------------------------------------------------------------------------------------
// Requests: OpenAI -> Gemini
// ---------------------------------------------------------------------------------------------

/// Gemini rejects empty part lists and is picky about turn structure; adjacent same-role turns are
/// merged because that is always semantically safe.
#[derive(Default)]
struct Contents {
    turns: Vec<(&'static str, Vec<Value>)>,
}

impl Contents {
    fn push(&mut self, role: &'static str, parts: Vec<Value>) {
        if parts.is_empty() {
            return;
        }
        if let Some((last_role, last_parts)) = self.turns.last_mut()
            && *last_role == role
        {
            last_parts.extend(parts);
            return;
        }
        self.turns.push((role, parts));
    }

    fn into_value(self) -> Value {
        Value::Array(
            self.turns
                .into_iter()
                .map(|(role, parts)| json!({"role": role, "parts": parts}))
                .collect(),
        )
    }
}

/// Build the Gemini request body from an OpenAI chat-completions request body.
/// `lookup_signature(tool_call_id)` returns a remembered Gemini `thoughtSignature` for a tool call id
/// when the client's replayed assistant message does not carry one itself.
pub fn to_upstream(
    req: &Value,
    lookup_signature: &dyn Fn(&str) -> Option<String>,
) -> Result<Value, TranslateError> {
    if !req.is_object() {
        return Err(terr("request body must be a JSON object"));
    }
    let messages = field(req, "messages")
        .ok_or_else(|| terr("`messages` is required"))?
        .as_array()
        .ok_or_else(|| terr("`messages` must be an array"))?;

    let mut system_texts: Vec<String> = Vec::new();
    let mut contents = Contents::default();
    // Tool results only carry the call id; Gemini wants the function name, which only the
    // earlier assistant turn knows.
    let mut call_names: HashMap<String, String> = HashMap::new();

    for (i, msg) in messages.iter().enumerate() {
        if !msg.is_object() {
            return Err(terr(format!("messages[{i}] must be an object")));
        }
        let role = opt_str(msg, "role")
            .ok_or_else(|| terr(format!("messages[{i}].role must be a string")))?;
        match role {
            "system" | "developer" => {
                let text = text_only(field(msg, "content"), "\n\n", i)?;
                if !text.is_empty() {
                    system_texts.push(text);
                }
            }
            "user" => contents.push("user", content_parts(field(msg, "content"), i)?),
            "assistant" => {
                let mut parts = content_parts(field(msg, "content"), i)?;
                parts.extend(assistant_tool_calls(
                    msg,
                    i,
                    lookup_signature,
                    &mut call_names,
                )?);
                contents.push("model", parts);
            }
            "tool" | "function" => {
                let text = text_only(field(msg, "content"), "", i)?;
                let call_id = opt_str(msg, "tool_call_id");
                let name = call_id
                    .and_then(|id| call_names.get(id).cloned())
                    .or_else(|| {
                        opt_str(msg, "name")
                            .filter(|n| !n.is_empty())
                            .map(String::from)
                    })
                    .ok_or_else(|| {
                        terr(format!(
                            "messages[{i}]: tool result with tool_call_id `{}` does not match any earlier assistant tool call",
                            call_id.unwrap_or("<missing>")
                        ))
                    })?;
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(obj @ Value::Object(_)) => obj,
                    _ => json!({ "content": text }),
                };
                contents.push(
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                );
            }
            other => {
                return Err(terr(format!("messages[{i}]: unsupported role `{other}`")));
            }
        }
    }

    let mut out = Map::new();
    let system = system_texts.join("\n\n");
    if contents.turns.is_empty() {
        // OpenAI answers a system-only conversation; Gemini refuses empty `contents`, so the
        // instructions become the user turn instead.
        if system.is_empty() {
            return Err(terr("`messages` contains no content Gemini can answer"));
        }
        contents.push("user", vec![json!({ "text": system })]);
    } else if !system.is_empty() {
        out.insert(
            "systemInstruction".into(),
            json!({"parts": [{ "text": system }]}),
        );
    }
    out.insert("contents".into(), contents.into_value());

    if let Some(tools) = translate_tools(req)? {
        out.insert("tools".into(), tools);
    }
    if let Some(tool_config) = translate_tool_choice(req)? {
        out.insert("toolConfig".into(), tool_config);
    }
    let gen_config = generation_config(req)?;
    if !gen_config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(gen_config));
    }
    Ok(Value::Object(out))
}

/// Text of a message whose content may only be text (system prompts, tool results).
fn text_only(content: Option<&Value>, sep: &str, i: usize) -> Result<String, TranslateError> {
    match content {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::new();
            for (j, part) in parts.iter().enumerate() {
                match opt_str(part, "type") {
                    Some("text") => texts.push(opt_str(part, "text").ok_or_else(|| {
                        terr(format!("messages[{i}].content[{j}].text must be a string"))
                    })?),
                    _ => {
                        return Err(terr(format!(
                            "messages[{i}].content[{j}]: only text parts are allowed in this message"
                        )));
                    }
                }
            }
            Ok(texts.join(sep))
        }
        Some(_) => Err(terr(format!(
            "messages[{i}].content must be a string or an array"
        ))),
    }
}

fn content_parts(content: Option<&Value>, i: usize) -> Result<Vec<Value>, TranslateError> {
    let parts = match content {
        None => return Ok(Vec::new()),
        // Gemini rejects empty text parts ("empty text parameter").
        Some(Value::String(s)) if s.is_empty() => return Ok(Vec::new()),
        Some(Value::String(s)) => return Ok(vec![json!({ "text": s })]),
        Some(Value::Array(parts)) => parts,
        Some(_) => {
            return Err(terr(format!(
                "messages[{i}].content must be a string or an array"
            )));
        }
    };
    let mut out = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        let at = format!("messages[{i}].content[{j}]");
        let kind = opt_str(part, "type").ok_or_else(|| terr(format!("{at}.type is required")))?;
        match kind {
            "text" | "refusal" => {
                let text = opt_str(part, kind)
                    .ok_or_else(|| terr(format!("{at}.{kind} must be a string")))?;
                if !text.is_empty() {
                    out.push(json!({ "text": text }));
                }
            }
            "image_url" => {
                let url = match part.get("image_url") {
                    Some(Value::String(s)) => Some(s.as_str()),
                    Some(obj) => opt_str(obj, "url"),
                    None => None,
                }
                .ok_or_else(|| terr(format!("{at}.image_url.url must be a string")))?;
                out.push(url_part(url, &at)?);
            }
            "input_audio" => {
                let audio = part.get("input_audio").unwrap_or(&Value::Null);
                let data = opt_str(audio, "data")
                    .ok_or_else(|| terr(format!("{at}.input_audio.data must be a string")))?;
                let format = opt_str(audio, "format").unwrap_or("wav");
                out.push(
                    json!({"inlineData": {"mimeType": format!("audio/{format}"), "data": data}}),
                );
            }
            "file" => {
                let file = part.get("file").unwrap_or(&Value::Null);
                let data = opt_str(file, "file_data").ok_or_else(|| {
                    terr(format!(
                        "{at}: only inline `file.file_data` is supported (file ids cannot be resolved for Gemini)"
                    ))
                })?;
                if data.starts_with("data:") {
                    out.push(data_url_part(data, &at)?);
                } else {
                    let mime = guess_mime(opt_str(file, "filename").unwrap_or(""))
                        .unwrap_or("application/pdf");
                    out.push(json!({"inlineData": {"mimeType": mime, "data": data}}));
                }
            }
            other => {
                return Err(terr(format!(
                    "{at}: unsupported content part type `{other}`"
                )));
            }
        }
    }
    Ok(out)
}

fn url_part(url: &str, at: &str) -> Result<Value, TranslateError> {
    if url.starts_with("data:") {
        return data_url_part(url, at);
    }
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") || lower.starts_with("gs://") {
        let mime = guess_mime(url).unwrap_or("image/jpeg");
        return Ok(json!({"fileData": {"mimeType": mime, "fileUri": url}}));
    }
    Err(terr(format!(
        "{at}: unsupported URL scheme (expected a data:, http(s): or gs: URL)"
    )))
}

fn data_url_part(url: &str, at: &str) -> Result<Value, TranslateError> {
    let rest = url.strip_prefix("data:").unwrap_or(url);
    let (meta, data) = rest
        .split_once(',')
        .ok_or_else(|| terr(format!("{at}: malformed data URL")))?;
    let Some(mime) = meta
        .strip_suffix(";base64")
        .or_else(|| meta.strip_suffix(";BASE64"))
    else {
        return Err(terr(format!("{at}: data URL must be base64-encoded")));
    };
    // Parameters such as `;charset=...` are not understood by Gemini.
    let mime = mime.split(';').next().unwrap_or("").trim();
    if mime.is_empty() {
        return Err(terr(format!("{at}: data URL has no MIME type")));
    }
    Ok(json!({"inlineData": {"mimeType": mime, "data": data}}))
}

fn guess_mime(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let file = path.rsplit('/').next().unwrap_or(path);
    let (_, ext) = file.rsplit_once('.')?;
    Some(match ext.to_ascii_lowercase().as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        "mp3" => "audio/mp3",
        "wav" => "audio/wav",
        "ogg" => "audio/ogg",
        "flac" => "audio/flac",
        "mp4" => "video/mp4",
        "mov" => "video/mov",
        "webm" => "video/webm",
        "txt" => "text/plain",
        _ => return None,
    })
}

fn assistant_tool_calls(
    msg: &Value,
    i: usize,
    lookup_signature: &dyn Fn(&str) -> Option<String>,
    call_names: &mut HashMap<String, String>,
) -> Result<Vec<Value>, TranslateError> {
    let Some(calls) = field(msg, "tool_calls") else {
        return Ok(Vec::new());
    };
    let calls = calls
        .as_array()
        .ok_or_else(|| terr(format!("messages[{i}].tool_calls must be an array")))?;
    let mut parts = Vec::with_capacity(calls.len());
    for (j, call) in calls.iter().enumerate() {
        let at = format!("messages[{i}].tool_calls[{j}]");
        let id = opt_str(call, "id").filter(|s| !s.is_empty());
        let func = call
            .get("function")
            .filter(|f| f.is_object())
            .ok_or_else(|| terr(format!("{at}.function must be an object")))?;
        let name = opt_str(func, "name")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| terr(format!("{at}.function.name must be a non-empty string")))?;
        let who = format!("{at} (`{name}`, id `{}`)", id.unwrap_or("<none>"));
        let args = match field(func, "arguments") {
            None => json!({}),
            Some(Value::String(s)) if s.trim().is_empty() => json!({}),
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(obj @ Value::Object(_)) => obj,
                Ok(_) => {
                    return Err(terr(format!("{who}: arguments must encode a JSON object")));
                }
                Err(e) => {
                    return Err(terr(format!("{who}: arguments are not valid JSON: {e}")));
                }
            },
            Some(obj @ Value::Object(_)) => obj.clone(),
            Some(_) => {
                return Err(terr(format!("{who}: arguments must be a JSON string")));
            }
        };
        let mut part = Map::new();
        part.insert("functionCall".into(), json!({"name": name, "args": args}));
        // Gemini 3 rejects a replayed function call whose signature was stripped, so take it
        // from the message (Google's own OpenAI layer shape) or from what we remembered.
        let signature = call
            .pointer("/extra_content/google/thought_signature")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .or_else(|| id.and_then(lookup_signature));
        if let Some(sig) = signature {
            part.insert("thoughtSignature".into(), Value::String(sig));
        }
        if let Some(id) = id {
            call_names.insert(id.to_string(), name.to_string());
        }
        parts.push(Value::Object(part));
    }
    Ok(parts)
}

fn translate_tools(req: &Value) -> Result<Option<Value>, TranslateError> {
    let Some(tools) = field(req, "tools") else {
        return Ok(None);
    };
    let tools = tools
        .as_array()
        .ok_or_else(|| terr("`tools` must be an array"))?;
    let mut decls = Vec::with_capacity(tools.len());
    for (k, tool) in tools.iter().enumerate() {
        if !tool.is_object() {
            return Err(terr(format!("tools[{k}] must be an object")));
        }
        let kind = opt_str(tool, "type").unwrap_or("function");
        if kind != "function" {
            return Err(terr(format!("tools[{k}]: unsupported tool type `{kind}`")));
        }
        let func = tool
            .get("function")
            .filter(|f| f.is_object())
            .ok_or_else(|| terr(format!("tools[{k}].function must be an object")))?;
        let name = opt_str(func, "name")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                terr(format!(
                    "tools[{k}].function.name must be a non-empty string"
                ))
            })?;
        let mut decl = Map::new();
        decl.insert("name".into(), json!(name));
        if let Some(desc) = opt_str(func, "description").filter(|d| !d.is_empty()) {
            decl.insert("description".into(), json!(desc));
        }
        if let Some(params) = field(func, "parameters") {
            if !params.is_object() {
                return Err(terr(format!(
                    "tools[{k}].function.parameters must be an object"
                )));
            }
            let cleaned = clean_schema(params);
            // Gemini rejects an OBJECT schema with empty `properties`; a no-argument function
            // is expressed by omitting `parameters`.
            let is_empty_object = cleaned.get("properties").is_none()
                && cleaned.get("anyOf").is_none()
                && opt_str(&cleaned, "type").is_none_or(|t| t == "object");
            if !is_empty_object {
                decl.insert("parameters".into(), cleaned);
            }
        }
        decls.push(Value::Object(decl));
    }
    if decls.is_empty() {
        return Ok(None);
    }
    Ok(Some(json!([{ "functionDeclarations": decls }])))
}

fn translate_tool_choice(req: &Value) -> Result<Option<Value>, TranslateError> {
    let Some(choice) = field(req, "tool_choice") else {
        return Ok(None);
    };
    let config = match choice {
        Value::String(s) => {
            let mode = match s.as_str() {
                "none" => "NONE",
                "auto" => "AUTO",
                "required" => "ANY",
                other => return Err(terr(format!("unsupported `tool_choice` value `{other}`"))),
            };
            json!({ "mode": mode })
        }
        Value::Object(_) => {
            let name = choice
                .pointer("/function/name")
                .or_else(|| choice.get("name"))
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| terr("`tool_choice` object must name a function"))?;
            json!({ "mode": "ANY", "allowedFunctionNames": [name] })
        }
        _ => return Err(terr("`tool_choice` must be a string or an object")),
    };
    Ok(Some(json!({ "functionCallingConfig": config })))
}

fn generation_config(req: &Value) -> Result<Map<String, Value>, TranslateError> {
    let mut g = Map::new();
    let max_tokens = match opt_int(req, "max_completion_tokens", 1)? {
        Some(n) => Some(n),
        None => opt_int(req, "max_tokens", 1)?,
    };
    if let Some(n) = max_tokens {
        g.insert("maxOutputTokens".into(), json!(n));
    }
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ] {
        if let Some(x) = opt_f64(req, from)? {
            g.insert(to.into(), json!(x));
        }
    }
    if let Some(k) = opt_int(req, "top_k", 1)? {
        g.insert("topK".into(), json!(k));
    }
    if let Some(n) = opt_int(req, "n", 1)? {
        g.insert("candidateCount".into(), json!(n));
    }
    if let Some(seed) = opt_int(req, "seed", i64::MIN)? {
        g.insert("seed".into(), json!(seed));
    }
    match field(req, "stop") {
        None => {}
        Some(Value::String(s)) => {
            g.insert("stopSequences".into(), json!([s]));
        }
        Some(Value::Array(items)) => {
            let stops = items
                .iter()
                .map(|s| {
                    s.as_str()
                        .ok_or_else(|| terr("`stop` entries must be strings"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if !stops.is_empty() {
                g.insert("stopSequences".into(), json!(stops));
            }
        }
        Some(_) => return Err(terr("`stop` must be a string or an array of strings")),
    }
    if let Some(fmt) = field(req, "response_format") {
        let kind =
            opt_str(fmt, "type").ok_or_else(|| terr("`response_format.type` must be a string"))?;
        match kind {
            "text" => {}
            "json_object" => {
                g.insert("responseMimeType".into(), json!("application/json"));
            }
            "json_schema" => {
                g.insert("responseMimeType".into(), json!("application/json"));
                if let Some(schema) = fmt.pointer("/json_schema/schema").filter(|s| !s.is_null()) {
                    if !schema.is_object() {
                        return Err(terr(
                            "`response_format.json_schema.schema` must be an object",
                        ));
                    }
                    g.insert("responseSchema".into(), clean_schema(schema));
                }
            }
            other => {
                return Err(terr(format!(
                    "unsupported `response_format.type` `{other}`"
                )));
            }
        }
    }
    if let Some(effort) = field(req, "reasoning_effort") {
        let effort = effort
            .as_str()
            .ok_or_else(|| terr("`reasoning_effort` must be a string"))?;
        let budget = match effort {
            "none" => 0,
            "minimal" => 512,
            "low" => 1024,
            "medium" => 8192,
            "high" => 24576,
            other => {
                return Err(terr(format!("unsupported `reasoning_effort` `{other}`")));
            }
        };
        // Thought summaries would otherwise need their own OpenAI representation; keep them off.
        g.insert(
            "thinkingConfig".into(),
            json!({ "thinkingBudget": budget, "includeThoughts": false }),
        );
    }
    Ok(g)
}

/// URL path (relative to base URL like https://generativelanguage.googleapis.com/v1beta) for the call.
/// non-stream: "models/{model}:generateContent"; stream: "models/{model}:streamGenerateContent?alt=sse"
pub fn path(upstream_model: &str, stream: bool) -> String {
    let model = upstream_model
        .strip_prefix("models/")
        .unwrap_or(upstream_model);
    // Percent-encode so a configured model id can never smuggle in `/`, `?` or `#`.
    let mut enc = String::with_capacity(model.len());
    for b in model.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            enc.push(char::from(b));
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    if stream {
        format!("models/{enc}:streamGenerateContent?alt=sse")
    } else {
        format!("models/{enc}:generateContent")
    }
}

// ---------------------------------------------------------------------------------------------
// Answers: Gemini -> OpenAI
// ---------------------------------------------------------------------------------------------

enum Piece {
    Text(String),
    Call {
        name: String,
        args: String,
        signature: Option<String>,
    },
}

/// Answer parts in order; thought summaries are dropped because OpenAI clients would show them
/// as answer text.
fn pieces(candidate: &Value) -> Result<Vec<Piece>, TranslateError> {
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
                out.push(Piece::Text(text.to_string()));
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
            out.push(Piece::Call {
                name: name.to_string(),
                args,
                signature,
            });
        }
    }
    Ok(out)
}

fn map_finish(reason: Option<&str>) -> Result<&'static str, TranslateError> {
    Ok(match reason.unwrap_or("STOP") {
        "MAX_TOKENS" => "length",
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT" => "content_filter",
        // The model botched a tool call; another provider (or a retry) can do better.
        r @ ("MALFORMED_FUNCTION_CALL" | "UNEXPECTED_TOOL_CALL") => {
            return Err(terr(format!("Gemini finished with {r}")));
        }
        _ => "stop",
    })
}

fn tool_call(id: String, name: &str, args: &str, signature: Option<&str>) -> Value {
    let mut call = json!({
        "id": id,
        "type": "function",
        "function": { "name": name, "arguments": args },
    });
    if let (Some(sig), Some(obj)) = (signature, call.as_object_mut()) {
        obj.insert(
            "extra_content".into(),
            json!({ "google": { "thought_signature": sig } }),
        );
    }
    call
}

fn u64_at(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn usage_pair(meta: &Value) -> (u64, u64) {
    let prompt = u64_at(meta, "promptTokenCount");
    // Thinking tokens are billed as output, as OpenAI's reasoning tokens are.
    let completion =
        u64_at(meta, "candidatesTokenCount").saturating_add(u64_at(meta, "thoughtsTokenCount"));
    (prompt, completion)
}

fn openai_usage(meta: &Value) -> Value {
    let (prompt, completion) = usage_pair(meta);
    let total = meta
        .get("totalTokenCount")
        .and_then(Value::as_u64)
        .unwrap_or(prompt.saturating_add(completion));
    let mut usage = json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total,
    });
    if let Some(obj) = usage.as_object_mut() {
        if let Some(cached) = meta.get("cachedContentTokenCount").and_then(Value::as_u64) {
            obj.insert(
                "prompt_tokens_details".into(),
                json!({ "cached_tokens": cached }),
            );
        }
        if let Some(thoughts) = meta.get("thoughtsTokenCount").and_then(Value::as_u64) {
            obj.insert(
                "completion_tokens_details".into(),
                json!({ "reasoning_tokens": thoughts }),
            );
        }
    }
    usage
}

fn upstream_error(err: &Value) -> TranslateError {
    let msg = opt_str(err, "message")
        .map(String::from)
        .unwrap_or_else(|| err.to_string());
    terr(format!("Gemini returned an error: {msg}"))
}

fn block_reason(body: &Value) -> Option<&str> {
    body.pointer("/promptFeedback/blockReason")
        .and_then(Value::as_str)
}

/// Translate a non-streaming Gemini response body into an OpenAI `chat.completion` object.
/// `id` and `created` are chosen by the caller; `model` is the upstream model id that served it.
/// Returns Err if the body is not a usable answer (no candidates, no text and no function call) — the caller fails over.
pub fn from_upstream(
    body: &Value,
    id: &str,
    model: &str,
    created: i64,
) -> Result<Value, TranslateError> {
    if let Some(err) = body.get("error") {
        return Err(upstream_error(err));
    }
    let candidates = body
        .get("candidates")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let mut choices = Vec::with_capacity(candidates.len().max(1));
    if candidates.is_empty() {
        if block_reason(body).is_none() {
            return Err(terr("Gemini returned no candidates"));
        }
        // A blocked prompt is a legitimate answer, and failing over would just get it blocked again.
        choices.push(json!({
            "index": 0,
            "message": { "role": "assistant", "content": "" },
            "finish_reason": "content_filter",
        }));
    }
    let mut call_counter = 0u64;
    for (pos, candidate) in candidates.iter().enumerate() {
        let index = candidate
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(pos as u64);
        let raw_finish = opt_str(candidate, "finishReason");
        let mapped = map_finish(raw_finish)?;
        let mut text = String::new();
        let mut calls = Vec::new();
        for piece in pieces(candidate)? {
            match piece {
                Piece::Text(t) => text.push_str(&t),
                Piece::Call {
                    name,
                    args,
                    signature,
                } => {
                    calls.push(tool_call(
                        format!("call_{id}_{call_counter}"),
                        &name,
                        &args,
                        signature.as_deref(),
                    ));
                    call_counter += 1;
                }
            }
        }
        if text.is_empty() && calls.is_empty() && mapped != "content_filter" {
            return Err(terr(format!(
                "Gemini answer has no text and no function call (finishReason {})",
                raw_finish.unwrap_or("<none>")
            )));
        }
        let mut message = Map::new();
        message.insert("role".into(), json!("assistant"));
        let finish = if calls.is_empty() {
            message.insert("content".into(), json!(text));
            mapped
        } else {
            let content = if text.is_empty() {
                Value::Null
            } else {
                json!(text)
            };
            message.insert("content".into(), content);
            message.insert("tool_calls".into(), Value::Array(calls));
            "tool_calls"
        };
        choices.push(json!({
            "index": index,
            "message": message,
            "finish_reason": finish,
        }));
    }
    let mut out = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
    });
    if let (Some(meta), Some(obj)) = (
        body.get("usageMetadata").filter(|m| m.is_object()),
        out.as_object_mut(),
    ) {
        obj.insert("usage".into(), openai_usage(meta));
    }
    Ok(out)
}

/// Tool-call ids and thought signatures produced while translating answers, so the runtime can
/// remember them (bounded cache) for later `lookup_signature` calls.
pub fn signatures(openai_answer_or_chunk: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Some(choices) = openai_answer_or_chunk
        .get("choices")
        .and_then(Value::as_array)
    else {
        return out;
    };
    for choice in choices {
        for key in ["message", "delta"] {
            let Some(calls) = choice
                .get(key)
                .and_then(|m| m.get("tool_calls"))
                .and_then(Value::as_array)
            else {
                continue;
            };
            for call in calls {
                let id = opt_str(call, "id");
                let sig = call
                    .pointer("/extra_content/google/thought_signature")
                    .and_then(Value::as_str);
                if let (Some(id), Some(sig)) = (id, sig) {
                    out.push((id.to_string(), sig.to_string()));
                }
            }
        }
    }
    out
}

#[derive(Debug, Clone)]
struct ChoiceState {
    index: u64,
    role_sent: bool,
    tool_calls: u64,
    finished: bool,
}

/// Upper bound on tracked choices, so a hostile upstream cannot grow state without limit.
const MAX_STREAM_CHOICES: usize = 64;

/// Stateful translator for one streamed answer: fed the `data:` payload of each SSE event that Gemini sends
/// (each is a full GenerateContentResponse JSON), returns OpenAI `chat.completion.chunk` objects to send.
#[derive(Debug, Clone)]
pub struct Stream {
    id: String,
    model: String,
    created: i64,
    choices: Vec<ChoiceState>,
    /// Stream-wide counter so tool call ids stay unique across choices.
    call_counter: u64,
    content_emitted: bool,
    /// Latest raw `usageMetadata`; Gemini repeats it (cumulatively) on many events.
    usage: Option<Value>,
    /// Last OpenAI usage sent, so a repeat after the finish chunk is not sent twice.
    usage_sent: Option<Value>,
}

impl Stream {
    pub fn new(id: &str, model: &str, created: i64) -> Self {
        Stream {
            id: id.to_string(),
            model: model.to_string(),
            created,
            choices: Vec::new(),
            call_counter: 0,
            content_emitted: false,
            usage: None,
            usage_sent: None,
        }
    }

    fn chunk(&self, choices: Vec<Value>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    fn choice_chunk(&self, index: u64, delta: Value, finish: Option<&str>) -> Value {
        self.chunk(vec![json!({
            "index": index,
            "delta": delta,
            "finish_reason": finish,
        })])
    }

    fn state_pos(&mut self, index: u64) -> Option<usize> {
        if let Some(pos) = self.choices.iter().position(|c| c.index == index) {
            return Some(pos);
        }
        if self.choices.len() >= MAX_STREAM_CHOICES {
            return None;
        }
        self.choices.push(ChoiceState {
            index,
            role_sent: false,
            tool_calls: 0,
            finished: false,
        });
        Some(self.choices.len() - 1)
    }

    /// OpenAI clients expect `role` on the first delta of each choice, and only there.
    fn with_role(&mut self, pos: usize, delta: &mut Map<String, Value>) {
        if let Some(state) = self.choices.get_mut(pos)
            && !state.role_sent
        {
            state.role_sent = true;
            delta.insert("role".into(), json!("assistant"));
        }
    }

    fn text_chunk(&mut self, pos: usize, index: u64, text: &str) -> Value {
        let mut delta = Map::new();
        self.with_role(pos, &mut delta);
        delta.insert("content".into(), json!(text));
        self.content_emitted = true;
        self.choice_chunk(index, Value::Object(delta), None)
    }

    /// Err on malformed JSON in an event.
    pub fn on_event(&mut self, data: &str) -> Result<Vec<Value>, TranslateError> {
        let data = data.trim();
        if data.is_empty() || data == "[DONE]" {
            return Ok(Vec::new());
        }
        let event: Value = serde_json::from_str(data)
            .map_err(|e| terr(format!("malformed Gemini stream event: {e}")))?;
        if !event.is_object() {
            return Err(terr("malformed Gemini stream event: not a JSON object"));
        }
        if let Some(err) = event.get("error") {
            return Err(upstream_error(err));
        }
        if let Some(meta) = event.get("usageMetadata").filter(|m| m.is_object()) {
            self.usage = Some(meta.clone());
        }

        let mut out = Vec::new();
        let mut last_finish: Option<usize> = None;
        let candidates = event
            .get("candidates")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);

        if candidates.is_empty()
            && block_reason(&event).is_some()
            && let Some(pos) = self.state_pos(0)
            && self.choices.get(pos).is_some_and(|c| !c.finished)
        {
            let mut delta = Map::new();
            self.with_role(pos, &mut delta);
            delta.insert("content".into(), json!(""));
            if let Some(state) = self.choices.get_mut(pos) {
                state.finished = true;
            }
            last_finish = Some(out.len());
            out.push(self.choice_chunk(0, Value::Object(delta), Some("content_filter")));
        }

        for (cpos, candidate) in candidates.iter().enumerate() {
            let index = candidate
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(cpos as u64);
            let Some(pos) = self.state_pos(index) else {
                continue;
            };
            if self.choices.get(pos).is_none_or(|c| c.finished) {
                continue;
            }
            let finish = opt_str(candidate, "finishReason")
                .filter(|r| !r.is_empty() && *r != "FINISH_REASON_UNSPECIFIED");
            let mapped = match finish {
                Some(r) => Some(map_finish(Some(r))?),
                None => None,
            };

            // Consecutive text parts become one delta; calls keep their position in the order.
            let mut text = String::new();
            for piece in pieces(candidate)? {
                match piece {
                    Piece::Text(t) => text.push_str(&t),
                    Piece::Call {
                        name,
                        args,
                        signature,
                    } => {
                        if !text.is_empty() {
                            out.push(self.text_chunk(pos, index, &text));
                            text.clear();
                        }
                        let call_index = self.choices.get(pos).map_or(0, |c| c.tool_calls);
                        let mut call = tool_call(
                            format!("call_{}_{}", self.id, self.call_counter),
                            &name,
                            &args,
                            signature.as_deref(),
                        );
                        if let Some(obj) = call.as_object_mut() {
                            obj.insert("index".into(), json!(call_index));
                        }
                        self.call_counter += 1;
                        if let Some(state) = self.choices.get_mut(pos) {
                            state.tool_calls += 1;
                        }
                        let mut delta = Map::new();
                        self.with_role(pos, &mut delta);
                        delta.insert("tool_calls".into(), json!([call]));
                        self.content_emitted = true;
                        out.push(self.choice_chunk(index, Value::Object(delta), None));
                    }
                }
            }
            if !text.is_empty() {
                out.push(self.text_chunk(pos, index, &text));
            }

            if let Some(mapped) = mapped {
                let had_calls = self.choices.get(pos).is_some_and(|c| c.tool_calls > 0);
                let reason = if had_calls { "tool_calls" } else { mapped };
                let mut delta = Map::new();
                // A choice that produced nothing still needs its role for strict clients.
                self.with_role(pos, &mut delta);
                if let Some(state) = self.choices.get_mut(pos) {
                    state.finished = true;
                }
                last_finish = Some(out.len());
                out.push(self.choice_chunk(index, Value::Object(delta), Some(reason)));
            }
        }

        let usage = self.usage.as_ref().map(openai_usage);
        match (last_finish, usage) {
            (Some(at), Some(usage)) => {
                if let Some(obj) = out.get_mut(at).and_then(Value::as_object_mut) {
                    obj.insert("usage".into(), usage.clone());
                }
                self.usage_sent = Some(usage);
            }
            (None, Some(usage))
                if self.finished()
                    && event.get("usageMetadata").is_some()
                    && self.usage_sent.as_ref() != Some(&usage) =>
            {
                let mut chunk = self.chunk(Vec::new());
                if let Some(obj) = chunk.as_object_mut() {
                    obj.insert("usage".into(), usage.clone());
                }
                out.push(chunk);
                self.usage_sent = Some(usage);
            }
            _ => {}
        }
        Ok(out)
    }

    /// Whether a finish reason has been seen (a stream ending without one is a failure).
    pub fn finished(&self) -> bool {
        !self.choices.is_empty() && self.choices.iter().all(|c| c.finished)
    }

    /// Whether any content (text or tool call) has been emitted.
    pub fn has_content(&self) -> bool {
        self.content_emitted
    }

    /// Usage seen so far as (prompt_tokens, completion_tokens), if Gemini reported usageMetadata.
    pub fn usage(&self) -> Option<(u64, u64)> {
        self.usage.as_ref().map(usage_pair)
    }
}

// ---------------------------------------------------------------------------------------------
// JSON Schema cleaning
// ---------------------------------------------------------------------------------------------

const MAX_SCHEMA_DEPTH: usize = 64;
/// Caps total output size: non-recursive `$ref`s that fan out can still expand exponentially.
const MAX_SCHEMA_NODES: usize = 10_000;
/// Gemini only accepts these `format` values; anything else (uri, email, ...) is a 400.
const GEMINI_FORMATS: &[&str] = &["enum", "date-time", "float", "double", "int32", "int64"];

struct SchemaCx<'a> {
    root: &'a Value,
    /// `$ref`s currently being expanded, to turn cycles into a placeholder.
    expanding: Vec<String>,
    budget: usize,
}

fn placeholder_schema() -> Value {
    json!({ "type": "object" })
}

fn is_null_schema(v: &Value) -> bool {
    match v.get("type") {
        Some(Value::String(t)) => t == "null",
        Some(Value::Array(ts)) => !ts.is_empty() && ts.iter().all(|t| t.as_str() == Some("null")),
        _ => false,
    }
}

fn enum_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl SchemaCx<'_> {
    fn clean(&mut self, node: &Value, depth: usize) -> Value {
        let Some(obj) = node.as_object() else {
            // `true` / non-schema values: "anything", which Gemini expresses as an empty schema.
            return json!({});
        };
        if depth > MAX_SCHEMA_DEPTH || self.budget == 0 {
            return placeholder_schema();
        }
        self.budget -= 1;
        if let Some(reference) = obj.get("$ref").and_then(Value::as_str) {
            let mut resolved = self.resolve_ref(reference, depth);
            let mut siblings = obj.clone();
            siblings.remove("$ref");
            if !siblings.is_empty()
                && let Value::Object(extra) = self.clean_object(&siblings, depth)
                && let Some(target) = resolved.as_object_mut()
            {
                // Siblings (typically a description) are more specific than the shared definition.
                for (k, v) in extra {
                    target.insert(k, v);
                }
            }
            return resolved;
        }
        self.clean_object(obj, depth)
    }

    fn resolve_ref(&mut self, reference: &str, depth: usize) -> Value {
        let root = self.root;
        let target = if reference == "#" {
            Some(root)
        } else {
            reference
                .strip_prefix("#/$defs/")
                .map(|n| ("$defs", n))
                .or_else(|| {
                    reference
                        .strip_prefix("#/definitions/")
                        .map(|n| ("definitions", n))
                })
                .and_then(|(section, name)| {
                    let name = name.replace("~1", "/").replace("~0", "~");
                    root.get(section).and_then(|defs| defs.get(name.as_str()))
                })
        };
        let Some(target) = target else {
            return placeholder_schema();
        };
        if self.expanding.iter().any(|r| r == reference) {
            return placeholder_schema();
        }
        self.expanding.push(reference.to_string());
        let out = self.clean(target, depth + 1);
        self.expanding.pop();
        out
    }

    fn clean_object(&mut self, obj: &Map<String, Value>, depth: usize) -> Value {
        let mut out = Map::new();
        let mut nullable = false;
        let mut enum_values: Option<Vec<String>> = None;
        let mut required: Vec<String> = Vec::new();
        let mut branches: Vec<Value> = Vec::new();
        let mut saw_null_branch = false;

        for (key, value) in obj {
            match key.as_str() {
                "type" => match value {
                    Value::String(t) if t == "null" => nullable = true,
                    Value::String(t) => {
                        out.insert("type".into(), json!(t));
                    }
                    Value::Array(types) => {
                        let names: Vec<&str> = types.iter().filter_map(Value::as_str).collect();
                        nullable |= names.contains(&"null");
                        let non_null: Vec<&str> =
                            names.into_iter().filter(|t| *t != "null").collect();
                        match non_null.as_slice() {
                            [] => {}
                            [one] => {
                                out.insert("type".into(), json!(one));
                            }
                            many => branches.extend(many.iter().map(|t| json!({ "type": t }))),
                        }
                    }
                    _ => {}
                },
                "description" | "pattern" if value.is_string() => {
                    out.insert(key.clone(), value.clone());
                }
                "format" if value.as_str().is_some_and(|f| GEMINI_FORMATS.contains(&f)) => {
                    out.insert(key.clone(), value.clone());
                }
                "nullable" => nullable |= value.as_bool() == Some(true),
                "enum" => {
                    if let Some(values) = value.as_array() {
                        nullable |= values.iter().any(Value::is_null);
                        enum_values = Some(
                            values
                                .iter()
                                .filter(|v| !v.is_null())
                                .map(enum_string)
                                .collect(),
                        );
                    }
                }
                "properties" => {
                    if let Some(props) = value.as_object() {
                        let cleaned: Map<String, Value> = props
                            .iter()
                            .map(|(name, schema)| (name.clone(), self.clean(schema, depth + 1)))
                            .collect();
                        if !cleaned.is_empty() {
                            out.insert("properties".into(), Value::Object(cleaned));
                        }
                    }
                }
                "required" => {
                    if let Some(names) = value.as_array() {
                        required.extend(names.iter().filter_map(Value::as_str).map(String::from));
                    }
                }
                "items" => match value {
                    Value::Object(_) => {
                        out.insert("items".into(), self.clean(value, depth + 1));
                    }
                    // Tuple form: Gemini has one item schema, the first is the best guess.
                    Value::Array(items) => {
                        if let Some(first) = items.first() {
                            out.insert("items".into(), self.clean(first, depth + 1));
                        }
                    }
                    _ => {}
                },
                "minItems" | "maxItems" | "minProperties" | "maxProperties" | "minLength"
                | "maxLength" | "minimum" | "maximum"
                    if value.is_number() =>
                {
                    out.insert(key.clone(), value.clone());
                }
                "example" => {
                    out.insert(key.clone(), value.clone());
                }
                "propertyOrdering"
                    if value
                        .as_array()
                        .is_some_and(|a| a.iter().all(Value::is_string)) =>
                {
                    out.insert(key.clone(), value.clone());
                }
                "anyOf" | "oneOf" => {
                    for branch in value.as_array().map(Vec::as_slice).unwrap_or(&[]) {
                        if is_null_schema(branch) {
                            saw_null_branch = true;
                        } else {
                            branches.push(self.clean(branch, depth + 1));
                        }
                    }
                }
                // Everything else ($schema, additionalProperties, title, default, x-*, if/then/else,
                // $defs, ...) is unknown to Gemini's Schema proto and would fail the request.
                _ => {}
            }
        }

        // `const` only matters when there is no `enum` already.
        if enum_values.is_none()
            && let Some(Value::String(c)) = obj.get("const")
        {
            enum_values = Some(vec![c.clone()]);
        }

        nullable |= saw_null_branch;
        match branches.len() {
            0 => {}
            1 => {
                if let Some(Value::Object(branch)) = branches.pop() {
                    for (k, v) in branch {
                        out.entry(k).or_insert(v);
                    }
                }
            }
            _ => {
                out.insert("anyOf".into(), Value::Array(branches));
            }
        }

        if let Some(all_of) = obj.get("allOf").and_then(Value::as_array) {
            for branch in all_of {
                let Value::Object(branch) = self.clean(branch, depth + 1) else {
                    continue;
                };
                for (k, v) in branch {
                    match (k.as_str(), v) {
                        ("properties", Value::Object(props)) => {
                            let entry = out
                                .entry("properties")
                                .or_insert_with(|| Value::Object(Map::new()));
                            if let Some(existing) = entry.as_object_mut() {
                                for (name, schema) in props {
                                    existing.entry(name).or_insert(schema);
                                }
                            }
                        }
                        ("required", Value::Array(names)) => {
                            required
                                .extend(names.iter().filter_map(Value::as_str).map(String::from));
                        }
                        (_, v) => {
                            out.entry(k).or_insert(v);
                        }
                    }
                }
            }
        }

        if let Some(values) = enum_values
            && !values.is_empty()
        {
            out.insert("type".into(), json!("string"));
            out.insert("enum".into(), json!(values));
        }
        if nullable {
            out.insert("nullable".into(), json!(true));
        }
        // Gemini rejects `required` entries that name no declared property.
        if let Some(props) = out.get("properties").and_then(Value::as_object) {
            let mut kept: Vec<String> = Vec::new();
            for name in required {
                if props.contains_key(&name) && !kept.contains(&name) {
                    kept.push(name);
                }
            }
            if !kept.is_empty() {
                out.insert("required".into(), json!(kept));
            }
        } else {
            out.remove("required");
        }
        Value::Object(out)
    }
}

/// Clean a JSON Schema of what Gemini rejects (see below). Pure.
///
/// Gemini's `Schema` is an OpenAPI 3.0 subset, so this keeps only the fields it knows
/// (an allow-list is safer than chasing every JSON Schema keyword), inlines local `$ref`s,
/// turns `null` unions into `nullable`, and makes `enum` values strings.
pub fn clean_schema(schema: &Value) -> Value {
    let mut cx = SchemaCx {
        root: schema,
        // The root is already being expanded, so `$ref: "#"` is a cycle from the start.
        expanding: vec!["#".to_string()],
        budget: MAX_SCHEMA_NODES,
    };
    cx.clean(schema, 0)
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Parses protobuf/Go-style durations: "17s", "1.5s", "250ms", "1m30s", or a bare number of seconds.
fn parse_duration(s: &str) -> Option<f64> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then_some(secs);
    }
    let mut total = 0.0;
    let mut rest = s;
    let mut any = false;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest.get(..num_len)?.parse().ok()?;
        rest = rest.get(num_len..)?;
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = rest.get(..unit_len)?;
        rest = rest.get(unit_len..)?;
        let scale = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += number * scale;
        any = true;
    }
    (any && total.is_finite()).then_some(total)
}

fn parse_duration_value(v: &Value) -> Option<f64> {
    match v {
        Value::String(s) => parse_duration(s),
        Value::Number(n) => n.as_f64().filter(|f| f.is_finite() && *f >= 0.0),
        // Protobuf `Duration` as an object, seen from some client libraries.
        Value::Object(o) => {
            let secs = o.get("seconds").and_then(|s| match s {
                Value::String(s) => s.parse::<f64>().ok(),
                other => other.as_f64(),
            })?;
            let nanos = o.get("nanos").and_then(Value::as_f64).unwrap_or(0.0);
            let total = secs + nanos / 1e9;
            (total.is_finite() && total >= 0.0).then_some(total)
        }
        _ => None,
    }
}

/// Pull a retry delay in seconds out of a Gemini error body (error.details[].retryDelay like "17s" or "1.5s").
pub fn retry_delay_secs(error_body: &Value) -> Option<f64> {
    // Streaming endpoints without `alt=sse` wrap the error in a one-element array.
    let body = match error_body {
        Value::Array(items) => items.first()?,
        other => other,
    };
    let err = body.get("error").unwrap_or(body);
    if let Some(details) = err.get("details").and_then(Value::as_array) {
        for detail in details {
            let is_retry_info = opt_str(detail, "@type").is_some_and(|t| t.ends_with("RetryInfo"));
            if is_retry_info
                && let Some(secs) = detail.get("retryDelay").and_then(parse_duration_value)
            {
                return Some(secs);
            }
        }
    }
    let message = opt_str(err, "message")?;
    // ASCII lowercasing keeps byte offsets valid for slicing the original.
    let lower = message.to_ascii_lowercase();
    let at = lower.find("retry in ")? + "retry in ".len();
    let token = message.get(at..)?.split_whitespace().next()?;
    parse_duration(token.trim_end_matches(['.', ',', ';', ')']))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_sig(_: &str) -> Option<String> {
        None
    }

    fn up(req: Value) -> Value {
        match to_upstream(&req, &no_sig) {
            Ok(v) => v,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn up_err(req: Value) -> String {
        match to_upstream(&req, &no_sig) {
            Ok(v) => panic!("expected an error, got {v}"),
            Err(e) => e.0,
        }
    }

    fn down(body: Value) -> Value {
        match from_upstream(&body, "chatcmpl-1", "gemini-2.5-flash", 1700) {
            Ok(v) => v,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn feed(stream: &mut Stream, event: Value) -> Vec<Value> {
        match stream.on_event(&event.to_string()) {
            Ok(v) => v,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    #[test]
    fn system_and_developer_messages_become_system_instruction() {
        let out = up(json!({
            "model": "x",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
                {"role": "user", "content": "Hi"},
            ]
        }));
        assert_eq!(
            out["systemInstruction"],
            json!({"parts": [{"text": "You are terse.\n\nAnswer in French."}]})
        );
        assert_eq!(
            out["contents"],
            json!([{"role": "user", "parts": [{"text": "Hi"}]}])
        );
    }

    #[test]
    fn system_only_conversation_becomes_user_turn() {
        let out = up(json!({"messages": [{"role": "system", "content": "Say hi"}]}));
        assert_eq!(
            out["contents"],
            json!([{"role": "user", "parts": [{"text": "Say hi"}]}])
        );
        assert!(out.get("systemInstruction").is_none());
        assert!(up_err(json!({"messages": []})).contains("messages"));
    }

    #[test]
    fn roles_map_and_same_role_turns_merge() {
        let out = up(json!({
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "user", "content": "b"},
                {"role": "assistant", "content": "c"},
                {"role": "assistant", "content": null},
                {"role": "user", "content": "d"},
            ]
        }));
        assert_eq!(
            out["contents"],
            json!([
                {"role": "user", "parts": [{"text": "a"}, {"text": "b"}]},
                {"role": "model", "parts": [{"text": "c"}]},
                {"role": "user", "parts": [{"text": "d"}]},
            ])
        );
        assert!(
            up_err(json!({"messages": [{"role": "wizard", "content": "x"}]})).contains("wizard")
        );
    }

    #[test]
    fn multi_part_content_with_images() {
        let out = up(json!({
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp?size=large"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/photo"}},
            ]}]
        }));
        assert_eq!(
            out["contents"][0]["parts"],
            json!([
                {"text": "What is this?"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cat.webp?size=large"}},
                {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/photo"}},
            ])
        );
    }

    #[test]
    fn bad_content_parts_are_errors() {
        let e = up_err(
            json!({"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {}}]}]}),
        );
        assert!(e.contains("video_url"), "{e}");
        let e = up_err(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png,rawdata"}}]}]}));
        assert!(e.contains("base64"), "{e}");
        let e = up_err(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]}));
        assert!(e.contains("scheme"), "{e}");
        assert!(up_err(json!({"messages": [{"role": "user", "content": 5}]})).contains("content"));
    }

    #[test]
    fn tool_declarations_with_cleaned_schema() {
        let out = up(json!({
            "messages": [{"role": "user", "content": "weather?"}],
            "tools": [
                {"type": "function", "function": {
                    "name": "get_weather",
                    "description": "Weather for a place",
                    "parameters": {
                        "$schema": "http://json-schema.org/draft-07/schema#",
                        "type": "object",
                        "title": "Args",
                        "additionalProperties": false,
                        "properties": {
                            "place": {"$ref": "#/$defs/Place", "description": "Where"},
                            "unit": {"type": ["string", "null"], "enum": ["c", "f", null], "default": "c"},
                            "days": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]},
                            "kind": {"const": "forecast"},
                            "flag": {"const": true},
                        },
                        "required": ["place", "ghost"],
                        "$defs": {"Place": {
                            "type": "object",
                            "additionalProperties": false,
                            "properties": {"city": {"type": "string", "x-order": 1}},
                            "required": ["city"],
                        }},
                    }
                }},
                {"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}},
                {"type": "function", "function": {"name": "pong"}},
            ]
        }));
        assert_eq!(
            out["tools"],
            json!([{"functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather for a place",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "place": {
                                "type": "object",
                                "description": "Where",
                                "properties": {"city": {"type": "string"}},
                                "required": ["city"],
                            },
                            "unit": {"type": "string", "enum": ["c", "f"], "nullable": true},
                            "days": {"type": "integer", "minimum": 1, "nullable": true},
                            "kind": {"type": "string", "enum": ["forecast"]},
                            "flag": {},
                        },
                        "required": ["place"],
                    }
                },
                {"name": "ping"},
                {"name": "pong"},
            ]}])
        );
        let e = up_err(json!({"messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "web_search"}]}));
        assert!(e.contains("web_search"), "{e}");
    }

    #[test]
    fn tool_choice_forms() {
        let base = json!({"messages": [{"role": "user", "content": "x"}]});
        let with = |choice: Value| {
            let mut req = base.clone();
            req["tool_choice"] = choice;
            up(req)
        };
        assert_eq!(
            with(json!("none"))["toolConfig"],
            json!({"functionCallingConfig": {"mode": "NONE"}})
        );
        assert_eq!(
            with(json!("auto"))["toolConfig"],
            json!({"functionCallingConfig": {"mode": "AUTO"}})
        );
        assert_eq!(
            with(json!("required"))["toolConfig"],
            json!({"functionCallingConfig": {"mode": "ANY"}})
        );
        assert_eq!(
            with(json!({"type": "function", "function": {"name": "get_weather"}}))["toolConfig"],
            json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}})
        );
        assert!(with(Value::Null).get("toolConfig").is_none());
        let mut bad = base.clone();
        bad["tool_choice"] = json!("sometimes");
        assert!(up_err(bad).contains("tool_choice"));
    }

    #[test]
    fn tool_results_pair_with_calls_and_merge() {
        let out = up(json!({
            "messages": [
                {"role": "user", "content": "weather in Paris and Rome?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "c2", "type": "function", "function": {"name": "get_time", "arguments": ""}},
                ]},
                {"role": "tool", "tool_call_id": "c1", "content": "{\"temp\": 21}"},
                {"role": "tool", "tool_call_id": "c2", "content": "noon"},
                {"role": "tool", "tool_call_id": "zzz", "name": "fallback_fn", "content": "[1,2]"},
            ]
        }));
        assert_eq!(
            out["contents"],
            json!([
                {"role": "user", "parts": [{"text": "weather in Paris and Rome?"}]},
                {"role": "model", "parts": [
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                    {"functionCall": {"name": "get_time", "args": {}}},
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
                    {"functionResponse": {"name": "get_time", "response": {"content": "noon"}}},
                    {"functionResponse": {"name": "fallback_fn", "response": {"content": "[1,2]"}}},
                ]},
            ])
        );
    }

    #[test]
    fn unpaired_tool_result_is_an_error() {
        let e = up_err(json!({"messages": [
            {"role": "user", "content": "x"},
            {"role": "tool", "tool_call_id": "call_missing", "content": "42"},
        ]}));
        assert!(e.contains("call_missing"), "{e}");
    }

    #[test]
    fn invalid_tool_call_arguments_name_the_call() {
        let e = up_err(json!({"messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [
                {"id": "c9", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]},
        ]}));
        assert!(e.contains("c9") && e.contains("`f`"), "{e}");
    }

    #[test]
    fn thought_signature_round_trip() {
        let answer = down(json!({
            "candidates": [{"content": {"role": "model", "parts": [
                {"functionCall": {"name": "lookup", "args": {"q": "rust"}}, "thoughtSignature": "SIG-A"},
                {"functionCall": {"name": "lookup", "args": {"q": "go"}}},
            ]}, "finishReason": "STOP"}]
        }));
        let calls = &answer["choices"][0]["message"]["tool_calls"];
        assert_eq!(
            calls[0]["extra_content"],
            json!({"google": {"thought_signature": "SIG-A"}})
        );
        assert!(calls[1].get("extra_content").is_none());
        assert_eq!(
            signatures(&answer),
            vec![("call_chatcmpl-1_0".to_string(), "SIG-A".to_string())]
        );

        // The client replays the assistant message verbatim.
        let replay = json!({"messages": [
            {"role": "user", "content": "search"},
            answer["choices"][0]["message"].clone(),
            {"role": "tool", "tool_call_id": "call_chatcmpl-1_0", "content": "r1"},
            {"role": "tool", "tool_call_id": "call_chatcmpl-1_1", "content": "r2"},
        ]});
        let out = up(replay);
        let parts = &out["contents"][1]["parts"];
        assert_eq!(parts[0]["thoughtSignature"], json!("SIG-A"));
        assert_eq!(
            parts[0]["functionCall"],
            json!({"name": "lookup", "args": {"q": "rust"}})
        );
        assert!(parts[1].get("thoughtSignature").is_none());
        assert_eq!(
            out["contents"][2]["parts"][1]["functionResponse"]["name"],
            json!("lookup")
        );

        // A client that strips unknown fields: the signature comes from the runtime's cache.
        let stripped = json!({"messages": [
            {"role": "user", "content": "search"},
            {"role": "assistant", "tool_calls": [
                {"id": "call_chatcmpl-1_0", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
        ]});
        let cache: HashMap<String, String> = signatures(&answer).into_iter().collect();
        let lookup = |id: &str| cache.get(id).cloned();
        let out = match to_upstream(&stripped, &lookup) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            out["contents"][1]["parts"][0]["thoughtSignature"],
            json!("SIG-A")
        );
    }

    #[test]
    fn reasoning_effort_maps_to_thinking_budget() {
        for (effort, budget) in [
            ("none", 0),
            ("minimal", 512),
            ("low", 1024),
            ("medium", 8192),
            ("high", 24576),
        ] {
            let out = up(
                json!({"messages": [{"role": "user", "content": "x"}], "reasoning_effort": effort}),
            );
            assert_eq!(
                out["generationConfig"]["thinkingConfig"],
                json!({"thinkingBudget": budget, "includeThoughts": false}),
                "{effort}"
            );
        }
        assert!(
            up_err(
                json!({"messages": [{"role": "user", "content": "x"}], "reasoning_effort": "max"})
            )
            .contains("reasoning_effort")
        );
    }

    #[test]
    fn response_format_variants() {
        let out = up(
            json!({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}}),
        );
        assert_eq!(
            out["generationConfig"],
            json!({"responseMimeType": "application/json"})
        );
        let out = up(
            json!({"messages": [{"role": "user", "content": "x"}], "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "r", "strict": true, "schema": {
                "type": "object", "additionalProperties": false,
                "properties": {"n": {"type": "integer"}}, "required": ["n"]}}}}),
        );
        assert_eq!(
            out["generationConfig"],
            json!({"responseMimeType": "application/json", "responseSchema": {
                "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}})
        );
        let out = up(
            json!({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "text"}}),
        );
        assert!(out.get("generationConfig").is_none());
    }

    #[test]
    fn generation_config_fields_and_type_errors() {
        let out = up(json!({
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 100, "temperature": 0.5, "top_p": 0.9, "top_k": 40, "stop": "END",
            "n": 2, "seed": 7, "presence_penalty": 0.1, "frequency_penalty": -0.2,
            "stream_options": {"include_usage": true}, "user": "u", "metadata": {"a": 1},
            "parallel_tool_calls": false,
        }));
        assert_eq!(
            out["generationConfig"],
            json!({"maxOutputTokens": 100, "temperature": 0.5, "topP": 0.9, "topK": 40,
                   "stopSequences": ["END"], "candidateCount": 2, "seed": 7,
                   "presencePenalty": 0.1, "frequencyPenalty": -0.2})
        );
        let out = up(json!({"messages": [{"role": "user", "content": "x"}],
            "max_tokens": 10, "max_completion_tokens": 20, "stop": ["a", "b"]}));
        assert_eq!(
            out["generationConfig"],
            json!({"maxOutputTokens": 20, "stopSequences": ["a", "b"]})
        );

        assert!(
            up_err(json!({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}))
                .contains("temperature")
        );
        assert!(up_err(json!({"messages": "hello"})).contains("messages"));
        assert!(
            up_err(json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}))
                .contains("max_tokens")
        );
        assert!(
            up_err(json!({"messages": [{"role": "user", "content": "x"}], "stop": [1]}))
                .contains("stop")
        );
        assert!(
            up_err(json!({"messages": [{"role": "user", "content": "x"}], "tools": {}}))
                .contains("tools")
        );
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
        assert!(from_upstream(&body("MALFORMED_FUNCTION_CALL"), "i", "m", 0).is_err());
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
        assert!(from_upstream(&json!({}), "i", "m", 0).is_err());
        assert!(from_upstream(&json!({"candidates": []}), "i", "m", 0).is_err());
        assert!(
            from_upstream(
                &json!({"candidates": [{"content": {"parts": []}, "finishReason": "STOP"}]}),
                "i",
                "m",
                0
            )
            .is_err()
        );
        assert!(from_upstream(&json!({"candidates": [{"content": {"parts": [{"text": "x", "thought": true}]}, "finishReason": "MAX_TOKENS"}]}), "i", "m", 0).is_err());
        assert!(
            from_upstream(
                &json!({"error": {"code": 500, "message": "boom"}}),
                "i",
                "m",
                0
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

        let mut s = Stream::new("s", "m", 1);
        let chunks = feed(
            &mut s,
            json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}),
        );
        assert_eq!(chunks.len(), 1);
        assert_eq!(
            chunks[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        assert_eq!(
            chunks[0]["choices"][0]["finish_reason"],
            json!("content_filter")
        );
        assert!(s.finished());
        assert!(!s.has_content());
    }

    #[test]
    fn streamed_text_then_two_calls_then_finish_and_usage() {
        let mut s = Stream::new("chatcmpl-s", "gemini-2.5-pro", 42);
        assert!(!s.finished() && !s.has_content() && s.usage().is_none());

        let c = feed(
            &mut s,
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Let me "}]}}],
            "usageMetadata": {"promptTokenCount": 9}}),
        );
        assert_eq!(
            c,
            vec![
                json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 42, "model": "gemini-2.5-pro",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Let me "}, "finish_reason": null}]})
            ]
        );
        assert!(s.has_content());

        let c = feed(
            &mut s,
            json!({"candidates": [{"content": {"parts": [{"text": "check."}]}}]}),
        );
        assert_eq!(c[0]["choices"][0]["delta"], json!({"content": "check."}));

        let c = feed(
            &mut s,
            json!({"candidates": [{"content": {"parts": [
            {"functionCall": {"name": "a", "args": {"x": 1}}, "thoughtSignature": "SIG"}]}}]}),
        );
        assert_eq!(
            c[0]["choices"][0]["delta"],
            json!({"tool_calls": [{"index": 0, "id": "call_chatcmpl-s_0", "type": "function",
                "function": {"name": "a", "arguments": "{\"x\":1}"},
                "extra_content": {"google": {"thought_signature": "SIG"}}}]})
        );
        assert_eq!(
            signatures(&c[0]),
            vec![("call_chatcmpl-s_0".to_string(), "SIG".to_string())]
        );

        let c = feed(
            &mut s,
            json!({"candidates": [{"content": {"parts": [
            {"functionCall": {"name": "b"}}]}}]}),
        );
        assert_eq!(
            c[0]["choices"][0]["delta"],
            json!({"tool_calls": [{"index": 1, "id": "call_chatcmpl-s_1", "type": "function",
                "function": {"name": "b", "arguments": "{}"}}]})
        );
        assert!(!s.finished());

        let c = feed(
            &mut s,
            json!({"candidates": [{"content": {"parts": [{"text": ""}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 6, "totalTokenCount": 15}}),
        );
        assert_eq!(
            c,
            vec![
                json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 42, "model": "gemini-2.5-pro",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15}})
            ]
        );
        assert!(s.finished());
        assert_eq!(s.usage(), Some((9, 6)));

        // Same usage repeated: nothing new to say.
        assert!(feed(&mut s, json!({"usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 6, "totalTokenCount": 15}})).is_empty());
    }

    #[test]
    fn stream_usage_after_finish_gets_its_own_chunk() {
        let mut s = Stream::new("id", "m", 0);
        let c = feed(
            &mut s,
            json!({"candidates": [{"content": {"parts": [{"text": "hi"}, {"text": " there"}]}, "finishReason": "MAX_TOKENS"}]}),
        );
        assert_eq!(c.len(), 2);
        assert_eq!(
            c[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": "hi there"})
        );
        assert_eq!(c[1]["choices"][0]["finish_reason"], json!("length"));
        assert!(c[1].get("usage").is_none());
        let c = feed(
            &mut s,
            json!({"usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 3, "totalTokenCount": 5}}),
        );
        assert_eq!(
            c,
            vec![
                json!({"id": "id", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [],
                "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}})
            ]
        );
    }

    #[test]
    fn stream_errors() {
        let mut s = Stream::new("id", "m", 0);
        assert!(s.on_event("{not json").is_err());
        assert!(s.on_event("[1,2]").is_err());
        assert!(
            s.on_event(r#"{"error": {"code": 429, "message": "quota"}}"#)
                .is_err()
        );
        assert!(
            s.on_event(r#"{"candidates": [{"finishReason": "MALFORMED_FUNCTION_CALL"}]}"#)
                .is_err()
        );
        assert_eq!(s.on_event("  "), Ok(vec![]));
        // Finishing with no content still announces the role.
        let c = feed(&mut s, json!({"candidates": [{"finishReason": "STOP"}]}));
        assert_eq!(c[0]["choices"][0]["delta"], json!({"role": "assistant"}));
        assert!(s.finished() && !s.has_content());
    }

    #[test]
    fn schema_cycles_depth_and_enums() {
        let recursive = json!({
            "type": "object",
            "properties": {"root": {"$ref": "#/definitions/Node"}, "me": {"$ref": "#"}, "ext": {"$ref": "http://x/y"}},
            "definitions": {"Node": {"type": "object", "properties": {
                "value": {"type": "integer", "exclusiveMinimum": 0},
                "children": {"type": "array", "items": {"$ref": "#/definitions/Node"}},
            }}},
        });
        assert_eq!(
            clean_schema(&recursive),
            json!({"type": "object", "properties": {
                "root": {"type": "object", "properties": {
                    "value": {"type": "integer"},
                    "children": {"type": "array", "items": {"type": "object"}},
                }},
                "me": {"type": "object"},
                "ext": {"type": "object"},
            }})
        );

        let mut deep = json!({"type": "string"});
        for _ in 0..200 {
            deep = json!({"type": "array", "items": deep});
        }
        let cleaned = clean_schema(&deep);
        let mut depth = 0;
        let mut node = &cleaned;
        while let Some(next) = node.get("items") {
            node = next;
            depth += 1;
        }
        assert!(depth <= MAX_SCHEMA_DEPTH + 1, "{depth}");

        assert_eq!(
            clean_schema(&json!({"type": "integer", "enum": [1, 2, 3], "format": "int32"})),
            json!({"type": "string", "enum": ["1", "2", "3"], "format": "int32"})
        );
        assert_eq!(
            clean_schema(
                &json!({"oneOf": [{"type": "string"}, {"type": "number"}], "x-foo": 1, "not": {}})
            ),
            json!({"anyOf": [{"type": "string"}, {"type": "number"}]})
        );
        assert_eq!(
            clean_schema(&json!({"type": ["string", "integer", "null"]})),
            json!({"anyOf": [{"type": "string"}, {"type": "integer"}], "nullable": true})
        );
        assert_eq!(
            clean_schema(
                &json!({"allOf": [{"$ref": "#/$defs/A"}], "description": "d",
                "$defs": {"A": {"type": "object", "properties": {"a": {"type": "string", "format": "uri"}}}}})
            ),
            json!({"description": "d", "type": "object", "properties": {"a": {"type": "string"}}})
        );

        // Fan-out of non-recursive refs must not explode.
        let mut defs = Map::new();
        for i in 0..40 {
            defs.insert(format!("D{i}"), json!({"type": "object", "properties": {
                "l": {"$ref": format!("#/$defs/D{}", i + 1)}, "r": {"$ref": format!("#/$defs/D{}", i + 1)}}}));
        }
        let fan = json!({"$ref": "#/$defs/D0", "$defs": defs});
        let cleaned = clean_schema(&fan);
        assert!(cleaned.to_string().len() < 2_000_000);
    }

    #[test]
    fn retry_delays() {
        let body = json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Quota exceeded", "details": [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"},
        ]}});
        assert_eq!(retry_delay_secs(&body), Some(17.0));
        let body = json!({"error": {"details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}]}});
        assert_eq!(retry_delay_secs(&body), Some(1.5));
        let body = json!({"error": {"details": [{"@type": "x.RetryInfo", "retryDelay": "1m30s"}]}});
        assert_eq!(retry_delay_secs(&body), Some(90.0));
        let body = json!({"error": {"message": "You exceeded your quota. Please retry in 17.5s.", "details": []}});
        assert_eq!(retry_delay_secs(&body), Some(17.5));
        let body = json!([{"error": {"details": [{"@type": "google.rpc.RetryInfo", "retryDelay": "250ms"}]}}]);
        assert_eq!(retry_delay_secs(&body), Some(0.25));
        assert_eq!(
            retry_delay_secs(&json!({"error": {"message": "nope"}})),
            None
        );
        assert_eq!(
            retry_delay_secs(&json!({"error": {"message": "retry in soon"}})),
            None
        );
    }

    #[test]
    fn paths() {
        assert_eq!(
            path("gemini-2.5-flash", false),
            "models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(
            path("models/gemini-2.5-pro", true),
            "models/gemini-2.5-pro:streamGenerateContent?alt=sse"
        );
        assert_eq!(path("a/b?c", false), "models/a%2Fb%3Fc:generateContent");
    }

    #[test]
    fn never_panics_on_odd_values() {
        let odd = vec![
            Value::Null,
            json!(0),
            json!(-1.5),
            json!(u64::MAX),
            json!("str"),
            json!(true),
            json!([]),
            json!([[[[null]]]]),
            json!({}),
            json!({"messages": null}),
            json!({"messages": [null, 1, "x", [], {}]}),
            json!({"messages": [{"role": 5}]}),
            json!({"messages": [{"role": "user", "content": [null, 1, {"type": 3}, {"type": "image_url"}, {"type": "image_url", "image_url": 7}]}]}),
            json!({"messages": [{"role": "assistant", "tool_calls": [null, {"function": 1}, {"function": {"name": "f", "arguments": 3}}]}]}),
            json!({"messages": [{"role": "tool", "content": {"a": 1}}]}),
            json!({"messages": [{"role": "user", "content": "x"}], "tools": [null, {"function": {"name": "f", "parameters": [1]}}]}),
            json!({"messages": [{"role": "user", "content": "x"}], "tool_choice": {"function": []}, "stop": {}, "n": 0, "seed": 1.5}),
            json!({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema", "json_schema": 3}}),
            json!({"candidates": null, "promptFeedback": 1}),
            json!({"candidates": [null, 1, {"content": 1}, {"content": {"parts": [null, {"functionCall": 1}, {"text": 5}]}}]}),
            json!({"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": [1]}}]}, "finishReason": 9, "index": "x"}]}),
            json!({"candidates": [{"index": u64::MAX, "content": {"parts": [{"text": "x"}]}}], "usageMetadata": {"promptTokenCount": u64::MAX, "candidatesTokenCount": u64::MAX, "thoughtsTokenCount": u64::MAX}}),
            json!({"choices": [null, {"message": {"tool_calls": [null, {"id": 1}]}}, {"delta": {"tool_calls": 3}}]}),
            json!({"error": null}),
            json!({"error": {"details": [null, {"@type": 1}, {"@type": "RetryInfo", "retryDelay": {"seconds": "x"}}, {"@type": "RetryInfo", "retryDelay": "-5s"}], "message": 5}}),
            json!({"type": ["null"], "properties": 1, "items": [], "anyOf": 3, "allOf": [1, {"$ref": 5}], "enum": {}, "required": "x", "$ref": "#/$defs/"}),
            json!({"$defs": {"A": {"$ref": "#/$defs/B"}, "B": {"$ref": "#/$defs/A"}}, "$ref": "#/$defs/A"}),
        ];
        let lookup = |_: &str| Some("sig".to_string());
        for v in &odd {
            let _ = to_upstream(v, &lookup);
            let _ = from_upstream(v, "id", "m", 0);
            let _ = signatures(v);
            let _ = clean_schema(v);
            let _ = retry_delay_secs(v);
            let mut s = Stream::new("id", "m", 0);
            let _ = s.on_event(&v.to_string());
            let _ = s.on_event(&v.to_string());
            let _ = (s.finished(), s.has_content(), s.usage());
        }
        for data in [
            "",
            "data: {}",
            "\u{0}",
            "{\"candidates\":",
            "null",
            "[DONE]",
            "9e999",
        ] {
            let _ = Stream::new("", "", i64::MIN).on_event(data);
        }
        for d in [
            "",
            "s",
            "1",
            "1.2.3s",
            "5x",
            "-1s",
            "99999999999999999999999999999h",
            "µs",
            "1µs",
        ] {
            let _ = parse_duration(d);
        }
        let _ = path("", true);
        let _ = path("models/ü/..", false);
    }
}
