//! Ollama's API end to end (SPEC 2.7): `/api/chat` and `/api/generate` through the real router
//! to a mock OpenAI-dialect upstream, whole and as newline-delimited JSON; the model list,
//! show, ps, version; what Freeway refuses; the client key on the main port and the key-less
//! second listener.

use crate::harness::*;
use serde_json::{Value, json};

/// An upstream like a model with tools: a tool call when the last message is the user's and
/// tools were offered, "It is <result>." after a tool result, else "Hello" (with reasoning),
/// streamed when asked.
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
            body: json!({"id": "c", "object": "chat.completion", "created": 1, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "reasoning_content": "thinking hard"},
                    "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}),
            headers: vec![],
        }
    });
}

async fn setup(extra: &str) -> (Mock, TestApp) {
    let mock = Mock::start().await;
    toolish(&mock);
    let t = TestApp::spawn(&format!(
        "{}{extra}",
        custom(&mock, ", vision = true, context = 32768")
    ))
    .await;
    (mock, t)
}

/// POST `path` on the main port with the client key.
async fn post(t: &TestApp, path: &str, body: Value) -> reqwest::Response {
    t.client
        .post(t.url(path))
        .bearer_auth(CLIENT_KEY)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// A whole JSON answer: (status, body).
async fn whole(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// Every line of an NDJSON body, parsed (each must be one JSON object).
async fn ndjson(resp: reqwest::Response) -> Vec<Value> {
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let text = resp.text().await.unwrap();
    assert!(text.ends_with('\n'), "{text}");
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .inspect(|v| assert!(v.is_object(), "{v}"))
        .collect()
}

fn ask_chat(extra: Value) -> Value {
    let mut b = json!({"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

#[tokio::test]
async fn chat_answers_whole_and_streams_ndjson_by_default() {
    let (mock, t) = setup("").await;
    let resp = post(&t, "/api/chat", ask_chat(json!({"stream": false}))).await;
    assert_eq!(resp.headers()["x-routed-via"], "mock/mock-model");
    assert_eq!(resp.headers()["x-fallback-attempts"], "0");
    let (status, v) = whole(resp).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], "mock-model");
    assert_eq!(
        v["message"],
        json!({"role": "assistant", "content": "Hello"}),
        "no thinking unless asked"
    );
    assert_eq!(v["done"], true);
    assert_eq!(v["done_reason"], "stop");
    assert_eq!(v["prompt_eval_count"], 5);
    assert_eq!(v["eval_count"], 7);
    for k in [
        "created_at",
        "total_duration",
        "load_duration",
        "prompt_eval_duration",
        "eval_duration",
    ] {
        assert!(v.get(k).is_some(), "{k} in {v}");
    }
    assert_ne!(mock.chat_calls()[0].body["stream"], true);

    // No `stream` field: Ollama streams.
    let resp = post(&t, "/api/chat", ask_chat(json!({}))).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-routed-via"], "mock/mock-model");
    let lines = ndjson(resp).await;
    assert_eq!(mock.chat_calls()[1].body["stream"], true);
    let (last, pieces) = lines.split_last().unwrap();
    let text: String = pieces
        .iter()
        .map(|l| {
            assert_eq!(l["done"], false);
            assert_eq!(l["message"]["role"], "assistant");
            l["message"]["content"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(text, "Hello");
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "stop");
    assert_eq!(last["prompt_eval_count"], 3);
    assert_eq!(last["eval_count"], 4);
    assert!(last["total_duration"].as_u64().is_some());

    // `:latest` and the Ollama spelling find the same model; the request log names the surface.
    let resp = post(&t, "/api/chat", json!({"model": "mock-model:latest", "stream": false, "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(resp.status(), 200);
    let rows = t.logged(3, 10).await;
    assert!(
        rows.iter()
            .all(|r| r.surface.as_deref() == Some("ollama-chat")),
        "{rows:?}"
    );
    assert!(rows.iter().all(|r| r.client == "config #1"));
}

#[tokio::test]
async fn unknown_models_are_404_saying_what_to_use() {
    let (mock, t) = setup("").await;
    for path in ["/api/chat", "/api/generate"] {
        let body = json!({"model": "llama3.2", "prompt": "hi", "messages": [{"role": "user", "content": "hi"}]});
        let (status, v) = whole(post(&t, path, body).await).await;
        assert_eq!(status, 404, "{v}");
        let msg = v["error"].as_str().unwrap();
        assert!(
            msg.contains("\"llama3.2\" not found") && msg.contains("/api/tags"),
            "{msg}"
        );
    }
    // The load call checks the model too.
    let (status, _) = whole(post(&t, "/api/generate", json!({"model": "llama3.2"})).await).await;
    assert_eq!(status, 404);
    assert_eq!(mock.chat_calls().len(), 0);
}

#[tokio::test]
async fn tools_round_trip_with_object_arguments() {
    let (mock, t) = setup("").await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let first = json!({"model": "mock-model", "stream": false, "tools": tools,
        "messages": [{"role": "user", "content": "weather in Oslo?"}]});
    let (status, v) = whole(post(&t, "/api/chat", first.clone()).await).await;
    assert_eq!(status, 200, "{v}");
    let call = &v["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], json!({"city": "Oslo"}));
    assert_eq!(v["done_reason"], "stop");
    let sent = &mock.chat_calls()[0].body;
    assert_eq!(sent["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(
        sent["tools"][0]["function"]["parameters"]["required"],
        json!(["city"])
    );

    // Streamed: the call comes whole, in one line, before the done line.
    let mut streamed = first.clone();
    streamed["stream"] = json!(true);
    let lines = ndjson(post(&t, "/api/chat", streamed).await).await;
    let calls: Vec<&Value> = lines
        .iter()
        .filter_map(|l| l["message"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert_eq!(calls.len(), 1, "{lines:?}");
    assert_eq!(calls[0]["function"]["arguments"], json!({"city": "Oslo"}));
    assert_eq!(lines.last().unwrap()["done"], true);

    // The result goes back as Ollama sends it: a tool message naming the tool.
    let back = json!({"model": "mock-model", "stream": false, "tools": tools, "messages": [
        {"role": "user", "content": "weather in Oslo?"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
        {"role": "tool", "tool_name": "get_weather", "content": "sunny"},
    ]});
    let (status, v) = whole(post(&t, "/api/chat", back).await).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["message"]["content"], "It is sunny.");
    let sent = &mock.chat_calls()[2].body;
    let id = sent["messages"][1]["tool_calls"][0]["id"].as_str().unwrap();
    assert_eq!(
        sent["messages"][1]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Oslo\"}"
    );
    assert_eq!(
        sent["messages"][2],
        json!({"role": "tool", "tool_call_id": id, "content": "sunny"})
    );
}

#[tokio::test]
async fn images_formats_options_and_think_reach_the_upstream() {
    let (mock, t) = setup("").await;
    let schema =
        json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]});
    let body = json!({"model": "mock-model", "stream": false, "format": schema, "think": "low",
        "options": {"temperature": 0.3, "top_p": 0.8, "top_k": 20, "num_predict": 50, "stop": ["END"], "seed": 42, "num_ctx": 4096, "num_gpu": 1},
        "messages": [{"role": "user", "content": "what is in it?", "images": ["iVBORw0KGgoAAAANSUhEUg"]}]});
    let (status, v) = whole(post(&t, "/api/chat", body).await).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["message"]["thinking"], "thinking hard");
    let sent = &mock.chat_calls()[0].body;
    assert_eq!(sent["temperature"], 0.3);
    assert_eq!(sent["top_p"], 0.8);
    assert_eq!(sent["top_k"], 20);
    assert_eq!(sent["max_tokens"], 50);
    assert_eq!(sent["stop"], json!(["END"]));
    assert_eq!(sent["seed"], 42);
    assert_eq!(sent["reasoning_effort"], "low");
    for absent in ["num_ctx", "num_gpu", "options", "format", "think"] {
        assert!(sent.get(absent).is_none(), "{absent} in {sent}");
    }
    assert_eq!(sent["response_format"]["type"], "json_schema");
    assert_eq!(sent["response_format"]["json_schema"]["schema"], schema);
    let content = &sent["messages"][0]["content"];
    assert_eq!(
        content[0],
        json!({"type": "text", "text": "what is in it?"})
    );
    assert_eq!(
        content[1]["image_url"]["url"],
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg"
    );

    let (status, _) = whole(
        post(
            &t,
            "/api/chat",
            ask_chat(json!({"stream": false, "format": "json"})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        mock.chat_calls()[1].body["response_format"],
        json!({"type": "json_object"})
    );

    // Wrong types are a 400 naming the field, in Ollama's shape.
    let (status, v) = whole(
        post(
            &t,
            "/api/chat",
            ask_chat(json!({"options": {"temperature": "hot"}})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        v["error"].as_str().unwrap().contains("options.temperature"),
        "{v}"
    );
    assert_eq!(mock.chat_calls().len(), 2);
}

#[tokio::test]
async fn generate_takes_prompt_system_suffix_and_answers_load_calls_at_once() {
    let (mock, t) = setup("").await;
    let (status, v) = whole(post(&t, "/api/generate", json!({"model": "mock-model", "prompt": "why is the sky blue?", "system": "be brief", "stream": false})).await).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["response"], "Hello");
    assert_eq!(v["done"], true);
    assert_eq!(v["done_reason"], "stop");
    assert!(v.get("context").is_none() && v.get("message").is_none());
    let sent = &mock.chat_calls()[0].body;
    assert_eq!(
        sent["messages"],
        json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "why is the sky blue?"}])
    );

    let lines = ndjson(
        post(
            &t,
            "/api/generate",
            json!({"model": "mock-model", "prompt": "hi"}),
        )
        .await,
    )
    .await;
    let (last, pieces) = lines.split_last().unwrap();
    let text: String = pieces
        .iter()
        .map(|l| l["response"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Hello");
    assert_eq!(last["done"], true);
    assert_eq!(last["response"], "");

    let (status, _) = whole(post(&t, "/api/generate", json!({"model": "mock-model", "prompt": "def add(a, b):\n    ", "suffix": "\n\nprint(add(1, 2))", "stream": false})).await).await;
    assert_eq!(status, 200);
    let sent = &mock.chat_calls()[2].body;
    assert!(
        sent["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("between them"),
        "{sent}"
    );
    assert_eq!(
        sent["messages"][1]["content"],
        "<prefix>def add(a, b):\n    </prefix>\n<suffix>\n\nprint(add(1, 2))</suffix>"
    );

    // An empty prompt loads the model: done at once, nothing sent upstream.
    for (path, body, reason) in [
        ("/api/generate", json!({"model": "mock-model"}), "load"),
        (
            "/api/generate",
            json!({"model": "mock-model", "prompt": "", "keep_alive": 0}),
            "unload",
        ),
        (
            "/api/chat",
            json!({"model": "mock-model:latest", "messages": []}),
            "load",
        ),
    ] {
        let (status, v) = whole(post(&t, path, body).await).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["done"], true);
        assert_eq!(v["done_reason"], reason);
    }
    assert_eq!(mock.chat_calls().len(), 3);
    let rows = t.logged(3, 10).await;
    assert!(
        rows.iter()
            .all(|r| r.surface.as_deref() == Some("ollama-generate"))
    );
}

#[tokio::test]
async fn raw_and_context_are_refused_saying_why() {
    let (mock, t) = setup("").await;
    for (body, needle) in [
        (
            json!({"model": "mock-model", "prompt": "hi", "raw": true}),
            "`raw` is not supported",
        ),
        (
            json!({"model": "mock-model", "prompt": "hi", "context": [1, 2, 3]}),
            "`context` is not supported",
        ),
    ] {
        let (status, v) = whole(post(&t, "/api/generate", body).await).await;
        assert_eq!(status, 400, "{v}");
        assert!(v["error"].as_str().unwrap().contains(needle), "{v}");
    }
    assert_eq!(mock.count(), 0);
}

#[tokio::test]
async fn tags_show_ps_and_version_describe_what_is_served() {
    let (_mock, t) = setup("").await;
    let tags = t.get_json("/api/tags").await;
    let models = tags["models"].as_array().unwrap();
    let names: Vec<&str> = models.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["auto:latest", "mock-model:latest"]);
    let m = &models[1];
    assert_eq!(m["model"], "mock-model:latest");
    assert_eq!(m["digest"].as_str().unwrap().len(), 64);
    assert_eq!(
        m["digest"],
        t.get_json("/api/tags").await["models"][1]["digest"],
        "stable"
    );
    assert!(m["modified_at"].is_string() && m["size"].is_u64());
    for k in [
        "format",
        "family",
        "families",
        "parameter_size",
        "quantization_level",
    ] {
        assert!(m["details"].get(k).is_some(), "{k} in {m}");
    }

    for name in ["mock-model", "mock-model:latest", "mock/mock-model"] {
        let (status, v) = whole(post(&t, "/api/show", json!({"model": name})).await).await;
        assert_eq!(status, 200, "{name}: {v}");
        assert_eq!(v["capabilities"], json!(["completion", "tools", "vision"]));
        let arch = v["model_info"]["general.architecture"].as_str().unwrap();
        assert_eq!(v["model_info"][format!("{arch}.context_length")], 32768);
        assert!(v["modelfile"].as_str().unwrap().contains("mock/mock-model"));
    }
    let (status, v) = whole(post(&t, "/api/show", json!({"name": "auto"})).await).await;
    assert_eq!(status, 200, "older clients send `name`: {v}");
    let (status, v) = whole(post(&t, "/api/show", json!({"model": "nope"})).await).await;
    assert_eq!(status, 404);
    assert!(v["error"].as_str().unwrap().contains("not found"));

    assert_eq!(t.get_json("/api/ps").await, json!({"models": []}));
    let v = t.get_json("/api/version").await;
    assert!(v["version"].as_str().unwrap().starts_with("0."), "{v}");
}

#[tokio::test]
async fn pull_delete_and_the_like_say_nothing_is_stored() {
    let (mock, t) = setup("").await;
    for (method, path) in [
        ("POST", "/api/pull"),
        ("POST", "/api/push"),
        ("POST", "/api/create"),
        ("POST", "/api/copy"),
        ("DELETE", "/api/delete"),
        ("POST", "/api/blobs/sha256:abc"),
    ] {
        let resp = t
            .client
            .request(method.parse().unwrap(), t.url(path))
            .bearer_auth(CLIENT_KEY)
            .json(&json!({"model": "mock-model"}))
            .send()
            .await
            .unwrap();
        let (status, v) = whole(resp).await;
        assert_eq!(status, 501, "{path}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains("does not store"),
            "{path}: {v}"
        );
    }
    let (status, v) = whole(post(&t, "/api/nothing", json!({})).await).await;
    assert_eq!(status, 404);
    assert!(v["error"].as_str().unwrap().contains("/api/chat"), "{v}");
    assert_eq!(mock.count(), 0);
}

#[tokio::test]
async fn the_main_port_wants_the_client_key() {
    let (mock, t) = setup("").await;
    for (path, key) in [
        ("/api/chat", None),
        ("/api/chat", Some("fw-wrong")),
        ("/api/tags", None),
        ("/api/pull", None),
    ] {
        let mut req = if path == "/api/tags" {
            t.client.get(t.url(path))
        } else {
            t.client.post(t.url(path)).json(&ask_chat(json!({})))
        };
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.unwrap();
        let (status, v) = whole(resp).await;
        assert_eq!(status, 401, "{path}");
        assert!(v["error"].is_string(), "Ollama's shape: {v}");
    }
    assert_eq!(mock.count(), 0);
}

#[tokio::test]
async fn a_failure_after_content_ends_the_stream_with_an_error_line() {
    let mock = Mock::start().await;
    mock.always(Reply::Stream(vec![Piece::Raw(chunk("mock-model", "half"))]));
    let t = TestApp::spawn(&custom(&mock, "")).await;
    let lines = ndjson(post(&t, "/api/chat", ask_chat(json!({}))).await).await;
    assert_eq!(lines[0]["message"]["content"], "half");
    let last = lines.last().unwrap();
    assert!(last["error"].as_str().unwrap().contains("broke"), "{last}");
    assert!(
        lines.iter().all(|l| l["done"] != true),
        "no made-up done: {lines:?}"
    );

    // Before content a failure is a plain error with its status.
    mock.always(Reply::status(500, "boom"));
    let (status, v) = whole(
        post(
            &t,
            "/api/generate",
            json!({"model": "mock-model", "prompt": "hi"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 502);
    assert!(v["error"].is_string(), "{v}");
}

const LOCAL: &str = "[ollama]\nlisten = \"127.0.0.1:0\"\n";

#[tokio::test]
async fn the_keyless_listener_serves_the_ollama_api_and_nothing_else() {
    let (mock, t) = setup(LOCAL).await;
    let base = format!("http://{}", t.ollama.expect("the Ollama listener is up"));
    let c = &t.client;
    let root = c.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(root.status(), 200);
    assert_eq!(root.text().await.unwrap(), "Ollama is running");
    let tags: Value = c
        .get(format!("{base}/api/tags"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["models"][1]["name"], "mock-model:latest");
    let resp = c
        .post(format!("{base}/api/chat"))
        .json(&ask_chat(json!({"stream": false})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-routed-via"], "mock/mock-model");
    let (status, v) = whole(resp).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["message"]["content"], "Hello");
    // Nothing but the Ollama API there, with or without a key.
    for path in [
        "/v1/models",
        "/v1/chat/completions",
        "/admin",
        "/metrics",
        "/livez",
    ] {
        let resp = c
            .get(format!("{base}{path}"))
            .bearer_auth(CLIENT_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{path}");
    }
    let resp = c
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .json(&ask("mock-model"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(mock.chat_calls().len(), 1);
    let rows = t.logged(1, 5).await;
    assert_eq!(rows[0].client, "ollama-local");
    // A web page elsewhere cannot spend the quota through it; one on this machine can.
    for (origin, want) in [
        ("https://evil.example", 403),
        ("http://localhost:8080", 200),
        ("http://127.0.0.1", 200),
    ] {
        let resp = c
            .get(format!("{base}/api/tags"))
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), want, "{origin}");
    }
    let resp = c
        .post(format!("{base}/api/chat"))
        .header("origin", "https://evil.example")
        .json(&ask_chat(json!({"stream": false})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(mock.chat_calls().len(), 1);
    // The main port still wants its key.
    let resp = c.get(t.url("/api/tags")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn the_keyless_listener_acts_as_its_named_client_key() {
    let laptop = "[auth]\napi_keys = [{ name = \"laptop\", key = \"fw-laptop-key-0123456789\" }]\n[auth.limits.laptop]\nmodels = [\"nothing-*\"]\n";
    let (mock, t) = setup(&format!(
        "{laptop}[ollama]\nlisten = \"127.0.0.1:0\"\napi_key = \"laptop\"\n"
    ))
    .await;
    let base = format!("http://{}", t.ollama.unwrap());
    // The key's limits apply: it may use no model here.
    let tags: Value = t
        .client
        .get(format!("{base}/api/tags"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        tags["models"].as_array().unwrap().len(),
        1,
        "only auto: {tags}"
    );
    let resp = t
        .client
        .post(format!("{base}/api/chat"))
        .json(&ask_chat(json!({"stream": false})))
        .send()
        .await
        .unwrap();
    let (status, v) = whole(resp).await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(mock.chat_calls().len(), 0);

    // A listener for a key that does not exist refuses, saying why.
    let (_mock, t) = setup("[ollama]\nlisten = \"127.0.0.1:0\"\napi_key = \"ghost\"\n").await;
    let base = format!("http://{}", t.ollama.unwrap());
    let (status, v) = whole(
        t.client
            .get(format!("{base}/api/tags"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    assert!(v["error"].as_str().unwrap().contains("ghost"), "{v}");
}

#[tokio::test]
async fn off_loopback_the_listener_wants_its_key() {
    // Binding a non-loopback address is refused without api_key.
    let err = TestApp::start(Options::new("[ollama]\nlisten = \"0.0.0.0:0\"\n"))
        .await
        .err()
        .expect("refused");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("not a loopback address") && msg.contains("api_key"),
        "{msg}"
    );

    // With api_key, off loopback a request must present that key (served here on loopback
    // with the off-loopback rule, since tests stay on 127.0.0.1).
    let laptop = "[auth]\napi_keys = [{ name = \"laptop\", key = \"fw-laptop-key-0123456789\" }]\n";
    let (_mock, t) = setup(laptop).await;
    let access = freeway::http::ollama::Access::Listener {
        as_key: Some("laptop".into()),
        require_key: true,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let limits = freeway::http::serve::Limits {
        header_read_timeout: std::time::Duration::from_secs(10),
        idle_timeout: std::time::Duration::from_secs(10),
        send_timeout: std::time::Duration::from_secs(10),
        max_connections: 16,
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let serving = tokio::spawn(freeway::http::ollama::serve(
        t.app.http_server(),
        listener,
        access,
        limits,
        stop.clone().cancelled_owned(),
        std::time::Duration::from_secs(1),
    ));
    for (key, want) in [
        (None, 401),
        (Some(CLIENT_KEY), 401),
        (Some("fw-laptop-key-0123456789"), 200),
    ] {
        let mut req = t.client.get(format!("{base}/api/tags"));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let (status, v) = whole(req.send().await.unwrap()).await;
        assert_eq!(status, want, "{key:?}: {v}");
    }
    stop.cancel();
    serving.await.unwrap();
}

#[tokio::test]
async fn idempotency_keys_and_the_answer_cache_cover_the_ollama_routes() {
    let (mock, t) = setup("[cache]\nenabled = true\n").await;
    let send = |key: &'static str| {
        t.client
            .post(t.url("/api/chat"))
            .bearer_auth(CLIENT_KEY)
            .header("idempotency-key", key)
            .header("cache-control", "no-cache")
            .json(&ask_chat(json!({})))
            .send()
    };
    let first = send("k-1").await.unwrap();
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first = ndjson(first).await;
    let again = send("k-1").await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again = ndjson(again).await;
    let text = |lines: &[Value]| -> String {
        lines
            .iter()
            .filter_map(|l| l["message"]["content"].as_str())
            .collect()
    };
    assert_eq!(text(&again), text(&first));
    assert_eq!(again.last().unwrap()["done"], true);
    assert_eq!(
        mock.chat_calls().len(),
        1,
        "the replay sent nothing upstream"
    );

    // An exact repeat without a key is a cache hit, in Ollama's shape all the same.
    let miss = post(
        &t,
        "/api/generate",
        json!({"model": "mock-model", "prompt": "hi", "stream": false}),
    )
    .await;
    assert_eq!(miss.headers()["x-freeway-cache"], "miss");
    let hit = post(
        &t,
        "/api/generate",
        json!({"model": "mock-model", "prompt": "hi", "stream": false}),
    )
    .await;
    assert_eq!(hit.headers()["x-freeway-cache"], "hit");
    let (status, v) = whole(hit).await;
    assert_eq!(status, 200);
    assert_eq!(v["response"], "Hello");
    assert_eq!(mock.chat_calls().len(), 2);
}

#[tokio::test]
async fn embed_and_the_older_embeddings_answer_in_ollamas_shape() {
    let (mock, t) = embedder(0.5, 4).await;
    let (status, v) = whole(
        post(
            &t,
            "/api/embed",
            json!({"model": "mock-embed:latest", "input": ["a", "b"]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], "mock-embed");
    assert_eq!(v["embeddings"], json!([[0.0, 0.5], [1.0, 0.5]]));
    assert_eq!(v["prompt_eval_count"], 4);
    assert_eq!(mock.calls()[0].path, "/v1/embeddings");
    let (status, v) = whole(
        post(
            &t,
            "/api/embeddings",
            json!({"model": "mock-embed", "prompt": "a"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["embedding"], json!([0.0, 0.5]));
    // A chat model, or a missing field: Ollama's error shape.
    let (status, v) = whole(post(&t, "/api/embed", json!({"model": "mock-embed"})).await).await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("`input`"), "{v}");
    let (status, v) =
        whole(post(&t, "/api/embed", json!({"model": "nope", "input": "x"})).await).await;
    assert_eq!(status, 404, "{v}");
    let rows = t.logged(2, 10).await;
    assert!(
        rows.iter()
            .any(|r| r.surface.as_deref() == Some("ollama-embed") && r.status == 200)
    );
}
