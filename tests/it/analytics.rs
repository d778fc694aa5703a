//! Analytics and the request log through the admin API (SPEC 6.2): a known mix of requests,
//! and every number the report gives for it.

use crate::harness::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::sync::Notify;

/// An admin session: its cookie header and CSRF token.
async fn admin_session(t: &TestApp) -> (String, String) {
    let a = crate::admin::setup(t).await;
    (a.cookie_header(), a.csrf.clone())
}

async fn get(t: &TestApp, cookie: &str, path: &str) -> Value {
    let resp = t
        .client
        .get(t.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.unwrap()
}

/// The `q` quantile of `values` by the report's rule: the value at rank ceil(q * n).
fn exact_quantile(values: &[u64], q: f64) -> u64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// A reported percentile is the middle of a bucket at most 15 % wide (exact below 10 ms).
fn close(reported: &Value, exact: u64) -> bool {
    let got = reported.as_u64().unwrap_or(u64::MAX) as f64;
    let exact = exact as f64;
    (got - exact).abs() <= (exact * 0.08).max(1.0)
}

#[tokio::test]
async fn the_report_adds_up_a_known_mix_of_requests() {
    let a = Mock::start().await;
    let b = Mock::start().await;
    let gate = Arc::new(Notify::new());
    let t = TestApp::spawn(&format!(
        "[routing]\ncooldown_on_5xx = \"1ms\"\ncooldown_on_429 = \"1ms\"\n\
         [custom.a]\nbase_url = \"{}\"\nmodels = [{{ id = \"m1\", rank = 1 }}]\n\
         [custom.b]\nbase_url = \"{}\"\nmodels = [{{ id = \"m2\", rank = 2 }}]\n",
        a.url("/v1"),
        b.url("/v1")
    ))
    .await;
    let (cookie, _) = admin_session(&t).await;

    // Three answers from a.
    for _ in 0..3 {
        assert_eq!(t.chat(ask("a/m1")).await.status(), 200);
    }
    // One answer and one stream from b.
    assert_eq!(t.chat(ask("b/m2")).await.status(), 200);
    let resp = t.chat(json!({"model": "b/m2", "stream": true, "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(sse_data(resp).await.last().unwrap(), "[DONE]");
    // A failover: a answers 500, b serves.
    a.always(Reply::status(500, "boom"));
    let resp = t.chat(ask("auto")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-routed-via"], "b/m2");
    // A stream the client leaves half-way: cancelled.
    let g = gate.clone();
    b.on(move |r, _| {
        Reply::Stream(vec![
            Piece::Raw(chunk(&r.model(), "first")),
            Piece::Wait(g.clone()),
        ])
    });
    let resp = t.chat(json!({"model": "b/m2", "stream": true, "messages": [{"role": "user", "content": "hi"}]})).await;
    let mut body = resp.bytes_stream();
    let _first = body.next().await.unwrap().unwrap();
    drop(body);
    // Both rate limited: the client gets a 429.
    a.always(Reply::status(429, "slow down").with_header("retry-after", "0"));
    b.always(Reply::status(429, "slow down").with_header("retry-after", "0"));
    let resp = t.chat(ask("auto")).await;
    assert_eq!(resp.status(), 429);
    gate.notify_waiters();

    // Everything logged.
    let mut rows = Vec::new();
    for _ in 0..200 {
        rows = get(&t, &cookie, "/admin/api/requests?limit=50").await["requests"]
            .as_array()
            .unwrap()
            .clone();
        if rows.len() == 8 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(rows.len(), 8, "{rows:?}");

    for window in ["24h", "7d", "30d"] {
        let rep = get(
            &t,
            &cookie,
            &format!("/admin/api/analytics?window={window}"),
        )
        .await;
        assert_eq!(rep["window"], window);
        let totals = &rep["totals"];
        assert_eq!(
            (
                totals["requests"].as_u64(),
                totals["succeeded"].as_u64(),
                totals["failed"].as_u64(),
                totals["cancelled"].as_u64()
            ),
            (Some(8), Some(6), Some(1), Some(1)),
            "{totals}"
        );
        assert_eq!(totals["success_rate"], 0.75);
        // Tokens: what upstreams reported (5 in, 7 out an answer; 3 and 4 the stream) and, for
        // the cancelled stream, the estimate in and nothing out.
        let served_in: u64 = rows
            .iter()
            .filter(|r| !r["routed_via"].is_null())
            .map(|r| r["tokens_in"].as_u64().unwrap())
            .sum();
        assert_eq!(totals["tokens_in"].as_u64(), Some(served_in));
        assert_eq!(totals["tokens_out"], 3 * 7 + 7 + 4 + 7);
        let latencies: Vec<u64> = rows
            .iter()
            .map(|r| r["latency_ms"].as_u64().unwrap())
            .collect();
        assert!(
            close(
                &totals["latency_ms"]["p50"],
                exact_quantile(&latencies, 0.5)
            ),
            "{totals} {latencies:?}"
        );
        assert!(
            close(
                &totals["latency_ms"]["p95"],
                exact_quantile(&latencies, 0.95)
            ),
            "{totals} {latencies:?}"
        );
        let ttfts: Vec<u64> = rows
            .iter()
            .filter(|r| r["stream"] == true)
            .filter_map(|r| r["ttft_ms"].as_u64())
            .collect();
        assert_eq!(ttfts.len(), 2, "the finished stream and the cancelled one");
        assert!(
            close(&totals["ttft_ms"]["p50"], exact_quantile(&ttfts, 0.5)),
            "{totals} {ttfts:?}"
        );
        assert!(
            close(&totals["ttft_ms"]["p95"], exact_quantile(&ttfts, 0.95)),
            "{totals} {ttfts:?}"
        );

        let provider = |name: Value| {
            rep["by_provider"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["provider"] == name)
                .cloned()
                .unwrap()
        };
        let pa = provider(json!("a"));
        assert_eq!(
            (
                pa["requests"].as_u64(),
                pa["succeeded"].as_u64(),
                pa["failed_attempts"].as_u64()
            ),
            (Some(3), Some(3), Some(2)),
            "{pa}"
        );
        assert_eq!(
            (pa["tokens_in"].as_u64(), pa["tokens_out"].as_u64()),
            (Some(15), Some(21))
        );
        assert_eq!(pa["ttft_ms"]["p50"], Value::Null, "no streams on a");
        let pb = provider(json!("b"));
        assert_eq!(
            (
                pb["requests"].as_u64(),
                pb["succeeded"].as_u64(),
                pb["cancelled"].as_u64(),
                pb["failed"].as_u64(),
                pb["failed_attempts"].as_u64()
            ),
            (Some(4), Some(3), Some(1), Some(0), Some(1)),
            "{pb}"
        );
        assert_eq!(pb["tokens_out"], 7 + 4 + 7);
        let none = provider(Value::Null);
        assert_eq!(
            (none["requests"].as_u64(), none["failed"].as_u64()),
            (Some(1), Some(1))
        );
        let models: Vec<&str> = rep["by_model"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["model"].as_str())
            .collect();
        assert_eq!(models, ["b/m2", "a/m1"], "most requests first");

        let series = rep["series"].as_array().unwrap();
        let steps = match window {
            "24h" => 24,
            "7d" => 7,
            _ => 30,
        };
        assert_eq!(series.len(), steps);
        let sum = |f: &str| series.iter().map(|s| s[f].as_u64().unwrap()).sum::<u64>();
        assert_eq!(
            (sum("requests"), sum("failed"), sum("tokens_out")),
            (8, 1, 39)
        );
        assert_eq!(sum("tokens_in"), served_in);
        assert!(
            series
                .iter()
                .all(|s| s["start"].as_str().unwrap().ends_with('Z'))
        );
    }

    // The log: newest first, attempt trails with key ids only, paging with `before`.
    assert_eq!(rows[0]["status"], 429);
    assert_eq!(rows[0]["attempts"].as_array().unwrap().len(), 2);
    let cancelled = &rows[1];
    assert_eq!(
        (cancelled["status"].as_u64(), cancelled["stream"].as_bool()),
        (Some(499), Some(true))
    );
    let failover = &rows[2];
    let trail = failover["attempts"].as_array().unwrap();
    assert_eq!(trail.len(), 2);
    assert_eq!(
        (
            trail[0]["provider"].as_str(),
            trail[0]["outcome"].as_str(),
            trail[0]["status"].as_u64()
        ),
        (Some("a"), Some("server_error"), Some(500))
    );
    assert_eq!(
        (
            trail[1]["provider"].as_str(),
            trail[1]["model"].as_str(),
            trail[1]["outcome"].as_str()
        ),
        (Some("b"), Some("m2"), Some("ok"))
    );
    for a in trail {
        for field in [
            "provider",
            "model",
            "key",
            "outcome",
            "status",
            "duration_ms",
            "error",
        ] {
            assert!(a.get(field).is_some(), "{field} in {a}");
        }
        assert!(
            a["key"].as_str().unwrap().starts_with("none-"),
            "a key id, never a key"
        );
    }
    for field in [
        "id",
        "at",
        "model_requested",
        "routed_via",
        "status",
        "stream",
        "latency_ms",
        "ttft_ms",
        "tokens_in",
        "tokens_out",
        "attempts",
    ] {
        assert!(failover.get(field).is_some(), "{field}");
    }
    let id = rows[3]["id"].as_str().unwrap();
    let older = get(
        &t,
        &cookie,
        &format!("/admin/api/requests?limit=2&before={id}"),
    )
    .await;
    let older = older["requests"].as_array().unwrap();
    assert_eq!(older.len(), 2);
    assert_eq!(older[0]["id"], rows[4]["id"]);
    assert_eq!(older[1]["id"], rows[5]["id"]);
    let resp = t
        .client
        .get(t.url("/admin/api/requests?limit=0"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = t
        .client
        .get(t.url("/admin/api/analytics?window=1y"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = t
        .client
        .get(t.url("/admin/api/analytics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn the_playground_answers_like_chat_completions() {
    let mock = Mock::start().await;
    let t = TestApp::spawn(&custom(&mock, "")).await;
    let (cookie, csrf) = admin_session(&t).await;
    let call = |body: Value, with_csrf: bool| {
        let mut r = t
            .client
            .post(t.url("/admin/api/playground"))
            .header("cookie", &cookie)
            .json(&body);
        if with_csrf {
            r = r.header("x-csrf-token", &csrf);
        }
        r.send()
    };
    assert_eq!(call(ask("mock-model"), false).await.unwrap().status(), 403);
    let resp = call(json!({"model": "mock-model", "stream": true, "messages": [{"role": "user", "content": "hi"}]}), true).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-routed-via"], "mock/mock-model");
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = sse_data(resp).await;
    assert_eq!(sse_text(&events), "hello from mock");
    let resp = call(ask("mock-model"), true).await.unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "hello from mock");
    // A client key does not open it.
    let resp = t
        .client
        .post(t.url("/admin/api/playground"))
        .bearer_auth(CLIENT_KEY)
        .json(&ask("mock-model"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}
