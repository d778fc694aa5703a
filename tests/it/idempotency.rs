//! `Idempotency-Key` and the answer cache (SPEC 2.8): a retry that does not spend twice, a
//! duplicate in flight that gets the same stream from its start, a reused key refused, failures
//! not kept, kept answers across a restart; exact repeats answered from the cache on any
//! surface, streamed when asked, bypassed on request, per client key, spending no quota.

use crate::harness::*;
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::sync::Notify;

async fn post(
    t: &TestApp,
    path: &str,
    key: Option<&str>,
    body: &Value,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut r = t
        .client
        .post(t.url(path))
        .bearer_auth(CLIENT_KEY)
        .json(body);
    if let Some(k) = key {
        r = r.header("idempotency-key", k);
    }
    for (n, v) in extra {
        r = r.header(*n, *v);
    }
    r.send().await.unwrap()
}

fn chat_calls(mock: &Mock) -> usize {
    mock.chat_calls().len()
}

#[tokio::test]
async fn a_retry_with_the_same_key_is_answered_again_without_an_upstream_call() {
    let mock = Mock::start().await;
    mock.on(|r, n| {
        Reply::ok(&format!(
            "answer {n} to {}",
            r.body["messages"][0]["content"]
        ))
    });
    let t = TestApp::spawn(&custom(&mock, "")).await;
    let body = ask("mock-model");
    let first = post(&t, "/v1/chat/completions", Some("k-1"), &body, &[]).await;
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let via = first.headers()["x-routed-via"].clone();
    let first: Value = first.json().await.unwrap();
    let again = post(&t, "/v1/chat/completions", Some("k-1"), &body, &[]).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["x-routed-via"], via);
    let again: Value = again.json().await.unwrap();
    assert_eq!(first, again, "the same answer, byte for byte");
    assert_eq!(chat_calls(&mock), 1);
    // Another key, or none: a new request.
    assert_eq!(
        post(&t, "/v1/chat/completions", Some("k-2"), &body, &[])
            .await
            .status(),
        200
    );
    assert_eq!(
        post(&t, "/v1/chat/completions", None, &body, &[])
            .await
            .status(),
        200
    );
    assert_eq!(chat_calls(&mock), 3);
    // The same key with another body: 422 in the surface's shape.
    let other = ask("auto");
    let r = post(&t, "/v1/chat/completions", Some("k-1"), &other, &[]).await;
    assert_eq!(r.status(), 422);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "idempotency_key_reused");
    let r = post(
        &t,
        "/v1/messages",
        Some("k-1"),
        &json!({"model": "mock-model", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
        &[],
    )
    .await;
    assert_eq!(r.status(), 422, "another route is another request");
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "invalid_request_error");
    // A key too long to be one.
    let long = "k".repeat(256);
    let r = post(&t, "/v1/chat/completions", Some(&long), &body, &[]).await;
    assert_eq!(r.status(), 400);
    assert_eq!(chat_calls(&mock), 3);
}

#[tokio::test]
async fn failures_are_not_kept_and_the_retry_runs_afresh() {
    let mock = Mock::start().await;
    mock.always(Reply::status(500, "upstream trouble"));
    // No rest after the failure: the retry may reach the upstream at once.
    let toml = format!(
        "[routing]\ncooldown_on_5xx = \"1ms\"\n{}",
        custom(&mock, "")
    );
    let t = TestApp::spawn(&toml).await;
    let body = ask("mock-model");
    let r = post(&t, "/v1/chat/completions", Some("retry-me"), &body, &[]).await;
    assert_eq!(r.status(), 502);
    let failed_calls = chat_calls(&mock);
    mock.always(Reply::ok("fine now"));
    // The failed answer is forgotten once it ended (the writer task may still be finishing).
    let mut status = 0;
    for _ in 0..100 {
        let r = post(&t, "/v1/chat/completions", Some("retry-me"), &body, &[]).await;
        status = r.status().as_u16();
        if r.headers().get("idempotent-replayed").is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200);
    assert_eq!(chat_calls(&mock), failed_calls + 1);
}

#[tokio::test]
async fn a_duplicate_in_flight_waits_and_gets_the_whole_stream_from_its_start() {
    let mock = Mock::start().await;
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    mock.on(move |r, _| {
        let m = r.model();
        Reply::Stream(vec![
            Piece::Raw(chunk(&m, "first ")),
            Piece::Wait(g.clone()),
            Piece::Raw(chunk(&m, "second")),
            Piece::Raw(finish_chunk(&m)),
            Piece::Raw("data: [DONE]\n\n".into()),
        ])
    });
    let t = TestApp::spawn(&custom(&mock, "")).await;
    let body = json!({"model": "mock-model", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let first = post(&t, "/v1/chat/completions", Some("stream-1"), &body, &[]).await;
    assert_eq!(first.status(), 200);
    // The first has started (its head is out); the duplicate arrives while it runs.
    let dup = post(&t, "/v1/chat/completions", Some("stream-1"), &body, &[]).await;
    assert_eq!(dup.status(), 200);
    assert_eq!(dup.headers()["idempotent-replayed"], "true");
    gate.notify_waiters();
    gate.notify_one();
    let (a, b) = tokio::join!(first.text(), dup.text());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b, "the duplicate got the same stream from its start");
    assert!(
        a.contains("first ") && a.contains("second") && a.contains("[DONE]"),
        "{a}"
    );
    assert_eq!(chat_calls(&mock), 1);
}

#[tokio::test]
async fn kept_answers_survive_a_restart() {
    let mock = Mock::start().await;
    mock.always(Reply::ok("kept"));
    let dir = tempfile::tempdir().unwrap();
    let toml = custom(&mock, "");
    let t = TestApp::start(Options::new(toml.clone()).dir(dir.path()))
        .await
        .unwrap();
    let body = ask("mock-model");
    let first: Value = post(&t, "/v1/chat/completions", Some("durable"), &body, &[])
        .await
        .json()
        .await
        .unwrap();
    // Written by the run's task: wait until a replay is served, then restart.
    for _ in 0..100 {
        if post(&t, "/v1/chat/completions", Some("durable"), &body, &[])
            .await
            .headers()
            .contains_key("idempotent-replayed")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    t.stop().await;
    let t = TestApp::start(Options::new(toml).dir(dir.path()))
        .await
        .unwrap();
    let r = post(&t, "/v1/chat/completions", Some("durable"), &body, &[]).await;
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    let again: Value = r.json().await.unwrap();
    assert_eq!(first, again);
    assert_eq!(chat_calls(&mock), 1);
}

fn cached(mock: &Mock, extra: &str) -> String {
    format!(
        "[cache]\nenabled = true\n{extra}\n[auth]\napi_keys = [{{ name = \"other\", key = \"fw-other-key\" }}]\n{}",
        custom(mock, ", rpd = 2")
    )
}

#[tokio::test]
async fn exact_repeats_are_answered_from_the_cache_and_spend_no_quota() {
    let mock = Mock::start().await;
    mock.on(|r, n| {
        if r.body["stream"] == json!(true) {
            stream_of(&r.model(), &["streamed ", &format!("{n}")])
        } else {
            Reply::ok(&format!("answer {n}"))
        }
    });
    let t = TestApp::spawn(&cached(&mock, "")).await;
    let body = ask("mock-model");
    let r = post(&t, "/v1/chat/completions", None, &body, &[]).await;
    assert_eq!(r.headers()["x-freeway-cache"], "miss");
    let first: Value = r.json().await.unwrap();
    let r = post(&t, "/v1/chat/completions", None, &body, &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-freeway-cache"], "hit");
    assert_eq!(r.headers()["x-routed-via"], "mock/mock-model");
    let hit: Value = r.json().await.unwrap();
    assert_eq!(
        hit["choices"][0]["message"]["content"],
        first["choices"][0]["message"]["content"]
    );
    assert_eq!(chat_calls(&mock), 1);
    // Streamed when the client asks for a stream, from the same entry.
    let mut stream = body.clone();
    stream["stream"] = json!(true);
    let r = post(&t, "/v1/chat/completions", None, &stream, &[]).await;
    assert_eq!(r.headers()["x-freeway-cache"], "hit");
    let events = sse_data(r).await;
    assert_eq!(sse_text(&events), "answer 0");
    assert_eq!(chat_calls(&mock), 1);
    // Bypassed on request: the model's day cap (2) is now spent.
    let r = post(
        &t,
        "/v1/chat/completions",
        None,
        &body,
        &[("cache-control", "no-cache")],
    )
    .await;
    assert_eq!(r.headers()["x-freeway-cache"], "bypass");
    assert_eq!(chat_calls(&mock), 2);
    // The cap is spent, yet the cached answer still serves: hits spend no quota.
    let r = post(&t, "/v1/chat/completions", None, &body, &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-freeway-cache"], "hit");
    // Another client key has a cache of its own (not shared): a miss, refused by the cap.
    let r = t
        .client
        .post(t.url("/v1/chat/completions"))
        .bearer_auth("fw-other-key")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    // Hits are in the request log as served by the cache (analytics count them as saved).
    let rows = t.logged(5, 10).await;
    let hits = rows
        .iter()
        .filter(|r| r.served_by.as_deref() == Some("cache/mock/mock-model"))
        .count();
    assert_eq!(hits, 3, "{rows:?}");
}

#[tokio::test]
async fn the_cache_answers_every_surface_and_may_be_shared() {
    let mock = Mock::start().await;
    mock.on(|r, n| {
        if r.body["stream"] == json!(true) {
            stream_of(&r.model(), &[&format!("streamed {n}")])
        } else {
            Reply::ok(&format!("answer {n}"))
        }
    });
    let t = TestApp::spawn(&cached(&mock, "shared = true")).await;
    let messages = json!({"model": "mock-model", "max_tokens": 50, "messages": [{"role": "user", "content": "hello"}]});
    let r = post(
        &t,
        "/v1/messages",
        None,
        &messages,
        &[("anthropic-version", "2023-06-01")],
    )
    .await;
    assert_eq!(r.headers()["x-freeway-cache"], "miss");
    let r = t
        .client
        .post(t.url("/v1/messages"))
        .bearer_auth("fw-other-key")
        .header("anthropic-version", "2023-06-01")
        .json(&messages)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-freeway-cache"], "hit", "shared between keys");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["content"][0]["text"], "answer 0");
    assert_eq!(v["type"], "message");
    // A streamed miss is kept too, and replayed whole.
    let responses = json!({"model": "mock-model", "input": "stream me", "stream": true});
    let r = post(&t, "/v1/responses", None, &responses, &[]).await;
    assert_eq!(r.headers()["x-freeway-cache"], "miss");
    let first = r.text().await.unwrap();
    assert!(first.contains("streamed 1"), "{first}");
    let r = post(&t, "/v1/responses", None, &responses, &[]).await;
    assert_eq!(r.headers()["x-freeway-cache"], "hit");
    let again = r.text().await.unwrap();
    assert!(
        again.contains("streamed 1") && again.contains("response.completed"),
        "{again}"
    );
    assert_eq!(chat_calls(&mock), 2);
}

#[tokio::test]
async fn the_cache_is_off_by_default() {
    let mock = Mock::start().await;
    let t = TestApp::spawn(&custom(&mock, "")).await;
    let r = post(&t, "/v1/chat/completions", None, &ask("mock-model"), &[]).await;
    assert!(r.headers().get("x-freeway-cache").is_none());
    post(&t, "/v1/chat/completions", None, &ask("mock-model"), &[]).await;
    assert_eq!(chat_calls(&mock), 2);
}

#[tokio::test]
async fn a_key_with_limits_or_allowed_models_is_never_answered_from_the_cache() {
    let mock = Mock::start().await;
    let config = format!(
        "[cache]\nenabled = true\nshared = true\n[auth]\napi_keys = [{{ name = \"narrow\", key = \"fw-narrow-key\" }}]\n[auth.limits.narrow]\nmodels = [\"other/*\"]\n{}",
        custom(&mock, "")
    );
    let t = TestApp::spawn(&config).await;
    // Cached by an unrestricted key...
    assert_eq!(
        post(&t, "/v1/chat/completions", None, &ask("mock-model"), &[])
            .await
            .status(),
        200
    );
    // ...never handed to a key that may not use the model: it takes the whole path (403).
    let r = t
        .client
        .post(t.url("/v1/chat/completions"))
        .bearer_auth("fw-narrow-key")
        .json(&ask("mock-model"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn a_stream_that_broke_is_not_kept_for_the_retry() {
    let mock = Mock::start().await;
    // Content, then the upstream goes away without a finish.
    mock.on(|r, _| Reply::Stream(vec![Piece::Raw(chunk(&r.model(), "half an answer"))]));
    let t = TestApp::spawn(&custom(&mock, "")).await;
    let body = json!({"model": "mock-model", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let r = post(&t, "/v1/chat/completions", Some("cut-1"), &body, &[]).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("half an answer"), "{text}");
    // Forgotten once it ended (the writer task may still be finishing): the retry runs afresh.
    let mut replayed = true;
    for _ in 0..100 {
        let r = post(&t, "/v1/chat/completions", Some("cut-1"), &body, &[]).await;
        replayed = r.headers().contains_key("idempotent-replayed");
        let _ = r.text().await;
        if !replayed {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!replayed);
    assert!(chat_calls(&mock) >= 2);
}
