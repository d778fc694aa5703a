//! Gemini answers -> OpenAI shapes: a whole (non-streaming) answer, error bodies (retry
//! delay), and the stream translator fed one event per input line.
//!
//! Properties: never panics; a retry delay, when found, is finite and not negative.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

use freeway::providers::gemini::{Stream, from_upstream, retry_delay_secs, signatures};

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        if let Ok(out) = from_upstream(&v, "id", "model", 0) {
            let _ = signatures(&out);
        }
        let _ = signatures(&v);
        if let Some(secs) = retry_delay_secs(&v) {
            assert!(secs.is_finite() && secs >= 0.0, "retry delay {secs}");
        }
    }

    let mut stream = Stream::new("id", "m", 0);
    for line in data.split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(line);
        // Tolerate an SSE `data:` prefix so seeds can be real stream captures.
        let payload = line.strip_prefix("data:").unwrap_or(&line);
        if let Ok(chunks) = stream.on_event(payload) {
            for c in &chunks {
                let _ = signatures(c);
            }
        }
        let _ = (stream.finished(), stream.has_content(), stream.usage());
    }
});
