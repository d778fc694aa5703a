//! Quota truth (SPEC 3.7): every pool kind holds under concurrency, retired models, headroom
//! (`GET /v1/quota`) and pacing, on the injected clock.

use crate::harness::*;
use freeway::ledger::ManualClock;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// An answer that used `tokens` in all.
fn used(tokens: u64) -> Reply {
    Reply::Json {
        status: 200,
        body: json!({"id": "c", "object": "chat.completion", "created": 1, "model": "mock-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": tokens / 2, "completion_tokens": tokens - tokens / 2, "total_tokens": tokens}}),
        headers: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_monthly_cap_holds_under_concurrency() {
    let mock = Mock::start().await;
    mock.always(Reply::Delay(
        Duration::from_millis(50),
        Box::new(Reply::ok("ok")),
    ));
    let t = TestApp::spawn(&custom(&mock, ", rpmo = 5")).await;
    let statuses = burst(&t, 30, |_| ask("mock-model")).await;
    assert_eq!(mock.chat_calls().len(), 5, "exactly the month's cap");
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 5);
    assert_eq!(statuses.iter().filter(|&&s| s == 429).count(), 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_one_time_credit_is_never_overspent() {
    let mock = Mock::start().await;
    // Every answer uses 1200 tokens; each request reserves about 1005 before it is sent.
    mock.always(Reply::Delay(
        Duration::from_millis(50),
        Box::new(used(1200)),
    ));
    let clock = Arc::new(ManualClock::new(1_790_000_000_000));
    let t = TestApp::start(Options::new(custom(&mock, ", credit = 5000")).clock(clock.clone()))
        .await
        .unwrap();
    let body = json!({"model": "mock-model", "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]});
    let statuses = burst(&t, 20, |_| body.clone()).await;
    let served = statuses.iter().filter(|&&s| s == 200).count();
    assert_eq!(served, mock.chat_calls().len());
    assert!((1..=4).contains(&served), "{served} reached the upstream");
    // Spent, it does not come back: not after a minute, a day or a month.
    let calls = mock.chat_calls().len();
    for wait in [70, 86_400, 40 * 86_400] {
        clock.advance(Duration::from_secs(wait));
        let resp = t.chat(body.clone()).await;
        assert_eq!(resp.status(), 429);
        let msg = resp.json::<Value>().await.unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(msg.contains("credit"), "{msg}");
    }
    assert_eq!(mock.chat_calls().len(), calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_of_one_project_share_its_caps() {
    let mock = Mock::start().await;
    mock.always(Reply::Delay(
        Duration::from_millis(50),
        Box::new(Reply::ok("ok")),
    ));
    let toml = |shared: bool| {
        format!(
            "[providers.groq]\nbase_url = \"{}\"\nkeys = [\"gsk_one_0123456789\", \"gsk_two_0123456789\"]\nshared_quota = {shared}\n[[providers.groq.models]]\nid = \"openai/gpt-oss-20b\"\nrpd = 6\nrpm = 100\ntpm = 1000000\n",
            mock.url("/v1")
        )
    };
    let t = TestApp::spawn(&toml(true)).await;
    let statuses = burst(&t, 30, |_| ask("groq/openai/gpt-oss-20b")).await;
    assert_eq!(mock.chat_calls().len(), 6, "one pool for both keys");
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 6);
    let keys: std::collections::HashSet<String> = mock
        .chat_calls()
        .iter()
        .filter_map(|c| c.bearer())
        .collect();
    assert_eq!(keys.len(), 2, "the load still spreads over both keys");
    t.stop().await;

    let mock2 = Mock::start().await;
    mock2.always(Reply::Delay(
        Duration::from_millis(50),
        Box::new(Reply::ok("ok")),
    ));
    let own = format!(
        "[providers.groq]\nbase_url = \"{}\"\nkeys = [\"gsk_one_0123456789\", \"gsk_two_0123456789\"]\n[[providers.groq.models]]\nid = \"openai/gpt-oss-20b\"\nrpd = 6\nrpm = 100\ntpm = 1000000\n",
        mock2.url("/v1")
    );
    let t = TestApp::spawn(&own).await;
    burst(&t, 30, |_| ask("groq/openai/gpt-oss-20b")).await;
    assert_eq!(
        mock2.chat_calls().len(),
        12,
        "without shared_quota each key has its own"
    );
}

/// Two providers for one model, `a` first in the chain.
fn pair(a: &Mock, b: &Mock, extra: &str) -> String {
    format!(
        "{extra}[routing]\nchain = [\"a/m\", \"b/m\"]\n[custom.a]\nbase_url = \"{}\"\nmodels = [{{ id = \"m\", canonical = \"shared-model\" }}]\n[custom.b]\nbase_url = \"{}\"\nmodels = [{{ id = \"m\", canonical = \"shared-model\" }}]\n",
        a.url("/v1"),
        b.url("/v1")
    )
}

#[tokio::test]
async fn a_retired_model_is_switched_off_until_enabled_again() {
    let a = Mock::start().await;
    a.always(Reply::status(410, "The model m has been decommissioned"));
    let b = Mock::start().await;
    b.always(Reply::ok("from b"));
    let dir = tempfile::tempdir().unwrap();
    let t = TestApp::start(Options::new(pair(&a, &b, "")).dir(dir.path()))
        .await
        .unwrap();
    let resp = t.chat(ask("auto")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-routed-via"],
        "b/m",
        "failed over, invisibly"
    );
    assert_eq!(t.chat(ask("auto")).await.status(), 200);
    assert_eq!(a.count(), 1, "never asked again");

    let all = t.get_json("/v1/models?all=true").await;
    let m = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "shared-model")
        .unwrap()
        .clone();
    assert!(
        m["retired"]["a/m"]
            .as_str()
            .unwrap()
            .contains("decommissioned"),
        "{m}"
    );
    let (providers, _) = t.app.ops.status();
    let line = providers.iter().find(|p| p.id == "a").unwrap().models[0]
        .state
        .clone();
    assert!(line.starts_with("retired"), "{line}");
    assert!(t.chat(ask("a/m")).await.status() == 404);

    // It stays retired across a restart (the record reaches the store in the background).
    let mut saved = false;
    for _ in 0..100 {
        if !t.app.store.retired().unwrap().is_empty() {
            saved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(saved);
    t.stop().await;
    let t = TestApp::start(Options::new(pair(&a, &b, "")).dir(dir.path()))
        .await
        .unwrap();
    assert_eq!(t.chat(ask("auto")).await.headers()["x-routed-via"], "b/m");
    assert_eq!(a.count(), 1);

    // The user says it is back.
    a.always(Reply::ok("from a"));
    t.app.ops.set_model_enabled("a/m", true).unwrap();
    let resp = t.chat(ask("auto")).await;
    assert_eq!(resp.headers()["x-routed-via"], "a/m");
    assert!(t.app.store.retired().unwrap().is_empty());
}

async fn quota(t: &TestApp) -> Value {
    t.get_json("/v1/quota").await
}

#[tokio::test]
async fn quota_shows_every_pool_and_when_the_day_runs_out() {
    let mock = Mock::start().await;
    mock.always(used(100));
    let start = 1_790_000_000_000;
    let clock = Arc::new(ManualClock::new(start));
    let t = TestApp::start(
        Options::new(custom(
            &mock,
            ", rpm = 10, rpd = 100, tpd = 100000, rpmo = 1000",
        ))
        .clock(clock.clone()),
    )
    .await
    .unwrap();
    let resp = t.client.get(t.url("/v1/quota")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    // Ten requests over the last hour: a pace of ten an hour.
    for _ in 0..10 {
        assert_eq!(t.chat(ask("mock-model")).await.status(), 200);
        clock.advance(Duration::from_secs(300));
    }
    let q = quota(&t).await;
    let m = q["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "mock-model")
        .unwrap()
        .clone();
    assert_eq!(m["provider"], "mock");
    assert_eq!(m["available"], true);
    let pool = |window: &str, unit: &str| {
        m["pools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["window"] == window && p["unit"] == unit)
            .unwrap()
            .clone()
    };
    let day = pool("day", "requests");
    assert_eq!(
        (
            day["limit"].as_u64(),
            day["used"].as_u64(),
            day["remaining"].as_u64()
        ),
        (Some(100), Some(10), Some(90))
    );
    assert_eq!(day["scope"], "model");
    let first = chrono::DateTime::from_timestamp_millis(start + 86_400_000 + 60_000).unwrap();
    let resets = chrono::DateTime::parse_from_rfc3339(day["resets_at"].as_str().unwrap()).unwrap();
    assert!(
        resets <= first && resets.timestamp_millis() > start + 86_400_000 - 60_000,
        "{resets}"
    );
    let tokens = pool("day", "tokens");
    assert_eq!(
        tokens["used"], 1000,
        "settled with what the upstream reported"
    );
    assert_eq!(pool("month", "requests")["remaining"], 990);
    assert_eq!(pool("minute", "requests")["limit"], 10);
    // 90 left at 10 an hour (the last hour saw ten): nine hours from now, before the reset.
    let now = start + 10 * 300_000;
    let exhausts =
        chrono::DateTime::parse_from_rfc3339(m["exhausts_at"].as_str().unwrap()).unwrap();
    let expected = now + 9 * 3_600_000;
    assert!(
        (exhausts.timestamp_millis() - expected).abs() <= 3_600_000,
        "{exhausts}"
    );

    // Quiet for two hours: no pace, nothing runs out.
    clock.advance(Duration::from_secs(7200));
    let q = quota(&t).await;
    assert!(q["data"][0]["exhausts_at"].is_null(), "{q}");
}

#[tokio::test]
async fn pacing_even_keeps_the_strong_model_for_later() {
    let a = Mock::start().await;
    a.always(Reply::ok("strong"));
    let b = Mock::start().await;
    b.always(Reply::ok("weak"));
    let clock = Arc::new(ManualClock::new(1_790_000_000_000));
    // `a` is stronger and capped at 240 a day (a rolling day): an even pace is 10 an hour, after
    // a burst of 24 once a day.
    let config = |pacing: &str| {
        format!(
            "[routing]\npacing = \"{pacing}\"\n[custom.a]\nbase_url = \"{}\"\nmodels = [{{ id = \"m\", rank = 1, rpd = 240 }}]\n[custom.b]\nbase_url = \"{}\"\nmodels = [{{ id = \"w\", rank = 2 }}]\n",
            a.url("/v1"),
            b.url("/v1")
        )
    };
    let t = TestApp::start(Options::new(config("even")).clock(clock.clone()))
        .await
        .unwrap();
    let mut via = Vec::new();
    for _ in 0..50 {
        let resp = t.chat(ask("auto")).await;
        assert_eq!(resp.status(), 200);
        via.push(resp.headers()["x-routed-via"].to_str().unwrap().to_string());
    }
    let strong = via.iter().filter(|v| *v == "a/m").count();
    assert_eq!(strong, 24, "the day's burst, then the weaker model");
    assert_eq!(via[49], "b/w");
    // A named model is never paced.
    assert_eq!(t.chat(ask("a/m")).await.headers()["x-routed-via"], "a/m");
    // When nothing else can serve, a model ahead of its pace serves rather than a 429, but only
    // until half of the day is left for later (a rolling day of 240: 120).
    b.always(Reply::status(429, "slow down"));
    let resp = t.chat(ask("auto")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-routed-via"], "a/m");
    assert_eq!(resp.headers()["x-fallback-attempts"], "1");
    let mut served = 1;
    let refused = loop {
        let resp = t.chat(ask("auto")).await;
        if resp.status() != 200 {
            break resp;
        }
        served += 1;
        assert!(served < 200, "never held back");
    };
    assert_eq!(a.chat_calls().len(), 120, "half the day kept for later");
    assert_eq!(served, 95);
    assert_eq!(refused.status(), 429);
    // Retry-After names the earliest moment anything frees: `b`'s cooldown after its 429.
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0 && retry <= 90, "{retry}");
    // `a` itself: when the last hour's 120 have left the hour.
    let body = refused.text().await.unwrap();
    let paced = body.split("a/m: paced").nth(1).expect("a/m noted as paced");
    let secs: u64 = paced
        .split("free in ")
        .nth(1)
        .and_then(|t| t.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no time in {body}"));
    assert!((3500..=3660).contains(&secs), "{secs}: {body}");
    b.always(Reply::ok("weak"));
    // An hour later the pace allows the strong model again.
    clock.advance(Duration::from_secs(3600 + 60));
    assert_eq!(t.chat(ask("auto")).await.headers()["x-routed-via"], "a/m");
    t.stop().await;

    // Pacing off (the default): the strong model is spent first.
    let clock = Arc::new(ManualClock::new(1_790_000_000_000));
    let a2 = Mock::start().await;
    a2.always(Reply::ok("strong"));
    let t = TestApp::start(
        Options::new(config("off").replace(&a.url("/v1"), &a2.url("/v1"))).clock(clock),
    )
    .await
    .unwrap();
    for _ in 0..50 {
        assert_eq!(t.chat(ask("auto")).await.headers()["x-routed-via"], "a/m");
    }
}

#[tokio::test]
async fn pacing_demand_follows_the_logged_day_where_even_would_not() {
    // Tuesday 2026-12-08, 00:30 UTC. Custom providers have a rolling day: paced by demand, a
    // request must leave room for the demand the UTC curve expects in the hours ahead while it
    // still counts.
    const START: i64 = 1_796_689_800_000;
    const HOUR: i64 = 3_600_000;
    let midnight = START - 30 * 60_000;
    // Two weeks of an office day in the request log: requests per UTC hour.
    let mut office = [0u64; 24];
    office[8..20].copy_from_slice(&[4, 9, 10, 9, 6, 8, 10, 10, 8, 5, 2, 1]);
    let seeded = || {
        let dir = tempfile::tempdir().unwrap();
        let store = freeway::store::Store::open(dir.path()).unwrap();
        let mut rows = Vec::new();
        for day in 1..=14 {
            for (h, n) in office.iter().enumerate() {
                for i in 0..*n {
                    rows.push(freeway::record::RequestRow {
                        id: format!("d{day}h{h}r{i}"),
                        at_ms: midnight - day * 24 * HOUR + h as i64 * HOUR + i as i64 * 1000,
                        requested_model: "auto".into(),
                        status: 200,
                        ..Default::default()
                    });
                }
            }
        }
        store.insert_requests(&rows).unwrap();
        dir
    };
    // `a` is stronger and capped at 240 a (rolling) day; `b` has no cap.
    let run = |pacing: &'static str| async move {
        let a = Mock::start().await;
        a.always(Reply::ok("strong"));
        let b = Mock::start().await;
        b.always(Reply::ok("weak"));
        let dir = seeded();
        let clock = Arc::new(ManualClock::new(START));
        let toml = format!(
            "[routing]\npacing = \"{pacing}\"\n[custom.a]\nbase_url = \"{}\"\nmodels = [{{ id = \"m\", rank = 1, rpd = 240 }}]\n[custom.b]\nbase_url = \"{}\"\nmodels = [{{ id = \"w\", rank = 2 }}]\n",
            a.url("/v1"),
            b.url("/v1")
        );
        let t = TestApp::start(Options::new(toml).dir(dir.path()).clock(clock.clone()))
            .await
            .unwrap();
        // How many of `n` auto requests the strong model serves now.
        let strong = |n: usize| {
            let t = &t;
            async move {
                let mut served = 0;
                for _ in 0..n {
                    let resp = t.chat(ask("auto")).await;
                    assert_eq!(resp.status(), 200);
                    served += usize::from(resp.headers()["x-routed-via"] == "a/m");
                }
                served
            }
        };
        // 00:30, the night: the day's burst (a tenth of the cap), either way.
        let night = strong(30).await;
        // 02:00, still quiet.
        clock.set(midnight + 2 * HOUR);
        let quiet = strong(20).await;
        // 10:00–10:40, the busiest stretch of the logged day.
        let mut busy = 0;
        for minutes in [0, 20, 40] {
            clock.set(midnight + 10 * HOUR + minutes * 60_000);
            busy += strong(20).await;
        }
        t.stop().await;
        (night, quiet, busy)
    };
    let even = run("even").await;
    let demand = run("demand").await;
    // 00:30: the even pace allows its burst (a tenth of the cap). Two weeks of the same day
    // make the curve trusted, and a trusted curve has no burst on a rolling day: the night
    // expects nothing, so by demand nothing is due.
    assert_eq!(even.0, 24);
    assert_eq!(demand.0, 0);
    // Quiet: an even pace frees 10 an hour; by demand nothing is due before 08:00.
    assert_eq!(even.1, 10);
    assert_eq!(demand.1, 0);
    // Busy: an even pace still 10 an hour. By demand 20 at 10:00 (what counts until 09:00
    // tomorrow, plus what the curve expects until then: today's 10:00–20:00 and tomorrow's
    // 08:00–09:00, 73 of 82 logged requests a day, within 240), 7 at 10:20 and 1 at 10:40 as
    // the hours ahead move on: 28.
    assert_eq!(even.2, 10);
    assert_eq!(demand.2, 28, "{demand:?}");
}
