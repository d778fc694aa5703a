//! A real Redis for the tests of several replicas: Debian's `redis-server` on a loopback port
//! with throwaway data (no snapshots, no append-only file, its own temporary directory).
//!
//! `./test.sh` installs the `redis-server` package when it is missing; without it these tests
//! fail and say so, they never skip. The server speaks to the tests over raw RESP inline
//! commands (`PING\r\n` → `+PONG`), so no Redis client crate is needed here.
//!
//! A stopped server can be started again on the same port (`restart`), which is what "Redis
//! stops under load and comes back" needs: the replicas keep their `redis://` URL. Nothing is
//! persisted, so a restarted Redis is empty, as one without persistence is in production.
//!
//! The calls block (a start takes a few milliseconds); tests that keep replicas serving while
//! Redis stops or starts run on a multi-threaded runtime.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's server binary (package `redis-server`).
pub const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// How long a start may take before the test gives up (a ceiling, not a measurement).
const START_LIMIT: Duration = Duration::from_secs(20);

/// Ports tried when the one picked is taken by someone else between picking and binding.
const PORT_TRIES: usize = 5;

/// One redis-server process; killed when dropped.
pub struct RedisServer {
    /// The running server, `None` while stopped.
    child: Option<Child>,
    /// The loopback port, kept across `stop` and `restart` so the replicas' URL stays valid.
    port: u16,
    /// `--dir` of the server and the home of its logs: removed on drop, after the kill.
    dir: tempfile::TempDir,
    /// How many times the server has been started, to name each run's log file.
    runs: usize,
}

/// Why one attempt to start did not give a server that answers.
enum StartError {
    /// The port was taken: another one (or the same one, a little later) may work.
    PortTaken,
    /// Anything else: the log says what.
    Failed(String),
}

impl RedisServer {
    /// Starts a fresh server on a free loopback port and waits until it answers PING.
    pub fn start() -> RedisServer {
        assert!(
            Path::new(REDIS_SERVER).exists(),
            "{REDIS_SERVER} is missing: the replica tests need Debian's `redis-server` package \
             (./test.sh installs it with apt-get)"
        );
        let dir = tempfile::Builder::new()
            .prefix("freeway-redis-")
            .tempdir()
            .expect("a temporary directory for redis");
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir,
            runs: 0,
        };
        let mut last = String::new();
        for _ in 0..PORT_TRIES {
            server.port = free_port();
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(StartError::PortTaken) => last = format!("port {} was taken", server.port),
                Err(StartError::Failed(why)) => panic!("redis-server did not start: {why}"),
            }
        }
        panic!("redis-server did not start after {PORT_TRIES} ports: {last}");
    }

    /// `redis://127.0.0.1:PORT/0`: what `[cluster] redis_url` takes.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the server is running (not stopped by `stop`).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server and waits until it is gone: from then on its port refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty (nothing was persisted), and waits
    /// until it answers PING. Stops it first if it is running.
    pub fn restart(&mut self) {
        self.stop();
        // While the port was free, another test's outgoing connection may have been given it
        // as its local port; that blocks a listener until it closes, so retry for a while.
        let mut last = String::new();
        for _ in 0..PORT_TRIES {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(StartError::PortTaken) => {
                    last = format!("port {} is taken", self.port);
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(StartError::Failed(why)) => panic!("redis-server did not restart: {why}"),
            }
        }
        panic!("redis-server did not restart on port {}: {last}", self.port);
    }

    /// Sends one inline command (`PING`, `SET k v`, `GET k`, `DBSIZE`) and returns the first
    /// line of the reply without its `\r\n` (`+PONG`, `+OK`, `$1`, `$-1`, `:0`).
    pub fn command(&self, line: &str) -> std::io::Result<String> {
        command(self.port, line)
    }

    /// Ok when the server answers `PING` with `+PONG`; the connection error otherwise.
    pub fn ping(&self) -> std::io::Result<()> {
        let reply = self.command("PING")?;
        if reply == "+PONG" {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("PING answered {reply:?}")))
        }
    }

    /// The log of the current (or last) run, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("redis-{}.log", self.runs))
    }

    fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        self.runs += 1;
        let log = std::fs::File::create(self.log_path()).expect("redis log file");
        let mut child = Command::new(REDIS_SERVER)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--daemonize", "no", "--logfile", ""])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("redis log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| StartError::Failed(format!("cannot run {REDIS_SERVER}: {e}")))?;
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = self.log();
                return Err(if log.contains("Address already in use") {
                    StartError::PortTaken
                } else {
                    StartError::Failed(format!("it exited ({status}); its log:\n{log}"))
                });
            }
            if command(self.port, "PING").is_ok_and(|r| r == "+PONG") {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(StartError::Failed(format!(
                    "no PONG within {START_LIMIT:?}; its log:\n{}",
                    self.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port that was free a moment ago: bound to port 0, then released for redis-server to take.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

fn command(port: u16, line: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("{line}\r\n").as_bytes())?;
    let mut reply = String::new();
    if BufReader::new(&mut stream).read_line(&mut reply)? == 0 {
        return Err(std::io::Error::new(
            ErrorKind::UnexpectedEof,
            "closed without a reply",
        ));
    }
    Ok(reply.trim_end().to_string())
}

#[test]
fn redis_server_starts_and_restarts() {
    let mut redis = RedisServer::start();
    assert!(
        redis.url().starts_with("redis://127.0.0.1:") && redis.url().ends_with("/0"),
        "{}",
        redis.url()
    );
    redis.ping().expect("PING after start");
    assert_eq!(redis.command("SET freeway-test 1").unwrap(), "+OK");
    assert_eq!(redis.command("GET freeway-test").unwrap(), "$1");

    let port = redis.port();
    redis.stop();
    assert!(!redis.running());
    let err = redis.ping().expect_err("PING while stopped");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");

    redis.restart();
    assert_eq!(redis.port(), port, "restarted on the same port");
    redis.ping().expect("PING after restart");
    // Nothing was persisted: a Redis that comes back has forgotten every counter.
    assert_eq!(redis.command("GET freeway-test").unwrap(), "$-1");
    assert!(
        redis.log().contains("Ready to accept connections"),
        "{}",
        redis.log()
    );
}
