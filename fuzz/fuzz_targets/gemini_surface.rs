//! Gemini API client requests (`wire::gemini`): `generateContent` and `countTokens` bodies into
//! the canonical request, and the Google schemas in them into JSON schemas.
//!
//! Properties: never panics; a body that parses is a canonical request naming the routed model
//! with at least one message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

use freeway::wire::gemini::{parse, parse_count, to_json_schema};

fuzz_target!(|data: &[u8]| {
    for stream in [false, true] {
        if let Ok(p) = parse(data, "gemini-fuzz", stream, |m| format!("routed-{m}")) {
            let body = p.req.to_map();
            assert_eq!(
                body.get("model").and_then(Value::as_str),
                Some("routed-gemini-fuzz")
            );
            assert!(
                body.get("messages")
                    .and_then(Value::as_array)
                    .is_some_and(|m| !m.is_empty()),
                "a parsed request without messages"
            );
        }
    }
    let _ = parse_count(data, "m", |m| m.to_string());
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        let _ = serde_json::to_vec(&to_json_schema(&v, 0));
    }
});
