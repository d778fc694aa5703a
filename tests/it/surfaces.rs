//! The other client dialects end to end (SPEC 2.4): Anthropic Messages, Responses and legacy
//! completions through the real router to a mock OpenAI-dialect or Gemini upstream; errors in
//! each dialect's shape; failover invisible before content; the compatibility surfaces.

use crate::harness::*;
use serde_json::{Value, json};
use std::time::Duration;

/// An OpenAI-dialect upstream answering like a model that uses tools: a tool call when the
/// last message is the user's and tools were offered, else text; streamed when asked.
fn toolish(mock: &Mock) {
    mock.on(|r, _| {
        let messages = r.body["messages"].as_array().cloned().unwrap_or_default();
        let last = messages.last().cloned().unwrap_or(Value::Null);
        let wants_tool = last["role"] == "user" && r.body.get("tools").is_some();
        let model = r.model();
        if r.body["stream"] == true {
            if wants_tool {
                let first = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": model,
                    "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [{"index": 0, "id": "call_7",
                        "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\""}}]}, "finish_reason": null}]});
                let rest = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": model,
                    "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":\"Oslo\"}"}}]}, "finish_reason": null}]});
                let fin = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": model,
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]});
                return Reply::Stream(vec![
                    Piece::Raw(format!("data: {first}\n\n")),
                    Piece::Raw(format!("data: {rest}\n\n")),
                    Piece::Raw(format!("data: {fin}\n\n")),
                    Piece::Raw("data: [DONE]\n\n".into()),
                ]);
            }
            return stream_of(&model, &["Hel", "lo"]);
        }
        if wants_tool {
            return Reply::Json {
                status: 200,
                body: json!({"id": "c", "object": "chat.completion", "created": 1, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "call_7", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
                        "finish_reason": "tool_calls"}],
                    "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29}}),
                headers: vec![],
            };
        }
        let said = last["content"].as_str().unwrap_or("").to_string();
        let text = if last["role"] == "tool" {
            format!("It is {said}.")
        } else {
            "Hello".to_string()
        };
        Reply::Json {
            status: 200,
            body: completion(&model, &text),
            headers: vec![],
        }
    });
}

async fn setup(extra: &str) -> (Mock, TestApp) {
    let mock = Mock::start().await;
    toolish(&mock);
    let t = TestApp::spawn(&format!("{}{extra}", custom(&mock, ""))).await;
    (mock, t)
}

async fn post(t: &TestApp, path: &str, body: Value) -> reqwest::Response {
    t.client
        .post(t.url(path))
        .header("x-api-key", CLIENT_KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// (event name, data) of a named-event SSE body; each data's `type` must match its name.
async fn named_events(resp: reqwest::Response) -> Vec<(String, Value)> {
    let text = resp.text().await.unwrap();
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = None;
            let mut data = None;
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_string());
                }
                if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str::<Value>(d).unwrap());
                }
            }
            let (name, data) = (name.expect("an event: line"), data.expect("a data: line"));
            assert_eq!(data["type"], name.as_str(), "{e}");
            (name, data)
        })
        .collect()
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

const WEATHER_TOOL: &str = r#"{"name": "get_weather", "description": "Weather of a city", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}"#;

#[tokio::test]
async fn messages_answer_whole_and_streamed_with_claude_ids_mapped() {
    let (mock, t) = setup("").await;
    let resp = post(
        &t,
        "/v1/messages?beta=true",
        json!({"model": "claude-sonnet-4-5", "max_tokens": 64000, "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
               "messages": [{"role": "user", "content": "hi"}], "metadata": {"user_id": "u"}}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-routed-via"], "mock/mock-model");
    assert!(
        resp.headers()["request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(
        body["model"], "claude-sonnet-4-5",
        "the requested id is echoed"
    );
    assert!(body["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(body["content"], json!([{"type": "text", "text": "Hello"}]));
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["usage"]["input_tokens"], 5);
    assert_eq!(body["usage"]["output_tokens"], 7);
    let sent = &mock.chat_calls()[0];
    assert_eq!(sent.body["model"], "mock-model");
    assert_eq!(
        sent.body["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(
        sent.body["messages"][1],
        json!({"role": "user", "content": "hi"})
    );

    let resp = post(
        &t,
        "/v1/messages",
        json!({"model": "claude-opus-4-8", "max_tokens": 100, "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = named_events(resp).await;
    assert_eq!(
        names(&events),
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let text: String = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "Hello");
    assert_eq!(events[0].1["message"]["model"], "claude-opus-4-8");
    let delta = &events[6].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 4);
    assert_eq!(delta["usage"]["input_tokens"], 3);
    let streamed = &mock.chat_calls()[1];
    assert_eq!(streamed.body["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn a_tool_use_round_trip_in_the_messages_dialect() {
    let (mock, t) = setup("").await;
    let tools: Value = serde_json::from_str(&format!(
        "[{WEATHER_TOOL}, {{\"type\": \"web_search_20250305\", \"name\": \"web_search\"}}]"
    ))
    .unwrap();
    let ask = json!({"role": "user", "content": "Weather in Oslo?"});
    for stream in [false, true] {
        let resp = post(
            &t,
            "/v1/messages",
            json!({"model": "mock-model", "max_tokens": 200, "stream": stream, "tools": tools, "tool_choice": {"type": "auto"}, "messages": [ask]}),
        )
        .await;
        assert_eq!(resp.status(), 200);
        let (stop, block) = if stream {
            let events = named_events(resp).await;
            let start = events
                .iter()
                .find(|(n, d)| {
                    n == "content_block_start" && d["content_block"]["type"] == "tool_use"
                })
                .unwrap();
            let json: String = events
                .iter()
                .filter_map(|(_, d)| d["delta"]["partial_json"].as_str())
                .collect();
            let mut block = start.1["content_block"].clone();
            block["input"] = serde_json::from_str(&json).unwrap();
            let stop = events.iter().find(|(n, _)| n == "message_delta").unwrap().1["delta"]["stop_reason"].clone();
            (stop, block)
        } else {
            let body: Value = resp.json().await.unwrap();
            (body["stop_reason"].clone(), body["content"][0].clone())
        };
        assert_eq!(stop, "tool_use");
        assert_eq!(block["type"], "tool_use");
        assert_eq!(block["id"], "call_7");
        assert_eq!(block["name"], "get_weather");
        assert_eq!(block["input"], json!({"city": "Oslo"}));
    }
    let sent = &mock.chat_calls()[0];
    let offered: Vec<&str> = sent.body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(offered, ["get_weather"], "the server tool is dropped");
    assert_eq!(
        sent.body["tools"][0]["function"]["parameters"]["required"],
        json!(["city"])
    );

    let resp = post(
        &t,
        "/v1/messages",
        json!({"model": "mock-model", "max_tokens": 200, "tools": tools, "messages": [ask,
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "x"},
                {"type": "tool_use", "id": "call_7", "name": "get_weather", "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_7", "content": "sunny"}]}]}),
    )
    .await;
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["content"][0]["text"], "It is sunny.");
    assert_eq!(body["stop_reason"], "end_turn");
    let sent = mock.chat_calls().last().unwrap().body.clone();
    assert_eq!(
        sent["messages"][1]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Oslo\"}"
    );
    assert_eq!(
        sent["messages"][2],
        json!({"role": "tool", "tool_call_id": "call_7", "content": "sunny"})
    );

    // The request log says what was dropped and which surface it came in on.
    let rows = t.logged(3, 10).await;
    assert!(
        rows.iter()
            .all(|r| r.surface.as_deref() == Some("messages"))
    );
    assert!(
        rows.iter().any(|r| r.notes.as_deref()
            == Some("dropped the server tool web_search (web_search_20250305)")),
        "{:?}",
        rows.iter().map(|r| &r.notes).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn messages_through_gemini_have_the_same_shapes() {
    let mock = Mock::start().await;
    mock.on(|r, _| {
        if r.path.contains("streamGenerateContent") {
            let a = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi "}]}}]});
            let b = json!({"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}]}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 5, "totalTokenCount": 13}});
            return Reply::Stream(vec![Piece::Raw(format!("data: {a}\r\n\r\n")), Piece::Raw(format!("data: {b}\r\n\r\n"))]);
        }
        Reply::Json {
            status: 200,
            body: json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi there"}]}, "finishReason": "MAX_TOKENS"}],
                "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5}}),
            headers: vec![],
        }
    });
    let t = TestApp::spawn(&format!(
        "[providers.google]\nbase_url = \"{}\"\nkeys = [\"AIzaTestKey000111\"]\n",
        mock.url("/v1beta")
    ))
    .await;
    let resp = post(&t, "/v1/messages", json!({"model": "gemini-2.5-flash", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["content"],
        json!([{"type": "text", "text": "Hi there"}])
    );
    assert_eq!(body["stop_reason"], "max_tokens");
    assert_eq!(body["usage"]["input_tokens"], 3);

    let tools: Value = serde_json::from_str(&format!("[{WEATHER_TOOL}]")).unwrap();
    let resp = post(&t, "/v1/messages", json!({"model": "gemini-2.5-flash", "max_tokens": 10, "stream": true, "tools": tools, "messages": [{"role": "user", "content": "weather?"}]})).await;
    let events = named_events(resp).await;
    assert_eq!(
        names(&events),
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(events[5].1["content_block"]["name"], "get_weather");
    assert_eq!(events[6].1["delta"]["partial_json"], "{\"city\":\"Oslo\"}");
    assert_eq!(events[8].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(events[8].1["usage"]["output_tokens"], 5);
}

async fn anthropic_error(resp: reqwest::Response) -> (u16, String, reqwest::header::HeaderMap) {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    (
        status,
        body["error"]["type"].as_str().unwrap().to_string(),
        headers,
    )
}

#[tokio::test]
async fn messages_errors_are_anthropic_shaped() {
    let (mock, t) = setup("").await;
    let hi = json!({"model": "mock-model", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let resp = t
        .client
        .post(t.url("/v1/messages"))
        .json(&hi)
        .send()
        .await
        .unwrap();
    assert_eq!(anthropic_error(resp).await.0..=401, 401..=401);
    let resp = t
        .client
        .post(t.url("/v1/messages"))
        .bearer_auth(CLIENT_KEY)
        .json(&hi)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "Authorization: Bearer works as well as x-api-key"
    );
    let resp = t
        .client
        .post(t.url("/v1/messages"))
        .header("x-api-key", "wrong")
        .json(&hi)
        .send()
        .await
        .unwrap();
    let (s, kind, h) = anthropic_error(resp).await;
    assert_eq!((s, kind.as_str()), (401, "authentication_error"));
    assert!(h.contains_key("request-id"));

    let resp = t
        .client
        .post(t.url("/v1/messages"))
        .header("x-api-key", CLIENT_KEY)
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (s, kind, _) = anthropic_error(resp).await;
    assert_eq!((s, kind.as_str()), (400, "invalid_request_error"));
    let (s, kind, _) = anthropic_error(post(&t, "/v1/messages", json!({"model": "gpt-9", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]})).await).await;
    assert_eq!((s, kind.as_str()), (404, "not_found_error"));
    let (s, kind, _) = anthropic_error(
        post(
            &t,
            "/v1/messages",
            json!({"model": "m", "messages": [{"role": "user", "content": 7}]}),
        )
        .await,
    )
    .await;
    assert_eq!((s, kind.as_str()), (400, "invalid_request_error"));

    mock.always(Reply::status(429, "slow down").with_header("retry-after", "30"));
    let (s, kind, h) = anthropic_error(post(&t, "/v1/messages", hi.clone()).await).await;
    assert_eq!((s, kind.as_str()), (429, "rate_limit_error"));
    assert!(h.contains_key("retry-after"));
    let (mock2, t2) = setup("").await;
    mock2.always(Reply::status(500, "boom"));
    let (s, kind, _) = anthropic_error(post(&t2, "/v1/messages", hi).await).await;
    assert_eq!((s, kind.as_str()), (502, "api_error"));
}

#[tokio::test]
async fn count_tokens_uses_the_ledger_estimate() {
    let (mock, t) = setup("").await;
    let count = |text: &str| json!({"model": "claude-sonnet-4-5", "system": "sys", "messages": [{"role": "user", "content": text}]});
    let resp = post(&t, "/v1/messages/count_tokens?beta=true", count("hi")).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("request-id"));
    let small = resp.json::<Value>().await.unwrap()["input_tokens"]
        .as_u64()
        .unwrap();
    let big = post(&t, "/v1/messages/count_tokens", count(&"word ".repeat(400)))
        .await
        .json::<Value>()
        .await
        .unwrap()["input_tokens"]
        .as_u64()
        .unwrap();
    assert!(small > 0 && big >= small + 450, "{small} {big}");
    let resp = post(&t, "/v1/messages/count_tokens", json!({"model": "m"})).await;
    assert_eq!(anthropic_error(resp).await.0, 400);
    let resp = post(
        &t,
        "/v1/messages/count_tokens",
        json!({"model": "no-such", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    let (s, kind, _) = anthropic_error(resp).await;
    assert_eq!(
        (s, kind.as_str()),
        (404, "not_found_error"),
        "as /v1/messages would say"
    );
    let (s, kind, _) = anthropic_error(post(&t, "/v1/messages/batches", json!({})).await).await;
    assert_eq!(
        (s, kind.as_str()),
        (404, "not_found_error"),
        "unknown Anthropic routes in its shape"
    );
    assert_eq!(mock.count(), 0, "counting sends nothing upstream");
}

/// Two providers for `gpt-oss-120b`: `first` answers as scripted, `second` streams "fine".
async fn two_providers(first: Reply) -> (Mock, TestApp) {
    let a = Mock::start().await;
    a.always(first);
    let b = Mock::start().await;
    b.on(|r, _| stream_of(&r.model(), &["fi", "ne"]));
    let toml = format!(
        "[routing]\nchain = [\"a/m\", \"b/m\"]\n[custom.a]\nbase_url = \"{}\"\nmodels = [{{ id = \"m\", canonical = \"gpt-oss-120b\" }}]\n[custom.b]\nbase_url = \"{}\"\nmodels = [{{ id = \"m\", canonical = \"gpt-oss-120b\" }}]\n",
        a.url("/v1"),
        b.url("/v1")
    );
    (b, TestApp::spawn(&toml).await)
}

#[tokio::test]
async fn failover_before_content_is_invisible_and_a_break_after_it_is_an_error_event() {
    let (_b, t) = two_providers(Reply::status(503, "overloaded")).await;
    let resp = post(&t, "/v1/messages", json!({"model": "claude-haiku-4-5", "max_tokens": 10, "stream": true, "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(resp.headers()["x-routed-via"], "b/m");
    assert_eq!(resp.headers()["x-fallback-attempts"], "1");
    let events = named_events(resp).await;
    assert_eq!(events.last().unwrap().0, "message_stop");
    assert!(events.iter().all(|(n, _)| n != "error"));

    let broken = Reply::Stream(vec![Piece::Raw(chunk("m", "half"))]);
    let (_b, t) = two_providers(broken).await;
    let resp = post(&t, "/v1/messages", json!({"model": "gpt-oss-120b", "max_tokens": 10, "stream": true, "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(resp.headers()["x-routed-via"], "a/m");
    let events = named_events(resp).await;
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "error");
    assert_eq!(data["error"]["type"], "api_error");
    assert!(
        events.iter().all(|(n, _)| n != "message_delta"),
        "no made-up stop reason"
    );

    let (_b, t) = two_providers(Reply::Stream(vec![Piece::Raw(chunk("m", "half"))])).await;
    let resp = post(
        &t,
        "/v1/responses",
        json!({"model": "gpt-oss-120b", "stream": true, "input": "hi"}),
    )
    .await;
    let events = named_events(resp).await;
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "response.failed");
    assert_eq!(data["response"]["status"], "failed");
}

#[tokio::test]
async fn responses_answer_whole_streamed_and_with_function_calls() {
    let (mock, t) = setup("").await;
    let resp = post(&t, "/v1/responses", json!({"model": "mock-model", "instructions": "Be brief.", "input": "hi", "store": false, "include": ["reasoning.encrypted_content"], "prompt_cache_key": "k"})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-routed-via"], "mock/mock-model");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "response");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["output"][0]["type"], "message");
    assert_eq!(
        body["output"][0]["content"][0],
        json!({"type": "output_text", "text": "Hello", "annotations": [], "logprobs": []})
    );
    assert_eq!(body["usage"]["total_tokens"], 12);
    assert_eq!(body["instructions"], "Be brief.");
    let sent = &mock.chat_calls()[0].body;
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert!(sent.get("store").is_none() && sent.get("prompt_cache_key").is_none());

    let resp = post(&t, "/v1/responses", json!({"model": "mock-model", "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}], "stream": true})).await;
    let events = named_events(resp).await;
    let kinds = names(&events);
    assert_eq!(&kinds[..2], ["response.created", "response.in_progress"]);
    assert_eq!(kinds.last(), Some(&"response.completed"));
    for (i, (_, d)) in events.iter().enumerate() {
        assert_eq!(d["sequence_number"], i);
    }
    let done = &events.last().unwrap().1["response"];
    assert_eq!(done["output"][0]["content"][0]["text"], "Hello");
    assert_eq!(done["id"], events[0].1["response"]["id"]);

    let tools = json!([{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
                       {"type": "web_search"}]);
    for stream in [false, true] {
        let resp = post(&t, "/v1/responses", json!({"model": "mock-model", "input": "Weather in Oslo?", "tools": tools, "stream": stream})).await;
        let response = if stream {
            named_events(resp).await.last().unwrap().1["response"].clone()
        } else {
            resp.json().await.unwrap()
        };
        let call = response["output"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["type"] == "function_call")
            .unwrap()
            .clone();
        assert_eq!(call["call_id"], "call_7");
        assert_eq!(call["name"], "get_weather");
        assert_eq!(call["arguments"], "{\"city\":\"Oslo\"}");
    }
    let resp = post(&t, "/v1/responses", json!({"model": "mock-model", "tools": tools, "input": [
        {"role": "user", "content": "Weather in Oslo?"},
        {"type": "function_call", "id": "fc_1", "status": "completed", "call_id": "call_7", "name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"},
        {"type": "function_call_output", "id": "fco_1", "call_id": "call_7", "output": "sunny"}]})).await;
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["output"][0]["content"][0]["text"], "It is sunny.");
    let sent = mock.chat_calls().last().unwrap().body.clone();
    assert_eq!(sent["messages"][1]["tool_calls"][0]["id"], "call_7");
    assert_eq!(
        sent["messages"][2],
        json!({"role": "tool", "tool_call_id": "call_7", "content": "sunny"})
    );

    let resp = post(
        &t,
        "/v1/responses",
        json!({"model": "mock-model", "input": "more", "previous_response_id": "resp_1"}),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("whole conversation"),
        "{body}"
    );
}

#[tokio::test]
async fn a_length_cut_response_is_incomplete() {
    let mock = Mock::start().await;
    mock.always(Reply::Json {
        status: 200,
        body: json!({"id": "c", "object": "chat.completion", "created": 1, "model": "mock-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Once upon"}, "finish_reason": "length"}]}),
        headers: vec![],
    });
    let t = TestApp::spawn(&custom(&mock, "")).await;
    let body: Value = post(
        &t,
        "/v1/responses",
        json!({"model": "mock-model", "input": "story", "max_output_tokens": 2}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(body["status"], "incomplete");
    assert_eq!(body["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(mock.chat_calls()[0].body["max_tokens"], 2);
}

#[tokio::test]
async fn legacy_completions_whole_streamed_and_fill_in_the_middle() {
    let (mock, t) = setup("").await;
    let resp = post(
        &t,
        "/v1/completions",
        json!({"model": "mock-model", "prompt": "Say", "max_tokens": 5}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["text"], "Hello");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["total_tokens"], 12);

    let resp = post(&t, "/v1/completions", json!({"model": "mock-model", "prompt": "a = ", "suffix": "\nprint(a)", "stream": true, "stream_options": {"include_usage": true}})).await;
    let data = sse_data(resp).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(text, "Hello");
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 4);
    let sent = &mock.chat_calls()[1].body;
    assert_eq!(
        sent["messages"][1]["content"],
        "<prefix>a = </prefix>\n<suffix>\nprint(a)</suffix>"
    );
    assert_eq!(sent["max_tokens"], 16, "the official default length");

    for bad in [
        json!({"model": "mock-model", "prompt": "x", "n": 2}),
        json!({"model": "mock-model", "prompt": "x", "echo": true}),
    ] {
        let resp = post(&t, "/v1/completions", bad).await;
        assert_eq!(resp.status(), 400);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_request");
    }
}

#[tokio::test]
async fn metrics_count_requests_by_surface() {
    let (_mock, t) = setup("[metrics]\npublic = true\n").await;
    for (path, body) in [
        (
            "/v1/messages",
            json!({"model": "mock-model", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/v1/responses",
            json!({"model": "mock-model", "input": "hi"}),
        ),
        (
            "/v1/completions",
            json!({"model": "mock-model", "prompt": "hi"}),
        ),
        ("/v1/chat/completions", ask("mock-model")),
    ] {
        assert_eq!(post(&t, path, body).await.status(), 200, "{path}");
    }
    let wanted = |text: &str| {
        ["messages", "responses", "completions", "chat"].iter().all(|s| {
            text.contains(&format!(
                r#"freeway_requests_total{{surface="{s}",client="config #1",provider="mock",model="mock-model",outcome="ok"}} 1"#
            ))
        })
    };
    let mut text = String::new();
    for _ in 0..100 {
        text = t
            .client
            .get(t.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if wanted(&text) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(wanted(&text), "{text}");
}

#[tokio::test]
async fn compatibility_surfaces() {
    let (_mock, t) = setup("[http]\ncors_origins = [\"https://app.example\"]\n").await;
    let resp = t.client.head(t.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "Claude Code's HEAD / first");

    let get = |path: &str| t.client.get(t.url(path)).bearer_auth(CLIENT_KEY).send();
    let m: Value = get("/v1/models/mock-model")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["id"], "mock-model");
    assert_eq!(m["object"], "model");
    let m: Value = get("/v1/models/mock/mock-model")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        m["id"], "mock-model",
        "a provider reference finds its model"
    );
    assert_eq!(get("/v1/models/auto").await.unwrap().status(), 200);
    let resp = get("/v1/models/nope").await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "model_not_found"
    );

    for path in [
        "/v1/chat/completions/",
        "/v1//chat/completions",
        "//v1/chat/completions",
    ] {
        let resp = t
            .client
            .post(t.url(path))
            .bearer_auth(CLIENT_KEY)
            .json(&ask("mock-model"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    assert_eq!(get("/v1/models/").await.unwrap().status(), 200);

    let resp = t
        .client
        .post(t.url("/v1/images/generations"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        401,
        "nothing about routes before authentication"
    );
    let resp = t
        .client
        .post(t.url("/v1/images/generations"))
        .bearer_auth(CLIENT_KEY)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let msg = resp.json::<Value>().await.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("/v1/images/generations")
            && msg.contains("/v1/embeddings")
            && msg.contains("/v1/messages")
            && msg.contains("/v1/responses"),
        "{msg}"
    );

    let preflight = t
        .client
        .request(reqwest::Method::OPTIONS, t.url("/v1/chat/completions"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(
        preflight.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    let chat_from = |origin: &'static str| {
        t.client
            .post(t.url("/v1/chat/completions"))
            .header("origin", origin)
            .bearer_auth(CLIENT_KEY)
            .json(&ask("mock-model"))
            .send()
    };
    let resp = chat_from("https://app.example").await.unwrap();
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(
        resp.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("x-routed-via")
    );
    let resp = chat_from("https://evil.example").await.unwrap();
    assert!(!resp.headers().contains_key("access-control-allow-origin"));
    let resp = t
        .client
        .get(t.url("/admin/login"))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert!(
        !resp.headers().contains_key("access-control-allow-origin"),
        "never the dashboard"
    );
    let resp = t
        .client
        .get(t.url("//admin/login"))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert!(
        !resp.headers().contains_key("access-control-allow-origin"),
        "not by a doubled slash either"
    );

    let (_mock, plain) = setup("").await;
    let resp = plain
        .client
        .post(plain.url("/v1/chat/completions"))
        .header("origin", "https://app.example")
        .bearer_auth(CLIENT_KEY)
        .json(&ask("mock-model"))
        .send()
        .await
        .unwrap();
    assert!(
        !resp.headers().contains_key("access-control-allow-origin"),
        "no CORS by default"
    );
}

#[tokio::test]
async fn several_choices_are_refused_where_gemini_would_give_one() {
    let mock = Mock::start().await;
    mock.always(Reply::Json {
        status: 200,
        body: json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "one"}]}, "finishReason": "STOP"}]}),
        headers: vec![],
    });
    let t = TestApp::spawn(&format!(
        "[providers.google]\nbase_url = \"{}\"\nkeys = [\"AIzaTestKey000111\"]\n",
        mock.url("/v1beta")
    ))
    .await;
    let mut body = ask("gemini-2.5-flash");
    body["n"] = json!(2);
    let resp = t.chat(body).await;
    assert_eq!(resp.status(), 400);
    let msg = resp.json::<Value>().await.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("several choices"), "{msg}");
    assert_eq!(mock.count(), 0);
    assert_eq!(t.chat(ask("gemini-2.5-flash")).await.status(), 200);
}

/// Anthropic clients list and look up models in Anthropic's shape, `claude-*` ids included, and
/// a wrong key is not worth retrying.
#[tokio::test]
async fn anthropic_clients_see_models_their_way() {
    let mock = Mock::start().await;
    let t = TestApp::spawn(&custom(&mock, "")).await;
    let get = |path: &str, key: &str| {
        t.client
            .get(t.url(path))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .send()
    };
    let list: Value = get("/v1/models", CLIENT_KEY)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["has_more"], false, "{list}");
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["type"] == "model")
    );
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "mock-model")
    );
    let r = get("/v1/models/claude-sonnet-4-5", CLIENT_KEY)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m: Value = r.json().await.unwrap();
    assert_eq!(
        (m["type"].as_str(), m["id"].as_str()),
        (Some("model"), Some("claude-sonnet-4-5"))
    );
    let r = get("/v1/models/no-such-model", CLIENT_KEY).await.unwrap();
    assert_eq!(r.status(), 404);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "not_found_error", "{e}");
    let r = get("/v1/models", "fw-wrong").await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-should-retry"], "false");
}

/// Anthropic structured output reaches the upstream as a JSON-schema response format.
#[tokio::test]
async fn anthropic_structured_output_reaches_the_upstream() {
    let mock = Mock::start().await;
    mock.always(Reply::ok("{\"name\": \"Ada\"}"));
    let t = TestApp::spawn(&custom(&mock, "")).await;
    let schema =
        json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]});
    let r = t
        .client
        .post(t.url("/v1/messages"))
        .header("x-api-key", CLIENT_KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "mock-model", "max_tokens": 50,
            "messages": [{"role": "user", "content": "who?"}],
            "output_config": {"format": {"type": "json_schema", "schema": schema}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sent = &mock.chat_calls()[0].body;
    assert_eq!(sent["response_format"]["type"], "json_schema");
    assert_eq!(sent["response_format"]["json_schema"]["schema"], schema);
}

/// A large body to count_tokens is parsed off the event loop (the large-body path) and counted.
#[tokio::test]
async fn count_tokens_counts_a_large_body() {
    let mock = Mock::start().await;
    let t = TestApp::spawn(&custom(&mock, "")).await;
    let text = "word ".repeat(80_000);
    let r = t
        .client
        .post(t.url("/v1/messages/count_tokens"))
        .header("x-api-key", CLIENT_KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "mock-model", "messages": [{"role": "user", "content": text}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["input_tokens"].as_u64().unwrap() > 90_000, "{v}");
}
