//! The legacy completions surface (`/v1/completions`, editor autocomplete), pure: a `prompt`
//! (with `suffix` for fill-in-the-middle) becomes a chat request whose answer comes back as
//! `text_completion` objects, whole or streamed.
//!
//! Chat models do not continue raw text, so the prompt is framed: a system message asks for the
//! continuation only (or, with a suffix, for exactly the text between prefix and suffix), and
//! the user message carries the text. Without `max_tokens` the official default of 16 applies.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::Frames;
use super::read::Lenient;
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

/// A completions body as read: what Freeway looks at is typed; what it only passes on to the
/// chat request (sampling settings, `stop`, `user`) stays JSON text, checked there.
#[derive(Deserialize)]
struct Body<'a> {
    #[serde(default, borrow)]
    model: Option<&'a RawValue>,
    #[serde(default, borrow)]
    prompt: Option<&'a RawValue>,
    #[serde(default)]
    suffix: Option<String>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    n: Lenient<u64>,
    #[serde(default)]
    best_of: Lenient<u64>,
    #[serde(default)]
    echo: Lenient<bool>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Lenient<StreamOptions>,
    #[serde(default, borrow)]
    temperature: Option<&'a RawValue>,
    #[serde(default, borrow)]
    top_p: Option<&'a RawValue>,
    #[serde(default, borrow)]
    presence_penalty: Option<&'a RawValue>,
    #[serde(default, borrow)]
    frequency_penalty: Option<&'a RawValue>,
    #[serde(default, borrow)]
    stop: Option<&'a RawValue>,
    #[serde(default, borrow)]
    seed: Option<&'a RawValue>,
    #[serde(default, borrow)]
    user: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// What `prompt` may be.
#[derive(Deserialize)]
#[serde(untagged)]
enum Prompt {
    One(String),
    Strings(Vec<String>),
}

/// The prompt's one text, or why it is not one.
fn prompt_of(raw: Option<&RawValue>) -> Result<String, String> {
    let Some(raw) = raw else {
        return Err("`prompt` is required: a string".into());
    };
    match serde_json::from_str::<Prompt>(raw.get()) {
        Ok(Prompt::One(s)) => Ok(s),
        Ok(Prompt::Strings(mut list)) if list.len() == 1 => Ok(list.swap_remove(0)),
        Ok(Prompt::Strings(_)) => {
            Err("`prompt` may hold one string only: send one request per prompt".into())
        }
        Err(_) => Err(
            "`prompt` must be a string or a one-element array of strings (token arrays are not supported)"
                .into(),
        ),
    }
}

/// Parse a completions request.
pub fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let body: Body = super::read::body(bytes, "`prompt`")?;
    let prompt = prompt_of(body.prompt)?;
    if body.n.0.is_some_and(|n| n > 1) {
        return Err("`n` above 1 is not supported: send one request per completion".into());
    }
    if body.best_of.0.is_some_and(|n| n > 1) {
        return Err("`best_of` above 1 is not supported".into());
    }
    if body.echo.0 == Some(true) {
        return Err("`echo` is not supported: the answer holds the completion only".into());
    }
    let (system, user) = match &body.suffix {
        Some(suffix) => fill_in_the_middle(&prompt, suffix),
        None => (CONTINUE, prompt),
    };
    let mut out = Map::new();
    let raw = |v: &RawValue| serde_json::from_str::<Value>(v.get()).unwrap_or(Value::Null);
    if let Some(m) = body.model {
        out.insert("model".into(), raw(m));
    }
    out.insert(
        "messages".into(),
        json!([{"role": "system", "content": system}, {"role": "user", "content": user}]),
    );
    let max_tokens = body.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    out.insert("max_tokens".into(), json!(max_tokens.max(1)));
    for (key, v) in [
        ("temperature", body.temperature),
        ("top_p", body.top_p),
        ("presence_penalty", body.presence_penalty),
        ("frequency_penalty", body.frequency_penalty),
        ("stop", body.stop),
        ("seed", body.seed),
        ("user", body.user),
    ] {
        if let Some(v) = v {
            out.insert(key.into(), raw(v));
        }
    }
    let include_usage = body.stream_options.0.is_some_and(|o| o.include_usage);
    if let Some(stream) = body.stream {
        out.insert("stream".into(), json!(stream));
        if stream {
            out.insert("stream_options".into(), json!({"include_usage": true}));
        }
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
    fn a_wrong_field_is_named() {
        for (body, field) in [
            (json!({"prompt": "x", "max_tokens": "ten"}), "`max_tokens`"),
            (json!({"prompt": "x", "suffix": 5}), "`suffix`"),
            (json!({"prompt": "x", "stream": "yes"}), "`stream`"),
            (json!({"prompt": 5}), "`prompt`"),
            (json!({"prompt": ["a", "b"]}), "one string only"),
            (json!({"model": "m"}), "`prompt` is required"),
            (json!({"prompt": "x", "n": 2}), "`n`"),
            (json!({"prompt": "x", "echo": true}), "`echo`"),
            (json!([1, 2]), "JSON object"),
        ] {
            let e = p(body.clone()).err().unwrap();
            assert!(e.contains(field), "{body}: {e}");
        }
        assert!(parse(b"{nope").unwrap_err().contains("not valid JSON"));
        // Extras of another type are ignored, as they always were.
        let ok = p(json!({"prompt": "x", "n": "one", "stream_options": 3})).unwrap();
        assert!(!ok.include_usage);
        let one = p(json!({"prompt": ["only"], "max_tokens": null})).unwrap();
        assert!(one.req.to_map()["messages"][1]["content"] == "only");
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
