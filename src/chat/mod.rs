//! The canonical chat: what every client surface translates into, what the router routes, and
//! what every upstream dialect answers with.
//!
//! A request ([`Request`]) is a body in the OpenAI chat-completions schema (the common ground of
//! nearly every upstream; unknown fields are kept for OpenAI-compatible upstreams), validated
//! once, plus the few facts routing needs. An answer is typed: a [`Message`] when whole, [`Event`]s when
//! streamed. Where the upstream already answered in the OpenAI chat dialect its own bytes travel
//! along ([`Answer::Openai`], [`Piece::Openai`]), so the surface that speaks that dialect can
//! hand them on unchanged (fields Freeway does not model, several choices) without a re-encode;
//! every other surface reads the same content as typed events.

pub mod openai;

mod request;

pub use request::{Facts, Request};

use serde_json::Value;

// ---- answers ----

/// Why an answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The model was done (or hit a stop sequence).
    Stop,
    /// The token limit cut it.
    Length,
    /// It asked for tool calls.
    ToolCalls,
    /// A safety filter stopped it.
    ContentFilter,
}

impl Finish {
    /// The OpenAI `finish_reason` spelling, also how upstream reasons are read.
    pub fn as_openai(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::ToolCalls => "tool_calls",
            Finish::ContentFilter => "content_filter",
        }
    }

    /// Read an OpenAI-style `finish_reason`; unknown reasons (vendors invent some) are a stop.
    pub fn from_openai(reason: &str) -> Finish {
        match reason {
            "length" | "max_tokens" => Finish::Length,
            "tool_calls" | "function_call" | "tool_use" => Finish::ToolCalls,
            "content_filter" => Finish::ContentFilter,
            _ => Finish::Stop,
        }
    }
}

/// Tokens an answer used, as the upstream reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    /// Of `input`, read from the upstream's prompt cache, when reported.
    pub cached: Option<u64>,
    /// Of `output`, spent on reasoning, when reported.
    pub reasoning: Option<u64>,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.input.saturating_add(self.output)
    }
}

/// A whole tool call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub id: String,
    pub name: String,
    /// The arguments as JSON text.
    pub arguments: String,
    /// Vendor data a client should echo back when it replays the call (Gemini's thought
    /// signature, as `{"google": {"thought_signature": ...}}`).
    pub extra: Option<Value>,
}

/// A piece of a streamed tool call: the first piece of each call carries its id and name, the
/// rest only more argument text.
#[derive(Debug, Clone, PartialEq)]
pub struct CallDelta {
    /// Which call of the answer (0, 1, ...).
    pub index: u32,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: String,
    pub extra: Option<Value>,
}

/// One step of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Text(String),
    /// Reasoning ("thinking") text, shown apart from the answer.
    Reasoning(String),
    ToolCall(CallDelta),
    Finish(Finish),
    Usage(Usage),
}

impl Event {
    /// Text, reasoning or a tool call: what commits a stream to its provider.
    pub fn is_content(&self) -> bool {
        match self {
            Event::Text(t) | Event::Reasoning(t) => !t.is_empty(),
            Event::ToolCall(_) => true,
            Event::Finish(_) | Event::Usage(_) => false,
        }
    }
}

/// A whole answer, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The upstream model id that produced it.
    pub model: String,
    pub text: String,
    pub reasoning: String,
    pub calls: Vec<Call>,
    pub finish: Finish,
    pub usage: Option<Usage>,
}

impl Message {
    /// The events a stream of this same answer would have carried.
    pub fn events(&self) -> Vec<Event> {
        let mut out = Vec::new();
        if !self.reasoning.is_empty() {
            out.push(Event::Reasoning(self.reasoning.clone()));
        }
        if !self.text.is_empty() {
            out.push(Event::Text(self.text.clone()));
        }
        for (i, c) in self.calls.iter().enumerate() {
            out.push(Event::ToolCall(CallDelta {
                index: i as u32,
                id: Some(c.id.clone()),
                name: Some(c.name.clone()),
                arguments: c.arguments.clone(),
                extra: c.extra.clone(),
            }));
        }
        out.push(Event::Finish(self.finish));
        if let Some(u) = self.usage {
            out.push(Event::Usage(u));
        }
        out
    }
}

/// A non-streaming answer.
#[derive(Debug, Clone)]
pub enum Answer {
    /// An OpenAI `chat.completion` exactly as the upstream sent it (checked to say something).
    Openai(bytes::Bytes),
    Typed(Message),
}

impl Answer {
    /// The answer as a typed message (the first choice of an OpenAI answer).
    pub fn message(&self) -> Result<Message, String> {
        match self {
            Answer::Openai(body) => openai::message(body),
            Answer::Typed(m) => Ok(m.clone()),
        }
    }
}

/// What a streamed answer delivers, step by step.
#[derive(Debug, Clone)]
pub enum Piece {
    Events(Vec<Event>),
    /// One OpenAI `chat.completion.chunk` as the upstream sent it.
    Openai(openai::Chunk),
    /// The upstream failed after content was sent; nothing follows. Never a made-up finish.
    Interrupted(String),
}

impl Piece {
    /// The piece as typed events (parsing an OpenAI chunk).
    pub fn events(&self) -> Vec<Event> {
        match self {
            Piece::Events(e) => e.clone(),
            Piece::Openai(c) => c.events(),
            Piece::Interrupted(_) => Vec::new(),
        }
    }
}
