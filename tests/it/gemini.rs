//! The Gemini dialect end to end through a mock `generateContent` upstream.

use crate::harness::*;
use futures_util::StreamExt;
use serde_json::{Value, json};

const KEY: &str = "AIzaTestKey000111";

async fn setup() -> (Mock, TestApp) {
    let mock = Mock::start().await;
    let toml = format!(
        "[providers.google]\nbase_url = \"{}\"\nkeys = [\"{KEY}\"]\n",
        mock.url("/v1beta")
    );
    let t = TestApp::spawn(&toml).await;
    (mock, t)
}

fn gemini_json(v: Value) -> Reply {
    Reply::Json {
        status: 200,
        body: v,
        headers: vec![],
    }
}

fn sse(events: &[Value]) -> Reply {
    Reply::Stream(
        events
            .iter()
            .map(|e| Piece::Raw(format!("data: {e}\r\n\r\n")))
            .collect(),
    )
}

#[tokio::test]
async fn a_plain_answer_comes_back_in_openai_shape() {
    let (mock, t) = setup().await;
    mock.always(gemini_json(json!({
        "candidates": [{"content": {"role": "model", "parts": [{"text": "Hi there"}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5}
    })));
    let resp = t
        .chat(json!({"model": "gemini-2.5-flash", "max_tokens": 100, "temperature": 0.2, "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}
        ]}))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-routed-via"], "google/gemini-2.5-flash");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gemini-2.5-flash");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], "Hi there");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 3);
    assert_eq!(body["usage"]["completion_tokens"], 2);

    let sent = &mock.chat_calls()[0];
    assert_eq!(sent.path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(
        sent.header("x-goog-api-key").as_deref(),
        Some(KEY),
        "the key travels in the header"
    );
    assert!(!sent.path.contains(KEY) && sent.header("authorization").is_none());
    assert_eq!(
        sent.body["systemInstruction"]["parts"][0]["text"],
        "Be brief."
    );
    assert_eq!(sent.body["contents"][0]["role"], "user");
    assert_eq!(
        sent.body["contents"][0]["parts"][1]["inlineData"]["mimeType"],
        "image/png"
    );
    assert_eq!(sent.body["generationConfig"]["maxOutputTokens"], 100);
}

#[tokio::test]
async fn a_streamed_answer_arrives_as_openai_chunks() {
    let (mock, t) = setup().await;
    mock.always(sse(&[
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}]}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}}]}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "!"}]}, "finishReason": "STOP"}],
               "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 3, "totalTokenCount": 7}}),
    ]));
    let resp = t
        .chat(json!({"model": "google/gemini-2.5-flash", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = sse_data(resp).await;
    assert_eq!(sse_text(&events), "Hello!");
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let finish = chunks
        .iter()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str())
        .unwrap();
    assert_eq!(finish, "stop");
    let sent = &mock.chat_calls()[0];
    assert_eq!(
        sent.path,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
}

/// A short answer often arrives as one upstream event: content and the finish reason
/// together. The stream must still end like every other one.
#[tokio::test]
async fn a_one_event_answer_still_ends_with_done() {
    let (mock, t) = setup().await;
    for (event, text, finish) in [
        (
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Yes."}]}, "finishReason": "STOP"}],
                   "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 1, "totalTokenCount": 5}}),
            "Yes.",
            "stop",
        ),
        (
            json!({"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}]}, "finishReason": "STOP"}]}),
            "",
            "tool_calls",
        ),
    ] {
        mock.always(sse(&[event]));
        let resp = t
            .chat(
                json!({"model": "gemini-2.5-flash", "stream": true, "tools": weather_tools(),
                "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
        assert_eq!(resp.status(), 200);
        let events = sse_data(resp).await;
        assert_eq!(
            events.last().map(String::as_str),
            Some("[DONE]"),
            "{events:?}"
        );
        assert_eq!(sse_text(&events), text);
        let finishes: Vec<String> = events[..events.len() - 1]
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(e).ok())
            .filter_map(|c| {
                c["choices"][0]["finish_reason"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        assert_eq!(finishes, [finish], "{events:?}");
    }
}

fn weather_tools() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "additionalProperties": false, "$defs": {"unit": {"type": "string", "enum": ["c", "f"]}},
            "properties": {"city": {"type": "string"}, "unit": {"$ref": "#/$defs/unit"}, "note": {"type": ["string", "null"]}},
            "required": ["city"]}}}])
}

#[tokio::test]
async fn tool_calls_round_trip_with_thought_signatures() {
    let (mock, t) = setup().await;
    mock.on(|r, i| {
        if i == 0 {
            gemini_json(json!({"candidates": [{"content": {"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2lnLW9uZQ=="},
                {"functionCall": {"name": "get_weather", "args": {"city": "Oslo", "unit": "c"}}}
            ]}, "finishReason": "STOP"}]}))
        } else {
            let _ = r;
            gemini_json(json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Paris 21C, Oslo 3C"}]}, "finishReason": "STOP"}]}))
        }
    });
    let first = json!({"model": "gemini-2.5-flash", "tools": weather_tools(), "tool_choice": "required",
        "messages": [{"role": "user", "content": "Weather in Paris and Oslo?"}]});
    let resp = t.chat(first).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let msg = &body["choices"][0]["message"];
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    let calls = msg["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    assert_ne!(calls[0]["id"], calls[1]["id"]);

    let sent = &mock.chat_calls()[0];
    let decl = &sent.body["tools"][0]["functionDeclarations"][0];
    assert_eq!(decl["name"], "get_weather");
    let params = &decl["parameters"];
    assert!(
        params.get("additionalProperties").is_none() && params.get("$defs").is_none(),
        "{params}"
    );
    assert_eq!(
        params["properties"]["unit"]["enum"],
        json!(["c", "f"]),
        "$ref inlined"
    );
    assert_eq!(
        params["properties"]["note"]["nullable"], true,
        "nullable union collapsed"
    );
    assert_eq!(
        sent.body["toolConfig"]["functionCallingConfig"]["mode"],
        "ANY"
    );

    // The client replays the calls without Google's extra field (as many SDKs do): Freeway
    // remembers the signature by tool-call id and sends it back.
    let replayed: Vec<Value> = calls
        .iter()
        .map(|c| json!({"id": c["id"], "type": "function", "function": c["function"]}))
        .collect();
    let second = json!({"model": "gemini-2.5-flash", "tools": weather_tools(), "messages": [
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {"role": "assistant", "content": null, "tool_calls": replayed},
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "{\"temp\": 21}"},
        {"role": "tool", "tool_call_id": calls[1]["id"], "content": "3C"}
    ]});
    let resp = t.chat(second).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Paris 21C, Oslo 3C"
    );
    let sent = &mock.chat_calls()[1];
    let contents = sent.body["contents"].as_array().unwrap();
    assert_eq!(contents[1]["role"], "model");
    assert_eq!(
        contents[1]["parts"][0]["functionCall"]["name"],
        "get_weather"
    );
    assert_eq!(contents[1]["parts"][0]["thoughtSignature"], "c2lnLW9uZQ==");
    assert_eq!(contents[2]["role"], "user");
    assert_eq!(
        contents[2]["parts"][0]["functionResponse"]["name"],
        "get_weather"
    );
    assert_eq!(
        contents[2]["parts"][0]["functionResponse"]["response"],
        json!({"temp": 21})
    );
    assert_eq!(
        contents[2]["parts"][1]["functionResponse"]["response"],
        json!({"content": "3C"})
    );
}

#[tokio::test]
async fn streamed_function_calls_become_tool_call_deltas() {
    let (mock, t) = setup().await;
    mock.always(sse(&[
        json!({"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"}]}}]}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}]}, "finishReason": "STOP"}]}),
    ]));
    let resp = t
        .chat(json!({"model": "gemini-2.5-flash", "stream": true, "tools": weather_tools(), "messages": [{"role": "user", "content": "w?"}]}))
        .await;
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    while let Some(b) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&b.unwrap()));
    }
    let chunks: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert_eq!(deltas.len(), 2);
    assert_eq!(deltas[0]["index"], 0);
    assert_eq!(deltas[1]["index"], 1);
    assert!(deltas[0]["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(deltas[1]["function"]["arguments"], "{\"city\":\"Oslo\"}");
    let finish = chunks
        .iter()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str())
        .unwrap();
    assert_eq!(finish, "tool_calls");
    assert!(text.trim_end().ends_with("data: [DONE]"));
}

#[tokio::test]
async fn geminis_ways_of_saying_no_feed_the_failover_rules() {
    let mock = Mock::start().await;
    mock.on(|r, _| match r.header("x-goog-api-key").as_deref() {
        Some("AIza-bad") => Reply::Json {
            status: 400,
            body: json!({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT",
                "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}}),
            headers: vec![],
        },
        Some("AIza-busy") => Reply::Json {
            status: 429,
            body: json!({"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED",
                "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}]}}),
            headers: vec![],
        },
        Some("AIza-region") => Reply::status(403, "User location is not supported for the API use."),
        _ => gemini_json(json!({"candidates": [{"content": {"parts": [{"text": "ok"}]}, "finishReason": "STOP"}]})),
    });
    let toml = format!(
        "[providers.google]\nbase_url = \"{}\"\nkeys = [\"AIza-bad\", \"AIza-busy\", \"AIza-region\", \"AIza-good\"]\n",
        mock.url("/v1beta")
    );
    let t = TestApp::spawn(&toml).await;
    let resp = t.chat(ask("gemini-2.5-flash")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-fallback-attempts"], "3");
    let id = |secret: &str| {
        t.app
            .live
            .keys
            .all("google")
            .into_iter()
            .find(|k| k.secret.expose() == secret)
            .unwrap()
            .id
            .clone()
    };
    assert_eq!(
        t.app.live.keys.status(&id("AIza-bad")),
        freeway::keys::Status::Invalid
    );
    let busy = t
        .app
        .ledger
        .cooldown(&freeway::ledger::Scope::model(
            "google",
            "gemini-2.5-flash",
            &id("AIza-busy"),
        ))
        .unwrap();
    let left = busy.until_ms - t.app.ledger.now_ms();
    assert!((15_000..=17_000).contains(&left), "{left}");
    let region = t
        .app
        .ledger
        .cooldown(&freeway::ledger::Scope::model(
            "google",
            "gemini-2.5-flash",
            &id("AIza-region"),
        ))
        .unwrap();
    assert!(
        region.until_ms - t.app.ledger.now_ms() > 86_000_000,
        "a day off"
    );
}

#[tokio::test]
async fn requests_gemini_cannot_express_are_400s() {
    let (mock, t) = setup().await;
    let resp = t
        .chat(json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "nope", "content": "1"}]}))
        .await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains("nope"),
        "{body}"
    );
    assert_eq!(mock.chat_calls().len(), 0);
}
