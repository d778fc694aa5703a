//! Client surfaces, pure (no HTTP framework in them): each translates its dialect's requests
//! into the canonical request and frames canonical answers and errors back. `openai` is the
//! chat-completions surface; `sse` is the Server-Sent Events codec they share with the upstream
//! dialects.

pub mod openai;
pub mod sse;
