//! The legacy completions surface (`/v1/completions`, editor autocomplete), pure: a `prompt`
//! (with `suffix` for fill-in-the-middle) becomes a chat request whose answer comes back as
//! `text_completion` objects, whole or streamed.
//!
//! Chat models do not continue raw text, so the prompt is framed: a system message asks for the
//! continuation only (or, with a suffix, for exactly the text between prefix and suffix), and
//! the user message carries the text. Without `max_tokens` the official default of 16 applies.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::Frames;
use crate::chat::{self, Event, Finish, Message, Piece, Usage};
use crate::sse;

/// The official API's default answer length.
const DEFAULT_MAX_TOKENS: u64 = 16;

const CONTINUE: &str = "You are a text completion engine. Continue the user's text exactly where it stops. Reply with the continuation only: no preamble, no quotes, no repetition of the given text.";
const FILL: &str = "You are a code completion engine. The user gives a prefix and a suffix. Reply with exactly the text that belongs between them: no preamble, no code fences, no repetition of the prefix or the suffix.";

/// The system text and the user text that ask a chat model for exactly what goes between
/// `prefix` and `suffix` (also Ollama's `suffix`).
pub(crate) fn fill_in_the_middle(prefix: &str, suffix: &str) -> (&'static str, String) {
    (
        FILL,
        format!("<prefix>{prefix}</prefix>\n<suffix>{suffix}</suffix>"),
    )
}

/// A completions request, translated.
#[derive(Debug)]
pub struct Parsed {
    pub req: chat::Request,
    /// The client asked for usage in the stream.
    pub include_usage: bool,
}

fn wrong(field: &str, want: &str) -> String {
    format!("`{field}` must be {want}")
}

/// Parse a completions request.
pub fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let body: Map<String, Value> = match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err("the request body must be a JSON object with `prompt`".into()),
        Err(e) => {
            return Err(format!(
                "the request body is not valid JSON ({e}); send a JSON object with `prompt`"
            ));
        }
    };
    let prompt = match body.get("prompt") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(list)) if list.len() == 1 && list[0].is_string() => {
            list[0].as_str().unwrap_or_default().to_string()
        }
        Some(Value::Array(list)) if list.iter().all(Value::is_string) => {
            return Err("`prompt` may hold one string only: send one request per prompt".into());
        }
        None | Some(Value::Null) => return Err("`prompt` is required: a string".into()),
        Some(_) => {
            return Err(
                "`prompt` must be a string or a one-element array of strings (token arrays are not supported)"
                    .into(),
            );
        }
    };
    if body.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err("`n` above 1 is not supported: send one request per completion".into());
    }
    if body
        .get("best_of")
        .and_then(Value::as_u64)
        .is_some_and(|n| n > 1)
    {
        return Err("`best_of` above 1 is not supported".into());
    }
    if body.get("echo") == Some(&Value::Bool(true)) {
        return Err("`echo` is not supported: the answer holds the completion only".into());
    }
    let suffix = match body.get("suffix") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(wrong("suffix", "a string")),
    };
    let messages = match &suffix {
        Some(suffix) => {
            let (system, user) = fill_in_the_middle(&prompt, suffix);
            vec![
                json!({"role": "system", "content": system}),
                json!({"role": "user", "content": user}),
            ]
        }
        None => vec![
            json!({"role": "system", "content": CONTINUE}),
            json!({"role": "user", "content": prompt}),
        ],
    };
    let mut out = Map::new();
    if let Some(m) = body.get("model").filter(|v| !v.is_null()) {
        out.insert("model".into(), m.clone());
    }
    out.insert("messages".into(), Value::Array(messages));
    let max_tokens = match body.get("max_tokens") {
        None | Some(Value::Null) => DEFAULT_MAX_TOKENS,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| wrong("max_tokens", "a non-negative integer"))?,
    };
    out.insert("max_tokens".into(), json!(max_tokens.max(1)));
    for key in [
        "temperature",
        "top_p",
        "presence_penalty",
        "frequency_penalty",
        "stop",
        "seed",
        "user",
        "stream",
    ] {
        if let Some(v) = body.get(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v.clone());
        }
    }
    let include_usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if body.get("stream") == Some(&Value::Bool(true)) {
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let req = chat::Request::from_map(out)?;
    Ok(Parsed { req, include_usage })
}

fn usage_json(u: &Usage) -> Value {
    json!({"prompt_tokens": u.input, "completion_tokens": u.output, "total_tokens": u.total()})
}

/// A whole answer as a `text_completion`.
pub fn completion_body(m: &Message, id: &str, created: i64) -> Value {
    let mut v = json!({
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": m.model,
        "system_fingerprint": null,
        "choices": [{"text": m.text, "index": 0, "logprobs": null, "finish_reason": m.finish.as_openai()}],
    });
    if let Some(u) = &m.usage {
        v["usage"] = usage_json(u);
    }
    v
}

/// Frames a streamed answer as `text_completion` chunks and `[DONE]`.
pub struct Framer {
    id: String,
    model: String,
    created: i64,
    include_usage: bool,
    usage: Option<Usage>,
}

impl Framer {
    pub fn new(id: &str, model: &str, created: i64, include_usage: bool) -> Framer {
        Framer {
            id: id.into(),
            model: model.into(),
            created,
            include_usage,
            usage: None,
        }
    }

    fn chunk(&self, text: &str, finish: Option<Finish>) -> Value {
        json!({
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"text": text, "index": 0, "logprobs": null,
                         "finish_reason": finish.map(Finish::as_openai)}],
        })
    }
}

fn push(buf: &mut Vec<u8>, v: &Value) {
    buf.extend_from_slice(b"data: ");
    let _ = serde_json::to_writer(&mut *buf, v);
    buf.extend_from_slice(b"\n\n");
}

impl Frames for Framer {
    fn frame(&mut self, piece: Piece) -> Option<Bytes> {
        let mut buf = Vec::new();
        match piece {
            Piece::Interrupted(reason) => {
                push(&mut buf, &super::openai::interrupted_error(&reason))
            }
            other => {
                for e in other.events() {
                    match e {
                        Event::Text(t) if !t.is_empty() => push(&mut buf, &self.chunk(&t, None)),
                        Event::Finish(f) => push(&mut buf, &self.chunk("", Some(f))),
                        Event::Usage(u) => self.usage = Some(u),
                        _ => {}
                    }
                }
            }
        }
        (!buf.is_empty()).then(|| Bytes::from(buf))
    }

    fn end(&mut self) -> Option<Bytes> {
        let mut buf = Vec::new();
        if let (true, Some(u)) = (self.include_usage, self.usage) {
            let mut c = self.chunk("", None);
            c["choices"] = json!([]);
            c["usage"] = usage_json(&u);
            push(&mut buf, &c);
        }
        buf.extend_from_slice(&sse::frame("[DONE]"));
        Some(Bytes::from(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: Value) -> Result<Parsed, String> {
        parse(v.to_string().as_bytes())
    }

    #[test]
    fn a_prompt_becomes_a_framed_chat() {
        let parsed = p(
            json!({"model": "m", "prompt": ["def add(a, b):"], "stop": ["\n\n"], "temperature": 0}),
        )
        .unwrap();
        let b = parsed.req.to_map();
        assert_eq!(b["max_tokens"], 16);
        assert_eq!(b["messages"][1]["content"], "def add(a, b):");
        assert_eq!(b["stop"], json!(["\n\n"]));
        let fim =
            p(json!({"prompt": "a = ", "suffix": "\nprint(a)", "max_tokens": 8, "stream": true}))
                .unwrap();
        let b = fim.req.to_map();
        assert!(
            b["messages"][0]["content"]
                .as_str()
                .unwrap()
                .contains("between them")
        );
        assert_eq!(
            b["messages"][1]["content"],
            "<prefix>a = </prefix>\n<suffix>\nprint(a)</suffix>"
        );
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert!(!fim.include_usage);
    }

    #[test]
    fn what_cannot_be_honoured_is_refused() {
        for (body, needle) in [
            (json!({"prompt": "x", "n": 2}), "`n`"),
            (json!({"prompt": "x", "best_of": 3}), "`best_of`"),
            (json!({"prompt": "x", "echo": true}), "`echo`"),
            (json!({"prompt": ["a", "b"]}), "one string"),
            (json!({"prompt": [1, 2]}), "token arrays"),
            (json!({"model": "m"}), "`prompt` is required"),
            (json!({"prompt": "x", "max_tokens": -1}), "`max_tokens`"),
        ] {
            let err = p(body.clone()).unwrap_err();
            assert!(err.contains(needle), "{body} -> {err}");
        }
    }

    #[test]
    fn answers_are_text_completions() {
        let m = Message {
            model: "up".into(),
            text: "x + y".into(),
            reasoning: "r".into(),
            calls: vec![],
            finish: Finish::Stop,
            usage: Some(Usage {
                input: 4,
                output: 2,
                ..Usage::default()
            }),
        };
        let v = completion_body(&m, "cmpl-1", 7);
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["choices"][0]["text"], "x + y");
        assert_eq!(v["usage"]["total_tokens"], 6);

        let mut f = Framer::new("cmpl-1", "up", 7, true);
        let mut all = Vec::new();
        for piece in [
            Piece::Events(vec![
                Event::Reasoning("hidden".into()),
                Event::Text("x +".into()),
            ]),
            Piece::Events(vec![Event::Text(" y".into()), Event::Finish(Finish::Stop)]),
            Piece::Events(vec![Event::Usage(Usage {
                input: 4,
                output: 2,
                ..Usage::default()
            })]),
        ] {
            all.extend_from_slice(&f.frame(piece).unwrap_or_default());
        }
        all.extend_from_slice(&f.end().unwrap());
        let text = String::from_utf8(all).unwrap();
        let datas: Vec<&str> = text
            .split("\n\n")
            .filter(|s| !s.is_empty())
            .map(|s| s.strip_prefix("data: ").unwrap())
            .collect();
        assert_eq!(datas.last(), Some(&"[DONE]"));
        let chunks: Vec<Value> = datas[..datas.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        let joined: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["text"].as_str())
            .collect();
        assert_eq!(joined, "x + y");
        assert_eq!(chunks[2]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[3]["usage"]["completion_tokens"], 2);
        assert!(!text.contains("hidden"));
    }
}
