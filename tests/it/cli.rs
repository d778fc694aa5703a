//! The binary: zero-config start, secrets on disk, the encryption key, and CLI changes that a
//! running server picks up.

use crate::harness::*;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_freeway");

fn command(cwd: &Path, env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(cwd);
    for (k, _) in std::env::vars() {
        if k.starts_with("FREEWAY_") {
            c.env_remove(k);
        }
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// Run a CLI command, feeding `stdin`.
fn run(cwd: &Path, env: &[(&str, &str)], args: &[&str], stdin: &str) -> Output {
    let mut child = command(cwd, env)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A server process; its stdout lines are collected.
struct Server {
    child: Child,
    addr: String,
    lines: Vec<String>,
    stderr_path: PathBuf,
}

fn start_server(cwd: &Path, env: &[(&str, &str)]) -> Result<Server, String> {
    let stderr_path = cwd.join(format!("server-{}.log", rand_suffix()));
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let mut child = command(cwd, env)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut lines = Vec::new();
    let mut addr = None;
    // Read the banner, which a blank line ends.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            let status = child.wait().unwrap();
            return Err(format!(
                "server exited ({status}) before listening: {}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            ));
        }
        let line = line.trim_end().to_string();
        if line.is_empty() {
            break;
        }
        if let Some(a) = line.strip_prefix("Freeway listening on http://") {
            addr = Some(a.to_string());
        }
        lines.push(line);
    }
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in reader.lines() {});
    let Some(addr) = addr else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("no address in the banner: {lines:?}"));
    };
    Ok(Server {
        child,
        addr,
        lines,
        stderr_path,
    })
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// SIGTERM, then wait; returns whether it exited cleanly.
    fn term(mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        false
    }
}

fn rand_suffix() -> String {
    freeway::crypto::new_id()[..8].to_string()
}

fn client_key_in(lines: &[String]) -> Option<String> {
    lines.iter().find_map(|l| {
        let start = l.find("fw-")?;
        let key: String = l[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        (key.len() >= 46 && key[3..].chars().all(|c| c.is_ascii_alphanumeric())).then_some(key)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn zero_config_start_creates_everything_once() {
    let cwd = tempfile::tempdir().unwrap();
    // The default address is 127.0.0.1:3001; use it when it is free on this machine.
    let default_free = std::net::TcpListener::bind("127.0.0.1:3001").is_ok();
    let env: Vec<(&str, &str)> = if default_free {
        vec![]
    } else {
        vec![("FREEWAY_LISTEN", "127.0.0.1:0")]
    };
    let server = start_server(cwd.path(), &env).unwrap();
    if default_free {
        assert_eq!(server.addr, "127.0.0.1:3001");
    }
    let key = client_key_in(&server.lines).expect("first start prints a client key");
    assert_eq!(key.len(), 46, "fw- and 43 base62 characters");

    let data = cwd.path().join("freeway-data");
    assert!(data.join("freeway.db").exists());
    let key_file = data.join("encryption.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Bytes 18 and 19 of an SQLite file are 2 in WAL mode.
    let header = std::fs::read(data.join("freeway.db")).unwrap();
    assert_eq!((header[18], header[19]), (2, 2), "WAL mode");

    let client = reqwest::Client::new();
    let resp = client
        .get(server.url("/v1/models"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the printed key works");
    assert!(server.term(), "SIGTERM exits cleanly");

    let env = [("FREEWAY_LISTEN", "127.0.0.1:0")];
    let again = start_server(cwd.path(), &env).unwrap();
    assert!(
        client_key_in(&again.lines).is_none(),
        "no new key: {:?}",
        again.lines
    );
    let resp = client
        .get(again.url("/v1/models"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the first key still works");
    assert!(again.term());
}

#[test]
fn a_wrong_or_malformed_encryption_key_refuses_to_start() {
    let cwd = tempfile::tempdir().unwrap();
    let key_a = "a".repeat(64);
    let key_b = "b".repeat(64);
    let out = run(
        cwd.path(),
        &[("FREEWAY_ENCRYPTION_KEY", &key_a)],
        &["keys", "add", "groq"],
        "gsk_first_key_1234567890\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = run(
        cwd.path(),
        &[("FREEWAY_ENCRYPTION_KEY", &key_b)],
        &["keys", "list"],
        "",
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("is not the one"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).contains("gsk_"), "no garbage keys");

    let err = start_server(
        cwd.path(),
        &[
            ("FREEWAY_ENCRYPTION_KEY", &key_b),
            ("FREEWAY_LISTEN", "127.0.0.1:0"),
        ],
    )
    .err()
    .expect("the server must not start");
    assert!(err.contains("FREEWAY_ENCRYPTION_KEY"), "{err}");

    let out = run(
        cwd.path(),
        &[("FREEWAY_ENCRYPTION_KEY", "not-hex")],
        &["keys", "list"],
        "",
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("64 hex"),
        "{}",
        text(&out.stderr)
    );

    // No key in the environment and no key file: the generated one would be wrong too.
    let out = run(cwd.path(), &[], &["keys", "list"], "");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("missing"),
        "{}",
        text(&out.stderr)
    );

    let out = run(
        cwd.path(),
        &[("FREEWAY_ENCRYPTION_KEY", &key_a)],
        &["keys", "list"],
        "",
    );
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("gsk_…7890"),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_keys_never_reach_disk_logs_or_errors_in_plaintext() {
    const PLANTED: &str = "gsk_PLANTEDsecret0123456789abcdefXYZ";
    let mock = Mock::start().await;
    // The upstream echoes the key back in its error messages, as some do.
    mock.on(|r, i| {
        let key = r.bearer().unwrap_or_default();
        match i % 2 {
            0 => Reply::status(401, &format!("Incorrect API key provided: {key}")),
            _ => Reply::status(400, &format!("bad request for key {key}")),
        }
    });
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(
        cwd.path().join("freeway.toml"),
        format!(
            "[auth]\napi_keys = [\"fw-planted-test\"]\n[providers.groq]\nbase_url = \"{}\"\n",
            mock.url("/v1")
        ),
    )
    .unwrap();
    let out = run(
        cwd.path(),
        &[],
        &["keys", "add", "groq", "--label", "planted"],
        &format!("{PLANTED}\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains(PLANTED));

    let env = [("FREEWAY_LISTEN", "127.0.0.1:0"), ("FREEWAY_LOG", "trace")];
    let server = start_server(cwd.path(), &env).unwrap();
    let client = reqwest::Client::new();
    let mut bodies = String::new();
    for i in 0..4 {
        let resp = client
            .post(server.url("/v1/chat/completions"))
            .bearer_auth("fw-planted-test")
            .json(&json!({"model": "groq/llama-3.3-70b-versatile", "stream": i % 2 == 1, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        bodies.push_str(&resp.text().await.unwrap());
    }
    assert!(
        mock.chat_calls()
            .iter()
            .any(|c| c.bearer().as_deref() == Some(PLANTED)),
        "the key was used"
    );
    let out = run(cwd.path(), &[], &["keys", "list"], "");
    let listing = text(&out.stdout);
    let stderr_path = server.stderr_path.clone();
    let stdout_lines = server.lines.join("\n");
    assert!(server.term());

    let fragment = &PLANTED[8..28];
    for (what, content) in [
        ("error bodies", bodies.clone()),
        ("keys list", listing),
        ("stdout", stdout_lines),
        ("log", std::fs::read_to_string(&stderr_path).unwrap()),
    ] {
        assert!(
            !content.contains(fragment),
            "{what} leaked the key: {content}"
        );
    }
    for entry in walk(&cwd.path().join("freeway-data")) {
        let bytes = std::fs::read(&entry).unwrap();
        let hay = String::from_utf8_lossy(&bytes);
        assert!(
            !hay.contains(fragment),
            "{} holds the key in plaintext",
            entry.display()
        );
    }
    assert!(bodies.contains("\"error\""), "{bodies}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_changes_reach_a_running_server() {
    let mock = Mock::start().await;
    let t = TestApp::spawn(&format!(
        "[providers.groq]\nbase_url = \"{}\"\n",
        mock.url("/v1")
    ))
    .await;
    let env_dir = t.dir.display().to_string();
    let env = [("FREEWAY_DATA_DIR", env_dir.as_str())];
    let cwd = tempfile::tempdir().unwrap();
    assert_eq!(
        t.chat(ask("groq/llama-3.3-70b-versatile")).await.status(),
        503
    );

    let out = run(
        cwd.path(),
        &env,
        &["keys", "add", "groq"],
        "gsk_added_by_cli_000111222333\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut ok = false;
    for _ in 0..100 {
        if t.chat(ask("groq/llama-3.3-70b-versatile")).await.status() == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the server picked up the new key");
    assert_eq!(
        mock.chat_calls().last().unwrap().bearer().as_deref(),
        Some("gsk_added_by_cli_000111222333")
    );

    let id = t.app.store.keys().unwrap()[0].id.clone();
    let out = run(cwd.path(), &env, &["keys", "disable", &id[..8]], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut off = false;
    for _ in 0..100 {
        if t.chat(ask("groq/llama-3.3-70b-versatile")).await.status() == 503 {
            off = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(off, "a disabled key is no longer used");

    let out = run(cwd.path(), &env, &["client-keys", "create", "laptop"], "");
    assert!(out.status.success());
    let laptop = text(&out.stdout).trim().to_string();
    assert!(laptop.starts_with("fw-") && laptop.len() == 46);
    let models = |key: String| {
        let c = t.client.clone();
        let url = t.url("/v1/models");
        async move {
            c.get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let mut accepted = false;
    for _ in 0..100 {
        if models(laptop.clone()).await == 200 {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(accepted);
    let out = run(cwd.path(), &env, &["client-keys", "list"], "");
    assert!(text(&out.stdout).contains("laptop") && !text(&out.stdout).contains(&laptop));
    let out = run(cwd.path(), &env, &["client-keys", "revoke", "laptop"], "");
    assert!(out.status.success());
    let mut revoked = false;
    for _ in 0..100 {
        if models(laptop.clone()).await == 401 {
            revoked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(revoked);
    let stored = t.app.store.client_keys().unwrap();
    let hash = freeway::crypto::hash_client_key(&laptop);
    assert!(stored.iter().any(|r| r.hash == hash), "stored as a hash");
}

#[test]
fn bad_config_files_fail_with_the_key_named() {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(
        cwd.path().join("freeway.toml"),
        "[routing]\nmax_atempts = 3\n",
    )
    .unwrap();
    let out = run(cwd.path(), &[], &["keys", "list"], "");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("max_atempts"),
        "{}",
        text(&out.stderr)
    );
    let other = cwd.path().join("other.toml");
    std::fs::write(&other, "[routing]\nstall_timeout = \"forever\"\n").unwrap();
    let out = run(
        cwd.path(),
        &[],
        &["keys", "list", "--config", other.to_str().unwrap()],
        "",
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("routing.stall_timeout"),
        "{}",
        text(&out.stderr)
    );
    let out = run(
        cwd.path(),
        &[("FREEWAY_CONFIG", other.to_str().unwrap())],
        &["status"],
        "",
    );
    assert!(
        text(&out.stderr).contains("routing.stall_timeout"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn chain_models_status_and_check_commands() {
    let mock = Mock::start().await;
    mock.on(|r, _| {
        if r.path.ends_with("/models") {
            Reply::Json {
                status: 200,
                body: json!({"data": []}),
                headers: vec![],
            }
        } else if r.model() == "qwen/qwen3-32b" {
            Reply::status(429, "slow").with_header("retry-after", "3600")
        } else {
            Reply::ok("ok")
        }
    });
    let cwd = tempfile::tempdir().unwrap();
    let toml = format!("[providers.groq]\nbase_url = \"{}\"\n", mock.url("/v1"));
    std::fs::write(cwd.path().join("freeway.toml"), &toml).unwrap();
    let run_ok = |args: &[&str], stdin: &str| {
        let out = run(cwd.path(), &[], args, stdin);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    run_ok(
        &["keys", "add", "groq", "--label", "main"],
        "gsk_cli_key_0123456789abcd\n",
    );

    let chain = run_ok(&["chain"], "");
    let first_model = chain.lines().nth(1).unwrap();
    assert!(
        first_model.contains("github/openai/gpt-4.1"),
        "rank 2 is first: {first_model}"
    );
    run_ok(&["chain", "move", "groq/llama-3.1-8b-instant", "1"], "");
    run_ok(&["chain", "disable", "groq/llama-3.3-70b-versatile"], "");
    let chain = run_ok(&["chain", "show"], "");
    let first_model = chain.lines().nth(1).unwrap();
    assert!(
        first_model.contains("groq/llama-3.1-8b-instant") && first_model.contains("yes"),
        "{first_model}"
    );
    let llama = chain
        .lines()
        .find(|l| l.contains("groq/llama-3.3-70b-versatile"))
        .unwrap();
    assert!(llama.contains(" no "), "{llama}");

    let models = run_ok(&["models"], "");
    assert!(
        models.contains("groq/qwen/qwen3-32b") && models.contains("qwen3-32b"),
        "{models}"
    );
    assert!(!models.contains("google/"), "no google key: hidden");
    assert!(run_ok(&["models", "--all"], "").contains("google/gemini-2.5-flash"));

    let check = run_ok(&["check"], "");
    assert!(
        check.contains("groq") && check.contains("healthy"),
        "{check}"
    );

    // The persisted chain and a cooldown, seen by a server on the same data directory.
    let data = cwd.path().join("freeway-data");
    let t = TestApp::start(Options::new(toml.clone()).dir(&data))
        .await
        .unwrap();
    let resp = t.chat(ask("auto")).await;
    assert_eq!(
        resp.headers()["x-routed-via"],
        "groq/llama-3.1-8b-instant",
        "moved to the front"
    );
    assert_eq!(
        t.chat(ask("groq/llama-3.3-70b-versatile")).await.status(),
        404,
        "disabled"
    );
    assert_eq!(t.chat(ask("groq/qwen/qwen3-32b")).await.status(), 429);
    t.stop().await;

    let status = run_ok(&["status"], "");
    assert!(
        status.contains("groq (Groq): 1 key(s), 1 usable"),
        "{status}"
    );
    let qwen = status
        .lines()
        .find(|l| l.contains("qwen/qwen3-32b"))
        .unwrap();
    assert!(qwen.contains("cooling down"), "{qwen}");
    let instant = status
        .lines()
        .find(|l| l.contains("llama-3.1-8b-instant"))
        .unwrap();
    assert!(instant.contains("ready"), "{instant}");
    assert!(status.contains("soonest reset"), "{status}");

    let list = run_ok(&["keys", "list"], "");
    assert!(
        list.contains("main") && list.contains("gsk_…abcd") && list.contains("healthy"),
        "{list}"
    );
    let id = list
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    run_ok(&["keys", "rm", &id], "");
    assert!(!run_ok(&["keys", "list"], "").contains("main"));
}

/// A CONNECT proxy on an ephemeral port that records each tunnel's target.
async fn connect_proxy() -> (String, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let Some(target) = head
                    .strip_prefix("CONNECT ")
                    .and_then(|r| r.split(' ').next())
                    .map(str::to_string)
                else {
                    let _ = client.write_all(b"HTTP/1.1 405 Only CONNECT\r\n\r\n").await;
                    return;
                };
                log.lock().unwrap().push(target.clone());
                let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                let _ = client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn upstream_requests_use_the_proxy_the_environment_names() {
    let mock = Mock::start().await;
    let (proxy, tunnels) = connect_proxy().await;
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(
        cwd.path().join("freeway.toml"),
        format!(
            "[auth]\napi_keys = [\"fw-proxy-test\"]\n{}",
            custom(&mock, "")
        ),
    )
    .unwrap();
    let client = reqwest::Client::new();
    let ask_once = |server: &Server| {
        client
            .post(server.url("/v1/chat/completions"))
            .bearer_auth("fw-proxy-test")
            .json(&ask("mock-model"))
            .send()
    };

    // HTTP_PROXY set: the upstream is reached through a CONNECT tunnel.
    let env = [
        ("FREEWAY_LISTEN", "127.0.0.1:0"),
        ("HTTP_PROXY", proxy.as_str()),
        ("NO_PROXY", "example.invalid"),
        ("no_proxy", "example.invalid"),
    ];
    let server = start_server(cwd.path(), &env).unwrap();
    let resp = ask_once(&server).await.unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert!(server.term());
    let seen = tunnels.lock().unwrap().clone();
    assert!(!seen.is_empty(), "no tunnel was opened");
    assert!(seen.iter().all(|t| *t == mock.addr.to_string()), "{seen:?}");
    assert_eq!(mock.chat_calls().len(), 1);

    // NO_PROXY naming the host: straight there.
    let env = [
        ("FREEWAY_LISTEN", "127.0.0.1:0"),
        ("HTTP_PROXY", proxy.as_str()),
        ("NO_PROXY", "127.0.0.1"),
        ("no_proxy", "127.0.0.1"),
    ];
    let server = start_server(cwd.path(), &env).unwrap();
    let resp = ask_once(&server).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(server.term());
    assert_eq!(tunnels.lock().unwrap().len(), seen.len(), "no new tunnel");
    assert_eq!(mock.chat_calls().len(), 2);
}
