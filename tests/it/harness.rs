//! Test harness: Freeway and mock upstreams on ephemeral loopback ports.
//!
//! `Mock` is a programmable upstream: a closure decides each reply (JSON, SSE with pauses,
//! stalls, cuts), and every call is recorded. `TestApp` runs the real server in-process.

#![allow(dead_code)]

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use freeway::app::{self, App};
use freeway::config::Config;
/// The ledger's methods, for tests that look at usage and cooldowns.
pub use freeway::ledger::Ledger;
use freeway::ledger::{Clock, ManualClock, SystemClock};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};

pub const CLIENT_KEY: &str = "fw-test-client-key";

/// One request the mock received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
    pub fn bearer(&self) -> Option<String> {
        self.header("authorization")
            .and_then(|v| v.strip_prefix("Bearer ").map(str::to_string))
    }
    pub fn model(&self) -> String {
        self.body["model"].as_str().unwrap_or("").to_string()
    }
}

/// One piece of a scripted stream.
#[derive(Clone)]
pub enum Piece {
    /// Raw bytes to send as one write.
    Raw(String),
    /// Wait.
    Sleep(Duration),
    /// Wait until the test says go.
    Wait(Arc<Notify>),
}

/// What the mock answers.
#[derive(Clone)]
pub enum Reply {
    Json {
        status: u16,
        body: Value,
        headers: Vec<(String, String)>,
    },
    Text {
        status: u16,
        body: String,
    },
    /// 200 text/event-stream made of pieces; the body simply ends after the last one.
    Stream(Vec<Piece>),
    /// Answer with `inner` after a pause.
    Delay(Duration, Box<Reply>),
}

impl Reply {
    pub fn ok(content: &str) -> Reply {
        Reply::Json {
            status: 200,
            body: completion("mock-model", content),
            headers: vec![],
        }
    }
    pub fn status(status: u16, message: &str) -> Reply {
        Reply::Json {
            status,
            body: json!({"error": {"message": message, "type": "error"}}),
            headers: vec![],
        }
    }
    pub fn with_header(self, name: &str, value: &str) -> Reply {
        match self {
            Reply::Json {
                status,
                body,
                mut headers,
            } => {
                headers.push((name.into(), value.into()));
                Reply::Json {
                    status,
                    body,
                    headers,
                }
            }
            other => other,
        }
    }
}

/// A chat.completion body.
pub fn completion(model: &str, content: &str) -> Value {
    json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    })
}

/// An SSE chunk with text content.
pub fn chunk(model: &str, content: &str) -> String {
    let v = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1, "model": model,
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]});
    format!("data: {v}\n\n")
}

/// The finishing SSE chunk.
pub fn finish_chunk(model: &str) -> String {
    let v = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1, "model": model,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
    format!("data: {v}\n\n")
}

/// A complete streamed answer of `parts`.
pub fn stream_of(model: &str, parts: &[&str]) -> Reply {
    let mut pieces: Vec<Piece> = parts.iter().map(|p| Piece::Raw(chunk(model, p))).collect();
    pieces.push(Piece::Raw(finish_chunk(model)));
    pieces.push(Piece::Raw(
        "data: {\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}\n\n".into(),
    ));
    pieces.push(Piece::Raw("data: [DONE]\n\n".into()));
    Reply::Stream(pieces)
}

type Handler = Arc<dyn Fn(&Received, usize) -> Reply + Send + Sync>;

struct MockState {
    handler: Mutex<Handler>,
    calls: Mutex<Vec<Received>>,
    connections: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// A mock upstream on an ephemeral port.
#[derive(Clone)]
pub struct Mock {
    pub addr: std::net::SocketAddr,
    state: Arc<MockState>,
}

impl Mock {
    /// Start a mock that answers `Reply::ok("hello from mock")` until told otherwise.
    pub async fn start() -> Mock {
        let state = Arc::new(MockState {
            handler: Mutex::new(Arc::new(|r: &Received, _| {
                if r.body["stream"] == json!(true) {
                    stream_of(&r.model(), &["hello", " from", " mock"])
                } else {
                    Reply::Json {
                        status: 200,
                        body: completion(&r.model(), "hello from mock"),
                        headers: vec![],
                    }
                }
            })),
            calls: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let router = Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counter = state.clone();
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(move |_| {
            counter.connections.fetch_add(1, Ordering::SeqCst);
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Mock { addr, state }
    }

    /// Decide replies with `f(request, call_index)`.
    pub fn on(&self, f: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static) {
        *self.state.handler.lock().unwrap() = Arc::new(f);
    }

    /// Always answer `reply`.
    pub fn always(&self, reply: Reply) {
        self.on(move |_, _| reply.clone());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn calls(&self) -> Vec<Received> {
        self.state.calls.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.calls.lock().unwrap().len()
    }

    /// Chat calls only (not health probes).
    pub fn chat_calls(&self) -> Vec<Received> {
        self.calls()
            .into_iter()
            .filter(|c| {
                c.path.contains("chat/completions")
                    || c.path.contains(":generate")
                    || c.path.contains(":streamGenerate")
            })
            .collect()
    }

    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Requests it is answering right now (a stream until it ends or is dropped).
    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }
}

struct InFlight(Arc<MockState>);
impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(State(state): State<Arc<MockState>>, req: Request) -> Response {
    let n = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(n, Ordering::SeqCst);
    let guard = InFlight(state.clone());
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let headers = req.headers().clone();
    let bytes = axum::body::to_bytes(req.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let received = Received {
        path,
        headers,
        body,
    };
    let index = {
        let mut calls = state.calls.lock().unwrap();
        calls.push(received.clone());
        calls.len() - 1
    };
    let handler = state.handler.lock().unwrap().clone();
    let reply = handler(&received, index);
    render(reply, guard).await
}

fn render(reply: Reply, guard: InFlight) -> futures_util::future::BoxFuture<'static, Response> {
    Box::pin(async move {
        match reply {
            Reply::Delay(d, inner) => {
                tokio::time::sleep(d).await;
                render(*inner, guard).await
            }
            Reply::Json {
                status,
                body,
                headers,
            } => {
                let mut resp = Response::new(Body::from(body.to_string()));
                *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                resp.headers_mut()
                    .insert("content-type", "application/json".parse().unwrap());
                for (k, v) in headers {
                    resp.headers_mut().insert(
                        axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                        v.parse().unwrap(),
                    );
                }
                drop(guard);
                resp
            }
            Reply::Text { status, body } => {
                let mut resp = Response::new(Body::from(body));
                *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                drop(guard);
                resp
            }
            Reply::Stream(pieces) => {
                let stream = futures_util::stream::unfold(
                    (pieces.into_iter(), Some(guard)),
                    |(mut it, guard)| async move {
                        loop {
                            match it.next()? {
                                Piece::Raw(s) => {
                                    return Some((
                                        Ok::<_, std::convert::Infallible>(Bytes::from(s)),
                                        (it, guard),
                                    ));
                                }
                                Piece::Sleep(d) => tokio::time::sleep(d).await,
                                Piece::Wait(n) => n.notified().await,
                            }
                        }
                    },
                );
                let mut resp = Response::new(Body::from_stream(stream));
                resp.headers_mut()
                    .insert("content-type", "text/event-stream".parse().unwrap());
                resp
            }
        }
    })
}

/// A running Freeway.
pub struct TestApp {
    pub addr: std::net::SocketAddr,
    /// The Ollama listener, when the config has `[ollama] listen`.
    pub ollama: Option<std::net::SocketAddr>,
    pub app: Arc<App>,
    pub client: reqwest::Client,
    pub dir: PathBuf,
    /// Keeps the temporary data directory alive.
    _tmp: Option<tempfile::TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Options for starting a TestApp.
pub struct Options {
    pub toml: String,
    pub dir: Option<PathBuf>,
    pub clock: Option<Arc<dyn Clock>>,
    pub env: Vec<(String, String)>,
}

impl Options {
    pub fn new(toml: impl Into<String>) -> Options {
        Options {
            toml: toml.into(),
            dir: None,
            clock: None,
            env: Vec::new(),
        }
    }
    pub fn dir(mut self, dir: &Path) -> Options {
        self.dir = Some(dir.to_path_buf());
        self
    }
    pub fn clock(mut self, clock: Arc<ManualClock>) -> Options {
        self.clock = Some(clock);
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Options {
        self.env.push((k.into(), v.into()));
        self
    }
}

impl TestApp {
    /// The newest `limit` rows of the request log once at least `min` are written (the writer
    /// is a background thread); fails, never hangs, when they are not there within 10 s.
    pub async fn logged(&self, min: usize, limit: usize) -> Vec<freeway::record::RequestRow> {
        for _ in 0..200 {
            let rows = self.app.store.recent_requests(limit).unwrap();
            if rows.len() >= min {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the request log holds fewer than {min} rows after 10 s");
    }

    /// Start Freeway with this TOML (a fixed client key is always added).
    pub async fn spawn(toml: &str) -> TestApp {
        Self::start(Options::new(toml)).await.unwrap()
    }

    pub async fn start(opts: Options) -> anyhow::Result<TestApp> {
        let (tmp, dir) = match opts.dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir().unwrap();
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };
        let text = format!("data_dir = {:?}\n{}", dir.display().to_string(), opts.toml);
        let mut env = opts.env.clone();
        env.push(("FREEWAY_API_KEY".into(), CLIENT_KEY.into()));
        let lookup = move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let config = Config::from_toml(&text, &lookup)?;
        let clock = opts.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let ollama_listener = app::bind_ollama(&config).await?;
        let ollama = match &ollama_listener {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        let app = App::open_with_clock(config, clock)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(app::serve_with(
            app.clone(),
            listener,
            ollama_listener,
            async move {
                let _ = rx.await;
            },
        ));
        Ok(TestApp {
            addr,
            ollama,
            app,
            client: reqwest::Client::new(),
            dir,
            _tmp: tmp,
            shutdown: Some(tx),
            handle: Some(handle),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POST /v1/chat/completions with the test client key.
    pub async fn chat(&self, body: Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/chat/completions"))
            .bearer_auth(CLIENT_KEY)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// GET `path` with the test client key; the JSON body.
    pub async fn get_json(&self, path: &str) -> Value {
        self.get_json_as(path, CLIENT_KEY).await
    }

    /// A GET with another client key, as JSON.
    pub async fn get_json_as(&self, path: &str, key: &str) -> Value {
        self.client
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Graceful shutdown; waits until the server and its background tasks are done.
    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap().unwrap();
        }
        self._tmp.take()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A Freeway whose one model `mock/mock-embed` (2 dimensions) answers input `i` with the
/// vector `[i, second]` and reports `prompt_tokens` used.
pub async fn embedder(second: f64, prompt_tokens: u64) -> (Mock, TestApp) {
    let mock = Mock::start().await;
    mock.on(move |r, _| {
        let n = r.body["input"].as_array().map_or(0, Vec::len);
        let data: Vec<Value> = (0..n)
            .map(|i| json!({"index": i, "embedding": [i as f64, second]}))
            .collect();
        Reply::Json {
            status: 200,
            body: json!({"data": data, "usage": {"prompt_tokens": prompt_tokens}}),
            headers: vec![],
        }
    });
    let t = TestApp::spawn(&format!(
        "[custom.mock]\nbase_url = \"{}\"\nmodels = [{{ id = \"mock-embed\", dims = 2 }}]\n",
        mock.url("/v1")
    ))
    .await;
    (mock, t)
}

/// A one-message chat body.
pub fn ask(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

/// A config with one custom OpenAI-compatible endpoint `mock` serving `mock-model`.
pub fn custom(mock: &Mock, extra_model_fields: &str) -> String {
    format!(
        "[custom.mock]\nbase_url = \"{}\"\nkeys = [\"sk-mock-upstream-key\"]\nmodels = [{{ id = \"mock-model\", tools = true {extra_model_fields} }}]\n",
        mock.url("/v1")
    )
}

/// Read a whole SSE body into its `data:` payloads.
pub async fn sse_data(resp: reqwest::Response) -> Vec<String> {
    let text = resp.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

/// The text content of SSE data payloads, concatenated.
pub fn sse_text(events: &[String]) -> String {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

/// Poll `f` until it holds (at most ~10 s): for effects that happen in the background.
pub async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Send `n` chat requests at once (`body(i)` for the i-th); their statuses.
pub async fn burst(t: &TestApp, n: usize, body: impl Fn(usize) -> Value) -> Vec<u16> {
    let requests = (0..n).map(|i| {
        let c = t.client.clone();
        let url = t.url("/v1/chat/completions");
        let body = body(i);
        tokio::spawn(async move {
            c.post(url)
                .bearer_auth(CLIENT_KEY)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    });
    futures_util::future::join_all(requests)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

/// Make `mock` stream `before`, then wait until the returned gate is opened (`notify_one`),
/// then stream `after` and finish. Proves what happens while a stream is half-way.
pub fn gated_stream(mock: &Mock, before: &'static str, after: &'static str) -> Arc<Notify> {
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    mock.on(move |r, _| {
        let m = r.model();
        Reply::Stream(vec![
            Piece::Raw(chunk(&m, before)),
            Piece::Wait(g.clone()),
            Piece::Raw(chunk(&m, after)),
            Piece::Raw(finish_chunk(&m)),
            Piece::Raw("data: [DONE]\n\n".into()),
        ])
    });
    gate
}

/// A streaming chat body for `mock-model`.
pub fn stream_ask() -> Value {
    json!({"model": "mock-model", "stream": true, "messages": [{"role": "user", "content": "hi"}]})
}
