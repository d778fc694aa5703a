//! The binary: zero-config start, secrets on disk, the encryption key, and CLI changes that a
//! running server picks up.

use crate::harness::*;
use crate::process::*;
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// Keys of every shape: a vendor's prefix and mixed case, only letters (a self-hosted
/// endpoint's password), only digits.
#[tokio::test(flavor = "multi_thread")]
async fn provider_keys_never_reach_disk_logs_or_errors_in_plaintext() {
    for planted in [
        "gsk_PLANTEDsecret0123456789abcdefXYZ",
        "plantedsecretonlylettersabcdefghij",
        "40817263512398457601928374650192",
    ] {
        keys_never_leak(planted).await;
    }
}

async fn keys_never_leak(planted: &'static str) {
    let mock = Mock::start().await;
    // The upstream echoes the key back in its error messages, as some do: in a 400 (relayed to
    // the client), in an error event after content, in a 403 (a day's cooldown, persisted).
    mock.on(|r, i| {
        let key = r.bearer().unwrap_or_default();
        let m = r.model();
        match i % 3 {
            0 => Reply::status(400, &format!("bad request for key {key}")),
            1 => Reply::Stream(vec![
                Piece::Raw(chunk(&m, "partial")),
                Piece::Raw(format!(
                    "data: {}\n\n",
                    json!({"error": {"message": format!("key {key} ran out mid-stream")}})
                )),
            ]),
            _ => Reply::status(403, &format!("key {key} may not use this model")),
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
        &format!("{planted}\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains(planted));

    let env = [("FREEWAY_LISTEN", "127.0.0.1:0"), ("FREEWAY_LOG", "trace")];
    let server = start_server(cwd.path(), &env).unwrap();
    let client = reqwest::Client::new();
    let mut bodies = String::new();
    let mut statuses = Vec::new();
    for i in 0..3 {
        let resp = client
            .post(server.url("/v1/chat/completions"))
            .bearer_auth("fw-planted-test")
            .json(&json!({"model": "groq/openai/gpt-oss-120b", "stream": i == 1, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        bodies.push_str(&resp.text().await.unwrap());
        statuses.push(status.as_u16());
    }
    let paths: Vec<String> = mock.calls().iter().map(|c| c.path.clone()).collect();
    assert_eq!(
        mock.chat_calls().len(),
        3,
        "{planted}: every request reached the upstream: {statuses:?} {paths:?}"
    );
    assert!(
        mock.chat_calls()
            .iter()
            .all(|c| c.bearer().as_deref() == Some(planted)),
        "the key was used"
    );
    assert!(bodies.contains("stream_interrupted"), "{bodies}");
    let out = run(cwd.path(), &[], &["keys", "list"], "");
    let listing = text(&out.stdout);
    let stderr_path = server.stderr_path.clone();
    let stdout_lines = format!("{}\n{}", server.lines.join("\n"), server.output());
    assert!(server.term());

    let fragment = &planted[8..28];
    for (what, content) in [
        ("error bodies", bodies.clone()),
        ("keys list", listing),
        ("stdout and logs", stdout_lines),
        ("stderr", std::fs::read_to_string(&stderr_path).unwrap()),
    ] {
        assert!(
            !content.contains(fragment),
            "{what} leaked the key {planted}: {content}"
        );
    }
    for entry in walk(&cwd.path().join("freeway-data")) {
        let bytes = std::fs::read(&entry).unwrap();
        let hay = String::from_utf8_lossy(&bytes);
        assert!(
            !hay.contains(fragment),
            "{} holds the key {planted} in plaintext",
            entry.display()
        );
    }
    assert!(bodies.contains("\"error\""), "{bodies}");
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
    assert_eq!(t.chat(ask("groq/openai/gpt-oss-120b")).await.status(), 503);

    let out = run(
        cwd.path(),
        &env,
        &["keys", "add", "groq"],
        "gsk_added_by_cli_000111222333\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut ok = false;
    for _ in 0..100 {
        if t.chat(ask("groq/openai/gpt-oss-120b")).await.status() == 200 {
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
        if t.chat(ask("groq/openai/gpt-oss-120b")).await.status() == 503 {
            off = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(off, "a disabled key is no longer used");

    let out = run(
        cwd.path(),
        &env,
        &[
            "client-keys",
            "create",
            "laptop",
            "--rpm",
            "1",
            "--models",
            "groq/*",
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
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
    assert!(
        text(&out.stdout).contains("rpm 1 · models groq/*"),
        "{}",
        text(&out.stdout)
    );
    // Limits change from the CLI and reach the running server.
    let out = run(
        cwd.path(),
        &env,
        &[
            "client-keys",
            "set",
            "laptop",
            "--rpm",
            "none",
            "--rpd",
            "7",
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("laptop: rpd 7 · models groq/*"),
        "{}",
        text(&out.stdout)
    );
    let out = run(
        cwd.path(),
        &env,
        &["client-keys", "set", "laptop", "--models", "no-such-model"],
        "",
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no-such-model"),
        "{}",
        text(&out.stderr)
    );
    let out = run(cwd.path(), &env, &["status"], "");
    let status = text(&out.stdout);
    let line = status
        .lines()
        .find(|l| l.contains("laptop"))
        .unwrap_or_default();
    assert!(
        line.contains("rpd 7") && line.contains("today 0 requests"),
        "{status}"
    );
    let mut seen = false;
    for _ in 0..100 {
        let q: serde_json::Value = t.get_json_as("/v1/quota", &laptop).await;
        if q["client"]["limits"][0]["limit"] == 7 {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "the server took the CLI's change");
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
        } else if r.model() == "qwen/qwen3.6-27b" {
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
    run_ok(&["chain", "move", "groq/openai/gpt-oss-20b", "1"], "");
    run_ok(&["chain", "disable", "groq/openai/gpt-oss-120b"], "");
    let chain = run_ok(&["chain", "show"], "");
    let first_model = chain.lines().nth(1).unwrap();
    assert!(
        first_model.contains("groq/openai/gpt-oss-20b") && first_model.contains("yes"),
        "{first_model}"
    );
    let llama = chain
        .lines()
        .find(|l| l.contains("groq/openai/gpt-oss-120b"))
        .unwrap();
    assert!(llama.contains(" no "), "{llama}");

    let models = run_ok(&["models"], "");
    assert!(
        models.contains("groq/qwen/qwen3.6-27b") && models.contains("qwen3.6-27b"),
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
        "groq/openai/gpt-oss-20b",
        "moved to the front"
    );
    assert_eq!(
        t.chat(ask("groq/openai/gpt-oss-120b")).await.status(),
        404,
        "disabled"
    );
    assert_eq!(t.chat(ask("groq/qwen/qwen3.6-27b")).await.status(), 429);
    t.stop().await;

    let status = run_ok(&["status"], "");
    assert!(
        status.contains("groq (Groq): 1 key(s), 1 usable"),
        "{status}"
    );
    let qwen = status
        .lines()
        .find(|l| l.contains("qwen/qwen3.6-27b"))
        .unwrap();
    assert!(qwen.contains("cooling down"), "{qwen}");
    let instant = status
        .lines()
        .find(|l| l.contains("openai/gpt-oss-20b"))
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

/// With the open-file limit at 1,024 and 1,100 connections that never finish their request
/// head, a new client is still served: the server keeps accepting and sheds the stalest.
#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_cannot_lock_others_out_under_a_small_file_limit() {
    use tokio::io::AsyncWriteExt;
    // This process needs room for its own 1,100 sockets.
    let _ = rlimit::increase_nofile_limit(8192);
    let cwd = tempfile::tempdir().unwrap();
    let env = [("FREEWAY_LISTEN", "127.0.0.1:0")];
    let server = start_server_in(&["prlimit", "--nofile=1024:1024"], cwd.path(), &env).unwrap();
    let mut slow = Vec::new();
    for _ in 0..1_100 {
        if let Ok(Ok(mut c)) = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(&server.addr),
        )
        .await
        {
            let _ = c.write_all(b"GET /livez HTTP/1.1\r\nHos").await;
            slow.push(c);
        }
    }
    assert!(
        slow.len() > 1_024,
        "only {} slow connections opened",
        slow.len()
    );
    // One byte a second each, as a slowloris does.
    let drip = tokio::spawn(async move {
        loop {
            for c in slow.iter_mut() {
                let _ = c.write_all(b"t").await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let served = tokio::time::timeout(
        Duration::from_secs(30),
        reqwest::Client::new().get(server.url("/livez")).send(),
    )
    .await;
    drip.abort();
    let status = served
        .expect("a fresh client waited more than 30 s")
        .expect("a fresh client was refused")
        .status();
    assert_eq!(status, 200);
    assert!(server.term());
}

/// Usage reaches the database every two seconds; a kill -9 right after a daily cap filled must
/// not hand out that day again.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_does_not_hand_out_quota() {
    let mock = Mock::start().await;
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(
        cwd.path().join("freeway.toml"),
        format!(
            "[auth]\napi_keys = [\"fw-crash-test\"]\n[custom.mock]\nbase_url = \"{}\"\nkeys = [\"sk-mock\"]\nmodels = [{{ id = \"mock-model\", rpd = 10 }}]\n",
            mock.url("/v1")
        ),
    )
    .unwrap();
    let env = [("FREEWAY_LISTEN", "127.0.0.1:0")];
    let send = |url: String| chat_status(url, "fw-crash-test");
    let server = start_server(cwd.path(), &env).unwrap();
    for _ in 0..10 {
        assert_eq!(send(server.url("/v1/chat/completions")).await, 200);
    }
    server.kill9();
    let server = start_server(cwd.path(), &env).unwrap();
    assert_eq!(
        send(server.url("/v1/chat/completions")).await,
        429,
        "the day's 10 requests were forgotten"
    );
    assert_eq!(mock.chat_calls().len(), 10);
    assert!(server.term());
}

/// The data directory and everything in it are the user's alone, whatever the umask.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn data_files_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let cwd = tempfile::tempdir().unwrap();
    let env = [("FREEWAY_LISTEN", "127.0.0.1:0")];
    let umask_000 = ["sh", "-c", "umask 000; exec \"$0\" \"$@\""];
    let server = start_server_in(&umask_000, cwd.path(), &env).unwrap();
    let data = cwd.path().join("freeway-data");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "the data directory");
    let files = walk(&data);
    for f in [
        "freeway.db",
        "freeway.db-wal",
        "freeway.db-shm",
        "encryption.key",
        "ledger.journal",
    ] {
        assert!(files.contains(&data.join(f)), "{f} missing: {files:?}");
    }
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    let log = server.stderr_path.clone();
    assert!(
        server.term(),
        "{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Logs fit where they go: no colour codes into a pipe, JSON lines when asked for.
#[tokio::test(flavor = "multi_thread")]
async fn logs_are_plain_in_a_pipe_and_json_when_asked() {
    for json_lines in [false, true] {
        let cwd = tempfile::tempdir().unwrap();
        let config = if json_lines {
            "log_format = \"json\"\n"
        } else {
            ""
        };
        std::fs::write(cwd.path().join("freeway.toml"), config).unwrap();
        let env = [("FREEWAY_LISTEN", "127.0.0.1:0"), ("FREEWAY_LOG", "debug")];
        let server = start_server(cwd.path(), &env).unwrap();
        let resp = reqwest::Client::new()
            .get(server.url("/livez"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let output = server.output.clone();
        assert!(server.term());
        let lines = output.lock().unwrap().clone();
        let logged: Vec<&String> = lines.iter().filter(|l| l.contains("request")).collect();
        assert!(!logged.is_empty(), "the request was logged: {lines:?}");
        for line in &lines {
            assert!(
                !line.contains('\u{1b}'),
                "a colour code in a pipe: {line:?}"
            );
            if json_lines {
                let v: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
                assert!(
                    v["level"].is_string() && v["timestamp"].is_string(),
                    "{line}"
                );
            }
        }
    }
}

/// `freeway models | head` and the like: a reader that goes away ends the command quietly.
#[test]
fn a_closed_stdout_ends_the_cli_quietly() {
    let cwd = tempfile::tempdir().unwrap();
    // The reader closes its end at once, before Freeway writes anything.
    let out = Command::new("bash")
        .args([
            "-c",
            "set -o pipefail; \"$0\" models --all | { exec 0<&-; sleep 0.5; }",
            BIN,
        ])
        .current_dir(cwd.path())
        .env("FREEWAY_DATA_DIR", cwd.path().join("data"))
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
}

/// `freeway healthcheck` asks a running server's `/readyz`: exit 0 when it is ready, not 0
/// when it is not or nothing answers (the container health check of an image with no shell).
#[test]
fn healthcheck_asks_the_running_server() {
    let cwd = tempfile::tempdir().unwrap();
    let server = start_server(cwd.path(), &[("FREEWAY_LISTEN", "127.0.0.1:0")]).unwrap();
    // No provider key yet: not ready.
    let out = run(
        cwd.path(),
        &[],
        &["healthcheck", "--addr", &server.addr],
        "",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("503"));
    server.kill9();
    std::fs::write(
        cwd.path().join("freeway.toml"),
        "[custom.mock]\nbase_url = \"http://127.0.0.1:9/v1\"\nkeys = [\"sk-x\"]\nmodels = [{ id = \"m\" }]\n",
    )
    .unwrap();
    let server = start_server(cwd.path(), &[("FREEWAY_LISTEN", "127.0.0.1:0")]).unwrap();
    let out = run(
        cwd.path(),
        &[],
        &["healthcheck", "--addr", &server.addr],
        "",
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("200") && said.contains("ready"), "{said}");
    let addr = server.addr.clone();
    server.kill9();
    let out = run(cwd.path(), &[], &["healthcheck", "--addr", &addr], "");
    assert!(!out.status.success());
}
