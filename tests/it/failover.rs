//! Every row of SPEC 3.4's failover table, streaming and not, plus the exhaustion answers.

use crate::harness::*;
use freeway::ledger::Scope;
use serde_json::{Value, json};
use std::time::Duration;

/// groq (two keys) then cerebras (one key), both serving gpt-oss-120b, limits out of the way.
fn two(a: &Mock, b: &Mock, extra: &str) -> String {
    format!(
        r#"
[routing]
chain = ["groq/openai/gpt-oss-120b", "cerebras/gpt-oss-120b"]
{extra}
[providers.groq]
base_url = "{}"
keys = ["gsk_a1", "gsk_a2"]
[[providers.groq.models]]
id = "openai/gpt-oss-120b"
rpm = 100000
rpd = 100000
tpm = 100000000
tpd = 100000000
[providers.cerebras]
base_url = "{}"
keys = ["csk_b1"]
[[providers.cerebras.models]]
id = "gpt-oss-120b"
rpm = 100000
rpd = 100000
tpm = 100000000
tpd = 100000000
"#,
        a.url("/v1"),
        b.url("/v1")
    )
}

const MODEL: &str = "gpt-oss-120b";

fn key_id(t: &TestApp, provider: &str, secret: &str) -> String {
    t.app
        .live
        .keys
        .all(provider)
        .into_iter()
        .find(|k| k.secret.expose() == secret)
        .unwrap()
        .id
        .clone()
}

async fn json_of(resp: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.json().await.unwrap())
}

fn stream_body() -> Value {
    json!({"model": MODEL, "stream": true, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn rate_limit_with_retry_after_cools_that_key_and_tries_the_next() {
    let (a, b) = (Mock::start().await, Mock::start().await);
    a.on(|r, _| match r.bearer().as_deref() {
        Some("gsk_a1") => Reply::status(429, "slow down").with_header("retry-after", "120"),
        _ => Reply::ok("from a2"),
    });
    let t = TestApp::spawn(&two(&a, &b, "")).await;
    for _ in 0..2 {
        let (s, h, body) = json_of(t.chat(ask(MODEL)).await).await;
        assert_eq!(s, 200);
        assert_eq!(body["choices"][0]["message"]["content"], "from a2");
        assert_eq!(h["x-routed-via"], "groq/openai/gpt-oss-120b");
    }
    let a1 = a
        .chat_calls()
        .iter()
        .filter(|c| c.bearer().as_deref() == Some("gsk_a1"))
        .count();
    assert_eq!(a1, 1, "a cooling key is not asked again");
    let cd = t
        .app
        .ledger
        .cooldown(&Scope::model(
            "groq",
            "openai/gpt-oss-120b",
            &key_id(&t, "groq", "gsk_a1"),
        ))
        .expect("cooling down");
    let left = cd.until_ms - t.app.ledger.now_ms();
    assert!((100_000..=120_000).contains(&left), "{left}");
    assert_eq!(b.chat_calls().len(), 0);
}

#[tokio::test]
async fn retry_delays_inside_the_body_are_believed() {
    let (a, b) = (Mock::start().await, Mock::start().await);
    a.always(Reply::status(
        429,
        "Rate limit reached. Please try again in 42.5s.",
    ));
    let t = TestApp::spawn(&two(&a, &b, "")).await;
    let (s, h, _) = json_of(t.chat(ask(MODEL)).await).await;
    assert_eq!(s, 200);
    assert_eq!(h["x-routed-via"], "cerebras/gpt-oss-120b");
    assert_eq!(h["x-fallback-attempts"], "2", "both groq keys were tried");
    let cd = t
        .app
        .ledger
        .cooldown(&Scope::model(
            "groq",
            "openai/gpt-oss-120b",
            &key_id(&t, "groq", "gsk_a2"),
        ))
        .unwrap();
    let left = cd.until_ms - t.app.ledger.now_ms();
    assert!((40_000..=42_500).contains(&left), "{left}");
}

#[tokio::test]
async fn a_429_without_a_wait_uses_cooldown_on_429() {
    let (a, b) = (Mock::start().await, Mock::start().await);
    a.always(Reply::status(429, "slow down"));
    let t = TestApp::spawn(&two(&a, &b, "cooldown_on_429 = \"33s\"")).await;
    assert_eq!(t.chat(ask(MODEL)).await.status(), 200);
    let cd = t
        .app
        .ledger
        .cooldown(&Scope::model(
            "groq",
            "openai/gpt-oss-120b",
            &key_id(&t, "groq", "gsk_a1"),
        ))
        .unwrap();
    let left = cd.until_ms - t.app.ledger.now_ms();
    assert!((31_000..=33_000).contains(&left), "{left}");
}

#[tokio::test]
async fn a_daily_quota_message_cools_down_until_the_providers_reset() {
    let gemini = Mock::start().await;
    gemini.always(Reply::Json {
        status: 429,
        body: json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
            "message": "You exceeded your current quota. Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: 20, quotaId: GenerateRequestsPerDayPerProjectPerModel-FreeTier"}}),
        headers: vec![],
    });
    let other = Mock::start().await;
    let toml = format!(
        "[providers.google]\nbase_url = \"{}\"\nkeys = [\"AIza-test-key\"]\n{}",
        gemini.url("/v1beta"),
        custom(&other, "")
    );
    let t = TestApp::spawn(&toml).await;
    let resp = t.chat(ask("google/gemini-2.5-flash")).await;
    assert_eq!(resp.status(), 429);
    let key = key_id(&t, "google", "AIza-test-key");
    let cd = t
        .app
        .ledger
        .cooldown(&Scope::model("google", "gemini-2.5-flash", &key))
        .unwrap();
    let tz: chrono_tz::Tz = "America/Los_Angeles".parse().unwrap();
    let midnight = freeway::ledger::window::midnight(tz, t.app.ledger.now_ms(), 1);
    assert_eq!(cd.until_ms, midnight, "until midnight Pacific");
    assert!(cd.reason.contains("daily"));
}

#[tokio::test]
async fn server_errors_skip_the_provider_for_the_rest_of_the_request() {
    let (a, b) = (Mock::start().await, Mock::start().await);
    a.always(Reply::status(503, "overloaded"));
    let t = TestApp::spawn(&two(&a, &b, "cooldown_on_5xx = \"77s\"")).await;
    let (s, h, _) = json_of(t.chat(ask(MODEL)).await).await;
    assert_eq!(s, 200);
    assert_eq!(h["x-routed-via"], "cerebras/gpt-oss-120b");
    assert_eq!(h["x-fallback-attempts"], "1");
    assert_eq!(a.chat_calls().len(), 1, "the second groq key was not tried");
    let first = a.chat_calls()[0].bearer().unwrap();
    let cd = t
        .app
        .ledger
        .cooldown(&Scope::key("groq", &key_id(&t, "groq", &first)))
        .expect("the whole key cools down");
    let left = cd.until_ms - t.app.ledger.now_ms();
    assert!((75_000..=77_000).contains(&left), "{left}");
}

#[tokio::test]
async fn connection_errors_and_first_byte_timeouts_fail_over() {
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}/v1", dead.local_addr().unwrap());
    drop(dead);
    let (slow, b) = (Mock::start().await, Mock::start().await);
    slow.always(Reply::Delay(
        Duration::from_secs(5),
        Box::new(Reply::ok("late")),
    ));
    let toml = format!(
        r#"
[routing]
chain = ["groq/openai/gpt-oss-120b", "cerebras/gpt-oss-120b", "local/m"]
first_byte_timeout = "1s"
[providers.groq]
base_url = "{dead_url}"
keys = ["gsk_a1"]
[providers.cerebras]
base_url = "{}"
keys = ["csk_b1"]
[custom.local]
base_url = "{}"
models = [{{ id = "m", canonical = "gpt-oss-120b" }}]
"#,
        slow.url("/v1"),
        b.url("/v1")
    );
    let t = TestApp::spawn(&toml).await;
    let (s, h, body) = json_of(t.chat(ask(MODEL)).await).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(h["x-routed-via"], "local/m");
    assert_eq!(h["x-fallback-attempts"], "2");
    let rows = t.logged(1, 5).await;
    let outcomes: Vec<&str> = rows[0]
        .attempts
        .iter()
        .map(|a| a.outcome.as_str())
        .collect();
    assert_eq!(outcomes, ["server_error", "server_error", "ok"]);
}

#[tokio::test]
async fn an_invalid_key_is_marked_and_its_sibling_tried() {
    let (a, b) = (Mock::start().await, Mock::start().await);
    a.on(|r, _| match r.bearer().as_deref() {
        Some("gsk_a1") => Reply::status(401, "Invalid API Key"),
        _ => Reply::ok("from a2"),
    });
    let t = TestApp::spawn(&two(&a, &b, "")).await;
    for _ in 0..4 {
        let (s, h, _) = json_of(t.chat(ask(MODEL)).await).await;
        assert_eq!(s, 200);
        assert_eq!(h["x-routed-via"], "groq/openai/gpt-oss-120b");
    }
    let bad = a
        .chat_calls()
        .iter()
        .filter(|c| c.bearer().as_deref() == Some("gsk_a1"))
        .count();
    assert_eq!(bad, 1, "an invalid key is not used again");
    let id = key_id(&t, "groq", "gsk_a1");
    assert_eq!(t.app.live.keys.status(&id), freeway::keys::Status::Invalid);
    assert_eq!(b.chat_calls().len(), 0);
}

#[tokio::test]
async fn a_model_gone_at_the_provider_is_skipped_for_the_request() {
    let (a, b) = (Mock::start().await, Mock::start().await);
    a.always(Reply::status(404, "The model does not exist"));
    let t = TestApp::spawn(&two(&a, &b, "")).await;
    let (s, h, _) = json_of(t.chat(ask(MODEL)).await).await;
    assert_eq!(s, 200);
    assert_eq!(h["x-routed-via"], "cerebras/gpt-oss-120b");
    assert_eq!(
        a.chat_calls().len(),
        1,
        "the sibling key is not tried for a gone model"
    );
}

#[tokio::test]
async fn request_errors_come_back_without_failover() {
    let (a, b) = (Mock::start().await, Mock::start().await);
    a.always(Reply::status(400, "messages[0].content: too many images"));
    let t = TestApp::spawn(&two(&a, &b, "")).await;
    let (s, h, body) = json_of(t.chat(ask(MODEL)).await).await;
    assert_eq!(s, 400);
    assert_eq!(body["error"]["code"], "invalid_request");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too many images"),
        "{body}"
    );
    assert_eq!(h["x-fallback-attempts"], "1");
    assert_eq!(a.chat_calls().len() + b.chat_calls().len(), 1);

    a.always(Reply::status(422, "Extra inputs are not permitted"));
    let (s, _, _) = json_of(t.chat(ask(MODEL)).await).await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn out_of_credit_or_tier_cools_the_key_for_a_day() {
    for status in [402u16, 403] {
        let (a, b) = (Mock::start().await, Mock::start().await);
        a.on(move |r, _| match r.bearer().as_deref() {
            Some("gsk_a1") => Reply::status(status, "model not available on your plan"),
            _ => Reply::ok("from a2"),
        });
        let t = TestApp::spawn(&two(&a, &b, "")).await;
        for _ in 0..3 {
            let (s, h, _) = json_of(t.chat(ask(MODEL)).await).await;
            assert_eq!(s, 200);
            assert_eq!(h["x-routed-via"], "groq/openai/gpt-oss-120b");
        }
        let id = key_id(&t, "groq", "gsk_a1");
        let hits = a
            .chat_calls()
            .iter()
            .filter(|c| c.bearer().as_deref() == Some("gsk_a1"))
            .count();
        assert_eq!(hits, 1, "{status}: tried once, then left alone");
        let cd = t
            .app
            .ledger
            .cooldown(&Scope::model("groq", "openai/gpt-oss-120b", &id))
            .unwrap();
        let left = cd.until_ms - t.app.ledger.now_ms();
        assert!(left > 86_000_000, "{status}: {left}");
    }
}

#[tokio::test]
async fn bad_200s_fail_over() {
    let cases: Vec<(&str, Reply)> = vec![
        (
            "not json",
            Reply::Text {
                status: 200,
                body: "<html>oops</html>".into(),
            },
        ),
        (
            "empty answer",
            Reply::Json {
                status: 200,
                body: completion("x", ""),
                headers: vec![],
            },
        ),
        (
            "cut short",
            Reply::Text {
                status: 200,
                body: "{\"choices\": [{\"message\": {\"content\": \"hel".into(),
            },
        ),
        (
            "error in 200",
            Reply::Json {
                status: 200,
                body: json!({"error": {"message": "internal"}}),
                headers: vec![],
            },
        ),
    ];
    for (what, reply) in cases {
        let (a, b) = (Mock::start().await, Mock::start().await);
        a.always(reply);
        let t = TestApp::spawn(&two(&a, &b, "")).await;
        let (s, h, body) = json_of(t.chat(ask(MODEL)).await).await;
        assert_eq!(s, 200, "{what}: {body}");
        assert_eq!(h["x-routed-via"], "cerebras/gpt-oss-120b", "{what}");
        assert_eq!(body["choices"][0]["message"]["content"], "hello from mock");
    }
}

#[tokio::test]
async fn broken_streams_before_content_fail_over_invisibly() {
    let m = "openai/gpt-oss-120b";
    let cases: Vec<(&str, Vec<Piece>)> = vec![
        (
            "ends without finish",
            vec![Piece::Raw("data: [DONE]\n\n".into())],
        ),
        (
            "cut before content",
            vec![Piece::Raw(": keep-alive\n\n".into())],
        ),
        (
            "only a role chunk then cut",
            vec![Piece::Raw(format!(
                "data: {}\n\n",
                json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
            ))],
        ),
        (
            "malformed event",
            vec![Piece::Raw("data: {nope\n\n".into())],
        ),
        (
            "error event",
            vec![Piece::Raw(
                "data: {\"error\": {\"message\": \"overloaded\"}}\n\n".into(),
            )],
        ),
        (
            "finish without content",
            vec![
                Piece::Raw(finish_chunk(m)),
                Piece::Raw("data: [DONE]\n\n".into()),
            ],
        ),
        (
            "stall",
            vec![
                Piece::Raw(": hi\n\n".into()),
                Piece::Sleep(Duration::from_secs(30)),
            ],
        ),
    ];
    for (what, pieces) in cases {
        let (a, b) = (Mock::start().await, Mock::start().await);
        a.always(Reply::Stream(pieces));
        let t = TestApp::spawn(&two(&a, &b, "stall_timeout = \"1s\"")).await;
        let resp = t.chat(stream_body()).await;
        assert_eq!(resp.status(), 200, "{what}");
        assert_eq!(
            resp.headers()["x-routed-via"],
            "cerebras/gpt-oss-120b",
            "{what}"
        );
        assert_eq!(
            resp.headers()["x-fallback-attempts"],
            "1",
            "{what}: one groq attempt, then groq skipped or next"
        );
        let events = sse_data(resp).await;
        assert_eq!(sse_text(&events), "hello from mock", "{what}");
        assert!(
            !events.iter().any(|e| e.contains("error")),
            "{what}: invisible"
        );
    }
}

#[tokio::test]
async fn a_failure_after_content_ends_the_stream_with_an_error_event() {
    let (a, b) = (Mock::start().await, Mock::start().await);
    a.on(|r, _| {
        let m = r.model();
        Reply::Stream(vec![
            Piece::Raw(chunk(&m, "partial ")),
            Piece::Raw(chunk(&m, "answer")),
        ])
    });
    let t = TestApp::spawn(&two(&a, &b, "")).await;
    let resp = t.chat(stream_body()).await;
    assert_eq!(resp.status(), 200);
    let events = sse_data(resp).await;
    assert_eq!(sse_text(&events), "partial answer");
    let n = events.len();
    assert_eq!(events[n - 1], "[DONE]");
    let err: Value = serde_json::from_str(&events[n - 2]).unwrap();
    assert_eq!(err["error"]["code"], "stream_interrupted");
    assert_eq!(err["error"]["type"], "upstream_error");
    assert!(
        !events.iter().any(|e| e.contains("finish_reason\":\"stop")),
        "no finish reason is invented"
    );
    assert_eq!(b.chat_calls().len(), 0, "no failover after content");
    assert!(
        eventually(|| t
            .app
            .store
            .recent_requests(1)
            .unwrap()
            .first()
            .is_some_and(|r| r
                .error
                .as_deref()
                .is_some_and(|e| e.contains("stream_interrupted"))))
        .await,
        "logged as an error"
    );
}

#[tokio::test]
async fn max_attempts_bounds_the_loop() {
    let (a, b) = (Mock::start().await, Mock::start().await);
    a.always(Reply::status(429, "no"));
    b.always(Reply::status(429, "no"));
    let t = TestApp::spawn(&two(&a, &b, "max_attempts = 2")).await;
    let (s, h, _) = json_of(t.chat(ask(MODEL)).await).await;
    assert_eq!(s, 429);
    assert_eq!(h["x-fallback-attempts"], "2");
    assert_eq!(a.chat_calls().len() + b.chat_calls().len(), 2);
}

#[tokio::test]
async fn the_time_budget_stops_new_attempts() {
    let (a, b) = (Mock::start().await, Mock::start().await);
    a.always(Reply::Delay(
        Duration::from_millis(600),
        Box::new(Reply::status(500, "slow failure")),
    ));
    let t = TestApp::spawn(&two(&a, &b, "time_budget = \"300ms\"")).await;
    let (s, _, body) = json_of(t.chat(ask(MODEL)).await).await;
    assert_eq!(s, 502);
    assert_eq!(body["error"]["code"], "upstream_failed");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("time budget"),
        "{body}"
    );
    assert_eq!(b.chat_calls().len(), 0);
}

#[tokio::test]
async fn exhaustion_answers_have_their_status_headers_and_messages() {
    // Everything rate limited: 429 with the soonest Retry-After and what was tried.
    let (a, b) = (Mock::start().await, Mock::start().await);
    a.always(Reply::status(429, "no").with_header("retry-after", "50"));
    b.always(Reply::status(429, "no").with_header("retry-after", "20"));
    let t = TestApp::spawn(&two(&a, &b, "")).await;
    let (s, h, body) = json_of(t.chat(ask(MODEL)).await).await;
    assert_eq!(s, 429);
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((19..=20).contains(&retry), "{retry}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("groq/openai/gpt-oss-120b") && msg.contains("cerebras/gpt-oss-120b"),
        "{msg}"
    );
    assert_eq!(h["x-fallback-attempts"], "3");
    // Asked again: nothing is sent, all are cooling down, still a 429 with a Retry-After.
    let (s, h, body) = json_of(t.chat(ask(MODEL)).await).await;
    assert_eq!(s, 429);
    assert_eq!(
        h["x-fallback-attempts"], "0",
        "skipped candidates are not attempts"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cooling down"),
        "{body}"
    );
    assert!(h.contains_key("retry-after"));
    assert_eq!(a.chat_calls().len() + b.chat_calls().len(), 3);

    // A mix of rate limits and other failures: 502 listing each attempt.
    let (a, b) = (Mock::start().await, Mock::start().await);
    a.always(Reply::status(429, "no"));
    b.always(Reply::status(500, "boom"));
    let t = TestApp::spawn(&two(&a, &b, "")).await;
    let (s, h, body) = json_of(t.chat(ask(MODEL)).await).await;
    assert_eq!(s, 502);
    assert_eq!(body["error"]["code"], "upstream_failed");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("429") && msg.contains("upstream 500"), "{msg}");
    assert_eq!(h["x-fallback-attempts"], "3");
    assert!(!msg.contains("gsk_"), "no keys in messages");
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_upstream_at_once() {
    let (a, b) = (Mock::start().await, Mock::start().await);
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    a.on(move |r, _| {
        let m = r.model();
        Reply::Stream(vec![
            Piece::Raw(chunk(&m, "first")),
            Piece::Wait(g.clone()),
            Piece::Raw(finish_chunk(&m)),
        ])
    });
    let t = TestApp::spawn(&two(&a, &b, "")).await;
    let resp = t.chat(stream_body()).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    use futures_util::StreamExt;
    body.next().await.unwrap().unwrap();
    let first = a.chat_calls()[0].bearer().unwrap();
    let scope = Scope::model("groq", "openai/gpt-oss-120b", &key_id(&t, "groq", &first));
    let usage = t.app.ledger.usage(&scope, freeway::catalog::Reset::Rolling);
    assert!(usage.minute_tokens > 0, "tokens reserved while in flight");
    let reserved = usage.minute_tokens;
    drop(body);
    assert!(
        eventually(|| a.in_flight() == 0).await,
        "the upstream request was dropped"
    );
    // Content had been sent: what the upstream spent stays counted (here the estimate, as it
    // reported nothing), so a cap is never handed out twice.
    let u = t.app.ledger.usage(&scope, freeway::catalog::Reset::Rolling);
    assert_eq!(u.minute_tokens, reserved);
    assert_eq!(u.minute_requests, 1);
    assert!(
        eventually(|| t
            .app
            .store
            .recent_requests(1)
            .unwrap()
            .first()
            .is_some_and(|r| r.status == 499))
        .await,
        "logged as a client disconnect"
    );
}

#[tokio::test]
async fn several_keys_of_one_provider_share_the_load() {
    let (a, b) = (Mock::start().await, Mock::start().await);
    let t = TestApp::spawn(&two(&a, &b, "")).await;
    for _ in 0..10 {
        assert_eq!(t.chat(ask(MODEL)).await.status(), 200);
    }
    let calls = a.chat_calls();
    let a1 = calls
        .iter()
        .filter(|c| c.bearer().as_deref() == Some("gsk_a1"))
        .count();
    let a2 = calls
        .iter()
        .filter(|c| c.bearer().as_deref() == Some("gsk_a2"))
        .count();
    assert_eq!((a1, a2), (5, 5));
}

#[tokio::test]
async fn a_client_that_goes_away_mid_request_releases_its_reservation() {
    let (a, b) = (Mock::start().await, Mock::start().await);
    a.always(Reply::Delay(
        Duration::from_secs(20),
        Box::new(Reply::ok("too late")),
    ));
    let t = TestApp::spawn(&two(&a, &b, "")).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = client
        .post(t.url("/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .json(&ask(MODEL))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    let first = a.chat_calls()[0].bearer().unwrap();
    let scope = Scope::model("groq", "openai/gpt-oss-120b", &key_id(&t, "groq", &first));
    assert!(
        eventually(|| t
            .app
            .ledger
            .usage(&scope, freeway::catalog::Reset::Rolling)
            .minute_tokens
            == 0)
        .await,
        "the upstream request was dropped with the client's"
    );
    assert!(
        eventually(|| t
            .app
            .store
            .recent_requests(1)
            .unwrap()
            .first()
            .is_some_and(|r| r.status == 499 && r.attempts.is_empty()))
        .await,
        "still logged"
    );
}

/// The table's rows once more with `stream: true`: before content, a stream fails over the same
/// way, and a request error still comes back as a 400 without failover.
#[tokio::test]
async fn every_row_of_the_table_holds_for_streams_too() {
    let rows: Vec<(&str, Reply, u16, &str, usize)> = vec![
        (
            "429 retry-after",
            Reply::status(429, "slow").with_header("retry-after", "60"),
            200,
            "cerebras/gpt-oss-120b",
            2,
        ),
        (
            "429 daily",
            Reply::status(429, "Rate limit reached for requests per day (RPD)"),
            200,
            "cerebras/gpt-oss-120b",
            2,
        ),
        (
            "5xx",
            Reply::status(502, "bad gateway"),
            200,
            "cerebras/gpt-oss-120b",
            1,
        ),
        (
            "invalid key",
            Reply::status(401, "Invalid API Key"),
            200,
            "cerebras/gpt-oss-120b",
            2,
        ),
        (
            "model gone",
            Reply::status(404, "no such model"),
            200,
            "cerebras/gpt-oss-120b",
            1,
        ),
        (
            "out of credit",
            Reply::status(402, "no credit"),
            200,
            "cerebras/gpt-oss-120b",
            2,
        ),
        (
            "not in tier",
            Reply::status(403, "model not available on your plan"),
            200,
            "cerebras/gpt-oss-120b",
            2,
        ),
        (
            "request error",
            Reply::status(400, "bad messages"),
            400,
            "",
            1,
        ),
    ];
    for (what, reply, status, via, groq_calls) in rows {
        let (a, b) = (Mock::start().await, Mock::start().await);
        a.always(reply);
        let t = TestApp::spawn(&two(&a, &b, "")).await;
        let resp = t.chat(stream_body()).await;
        assert_eq!(resp.status(), status, "{what}");
        assert_eq!(a.chat_calls().len(), groq_calls, "{what}: groq attempts");
        if status == 200 {
            assert_eq!(resp.headers()["x-routed-via"], via, "{what}");
            assert_eq!(
                resp.headers()["x-fallback-attempts"],
                groq_calls.to_string(),
                "{what}"
            );
            let events = sse_data(resp).await;
            assert_eq!(sse_text(&events), "hello from mock", "{what}");
            assert_eq!(events.last().unwrap(), "[DONE]", "{what}");
        } else {
            let body: Value = resp.json().await.unwrap();
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("bad messages"),
                "{what}"
            );
            assert_eq!(b.chat_calls().len(), 0, "{what}: no failover");
        }
    }
}
