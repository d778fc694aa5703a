//! Fills a data dir's request log for the analytics benchmark (`bench/analytics.sh`).
//!
//! ```text
//! cargo run --release --example fill_log -- DATA_DIR [REQUESTS] [DAYS]
//! ```
//!
//! Writes REQUESTS (default 1,000,000) logged requests spread evenly over the last DAYS
//! (default 30) through `Store::insert_requests`, the path the request log's writer takes, so
//! the hourly rollups are kept exactly as a running Freeway keeps them. The mix is seeded and
//! fixed: 4 providers, 12 models, about 4 % failed after two attempts, 1 % cancelled,
//! 8 % served after a failover, 30 % streams. Prints how long the writes took.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use freeway::store::{AttemptRow, RequestRow, Store};
use rand::{Rng, SeedableRng};

const MODELS: [&str; 12] = [
    "gemini/gemini-2.5-flash",
    "gemini/gemini-2.5-pro",
    "gemini/gemini-2.5-flash-lite",
    "groq/llama-3.3-70b-versatile",
    "groq/openai/gpt-oss-120b",
    "groq/qwen/qwen3-32b",
    "cerebras/gpt-oss-120b",
    "cerebras/qwen-3-235b-a22b-instruct-2507",
    "cerebras/llama-3.3-70b",
    "mistral/mistral-large-latest",
    "mistral/mistral-small-latest",
    "mistral/codestral-latest",
];

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: fill_log DATA_DIR [REQUESTS] [DAYS]"))?;
    let total: u64 = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let days: i64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(30);
    std::fs::create_dir_all(&dir)?;
    let store = Store::open(std::path::Path::new(&dir))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    let span = days * 86_400_000;
    let step = span as f64 / total.max(1) as f64;
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let started = Instant::now();
    let mut batch = Vec::with_capacity(5_000);
    for i in 0..total {
        let at_ms = now - span + (i as f64 * step) as i64;
        batch.push(row(&mut rng, i, at_ms));
        if batch.len() == 5_000 {
            store.insert_requests(&batch)?;
            batch.clear();
        }
    }
    store.insert_requests(&batch)?;
    println!(
        "wrote {total} requests over {days} days in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn row(rng: &mut impl Rng, i: u64, at_ms: i64) -> RequestRow {
    let served = MODELS[rng.random_range(0..MODELS.len())];
    let stream = rng.random_bool(0.3);
    let roll: f64 = rng.random();
    let latency_ms = rng.random_range(150..4_000);
    let attempt =
        |target: &str, outcome: &str, status: Option<u16>, error: Option<&str>| AttemptRow {
            target: target.into(),
            key_id: Some(format!("{}-1", target.split('/').next().unwrap_or("x"))),
            outcome: outcome.into(),
            status,
            latency_ms: latency_ms / 2,
            error: error.map(str::to_string),
        };
    let other = MODELS[(i as usize + 5) % MODELS.len()];
    let (status, served_by, attempts, error) = if roll < 0.04 {
        let a = vec![
            attempt(served, "error", Some(429), Some("rate limited")),
            attempt(other, "error", Some(503), Some("overloaded")),
        ];
        (503, None, a, Some("every candidate failed".to_string()))
    } else if roll < 0.05 {
        (
            499,
            Some(served),
            vec![attempt(served, "cancelled", None, None)],
            None,
        )
    } else if roll < 0.13 {
        let a = vec![
            attempt(other, "error", Some(429), Some("rate limited")),
            attempt(served, "ok", Some(200), None),
        ];
        (200, Some(served), a, None)
    } else {
        (
            200,
            Some(served),
            vec![attempt(served, "ok", Some(200), None)],
            None,
        )
    };
    let ok = status == 200;
    RequestRow {
        id: format!("chatcmpl-fill{i:012}"),
        at_ms,
        client: "fill".into(),
        requested_model: "auto".into(),
        served_by: served_by.map(str::to_string),
        status,
        latency_ms,
        ttft_ms: (stream && ok).then(|| rng.random_range(80..900)),
        tokens_in: if ok { rng.random_range(20..6_000) } else { 0 },
        tokens_out: if ok { rng.random_range(5..1_500) } else { 0 },
        stream,
        error,
        attempts,
        surface: Some("chat".into()),
        notes: None,
    }
}
