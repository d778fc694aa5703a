//! Tested by the clients themselves: the official `anthropic`, `openai`, `google-genai` and
//! `ollama` Python clients, Claude Code, Codex CLI and the Gemini CLI drive the real binary,
//! with a scripted OpenAI-compatible upstream (`tests/clients/mock_upstream.py`) as its only
//! provider.
//!
//! `./test.sh` installs the clients (`tests/clients/setup.sh`: a venv and npm packages under
//! `target/clients`, all pinned); without them these tests fail and say so, they never skip.
//! The agents run offline: in a network namespace with only a loopback interface, started with
//! `unshare -n` (`tests/clients/agents.py` starts the mock and Freeway inside it).
//! Each client script prints one line per check; a failing test shows them all, with
//! Freeway's logs.

use crate::process::*;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CLIENT_KEY: &str = "fw-clients-test";
/// Each client run is killed after this; a run takes seconds.
const RUN_TIMEOUT: Duration = Duration::from_secs(100);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn script(name: &str) -> PathBuf {
    repo().join("tests/clients").join(name)
}

/// An installed client, or a failure that names the installer.
fn installed(path: PathBuf, what: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{what} is not installed ({} is missing): run ./test.sh, which installs the clients with \
         tests/clients/setup.sh (pinned versions, into target/clients)",
        path.display()
    );
    path
}

fn venv_python() -> PathBuf {
    installed(
        repo().join("target/clients/venv/bin/python"),
        "the Python venv with the anthropic, ollama and openai clients",
    )
}

/// The scripted upstream (`mock_upstream.py`), logging every request it gets.
struct MockUpstream {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl MockUpstream {
    fn start(dir: &Path) -> MockUpstream {
        let log = dir.join("upstream.jsonl");
        let mut child = Command::new("python3")
            .arg(script("mock_upstream.py"))
            .arg("0")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs tests/clients/mock_upstream.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening on 127.0.0.1:")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("mock_upstream.py did not say where it listens: {line:?}"));
        MockUpstream { child, port, log }
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Freeway with one provider, the mock upstream, and a fixed client key.
fn freeway_with(dir: &Path, mock: &MockUpstream) -> Server {
    freeway_and(dir, mock, "")
}

/// [`freeway_with`], with `extra` appended to its config.
fn freeway_and(dir: &Path, mock: &MockUpstream, extra: &str) -> Server {
    std::fs::write(
        dir.join("freeway.toml"),
        format!(
            "[auth]\napi_keys = [\"{CLIENT_KEY}\"]\n\n[custom.mock]\nbase_url = \"http://127.0.0.1:{}/v1\"\n\
             keys = [\"sk-mock-upstream\"]\nmodels = [{{ id = \"mock-model\", context = 131072, tools = true, vision = true }}, \
             {{ id = \"mock-embed\", dims = 8, shrinks = true }}]\n{extra}",
            mock.port
        ),
    )
    .unwrap();
    start_server(dir, &[("FREEWAY_LISTEN", "127.0.0.1:0")]).unwrap()
}

/// `sdk_ollama.py` against Freeway's main port and its key-less Ollama listener.
#[test]
fn ollama_client_lists_shows_chats_streams_tools_generates_and_errors() {
    let python = venv_python();
    let dir = tempfile::tempdir().unwrap();
    let mock = MockUpstream::start(dir.path());
    // The Ollama listener on a free loopback port; the banner says which.
    let server = freeway_and(dir.path(), &mock, "\n[ollama]\nlisten = \"127.0.0.1:0\"\n");
    let ollama = server
        .lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("Ollama API:"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the banner names no Ollama listener: {:?}", server.lines))
        .to_string();
    let mut cmd = Command::new(python);
    cmd.arg(script("sdk_ollama.py"))
        .arg("--base-url")
        .arg(format!("http://{}", server.addr))
        .arg("--api-key")
        .arg(CLIENT_KEY)
        .arg("--mock-log")
        .arg(&mock.log)
        .env("FREEWAY_OLLAMA_URL", &ollama)
        .env("PYTHONUNBUFFERED", "1");
    let (ok, output) = run_to_end(cmd, dir.path(), "sdk_ollama.py");
    assert!(
        ok,
        "sdk_ollama.py failed:\n{output}\n--- Freeway's log:\n{}\n{}",
        server.output(),
        std::fs::read_to_string(&server.stderr_path).unwrap_or_default()
    );
    assert!(output.contains("ok   keyless_listener"), "{output}");
    assert!(output.contains("ok   tools_round_trip"), "{output}");
}

/// Run a command to its end (or RUN_TIMEOUT), stdout and stderr together; (success, output).
fn run_to_end(mut cmd: Command, dir: &Path, name: &str) -> (bool, String) {
    let out_path = dir.join(format!("{name}.out"));
    let out = File::create(&out_path).unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut output = std::fs::read_to_string(&out_path).unwrap_or_default();
    match status {
        None => output.push_str(&format!("\n(killed after {RUN_TIMEOUT:?})")),
        Some(s) if !s.success() => output.push_str(&format!("\n({s})")),
        _ => {}
    }
    (status.is_some_and(|s| s.success()), output)
}

/// An SDK script against Freeway and the mock upstream; fails with its output and Freeway's.
fn run_sdk_script(name: &str) -> String {
    let python = venv_python();
    let dir = tempfile::tempdir().unwrap();
    let mock = MockUpstream::start(dir.path());
    let server = freeway_with(dir.path(), &mock);
    let mut cmd = Command::new(python);
    cmd.arg(script(name))
        .arg("--base-url")
        .arg(format!("http://{}", server.addr))
        .arg("--api-key")
        .arg(CLIENT_KEY)
        .arg("--mock-log")
        .arg(&mock.log)
        .env("PYTHONUNBUFFERED", "1");
    let (ok, output) = run_to_end(cmd, dir.path(), name);
    assert!(
        ok,
        "{name} failed:\n{output}\n--- Freeway's log:\n{}\n{}",
        server.output(),
        std::fs::read_to_string(&server.stderr_path).unwrap_or_default()
    );
    output
}

#[test]
fn anthropic_sdk_messages_streaming_tools_count_tokens_and_errors() {
    let out = run_sdk_script("sdk_anthropic.py");
    assert!(out.contains("ok   tool_use_round_trip"), "{out}");
}

#[test]
fn openai_sdk_responses_function_calls_legacy_completions_and_chat() {
    let out = run_sdk_script("sdk_openai.py");
    assert!(
        out.contains("ok   responses_function_call_round_trip")
            && out.contains("ok   embeddings_default_base64_decoded_by_the_sdk"),
        "{out}"
    );
}

/// `agents.py` for one agent, in a loopback-only network namespace.
fn run_agent(only: &str) {
    let npm = repo().join("target/clients/npm");
    installed(
        npm.join("node_modules/.bin").join(only),
        &format!("the {only} npm package"),
    );
    for tool in ["unshare", "python3"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            "`{tool}` is missing: ./test.sh installs it"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    // agents.py re-runs itself under `unshare -n` and brings up `lo`.
    let mut cmd = Command::new("python3");
    cmd.arg(script("agents.py"))
        .arg("--freeway")
        .arg(BIN)
        .arg("--npm")
        .arg(&npm)
        .arg("--only")
        .arg(only)
        .env("PYTHONUNBUFFERED", "1");
    let (ok, output) = run_to_end(cmd, dir.path(), only);
    assert!(ok, "agents.py --only {only} failed:\n{output}");
}

#[test]
fn claude_code_offline_says_hi_and_runs_a_bash_tool_through_messages() {
    run_agent("claude");
}

#[test]
fn codex_cli_offline_says_hi_and_runs_exec_command_through_responses() {
    run_agent("codex");
}

#[test]
fn gemini_cli_offline_says_hi_and_runs_a_shell_tool_through_gemini_api() {
    run_agent("gemini");
}

#[test]
fn google_genai_sdk_generate_stream_function_calls_json_count_tokens_and_errors() {
    let out = run_sdk_script("sdk_google.py");
    assert!(out.contains("ok   function_call_round_trip"), "{out}");
}
