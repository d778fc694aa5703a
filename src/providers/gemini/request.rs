//! Requests: a canonical (OpenAI-chat-shaped) body into Gemini's `generateContent` body.

use serde_json::{Map, Value, json};
use std::collections::HashMap;

use super::schema::clean_schema;
use super::{TranslateError, field, opt_f64, opt_int, opt_str, terr};

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
}
