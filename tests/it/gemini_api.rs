//! Gemini's own API as a client surface (SPEC 2.6), end to end: `/v1beta/models/{m}:action`
//! through the real router to a mock OpenAI-dialect upstream; answers, both stream forms,
//! countTokens, the model list, `[gemini_api]`, Google's error shapes and the three ways a
//! key is sent. (`gemini.rs` tests the other direction: Google as an upstream.)

use crate::harness::*;
use serde_json::{Value, json};

/// An OpenAI-dialect upstream: a tool call when tools were offered, tool_choice allows one and
/// the last message is the user's; "It is <result>." after a tool message; else "Hello".
/// Streamed when asked ("cut" in the prompt: the stream breaks after its first text).
fn scripted(mock: &Mock) {
    mock.on(|r, _| {
        let messages = r.body["messages"].as_array().cloned().unwrap_or_default();
        let last = messages.last().cloned().unwrap_or(Value::Null);
        let said = match &last["content"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let wants_tool = last["role"] == "user"
            && r.body.get("tools").is_some()
            && r.body["tool_choice"] != "none";
        let model = r.model();
        if r.body["stream"] == true {
            if said.contains("cut") {
                return Reply::Stream(vec![Piece::Raw(chunk(&model, "Hel"))]);
            }
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
        if said.contains("rate limit me") {
            return Reply::status(429, "slow down").with_header("retry-after", "7");
        }
        if said.contains("fail me") {
            return Reply::status(500, "upstream broke");
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
        let text = if last["role"] == "tool" {
            format!("It is {said}.")
        } else if r.body.get("response_format").is_some() {
            "{\"n\":1}".to_string()
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
    scripted(&mock);
    let t = TestApp::spawn(&format!("{}{extra}", custom(&mock, ""))).await;
    (mock, t)
}

/// POST a Gemini action with the key as `x-goog-api-key` (as the SDKs and the CLI send it).
async fn post(t: &TestApp, path: &str, body: Value) -> reqwest::Response {
    t.client
        .post(t.url(path))
        .header("x-goog-api-key", CLIENT_KEY)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn user(text: &str) -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": text}]}]})
}

/// The error of a Google-shaped error body, checked for its code and status.
async fn google_error(resp: reqwest::Response, code: u16, status: &str) -> Value {
    assert_eq!(resp.status(), code);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["error"]["status"], status, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    body["error"].clone()
}

const WEATHER: &str = r#"{"functionDeclarations": [{"name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}}]}"#;

fn weather() -> Value {
    serde_json::from_str(WEATHER).unwrap()
}

#[tokio::test]
async fn generate_content_answers_text_with_system_instruction_usage_and_headers() {
    let (mock, t) = setup("").await;
    let mut body = user("hi");
    body["systemInstruction"] = json!({"parts": [{"text": "Be brief."}]});
    body["generationConfig"] = json!({"temperature": 0.3, "maxOutputTokens": 50, "topK": 3});
    body["safetySettings"] =
        json!([{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]);
    let resp = post(&t, "/v1beta/models/mock-model:generateContent", body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-routed-via"], "mock/mock-model");
    assert_eq!(resp.headers()["x-fallback-attempts"], "0");
    assert!(resp.headers().contains_key("x-request-id"));
    let v: Value = resp.json().await.unwrap();
    let c = &v["candidates"][0];
    assert_eq!(
        c["content"],
        json!({"role": "model", "parts": [{"text": "Hello"}]})
    );
    assert_eq!(c["finishReason"], "STOP");
    assert_eq!(c["index"], 0);
    assert_eq!(
        v["usageMetadata"],
        json!({"promptTokenCount": 5, "candidatesTokenCount": 7, "totalTokenCount": 12})
    );
    assert_eq!(v["modelVersion"], "mock-model");
    assert!(v["responseId"].as_str().is_some_and(|s| !s.is_empty()));
    let sent = &mock.chat_calls()[0].body;
    assert_eq!(
        sent["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])
    );
    assert_eq!(sent["temperature"], 0.3);
    assert_eq!(sent["max_tokens"], 50);
    assert_eq!(sent["top_k"], 3);
    // The request log names the surface.
    let rows = t.logged(1, 5).await;
    assert_eq!(rows[0].surface.as_deref(), Some("gemini"));
    assert_eq!(rows[0].status, 200);
}

#[tokio::test]
async fn an_image_reaches_the_upstream_as_a_data_url() {
    let mock = Mock::start().await;
    scripted(&mock);
    let t = TestApp::spawn(&custom(&mock, ", vision = true")).await;
    let body = json!({"contents": [{"role": "user", "parts": [
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/cat.jpg"}},
        {"text": "what is it"}]}]});
    let resp = post(&t, "/v1beta/models/mock-model:generateContent", body).await;
    assert_eq!(resp.status(), 200);
    let sent = &mock.chat_calls()[0].body;
    let parts = sent["messages"][0]["content"].as_array().unwrap();
    assert_eq!(
        parts[0]["image_url"]["url"],
        "data:image/png;base64,iVBORw0KGgo="
    );
    assert_eq!(parts[1]["image_url"]["url"], "https://example.com/cat.jpg");
    assert_eq!(parts[2], json!({"type": "text", "text": "what is it"}));
}

#[tokio::test]
async fn function_declarations_call_and_response_round_trip() {
    let (mock, t) = setup("").await;
    let mut body = user("weather in Oslo?");
    body["tools"] = json!([weather(), {"googleSearch": {}}]);
    let resp = post(
        &t,
        "/v1beta/models/mock-model:generateContent",
        body.clone(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let c = &v["candidates"][0];
    assert_eq!(c["finishReason"], "STOP");
    let call = &c["content"]["parts"][0]["functionCall"];
    assert_eq!(
        *call,
        json!({"name": "get_weather", "args": {"city": "Oslo"}, "id": "call_7"})
    );
    let sent = &mock.chat_calls()[0].body;
    assert_eq!(
        sent["tools"],
        json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
    );
    // The next turn: the model's content as it came, then the function's response.
    let mut contents = body["contents"].as_array().unwrap().clone();
    contents.push(c["content"].clone());
    contents.push(json!({"role": "user", "parts": [{"functionResponse":
        {"name": "get_weather", "id": "call_7", "response": {"output": "sunny"}}}]}));
    body["contents"] = Value::Array(contents);
    let resp = post(&t, "/v1beta/models/mock-model:generateContent", body).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["text"],
        "It is sunny."
    );
    let sent = &mock.chat_calls()[1].body;
    let m = sent["messages"].as_array().unwrap();
    assert_eq!(m[1]["tool_calls"][0]["id"], "call_7");
    assert_eq!(
        m[1]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Oslo\"}"
    );
    assert_eq!(
        m[2],
        json!({"role": "tool", "tool_call_id": "call_7", "content": "sunny"})
    );
    // The dropped Google tool is in the request log.
    let rows = t.logged(2, 5).await;
    assert!(
        rows.iter().any(|r| r
            .notes
            .as_deref()
            .is_some_and(|n| n.contains("googleSearch"))),
        "{:?}",
        rows.iter().map(|r| &r.notes).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn tool_config_any_and_none_become_tool_choice() {
    let (mock, t) = setup("").await;
    let mut body = user("weather?");
    body["tools"] = json!([weather()]);
    body["toolConfig"] =
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}});
    let resp = post(
        &t,
        "/v1beta/models/mock-model:generateContent",
        body.clone(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    body["toolConfig"] = json!({"functionCallingConfig": {"mode": "NONE"}});
    let resp = post(&t, "/v1beta/models/mock-model:generateContent", body).await;
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["candidates"][0]["content"]["parts"][0]["text"], "Hello");
    let calls = mock.chat_calls();
    assert_eq!(
        calls[0].body["tool_choice"],
        json!({"type": "function", "function": {"name": "get_weather"}})
    );
    assert_eq!(calls[1].body["tool_choice"], "none");
}

#[tokio::test]
async fn json_output_with_googles_schema_becomes_a_json_schema_response_format() {
    let (mock, t) = setup("").await;
    let mut body = user("a number");
    body["generationConfig"] = json!({"responseMimeType": "application/json",
        "responseSchema": {"type": "OBJECT", "properties": {"n": {"type": "INTEGER", "nullable": true}}, "required": ["n"]}});
    let resp = post(&t, "/v1beta/models/mock-model:generateContent", body).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["text"],
        "{\"n\":1}"
    );
    let rf = &mock.chat_calls()[0].body["response_format"];
    assert_eq!(rf["type"], "json_schema");
    assert_eq!(
        rf["json_schema"]["schema"],
        json!({"type": "object", "properties": {"n": {"type": ["integer", "null"]}}, "required": ["n"]})
    );
}

#[tokio::test]
async fn streams_as_sse_with_alt_sse() {
    let (_mock, t) = setup("").await;
    let resp = post(
        &t,
        "/v1beta/models/mock-model:streamGenerateContent?alt=sse",
        user("hi"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["x-routed-via"], "mock/mock-model");
    let text = resp.text().await.unwrap();
    let chunks: Vec<Value> = text
        .split("\r\n\r\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").expect("data: line")).unwrap())
        .collect();
    let said: String = chunks
        .iter()
        .filter_map(|c| c["candidates"][0]["content"]["parts"][0]["text"].as_str())
        .collect();
    assert_eq!(said, "Hello");
    let last = chunks.last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(
        last["usageMetadata"],
        json!({"promptTokenCount": 3, "candidatesTokenCount": 4, "totalTokenCount": 7})
    );
    assert!(
        chunks[..chunks.len() - 1]
            .iter()
            .all(|c| c["candidates"][0].get("finishReason").is_none())
    );
    assert!(chunks.iter().all(|c| c["modelVersion"] == "mock-model"));
}

#[tokio::test]
async fn streams_as_a_growing_json_array_without_alt_sse() {
    let (_mock, t) = setup("").await;
    let mut body = user("weather?");
    body["tools"] = json!([weather()]);
    let resp = post(&t, "/v1beta/models/mock-model:streamGenerateContent", body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let text = resp.text().await.unwrap();
    assert!(text.starts_with('[') && text.ends_with(']'), "{text}");
    // The whole body is one JSON array of GenerateContentResponses.
    let chunks: Vec<Value> = serde_json::from_str(&text).unwrap();
    let last = chunks.last().unwrap();
    assert_eq!(
        last["candidates"][0]["content"]["parts"],
        json!([{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}, "id": "call_7"}}])
    );
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert!(last["usageMetadata"]["totalTokenCount"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn a_failure_mid_stream_ends_with_an_error_object_in_both_forms() {
    let (_mock, t) = setup("").await;
    for path in [
        "/v1beta/models/mock-model:streamGenerateContent?alt=sse",
        "/v1beta/models/mock-model:streamGenerateContent",
    ] {
        let resp = post(&t, path, user("cut it")).await;
        assert_eq!(resp.status(), 200, "{path}");
        let text = resp.text().await.unwrap();
        let chunks: Vec<Value> = if path.ends_with("sse") {
            text.split("\r\n\r\n")
                .filter(|e| !e.trim().is_empty())
                .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
                .collect()
        } else {
            serde_json::from_str(&text).unwrap()
        };
        assert_eq!(chunks.len(), 2, "{path}: {text}");
        assert_eq!(
            chunks[0]["candidates"][0]["content"]["parts"][0]["text"],
            "Hel"
        );
        assert_eq!(chunks[1]["error"]["status"], "INTERNAL", "{text}");
        assert!(!text.contains("finishReason"), "{text}");
    }
}

#[tokio::test]
async fn count_tokens_answers_the_prompt_estimate() {
    let (mock, t) = setup("").await;
    let long = "word ".repeat(400);
    let resp = post(&t, "/v1beta/models/mock-model:countTokens", user(&long)).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let n = v["totalTokens"].as_u64().unwrap();
    assert!((300..=800).contains(&n), "{v}");
    // The generateContentRequest form counts the same.
    let wrapped = json!({"generateContentRequest": {"model": "models/mock-model", "contents": user(&long)["contents"]}});
    let v: Value = post(&t, "/v1beta/models/mock-model:countTokens", wrapped)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["totalTokens"], n);
    assert_eq!(mock.count(), 0, "counting calls no upstream");
    let resp = post(&t, "/v1beta/models/no-such-model:countTokens", user("x")).await;
    google_error(resp, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn models_are_listed_and_got_in_googles_shape() {
    let (_mock, t) = setup("[gemini_api]\npro = \"mock-model\"\n").await;
    for path in ["/v1beta/models", "/v1/models"] {
        let v: Value = t
            .client
            .get(t.url(path))
            .header("x-goog-api-key", CLIENT_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let models = v["models"]
            .as_array()
            .unwrap_or_else(|| panic!("{path}: {v}"));
        assert_eq!(models[0]["name"], "models/auto");
        let m = models
            .iter()
            .find(|m| m["name"] == "models/mock-model")
            .unwrap();
        assert_eq!(m["baseModelId"], "mock-model");
        assert!(m["inputTokenLimit"].as_u64().unwrap() > 0);
        assert!(m["outputTokenLimit"].as_u64().unwrap() > 0);
        assert!(m["displayName"].is_string() && m["version"].is_string());
        assert_eq!(
            m["supportedGenerationMethods"],
            json!(["generateContent", "streamGenerateContent", "countTokens"])
        );
    }
    // OpenAI's shape still, for a client that authenticates the OpenAI way.
    let v = t.get_json("/v1/models").await;
    assert_eq!(v["object"], "list");
    let v: Value = t
        .client
        .get(t.url(&format!("/v1beta/models/mock-model?key={CLIENT_KEY}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["name"], "models/mock-model");
    // A gemini-* id Freeway does not know is one [gemini_api] maps.
    let v: Value = t
        .client
        .get(t.url("/v1beta/models/gemini-9-pro"))
        .header("x-goog-api-key", CLIENT_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["name"], "models/gemini-9-pro");
    assert!(
        v["displayName"].as_str().unwrap().contains("mock-model"),
        "{v}"
    );
    let resp = t
        .client
        .get(t.url("/v1beta/models/no-such-model"))
        .header("x-goog-api-key", CLIENT_KEY)
        .send()
        .await
        .unwrap();
    google_error(resp, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn unknown_gemini_ids_map_through_the_gemini_api_table() {
    let mock = Mock::start().await;
    scripted(&mock);
    let other = Mock::start().await;
    scripted(&other);
    let toml = format!(
        "{}[custom.other]\nbase_url = \"{}\"\nkeys = [\"sk-other\"]\nmodels = [{{ id = \"other-model\" }}]\n\
         [gemini_api]\nflash = \"other-model\"\nflash_lite = \"mock-model\"\n",
        custom(&mock, ""),
        other.url("/v1")
    );
    let t = TestApp::spawn(&toml).await;
    for (asked, served) in [
        ("gemini-9-flash", "other/other-model"),
        ("gemini-9-flash-lite-preview", "mock/mock-model"),
        ("other-model", "other/other-model"),
    ] {
        let resp = post(
            &t,
            &format!("/v1beta/models/{asked}:generateContent"),
            user("hi"),
        )
        .await;
        assert_eq!(resp.status(), 200, "{asked}");
        assert_eq!(resp.headers()["x-routed-via"], served, "{asked}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["modelVersion"], served.split('/').nth(1).unwrap());
    }
    // pro is `auto` by default: any model.
    let resp = post(
        &t,
        "/v1beta/models/gemini-9-pro:generateContent",
        user("hi"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    // A non-gemini id Freeway does not know is not mapped.
    let resp = post(&t, "/v1beta/models/gpt-9:generateContent", user("hi")).await;
    google_error(resp, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn the_key_is_taken_three_ways_and_a_wrong_one_is_googles_401() {
    let (_mock, t) = setup("").await;
    let url = t.url("/v1beta/models/mock-model:generateContent");
    let ok = [
        t.client.post(&url).header("x-goog-api-key", CLIENT_KEY),
        t.client.post(format!("{url}?key={CLIENT_KEY}")),
        t.client.post(&url).bearer_auth(CLIENT_KEY),
        // The same under /v1.
        t.client
            .post(t.url("/v1/models/mock-model:generateContent"))
            .header("x-goog-api-key", CLIENT_KEY),
    ];
    for req in ok {
        let resp = req.json(&user("hi")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    for req in [
        t.client.post(&url).header("x-goog-api-key", "fw-wrong"),
        t.client.post(format!("{url}?key=fw-wrong")),
        t.client.post(&url),
    ] {
        let resp = req.json(&user("hi")).send().await.unwrap();
        assert_eq!(resp.headers()["x-should-retry"], "false");
        let e = google_error(resp, 401, "UNAUTHENTICATED").await;
        assert!(!e["message"].as_str().unwrap().contains("fw-wrong"));
    }
}

#[tokio::test]
async fn errors_have_googles_shape_and_status() {
    let (_mock, t) = setup("").await;
    let path = "/v1beta/models/mock-model:generateContent";
    // 400: the field is named.
    let resp = post(&t, path, json!({"contents": [{"parts": [{"text": 5}]}]})).await;
    let e = google_error(resp, 400, "INVALID_ARGUMENT").await;
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("contents[0].parts[0].text"),
        "{e}"
    );
    let mut body = user("hi");
    body["generationConfig"] = json!({"candidateCount": 2});
    google_error(post(&t, path, body).await, 400, "INVALID_ARGUMENT").await;
    // 404: an unknown model, an unknown action.
    google_error(
        post(&t, "/v1beta/models/no-such:generateContent", user("hi")).await,
        404,
        "NOT_FOUND",
    )
    .await;
    google_error(
        post(&t, "/v1beta/models/mock-model:fly", user("hi")).await,
        404,
        "NOT_FOUND",
    )
    .await;
    // A chat model is no embedding model: Google's 404.
    for action in ["embedContent", "batchEmbedContents"] {
        let e = google_error(
            post(
                &t,
                &format!("/v1beta/models/mock-model:{action}"),
                json!({"content": {"parts": [{"text": "hi"}]}, "requests": [{"content": {"parts": [{"text": "hi"}]}}]}),
            )
            .await,
            404,
            "NOT_FOUND",
        )
        .await;
        assert!(e["message"].as_str().unwrap().contains("chat model"), "{e}");
    }
    // 429 with Retry-After (and Google's RetryInfo), then 502 for an upstream failure.
    let resp = post(&t, path, user("rate limit me")).await;
    let retry = resp.headers()["retry-after"].to_str().unwrap().to_string();
    assert!(retry.parse::<u64>().is_ok_and(|n| n >= 1), "{retry}");
    let e = google_error(resp, 429, "RESOURCE_EXHAUSTED").await;
    assert_eq!(e["details"][0]["retryDelay"], format!("{retry}s"));
    let (_mock, t) = setup("").await;
    let resp = post(&t, path, user("fail me")).await;
    assert!(resp.headers().contains_key("x-fallback-attempts"));
    google_error(resp, 502, "INTERNAL").await;
}

#[tokio::test]
async fn permission_and_unavailable_errors_have_googles_shape() {
    let mock = Mock::start().await;
    scripted(&mock);
    // A key limited to one model asking for another: 403; a model no key can serve: 503.
    let toml = format!(
        "{}[auth]\napi_keys = [{{ name = \"narrow\", key = \"fw-narrow-key\" }}]\n\
         [auth.limits.narrow]\nmodels = [\"groq/*\"]\n",
        custom(&mock, "")
    );
    let t = TestApp::spawn(&toml).await;
    let resp = t
        .client
        .post(t.url("/v1beta/models/mock-model:generateContent"))
        .header("x-goog-api-key", "fw-narrow-key")
        .json(&user("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-should-retry"], "false");
    google_error(resp, 403, "PERMISSION_DENIED").await;
    let resp = post(
        &t,
        "/v1beta/models/llama-3.3-70b:generateContent",
        user("hi"),
    )
    .await;
    google_error(resp, 503, "UNAVAILABLE").await;
}

#[tokio::test]
async fn through_a_google_upstream_a_thought_signature_survives_the_round_trip() {
    // Google behind Freeway (what the Gemini CLI sees with a Google key): Gemini 3 refuses a
    // replayed function call without its thought signature.
    let mock = Mock::start().await;
    mock.on(|r, _| {
        let replayed = r.body["contents"].as_array().is_some_and(|c| c.len() > 1);
        let parts = if replayed {
            json!([{"text": "Sunny."}])
        } else {
            json!([{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}, "thoughtSignature": "U0lHLTE="}])
        };
        Reply::Json {
            status: 200,
            body: json!({"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 3, "totalTokenCount": 7}}),
            headers: vec![],
        }
    });
    let toml = format!(
        "[providers.google]\nbase_url = \"{}\"\nkeys = [\"AIzaTestKey000222\"]\n",
        mock.url("/v1beta")
    );
    let t = TestApp::spawn(&toml).await;
    let mut body = user("weather?");
    body["tools"] = json!([weather()]);
    let resp = post(
        &t,
        "/v1beta/models/gemini-2.5-flash:generateContent",
        body.clone(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-routed-via"], "google/gemini-2.5-flash");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["modelVersion"], "gemini-2.5-flash");
    let part = v["candidates"][0]["content"]["parts"][0].clone();
    assert_eq!(part["thoughtSignature"], "U0lHLTE=", "{v}");
    let id = part["functionCall"]["id"].as_str().unwrap().to_string();
    // The client sends the call back with its id but, as some clients do, without the
    // signature: Freeway remembers it by the id.
    let mut contents = body["contents"].as_array().unwrap().clone();
    contents
        .push(json!({"role": "model", "parts": [{"functionCall": part["functionCall"].clone()}]}));
    contents.push(json!({"role": "user", "parts": [{"functionResponse":
        {"name": "get_weather", "id": id, "response": {"output": "sunny"}}}]}));
    body["contents"] = Value::Array(contents);
    let resp = post(&t, "/v1beta/models/gemini-2.5-flash:generateContent", body).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["candidates"][0]["content"]["parts"][0]["text"], "Sunny.");
    let sent = &mock.chat_calls()[1].body;
    assert_eq!(
        sent["contents"][1]["parts"][0]["thoughtSignature"], "U0lHLTE=",
        "{sent}"
    );
    assert_eq!(
        sent["contents"][2]["parts"][0]["functionResponse"]["name"],
        "get_weather"
    );
}

#[tokio::test]
async fn embed_content_and_batches_answer_in_googles_shape() {
    let (mock, t) = embedder(0.25, 2).await;
    let resp = post(
        &t,
        "/v1beta/models/mock-embed:embedContent",
        json!({"content": {"parts": [{"text": "hello"}]}, "taskType": "RETRIEVAL_QUERY"}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-routed-via"], "mock/mock-embed");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["embedding"]["values"], json!([0.0, 0.25]));
    let resp = post(
        &t,
        "/v1beta/models/mock-embed:batchEmbedContents",
        json!({"requests": [
            {"model": "models/mock-embed", "content": {"parts": [{"text": "a"}]}},
            {"model": "models/mock-embed", "content": {"parts": [{"text": "b"}]}}
        ]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["embeddings"][1]["values"], json!([1.0, 0.25]));
    let calls = mock.calls();
    assert_eq!(calls.last().unwrap().body["input"], json!(["a", "b"]));
    // A bad body: Google's 400 naming the field.
    let e = google_error(
        post(
            &t,
            "/v1beta/models/mock-embed:embedContent",
            json!({"content": 1}),
        )
        .await,
        400,
        "INVALID_ARGUMENT",
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains("content"), "{e}");
}

#[tokio::test]
async fn an_idempotent_retry_is_replayed_on_the_gemini_surface() {
    let (mock, t) = setup("").await;
    let path = "/v1beta/models/mock-model:generateContent";
    let send = |model_path: &'static str| {
        t.client
            .post(t.url(model_path))
            .header("x-goog-api-key", CLIENT_KEY)
            .header("idempotency-key", "g-1")
            .json(&user("hi"))
            .send()
    };
    let first: Value = send(path).await.unwrap().json().await.unwrap();
    let again = send(path).await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    assert_eq!(mock.chat_calls().len(), 1);
    // The same body on another action of the URL is another request: the key is reused.
    let other = send("/v1beta/models/mock-model:streamGenerateContent")
        .await
        .unwrap();
    assert_eq!(other.status(), 422);
}
