//! One gateway shared by many client keys (SPEC 3.8): each key's own limits in every surface's
//! error shape, allowed models, expiry, requests in flight, a crash that hands nothing out, the
//! limits managed from the CLI and the admin API, and fair share between keys.

use crate::harness::*;
use crate::process::{chat_status, start_server};
use serde_json::{Value, json};

/// A config with one mock endpoint and fixed client keys with limits.
fn tenants(mock: &Mock, limits: &str) -> String {
    format!(
        r#"
[auth]
api_keys = [{{ name = "laptop", key = "fw-laptop-key" }}, {{ name = "batch", key = "fw-batch-key" }}]
{limits}
{}"#,
        custom(mock, ", rpd = 100000")
    )
}

async fn post(t: &TestApp, key: &str, path: &str, body: Value) -> reqwest::Response {
    t.client
        .post(t.url(path))
        .bearer_auth(key)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_key_over_its_own_limit_is_told_so_in_its_surfaces_shape() {
    let mock = Mock::start().await;
    mock.always(Reply::ok("hi"));
    let t = TestApp::spawn(&tenants(&mock, "[auth.limits.laptop]\nrpd = 2\n")).await;
    for _ in 0..2 {
        let r = post(
            &t,
            "fw-laptop-key",
            "/v1/chat/completions",
            ask("mock-model"),
        )
        .await;
        assert_eq!(r.status(), 200);
    }
    let r = post(
        &t,
        "fw-laptop-key",
        "/v1/chat/completions",
        ask("mock-model"),
    )
    .await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=86_400).contains(&retry), "{retry}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "client_quota_exceeded", "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("laptop") && msg.contains("requests per day limit (2)"),
        "{msg}"
    );
    assert_eq!(
        mock.chat_calls().len(),
        2,
        "refused before any upstream call"
    );

    // The other surfaces say it their way.
    let r = post(
        &t,
        "fw-laptop-key",
        "/v1/messages",
        json!({"model": "mock-model", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    let r = post(
        &t,
        "fw-laptop-key",
        "/v1/responses",
        json!({"model": "mock-model", "input": "hi"}),
    )
    .await;
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "client_quota_exceeded", "{body}");
    let r = post(
        &t,
        "fw-laptop-key",
        "/v1/completions",
        json!({"model": "mock-model", "prompt": "hi"}),
    )
    .await;
    assert_eq!(r.status(), 429);
    // Another key is not held by this one's limit.
    let r = post(
        &t,
        "fw-batch-key",
        "/v1/chat/completions",
        ask("mock-model"),
    )
    .await;
    assert_eq!(r.status(), 200);
    // Its own use shows in /v1/quota, called with it.
    let q: Value = t.get_json_as("/v1/quota", "fw-laptop-key").await;
    assert_eq!(q["client"]["name"], "laptop");
    let day = &q["client"]["limits"][0];
    assert_eq!(
        (day["window"].as_str(), day["limit"].as_u64()),
        (Some("day"), Some(2))
    );
    assert_eq!(day["used"], 2);
    assert_eq!(day["remaining"], 0);
    assert!(
        day["resets_at"].as_str().unwrap().ends_with("T00:00:00Z"),
        "{day}"
    );
}

#[tokio::test]
async fn tokens_are_settled_with_what_the_upstream_reported() {
    let mock = Mock::start().await;
    // The mock's completion reports its usage; the day's token limit counts that, not the
    // estimate.
    mock.always(Reply::ok("hi"));
    let t = TestApp::spawn(&tenants(&mock, "[auth.limits.laptop]\ntpd = 100000\n")).await;
    let r = post(
        &t,
        "fw-laptop-key",
        "/v1/chat/completions",
        ask("mock-model"),
    )
    .await;
    assert_eq!(r.status(), 200);
    let used = t.app.ops.client_usage("laptop");
    let reported = completion("m", "hi")["usage"]["total_tokens"]
        .as_u64()
        .unwrap();
    assert_eq!(used.day_tokens, reported);
    assert_eq!(used.day_requests, 1);
    // A request no upstream answered gives its tokens and itself back.
    mock.always(Reply::status(500, "down"));
    let r = post(
        &t,
        "fw-laptop-key",
        "/v1/chat/completions",
        ask("mock-model"),
    )
    .await;
    assert_eq!(r.status(), 502);
    let after = t.app.ops.client_usage("laptop");
    assert_eq!(after.day_tokens, reported, "tokens back");
    assert_eq!(
        after.day_requests, 2,
        "a request sent upstream stays counted"
    );
}

#[tokio::test]
async fn a_key_uses_only_its_allowed_models() {
    let (a, b) = (Mock::start().await, Mock::start().await);
    a.always(Reply::ok("from a"));
    b.always(Reply::ok("from b"));
    let toml = format!(
        r#"
[auth]
api_keys = [{{ name = "kid", key = "fw-kid-key" }}]
[auth.limits.kid]
models = ["b/*"]
[routing]
chain = ["a/m", "b/m"]
[custom.a]
base_url = "{}"
keys = ["sk-a-1"]
models = [{{ id = "m" }}]
[custom.b]
base_url = "{}"
keys = ["sk-b-1"]
models = [{{ id = "m2" }}]
"#,
        a.url("/v1"),
        b.url("/v1")
    );
    let t = TestApp::spawn(&toml).await;
    let r = post(&t, "fw-kid-key", "/v1/chat/completions", ask("auto")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-routed-via"], "b/m2");
    let r = post(&t, "fw-kid-key", "/v1/chat/completions", ask("a/m")).await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-should-retry"], "false");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_allowed", "{body}");
    assert_eq!(a.chat_calls().len(), 0);
    let models: Value = t.get_json_as("/v1/models", "fw-kid-key").await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"m2") && !ids.contains(&"m"), "{ids:?}");
    let q: Value = t.get_json_as("/v1/quota", "fw-kid-key").await;
    assert!(
        q["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["provider"] == "b"),
        "{q}"
    );
    // The fixed test key sees both.
    let all: Value = t.get_json("/v1/models").await;
    assert!(all["data"].as_array().unwrap().len() >= 3);
}

#[tokio::test]
async fn an_expired_key_says_so() {
    let mock = Mock::start().await;
    mock.always(Reply::ok("hi"));
    let t = TestApp::spawn(&tenants(
        &mock,
        "[auth.limits.laptop]\nexpires = \"2020-01-01\"\n",
    ))
    .await;
    let r = post(
        &t,
        "fw-laptop-key",
        "/v1/chat/completions",
        ask("mock-model"),
    )
    .await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-should-retry"], "false");
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired at 2020-01-01T00:00:00Z"),
        "{body}"
    );
}

#[tokio::test]
async fn requests_in_flight_are_bounded_per_key() {
    let mock = Mock::start().await;
    let gate = gated_stream(&mock, "one", "two");
    let t = TestApp::spawn(&tenants(&mock, "[auth.limits.laptop]\nconcurrent = 1\n")).await;
    let mut body = stream_ask();
    body["model"] = json!("mock-model");
    let first = post(&t, "fw-laptop-key", "/v1/chat/completions", body.clone()).await;
    assert_eq!(first.status(), 200);
    let second = post(&t, "fw-laptop-key", "/v1/chat/completions", body.clone()).await;
    assert_eq!(second.status(), 429);
    let err: Value = second.json().await.unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("in flight"),
        "{err}"
    );
    gate.notify_one();
    assert_eq!(sse_text(&sse_data(first).await), "onetwo");
    // The stream ended: its place is free.
    gate.notify_one();
    let third = post(&t, "fw-laptop-key", "/v1/chat/completions", body).await;
    assert_eq!(third.status(), 200);
    assert_eq!(sse_text(&sse_data(third).await), "onetwo");
}

#[tokio::test]
async fn limits_are_managed_from_the_operations_the_cli_and_the_api_share() {
    let mock = Mock::start().await;
    mock.always(Reply::ok("hi"));
    let t = TestApp::spawn(&custom(&mock, "")).await;
    let patch = freeway::ops::LimitsPatch {
        rpm: Some(Some(1)),
        models: Some(vec!["mock/*".into()]),
        ..Default::default()
    };
    let key = t.app.ops.create_client_key_with("phone", &patch).unwrap();
    let r = post(&t, &key, "/v1/chat/completions", ask("mock-model")).await;
    assert_eq!(r.status(), 200);
    let r = post(&t, &key, "/v1/chat/completions", ask("mock-model")).await;
    assert_eq!(r.status(), 429);
    let lifted = freeway::ops::LimitsPatch {
        rpm: Some(None),
        ..Default::default()
    };
    let view = t.app.ops.set_client_limits("phone", &lifted).unwrap();
    assert_eq!(view.limits.rpm, None);
    assert_eq!(view.limits.models, ["mock/*"]);
    let r = post(&t, &key, "/v1/chat/completions", ask("mock-model")).await;
    assert_eq!(r.status(), 200, "the change serves at once");
    let bad = freeway::ops::LimitsPatch {
        models: Some(vec!["no-such-model".into()]),
        ..Default::default()
    };
    assert!(t.app.ops.set_client_limits("phone", &bad).is_err());
    // A name is a key's identity for its limits: one live key each.
    assert!(t.app.ops.create_client_key("phone").is_err());
    assert!(t.app.ops.set_client_limits("nobody", &lifted).is_err());
}

/// A kill -9 right after a key's daily limit filled does not hand out the day again.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_does_not_hand_out_a_keys_limit() {
    let mock = Mock::start().await;
    mock.always(Reply::ok("hi"));
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(
        cwd.path().join("freeway.toml"),
        tenants(&mock, "[auth.limits.laptop]\nrpd = 4\n"),
    )
    .unwrap();
    let env = [("FREEWAY_LISTEN", "127.0.0.1:0")];
    let send = |url: String| chat_status(url, "fw-laptop-key");
    let server = start_server(cwd.path(), &env).unwrap();
    for _ in 0..4 {
        assert_eq!(send(server.url("/v1/chat/completions")).await, 200);
    }
    server.kill9();
    let server = start_server(cwd.path(), &env).unwrap();
    assert_eq!(send(server.url("/v1/chat/completions")).await, 429);
    assert_eq!(mock.chat_calls().len(), 4);
    assert!(server.term());
}

/// Two keys, a capped model first in the chain: a busy key takes its share and no more while
/// the other still asks; with fairness off, first come first served.
#[tokio::test]
async fn a_busy_key_takes_its_fair_share_of_a_capped_model_and_no_more() {
    for (fairness, batch_on_capped) in [("weighted", 5), ("off", 9)] {
        let (a, b) = (Mock::start().await, Mock::start().await);
        a.always(Reply::ok("capped"));
        b.always(Reply::ok("plenty"));
        let toml = format!(
            r#"
[auth]
api_keys = [{{ name = "person", key = "fw-person-key" }}, {{ name = "batch", key = "fw-batch-key" }}]
[routing]
fairness = "{fairness}"
pacing = "off"
chain = ["a/m", "b/m"]
[custom.a]
base_url = "{}"
keys = ["sk-a-1"]
models = [{{ id = "m", rpd = 10 }}]
[custom.b]
base_url = "{}"
keys = ["sk-b-1"]
models = [{{ id = "m" }}]
"#,
            a.url("/v1"),
            b.url("/v1")
        );
        let t = TestApp::spawn(&toml).await;
        let via = |r: &reqwest::Response| r.headers()["x-routed-via"].to_str().unwrap().to_string();
        // The person asks once; then the batch job asks twenty times.
        let r = post(&t, "fw-person-key", "/v1/chat/completions", ask("auto")).await;
        assert_eq!(via(&r), "a/m");
        let mut on_capped = 0;
        for _ in 0..20 {
            let r = post(&t, "fw-batch-key", "/v1/chat/completions", ask("auto")).await;
            assert_eq!(r.status(), 200);
            if via(&r) == "a/m" {
                on_capped += 1;
            }
        }
        assert_eq!(on_capped, batch_on_capped, "fairness {fairness}");
        // What the batch job left of the day is the person's.
        let mut person = 1;
        for _ in 0..10 {
            let r = post(&t, "fw-person-key", "/v1/chat/completions", ask("auto")).await;
            if via(&r) == "a/m" {
                person += 1;
            }
        }
        assert_eq!(
            person + on_capped,
            10,
            "fairness {fairness}: the whole cap was used"
        );
        assert_eq!(a.chat_calls().len(), 10);
    }
}
