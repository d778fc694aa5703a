//! Streamed answers: each `data:` event of `streamGenerateContent?alt=sse` (a whole
//! `GenerateContentResponse`) into canonical events, one choice.

use serde_json::Value;

use super::answer::{Part, block_reason, call_id, finish, parts, upstream_error, usage};
use super::{TranslateError, opt_str, signature_extra, terr};
use crate::chat::{CallDelta, Event, Finish, Usage};

/// The reader of one streamed answer; owns what it has seen so far.
#[derive(Debug, Clone)]
pub struct Stream {
    /// Makes tool-call ids unique (Gemini names none).
    seed: String,
    /// Tool calls seen so far.
    calls: u64,
    content: bool,
    finished: bool,
    /// Latest usage; Gemini repeats it, cumulatively, on many events.
    usage: Option<Usage>,
    /// The usage last emitted, so a repeat after the finish is not sent twice.
    usage_sent: Option<Usage>,
}

impl Stream {
    pub fn new(seed: &str) -> Self {
        Stream {
            seed: seed.to_string(),
            calls: 0,
            content: false,
            finished: false,
            usage: None,
            usage_sent: None,
        }
    }

    /// Read one event's data; an error is a malformed event or an error the upstream reported.
    pub fn on_event(&mut self, data: &str) -> Result<Vec<Event>, TranslateError> {
        let data = data.trim();
        if data.is_empty() || data == "[DONE]" {
            return Ok(Vec::new());
        }
        let event: Value = serde_json::from_str(data)
            .map_err(|e| terr(format!("malformed Gemini stream event: {e}")))?;
        if !event.is_object() {
            return Err(terr("malformed Gemini stream event: not a JSON object"));
        }
        if let Some(err) = event.get("error") {
            return Err(upstream_error(err));
        }
        let meta = event.get("usageMetadata").filter(|m| m.is_object());
        if let Some(meta) = meta {
            self.usage = Some(usage(meta));
        }
        let mut out = Vec::new();
        let was_finished = self.finished;
        let candidates = event
            .get("candidates")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if candidates.is_empty() && block_reason(&event).is_some() && !self.finished {
            // A blocked prompt: an empty answer stopped by the filter.
            out.push(Event::Text(String::new()));
            out.push(Event::Finish(Finish::ContentFilter));
            self.finished = true;
        }
        let first = candidates
            .iter()
            .enumerate()
            .find(|(pos, c)| {
                c.get("index")
                    .and_then(Value::as_u64)
                    .unwrap_or(*pos as u64)
                    == 0
            })
            .map(|(_, c)| c);
        if let Some(candidate) = first.filter(|_| !self.finished) {
            self.read_candidate(candidate, &mut out)?;
        }
        if let Some(u) = self.usage {
            let finished_now = self.finished && !was_finished;
            let news = was_finished && meta.is_some() && self.usage_sent != Some(u);
            if finished_now || news {
                out.push(Event::Usage(u));
                self.usage_sent = Some(u);
            }
        }
        Ok(out)
    }

    fn read_candidate(
        &mut self,
        candidate: &Value,
        out: &mut Vec<Event>,
    ) -> Result<(), TranslateError> {
        let reason = opt_str(candidate, "finishReason")
            .filter(|r| !r.is_empty() && *r != "FINISH_REASON_UNSPECIFIED");
        let mapped = reason.map(|r| finish(Some(r))).transpose()?;
        // Consecutive text parts become one event; calls keep their place in the order.
        let mut text = String::new();
        for part in parts(candidate)? {
            match part {
                Part::Text(t) => text.push_str(&t),
                Part::Call {
                    name,
                    args,
                    signature,
                } => {
                    if !text.is_empty() {
                        out.push(Event::Text(std::mem::take(&mut text)));
                    }
                    out.push(Event::ToolCall(CallDelta {
                        index: self.calls as u32,
                        id: Some(call_id(&self.seed, self.calls)),
                        name: Some(name),
                        arguments: args,
                        extra: signature_extra(signature.as_deref()),
                    }));
                    self.calls += 1;
                    self.content = true;
                }
            }
        }
        if !text.is_empty() {
            out.push(Event::Text(text));
            self.content = true;
        }
        if let Some(mapped) = mapped {
            let reason = if self.calls > 0 {
                Finish::ToolCalls
            } else {
                mapped
            };
            out.push(Event::Finish(reason));
            self.finished = true;
        }
        Ok(())
    }

    /// Whether a finish reason has been seen (a stream ending without one is a failure).
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Whether any content (text or tool call) has been read.
    pub fn has_content(&self) -> bool {
        self.content
    }

    /// Usage reported so far.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Piece;
    use serde_json::json;

    /// The stream reader and the OpenAI chat surface's framer, as a client sees them together.
    struct Pair {
        s: Stream,
        f: crate::wire::openai::Framer,
    }

    impl Pair {
        /// A client that asked for usage (`stream_options.include_usage`).
        fn new(id: &str, model: &str, created: i64) -> Pair {
            Self::asking(id, model, created, true)
        }
        fn asking(id: &str, model: &str, created: i64, include_usage: bool) -> Pair {
            Pair {
                s: Stream::new(id),
                f: crate::wire::openai::Framer::new(id, model, created, include_usage),
            }
        }
        fn on_event(&mut self, data: &str) -> Result<Vec<Value>, TranslateError> {
            let events = self.s.on_event(data)?;
            Ok(self.f.chunks(&Piece::Events(events)))
        }
        fn finished(&self) -> bool {
            self.s.finished()
        }
        fn has_content(&self) -> bool {
            self.s.has_content()
        }
        fn usage(&self) -> Option<(u64, u64)> {
            self.s.usage().map(|u| (u.input, u.output))
        }
    }

    fn feed(p: &mut Pair, event: Value) -> Vec<Value> {
        match p.on_event(&event.to_string()) {
            Ok(v) => v,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    #[test]
    fn blocked_prompt_is_a_content_filter_finish() {
        let mut s = Pair::new("s", "m", 1);
        let chunks = feed(
            &mut s,
            json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}),
        );
        assert_eq!(chunks.len(), 1);
        assert_eq!(
            chunks[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        assert_eq!(
            chunks[0]["choices"][0]["finish_reason"],
            json!("content_filter")
        );
        assert!(s.finished());
        assert!(!s.has_content());
    }

    #[test]
    fn streamed_text_then_two_calls_then_finish_and_usage() {
        let mut s = Pair::new("chatcmpl-s", "gemini-2.5-pro", 42);
        assert!(!s.finished() && !s.has_content() && s.usage().is_none());

        let c = feed(
            &mut s,
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Let me "}]}}],
            "usageMetadata": {"promptTokenCount": 9}}),
        );
        assert_eq!(
            c,
            vec![
                json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 42, "model": "gemini-2.5-pro",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Let me "}, "finish_reason": null}]})
            ]
        );
        assert!(s.has_content());

        let c = feed(
            &mut s,
            json!({"candidates": [{"content": {"parts": [{"text": "check."}]}}]}),
        );
        assert_eq!(c[0]["choices"][0]["delta"], json!({"content": "check."}));

        let c = feed(
            &mut s,
            json!({"candidates": [{"content": {"parts": [
            {"functionCall": {"name": "a", "args": {"x": 1}}, "thoughtSignature": "SIG"}]}}]}),
        );
        assert_eq!(
            c[0]["choices"][0]["delta"],
            json!({"tool_calls": [{"index": 0, "id": "call_chatcmpl-s_0", "type": "function",
                "function": {"name": "a", "arguments": "{\"x\":1}"},
                "extra_content": {"google": {"thought_signature": "SIG"}}}]})
        );

        let c = feed(
            &mut s,
            json!({"candidates": [{"content": {"parts": [
            {"functionCall": {"name": "b"}}]}}]}),
        );
        assert_eq!(
            c[0]["choices"][0]["delta"],
            json!({"tool_calls": [{"index": 1, "id": "call_chatcmpl-s_1", "type": "function",
                "function": {"name": "b", "arguments": "{}"}}]})
        );
        assert!(!s.finished());

        let c = feed(
            &mut s,
            json!({"candidates": [{"content": {"parts": [{"text": ""}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 6, "totalTokenCount": 15}}),
        );
        assert_eq!(
            c,
            vec![
                json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 42, "model": "gemini-2.5-pro",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
                json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 42, "model": "gemini-2.5-pro",
                "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15}})
            ]
        );
        assert!(s.finished());
        assert_eq!(s.usage(), Some((9, 6)));

        // Same usage repeated: nothing new to say.
        assert!(feed(&mut s, json!({"usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 6, "totalTokenCount": 15}})).is_empty());
    }

    #[test]
    fn stream_usage_after_finish_gets_its_own_chunk() {
        let mut s = Pair::new("id", "m", 0);
        let c = feed(
            &mut s,
            json!({"candidates": [{"content": {"parts": [{"text": "hi"}, {"text": " there"}]}, "finishReason": "MAX_TOKENS"}]}),
        );
        assert_eq!(c.len(), 2);
        assert_eq!(
            c[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": "hi there"})
        );
        assert_eq!(c[1]["choices"][0]["finish_reason"], json!("length"));
        assert!(c[1].get("usage").is_none());
        let c = feed(
            &mut s,
            json!({"usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 3, "totalTokenCount": 5}}),
        );
        assert_eq!(
            c,
            vec![
                json!({"id": "id", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [],
                "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}})
            ]
        );
    }

    #[test]
    fn usage_reaches_only_a_client_that_asked_as_openai_streams_do() {
        let events = [
            json!({"candidates": [{"content": {"parts": [{"text": "hi"}]}}], "usageMetadata": {"promptTokenCount": 2}}),
            json!({"candidates": [{"content": {"parts": [{"text": "!"}]}, "finishReason": "STOP"}],
                   "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 3, "totalTokenCount": 5}}),
        ];
        let mut quiet = Pair::asking("id", "m", 0, false);
        let mut asked = Pair::new("id", "m", 0);
        let (mut q, mut a) = (Vec::new(), Vec::new());
        for e in &events {
            q.extend(feed(&mut quiet, e.clone()));
            a.extend(feed(&mut asked, e.clone()));
        }
        assert!(q.iter().all(|c| c.get("usage").is_none()), "{q:?}");
        assert_eq!(q.last().unwrap()["choices"][0]["finish_reason"], "stop");
        // Asked: the finish chunk carries no usage; a last chunk without choices does.
        let last = a.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["total_tokens"], 5);
        assert!(
            a[..a.len() - 1].iter().all(|c| c.get("usage").is_none()),
            "{a:?}"
        );
        assert_eq!(
            quiet.usage(),
            Some((2, 3)),
            "the ledger still learns the usage"
        );
    }

    #[test]
    fn stream_errors() {
        let mut s = Pair::new("id", "m", 0);
        assert!(s.on_event("{not json").is_err());
        assert!(s.on_event("[1,2]").is_err());
        assert!(
            s.on_event(r#"{"error": {"code": 429, "message": "quota"}}"#)
                .is_err()
        );
        assert!(
            s.on_event(r#"{"candidates": [{"finishReason": "MALFORMED_FUNCTION_CALL"}]}"#)
                .is_err()
        );
        assert_eq!(s.on_event("  "), Ok(vec![]));
        // Finishing with no content still announces the role.
        let c = feed(&mut s, json!({"candidates": [{"finishReason": "STOP"}]}));
        assert_eq!(c[0]["choices"][0]["delta"], json!({"role": "assistant"}));
        assert!(s.finished() && !s.has_content());
    }
}
