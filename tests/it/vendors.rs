//! One end-to-end test per vendor quirk of the OpenAI dialect (catalog data, not code).

use crate::harness::*;
use serde_json::{Value, json};

async fn sent_for(
    provider: &str,
    model: &str,
    extra_toml: &str,
    body: Value,
) -> (reqwest::StatusCode, Received) {
    let mock = Mock::start().await;
    let toml = format!(
        "[providers.{provider}]\nbase_url = \"{}\"\nkeys = [\"test-key-{provider}\"]\nenabled = true\n{extra_toml}",
        mock.url("/v1")
    );
    let t = TestApp::spawn(&toml).await;
    let mut body = body;
    body["model"] = json!(format!("{provider}/{model}"));
    let status = t.chat(body).await.status();
    let calls = mock.chat_calls();
    assert_eq!(calls.len(), 1, "{provider}");
    (status, calls[0].clone())
}

fn hi() -> Value {
    json!({"messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn mistral_drops_rejected_fields_and_renames_seed() {
    let mut body = hi();
    for (k, v) in [
        ("seed", json!(3)),
        ("top_k", json!(5)),
        ("min_p", json!(0.1)),
        ("repetition_penalty", json!(1.1)),
        ("logit_bias", json!({})),
        ("logprobs", json!(true)),
        ("reasoning_effort", json!("low")),
        ("temperature", json!(0.5)),
    ] {
        body[k] = v;
    }
    let (status, sent) = sent_for("mistral", "mistral-small-latest", "", body).await;
    assert_eq!(status, 200);
    assert_eq!(sent.body["random_seed"], 3);
    assert_eq!(sent.body["temperature"], 0.5);
    for k in [
        "seed",
        "top_k",
        "min_p",
        "repetition_penalty",
        "logit_bias",
        "logprobs",
        "reasoning_effort",
    ] {
        assert!(sent.body.get(k).is_none(), "{k}");
    }
}

#[tokio::test]
async fn groq_drops_logprobs_fields() {
    let mut body = hi();
    body["logprobs"] = json!(true);
    body["top_logprobs"] = json!(3);
    body["logit_bias"] = json!({"1": 2});
    let (status, sent) = sent_for("groq", "openai/gpt-oss-120b", "", body).await;
    assert_eq!(status, 200);
    assert!(
        sent.body.get("logprobs").is_none()
            && sent.body.get("top_logprobs").is_none()
            && sent.body.get("logit_bias").is_none()
    );
}

#[tokio::test]
async fn github_is_retired_and_never_routed_even_when_switched_on() {
    let mock = Mock::start().await;
    let toml = format!(
        "[providers.github]\nbase_url = \"{}\"\nkeys = [\"ghp_test\"]\nenabled = true\n",
        mock.url("/v1")
    );
    let t = TestApp::spawn(&toml).await;
    let resp = t.chat(ask("github/openai/gpt-4.1")).await;
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("retired"), "{msg}");
    assert_eq!(mock.count(), 0);
}

#[tokio::test]
async fn cohere_gets_string_content_and_clean_schemas() {
    let body = json!({
        "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": false, "properties": {}}}}]
    });
    let (_, sent) = sent_for("cohere", "command-a-03-2025", "", body).await;
    assert_eq!(sent.body["messages"][0]["content"], "a\nb");
    let params = &sent.body["tools"][0]["function"]["parameters"];
    assert!(
        params.get("$schema").is_none() && params.get("additionalProperties").is_none(),
        "{params}"
    );
}

#[tokio::test]
async fn nvidia_asks_for_one_tool_call_at_a_time() {
    let body = json!({"messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]});
    let (_, sent) = sent_for("nvidia", "deepseek-ai/deepseek-v3.1", "", body).await;
    assert_eq!(sent.body["parallel_tool_calls"], false);
}

#[tokio::test]
async fn openrouter_sends_its_attribution_headers() {
    let (_, sent) = sent_for("openrouter", "qwen/qwen3-coder:free", "", hi()).await;
    assert_eq!(sent.header("x-title").as_deref(), Some("Freeway"));
    assert!(sent.header("http-referer").is_some());
    assert_eq!(sent.bearer().as_deref(), Some("test-key-openrouter"));
}

#[tokio::test]
async fn cloudflare_keys_carry_the_account_that_fills_the_url() {
    let mock = Mock::start().await;
    let toml = format!(
        "[providers.cloudflare]\nbase_url = \"{}\"\nkeys = [\"acct-42:cf-token-xyz\"]\n",
        mock.url("/client/v4/accounts/{account_id}/ai/v1")
    );
    let t = TestApp::spawn(&toml).await;
    let body = json!({"model": "cloudflare/@cf/openai/gpt-oss-120b", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "x"}]},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"}]});
    assert_eq!(t.chat(body).await.status(), 200);
    let sent = &mock.chat_calls()[0];
    assert_eq!(
        sent.path,
        "/client/v4/accounts/acct-42/ai/v1/chat/completions"
    );
    assert_eq!(
        sent.bearer().as_deref(),
        Some("cf-token-xyz"),
        "the token alone authenticates"
    );
    assert_eq!(sent.body["messages"][0]["content"], "x");
    assert_eq!(
        sent.body["messages"][1]["content"], "",
        "null content becomes a string"
    );
}

#[tokio::test]
async fn zai_tries_the_other_host_on_401_and_remembers() {
    let (intl, mainland) = (Mock::start().await, Mock::start().await);
    intl.always(Reply::status(401, "token is not valid here"));
    let toml = format!(
        "[providers.zhipu]\nbase_url = \"{}\"\nalt_base_urls = [\"{}\"]\nkeys = [\"zhipu-key\"]\n",
        intl.url("/api/paas/v4"),
        mainland.url("/api/paas/v4")
    );
    let t = TestApp::spawn(&toml).await;
    let resp = t.chat(ask("zhipu/glm-4.5-flash")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-fallback-attempts"],
        "1",
        "the first host's 401 was an attempt"
    );
    for _ in 0..3 {
        assert_eq!(t.chat(ask("zhipu/glm-4.5-flash")).await.status(), 200);
    }
    assert_eq!(intl.chat_calls().len(), 1, "the working host is remembered");
    assert_eq!(mainland.chat_calls().len(), 4);
    let key = &t.app.live.keys.all("zhipu")[0];
    assert_ne!(
        t.app.live.keys.status(&key.id),
        freeway::keys::Status::Invalid,
        "not an invalid key"
    );
}

#[tokio::test]
async fn custom_endpoints_need_no_key() {
    let mock = Mock::start().await;
    let toml = format!(
        "[custom.local]\nbase_url = \"{}\"\nmodels = [{{ id = \"qwen3:8b\" }}]\n",
        mock.url("/v1")
    );
    let t = TestApp::spawn(&toml).await;
    let resp = t.chat(ask("qwen3:8b")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-routed-via"], "local/qwen3:8b");
    assert!(mock.chat_calls()[0].header("authorization").is_none());
}

#[tokio::test]
async fn ollama_reasoning_only_answers_count_as_content() {
    let mock = Mock::start().await;
    mock.always(Reply::Json {
        status: 200,
        body: json!({"model": "gpt-oss:120b", "choices": [{"index": 0, "message": {"role": "assistant", "content": "", "reasoning": "thinking..."}, "finish_reason": "length"}]}),
        headers: vec![],
    });
    let toml = format!(
        "[providers.ollama]\nbase_url = \"{}\"\nkeys = [\"k\"]\n",
        mock.url("/v1")
    );
    let t = TestApp::spawn(&toml).await;
    assert_eq!(t.chat(ask("ollama/gpt-oss:120b")).await.status(), 200);
}

#[tokio::test]
async fn upstream_redirects_are_not_followed_with_the_key() {
    let (redirector, elsewhere) = (Mock::start().await, Mock::start().await);
    let target = elsewhere.url("/v1beta/models/gemini-2.5-flash:generateContent");
    redirector.always(Reply::Json {
        status: 307,
        body: json!({}),
        headers: vec![("location".into(), target)],
    });
    let toml = format!(
        "[providers.google]\nbase_url = \"{}\"\nkeys = [\"AIza-redirected\"]\n",
        redirector.url("/v1beta")
    );
    let t = TestApp::spawn(&toml).await;
    let resp = t.chat(ask("gemini-2.5-flash")).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(
        elsewhere.count(),
        0,
        "the key never travelled to the redirect target"
    );
}
