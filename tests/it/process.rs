//! Freeway as a process: the binary started in a directory, its banner and logs read, the
//! CLI run; shared by the binary-level tests.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_freeway");

pub fn command(cwd: &Path, env: &[(&str, &str)]) -> Command {
    command_in(&[], cwd, env)
}

/// The binary run through `prefix` (e.g. `prlimit --nofile=...`), if any.
pub fn command_in(prefix: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Command {
    let mut c = match prefix.split_first() {
        None => Command::new(BIN),
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(BIN);
            c
        }
    };
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
pub fn run(cwd: &Path, env: &[(&str, &str)], args: &[&str], stdin: &str) -> Output {
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

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A server process; its stdout lines are collected: the banner, then everything after it
/// (the logs).
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub lines: Vec<String>,
    pub output: Arc<Mutex<Vec<String>>>,
    pub stderr_path: PathBuf,
}

pub fn start_server(cwd: &Path, env: &[(&str, &str)]) -> Result<Server, String> {
    start_server_in(&[], cwd, env)
}

pub fn start_server_in(
    prefix: &[&str],
    cwd: &Path,
    env: &[(&str, &str)],
) -> Result<Server, String> {
    let stderr_path = cwd.join(format!("server-{}.log", rand_suffix()));
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let mut child = command_in(prefix, cwd, env)
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
    // Keep reading stdout so the server never blocks on a full pipe.
    let output = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&output);
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let Some(addr) = addr else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("no address in the banner: {lines:?}"));
    };
    Ok(Server {
        child,
        addr,
        lines,
        output,
        stderr_path,
    })
}

impl Drop for Server {
    /// A test that fails half-way leaves no server behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Everything the server printed after its banner (its logs), so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    /// SIGKILL: no last words, no shutdown.
    pub fn kill9(self) {
        drop(self);
    }

    /// SIGTERM, then wait; returns whether it exited cleanly.
    pub fn term(mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..400 {
            if let Some(status) = self.child.try_wait().unwrap() {
                if !status.success() {
                    let err = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
                    let tail: Vec<&str> = err.lines().rev().take(20).collect();
                    eprintln!("server exited with {status}; stderr ends: {tail:?}");
                }
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("server still running 20 s after SIGTERM");
        let _ = self.child.kill();
        false
    }
}

pub fn rand_suffix() -> String {
    freeway::crypto::new_id()[..8].to_string()
}

pub fn client_key_in(lines: &[String]) -> Option<String> {
    lines.iter().find_map(|l| {
        let start = l.find("fw-")?;
        let key: String = l[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        (key.len() >= 46 && key[3..].chars().all(|c| c.is_ascii_alphanumeric())).then_some(key)
    })
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
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

/// POST a chat for `mock-model` to `url` with client key `key`; the status (for servers run as
/// processes).
pub async fn chat_status(url: String, key: &str) -> u16 {
    reqwest::Client::new()
        .post(url)
        .bearer_auth(key)
        .json(&crate::harness::ask("mock-model"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}
