//! The admin JSON API (SPEC 6.1, 6.2): setup, login, sessions, CSRF, the slow-down, keys,
//! client keys and the chain, with every bad input the issue names.

use crate::harness::*;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

/// An admin client: the session cookie and the CSRF token.
pub(crate) struct Admin<'a> {
    t: &'a TestApp,
    cookie: String,
    pub(crate) csrf: String,
}

fn session_cookie(headers: &HeaderMap) -> String {
    let set = headers["set-cookie"].to_str().unwrap();
    set.split(';')
        .next()
        .unwrap()
        .strip_prefix("freeway_session=")
        .unwrap()
        .to_string()
}

/// First start: choose the password through the setup token; the session it opens.
pub(crate) async fn setup(t: &TestApp) -> Admin<'_> {
    let token = t.app.admin.setup_token().unwrap().unwrap();
    let resp = t
        .client
        .post(t.url("/admin/api/setup"))
        .json(&json!({"token": token, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cookie = session_cookie(resp.headers());
    let body: Value = resp.json().await.unwrap();
    Admin {
        t,
        cookie,
        csrf: body["csrf_token"].as_str().unwrap().to_string(),
    }
}

impl Admin<'_> {
    /// The `Cookie` header value of this session.
    pub(crate) fn cookie_header(&self) -> String {
        format!("freeway_session={}", self.cookie)
    }
    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.t
            .client
            .request(method, self.t.url(path))
            .header("cookie", self.cookie_header())
            .header("x-csrf-token", &self.csrf)
    }
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self.req(method, path);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }
    pub(crate) async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }
    async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::PATCH, path, Some(body)).await
    }
    async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }
}

/// An error answer in the documented shape, with this status and code.
fn is_error(got: &(u16, Value), status: u16, code: &str) -> bool {
    got.0 == status
        && got.1["error"]["code"] == code
        && got.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
        && got.1["error"]["type"].is_string()
}

#[tokio::test]
async fn setup_login_sessions_and_their_guards() {
    let t = TestApp::spawn("").await;
    let anonymous = t
        .client
        .get(t.url("/admin/api/session"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["error"]["code"], "no_session");

    let token = t.app.admin.setup_token().unwrap().unwrap();
    let setup_with = |token: String, password: &str| {
        let body = json!({"token": token, "password": password});
        let c = t.client.clone();
        let url = t.url("/admin/api/setup");
        async move { c.post(url).json(&body).send().await.unwrap() }
    };
    assert_eq!(setup_with("wrong".into(), PASSWORD).await.status(), 403);
    assert_eq!(setup_with(token.clone(), "short").await.status(), 400);
    let resp = setup_with(token.clone(), PASSWORD).await;
    assert_eq!(resp.status(), 200);
    let set = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(set.contains(flag), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: no Secure flag");
    assert_eq!(
        setup_with(token, PASSWORD).await.status(),
        409,
        "a password exists"
    );

    let login = |password: &str, forwarded_https: bool| {
        let body = json!({"password": password});
        let c = t.client.clone();
        let url = t.url("/admin/api/login");
        async move {
            let mut r = c.post(url).json(&body);
            if forwarded_https {
                r = r.header("x-forwarded-proto", "https");
            }
            r.send().await.unwrap()
        }
    };
    let ok = login(PASSWORD, true).await;
    assert_eq!(ok.status(), 200);
    assert!(
        ok.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Secure")
    );
    for h in [
        "content-security-policy",
        "x-frame-options",
        "referrer-policy",
    ] {
        assert!(ok.headers().contains_key(h), "{h}");
    }
    assert_eq!(ok.headers()["x-frame-options"], "DENY");
    assert_eq!(ok.headers()["referrer-policy"], "no-referrer");
    assert!(
        ok.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'self'")
    );
    let cookie = session_cookie(ok.headers());
    let csrf = ok.json::<Value>().await.unwrap()["csrf_token"]
        .as_str()
        .unwrap()
        .to_string();
    let a = Admin {
        t: &t,
        cookie,
        csrf,
    };
    let (s, body) = a.get("/admin/api/session").await;
    assert_eq!(
        (s, body["csrf_token"].as_str()),
        (200, Some(a.csrf.as_str()))
    );

    // A change needs the CSRF token; a client key never opens the admin side.
    let no_csrf = t
        .client
        .post(t.url("/admin/api/client-keys"))
        .header("cookie", format!("freeway_session={}", a.cookie))
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_csrf.status(), 403);
    let wrong_csrf = t
        .client
        .post(t.url("/admin/api/client-keys"))
        .header("cookie", format!("freeway_session={}", a.cookie))
        .header("x-csrf-token", "nope")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_csrf.status(), 403);
    let two_tokens = a
        .req(reqwest::Method::POST, "/admin/api/client-keys")
        .header("x-csrf-token", "nope")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(two_tokens.status(), 403, "a right token beside a wrong one");
    let client_key = t
        .client
        .get(t.url("/admin/api/keys"))
        .bearer_auth(CLIENT_KEY)
        .header("x-api-key", CLIENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(client_key.status(), 401);

    // Wrong passwords: from the fifth in a row, 429 with a Retry-After that doubles.
    for _ in 0..4 {
        assert_eq!(login("wrong wrong wrong", false).await.status(), 401);
    }
    assert_eq!(login("wrong wrong wrong", false).await.status(), 401);
    let slowed = login(PASSWORD, false).await;
    assert_eq!(slowed.status(), 429);
    assert_eq!(slowed.headers()["retry-after"], "1");
    let body: Value = slowed.json().await.unwrap();
    assert_eq!(body["error"]["code"], "slow_down");

    // Logout ends the session (and needs the CSRF token too).
    let (s, _) = a
        .call(reqwest::Method::POST, "/admin/api/logout", None)
        .await;
    assert_eq!(s, 204);
    assert_eq!(a.get("/admin/api/session").await.0, 401);
}

#[tokio::test]
async fn provider_keys_through_the_api() {
    let mock = Mock::start().await;
    let t = TestApp::spawn(&format!(
        "[providers.groq]\nbase_url = \"{}\"\nkeys = [\"gsk_from_the_config_file_0001\"]\n",
        mock.url("/v1")
    ))
    .await;
    let a = setup(&t).await;
    const SECRET: &str = "gsk_added_in_the_browser_42424242";

    assert!(is_error(
        &a.post(
            "/admin/api/keys",
            json!({"provider": "nope", "key": SECRET})
        )
        .await,
        400,
        "invalid_request"
    ));
    assert!(is_error(
        &a.post("/admin/api/keys", json!({"provider": "groq", "key": "  "}))
            .await,
        400,
        "invalid_request"
    ));
    assert!(is_error(
        &a.post("/admin/api/keys", json!({"provider": "groq"})).await,
        400,
        "invalid_request"
    ));
    assert!(is_error(
        &a.post(
            "/admin/api/keys",
            json!({"provider": "groq", "key": SECRET, "colour": 1})
        )
        .await,
        400,
        "invalid_request"
    ));
    let bad_json = a
        .req(reqwest::Method::POST, "/admin/api/keys")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_json.status(), 400);
    let huge = a
        .req(reqwest::Method::POST, "/admin/api/keys/import")
        .header("content-type", "application/json")
        .body(format!("{{\"text\": \"{}\"}}", "x".repeat(2 << 20)))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    let body: Value = huge.json().await.unwrap();
    assert_eq!(body["error"]["code"], "request_too_large");

    let (s, k) = a
        .post(
            "/admin/api/keys",
            json!({"provider": "groq", "key": SECRET, "label": "browser"}),
        )
        .await;
    assert_eq!(s, 201, "{k}");
    assert_eq!(k["masked"], "gsk_…4242");
    assert_eq!(
        (k["source"].as_str(), k["status"].as_str()),
        (Some("stored"), Some("unknown"))
    );
    let id = k["id"].as_str().unwrap().to_string();

    // Used by the router on the very next request.
    let resp = t.chat(ask("groq/openai/gpt-oss-120b")).await;
    assert_eq!(resp.status(), 200);
    let keys_used: Vec<String> = mock
        .chat_calls()
        .iter()
        .filter_map(|c| c.bearer())
        .collect();
    assert!(keys_used.contains(&SECRET.to_string()) || keys_used.len() == 1);

    let (s, list) = a.get("/admin/api/keys").await;
    assert_eq!(s, 200);
    let text = list.to_string();
    assert!(
        !text.contains(SECRET) && !text.contains("gsk_from_the_config_file_0001"),
        "{text}"
    );
    let keys = list["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let config_key = keys.iter().find(|k| k["source"] == "config").unwrap();
    let config_id = config_key["id"].as_str().unwrap();
    for k in keys {
        for field in [
            "id",
            "provider",
            "label",
            "masked",
            "enabled",
            "source",
            "status",
            "last_checked_at",
            "last_error",
            "cooldowns",
        ] {
            assert!(k.get(field).is_some(), "{field} missing in {k}");
        }
    }

    // Disable and relabel; by a unique prefix.
    let (s, k) = a
        .patch(
            &format!("/admin/api/keys/{}", &id[..6]),
            json!({"enabled": false, "label": "off"}),
        )
        .await;
    assert_eq!(s, 200, "{k}");
    assert_eq!(
        (k["enabled"].as_bool(), k["label"].as_str()),
        (Some(false), Some("off"))
    );
    assert!(is_error(
        &a.call(
            reqwest::Method::PATCH,
            &format!("/admin/api/keys/{id}"),
            Some(json!({}))
        )
        .await,
        400,
        "invalid_request"
    ));
    assert!(is_error(
        &a.delete("/admin/api/keys/ffffffffffff").await,
        404,
        "not_found"
    ));
    assert!(is_error(
        &a.delete(&format!("/admin/api/keys/{config_id}")).await,
        409,
        "conflict"
    ));
    assert!(is_error(
        &a.call(
            reqwest::Method::PATCH,
            &format!("/admin/api/keys/{config_id}"),
            Some(json!({"enabled": false}))
        )
        .await,
        409,
        "conflict"
    ));

    // An ambiguous prefix: keep adding until two ids share their first character.
    let mut firsts = vec![id.chars().next().unwrap()];
    let ambiguous = loop {
        let n = firsts.len();
        let (s, k) = a
            .post(
                "/admin/api/keys",
                json!({"provider": "groq", "key": format!("gsk_another_key_{n:020}")}),
            )
            .await;
        assert_eq!(s, 201);
        let c = k["id"].as_str().unwrap().chars().next().unwrap();
        if firsts.contains(&c) {
            break c;
        }
        firsts.push(c);
    };
    assert!(is_error(
        &a.delete(&format!("/admin/api/keys/{ambiguous}")).await,
        400,
        "invalid_request"
    ));

    // Check now: the probe asks the mock's /models.
    let (s, k) = a
        .post(&format!("/admin/api/keys/{id}/check"), json!({}))
        .await;
    assert_eq!(s, 200, "{k}");
    assert_eq!(k["id"], id.as_str());

    // Cooldowns: a 429 cools the key's model; the button clears it.
    let (s, _) = a
        .patch(&format!("/admin/api/keys/{id}"), json!({"enabled": true}))
        .await;
    assert_eq!(s, 200);
    mock.always(Reply::status(429, "slow down").with_header("retry-after", "600"));
    for _ in 0..20 {
        t.chat(ask("groq/openai/gpt-oss-120b")).await;
    }
    let (_, list) = a.get("/admin/api/keys").await;
    let cooled = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .unwrap()
        .clone();
    assert!(
        !cooled["cooldowns"].as_array().unwrap().is_empty(),
        "{cooled}"
    );
    assert!(
        cooled["cooldowns"][0]["until"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    let (s, _) = a.delete(&format!("/admin/api/keys/{id}/cooldowns")).await;
    assert_eq!(s, 204);
    let (_, list) = a.get("/admin/api/keys").await;
    let cleared = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .unwrap()
        .clone();
    assert!(
        cleared["cooldowns"].as_array().unwrap().is_empty(),
        "{cleared}"
    );

    // Remove.
    let (s, _) = a.delete(&format!("/admin/api/keys/{id}")).await;
    assert_eq!(s, 204);
    assert!(is_error(
        &a.delete(&format!("/admin/api/keys/{id}")).await,
        404,
        "not_found"
    ));

    // Import a .env text.
    let (s, done) = a.post("/admin/api/keys/import", json!({"text": "# my keys\nGEMINI_API_KEY=AIzaSyImported000000000000\nGEMINI_API_KEY_2=AIzaSyImported000000000001\nexport MISTRAL_API_KEY=\"mistral-imported-key-000\"\nSOMETHING_ELSE=1\nCEREBRAS_API_KEY=\nCLOUDFLARE_ACCOUNT_ID=acc123\nCLOUDFLARE_API_TOKEN=cftoken000000000\ngsk_pastedWithoutAName0000000000\nbad name=1\n"})).await;
    assert_eq!(s, 200, "{done}");
    let added: Vec<&str> = done["added"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["provider"].as_str().unwrap())
        .collect();
    assert_eq!(added, ["google", "google", "mistral", "cloudflare"]);
    let skipped: Vec<u64> = done["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["line"].as_u64().unwrap())
        .collect();
    assert_eq!(skipped, [5, 6, 9, 10], "{done}");
    assert!(
        done["skipped"][2]["reason"]
            .as_str()
            .unwrap()
            .contains("not a NAME=value line"),
        "{done}"
    );
    assert!(!done.to_string().contains("AIzaSyImported"), "{done}");
    assert!(!done.to_string().contains("gsk_pasted"), "{done}");
}

#[tokio::test]
async fn client_keys_through_the_api() {
    let t = TestApp::spawn("").await;
    let a = setup(&t).await;
    assert!(is_error(
        &a.post("/admin/api/client-keys", json!({"name": " "})).await,
        400,
        "invalid_request"
    ));
    let (s, created) = a
        .post("/admin/api/client-keys", json!({"name": "laptop"}))
        .await;
    assert_eq!(s, 201);
    assert_eq!(created["name"], "laptop");
    let key = created["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("fw-") && key.len() == 46);
    let models = |k: &str| {
        let c = t.client.clone();
        let url = t.url("/v1/models");
        let k = k.to_string();
        async move { c.get(url).bearer_auth(k).send().await.unwrap().status() }
    };
    assert_eq!(models(&key).await, 200, "usable at once");
    let (s, list) = a.get("/admin/api/client-keys").await;
    assert_eq!(s, 200);
    assert!(!list.to_string().contains(&key));
    let laptop = list["client_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "laptop")
        .unwrap()
        .clone();
    for field in ["name", "prefix", "created_at", "last_used_at"] {
        assert!(laptop.get(field).is_some(), "{field} in {laptop}");
    }
    assert_eq!(laptop["prefix"].as_str().unwrap(), &key[..7]);
    assert!(is_error(
        &a.delete("/admin/api/client-keys/nobody").await,
        404,
        "not_found"
    ));
    let (s, _) = a.delete("/admin/api/client-keys/laptop").await;
    assert_eq!(s, 204);
    assert_eq!(models(&key).await, 401, "revoked at once");
}

#[tokio::test]
async fn the_chain_through_the_api() {
    let mock = Mock::start().await;
    let t = TestApp::spawn(&custom(&mock, ", rpd = 100")).await;
    let a = setup(&t).await;
    let (s, c) = a.get("/admin/api/chain").await;
    assert_eq!(s, 200);
    let chain = c["chain"].as_array().unwrap();
    let first = &chain[0];
    for field in [
        "position",
        "provider",
        "model",
        "canonical",
        "rank",
        "enabled",
        "limits",
        "used_today",
        "available",
        "frees_at",
    ] {
        assert!(first.get(field).is_some(), "{field} in {first}");
    }
    for field in ["rpm", "rpd", "tpm", "tpd"] {
        assert!(first["limits"].get(field).is_some(), "limits.{field}");
    }
    let mine = chain
        .iter()
        .find(|e| e["model"] == "mock/mock-model")
        .unwrap();
    assert_eq!(mine["limits"]["rpd"], 100);
    // A model without caps of its own shows its account's: OpenRouter's free models share 50
    // a day.
    let coder = chain
        .iter()
        .find(|e| e["model"] == "openrouter/qwen/qwen3-coder:free")
        .unwrap();
    assert_eq!(
        (&coder["limits"]["rpm"], &coder["limits"]["rpd"]),
        (&json!(20), &json!(50))
    );
    assert_eq!(t.chat(ask("mock-model")).await.status(), 200);
    let (_, c) = a.get("/admin/api/chain").await;
    let mine = c["chain"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["model"] == "mock/mock-model")
        .unwrap()
        .clone();
    assert_eq!(mine["used_today"]["requests"], 1);
    assert_eq!(mine["available"], true);

    let (s, c) = a
        .put(
            "/admin/api/chain",
            json!({"order": ["mock/mock-model", "groq/openai/gpt-oss-120b"]}),
        )
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["chain"][0]["model"], "mock/mock-model");
    assert_eq!(c["chain"][1]["model"], "groq/openai/gpt-oss-120b");
    assert!(is_error(
        &a.put("/admin/api/chain", json!({"order": ["nope/nothing"]}))
            .await,
        404,
        "not_found"
    ));
    assert!(is_error(
        &a.put("/admin/api/chain", json!({"order": "mock/mock-model"}))
            .await,
        400,
        "invalid_request"
    ));

    let (s, c) = a
        .patch(
            "/admin/api/chain",
            json!({"model": "mock/mock-model", "enabled": false}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(c["chain"][0]["enabled"], false);
    assert_eq!(
        t.chat(ask("mock/mock-model")).await.status(),
        404,
        "switched off: not routed"
    );
    let (s, _) = a
        .patch(
            "/admin/api/chain",
            json!({"model": "mock/mock-model", "enabled": true}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(t.chat(ask("mock/mock-model")).await.status(), 200);
}

#[tokio::test]
async fn unknown_admin_routes_and_pages_without_a_session() {
    let t = TestApp::spawn("").await;
    let a = setup(&t).await;
    assert!(is_error(
        &a.get("/admin/api/nothing-here").await,
        404,
        "not_found"
    ));
    // Pages send their visitors to log in first.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for page in ["/admin", "/admin/keys", "/admin/chain"] {
        let resp = no_redirects.get(t.url(page)).send().await.unwrap();
        assert!(resp.status().is_redirection(), "{page}");
        assert_eq!(resp.headers()["location"], "/admin/login");
    }
    let page = no_redirects
        .get(t.url("/admin/keys"))
        .header("cookie", format!("freeway_session={}", a.cookie))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    let html = page.text().await.unwrap();
    assert!(csp.contains("default-src 'self'"));
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "no inline script or style"
    );
    assert!(html.contains(&a.csrf), "the page carries the CSRF token");
}

/// The dashboard and the CLI are two doors to the same operations: each sees the other's work.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_and_the_dashboard_see_each_others_changes() {
    let t = TestApp::spawn("").await;
    let a = setup(&t).await;
    let data = t.dir.display().to_string();
    let env = [("FREEWAY_DATA_DIR", data.as_str())];
    let cwd = tempfile::tempdir().unwrap();
    let (s, _) = a
        .post(
            "/admin/api/keys",
            json!({"provider": "mistral", "key": "mistral-from-the-dashboard-01"}),
        )
        .await;
    assert_eq!(s, 201);
    let out = crate::process::run(cwd.path(), &env, &["keys", "list"], "");
    let listing = crate::process::text(&out.stdout);
    assert!(
        listing.contains("mistral") && listing.contains("mist…d-01"),
        "{listing}"
    );

    let out = crate::process::run(
        cwd.path(),
        &env,
        &["keys", "add", "cerebras", "--label", "cli"],
        "csk-from-the-command-line-02\n",
    );
    assert!(
        out.status.success(),
        "{}",
        crate::process::text(&out.stderr)
    );
    let (_, keys) = a.get("/admin/api/keys").await;
    assert!(
        keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["provider"] == "cerebras" && k["label"] == "cli"),
        "{keys}"
    );
}

#[tokio::test]
async fn an_admin_body_sent_slowly_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = TestApp::spawn("[http]\nbody_read_timeout = \"1s\"\n").await;
    let mut c = tokio::net::TcpStream::connect(t.addr).await.unwrap();
    c.write_all(b"POST /admin/api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"pass")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(20), c.read(&mut buf))
        .await
        .expect("the server waited for the rest of the body without end")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
}

#[tokio::test]
async fn password_hashes_are_bounded_and_the_excess_answered_at_once() {
    let t = TestApp::spawn("").await;
    let _admin = setup(&t).await;
    let login = || async {
        let resp = t
            .client
            .post(t.url("/admin/api/login"))
            .json(&json!({"password": "not the password"}))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let retry = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let body: Value = resp.json().await.unwrap();
        (status, retry, body)
    };
    // Every hashing thread and waiting place taken (this process shares the server's), by
    // checks that wait for a go.
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let wait = std::sync::Arc::new(std::sync::Mutex::new(wait));
    let mut taken = 0;
    while taken <= freeway::offload::HASHES_AT_ONCE + freeway::offload::HASHES_WAITING {
        let wait = std::sync::Arc::clone(&wait);
        let job = freeway::offload::hash(move || {
            let _ = wait.lock().map(|w| w.recv());
        });
        match tokio::time::timeout(std::time::Duration::from_millis(1), job).await {
            Err(_) => taken += 1,
            Ok(_) => break,
        }
    }
    let mut busy = None;
    let (status, retry, body) = login().await;
    if status == 503 {
        busy = Some((retry, body));
    }
    let (retry, body) = busy.expect("a login beyond the bound was not refused");
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(body["error"]["code"], "busy", "{body}");
    for _ in 0..taken {
        let _ = go.send(());
    }
    // The released checks finish in their threads' time; then a login is checked again.
    let mut last = None;
    for _ in 0..200 {
        let (status, _, body) = login().await;
        if status != 503 {
            last = Some((status, body));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (status, body) = last.expect("still busy after the checks were released");
    assert_eq!(status, 401, "{body}");
}
