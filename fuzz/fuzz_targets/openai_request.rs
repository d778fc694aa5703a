//! OpenAI chat request parsing, then the outgoing body for several OpenAI-dialect vendors
//! whose quirks differ (drop/rename params, max_tokens cap, flattened content, tool schema
//! cleaning, tool params, stream usage).
//!
//! The same bytes as an embeddings request (SPEC 2.5), then as each embedding API's body.
//!
//! Properties: never panics; every outgoing body is a JSON object naming the upstream model.
#![no_main]

use std::sync::OnceLock;

use freeway::catalog::Catalog;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const MODELS: &[&str] = &[
    "groq/llama-3.3-70b-versatile",
    "mistral/mistral-small-latest",
    "cloudflare/@cf/openai/gpt-oss-120b",
    "cohere/command-a-03-2025",
    "nvidia/deepseek-ai/deepseek-v3.1",
    "github/openai/gpt-4.1",
];

struct Setup {
    catalog: Catalog,
    models: Vec<String>,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let catalog = Catalog::builtin().expect("the builtin catalog loads");
        let models = MODELS
            .iter()
            .map(|r| {
                catalog
                    .model(r)
                    .unwrap_or_else(|| panic!("fuzz target out of date: {r} is not in the catalog"))
                    .reference
                    .clone()
            })
            .collect();
        Setup { catalog, models }
    })
}

fuzz_target!(|data: &[u8]| {
    let s = setup();
    if let Ok(e) = freeway::wire::embeddings::parse(data) {
        for m in &s.catalog.embeddings {
            let Some(facts) = m.embed.as_deref() else {
                continue;
            };
            let batch = freeway::providers::embed::Batch {
                inputs: &e.inputs,
                dims: e.dims,
                query: e.query,
            };
            if let Ok(out) = freeway::providers::embed::body(m, facts, &batch) {
                let v: Value = serde_json::from_slice(&out).expect("an embedding body is JSON");
                assert!(v.is_object(), "embedding body for {} is not an object", m.reference);
            }
        }
    }
    let Ok(req) = freeway::wire::openai::parse(data) else {
        return;
    };
    let _ = req.facts.token_estimate();
    for r in &s.models {
        let Some(m) = s.catalog.model(r) else {
            continue;
        };
        let p = s.catalog.provider_of(m);
        let out = freeway::providers::openai::body(&req, p, m, None);
        let v: Value = serde_json::from_slice(&out).unwrap_or_else(|e| {
            panic!(
                "body for {} is not JSON ({e}): {:?}",
                m.reference,
                String::from_utf8_lossy(&out)
            )
        });
        assert!(
            v.is_object(),
            "body for {} is not an object",
            m.reference
        );
        assert_eq!(
            v.get("model").and_then(Value::as_str),
            Some(m.id.as_str()),
            "body for {} does not name the upstream model",
            m.reference
        );
    }
});
