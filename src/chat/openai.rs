//! Reading answers in the OpenAI chat dialect: lightly (does it say something, how did it end,
//! what did it use) on the request path, fully (typed events and messages) when a surface that
//! speaks another dialect needs the content.

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use serde_json::value::RawValue;
use std::borrow::Cow;

use super::{Call, CallDelta, Event, Finish, Message, Usage};

/// One OpenAI `chat.completion.chunk`, as the upstream sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// The JSON text of the chunk.
    pub data: String,
    /// It carries usage and no choice: Freeway's own request for usage, which a client that did
    /// not ask for usage must not see.
    pub usage_only: bool,
}

impl Chunk {
    /// The chunk's first choice and usage as typed events.
    pub fn events(&self) -> Vec<Event> {
        let Ok(c) = serde_json::from_str::<FullChunk>(&self.data) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Some(choice) = c.choices.into_iter().find(|c| c.index.unwrap_or(0) == 0) {
            if let Some(d) = choice.delta {
                if let Some(r) = d
                    .reasoning_content
                    .or(d.reasoning)
                    .filter(|r| !r.is_empty())
                {
                    out.push(Event::Reasoning(r.into_owned()));
                }
                if let Some(t) = d.content.filter(|t| !t.is_empty()) {
                    out.push(Event::Text(t.into_owned()));
                }
                for (i, call) in d.tool_calls.unwrap_or_default().into_iter().enumerate() {
                    let function = call.function.unwrap_or_default();
                    out.push(Event::ToolCall(CallDelta {
                        index: call.index.unwrap_or(i as u32),
                        id: call.id.map(Cow::into_owned),
                        name: function.name.map(Cow::into_owned),
                        arguments: function.arguments.map(Cow::into_owned).unwrap_or_default(),
                        extra: call.extra_content,
                    }));
                }
            }
            if let Some(f) = choice.finish_reason {
                out.push(Event::Finish(Finish::from_openai(&f)));
            }
        }
        if let Some(u) = c.usage {
            out.push(Event::Usage(u.typed()));
        }
        out
    }
}

/// The first choice of a `chat.completion` as a typed message.
pub fn message(body: &[u8]) -> Result<Message, String> {
    let a: FullAnswer =
        serde_json::from_slice(body).map_err(|e| format!("not a chat completion ({e})"))?;
    let model = a.model.map(Cow::into_owned).unwrap_or_default();
    let usage = a.usage.map(|u| u.typed());
    let choice = a
        .choices
        .into_iter()
        .next()
        .ok_or("the answer has no choices")?;
    let m = choice.message.unwrap_or_default();
    let text = match m.content {
        Some(Value::String(s)) => s,
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    };
    let calls = m
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            let f = c.function.unwrap_or_default();
            Call {
                id: c.id.map(Cow::into_owned).unwrap_or_default(),
                name: f.name.map(Cow::into_owned).unwrap_or_default(),
                arguments: f.arguments.map(Cow::into_owned).unwrap_or_default(),
                extra: c.extra_content,
            }
        })
        .collect::<Vec<_>>();
    let finish = match choice.finish_reason.as_deref() {
        Some(f) => Finish::from_openai(f),
        None if !calls.is_empty() => Finish::ToolCalls,
        None => Finish::Stop,
    };
    Ok(Message {
        model,
        text,
        reasoning: m
            .reasoning_content
            .or(m.reasoning)
            .map(Cow::into_owned)
            .unwrap_or_default(),
        calls,
        finish,
        usage,
    })
}

// ---- full readers (typed content) ----

#[derive(Deserialize)]
struct FullAnswer<'a> {
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    choices: Vec<FullChoice<'a>>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct FullChoice<'a> {
    #[serde(default, borrow)]
    message: Option<FullMessage<'a>>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct FullMessage<'a> {
    #[serde(default)]
    content: Option<Value>,
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<FullCall<'a>>>,
}

#[derive(Deserialize)]
struct FullChunk<'a> {
    #[serde(default, borrow)]
    choices: Vec<FullChunkChoice<'a>>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct FullChunkChoice<'a> {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default, borrow)]
    delta: Option<FullDelta<'a>>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct FullDelta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<FullCall<'a>>>,
}

#[derive(Deserialize)]
struct FullCall<'a> {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    function: Option<FullFunction<'a>>,
    #[serde(default)]
    extra_content: Option<Value>,
}

#[derive(Deserialize, Default)]
struct FullFunction<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

/// `usage` as OpenAI spells it.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
pub struct WireUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<Details>,
    #[serde(default)]
    completion_tokens_details: Option<Details>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
struct Details {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl WireUsage {
    pub fn typed(&self) -> Usage {
        Usage {
            input: self.prompt_tokens,
            output: self.completion_tokens,
            cached: self.prompt_tokens_details.and_then(|d| d.cached_tokens),
            reasoning: self
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens),
        }
    }
}

// ---- answers, read lightly: only what failover and the ledger need ----

/// A non-streaming answer, read without copying anything: only what tells whether it says
/// something (and its usage) is looked at.
#[derive(Debug, Deserialize)]
pub struct LightAnswer<'a> {
    #[serde(borrow)]
    pub choices: Vec<AnswerChoice<'a>>,
    #[serde(default)]
    pub usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
pub struct AnswerChoice<'a> {
    #[serde(default, borrow)]
    pub message: Option<AnswerMessage<'a>>,
    #[serde(default, borrow)]
    pub finish_reason: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
pub struct AnswerMessage<'a> {
    /// The JSON text of the content, unparsed.
    #[serde(default, borrow)]
    pub content: Option<&'a RawValue>,
    #[serde(default)]
    pub tool_calls: Option<Vec<IgnoredAny>>,
    #[serde(default, borrow)]
    pub reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub reasoning: Option<Cow<'a, str>>,
}

impl LightAnswer<'_> {
    /// Whether the answer says anything: text, a tool call, or (at least) reasoning, or a
    /// finish reason that explains its silence (a content filter).
    pub fn has_content(&self) -> bool {
        self.choices.iter().any(|c| {
            c.finish_reason.as_deref() == Some("content_filter")
                || c.message.as_ref().is_some_and(|m| {
                    m.content.is_some_and(says_something)
                        || m.tool_calls.as_ref().is_some_and(|t| !t.is_empty())
                        || m.reasoning_content.as_ref().is_some_and(|r| !r.is_empty())
                        || m.reasoning.as_ref().is_some_and(|r| !r.is_empty())
                })
        })
    }
}

/// A content value that is a non-empty string or a non-empty array (of parts).
fn says_something(raw: &RawValue) -> bool {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => text.len() > 2,
        Some(b'[') => !text[1..text.len() - 1].trim().is_empty(),
        _ => false,
    }
}

/// One streamed chunk, read lightly.
#[derive(Debug, Default, Deserialize)]
pub struct LightChunk<'a> {
    #[serde(default, borrow)]
    pub choices: Vec<ChunkChoice<'a>>,
    #[serde(default)]
    pub usage: Option<WireUsage>,
    #[serde(default)]
    pub error: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ChunkChoice<'a> {
    #[serde(default, borrow)]
    pub delta: Option<Delta<'a>>,
    #[serde(default, borrow)]
    pub finish_reason: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Delta<'a> {
    // Borrowed from the event text: a stream's chunks are read, not kept.
    #[serde(default, borrow)]
    pub content: Option<Cow<'a, str>>,
    #[serde(default)]
    pub tool_calls: Option<Vec<IgnoredAny>>,
    #[serde(default, borrow)]
    pub reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub reasoning: Option<Cow<'a, str>>,
}

impl LightChunk<'_> {
    /// Carries text, a tool call or reasoning.
    pub fn has_content(&self) -> bool {
        self.choices.iter().any(|c| {
            c.delta.as_ref().is_some_and(|d| {
                d.content.as_ref().is_some_and(|s| !s.is_empty())
                    || d.tool_calls.as_ref().is_some_and(|t| !t.is_empty())
                    || d.reasoning_content.as_ref().is_some_and(|s| !s.is_empty())
                    || d.reasoning.as_ref().is_some_and(|s| !s.is_empty())
            })
        })
    }

    pub fn finish_reason(&self) -> Option<&str> {
        self.choices.iter().find_map(|c| c.finish_reason.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_chunks_are_read_lightly() {
        let says = |body: &str| {
            let a: LightAnswer = serde_json::from_str(body).unwrap();
            a.has_content()
        };
        for (message, expected) in [
            (r#"{"role": "assistant", "content": ""}"#, false),
            (r#"{"content": null}"#, false),
            (r#"{"content": []}"#, false),
            (r#"{"content": [ ]}"#, false),
            (r#"{"content": 42}"#, false),
            (r#"{"content": "x"}"#, true),
            (r#"{"content": "\u0000"}"#, true),
            (r#"{"content": [{"type": "text", "text": "x"}]}"#, true),
            (r#"{"content": null, "tool_calls": [{"id": "1"}]}"#, true),
            (r#"{"content": "", "reasoning_content": "hmm"}"#, true),
            (r#"{"content": "", "reasoning": "hmm"}"#, true),
        ] {
            let body = format!(
                r#"{{"model": "m", "choices": [{{"message": {message}, "finish_reason": "stop"}}]}}"#
            );
            assert_eq!(says(&body), expected, "{message}");
        }
        assert!(says(
            r#"{"choices": [{"message": {"content": ""}, "finish_reason": "content_filter"}]}"#
        ));
        assert!(serde_json::from_str::<LightAnswer>(r#"{"object": "error"}"#).is_err());
        let c: LightChunk =
            serde_json::from_str(r#"{"choices":[{"delta":{"content":"x"},"finish_reason":null}]}"#)
                .unwrap();
        assert!(c.has_content());
        let c: LightChunk = serde_json::from_str(
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
        )
        .unwrap();
        assert_eq!(c.usage.unwrap().completion_tokens, 4);
    }
}
