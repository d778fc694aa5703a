//! The OpenAI chat-completions surface, pure: a client's request into the canonical one, and
//! canonical answers and errors back as `chat.completion` bodies, `chat.completion.chunk`
//! events and `{"error": ...}` objects.
//!
//! An answer the upstream already gave in this dialect ([`Answer::Openai`], [`Piece::Openai`])
//! is handed on as it came: its fields (several choices, log probabilities, vendor extras) reach
//! the client untouched, and nothing is re-encoded on the hot path.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::chat::{self, Answer, Event, Finish, Message, Piece, Usage};
use crate::error::ApiError;
use crate::sse;

/// Parse and validate a request body.
pub fn parse(bytes: &[u8]) -> Result<chat::Request, String> {
    chat::Request::parse(bytes)
}

/// The `error.type` of an error.
fn error_type(e: &ApiError) -> &'static str {
    match e {
        ApiError::InvalidRequest(_)
        | ApiError::ModelNotFound(_)
        | ApiError::TooLarge(_)
        | ApiError::RequestTimeout(_)
        | ApiError::ContextTooLong(_)
        | ApiError::NotFound(_)
        | ApiError::IdempotencyKeyReused(_) => "invalid_request_error",
        ApiError::Unauthorized(_) => "authentication_error",
        ApiError::RateLimited { .. } | ApiError::ClientQuota { .. } => "rate_limit_error",
        ApiError::ModelNotAllowed(_) => "permission_error",
        ApiError::UpstreamFailed(_) | ApiError::NoProviders(_) => "upstream_error",
    }
}

/// `{"error": {"message", "type", "code"}}` (SPEC 2.3).
pub fn error_body(e: &ApiError) -> Value {
    json!({"error": {"message": e.to_string(), "type": error_type(e), "code": e.code()}})
}

/// A whole answer as the body of a `chat.completion`.
pub fn answer_body(answer: Answer, id: &str, created: i64) -> Bytes {
    match answer {
        Answer::Openai(body) => body,
        Answer::Typed(m) => Bytes::from(completion(&m, id, created).to_string()),
    }
}

fn usage_json(u: &Usage) -> Value {
    let mut v = json!({
        "prompt_tokens": u.input,
        "completion_tokens": u.output,
        "total_tokens": u.total(),
    });
    if let Some(o) = v.as_object_mut() {
        if let Some(cached) = u.cached {
            o.insert(
                "prompt_tokens_details".into(),
                json!({ "cached_tokens": cached }),
            );
        }
        if let Some(reasoning) = u.reasoning {
            o.insert(
                "completion_tokens_details".into(),
                json!({ "reasoning_tokens": reasoning }),
            );
        }
    }
    v
}

fn call_json(id: &str, name: &str, arguments: &str, extra: Option<&Value>) -> Map<String, Value> {
    let mut call = Map::new();
    call.insert("id".into(), json!(id));
    call.insert("type".into(), json!("function"));
    call.insert(
        "function".into(),
        json!({ "name": name, "arguments": arguments }),
    );
    if let Some(extra) = extra {
        call.insert("extra_content".into(), extra.clone());
    }
    call
}

/// A typed answer as a `chat.completion` object.
pub fn completion(m: &Message, id: &str, created: i64) -> Value {
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    if m.calls.is_empty() {
        message.insert("content".into(), json!(m.text));
    } else {
        let content = if m.text.is_empty() {
            Value::Null
        } else {
            json!(m.text)
        };
        message.insert("content".into(), content);
        let calls = m
            .calls
            .iter()
            .map(|c| Value::Object(call_json(&c.id, &c.name, &c.arguments, c.extra.as_ref())))
            .collect();
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    if !m.reasoning.is_empty() {
        message.insert("reasoning_content".into(), json!(m.reasoning));
    }
    let mut out = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": m.model,
        "choices": [{"index": 0, "message": message, "finish_reason": m.finish.as_openai()}],
    });
    if let (Some(u), Some(o)) = (&m.usage, out.as_object_mut()) {
        o.insert("usage".into(), usage_json(u));
    }
    out
}

/// Frames one streamed answer as `chat.completion.chunk` events.
pub struct Framer {
    id: String,
    model: String,
    created: i64,
    /// The client asked for usage (`stream_options.include_usage`): usage-only chunks that
    /// Freeway asked the upstream for are shown.
    include_usage: bool,
    /// OpenAI clients expect `role` on the first delta, and only there.
    role_sent: bool,
}

impl Framer {
    pub fn new(id: &str, model: &str, created: i64, include_usage: bool) -> Framer {
        Framer {
            id: id.to_string(),
            model: model.to_string(),
            created,
            include_usage,
            role_sent: false,
        }
    }

    /// The SSE bytes of one piece (several events in one buffer), if it shows anything.
    pub fn frame(&mut self, piece: Piece) -> Option<Bytes> {
        match piece {
            Piece::Openai(c) if c.usage_only && !self.include_usage => None,
            Piece::Openai(c) => Some(sse::frame(&c.data)),
            other => {
                let mut buf = Vec::new();
                for v in self.chunks(&other) {
                    buf.extend_from_slice(b"data: ");
                    buf.extend_from_slice(v.to_string().as_bytes());
                    buf.extend_from_slice(b"\n\n");
                }
                (!buf.is_empty()).then(|| Bytes::from(buf))
            }
        }
    }

    /// The end of the stream.
    pub fn done() -> Bytes {
        sse::frame("[DONE]")
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

    fn delta(&mut self) -> Map<String, Value> {
        let mut d = Map::new();
        if !self.role_sent {
            self.role_sent = true;
            d.insert("role".into(), json!("assistant"));
        }
        d
    }

    fn choice(&self, delta: Map<String, Value>, finish: Option<Finish>) -> Value {
        self.chunk(vec![json!({
            "index": 0,
            "delta": delta,
            "finish_reason": finish.map(Finish::as_openai),
        })])
    }

    /// The chunk objects of one piece (a verbatim chunk is parsed back).
    pub fn chunks(&mut self, piece: &Piece) -> Vec<Value> {
        let events = match piece {
            Piece::Openai(c) => {
                return serde_json::from_str(&c.data).into_iter().collect();
            }
            Piece::Interrupted(reason) => {
                return vec![interrupted_error(reason)];
            }
            Piece::Events(events) => events,
        };
        let mut out = Vec::new();
        let mut i = 0;
        while i < events.len() {
            match &events[i] {
                // An empty text right before the finish (a blocked prompt) says so in the finish.
                Event::Text(t) if t.is_empty() => {
                    if let Some(Event::Finish(f)) = events.get(i + 1) {
                        let mut d = self.delta();
                        d.insert("content".into(), json!(""));
                        i += 1;
                        out.push(self.choice(d, Some(*f)));
                    }
                }
                Event::Text(t) => {
                    let mut d = self.delta();
                    d.insert("content".into(), json!(t));
                    out.push(self.choice(d, None));
                }
                Event::Reasoning(t) => {
                    let mut d = self.delta();
                    d.insert("reasoning_content".into(), json!(t));
                    out.push(self.choice(d, None));
                }
                Event::ToolCall(c) => {
                    let mut call = Map::new();
                    call.insert("index".into(), json!(c.index));
                    if let Some(id) = &c.id {
                        call.insert("id".into(), json!(id));
                        call.insert("type".into(), json!("function"));
                    }
                    let mut function = Map::new();
                    if let Some(name) = &c.name {
                        function.insert("name".into(), json!(name));
                    }
                    function.insert("arguments".into(), json!(c.arguments));
                    call.insert("function".into(), Value::Object(function));
                    if let Some(extra) = &c.extra {
                        call.insert("extra_content".into(), extra.clone());
                    }
                    let mut d = self.delta();
                    d.insert("tool_calls".into(), json!([call]));
                    out.push(self.choice(d, None));
                }
                Event::Finish(f) => {
                    let d = self.delta();
                    out.push(self.choice(d, Some(*f)));
                }
                // As OpenAI streams it: a last chunk without choices, only when asked for.
                Event::Usage(_) if !self.include_usage => {}
                Event::Usage(u) => {
                    let mut c = self.chunk(Vec::new());
                    if let Some(o) = c.as_object_mut() {
                        o.insert("usage".into(), usage_json(u));
                    }
                    out.push(c);
                }
            }
            i += 1;
        }
        out
    }
}

impl super::Frames for Framer {
    fn frame(&mut self, piece: Piece) -> Option<Bytes> {
        Framer::frame(self, piece)
    }
    fn end(&mut self) -> Option<Bytes> {
        Some(Framer::done())
    }
}

/// The error event a chat-completions stream (and a legacy completions stream) ends with when
/// the upstream broke after content was sent.
pub(crate) fn interrupted_error(reason: &str) -> Value {
    json!({"error": {
        "message": super::interrupted(reason),
        "type": "upstream_error",
        "code": "stream_interrupted"
    }})
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(v: Value) -> Result<chat::Request, String> {
        parse(v.to_string().as_bytes())
    }

    #[test]
    fn a_plain_request_yields_its_facts() {
        let r = p(json!({"model": "auto", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]},
            {"role": "assistant", "content": "hello"}
        ], "max_tokens": 5000, "stream": true, "custom_field": {"kept": true}}))
        .unwrap();
        assert_eq!(r.facts.model, None);
        assert!(r.facts.stream && r.facts.has_images && r.facts.has_assistant);
        assert_eq!(r.facts.token_estimate(), r.facts.prompt_tokens + 2048);
        assert!(r.raw("custom_field").is_some());
    }

    #[test]
    fn conversation_identity_ignores_later_turns() {
        let a = p(json!({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})).unwrap();
        let b = p(json!({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "more"}]})).unwrap();
        let c = p(json!({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "other"}]})).unwrap();
        assert_eq!(a.facts.conversation, b.facts.conversation);
        assert_ne!(a.facts.conversation, c.facts.conversation);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (json!([1, 2]), "JSON object"),
            (json!({"model": "x"}), "`messages` is required"),
            (json!({"messages": "hi"}), "`messages` must be an array"),
            (json!({"messages": []}), "at least one"),
            (
                json!({"messages": [{"content": "x"}]}),
                "`messages[0].role` is required",
            ),
            (
                json!({"messages": [{"role": "robot", "content": "x"}]}),
                "`messages[0].role` must be one of",
            ),
            (
                json!({"messages": [{"role": "user", "content": 5}]}),
                "`messages[0].content`",
            ),
            (
                json!({"model": 7, "messages": [{"role": "user", "content": "x"}]}),
                "`model` must be a string",
            ),
            (
                json!({"stream": "yes", "messages": [{"role": "user", "content": "x"}]}),
                "`stream` must be a boolean",
            ),
            (
                json!({"max_tokens": -1, "messages": [{"role": "user", "content": "x"}]}),
                "`max_tokens`",
            ),
            (
                json!({"temperature": "hot", "messages": [{"role": "user", "content": "x"}]}),
                "`temperature`",
            ),
            (
                json!({"tools": [{"type": "function"}], "messages": [{"role": "user", "content": "x"}]}),
                "`tools[0]`",
            ),
            (
                json!({"messages": [{"role": "tool", "content": "x"}]}),
                "tool_call_id",
            ),
        ];
        for (body, needle) in cases {
            let err = p(body.clone()).unwrap_err();
            assert!(err.contains(needle), "{body} -> {err}");
        }
        assert!(parse(b"{not json").unwrap_err().contains("not valid JSON"));
    }
}
