//! Real servers the tests start on loopback: a throwaway PostgreSQL (`initdb` + `pg_ctl` found
//! on PATH or under `/usr/lib/postgresql/*/bin`; test.sh installs Debian's `postgresql` when
//! there is none). nextest runs each test in a process of its own, so a server shared through a
//! static would outlive its test: each test starts its own ([`Postgres::start`], about a second)
//! and stops it when the value drops, also when the test fails.
//!
//! PostgreSQL refuses to run as root, and the tests run as root on CI: then `initdb` and the
//! server run as `nobody` (`setpriv`), in a directory given to `nobody`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A PostgreSQL server in a temporary directory, stopped when dropped.
pub struct Postgres {
    bin: PathBuf,
    /// Holds the data directory and the socket; removed on drop.
    dir: tempfile::TempDir,
    pub port: u16,
    /// Run the server's programs as `nobody` (we are root).
    as_nobody: bool,
}

/// Where `initdb` and `pg_ctl` are, if anywhere.
fn bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>());
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"));
    on_path
        .chain(debian)
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Postgres {
    /// Start a new server on a free loopback port.
    pub fn start() -> Postgres {
        let bin = bin_dir().expect(
            "PostgreSQL is not installed (no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin): \
             run test.sh, or apt-get install postgresql",
        );
        let dir = tempfile::tempdir().expect("a temporary directory");
        let as_nobody = is_root();
        if as_nobody {
            let ok = Command::new("chown")
                .args(["-R", "65534:65534"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "could not give {} to nobody", dir.path().display());
        }
        let pg = Postgres {
            bin,
            port: free_port(),
            dir,
            as_nobody,
        };
        let data = pg.data();
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "freeway",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        pg.start_again();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// One of the server's programs, as `nobody` when we are root.
    fn command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        let mut cmd = if self.as_nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        // A working directory nobody may enter would make the programs complain.
        cmd.current_dir(self.dir.path());
        cmd
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Start the server (again, after [`Postgres::stop`]), on the same port.
    pub fn start_again(&self) {
        let data = self.data();
        let log = format!("{data}/log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-o", &options, "-w", "start"],
        );
    }

    /// Stop the server (fast: connections are closed).
    pub fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    /// A url for database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://freeway@127.0.0.1:{}/{db}", self.port)
    }

    /// A new empty database; its url.
    pub fn database(&self) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let admin = self.url("postgres");
        let create = format!("CREATE DATABASE {name}");
        // A thread of its own: the sync client may not block inside an async test.
        std::thread::spawn(move || {
            postgres::Client::connect(&admin, postgres::NoTls)
                .and_then(|mut c| c.batch_execute(&create))
        })
        .join()
        .expect("the thread creating a database")
        .expect("create a database");
        self.url(&name)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
