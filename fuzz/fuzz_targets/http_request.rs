//! Whole HTTP requests through Freeway's real router (routes, auth, body limits, parsing,
//! routing to an upstream that refuses connections): headers and body from the input.
//!
//! Input layout: byte 0 picks the method and route (or, past the known ones, the route is the
//! input's first line); then header lines `name: value` up to an empty line; the rest is the
//! body.
//!
//! Properties: never panics; the status is one a client is promised; every API error is a JSON
//! object with a message; the upstream key never appears in an answer.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

const UPSTREAM_KEY: &str = "sk-fuzz-upstream-secret-000111222333";

struct Setup {
    rt: tokio::runtime::Runtime,
    routes: axum::Router,
    _dir: tempfile::TempDir,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temp dir");
        let toml = format!(
            "data_dir = {:?}\nmax_body = \"64KB\"\n[auth]\napi_keys = [\"fw-fuzz\"]\n\
             [routing]\ntime_budget = \"2s\"\nconnect_timeout = \"100ms\"\ncooldown_on_5xx = \"1ms\"\n\
             [custom.local]\nbase_url = \"http://127.0.0.1:1/v1\"\nkeys = [\"{UPSTREAM_KEY}\"]\n\
             models = [{{ id = \"m\", tools = true, vision = true }}]\n",
            dir.path().display().to_string()
        );
        let config = freeway::config::Config::from_toml(&toml, &|_| None).expect("the config");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let routes = rt.block_on(async {
            let app = freeway::app::App::open(config).expect("the app");
            freeway::http::routes(app.http_server())
        });
        Setup {
            rt,
            routes,
            _dir: dir,
        }
    })
}

const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/chat/completions"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models?all=true"),
    ("GET", "/readyz"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/messages"),
    ("POST", "/v1/responses"),
    ("GET", "/metrics"),
];

fuzz_target!(|data: &[u8]| {
    let s = setup();
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (method, uri, rest) = match ROUTES.get(pick as usize) {
        Some((m, u)) => (m.to_string(), u.to_string(), rest),
        None => {
            let (line, rest) = split_line(rest);
            ("POST".to_string(), String::from_utf8_lossy(line).into_owned(), rest)
        }
    };
    let mut builder = http::Request::builder().method(method.as_str()).uri(uri.as_str());
    let mut rest = rest;
    loop {
        let (line, tail) = split_line(rest);
        rest = tail;
        if line.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(line);
        if let Some((name, value)) = text.split_once(':') {
            builder = builder.header(name.trim(), value.trim());
        }
    }
    let Ok(request) = builder.body(axum::body::Body::from(rest.to_vec())) else {
        return;
    };
    let (status, body) = s.rt.block_on(async {
        let mut routes = s.routes.clone();
        let resp = tower_service::Service::call(&mut routes, request)
            .await
            .unwrap_or_else(|e: std::convert::Infallible| match e {});
        let status = resp.status().as_u16();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        (status, body)
    });
    assert!(
        [200, 400, 401, 404, 405, 408, 413, 429, 502, 503].contains(&status),
        "status {status}"
    );
    let text = String::from_utf8_lossy(&body);
    assert!(!text.contains(UPSTREAM_KEY), "the upstream key in an answer: {text}");
    // Health checks answer in their own shape; every API error is `{"error": {"message"}}`.
    if status >= 400 && !uri.starts_with("/readyz") && !uri.starts_with("/livez") {
        let v: serde_json::Value =
            serde_json::from_slice(&body).unwrap_or_else(|e| panic!("error body not JSON ({e}): {text}"));
        assert!(
            v.pointer("/error/message").is_some_and(|m| m.is_string()),
            "error without a message: {text}"
        );
    }
});

/// The bytes up to the first `\n`, and what follows it.
fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}
