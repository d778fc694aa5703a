//! The HTTP surface: auth, validation, error shapes, headers, models, health endpoints.

use crate::harness::*;
use serde_json::{Value, json};

async fn error_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(body["error"]["type"].is_string(), "{body}");
    assert!(body["error"]["code"].is_string(), "{body}");
    (status, body)
}

#[tokio::test]
async fn client_key_is_required_and_checked() {
    let mock = Mock::start().await;
    let t = TestApp::spawn(&custom(&mock, "")).await;
    let url = t.url("/v1/chat/completions");

    let resp = t
        .client
        .post(&url)
        .json(&ask("mock-model"))
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(resp).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_api_key"))
    );

    let resp = t
        .client
        .post(&url)
        .bearer_auth("fw-wrong")
        .json(&ask("mock-model"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(resp).await.0, 401);

    let resp = t
        .client
        .post(&url)
        .header("x-api-key", CLIENT_KEY)
        .json(&ask("mock-model"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = t
        .client
        .post(&url)
        .bearer_auth(CLIENT_KEY)
        .json(&ask("mock-model"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let resp = t.client.get(t.url("/v1/models")).send().await.unwrap();
    assert_eq!(resp.status(), 401, "models need a key too");
    assert_eq!(
        mock.chat_calls().len(),
        2,
        "unauthenticated requests never reach upstream"
    );
}

#[tokio::test]
async fn bad_input_gets_the_documented_4xx() {
    let mock = Mock::start().await;
    let t = TestApp::spawn(&custom(&mock, "")).await;
    let url = t.url("/v1/chat/completions");
    let post_raw = |body: &'static str| {
        t.client
            .post(&url)
            .bearer_auth(CLIENT_KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let resp = post_raw("{not json").await.unwrap();
    assert_eq!(resp.headers()["x-fallback-attempts"], "0");
    let (s, b) = error_of(resp).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );

    let (s, b) = error_of(post_raw("{\"model\": \"auto\"}").await.unwrap()).await;
    assert_eq!(s, 400);
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`messages`")
    );

    let (s, b) = error_of(
        post_raw(
            "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"max_tokens\": \"ten\"}",
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`max_tokens`"),
        "{b}"
    );

    let (s, b) = error_of(post_raw("{\"messages\": [{\"role\": 3}]}").await.unwrap()).await;
    assert_eq!(s, 400);
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages[0].role"),
        "{b}"
    );

    let (s, _) = error_of(post_raw("[]").await.unwrap()).await;
    assert_eq!(s, 400);
    let (s, _) = error_of(post_raw("").await.unwrap()).await;
    assert_eq!(s, 400);

    let resp = t.chat(ask("no-such-model")).await;
    let (s, b) = error_of(resp).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (404, Some("model_not_found"))
    );

    assert_eq!(
        mock.chat_calls().len(),
        0,
        "nothing bad reached the upstream"
    );
}

#[tokio::test]
async fn oversize_bodies_get_413() {
    let mock = Mock::start().await;
    let t = TestApp::spawn(&format!("max_body = \"2KB\"\n{}", custom(&mock, ""))).await;
    let big = "x".repeat(5000);
    let resp = t
        .chat(json!({"messages": [{"role": "user", "content": big}]}))
        .await;
    let (s, b) = error_of(resp).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (413, Some("request_too_large"))
    );

    // Without a Content-Length (chunked), the limit still holds.
    let chunks = futures_util::stream::iter(
        (0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 1000]))),
    );
    let resp = t
        .client
        .post(t.url("/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(mock.chat_calls().len(), 0);
}

#[tokio::test]
async fn prompts_larger_than_every_context_get_413() {
    let mock = Mock::start().await;
    let t = TestApp::spawn(&custom(&mock, ", context = 100")).await;
    let resp = t
        .chat(json!({"messages": [{"role": "user", "content": "word ".repeat(200)}]}))
        .await;
    let (s, b) = error_of(resp).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (413, Some("context_length_exceeded"))
    );
}

#[tokio::test]
async fn a_known_model_with_no_key_is_503() {
    let t = TestApp::spawn("").await;
    let resp = t.chat(ask("gpt-oss-120b")).await;
    let (s, b) = error_of(resp).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (503, Some("no_providers_configured"))
    );
    let resp = t.chat(ask("auto")).await;
    assert_eq!(resp.status(), 503);
}

#[tokio::test]
async fn request_ids_are_echoed_or_made() {
    let mock = Mock::start().await;
    let t = TestApp::spawn(&custom(&mock, "")).await;
    let resp = t
        .client
        .post(t.url("/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .header("x-request-id", "my-trace-42")
        .json(&ask("mock-model"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "my-trace-42");
    assert_eq!(resp.headers()["x-routed-via"], "mock/mock-model");
    assert_eq!(resp.headers()["x-fallback-attempts"], "0");
    let resp = t.chat(ask("mock-model")).await;
    assert!(resp.headers()["x-request-id"].len() >= 16);
    let resp = t.client.get(t.url("/nope")).send().await.unwrap();
    assert!(
        resp.headers().contains_key("x-request-id"),
        "errors carry it too"
    );
    let (s, _) = error_of(resp).await;
    assert_eq!(
        s, 401,
        "an unknown route is not revealed before authentication"
    );
    let resp = t
        .client
        .get(t.url("/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    let (s, _) = error_of(resp).await;
    assert_eq!(s, 405);
}

#[tokio::test]
async fn models_lists_auto_then_canonical_ids() {
    let mock = Mock::start().await;
    let toml = format!(
        "[providers.groq]\nbase_url = \"{}\"\nkeys = [\"gsk_test\"]\n{}",
        mock.url("/v1"),
        custom(&mock, "")
    );
    let t = TestApp::spawn(&toml).await;
    let resp = t
        .client
        .get(t.url("/v1/models"))
        .bearer_auth(CLIENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "list");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data[0]["id"], "auto");
    let llama = data
        .iter()
        .find(|m| m["id"] == "gpt-oss-120b")
        .expect("groq's llama by canonical id");
    assert_eq!(llama["owned_by"], "groq");
    assert_eq!(llama["context_window"], 131072);
    assert_eq!(
        llama["capabilities"],
        json!({"tools": true, "vision": false, "embeddings": false})
    );
    assert_eq!(llama["available"], true);
    assert_eq!(
        llama["providers"],
        json!(["groq/openai/gpt-oss-120b"]),
        "only what a key can serve"
    );
    assert!(data.iter().any(|m| m["id"] == "mock-model"));
    assert!(
        !data.iter().any(|m| m["id"] == "gemini-2.5-flash"),
        "no google key"
    );

    let all = t.get_json("/v1/models?all=true").await;
    let all = all["data"].as_array().unwrap();
    assert!(all.iter().any(|m| m["id"] == "gemini-2.5-flash"));
    let llama = all.iter().find(|m| m["id"] == "gpt-oss-120b").unwrap();
    assert_eq!(llama["providers"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn livez_and_readyz() {
    let t = TestApp::spawn("").await;
    let resp = t.client.get(t.url("/livez")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = t.client.get(t.url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("freeway keys add")
    );

    let mock = Mock::start().await;
    let t = TestApp::spawn(&custom(&mock, "")).await;
    let resp = t.client.get(t.url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn metrics_need_their_token_and_count_requests() {
    let mock = Mock::start().await;
    mock.on(|r, _| {
        if r.model() == "openai/gpt-oss-20b" {
            Reply::status(429, "slow").with_header("retry-after", "100")
        } else {
            Reply::ok("ok")
        }
    });
    let toml = format!(
        "[metrics]\ntoken = \"env:METRICS_TOKEN\"\n[providers.groq]\nbase_url = \"{}\"\nkeys = [\"gsk_m\"]\n",
        mock.url("/v1")
    );
    let t = TestApp::start(Options::new(toml).env("METRICS_TOKEN", "scrape-secret"))
        .await
        .unwrap();
    assert_eq!(t.chat(ask("groq/openai/gpt-oss-120b")).await.status(), 200);
    assert_eq!(t.chat(ask("groq/openai/gpt-oss-20b")).await.status(), 429);

    let resp = t.client.get(t.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = t
        .client
        .get(t.url("/metrics"))
        .bearer_auth(CLIENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "client keys do not open metrics");
    let resp = t
        .client
        .get(t.url("/metrics"))
        .bearer_auth("scrape-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.contains(r#"freeway_requests_total{surface="chat",client="config #1",provider="groq",model="openai/gpt-oss-120b",outcome="ok"} 1"#), "{text}");
    assert!(
        text.contains(
            r#"freeway_requests_total{surface="chat",client="config #1",provider="none",model="none",outcome="rate_limited"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"freeway_attempts_total{provider="groq",model="openai/gpt-oss-20b",outcome="rate_limited"} 1"#), "{text}");
    assert!(
        text.contains(r#"freeway_cooldowns{provider="groq"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"window="rpd"} 999"#), "{text}");
    assert!(
        text.contains("freeway_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(
        text.contains("freeway_time_to_first_token_seconds"),
        "{text}"
    );
    assert!(!text.contains("gsk_m"), "no keys in metrics");

    let open = TestApp::spawn("[metrics]\npublic = true\n").await;
    assert_eq!(
        open.client
            .get(open.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn large_bodies_are_parsed_off_the_event_loop_and_still_checked() {
    let mock = Mock::start().await;
    let t = TestApp::spawn(&custom(&mock, ", context = 1000000")).await;
    let long = "lorem ipsum ".repeat(40_000);
    let resp = t
        .chat(json!({"model": "mock-model", "messages": [{"role": "user", "content": long}]}))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        mock.chat_calls()[0].body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .len(),
        long.len()
    );
    let resp = t
        .chat(json!({"model": "mock-model", "messages": [{"role": "robot", "content": long}]}))
        .await;
    let (s, b) = error_of(resp).await;
    assert_eq!(s, 400);
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages[0].role")
    );
}
