//! What it costs to read a surface's request: 100k parses each of a recorded Claude Code
//! Messages request and a recorded Codex Responses request (the fixtures the tests use).
//!
//! ```text
//! cargo run --release --example parse_cost [-- ROUNDS]
//! ```
//!
//! Prints microseconds per parse. A measurement, not a test: no figure is asserted anywhere.

use std::time::Instant;

use freeway::wire::{anthropic, responses};

fn body(fixture: &str) -> Vec<u8> {
    let v: serde_json::Value = serde_json::from_str(fixture).expect("a fixture is JSON");
    serde_json::to_vec(&v["body"]).expect("a body serializes")
}

fn time(name: &str, rounds: u32, mut parse: impl FnMut() -> usize) {
    // Warm up caches and the allocator before timing.
    let mut sink = 0;
    for _ in 0..rounds / 10 {
        sink += parse();
    }
    let start = Instant::now();
    for _ in 0..rounds {
        sink += parse();
    }
    let per = start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    println!("{name}: {per:.2} µs per parse ({rounds} parses, checksum {sink})");
}

fn main() {
    let rounds = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let claude = body(include_str!(
        "../tests/fixtures/claude_code_2.1.197_messages_request.json"
    ));
    let codex = body(include_str!(
        "../tests/fixtures/codex_0.169.0_responses_request.json"
    ));
    time("Claude Code /v1/messages", rounds, || {
        let p = anthropic::parse(&claude, |m| m.to_string()).expect("it parses");
        p.req.fields().len() + p.notes.len()
    });
    time("Codex /v1/responses", rounds, || {
        let p = responses::parse(&codex).expect("it parses");
        p.req.fields().len() + p.notes.len()
    });
}
