//! Streaming client for Freeway's load benchmark (`bench/run.sh`).
//!
//! Measure mode (default): open K concurrent SSE streams, print one JSON summary on stdout.
//!
//! ```text
//! stream_probe --url http://127.0.0.1:P/v1/chat/completions [--key fw-bench] [--model mock-model]
//!     [--concurrency 64] [--warmup 1] [--rounds 1] [--timeout-secs 60] [--raw FILE]
//! ```
//!
//! `--surface chat|messages|responses|gemini` picks the body's dialect (POST it to the matching
//! route): a chat-completions, Anthropic Messages, Responses or Gemini `streamGenerateContent`
//! request; a stream is done at `data: [DONE]`, `message_stop`, `response.completed` or a
//! chunk with Gemini's `finishReason`.
//!
//! `--rounds R` runs R measured rounds of K streams one after another and pools them.
//! Per stream it records the time to first byte (first body chunk that contains `data:`), the
//! total time to the end of the body, and the gap between successive SSE events as they are
//! parsed out of the body chunks the client receives: events that arrive in one read have a
//! gap of ~0, so a gateway that batches chunks shows up as a bimodal gap distribution.
//!
//! Hold mode: `--hold N --hold-secs S [--watch-pid PID]` opens N streams, waits until each has
//! its first event, prints `HOLDING n` on stderr, keeps them open for S seconds (reading what
//! comes), then closes them all. With `--watch-pid` it samples that process's VmRSS while the
//! streams are held and reports it (bytes) in the JSON.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;

struct Args {
    url: String,
    key: Option<String>,
    model: String,
    surface: String,
    concurrency: usize,
    warmup: usize,
    rounds: usize,
    timeout: Duration,
    include_usage: bool,
    hold: usize,
    hold_secs: f64,
    watch_pid: Option<u32>,
    raw: Option<String>,
}

fn parse_args() -> Args {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let get = |name: &str| -> Option<String> {
        let eq = format!("{name}=");
        let mut it = argv.iter();
        while let Some(a) = it.next() {
            if a == name {
                return it.next().cloned();
            }
            if let Some(v) = a.strip_prefix(&eq) {
                return Some(v.to_string());
            }
        }
        None
    };
    if argv.iter().any(|a| a == "-h" || a == "--help") {
        eprintln!(
            "stream_probe --url URL [--key K] [--model M] [--surface chat|messages|responses|gemini] [--concurrency K] [--warmup R] [--rounds R] [--timeout-secs T] [--no-usage] [--raw FILE]\n\
             stream_probe --url URL --hold N --hold-secs S [--watch-pid PID] [--model mock-slow]"
        );
        std::process::exit(0);
    }
    let num = |name: &str, default: f64| -> f64 {
        get(name)
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name}: not a number: {v}"))
            })
            .unwrap_or(default)
    };
    Args {
        url: get("--url").unwrap_or_else(|| {
            eprintln!("--url is required");
            std::process::exit(2)
        }),
        key: get("--key"),
        model: get("--model").unwrap_or_else(|| "mock-model".into()),
        surface: get("--surface").unwrap_or_else(|| "chat".into()),
        concurrency: num("--concurrency", 64.0) as usize,
        warmup: num("--warmup", 1.0) as usize,
        rounds: (num("--rounds", 1.0) as usize).max(1),
        timeout: Duration::from_secs_f64(num("--timeout-secs", 60.0)),
        include_usage: !argv.iter().any(|a| a == "--no-usage"),
        hold: num("--hold", 0.0) as usize,
        hold_secs: num("--hold-secs", 10.0),
        watch_pid: get("--watch-pid").map(|v| v.parse().expect("--watch-pid")),
        raw: get("--raw"),
    }
}

#[derive(Default, Debug)]
struct StreamResult {
    ok: bool,
    status: u16,
    error: Option<String>,
    ttfb_ms: f64,
    total_ms: f64,
    /// Arrival time (ms since request start) of each SSE event.
    event_ms: Vec<f64>,
    body_reads: usize,
    done: bool,
    finish_seen: bool,
}

fn body_json(surface: &str, model: &str, include_usage: bool) -> String {
    match surface {
        "messages" => {
            return json!({"model": model, "max_tokens": 1024, "stream": true,
                "messages": [{"role": "user", "content": "hi"}]})
            .to_string();
        }
        "responses" => {
            return json!({"model": model, "stream": true, "input": "hi"}).to_string();
        }
        // Gemini's own API: the model is in the URL (`…/models/M:streamGenerateContent?alt=sse`).
        "gemini" => {
            return json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}).to_string();
        }
        _ => {}
    }
    let mut v = json!({
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": true,
    });
    if include_usage {
        v["stream_options"] = json!({"include_usage": true});
    }
    v.to_string()
}

async fn one_stream(
    client: reqwest::Client,
    url: String,
    key: Option<String>,
    body: String,
    timeout: Duration,
    hold_until: Option<(
        tokio::sync::mpsc::Sender<()>,
        tokio::sync::watch::Receiver<bool>,
    )>,
) -> StreamResult {
    let mut r = StreamResult::default();
    let start = Instant::now();
    let mut req = client
        .post(&url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(k) = &key {
        req = req.bearer_auth(k);
    }
    let fut = async {
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => {
                r.error = Some(format!("send: {e}"));
                return;
            }
        };
        r.status = resp.status().as_u16();
        if !resp.status().is_success() {
            let text = resp.text().await.unwrap_or_default();
            r.error = Some(format!(
                "status {}: {}",
                r.status,
                text.chars().take(300).collect::<String>()
            ));
            return;
        }
        let (mut opened_tx, mut stop_rx) = match hold_until {
            Some((tx, rx)) => (Some(tx), Some(rx)),
            None => (None, None),
        };
        let mut stream = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::with_capacity(1024);
        loop {
            let item = if let Some(stop) = stop_rx.as_mut() {
                tokio::select! {
                    item = stream.next() => item,
                    _ = stop.wait_for(|s| *s) => {
                        // Held long enough: close the stream.
                        r.ok = true;
                        return;
                    }
                }
            } else {
                stream.next().await
            };
            let Some(item) = item else { break };
            let chunk = match item {
                Ok(c) => c,
                Err(e) => {
                    r.error = Some(format!("body: {e}"));
                    return;
                }
            };
            let now = start.elapsed().as_secs_f64() * 1e3;
            r.body_reads += 1;
            if r.ttfb_ms == 0.0 && chunk.windows(5).any(|w| w == b"data:") {
                r.ttfb_ms = now;
            }
            buf.extend_from_slice(&chunk);
            // Split complete events ("\n\n"-terminated; tolerate "\r\n\r\n").
            loop {
                let pos = find_event_end(&buf);
                let Some((end, sep)) = pos else { break };
                let ev: Vec<u8> = buf.drain(..end + sep).collect();
                let text = String::from_utf8_lossy(&ev[..end]);
                let mut has_data = false;
                for line in text.lines() {
                    if let Some(d) = line.strip_prefix("data:") {
                        has_data = true;
                        let d = d.trim();
                        if d == "[DONE]"
                            || d.contains("\"type\":\"message_stop\"")
                            || d.contains("\"type\":\"response.completed\"")
                            || d.contains("\"finishReason\":")
                        {
                            r.done = true;
                        } else if d.contains("\"finish_reason\":\"stop\"") {
                            r.finish_seen = true;
                        }
                    }
                }
                if has_data {
                    r.event_ms.push(now);
                    if let Some(tx) = opened_tx.take() {
                        let _ = tx.send(()).await;
                    }
                }
            }
        }
        r.ok = r.done;
        if !r.done {
            r.error = Some("stream ended without data: [DONE]".into());
        }
    };
    if tokio::time::timeout(timeout, fut).await.is_err() {
        r.ok = false;
        r.error = Some(format!("timeout after {:?}", timeout));
    }
    r.total_ms = start.elapsed().as_secs_f64() * 1e3;
    r
}

fn find_event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let a = buf.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2));
    let b = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4));
    match (a, b) {
        (Some(x), Some(y)) => Some(if x.0 <= y.0 { x } else { y }),
        (x, y) => x.or(y),
    }
}

fn pct(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    // Nearest-rank percentile.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn stats(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mean = if v.is_empty() {
        None
    } else {
        Some(v.iter().sum::<f64>() / v.len() as f64)
    };
    json!({
        "n": v.len(),
        "min": v.first(),
        "p50": pct(&v, 50.0),
        "p90": pct(&v, 90.0),
        "p99": pct(&v, 99.0),
        "max": v.last(),
        "mean": mean,
    })
}

fn client(n: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(n.max(1))
        .tcp_nodelay(true)
        .http1_only()
        .build()
        .expect("client")
}

fn read_rss(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

async fn measure(a: Args) {
    let k = a.concurrency.max(1);
    let c = client(k);
    let body = body_json(&a.surface, &a.model, a.include_usage);
    let run_round = |c: reqwest::Client| {
        let mut handles = Vec::with_capacity(k);
        for _ in 0..k {
            handles.push(tokio::spawn(one_stream(
                c.clone(),
                a.url.clone(),
                a.key.clone(),
                body.clone(),
                a.timeout,
                None,
            )));
        }
        async move {
            let mut out = Vec::with_capacity(k);
            for h in handles {
                out.push(h.await.expect("task"));
            }
            out
        }
    };
    // Warm-up rounds open the connections (kept in the pool) so the measured round is not a
    // measure of TCP connect + accept.
    for _ in 0..a.warmup {
        let _ = run_round(c.clone()).await;
    }
    // Measured rounds: K streams each, one round after the other; statistics pool all rounds.
    let wall = Instant::now();
    let mut results = Vec::with_capacity(k * a.rounds);
    for _ in 0..a.rounds {
        results.extend(run_round(c.clone()).await);
    }
    let wall_ms = wall.elapsed().as_secs_f64() * 1e3 / a.rounds as f64;

    let mut ttfb = Vec::new();
    let mut total = Vec::new();
    let mut gaps = Vec::new();
    let mut first_gap = Vec::new();
    let mut events = Vec::new();
    let mut reads = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let mut ok = 0usize;
    for r in &results {
        *statuses.entry(r.status).or_default() += 1;
        if !r.ok {
            if let Some(e) = &r.error {
                if errors.len() < 5 {
                    errors.push(e.clone());
                }
            }
            continue;
        }
        ok += 1;
        ttfb.push(r.ttfb_ms);
        total.push(r.total_ms);
        events.push(r.event_ms.len() as f64);
        reads.push(r.body_reads as f64);
        for (i, w) in r.event_ms.windows(2).enumerate() {
            let g = w[1] - w[0];
            if i == 0 {
                first_gap.push(g);
            }
            gaps.push(g);
        }
    }
    let near_zero = gaps.iter().filter(|g| **g < 1.0).count();
    let n_gaps = gaps.len();
    if let Some(path) = &a.raw {
        let raw: Vec<_> = results
            .iter()
            .map(|r| json!({"ok": r.ok, "status": r.status, "ttfb_ms": r.ttfb_ms, "total_ms": r.total_ms, "event_ms": r.event_ms, "error": r.error}))
            .collect();
        let _ = std::fs::write(path, serde_json::to_string(&raw).unwrap());
    }
    let out = json!({
        "mode": "measure",
        "url": a.url,
        "model": a.model,
        "concurrency": k,
        "rounds": a.rounds,
        "streams": results.len(),
        "ok": ok,
        "failed": results.len() - ok,
        "statuses": statuses.iter().map(|(s, n)| (s.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "errors": errors,
        "wall_ms": wall_ms,
        "ttfb_ms": stats(ttfb),
        "total_ms": stats(total),
        "gap_ms": stats(gaps),
        "first_gap_ms": stats(first_gap),
        "gaps_under_1ms": near_zero,
        "gaps_under_1ms_frac": if n_gaps > 0 { near_zero as f64 / n_gaps as f64 } else { 0.0 },
        "events_per_stream": stats(events),
        "body_reads_per_stream": stats(reads),
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}

async fn hold(a: Args) {
    let n = a.hold;
    let c = client(n);
    let body = body_json(&a.surface, &a.model, a.include_usage);
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel::<()>(n.max(1));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let timeout = a.timeout.max(Duration::from_secs_f64(a.hold_secs + 60.0));
    let t0 = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for _ in 0..n {
        handles.push(tokio::spawn(one_stream(
            c.clone(),
            a.url.clone(),
            a.key.clone(),
            body.clone(),
            timeout,
            Some((opened_tx.clone(), stop_rx.clone())),
        )));
    }
    drop(opened_tx);
    // Wait until every stream has its first event (or 30 s).
    let mut opened = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while opened < n {
        match tokio::time::timeout_at(deadline, opened_rx.recv()).await {
            Ok(Some(())) => opened += 1,
            _ => break,
        }
    }
    let open_ms = t0.elapsed().as_secs_f64() * 1e3;
    eprintln!("HOLDING {opened}");
    // Hold, sampling the watched process's RSS.
    let mut rss_samples = Vec::new();
    let hold_end = Instant::now() + Duration::from_secs_f64(a.hold_secs);
    while Instant::now() < hold_end {
        if let Some(pid) = a.watch_pid {
            if let Some(r) = read_rss(pid) {
                rss_samples.push(r);
            }
        }
        tokio::time::sleep(
            Duration::from_millis(250).min(hold_end.saturating_duration_since(Instant::now())),
        )
        .await;
    }
    let rss_end = a.watch_pid.and_then(read_rss);
    let _ = stop_tx.send(true);
    let mut still_ok = 0usize;
    let mut errors = Vec::new();
    let mut events = 0usize;
    for h in handles {
        let r = h.await.expect("task");
        events += r.event_ms.len();
        if r.ok {
            still_ok += 1;
        } else if let Some(e) = r.error {
            if errors.len() < 5 {
                errors.push(e);
            }
        }
    }
    let out = json!({
        "mode": "hold",
        "url": a.url,
        "requested": n,
        "opened": opened,
        "open_ms": open_ms,
        "held_ok": still_ok,
        "hold_secs": a.hold_secs,
        "events_received": events,
        "errors": errors,
        "watch_pid": a.watch_pid,
        "rss_bytes_max": rss_samples.iter().max(),
        "rss_bytes_end": rss_end,
        "rss_samples": rss_samples.len(),
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}

fn main() {
    let a = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        if a.hold > 0 {
            hold(a).await
        } else {
            measure(a).await
        }
    });
}
