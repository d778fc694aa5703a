//! Gemini answers -> canonical answers: a whole (non-streaming) answer, error bodies (retry
//! delay), and the stream reader fed one event per input line, framed for an OpenAI client.
//!
//! Properties: never panics; a whole answer says something or was filtered; a stream finishes
//! at most once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

use freeway::chat::{Event, Finish, Piece};
use freeway::providers::gemini::{Stream, from_upstream, retry_delay};
use freeway::wire::openai::{Framer, completion};

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        if let Ok(m) = from_upstream(&v, "id", "model") {
            assert!(
                !m.text.is_empty() || !m.calls.is_empty() || m.finish == Finish::ContentFilter,
                "an answer that says nothing: {m:?}"
            );
            let _ = completion(&m, "id", 0);
        }
        let _ = retry_delay(&v);
    }

    let mut stream = Stream::new("id");
    let mut framer = Framer::new("id", "m", 0, true);
    let mut finishes = 0;
    for line in data.split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(line);
        // Tolerate an SSE `data:` prefix so seeds can be real stream captures.
        let payload = line.strip_prefix("data:").unwrap_or(&line);
        if let Ok(events) = stream.on_event(payload) {
            finishes += events.iter().filter(|e| matches!(e, Event::Finish(_))).count();
            let _ = framer.frame(Piece::Events(events));
        }
        assert!(finishes <= 1, "a stream finished twice");
        assert_eq!(stream.finished(), finishes == 1);
        let _ = (stream.has_content(), stream.usage());
    }
});
