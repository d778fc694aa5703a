//! OpenAI request -> Gemini request translation, and JSON Schema cleaning, on arbitrary JSON.
//!
//! Properties: never panics (on any JSON value, any nesting the JSON parser accepts).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

use freeway::providers::gemini::{clean_schema, to_upstream};

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Ok(out) = to_upstream(&v, &|_| None) {
        let _ = serde_json::to_vec(&out);
    }
    // Again with remembered thought signatures, for the replayed-tool-call paths.
    let _ = to_upstream(&v, &|id| (id.len() % 2 == 0).then(|| format!("sig-{id}")));
    let cleaned = clean_schema(&v);
    let _ = serde_json::to_vec(&cleaned);
    // Tool schemas usually arrive under tools[].function.parameters: clean those too.
    if let Some(tools) = v.get("tools").and_then(Value::as_array) {
        for t in tools {
            if let Some(params) = t.pointer("/function/parameters") {
                let _ = clean_schema(params);
            }
        }
    }
});
