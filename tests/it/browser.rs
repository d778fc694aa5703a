//! The dashboard in a real browser: headless Chromium driven over WebDriver (chromedriver), the
//! way a person uses it. `./test.sh` installs Debian's `chromium` and `chromium-driver`; without
//! them these tests fail and say so, they never skip.
//!
//! Screenshots of every step go to a directory that is kept when a test fails (its path is in
//! the failure message). With `FREEWAY_SCREENSHOTS=<dir>` the page screenshots the README shows
//! are written there too.

use crate::harness::*;
use crate::process::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const WAIT: Duration = Duration::from_secs(20);

/// A chromedriver process and a browser session in it, with a place for screenshots.
pub struct Browser {
    pub c: Client,
    driver: Child,
    pub shots: PathBuf,
    /// Kept (not deleted) when the test fails.
    shots_dir: Option<tempfile::TempDir>,
    _profile: tempfile::TempDir,
    step: usize,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    pub async fn start() -> Browser {
        for (what, path) in [("Chromium", CHROMIUM), ("ChromeDriver", CHROMEDRIVER)] {
            assert!(
                Path::new(path).exists(),
                "{what} is not installed at {path}: the dashboard tests need Debian's `chromium` and \
                 `chromium-driver` packages (./test.sh installs them with apt-get)"
            );
        }
        // One rustls provider for the WebDriver client (several are compiled in).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().unwrap();
        let shots_dir = tempfile::Builder::new()
            .prefix("freeway-browser-")
            .tempdir()
            .unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1200,860",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let mut client = None;
        for _ in 0..100 {
            match ClientBuilder::rustls()
                .expect("a WebDriver client")
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => {
                    client = Some(c);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let c = client.expect("chromedriver and Chromium start a session");
        Browser {
            c,
            driver,
            shots: shots_dir.path().to_path_buf(),
            shots_dir: Some(shots_dir),
            _profile: profile,
            step: 0,
        }
    }

    /// A screenshot of the page as it is, numbered; also under `name` in
    /// `$FREEWAY_SCREENSHOTS` when that is set.
    pub async fn shot(&mut self, name: &str, readme: bool) {
        self.step += 1;
        if readme {
            // The top of the page, nothing focused: what a person sees on arrival.
            let _ = self
                .c
                .execute("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0);", vec![])
                .await;
        }
        let png = self.c.screenshot().await.expect("a screenshot");
        let _ = std::fs::write(
            self.shots.join(format!("{:02}-{name}.png", self.step)),
            &png,
        );
        if readme {
            if let Ok(dir) = std::env::var("FREEWAY_SCREENSHOTS") {
                let _ = std::fs::create_dir_all(&dir);
                let _ = std::fs::write(Path::new(&dir).join(format!("{name}.png")), &png);
            }
        }
    }

    pub async fn wait_css(&self, css: &str) -> fantoccini::elements::Element {
        self.c
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
    }

    /// Click the element `css` finds (it must be there).
    pub async fn click(&self, css: &str) {
        let el = self.c.find(Locator::Css(css)).await;
        el.unwrap_or_else(|e| panic!("no {css}: {e}"))
            .click()
            .await
            .unwrap();
    }

    /// Type `text` into the element `css` finds (it must be there).
    pub async fn type_into(&self, css: &str, text: &str) {
        let el = self.c.find(Locator::Css(css)).await;
        el.unwrap_or_else(|e| panic!("no {css}: {e}"))
            .send_keys(text)
            .await
            .unwrap();
    }

    pub async fn wait_path(&self, path: &str) {
        for _ in 0..200 {
            if let Ok(url) = self.c.current_url().await {
                if url.path() == path {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the browser never reached {path}");
    }

    /// The page's text (empty while a page is loading).
    pub async fn text(&self) -> String {
        match self.c.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Wait until the page's text holds `needle`.
    pub async fn wait_text(&self, needle: &str) {
        for _ in 0..200 {
            if self.text().await.contains(needle) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the page never said {needle:?}: {}", self.text().await);
    }

    pub async fn eval(&self, js: &str) -> Value {
        self.c.execute(js, vec![]).await.expect("script runs")
    }

    /// The test passed: close the session and forget the screenshots.
    pub async fn done(mut self) {
        let _ = self.c.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        drop(self.shots_dir.take());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        if let Some(dir) = self.shots_dir.take() {
            let kept = dir.keep();
            eprintln!("browser screenshots kept in {}", kept.display());
        }
    }
}

/// The setup link in a server's banner.
fn setup_link(lines: &[String]) -> String {
    lines
        .iter()
        .find_map(|l| {
            l.split_once("link): ")
                .map(|(_, url)| url.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no setup link in the banner: {lines:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_sets_up_manages_keys_and_the_chain_in_a_browser() {
    let mock = Mock::start().await;
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(
        cwd.path().join("freeway.toml"),
        format!(
            "[providers.groq]\nbase_url = \"{}\"\n[custom.local]\nbase_url = \"http://127.0.0.1:1/v1\"\nmodels = [{{ id = \"small-local\", rank = 40 }}]\n",
            mock.url("/v1")
        ),
    )
    .unwrap();
    let server = start_server(cwd.path(), &[("FREEWAY_LISTEN", "127.0.0.1:0")]).unwrap();
    let link = setup_link(&server.lines);
    let mut b = Browser::start().await;

    // The printed link: choose a password, land on the Keys page.
    b.c.goto(&link).await.unwrap();
    b.wait_css("input[name=password]").await;
    b.shot("setup", false).await;
    b.type_into("input[name=password]", "a long admin password")
        .await;
    b.type_into("input[name=confirm]", "a long admin password")
        .await;
    b.click("button[type=submit]").await;
    b.wait_path("/admin/keys").await;
    b.wait_text("Start here: add a provider key").await;
    b.shot("keys-empty", false).await;

    // Add a key; it shows masked, never whole, and the router uses it.
    const SECRET: &str = "gsk_browser_added_key_0123456789";
    let select =
        b.c.find(Locator::Css("select[name=provider]"))
            .await
            .unwrap();
    select.select_by_value("groq").await.unwrap();
    b.type_into("#add-key input[name=key]", SECRET).await;
    b.type_into("#add-key input[name=label]", "from the browser")
        .await;
    b.click("#add-key button[type=submit]").await;
    b.wait_text("gsk_…6789").await;
    assert!(
        !b.c.source().await.unwrap().contains(SECRET),
        "the page shows the whole key"
    );
    let client_key = client_key_in(&server.lines).unwrap();
    let chat = reqwest::Client::new()
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(&client_key)
        .json(&ask("groq/openai/gpt-oss-120b"))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    assert_eq!(
        mock.chat_calls().last().unwrap().bearer().as_deref(),
        Some(SECRET)
    );

    // Disable it.
    b.c.find(Locator::XPath("//button[normalize-space()='Disable']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_css("span.pill.off").await;
    b.wait_text("Enable").await;

    // Create a client key: shown once, usable; then revoke it.
    b.type_into("#client-keys input[name=name]", "ci laptop")
        .await;
    b.click("#new-client-key button[type=submit]").await;
    let shown = b.wait_css("#new-key:not([hidden]) #new-key-value").await;
    let new_key = shown.text().await.unwrap();
    assert!(
        new_key.starts_with("fw-") && new_key.len() == 46,
        "{new_key}"
    );
    b.shot("client-key-created", false).await;
    let models = |k: String| {
        let url = server.url("/v1/models");
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(k)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(models(new_key.clone()).await, 200);
    b.c.goto(&server.url("/admin/keys")).await.unwrap();
    b.wait_text("ci laptop").await;
    b.shot("keys", true).await;

    // Give it limits in the browser (SPEC 3.8): a day's requests and a weight.
    let row = "//tr[td[normalize-space()='ci laptop']]";
    let edit = format!("{row}//summary[normalize-space()='Edit limits']");
    b.c.find(Locator::XPath(&edit))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    for (field, value) in [("rpd", "25"), ("weight", "3")] {
        let input = format!("{row}//form[@data-kind='limits']//input[@name='{field}']");
        let el = b.c.find(Locator::XPath(&input)).await.unwrap();
        el.clear().await.unwrap();
        el.send_keys(value).await.unwrap();
    }
    b.shot("client-key-limits-form", false).await;
    let save = format!("{row}//form[@data-kind='limits']//button[@type='submit']");
    b.c.find(Locator::XPath(&save))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_text("rpd 25 · weight 3").await;
    b.shot("client-key-limits", false).await;
    let quota: Value = reqwest::Client::new()
        .get(server.url("/v1/quota"))
        .bearer_auth(&new_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(quota["client"]["name"], "ci laptop", "{quota}");
    assert_eq!(quota["client"]["limits"][0]["limit"], 25, "{quota}");
    assert_eq!(quota["client"]["weight"], 3, "{quota}");
    let revoke = Locator::XPath(
        "//tr[td[normalize-space()='ci laptop']]//button[normalize-space()='Revoke']",
    );
    b.c.find(revoke).await.unwrap().click().await.unwrap();
    // The confirm dialog opens from the click's handler: on a busy machine, a moment later.
    let started = std::time::Instant::now();
    while let Err(e) = b.c.accept_alert().await {
        assert!(started.elapsed() < WAIT, "no confirm dialog: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = std::time::Instant::now();
    while b.text().await.contains("ci laptop") && started.elapsed() < WAIT {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(models(new_key).await, 401, "a revoked key is refused");

    // The chain: move the first model down, switch one off.
    b.c.goto(&server.url("/admin/chain")).await.unwrap();
    let first_row = b.wait_css("tr[data-model]").await;
    let first = first_row.attr("data-model").await.unwrap().unwrap();
    let down = format!("tr[data-model='{first}'] button[data-dir=down]");
    b.click(&down).await;
    // The page reloads its table after the move: read it in one script, never through an
    // element found before the reload (it goes stale).
    for _ in 0..100 {
        let js =
            "const r = document.querySelector('tr[data-model]'); return r ? r.dataset.model : null";
        let now_first = b.c.execute(js, vec![]).await.ok();
        if now_first
            .as_ref()
            .and_then(Value::as_str)
            .is_some_and(|m| m != first)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let order: Vec<String> = b
        .eval("return Array.from(document.querySelectorAll('tr[data-model]')).map(r => r.dataset.model)")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(order[1], first, "moved one down: {order:?}");
    let switch = "tr[data-model='local/small-local'] button[data-act=switch]";
    b.click(switch).await;
    for _ in 0..100 {
        let pressed = b.c.find(Locator::Css(switch)).await.ok();
        if let Some(el) = pressed {
            if el.attr("aria-pressed").await.ok().flatten().as_deref() == Some("false") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let el = b.c.find(Locator::Css(switch)).await.unwrap();
    assert_eq!(
        el.attr("aria-pressed").await.unwrap().as_deref(),
        Some("false")
    );
    b.shot("chain", true).await;

    // Usable at a phone's width: nothing wider than the screen.
    b.c.set_window_size(375, 800).await.unwrap();
    for page in ["/admin/keys", "/admin/chain"] {
        b.c.goto(&server.url(page)).await.unwrap();
        b.wait_css("main").await;
        let overflow = b
            .eval("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
            .await;
        assert!(
            overflow.as_i64().unwrap_or(1) <= 0,
            "{page} is wider than 375 px by {overflow}"
        );
        b.shot(&format!("narrow{}", page.replace('/', "-")), false)
            .await;
    }
    b.c.set_window_size(1200, 860).await.unwrap();

    // Log out: the pages send you to the login again.
    b.c.goto(&server.url("/admin/keys")).await.unwrap();
    b.click("button[data-act=logout]").await;
    b.wait_path("/admin/login").await;
    b.c.goto(&server.url("/admin/chain")).await.unwrap();
    b.wait_path("/admin/login").await;

    // Log in again with the keyboard alone.
    let field = b.wait_css("input[name=password]").await;
    field
        .send_keys("a long admin password\u{E007}")
        .await
        .unwrap();
    b.wait_path("/admin/keys").await;
    b.done().await;
    assert!(server.term());
}

#[tokio::test(flavor = "multi_thread")]
async fn analytics_shows_what_happened_and_the_playground_streams() {
    let a = Mock::start().await;
    let b = Mock::start().await;
    b.on(|r, _| {
        if r.body["stream"] == json!(true) {
            let m = r.model();
            Reply::Stream(vec![
                Piece::Raw(chunk(&m, "Hello")),
                Piece::Sleep(Duration::from_millis(80)),
                Piece::Raw(chunk(&m, " from")),
                Piece::Sleep(Duration::from_millis(80)),
                Piece::Raw(chunk(&m, " the playground")),
                Piece::Raw(finish_chunk(&m)),
                Piece::Raw("data: [DONE]\n\n".into()),
            ])
        } else {
            Reply::Json {
                status: 200,
                body: completion(&r.model(), "ok"),
                headers: vec![],
            }
        }
    });
    let t = TestApp::spawn(&format!(
        "[routing]\ncooldown_on_5xx = \"1ms\"\n\
         [custom.alpha]\nbase_url = \"{}\"\nmodels = [{{ id = \"alpha-large\", rank = 1 }}]\n\
         [custom.beta]\nbase_url = \"{}\"\nmodels = [{{ id = \"beta-small\", rank = 2 }}]\n",
        a.url("/v1"),
        b.url("/v1")
    ))
    .await;
    // What happened: answers from both providers, a failover, a request nobody could serve.
    for _ in 0..4 {
        assert_eq!(t.chat(ask("alpha/alpha-large")).await.status(), 200);
    }
    for _ in 0..2 {
        assert_eq!(t.chat(ask("beta/beta-small")).await.status(), 200);
    }
    a.always(Reply::status(503, "overloaded"));
    assert_eq!(t.chat(ask("auto")).await.status(), 200);
    assert_eq!(t.chat(ask("alpha/alpha-large")).await.status(), 502);
    assert!(eventually(|| t.app.store.count_requests().unwrap() == 8).await);

    let token = t.app.admin.setup_token().unwrap().unwrap();
    let mut br = Browser::start().await;
    br.c.goto(&t.url(&format!("/admin/setup?token={token}")))
        .await
        .unwrap();
    br.wait_css("input[name=password]").await;
    br.type_into("input[name=password]", "a long admin password")
        .await;
    br.type_into("input[name=confirm]", "a long admin password")
        .await;
    br.click("button[type=submit]").await;
    br.wait_path("/admin/keys").await;

    br.c.goto(&t.url("/admin/analytics")).await.unwrap();
    let totals = br.wait_css("#totals").await.text().await.unwrap();
    assert!(
        totals.contains("REQUESTS\n8") || totals.contains("Requests\n8"),
        "{totals}"
    );
    assert!(totals.contains("1 failed"), "{totals}");
    assert!(totals.contains("87.5 %"), "{totals}");
    let page = br.text().await;
    assert!(
        page.contains("alpha/alpha-large") && page.contains("beta/beta-small"),
        "{page}"
    );
    // The failover's trail opens.
    let trail = br.c.find(Locator::XPath("//tr[td[contains(., 'beta/beta-small')] and td//summary[contains(., '2 attempt')]]//summary")).await.unwrap();
    trail.click().await.unwrap();
    br.wait_text("server_error").await;
    br.shot("analytics", true).await;
    for w in ["7d", "30d"] {
        br.c.goto(&t.url(&format!("/admin/analytics?window={w}")))
            .await
            .unwrap();
        let totals = br.wait_css("#totals").await.text().await.unwrap();
        assert!(totals.contains("8"), "{w}: {totals}");
    }

    // The Playground streams an answer and says who served it.
    br.c.goto(&t.url("/admin/playground")).await.unwrap();
    br.wait_css("#playground select[name=model]")
        .await
        .select_by_value("beta-small")
        .await
        .unwrap();
    br.type_into("#playground textarea[name=system]", "Be brief.")
        .await;
    br.type_into("#playground textarea[name=message]", "Say hello")
        .await;
    br.click("#playground button[type=submit]").await;
    br.wait_text("Hello from the playground").await;
    br.wait_text("Served by beta/beta-small").await;
    let meta =
        br.c.find(Locator::Css("#meta"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    assert!(
        meta.contains("first token") && meta.contains("total"),
        "{meta}"
    );
    let sent = b.chat_calls().last().unwrap().body.clone();
    assert_eq!(sent["messages"][0]["content"], "Be brief.");
    assert_eq!(sent["stream"], true);
    br.shot("playground", true).await;
    br.done().await;
}
