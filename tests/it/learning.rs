//! Learning from what upstreams say (SPEC 3.9), against mocks that answer as the vendors do:
//! refused fields dropped and remembered, lost tools routed around, 200 bodies that are
//! errors, flaky routes benched; and the stall clock that only content resets.

use crate::harness::*;
use freeway::lessons::Lesson;
use serde_json::{Value, json};
use std::time::Duration;

/// Two custom endpoints `a/m` and `b/m`, tried in that order.
fn pair(a: &Mock, b: &Mock, extra: &str) -> String {
    format!(
        r#"
[routing]
chain = ["a/m", "b/m"]
{extra}
[custom.a]
base_url = "{}"
keys = ["sk-a-upstream-key-1"]
models = [{{ id = "m", tools = true, vision = true }}]
[custom.b]
base_url = "{}"
keys = ["sk-b-upstream-key-1"]
models = [{{ id = "m", tools = true, vision = true }}]
"#,
        a.url("/v1"),
        b.url("/v1")
    )
}

fn groq_refusal(field: &str) -> Reply {
    Reply::status(400, &format!("property '{field}' is unsupported"))
}

fn lessons_of(t: &TestApp, model: &str) -> Vec<Lesson> {
    t.app
        .store
        .lessons()
        .unwrap()
        .into_iter()
        .filter(|(m, _, _)| m == model)
        .map(|(_, l, _)| l)
        .collect()
}

#[tokio::test]
async fn a_refused_field_is_dropped_retried_once_and_remembered() {
    let mock = Mock::start().await;
    mock.on(|r, _| match r.body.get("top_k") {
        Some(_) => groq_refusal("top_k"),
        None => Reply::ok("fine"),
    });
    let t = TestApp::spawn(&custom(&mock, "")).await;
    let mut body = ask("mock-model");
    body["top_k"] = json!(40);
    body["temperature"] = json!(0.3);
    let resp = t.chat(body.clone()).await;
    assert_eq!(resp.status(), 200);
    let calls = mock.chat_calls();
    assert_eq!(calls.len(), 2, "refused once, then sent without the field");
    assert_eq!(calls[1].body.get("top_k"), None);
    assert_eq!(calls[1].body["temperature"], 0.3, "the rest is intact");
    assert_eq!(calls[1].bearer(), calls[0].bearer(), "on the same key");

    // Remembered: the next request goes without it at once.
    assert_eq!(t.chat(body.clone()).await.status(), 200);
    assert_eq!(mock.chat_calls().len(), 3);
    assert_eq!(mock.chat_calls()[2].body.get("top_k"), None);

    // Stored (the background save), shown in the chain, forgotten on request.
    assert!(
        eventually(|| lessons_of(&t, "mock/mock-model") == [Lesson::Drop("top_k".into())]).await
    );
    let entry = t
        .app
        .ops
        .chain()
        .into_iter()
        .find(|e| e.model == "mock/mock-model")
        .unwrap();
    assert_eq!(entry.learned.len(), 1);
    assert!(entry.learned[0].0.contains("top_k"), "{:?}", entry.learned);
    assert!(
        entry.learned[0].1.contains("unsupported"),
        "{:?}",
        entry.learned
    );
    assert_eq!(t.app.ops.reset_quirks(Some("mock/mock-model")).unwrap(), 1);
    assert!(lessons_of(&t, "mock/mock-model").is_empty());
    assert_eq!(t.chat(body).await.status(), 200);
    let calls = mock.chat_calls();
    assert_eq!(calls[3].body["top_k"], 40, "forgotten: sent again");
}

#[tokio::test]
async fn a_field_refused_inside_messages_is_dropped_from_every_message() {
    let mock = Mock::start().await;
    mock.on(|r, _| {
        let has = r.body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m.get("cache_control").is_some());
        if has {
            Reply::status(
                400,
                "'messages.0' : for 'role:user' the following must be satisfied[('messages.0.cache_control' : property 'cache_control' is unsupported)]",
            )
        } else {
            Reply::ok("fine")
        }
    });
    let t = TestApp::spawn(&custom(&mock, "")).await;
    let body = json!({"model": "mock-model", "messages": [
        {"role": "system", "content": "be brief", "cache_control": {"type": "ephemeral"}},
        {"role": "user", "content": "hi", "cache_control": {"type": "ephemeral"}},
    ]});
    assert_eq!(t.chat(body).await.status(), 200);
    let calls = mock.chat_calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[1].body["messages"],
        json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
    );
    assert!(
        eventually(|| lessons_of(&t, "mock/mock-model")
            == [Lesson::DropInMessages("cache_control".into())])
        .await
    );
}

#[tokio::test]
async fn what_the_answer_means_is_never_stripped() {
    let mock = Mock::start().await;
    mock.always(Reply::status(
        400,
        "Unrecognized request argument supplied: response_format",
    ));
    let t = TestApp::spawn(&custom(&mock, "")).await;
    let mut body = ask("mock-model");
    body["response_format"] = json!({"type": "json_object"});
    let resp = t.chat(body).await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("response_format"),
        "{err}"
    );
    assert_eq!(mock.chat_calls().len(), 1, "not retried without it");
    // A field refused again after it was dropped is the client's to fix, not a loop.
    let again = Mock::start().await;
    // Mistral's validator words it so (and answers the same even without the field here).
    again.always(Reply::Json {
        status: 422,
        body: json!({"object": "error", "type": "invalid_request_error", "message": {"detail": [
            {"type": "extra_forbidden", "loc": ["body", "top_k"], "msg": "Extra inputs are not permitted", "input": 5}
        ]}}),
        headers: vec![],
    });
    let t = TestApp::spawn(&custom(&again, "")).await;
    let mut body = ask("mock-model");
    body["top_k"] = json!(5);
    assert_eq!(t.chat(body).await.status(), 400);
    assert_eq!(again.chat_calls().len(), 2, "one retry, no more");
}

#[tokio::test]
async fn a_model_that_lost_tools_is_routed_around() {
    let (a, b) = (Mock::start().await, Mock::start().await);
    a.on(|r, _| match r.body.get("tools") {
        Some(_) => Reply::status(400, "`m` does not support tools"),
        None => Reply::ok("from a"),
    });
    b.always(Reply::ok("from b"));
    let t = TestApp::spawn(&pair(&a, &b, "")).await;
    let with_tools = json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]});
    let resp = t.chat(with_tools.clone()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-routed-via"], "b/m");
    assert_eq!(a.chat_calls().len(), 1);
    // Learned: tool requests skip it, others still go to it.
    let resp = t.chat(with_tools).await;
    assert_eq!(resp.headers()["x-routed-via"], "b/m");
    assert_eq!(a.chat_calls().len(), 1, "not asked again with tools");
    let resp = t.chat(ask("auto")).await;
    assert_eq!(resp.headers()["x-routed-via"], "a/m");
    assert!(eventually(|| lessons_of(&t, "a/m") == [Lesson::NoTools]).await);

    // Images likewise; OpenRouter says it with a 404.
    let (c, d) = (Mock::start().await, Mock::start().await);
    c.always(Reply::status(
        404,
        "No endpoints found that support image input",
    ));
    d.always(Reply::ok("from b"));
    let t = TestApp::spawn(&pair(&c, &d, "")).await;
    let image = json!({"model": "auto", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]});
    assert_eq!(t.chat(image.clone()).await.status(), 200);
    assert_eq!(t.chat(image).await.status(), 200);
    assert_eq!(c.chat_calls().len(), 1);
    assert!(t.app.live.lessons("a/m").unwrap().has(&Lesson::NoImages));
}

#[tokio::test]
async fn a_200_that_is_an_error_fails_over_and_cools_down() {
    let (a, b) = (Mock::start().await, Mock::start().await);
    a.always(Reply::Json {
        status: 200,
        body: json!({"error": {"message": "You are out of credits", "code": 402}}),
        headers: vec![],
    });
    b.always(Reply::ok("from b"));
    let t = TestApp::spawn(&pair(&a, &b, "")).await;
    let resp = t.chat(ask("auto")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-routed-via"], "b/m");
    assert_eq!(t.chat(ask("auto")).await.status(), 200);
    assert_eq!(a.chat_calls().len(), 1, "cooled down like a 402");
    let rows = t.logged(2, 5).await;
    let first = rows.iter().find(|r| r.attempts.len() == 2).unwrap();
    assert_eq!(first.attempts[0].outcome, "denied");

    // A quota message in a 200 is a rate limit, with its own wait.
    let (c, d) = (Mock::start().await, Mock::start().await);
    c.always(Reply::Json {
        status: 200,
        body: json!({"error": {"message": "Rate limit exceeded: free-models-per-day"}}),
        headers: vec![],
    });
    d.always(Reply::ok("from b"));
    let t = TestApp::spawn(&pair(&c, &d, "")).await;
    assert_eq!(t.chat(ask("auto")).await.status(), 200);
    assert_eq!(t.chat(ask("auto")).await.status(), 200);
    assert_eq!(c.chat_calls().len(), 1);
    let cooling = t.app.ledger.cooldowns();
    assert!(
        cooling
            .iter()
            .any(|(s, c)| s.provider == "a" && c.reason.contains("daily")),
        "{cooling:?}"
    );
}

#[tokio::test]
async fn a_route_whose_streams_keep_breaking_is_benched() {
    let (a, b) = (Mock::start().await, Mock::start().await);
    // Content, then the body ends: no finish reason, no [DONE].
    a.on(|r, _| Reply::Stream(vec![Piece::Raw(chunk(&r.model(), "half"))]));
    b.on(|r, _| stream_of(&r.model(), &["whole"]));
    let t = TestApp::spawn(&pair(&a, &b, "")).await;
    let mut body = stream_ask();
    body["model"] = json!("auto");
    for _ in 0..3 {
        let resp = t.chat(body.clone()).await;
        assert_eq!(resp.headers()["x-routed-via"], "a/m");
        let events = sse_data(resp).await;
        assert!(
            events.iter().any(|e| e.contains("stream_interrupted")),
            "{events:?}"
        );
    }
    let resp = t.chat(body).await;
    assert_eq!(
        resp.headers()["x-routed-via"],
        "b/m",
        "benched after three cuts"
    );
    assert_eq!(sse_text(&sse_data(resp).await), "whole");
    assert_eq!(a.chat_calls().len(), 3);
    let entry = t
        .app
        .ops
        .chain()
        .into_iter()
        .find(|e| e.model == "a/m")
        .unwrap();
    let (_, why) = entry.benched.expect("shown in the chain");
    assert!(why.contains("streams cut 3 times"), "{why}");

    // Benched is tried last, not refused: alone, it still answers.
    let lone = Mock::start().await;
    lone.on(|r, n| match n {
        0..=2 => Reply::Stream(vec![Piece::Raw(chunk(&r.model(), "half"))]),
        _ => stream_of(&r.model(), &["whole"]),
    });
    let t = TestApp::spawn(&custom(&lone, "")).await;
    for _ in 0..3 {
        sse_data(t.chat(stream_ask()).await).await;
    }
    let resp = t.chat(stream_ask()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(sse_text(&sse_data(resp).await), "whole");
}

#[tokio::test]
async fn a_clean_stream_starts_the_count_over() {
    let (a, b) = (Mock::start().await, Mock::start().await);
    a.on(|r, n| {
        // Cut, cut, whole, cut, cut: never three in a row.
        if n % 3 == 2 {
            stream_of(&r.model(), &["whole"])
        } else {
            Reply::Stream(vec![Piece::Raw(chunk(&r.model(), "half"))])
        }
    });
    b.on(|r, _| stream_of(&r.model(), &["b"]));
    let t = TestApp::spawn(&pair(&a, &b, "")).await;
    let mut body = stream_ask();
    body["model"] = json!("auto");
    for _ in 0..5 {
        let resp = t.chat(body.clone()).await;
        assert_eq!(resp.headers()["x-routed-via"], "a/m");
        sse_data(resp).await;
    }
    assert_eq!(b.chat_calls().len(), 0);
}

#[tokio::test]
async fn a_trickle_of_empty_chunks_does_not_hold_a_stream() {
    let mock = Mock::start().await;
    mock.on(|r, _| {
        let m = r.model();
        let mut pieces = vec![Piece::Raw(chunk(&m, "hello"))];
        let empty = format!(
            "data: {}\n\n",
            json!({"id": "c", "object": "chat.completion.chunk", "model": m,
                "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": null}]})
        );
        for _ in 0..600 {
            pieces.push(Piece::Raw(empty.clone()));
            pieces.push(Piece::Sleep(Duration::from_millis(100)));
        }
        Reply::Stream(pieces)
    });
    let t = TestApp::spawn(&format!(
        "[routing]\nstall_timeout = \"1s\"\n{}",
        custom(&mock, "")
    ))
    .await;
    let resp = t.chat(stream_ask()).await;
    assert_eq!(resp.status(), 200);
    let events = tokio::time::timeout(Duration::from_secs(30), sse_data(resp))
        .await
        .expect("empty chunks kept the stream open");
    assert_eq!(sse_text(&events), "hello");
    let err: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(err["error"]["code"], "stream_interrupted", "{err}");
    // The books are closed: the log row says so (written after the reservation is settled).
    let rows = t.logged(1, 1).await;
    assert!(
        rows[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("stream_interrupted")),
        "{:?}",
        rows[0]
    );
}

#[tokio::test]
async fn a_lesson_that_changes_nothing_is_neither_retried_nor_kept() {
    let mock = Mock::start().await;
    // The upstream names a field the request does not carry: dropping it changes nothing.
    mock.always(groq_refusal("logprobs"));
    let t = TestApp::spawn(&custom(&mock, "")).await;
    assert_eq!(t.chat(ask("mock-model")).await.status(), 400);
    assert_eq!(mock.chat_calls().len(), 1, "not sent twice the same");
    assert!(
        t.app.live.lessons("mock/mock-model").is_none(),
        "nothing learned"
    );
}

#[tokio::test]
async fn a_refused_tool_hint_is_dropped_not_the_tools() {
    let mock = Mock::start().await;
    mock.on(|r, _| match r.body.get("parallel_tool_calls") {
        Some(_) => groq_refusal("parallel_tool_calls"),
        None => Reply::ok("fine"),
    });
    let t = TestApp::spawn(&custom(&mock, "")).await;
    let body = json!({"model": "mock-model", "messages": [{"role": "user", "content": "hi"}],
        "parallel_tool_calls": false,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]});
    assert_eq!(t.chat(body).await.status(), 200);
    assert_eq!(mock.chat_calls().len(), 2);
    assert!(
        mock.chat_calls()[1].body.get("tools").is_some(),
        "the tools stay"
    );
    let lessons = t.app.live.lessons("mock/mock-model").unwrap();
    assert!(lessons.has(&Lesson::Drop("parallel_tool_calls".into())));
    assert!(!lessons.has(&Lesson::NoTools));
}
