//! Client surfaces, pure (no HTTP framework in them): each translates its dialect's requests
//! into the canonical request and frames canonical answers and errors back. `openai` is the
//! chat-completions surface, `anthropic` the Messages API (Claude Code), `responses` the
//! Responses API (Codex CLI), `completions` the legacy text completions (editor autocomplete),
//! `ollama` Ollama's `/api/chat` and `/api/generate` (local tools), `gemini` Gemini's own API
//! (Google's SDKs, the Gemini CLI), `embeddings` OpenAI's `/v1/embeddings`; `sse` is the
//! Server-Sent Events codec they share with the upstream dialects. `read` reads a body into a
//! surface's typed request with errors that name the field at fault.

pub mod anthropic;
pub mod completions;
pub mod embeddings;
pub mod gemini;
pub mod ollama;
pub mod openai;
mod read;
pub mod responses;

use bytes::Bytes;

use crate::chat::Piece;

/// What every surface tells its client when the upstream stream broke after content was sent
/// (the answer cannot fail over any more).
pub fn interrupted(reason: &str) -> String {
    format!("the upstream stream broke after content was sent: {reason}")
}

/// What every surface tells its client when the upstream stream ended with no finish reason.
pub const NO_FINISH: &str = "the upstream stream ended without saying why";

/// Frames one streamed answer in a surface's dialect, piece by piece.
pub trait Frames: Send + 'static {
    /// The bytes of one piece, if it shows anything.
    fn frame(&mut self, piece: Piece) -> Option<Bytes>;
    /// The bytes that close the stream after its last piece.
    fn end(&mut self) -> Option<Bytes>;
}

/// One named SSE event (`event: NAME` then `data: JSON`), appended to `buf`.
pub(crate) fn push_event(buf: &mut Vec<u8>, name: &str, data: &serde_json::Value) {
    buf.extend_from_slice(b"event: ");
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b"\ndata: ");
    // Writing a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, data);
    buf.extend_from_slice(b"\n\n");
}

/// Text parts joined, for places that take one string.
pub(crate) fn join_text<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for p in parts {
        if p.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(p);
    }
    out
}
