//! Tool calling through the OpenAI dialect: plain, streamed with fragmented arguments, and a
//! multi-step conversation; and an independent client reading Gemini-translated streams.

use crate::harness::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::collections::BTreeMap;

fn tools() -> Value {
    json!([{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}])
}

#[tokio::test]
async fn tool_calls_pass_through_unchanged() {
    let mock = Mock::start().await;
    mock.always(Reply::Json {
        status: 200,
        body: json!({"id": "x", "object": "chat.completion", "created": 1, "model": "mock-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"a\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"b\"}"}}]},
                "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1}}),
        headers: vec![],
    });
    let t = TestApp::spawn(&custom(&mock, "")).await;
    let resp = t.chat(json!({"model": "mock-model", "tools": tools(), "tool_choice": "auto", "messages": [{"role": "user", "content": "go"}]})).await;
    assert_eq!(resp.status(), 200, "a tool-call-only answer is an answer");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        body["choices"][0]["message"]["tool_calls"][1]["id"],
        "call_2"
    );
    let sent = &mock.chat_calls()[0];
    assert_eq!(sent.body["tools"], tools());
    assert_eq!(sent.body["tool_choice"], "auto");

    // Step two: the assistant's calls and the tool results go upstream as sent.
    let history = json!([
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"a\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "result a"}
    ]);
    mock.always(Reply::ok("final answer"));
    let resp = t
        .chat(json!({"model": "mock-model", "tools": tools(), "messages": history}))
        .await;
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "final answer");
    assert_eq!(mock.chat_calls()[1].body["messages"], history);
}

#[tokio::test]
async fn streamed_tool_calls_arrive_in_order_with_stable_ids() {
    let mock = Mock::start().await;
    let delta = |d: Value, finish: Value| {
        Piece::Raw(format!(
            "data: {}\n\n",
            json!({"id": "s", "object": "chat.completion.chunk", "created": 1, "model": "mock-model",
            "choices": [{"index": 0, "delta": d, "finish_reason": finish}]})
        ))
    };
    let pieces = vec![
        delta(
            json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "lookup", "arguments": ""}}]}),
            Value::Null,
        ),
        delta(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"q\":"}}]}),
            Value::Null,
        ),
        delta(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Par"}}]}),
            Value::Null,
        ),
        delta(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "is\"}"}}]}),
            Value::Null,
        ),
        delta(
            json!({"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"Oslo\"}"}}]}),
            Value::Null,
        ),
        delta(json!({}), json!("tool_calls")),
        Piece::Raw("data: [DONE]\n\n".into()),
    ];
    mock.always(Reply::Stream(pieces));
    let t = TestApp::spawn(&custom(&mock, "")).await;
    let resp = t.chat(json!({"model": "mock-model", "stream": true, "tools": tools(), "messages": [{"role": "user", "content": "go"}]})).await;
    assert_eq!(resp.status(), 200);
    let events = sse_data(resp).await;
    let mut calls: BTreeMap<u64, (String, String)> = BTreeMap::new();
    let mut finish = None;
    for e in events.iter().filter(|e| *e != "[DONE]") {
        let v: Value = serde_json::from_str(e).unwrap();
        for tc in v["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let entry = calls.entry(tc["index"].as_u64().unwrap()).or_default();
            if let Some(id) = tc["id"].as_str() {
                entry.0 = id.to_string();
            }
            entry
                .1
                .push_str(tc["function"]["arguments"].as_str().unwrap_or(""));
        }
        if let Some(f) = v["choices"][0]["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
    }
    assert_eq!(
        calls[&0],
        ("call_a".to_string(), "{\"q\":\"Paris\"}".to_string())
    );
    assert_eq!(
        calls[&1],
        ("call_b".to_string(), "{\"q\":\"Oslo\"}".to_string())
    );
    assert_eq!(finish.as_deref(), Some("tool_calls"));
}

#[tokio::test]
async fn an_independent_client_reads_gemini_translated_streams() {
    use async_openai::config::OpenAIConfig;
    use async_openai::types::{
        ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs,
    };
    let mock = Mock::start().await;
    mock.always(Reply::Stream(
        [
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Bonjour"}]}}]}),
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": " le monde"}]}, "finishReason": "STOP"}],
                   "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 3, "totalTokenCount": 5}}),
        ]
        .iter()
        .map(|e| Piece::Raw(format!("data: {e}\n\n")))
        .collect(),
    ));
    let toml = format!(
        "[providers.google]\nbase_url = \"{}\"\nkeys = [\"AIza-x\"]\n",
        mock.url("/v1beta")
    );
    let t = TestApp::spawn(&toml).await;
    let client = async_openai::Client::with_config(
        OpenAIConfig::new()
            .with_api_base(t.url("/v1"))
            .with_api_key(CLIENT_KEY),
    );
    let request = CreateChatCompletionRequestArgs::default()
        .model("gemini-2.5-flash")
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content("hi")
            .build()
            .unwrap()
            .into()])
        .build()
        .unwrap();
    let mut stream = client.chat().create_stream(request).await.unwrap();
    let mut text = String::new();
    let mut finished = false;
    while let Some(item) = stream.next().await {
        for c in item.unwrap().choices {
            text.push_str(c.delta.content.as_deref().unwrap_or(""));
            finished |= c.finish_reason.is_some();
        }
    }
    assert_eq!(text, "Bonjour le monde");
    assert!(finished);
}
