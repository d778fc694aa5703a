//! The canonical request: the client's top-level fields as their JSON text, checked once, with
//! the facts routing needs.
//!
//! Fields stay JSON text (`RawValue`): a request passing through to an OpenAI-compatible upstream
//! is never built into a tree of values, so its memory stays near its size however many
//! messages it holds, and it leaves as it came (only the fields a vendor's quirks touch are
//! parsed and rewritten). Checking walks the messages one at a time.

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::hash::{DefaultHasher, Hash, Hasher};

/// A validated request.
#[derive(Debug, Clone)]
pub struct Request {
    /// The body's top-level fields in the client's order, in the OpenAI chat-completions schema.
    fields: Vec<(String, Box<RawValue>)>,
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
    /// Choices asked for (`n`), when more than one.
    pub choices: Option<u64>,
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

impl Request {
    /// Parse a JSON body and check it; the error names the field at fault.
    pub fn parse(bytes: &[u8]) -> Result<Request, String> {
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            return Err(match serde_json::from_slice::<de::IgnoredAny>(bytes) {
                Ok(_) => "the request body must be a JSON object with `messages`".into(),
                Err(e) => not_json(&e),
            });
        }
        let Fields(fields) = serde_json::from_slice(bytes).map_err(|e| not_json(&e))?;
        Self::new(fields)
    }

    /// Check top-level fields (name, JSON text) and gather their facts.
    pub fn new(fields: Vec<(String, Box<RawValue>)>) -> Result<Request, String> {
        let facts = check(&fields)?;
        Ok(Request { fields, facts })
    }

    /// A request built as a tree of values (by a surface translating another dialect).
    pub fn from_map(body: Map<String, Value>) -> Result<Request, String> {
        let mut fields = Vec::with_capacity(body.len());
        for (k, v) in body {
            let raw = serde_json::value::to_raw_value(&v).map_err(|e| e.to_string())?;
            fields.push((k, raw));
        }
        Self::new(fields)
    }

    /// The top-level fields, in order.
    pub fn fields(&self) -> &[(String, Box<RawValue>)] {
        &self.fields
    }

    /// One field's JSON text (`null` counts as absent).
    pub fn raw(&self, key: &str) -> Option<&RawValue> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
            .filter(|v| v.get() != "null")
    }

    /// One field, parsed.
    pub fn get(&self, key: &str) -> Option<Value> {
        self.raw(key)
            .and_then(|r| serde_json::from_str(r.get()).ok())
    }

    /// The whole body as a tree of values (for dialects that translate it).
    pub fn to_map(&self) -> Map<String, Value> {
        self.fields
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), serde_json::from_str(v.get()).ok()?)))
            .collect()
    }
}

fn not_json(e: &serde_json::Error) -> String {
    format!("the request body is not valid JSON ({e}); send a JSON object with `messages`")
}

/// The top-level object as (name, JSON text) pairs, in order.
struct Fields(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                    out.push(entry);
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(V)
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

/// The JSON type of a value's text, for error messages.
fn type_name(raw: &RawValue) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        Some(b'"') => "a string",
        Some(b'[') => "an array",
        Some(b'{') => "an object",
        _ => "a number",
    }
}

fn wrong(field: &str, want: &str, got: &RawValue) -> String {
    format!("`{field}` must be {want}, got {}", type_name(got))
}

fn is(raw: &RawValue, first: u8) -> bool {
    raw.get().as_bytes().first() == Some(&first)
}

/// A string value, unescaped (borrowed when it has no escapes).
fn string(raw: &RawValue) -> Option<Cow<'_, str>> {
    if !is(raw, b'"') {
        return None;
    }
    serde_json::from_str::<Cow<str>>(raw.get()).ok()
}

fn parse<'a, T: Deserialize<'a>>(raw: &'a RawValue) -> Option<T> {
    serde_json::from_str(raw.get()).ok()
}

/// The elements of an array value, as JSON text.
fn elements(raw: &RawValue) -> Option<Vec<&RawValue>> {
    if !is(raw, b'[') {
        return None;
    }
    parse(raw)
}

/// A message, read without building anything: each field stays JSON text.
#[derive(serde::Deserialize)]
struct Msg<'a> {
    #[serde(borrow, default)]
    role: Option<&'a RawValue>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_calls: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_call_id: Option<&'a RawValue>,
}

/// An object read for a few of its fields.
#[derive(serde::Deserialize)]
struct Part<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
    #[serde(borrow, default)]
    image_url: Option<&'a RawValue>,
    #[serde(borrow, default)]
    function: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    arguments: Option<&'a RawValue>,
}

fn check(fields: &[(String, Box<RawValue>)]) -> Result<Facts, String> {
    // The last of a repeated field counts, as in a JSON object read into a map.
    let get = |key: &str| {
        fields
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
            .filter(|v| v.get() != "null")
    };
    let mut f = Facts::default();
    if let Some(m) = get("model") {
        let s = string(m).ok_or_else(|| wrong("model", "a string", m))?;
        if !s.is_empty() && s != "auto" {
            f.model = Some(s.into_owned());
        }
    }
    if let Some(v) = get("stream") {
        f.stream = parse::<bool>(v).ok_or_else(|| wrong("stream", "a boolean", v))?;
    }
    if let Some(v) = get("stream_options") {
        let o: Map<String, Value> =
            parse(v).ok_or_else(|| wrong("stream_options", "an object", v))?;
        if let Some(u) = o.get("include_usage").filter(|u| !u.is_null()) {
            f.include_usage = u.as_bool().ok_or_else(|| {
                format!("`stream_options.include_usage` must be a boolean, got {u}")
            })?;
        }
    }
    // Both are checked; `max_completion_tokens` (the newer name) wins when both are given.
    for key in ["max_tokens", "max_completion_tokens"] {
        if let Some(v) = get(key) {
            let n = parse::<u64>(v).ok_or_else(|| wrong(key, "a non-negative integer", v))?;
            f.max_tokens = Some(n);
        }
    }
    for key in [
        "temperature",
        "top_p",
        "presence_penalty",
        "frequency_penalty",
    ] {
        if let Some(v) = get(key) {
            if parse::<f64>(v).is_none() {
                return Err(wrong(key, "a number", v));
            }
        }
    }
    if let Some(v) = get("n") {
        let n = parse::<u64>(v)
            .filter(|n| *n > 0)
            .ok_or_else(|| wrong("n", "a positive integer", v))?;
        f.choices = (n > 1).then_some(n);
    }
    if let Some(v) = get("stop") {
        let ok = is(v, b'"') || parse::<Vec<String>>(v).is_some();
        if !ok {
            return Err(wrong("stop", "a string or an array of strings", v));
        }
    }
    let mut chars: u64 = 0;
    if let Some(v) = get("tools") {
        let tools = elements(v).ok_or_else(|| wrong("tools", "an array", v))?;
        for (i, t) in tools.iter().enumerate() {
            let name = parse::<Part>(t)
                .and_then(|p| p.function)
                .and_then(parse::<Part>)
                .and_then(|fun| fun.name)
                .and_then(string);
            if name.is_none() {
                return Err(format!(
                    "`tools[{i}]` must be an object like {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}"
                ));
            }
            chars += t.get().len() as u64;
        }
        f.has_tools = !tools.is_empty();
    }
    if let Some(v) = get("tool_choice") {
        if !(is(v, b'"') || is(v, b'{')) {
            return Err(wrong("tool_choice", "a string or an object", v));
        }
    }

    let Some(messages) = get("messages") else {
        return Err("`messages` is required: an array of {\"role\", \"content\"} objects".into());
    };
    let messages = elements(messages).ok_or_else(|| wrong("messages", "an array", messages))?;
    if messages.is_empty() {
        return Err("`messages` must contain at least one message".into());
    }
    let mut hasher = DefaultHasher::new();
    let mut first_user_hashed = false;
    for (i, raw) in messages.iter().enumerate() {
        let m: Msg = (is(raw, b'{'))
            .then(|| parse(raw))
            .flatten()
            .ok_or_else(|| wrong(&format!("messages[{i}]"), "an object", raw))?;
        let role = match m.role {
            None => return Err(format!("`messages[{i}].role` is required")),
            Some(r) => match string(r) {
                Some(s) if ROLES.contains(&s.as_ref()) => s,
                Some(s) => {
                    return Err(format!(
                        "`messages[{i}].role` must be one of {}, got {s:?}",
                        ROLES.join(", ")
                    ));
                }
                None => return Err(wrong(&format!("messages[{i}].role"), "a string", r)),
            },
        };
        chars += 16;
        if let Some(content) = m.content {
            chars += check_content(content, i, &mut f)?;
        }
        if let Some(calls) = m.tool_calls.filter(|c| c.get() != "null") {
            check_calls(calls, i)?;
            chars += calls.get().len() as u64;
        }
        if role == "tool" && !m.tool_call_id.is_some_and(|id| is(id, b'"')) {
            return Err(format!(
                "`messages[{i}].tool_call_id` is required on tool messages (the id of the call it answers)"
            ));
        }
        match role.as_ref() {
            "assistant" => f.has_assistant = true,
            "system" | "developer" => hash_content(m.content, &mut hasher),
            "user" if !first_user_hashed => {
                hash_content(m.content, &mut hasher);
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

/// Check a message's content (a string, or an array of typed parts); its size in characters.
fn check_content(content: &RawValue, i: usize, f: &mut Facts) -> Result<u64, String> {
    if let Some(s) = string(content) {
        return Ok(s.len() as u64);
    }
    let Some(parts) = elements(content) else {
        return Err(wrong(
            &format!("messages[{i}].content"),
            "a string, an array of parts or null",
            content,
        ));
    };
    let mut chars = 0;
    for (j, raw) in parts.iter().enumerate() {
        let at = format!("messages[{i}].content[{j}]");
        let p: Option<Part> = is(raw, b'{').then(|| parse(raw)).flatten();
        let kind = p.as_ref().and_then(|p| p.kind).and_then(string);
        let (Some(p), Some(kind)) = (p, kind) else {
            return Err(format!("`{at}` must be an object with a `type`"));
        };
        match kind.as_ref() {
            "text" | "input_text" => {
                let text = p
                    .text
                    .and_then(string)
                    .ok_or_else(|| format!("`{at}.text` must be a string"))?;
                chars += text.len() as u64;
            }
            "image_url" => {
                let url = p.image_url.and_then(|u| string(u).or_else(|| url_of(u)));
                if url.is_none() {
                    return Err(format!(
                        "`{at}.image_url` must be an object with a `url` string (an http(s) or data: URL)"
                    ));
                }
                f.has_images = true;
                f.prompt_tokens += IMAGE_TOKENS;
            }
            "input_image" => {
                f.has_images = true;
                f.prompt_tokens += IMAGE_TOKENS;
            }
            _ => chars += raw.get().len() as u64,
        }
    }
    Ok(chars)
}

/// The `url` string of an `image_url` object.
fn url_of(raw: &RawValue) -> Option<Cow<'_, str>> {
    #[derive(serde::Deserialize)]
    struct Url<'a> {
        #[serde(borrow)]
        url: Option<&'a RawValue>,
    }
    is(raw, b'{')
        .then(|| parse::<Url>(raw))
        .flatten()?
        .url
        .and_then(string)
}

/// Check an assistant message's `tool_calls`: calls with an id and a named function.
fn check_calls(calls: &RawValue, i: usize) -> Result<(), String> {
    let calls = elements(calls)
        .ok_or_else(|| wrong(&format!("messages[{i}].tool_calls"), "an array", calls))?;
    for (j, raw) in calls.iter().enumerate() {
        let at = format!("messages[{i}].tool_calls[{j}]");
        let shape = || {
            format!(
                "`{at}` must be an object like {{\"id\": \"call_1\", \"type\": \"function\", \"function\": {{\"name\": \"...\", \"arguments\": \"{{...}}\"}}}}"
            )
        };
        let call: Part = is(raw, b'{')
            .then(|| parse(raw))
            .flatten()
            .ok_or_else(shape)?;
        if !call.id.is_some_and(|id| is(id, b'"')) {
            return Err(format!(
                "`{at}.id` must be a string (the id its tool message answers)"
            ));
        }
        if let Some(kind) = call.kind {
            if string(kind).as_deref() != Some("function") {
                return Err(format!("`{at}.type` must be \"function\""));
            }
        }
        let function: Part = call
            .function
            .filter(|f| is(f, b'{'))
            .and_then(parse)
            .ok_or_else(shape)?;
        if !function.name.is_some_and(|n| is(n, b'"')) {
            return Err(format!("`{at}.function.name` must be a string"));
        }
        if let Some(args) = function.arguments {
            if !(is(args, b'"') || is(args, b'{') || args.get() == "null") {
                return Err(wrong(
                    &format!("{at}.function.arguments"),
                    "a string of JSON",
                    args,
                ));
            }
        }
    }
    Ok(())
}

fn hash_content(content: Option<&RawValue>, h: &mut DefaultHasher) {
    match content {
        Some(raw) => match string(raw) {
            Some(s) => s.as_ref().hash(h),
            None => raw.get().hash(h),
        },
        None => 0u8.hash(h),
    }
}
