//! The OpenAI dialect end to end: passthrough, streaming, pooling, and an independent client.

use crate::harness::*;
use futures_util::StreamExt;
use serde_json::{Value, json};

#[tokio::test]
async fn non_streaming_passes_through_with_unknown_fields() {
    let mock = Mock::start().await;
    let t = TestApp::spawn(&custom(&mock, "")).await;
    let resp = t
        .chat(json!({
            "model": "mock/mock-model",
            "messages": [{"role": "user", "content": "hi", "name": "ann"}],
            "temperature": 0.3,
            "my_vendor_field": {"nested": [1, 2, 3]},
            "seed": 9
        }))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "hello from mock");
    assert_eq!(body["model"], "mock-model", "the model that served it");
    let calls = mock.chat_calls();
    assert_eq!(calls.len(), 1);
    let sent = &calls[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.body["model"], "mock-model", "upstream id substituted");
    assert_eq!(sent.body["my_vendor_field"], json!({"nested": [1, 2, 3]}));
    assert_eq!(sent.body["messages"][0]["name"], "ann");
    assert_eq!(sent.body["seed"], 9);
    assert_eq!(sent.bearer().as_deref(), Some("sk-mock-upstream-key"));
}

#[tokio::test]
async fn streamed_chunks_are_forwarded_as_they_arrive() {
    let mock = Mock::start().await;
    // The rest waits until the test has seen "first" through Freeway: if Freeway buffered,
    // the test would hang here instead of passing.
    let go = gated_stream(&mock, "first", " second");
    let t = TestApp::spawn(&custom(&mock, "")).await;
    let resp = t.chat(stream_ask()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["x-routed-via"], "mock/mock-model");
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("first") {
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), body.next())
            .await
            .expect("the first chunk must arrive before the upstream finishes")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&next));
    }
    assert!(!seen.contains("second"));
    go.notify_one();
    while let Some(next) = body.next().await {
        seen.push_str(&String::from_utf8_lossy(&next.unwrap()));
    }
    let events: Vec<String> = seen
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_string)
        .collect();
    assert_eq!(sse_text(&events), "first second");
    assert_eq!(events.last().unwrap(), "[DONE]");
    let sent = &mock.chat_calls()[0];
    assert_eq!(sent.body["stream"], true);
}

#[tokio::test]
async fn usage_chunks_appear_only_when_asked_for() {
    let mock = Mock::start().await;
    let t = TestApp::spawn(&custom(&mock, "")).await;
    let plain = sse_data(
        t.chat(json!({"model": "mock-model", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
            .await,
    )
    .await;
    assert!(
        !plain.iter().any(|e| e.contains("\"usage\"")),
        "Freeway asked for usage, the client did not"
    );
    assert_eq!(
        mock.chat_calls()[0].body["stream_options"]["include_usage"],
        true
    );
    let asked = sse_data(
        t.chat(json!({"model": "mock-model", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]}))
            .await,
    )
    .await;
    assert!(asked.iter().any(|e| e.contains("\"usage\"")));
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    let mock = Mock::start().await;
    let t = TestApp::spawn(&custom(&mock, "")).await;
    for _ in 0..10 {
        let resp = t.chat(ask("mock-model")).await;
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    assert_eq!(mock.chat_calls().len(), 10);
    assert_eq!(
        mock.connections(),
        1,
        "one pooled connection for sequential requests"
    );
}

#[tokio::test]
async fn an_independent_openai_client_works_streaming_and_not() {
    use async_openai::config::OpenAIConfig;
    use async_openai::types::{
        ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs,
    };
    let mock = Mock::start().await;
    let t = TestApp::spawn(&custom(&mock, "")).await;
    let client = async_openai::Client::with_config(
        OpenAIConfig::new()
            .with_api_base(t.url("/v1"))
            .with_api_key(CLIENT_KEY),
    );
    let request = CreateChatCompletionRequestArgs::default()
        .model("mock-model")
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content("hello")
            .build()
            .unwrap()
            .into()])
        .build()
        .unwrap();
    let answer = client.chat().create(request.clone()).await.unwrap();
    assert_eq!(
        answer.choices[0].message.content.as_deref(),
        Some("hello from mock")
    );
    assert_eq!(answer.model, "mock-model");

    let mut stream = client.chat().create_stream(request).await.unwrap();
    let mut text = String::new();
    let mut finish = None;
    while let Some(item) = stream.next().await {
        let chunk = item.unwrap();
        for c in chunk.choices {
            if let Some(s) = c.delta.content {
                text.push_str(&s);
            }
            if c.finish_reason.is_some() {
                finish = c.finish_reason;
            }
        }
    }
    assert_eq!(text, "hello from mock");
    assert!(finish.is_some());

    let models = client.models().list().await.unwrap();
    assert_eq!(models.data[0].id, "auto");
}

#[tokio::test]
async fn streamed_answers_leave_their_upstream_connection_reusable() {
    let mock = Mock::start().await;
    let t = TestApp::spawn(&custom(&mock, "")).await;
    for _ in 0..5 {
        let resp = t
            .chat(json!({"model": "mock-model", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
            .await;
        assert_eq!(sse_text(&sse_data(resp).await), "hello from mock");
    }
    assert_eq!(mock.chat_calls().len(), 5);
    assert_eq!(
        mock.connections(),
        1,
        "one pooled connection for sequential streams"
    );
}
