//! Quotas, persistence, time, stickiness, the request log, shutdown and health.

use crate::harness::*;
use freeway::ledger::ManualClock;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

fn real_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_key_ever_receives_more_requests_than_its_cap() {
    let mock = Mock::start().await;
    mock.always(Reply::Delay(
        Duration::from_millis(100),
        Box::new(Reply::ok("ok")),
    ));
    let t = TestApp::spawn(&custom(&mock, ", rpm = 5")).await;
    let statuses = burst(&t, 60, |_| ask("mock-model")).await;
    assert_eq!(
        mock.chat_calls().len(),
        5,
        "exactly the cap reached the upstream"
    );
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 5);
    assert_eq!(statuses.iter().filter(|&&s| s == 429).count(), 55);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_caps_bound_what_is_in_flight() {
    let mock = Mock::start().await;
    mock.always(Reply::Delay(
        Duration::from_millis(150),
        Box::new(Reply::ok("ok")),
    ));
    // Each request reserves its prompt plus a 1000-token answer reserve: two fit in 2500.
    let t = TestApp::spawn(&custom(&mock, ", tpm = 2500")).await;
    let body = json!({"model": "mock-model", "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]});
    let statuses = burst(&t, 20, |_| body.clone()).await;
    assert!(
        mock.max_in_flight() <= 2,
        "in flight at once: {}",
        mock.max_in_flight()
    );
    assert!(statuses.contains(&200) && statuses.contains(&429));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn account_caps_hold_across_models() {
    let mock = Mock::start().await;
    mock.always(Reply::Delay(
        Duration::from_millis(50),
        Box::new(Reply::ok("ok")),
    ));
    // OpenRouter's free tier: 20 requests a minute per account, across its models.
    let toml = format!(
        r#"
[providers.openrouter]
base_url = "{}"
keys = ["sk-or-test"]
[[providers.openrouter.models]]
id = "qwen/qwen3-coder:free"
rpm = 1000
rpd = 1000
[[providers.openrouter.models]]
id = "z-ai/glm-4.5-air:free"
rpm = 1000
rpd = 1000
"#,
        mock.url("/v1")
    );
    let t = TestApp::spawn(&toml).await;
    let statuses = burst(&t, 40, |i| {
        ask(if i % 2 == 0 {
            "openrouter/qwen/qwen3-coder:free"
        } else {
            "openrouter/z-ai/glm-4.5-air:free"
        })
    })
    .await;
    assert_eq!(mock.chat_calls().len(), 20);
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 20);
}

#[tokio::test]
async fn a_restart_keeps_counters_and_cooldowns() {
    let mock = Mock::start().await;
    mock.on(|r, _| {
        if r.model() == "openai/gpt-oss-20b" {
            Reply::status(429, "slow").with_header("retry-after", "3600")
        } else {
            Reply::ok("ok")
        }
    });
    let toml = format!(
        "[providers.groq]\nbase_url = \"{}\"\nkeys = [\"gsk_r\"]\n[[providers.groq.models]]\nid = \"openai/gpt-oss-120b\"\nrpd = 3\n",
        mock.url("/v1")
    );
    let dir = tempfile::tempdir().unwrap();
    let t = TestApp::start(Options::new(toml.clone()).dir(dir.path()))
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(t.chat(ask("groq/openai/gpt-oss-120b")).await.status(), 200);
    }
    assert_eq!(t.chat(ask("groq/openai/gpt-oss-20b")).await.status(), 429);
    t.stop().await;

    let t = TestApp::start(Options::new(toml).dir(dir.path()))
        .await
        .unwrap();
    let resp = t.chat(ask("groq/openai/gpt-oss-120b")).await;
    assert_eq!(resp.status(), 429, "the day's quota is still spent");
    let resp = t.chat(ask("groq/openai/gpt-oss-20b")).await;
    assert_eq!(resp.status(), 429, "still cooling down");
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 3500, "{retry}");
    assert_eq!(
        mock.chat_calls().len(),
        4,
        "nothing more was sent after the restart"
    );
}

#[tokio::test]
async fn cooldowns_expire_and_windows_roll_over_on_the_clock() {
    let clock = Arc::new(ManualClock::new(real_now()));
    let mock = Mock::start().await;
    mock.on(|_, i| {
        if i == 0 {
            Reply::status(429, "wait").with_header("retry-after", "30")
        } else {
            Reply::ok("ok")
        }
    });
    let toml = format!(
        "[providers.groq]\nbase_url = \"{}\"\nkeys = [\"gsk_c\"]\n[[providers.groq.models]]\nid = \"openai/gpt-oss-120b\"\nrpm = 2\n",
        mock.url("/v1")
    );
    let t = TestApp::start(Options::new(toml).clock(clock.clone()))
        .await
        .unwrap();
    let model = "groq/openai/gpt-oss-120b";
    assert_eq!(t.chat(ask(model)).await.status(), 429);
    let resp = t.chat(ask(model)).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "30");
    assert_eq!(mock.chat_calls().len(), 1);
    clock.advance(Duration::from_secs(29));
    assert_eq!(t.chat(ask(model)).await.status(), 429, "not yet");
    clock.advance(Duration::from_secs(1));
    // The 429 request counted against the minute too: one more fits, then the cap.
    assert_eq!(t.chat(ask(model)).await.status(), 200);
    let resp = t.chat(ask(model)).await;
    assert_eq!(resp.status(), 429, "rpm = 2 reached");
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains("rpm"),
        "{body}"
    );
    clock.advance(Duration::from_secs(61));
    assert_eq!(t.chat(ask(model)).await.status(), 200, "a new minute");
}

#[tokio::test]
async fn the_upstreams_own_quota_headers_win() {
    let mock = Mock::start().await;
    mock.on(|_, i| {
        let reply = Reply::ok("ok");
        if i == 0 {
            reply
                .with_header("x-ratelimit-remaining-requests", "0")
                .with_header("x-ratelimit-reset-requests", "45s")
        } else {
            reply
        }
    });
    let toml = format!(
        "[providers.groq]\nbase_url = \"{}\"\nkeys = [\"gsk_h\"]\n",
        mock.url("/v1")
    );
    let t = TestApp::spawn(&toml).await;
    let model = "groq/openai/gpt-oss-120b";
    assert_eq!(t.chat(ask(model)).await.status(), 200);
    let resp = t.chat(ask(model)).await;
    assert_eq!(resp.status(), 429, "the upstream said nothing is left");
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((44..=45).contains(&retry), "{retry}");
    assert_eq!(mock.chat_calls().len(), 1);
}

#[tokio::test]
async fn conversations_stick_to_the_model_that_answered() {
    let clock = Arc::new(ManualClock::new(real_now()));
    let (a, b) = (Mock::start().await, Mock::start().await);
    a.on(|_, i| {
        if i == 0 {
            Reply::status(429, "busy").with_header("retry-after", "60")
        } else {
            Reply::ok("from a")
        }
    });
    b.always(Reply::ok("from b"));
    let toml = format!(
        r#"
[routing]
chain = ["first/m", "second/m"]
sticky_ttl = "10m"
[providers.groq]
base_url = "{}"
keys = ["gsk_s"]
[[providers.groq.models]]
id = "m"
canonical = "shared"
[providers.cerebras]
base_url = "{}"
keys = ["csk_s"]
[[providers.cerebras.models]]
id = "m"
canonical = "shared"
"#,
        a.url("/v1"),
        b.url("/v1")
    )
    .replace("first/m", "groq/m")
    .replace("second/m", "cerebras/m");
    let t = TestApp::start(Options::new(toml).clock(clock.clone()))
        .await
        .unwrap();
    let turn1 =
        json!({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]});
    let turn2 = json!({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
        {"role": "assistant", "content": "A"}, {"role": "user", "content": "more"}]});
    let other = json!({"messages": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "A"}, {"role": "user", "content": "x"}]});
    let via = |r: &reqwest::Response| r.headers()["x-routed-via"].to_str().unwrap().to_string();

    assert_eq!(
        via(&t.chat(turn1.clone()).await),
        "cerebras/m",
        "groq was rate limited"
    );
    clock.advance(Duration::from_secs(120));
    assert_eq!(
        via(&t.chat(turn2.clone()).await),
        "cerebras/m",
        "the conversation stays"
    );
    assert_eq!(
        via(&t.chat(other).await),
        "groq/m",
        "another conversation takes the chain"
    );
    assert_eq!(
        via(&t.chat(turn1).await),
        "groq/m",
        "no assistant turn yet: not steered"
    );
    let resp = t
        .client
        .post(t.url("/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .header("x-session-id", "fresh-session")
        .json(&turn2)
        .send()
        .await
        .unwrap();
    assert_eq!(
        via(&resp),
        "groq/m",
        "a session id names a different conversation"
    );
    clock.advance(Duration::from_secs(11 * 60));
    assert_eq!(
        via(&t.chat(turn2).await),
        "groq/m",
        "after sticky_ttl the chain decides again"
    );
}

#[tokio::test]
async fn every_request_is_logged_and_nothing_is_lost_on_shutdown() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let t = TestApp::start(Options::new(custom(&mock, "")).dir(dir.path()))
        .await
        .unwrap();
    for i in 0..40 {
        let body = json!({"model": "mock-model", "stream": i % 2 == 0, "messages": [{"role": "user", "content": "hi"}]});
        let resp = t.chat(body).await;
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    assert_eq!(t.chat(ask("missing-model")).await.status(), 404);
    t.stop().await;
    let store = freeway::store::Store::open(dir.path()).unwrap();
    assert_eq!(store.count_requests().unwrap(), 41);
    let rows = store.recent_requests(41).unwrap();
    let ok = rows.iter().find(|r| r.status == 200 && !r.stream).unwrap();
    assert_eq!(ok.served_by.as_deref(), Some("mock/mock-model"));
    assert_eq!(ok.requested_model, "mock-model");
    assert_eq!(
        (ok.tokens_in, ok.tokens_out),
        (5, 7),
        "the upstream's usage"
    );
    assert_eq!(ok.client, "config #1");
    assert!(ok.ttft_ms.is_some());
    assert_eq!(ok.attempts.len(), 1);
    assert_eq!(ok.attempts[0].outcome, "ok");
    let streamed = rows.iter().find(|r| r.status == 200 && r.stream).unwrap();
    assert_eq!((streamed.tokens_in, streamed.tokens_out), (3, 4));
    let missing = rows.iter().find(|r| r.status == 404).unwrap();
    assert!(missing.error.as_deref().unwrap().contains("does not exist"));
}

#[tokio::test]
async fn shutdown_lets_in_flight_streams_finish() {
    let mock = Mock::start().await;
    let gate = gated_stream(&mock, "before", " after");
    let t = TestApp::spawn(&custom(&mock, "")).await;
    let resp = t.chat(stream_ask()).await;
    assert_eq!(resp.status(), 200);
    let addr = t.addr;
    let stopping = tokio::spawn(t.stop());
    // Shutdown has begun once the listener is gone.
    let mut closed = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            closed = true;
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed, "the server stops accepting connections");
    assert!(!stopping.is_finished(), "shutdown waits for the stream");
    gate.notify_one();
    let events = sse_data(resp).await;
    assert_eq!(sse_text(&events), "before after");
    assert_eq!(events.last().unwrap(), "[DONE]");
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn health_probes_mark_keys_and_three_rejections_disable() {
    let mock = Mock::start().await;
    mock.on(|r, _| {
        if r.path.ends_with("/models") {
            match r.bearer().as_deref() {
                Some("gsk_good") => Reply::Json {
                    status: 200,
                    body: json!({"data": []}),
                    headers: vec![],
                },
                Some("gsk_flaky") => Reply::status(503, "down"),
                _ => Reply::status(401, "invalid api key"),
            }
        } else {
            Reply::ok("ok")
        }
    });
    let toml = format!("[providers.groq]\nbase_url = \"{}\"\n", mock.url("/v1"));
    let t = TestApp::spawn(&toml).await;
    let mut ids = Vec::new();
    for secret in ["gsk_good", "gsk_bad", "gsk_flaky"] {
        let row = freeway::keys::new_row(&t.app.sealer, "groq", secret.into(), secret, 0);
        t.app.store.insert_key(&row).unwrap();
        let id = row.id;
        ids.push(id);
    }
    t.app.ops.reload().unwrap();
    use freeway::keys::Status;
    let verdicts = t.app.ops.check(None).await.unwrap();
    assert_eq!(verdicts.len(), 3);
    assert_eq!(t.app.live.keys.status(&ids[0]), Status::Healthy);
    assert_eq!(t.app.live.keys.status(&ids[1]), Status::Invalid);
    assert_eq!(
        t.app.live.keys.status(&ids[2]),
        Status::Error,
        "a 503 cannot tell"
    );
    t.app.ops.check(None).await.unwrap();
    t.app.ops.check(None).await.unwrap();
    let disabled = eventually(|| {
        t.app
            .store
            .keys()
            .unwrap()
            .iter()
            .any(|k| k.id == ids[1] && !k.enabled && k.status == "invalid")
    })
    .await;
    assert!(disabled, "three confirmed rejections disable the key");
    let flaky = t
        .app
        .store
        .keys()
        .unwrap()
        .into_iter()
        .find(|k| k.id == ids[2])
        .unwrap();
    assert!(flaky.enabled, "errors never disable");

    // A successful request makes an `error` key healthy again.
    for _ in 0..4 {
        assert_eq!(t.chat(ask("groq/openai/gpt-oss-120b")).await.status(), 200);
    }
    assert_eq!(t.app.live.keys.status(&ids[2]), Status::Healthy);
}
