//! Client-facing wire formats with no HTTP framework in them: the OpenAI chat types and the
//! SSE codec.

pub mod openai;
pub mod sse;
