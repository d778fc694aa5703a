//! A fast OpenAI-dialect mock upstream for Freeway's load benchmark (`bench/run.sh`).
//!
//! ```text
//! cargo run --release --example mock_upstream -- --port 0 [--chunks 20] [--chunk-delay-ms 10]
//!     [--slow-chunk-delay-ms 1000] [--slow-chunks 100000]
//! ```
//!
//! Prints `listening on 127.0.0.1:PORT` as its first stdout line.
//!
//! * `POST /v1/chat/completions` without `"stream": true`: a small fixed `chat.completion`.
//! * With `"stream": true`: N `chat.completion.chunk` events with `delta.content`, one
//!   `finish_reason: "stop"` chunk, one usage chunk (`choices: []`), then `data: [DONE]`.
//!   Every event is its own body frame, written after a delay.
//! * `GET /v1/models`: a small model list.
//!
//! Per-request overrides of the stream shape (first match wins):
//! * header `x-mock-chunks` / `x-mock-chunk-delay-ms`;
//! * query `?chunks=N&delay_ms=M`;
//! * a request whose `model` ends in `-slow` uses `--slow-chunks` / `--slow-chunk-delay-ms`
//!   (this one survives a gateway that forwards neither headers nor query strings).
//!
//! Defaults also come from the environment: `MOCK_CHUNKS`, `MOCK_CHUNK_DELAY_MS`.
//!
//! `--count-model ID` counts the chat requests received for that model (the upstream truth of
//! `bench/replicas.sh`'s capped key); `GET /stats` answers `{"model": ID, "chat_requests": N}`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use serde::Deserialize;

#[derive(Clone, Copy)]
struct Settings {
    chunks: u64,
    delay_ms: u64,
    slow_chunks: u64,
    slow_delay_ms: u64,
}

struct Shared {
    settings: Settings,
    completion: Bytes,
    models: Bytes,
    /// The model whose chat requests are counted (`--count-model`), if any.
    counted_model: Option<String>,
    /// Chat requests received for `counted_model`.
    counted: AtomicU64,
}

#[derive(Deserialize)]
struct ReqBody<'a> {
    #[serde(default)]
    stream: bool,
    #[serde(default, borrow)]
    model: Option<&'a str>,
}

const CONTENT_PIECE: &str = "tok ";

fn arg_value(args: &[String], name: &str) -> Option<String> {
    let eq = format!("{name}=");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == name {
            return it.next().cloned();
        }
        if let Some(v) = a.strip_prefix(&eq) {
            return Some(v.to_string());
        }
    }
    None
}

fn num(args: &[String], flag: &str, env: &str, default: u64) -> u64 {
    arg_value(args, flag)
        .or_else(|| std::env::var(env).ok())
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{flag}/{env}: not a number: {v}"))
        })
        .unwrap_or(default)
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        eprintln!(
            "mock_upstream --port P [--chunks N] [--chunk-delay-ms MS] [--slow-chunks N] [--slow-chunk-delay-ms MS] [--threads T] [--count-model ID]"
        );
        return Ok(());
    }
    let port = num(&args, "--port", "MOCK_PORT", 0);
    let settings = Settings {
        chunks: num(&args, "--chunks", "MOCK_CHUNKS", 20),
        delay_ms: num(&args, "--chunk-delay-ms", "MOCK_CHUNK_DELAY_MS", 10),
        slow_chunks: num(&args, "--slow-chunks", "MOCK_SLOW_CHUNKS", 100_000),
        slow_delay_ms: num(
            &args,
            "--slow-chunk-delay-ms",
            "MOCK_SLOW_CHUNK_DELAY_MS",
            1000,
        ),
    };
    let threads = num(&args, "--threads", "MOCK_THREADS", 0) as usize;
    let counted_model = arg_value(&args, "--count-model");

    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if threads > 0 {
        rt.worker_threads(threads);
    }
    rt.build()?
        .block_on(serve(port as u16, settings, counted_model))
}

async fn serve(
    port: u16,
    settings: Settings,
    counted_model: Option<String>,
) -> std::io::Result<()> {
    let completion = serde_json::json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1_700_000_000u64,
        "model": "mock-model",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "Hello from the mock upstream."},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16}
    });
    let models = serde_json::json!({
        "object": "list",
        "data": [
            {"id": "mock-model", "object": "model", "created": 1_700_000_000u64, "owned_by": "mock"},
            {"id": "mock-slow", "object": "model", "created": 1_700_000_000u64, "owned_by": "mock"}
        ]
    });
    let shared = Arc::new(Shared {
        settings,
        completion: Bytes::from(serde_json::to_vec(&completion).expect("json")),
        models: Bytes::from(serde_json::to_vec(&models).expect("json")),
        counted_model,
        counted: AtomicU64::new(0),
    });

    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(list_models))
        .route("/v1/embeddings", post(embeddings))
        .route("/livez", get(|| async { "ok" }))
        .route("/stats", get(stats))
        .with_state(shared);

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
    }
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await
}

/// `POST /v1/embeddings`: one 768-dimensional vector per input (always the same numbers).
async fn embeddings(body: Bytes) -> Response {
    static VECTOR: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let vector = VECTOR.get_or_init(|| {
        let v: Vec<f32> = (0..768)
            .map(|i| ((i * 37) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        serde_json::to_string(&v).expect("json")
    });
    let inputs = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| match &v["input"] {
            serde_json::Value::Array(a) => Some(a.len()),
            serde_json::Value::String(_) => Some(1),
            _ => None,
        })
        .unwrap_or(1);
    let mut out = String::from(r#"{"object":"list","data":["#);
    for i in 0..inputs {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            r#"{{"object":"embedding","index":{i},"embedding":{vector}}}"#
        ));
    }
    out.push_str(&format!(
        r#"],"model":"mock-embed","usage":{{"prompt_tokens":{0},"total_tokens":{0}}}}}"#,
        inputs * 8
    ));
    json_response(Bytes::from(out))
}

async fn list_models(State(s): State<Arc<Shared>>) -> Response {
    json_response(s.models.clone())
}

/// `GET /stats`: how many chat requests the counted model (`--count-model`) received.
async fn stats(State(s): State<Arc<Shared>>) -> Response {
    let body = serde_json::json!({
        "model": s.counted_model,
        "chat_requests": s.counted.load(Ordering::Relaxed),
    });
    json_response(Bytes::from(body.to_string()))
}

fn json_response(body: Bytes) -> Response {
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn header_num(h: &HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

async fn chat(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req: ReqBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "application/json")],
                format!(
                    r#"{{"error":{{"message":"bad json: {}","type":"invalid_request_error"}}}}"#,
                    e.to_string().replace('"', "'")
                ),
            )
                .into_response();
        }
    };
    if req.model.is_some() && req.model == s.counted_model.as_deref() {
        s.counted.fetch_add(1, Ordering::Relaxed);
    }
    if !req.stream {
        return json_response(s.completion.clone());
    }
    let model = req.model.unwrap_or("mock-model").to_string();
    let slow = model.ends_with("-slow");
    let cfg = s.settings;
    let chunks = header_num(&headers, "x-mock-chunks")
        .or_else(|| q.get("chunks").and_then(|v| v.parse().ok()))
        .unwrap_or(if slow { cfg.slow_chunks } else { cfg.chunks });
    let delay_ms = header_num(&headers, "x-mock-chunk-delay-ms")
        .or_else(|| q.get("delay_ms").and_then(|v| v.parse().ok()))
        .unwrap_or(if slow {
            cfg.slow_delay_ms
        } else {
            cfg.delay_ms
        });
    sse_response(model, chunks, Duration::from_millis(delay_ms))
}

/// Which event comes next in a stream.
struct StreamState {
    model: String,
    chunks: u64,
    delay: Duration,
    /// 0..chunks: content chunks; chunks: finish; chunks+1: usage; chunks+2: [DONE].
    next: u64,
}

fn sse_response(model: String, chunks: u64, delay: Duration) -> Response {
    let st = StreamState {
        model,
        chunks,
        delay,
        next: 0,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        let i = st.next;
        if i > st.chunks + 2 {
            return None;
        }
        // First event goes out at once (like a real provider's role chunk); each later one after
        // the delay, so the client sees `chunks` gaps of `delay`.
        if i > 0 && !st.delay.is_zero() {
            tokio::time::sleep(st.delay).await;
        }
        st.next += 1;
        let ev = if i < st.chunks {
            let role = if i == 0 { r#""role":"assistant","# } else { "" };
            format!(
                "data: {{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"{}\",\"choices\":[{{\"index\":0,\"delta\":{{{role}\"content\":\"{CONTENT_PIECE}\"}},\"finish_reason\":null}}]}}\n\n",
                st.model
            )
        } else if i == st.chunks {
            format!(
                "data: {{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"{}\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\n\n",
                st.model
            )
        } else if i == st.chunks + 1 {
            format!(
                "data: {{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"{}\",\"choices\":[],\"usage\":{{\"prompt_tokens\":9,\"completion_tokens\":{},\"total_tokens\":{}}}}}\n\n",
                st.model,
                st.chunks,
                st.chunks + 9
            )
        } else {
            "data: [DONE]\n\n".to_string()
        };
        Some((Ok::<Bytes, Infallible>(Bytes::from(ev)), st))
    });
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
