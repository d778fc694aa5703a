//! `POST /v1/embeddings` (SPEC 2.5): inputs split into calls of the batch size and put back in
//! order, floats and base64, `dimensions` only where the model can shrink, each provider's own
//! API (OpenAI `/embeddings`, Gemini `batchEmbedContents`, Cohere `/v2/embed`), failover only
//! within one vector space, every call counted by the ledger, `/v1/models` listing them.

use crate::harness::*;
use base64::Engine;
use serde_json::{Value, json};

/// A vector that says which text it is of: `[length of the text, 0.5]`.
fn vector_of(text: &str) -> Value {
    json!([text.len() as f64, 0.5])
}

/// An OpenAI-dialect embedding upstream: vectors in reverse order with their indexes (the
/// order must come from the indexes), usage of 3 tokens per input.
fn openai_embedder(mock: &Mock) {
    mock.on(|r, _| {
        if !r.path.ends_with("/embeddings") {
            return Reply::status(404, "no such route");
        }
        let inputs: Vec<String> = r.body["input"]
            .as_array()
            .map(|a| a.iter().map(|v| v.to_string()).collect())
            .unwrap_or_default();
        let mut data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": vector_of(t.trim_matches('"'))}))
            .collect();
        data.reverse();
        Reply::Json {
            status: 200,
            body: json!({"object": "list", "data": data, "usage": {"prompt_tokens": 3 * inputs.len(), "total_tokens": 3 * inputs.len()}}),
            headers: vec![],
        }
    });
}

fn embed_calls(mock: &Mock) -> Vec<Received> {
    mock.calls()
        .into_iter()
        .filter(|c| c.path.contains("embed"))
        .collect()
}

/// A custom endpoint serving `mock-embed` (4 dimensions, any smaller size, 2 inputs a call)
/// and the chat model `mock-model`.
fn custom_embedder(mock: &Mock, extra: &str) -> String {
    format!(
        "[custom.mock]\nbase_url = \"{}\"\nkeys = [\"sk-mock-upstream-key\"]\nmodels = [{{ id = \"mock-model\" }}, {{ id = \"mock-embed\", dims = 4, shrinks = true, batch = 2 {extra} }}, {{ id = \"fixed-embed\", dims = 4 }}]\n",
        mock.url("/v1")
    )
}

async fn embed(t: &TestApp, body: Value) -> reqwest::Response {
    t.client
        .post(t.url("/v1/embeddings"))
        .bearer_auth(CLIENT_KEY)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn inputs_are_batched_and_put_back_in_order() {
    let mock = Mock::start().await;
    openai_embedder(&mock);
    let t = TestApp::spawn(&custom_embedder(&mock, "")).await;
    let texts = ["a", "bb", "ccc", "dddd", "eeeee"];
    let r = embed(&t, json!({"model": "mock-embed", "input": texts})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-routed-via"], "mock/mock-embed");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "mock-embed");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 5);
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["index"], i);
        assert_eq!(d["object"], "embedding");
        assert_eq!(d["embedding"], vector_of(texts[i]), "input {i}");
    }
    // 2 + 2 + 1 inputs: three calls, each counted by the upstream's usage.
    let calls = embed_calls(&mock);
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[0].body["input"], json!(["a", "bb"]));
    assert_eq!(calls[2].body["input"], json!(["eeeee"]));
    assert_eq!(calls[0].body["model"], "mock-embed");
    assert_eq!(calls[0].bearer().as_deref(), Some("sk-mock-upstream-key"));
    assert_eq!(v["usage"]["prompt_tokens"], 15);
    // One row in the request log, on its own surface.
    let rows = t.logged(1, 5).await;
    let row = rows
        .iter()
        .find(|r| r.surface.as_deref() == Some("embeddings"))
        .unwrap();
    assert_eq!(row.status, 200);
    assert_eq!(row.served_by.as_deref(), Some("mock/mock-embed"));
    assert_eq!(row.tokens_in, 15);
}

#[tokio::test]
async fn base64_dimensions_and_input_shapes() {
    let mock = Mock::start().await;
    openai_embedder(&mock);
    let t = TestApp::spawn(&custom_embedder(&mock, "")).await;
    // base64: little-endian f32s, what the OpenAI SDKs ask for by default.
    let r = embed(
        &t,
        json!({"model": "mock/mock-embed", "input": "abc", "encoding_format": "base64", "dimensions": 2}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let b = v["data"][0]["embedding"].as_str().unwrap();
    let bytes = base64::engine::general_purpose::STANDARD.decode(b).unwrap();
    assert_eq!(bytes.len(), 8);
    assert_eq!(f32::from_le_bytes(bytes[0..4].try_into().unwrap()), 3.0);
    assert_eq!(f32::from_le_bytes(bytes[4..8].try_into().unwrap()), 0.5);
    assert_eq!(embed_calls(&mock)[0].body["dimensions"], 2);
    // A model that cannot shrink: a 400 that says so, before any call.
    let before = embed_calls(&mock).len();
    let r = embed(
        &t,
        json!({"model": "fixed-embed", "input": "x", "dimensions": 2}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("4-dimensional"),
        "{e}"
    );
    // Its own size is no change: asked, but not sent.
    let r = embed(
        &t,
        json!({"model": "fixed-embed", "input": "x", "dimensions": 4}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let last = embed_calls(&mock).pop().unwrap();
    assert!(last.body.get("dimensions").is_none(), "{}", last.body);
    assert_eq!(embed_calls(&mock).len(), before + 1);
    // Token ids go to an OpenAI-dialect upstream as they are.
    let r = embed(&t, json!({"model": "mock-embed", "input": [[1, 2], [3]]})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        embed_calls(&mock).pop().unwrap().body["input"],
        json!([[1, 2], [3]])
    );
    // Bad input: OpenAI's error shape, the field named.
    let r = embed(&t, json!({"model": "mock-embed", "input": {"no": 1}})).await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"].as_str().unwrap().contains("`input`"),
        "{e}"
    );
}

#[tokio::test]
async fn a_vector_space_is_never_chosen_for_the_client() {
    let mock = Mock::start().await;
    openai_embedder(&mock);
    let t = TestApp::spawn(&custom_embedder(&mock, "")).await;
    let r = embed(&t, json!({"model": "auto", "input": "x"})).await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("[embeddings] default"),
        "{e}"
    );
    // A chat model is not an embedding model.
    let r = embed(&t, json!({"model": "mock-model", "input": "x"})).await;
    assert_eq!(r.status(), 404);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("chat model"),
        "{e}"
    );
    assert!(embed_calls(&mock).is_empty());
    drop(t);
    // With a default, `auto` is that model.
    let config = format!(
        "[embeddings]\ndefault = \"mock-embed\"\n{}",
        custom_embedder(&mock, "")
    );
    let t = TestApp::spawn(&config).await;
    let r = embed(&t, json!({"model": "auto", "input": "x"})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(embed_calls(&mock)[0].body["model"], "mock-embed");
}

#[tokio::test]
async fn failover_moves_between_providers_of_the_same_model_only() {
    let nvidia = Mock::start().await;
    openai_embedder(&nvidia);
    let cloudflare = Mock::start().await;
    cloudflare.always(Reply::status(429, "rate limited"));
    let mistral = Mock::start().await;
    openai_embedder(&mistral);
    let config = format!(
        r#"
[providers.nvidia]
enabled = true
base_url = "{}"
keys = ["nvapi-test-key"]
[providers.cloudflare]
base_url = "{}"
keys = ["acct123:cf-token"]
[providers.mistral]
base_url = "{}"
keys = ["mistral-test-key"]
"#,
        nvidia.url("/v1"),
        cloudflare.url("/accounts/{account_id}/ai/v1"),
        mistral.url("/v1"),
    );
    let t = TestApp::spawn(&config).await;
    // Cloudflare comes first in the catalog and is rate limited: NVIDIA's copy of the model.
    let r = embed(
        &t,
        json!({"model": "bge-m3", "input": ["q"], "input_type": "query"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-routed-via"], "nvidia/baai/bge-m3");
    assert_eq!(r.headers()["x-fallback-attempts"], "1");
    let cf = embed_calls(&cloudflare);
    assert_eq!(cf.len(), 1);
    assert_eq!(cf[0].path, "/accounts/acct123/ai/v1/embeddings");
    assert_eq!(cf[0].bearer().as_deref(), Some("cf-token"));
    assert_eq!(cf[0].body["model"], "@cf/baai/bge-m3");
    let nv = embed_calls(&nvidia);
    assert_eq!(nv[0].body["model"], "baai/bge-m3");
    // bge-m3 takes no input_type: none is sent.
    assert!(nv[0].body.get("input_type").is_none());
    // NVIDIA's embedqa model takes input_type: query or passage.
    let r = embed(
        &t,
        json!({"model": "llama-3.2-nv-embedqa-1b-v2", "input": ["q"], "input_type": "query"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        embed_calls(&nvidia).pop().unwrap().body["input_type"],
        "query"
    );
    // Every provider of the model failing: an error, never another model's vectors.
    nvidia.always(Reply::status(503, "down"));
    let r = embed(&t, json!({"model": "bge-m3", "input": ["q"]})).await;
    assert!(r.status() == 429 || r.status() == 502, "{}", r.status());
    assert!(embed_calls(&mistral).is_empty());
}

#[tokio::test]
async fn gemini_and_cohere_are_called_through_their_own_apis() {
    let google = Mock::start().await;
    google.on(|r, _| {
        let n = r.body["requests"].as_array().map_or(0, Vec::len);
        let embeddings: Vec<Value> = (0..n).map(|i| json!({"values": [i as f64, 1.0]})).collect();
        Reply::Json {
            status: 200,
            body: json!({ "embeddings": embeddings }),
            headers: vec![],
        }
    });
    let cohere = Mock::start().await;
    cohere.on(|r, _| {
        let n = r.body["texts"].as_array().map_or(0, Vec::len);
        let vectors: Vec<Value> = (0..n).map(|i| json!([i as f64])).collect();
        Reply::Json {
            status: 200,
            body: json!({"embeddings": {"float": vectors}, "meta": {"billed_units": {"input_tokens": 11}}}),
            headers: vec![],
        }
    });
    let config = format!(
        r#"
[providers.google]
base_url = "{}"
keys = ["AIza-test-google-key"]
[providers.cohere]
base_url = "{}"
keys = ["cohere-test-key"]
"#,
        google.url("/v1beta"),
        cohere.url("/compatibility/v1"),
    );
    let t = TestApp::spawn(&config).await;
    let r = embed(
        &t,
        json!({"model": "gemini-embedding-001", "input": ["a", "b"], "input_type": "query", "dimensions": 768}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"][1]["embedding"], json!([1.0, 1.0]));
    let g = embed_calls(&google);
    assert_eq!(
        g[0].path,
        "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    );
    assert_eq!(
        g[0].header("x-goog-api-key").as_deref(),
        Some("AIza-test-google-key")
    );
    assert_eq!(g[0].body["requests"][0]["taskType"], "RETRIEVAL_QUERY");
    assert_eq!(g[0].body["requests"][0]["outputDimensionality"], 768);
    // Gemini reports no usage: the estimate is the count.
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() >= 2);
    let r = embed(&t, json!({"model": "embed-v4.0", "input": ["x", "y"]})).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], 11);
    let c = embed_calls(&cohere);
    assert_eq!(c[0].path, "/v2/embed");
    assert_eq!(c[0].body["input_type"], "search_document");
    assert_eq!(c[0].body["texts"], json!(["x", "y"]));
    // 1536 is not among the sizes Gemini's model shrinks to.
    let r = embed(
        &t,
        json!({"model": "gemini-embedding-001", "input": "a", "dimensions": 100}),
    )
    .await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn every_call_counts_against_the_models_caps() {
    let mock = Mock::start().await;
    openai_embedder(&mock);
    let t = TestApp::spawn(&custom_embedder(&mock, ", rpd = 3")).await;
    // Five inputs, two a call: three calls, the whole day's cap.
    let r = embed(
        &t,
        json!({"model": "mock-embed", "input": ["a", "b", "c", "d", "e"]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = embed(&t, json!({"model": "mock-embed", "input": "f"})).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(embed_calls(&mock).len(), 3);
}

#[tokio::test]
async fn models_lists_embedding_models_as_their_own_kind() {
    let mock = Mock::start().await;
    let t = TestApp::spawn(&custom_embedder(&mock, "")).await;
    let v = t.get_json("/v1/models").await;
    let data = v["data"].as_array().unwrap();
    let e = data.iter().find(|m| m["id"] == "mock-embed").unwrap();
    assert_eq!(e["capabilities"]["embeddings"], true);
    assert_eq!(e["dimensions"], 4);
    let c = data.iter().find(|m| m["id"] == "mock-model").unwrap();
    assert_eq!(c["capabilities"]["embeddings"], false);
    // Anthropic clients see chat models only.
    let v: Value = t
        .client
        .get(t.url("/v1/models"))
        .bearer_auth(CLIENT_KEY)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        !v["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "mock-embed")
    );
}

#[tokio::test]
async fn an_idempotent_retry_spends_nothing_twice() {
    let mock = Mock::start().await;
    openai_embedder(&mock);
    let t = TestApp::spawn(&custom_embedder(&mock, "")).await;
    let send = |key: &'static str, input: &'static str| {
        t.client
            .post(t.url("/v1/embeddings"))
            .bearer_auth(CLIENT_KEY)
            .header("idempotency-key", key)
            .json(&json!({"model": "mock-embed", "input": input}))
            .send()
    };
    let first: Value = send("e-1", "abc").await.unwrap().json().await.unwrap();
    let again = send("e-1", "abc").await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    assert_eq!(embed_calls(&mock).len(), 1);
    assert_eq!(send("e-1", "other").await.unwrap().status(), 422);
}

#[tokio::test]
async fn one_call_of_floats_passes_on_as_the_upstream_wrote_it() {
    let mock = Mock::start().await;
    mock.always(Reply::Json {
        status: 200,
        body: json!({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.125, 2]}],
            "model": "mock-embed", "usage": {"prompt_tokens": 6, "total_tokens": 6}, "vendor_extra": 1}),
        headers: vec![],
    });
    let t = TestApp::spawn(&custom_embedder(&mock, "")).await;
    let r = embed(&t, json!({"model": "mock-embed", "input": "x"})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-routed-via"], "mock/mock-embed");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["vendor_extra"], 1, "passed on as it came: {v}");
    assert_eq!(v["data"][0]["embedding"], json!([0.125, 2]));
    // base64 is Freeway's work: read and encoded.
    let r = embed(
        &t,
        json!({"model": "mock-embed", "input": "x", "encoding_format": "base64"}),
    )
    .await;
    let v: Value = r.json().await.unwrap();
    assert!(v.get("vendor_extra").is_none());
    assert!(v["data"][0]["embedding"].is_string());
    // Counted with the usage the upstream reported.
    let rows = t.logged(2, 5).await;
    assert!(rows.iter().all(|r| r.tokens_in == 6), "{rows:?}");
}
