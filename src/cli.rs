//! The command line: `serve` (the default) and the management subcommands. Secrets are read
//! from stdin or a hidden prompt, never from argv.

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use std::io::{IsTerminal, Read, Write};

/// Print a line to stdout. A closed stdout (`freeway models | head`) ends the command with an
/// error `main` recognizes as a broken pipe and leaves quietly.
macro_rules! out {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*)?
    };
}
use std::path::PathBuf;

use crate::app::{self, App};
use crate::config::Config;
use crate::ledger::{SystemClock, short};
use crate::ops::{self, KeySource, LimitsPatch, fmt_time};

#[derive(Parser, Debug)]
#[command(
    name = "freeway",
    version = concat!(
        env!("CARGO_PKG_VERSION"),
        " (commit ",
        env!("FREEWAY_COMMIT"),
        ", ",
        env!("FREEWAY_TARGET"),
        ")"
    ),
    about = "One OpenAI-compatible endpoint in front of many free LLM tiers"
)]
pub struct Cli {
    /// Configuration file (else FREEWAY_CONFIG, else ./freeway.toml if present).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Provider keys: add, list, rm, enable, disable.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Client keys (what clients send to Freeway): create, list, revoke.
    #[command(subcommand, name = "client-keys")]
    ClientKeys(ClientKeysCmd),
    /// The routing chain: show, move, enable, disable.
    Chain(ChainArgs),
    /// The catalog: models, limits and today's usage.
    Models {
        /// Include models whose provider has no key.
        #[arg(long)]
        all: bool,
    },
    /// Which providers and models can serve now, cooldowns, soonest reset.
    Status,
    /// Probe every key now.
    Check,
    /// Ask the running server's `/readyz` (exit 0 when ready): a health check for containers
    /// whose image has no shell or HTTP client.
    Healthcheck {
        /// The server's address (default: `listen`, a wildcard host asked on loopback).
        #[arg(long)]
        addr: Option<String>,
    },
    /// The admin side: reset-password.
    #[command(subcommand)]
    Admin(AdminCmd),
}

#[derive(Subcommand, Debug)]
pub enum AdminCmd {
    /// Forget the admin password and every session; print a new setup link.
    ResetPassword,
}

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Add a provider key (read from stdin or a hidden prompt).
    Add {
        /// Provider id (groq, google, ...; see `freeway models --all`).
        provider: String,
        /// A name to tell keys apart.
        #[arg(long)]
        label: Option<String>,
    },
    /// List keys, masked, with their status.
    List,
    /// Remove a key (by id or id prefix).
    Rm { id: String },
    /// Enable a key (also clears an `invalid` verdict).
    Enable { id: String },
    /// Disable a key.
    Disable { id: String },
    /// Add the keys a `.env` file holds (GROQ_API_KEY=..., GEMINI_API_KEY=..., _2 for more).
    Import {
        /// The file (`-` for stdin).
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClientKeysCmd {
    /// Create a client key, with limits if given; it is shown once.
    Create {
        name: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Change a client key's limits (`none` clears one).
    Set {
        name: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// List client keys (never the keys themselves), with their limits and use.
    List,
    /// Revoke a client key by name or id.
    Revoke { name: String },
}

/// A client key's limits on the command line (SPEC 3.8); `none` clears one.
#[derive(Args, Debug, Default)]
pub struct LimitArgs {
    /// Requests per minute.
    #[arg(long, value_name = "N")]
    pub rpm: Option<String>,
    /// Requests per day (UTC).
    #[arg(long, value_name = "N")]
    pub rpd: Option<String>,
    /// Tokens per day (UTC).
    #[arg(long, value_name = "N")]
    pub tpd: Option<String>,
    /// Tokens per calendar month (UTC).
    #[arg(long, value_name = "N")]
    pub tpmo: Option<String>,
    /// Requests in flight at once.
    #[arg(long, value_name = "N")]
    pub concurrent: Option<String>,
    /// Models it may use, comma-separated: canonical ids, provider/model, provider/* (`all`: every model).
    #[arg(long, value_name = "LIST")]
    pub models: Option<String>,
    /// When it stops working: 2027-01-01 or an RFC 3339 time.
    #[arg(long, value_name = "DATE")]
    pub expires: Option<String>,
    /// Its fair share against other keys' (1 to 1000; default 1).
    #[arg(long, value_name = "N")]
    pub weight: Option<String>,
}

impl LimitArgs {
    fn patch(&self) -> anyhow::Result<LimitsPatch> {
        fn num<T: std::str::FromStr>(
            flag: &str,
            v: &Option<String>,
        ) -> anyhow::Result<Option<Option<T>>> {
            match v.as_deref().map(str::trim) {
                None => Ok(None),
                Some("none") => Ok(Some(None)),
                Some(t) => t
                    .parse::<T>()
                    .map(|n| Some(Some(n)))
                    .map_err(|_| anyhow::anyhow!("--{flag}: {t:?} is not a number (or `none`)")),
            }
        }
        let expires_ms = match self.expires.as_deref().map(str::trim) {
            None => None,
            Some("none") => Some(None),
            Some(t) => Some(Some(
                crate::config::parse_expiry(t).map_err(|e| anyhow::anyhow!("--expires: {e}"))?,
            )),
        };
        Ok(LimitsPatch {
            rpm: num("rpm", &self.rpm)?,
            rpd: num("rpd", &self.rpd)?,
            tpd: num("tpd", &self.tpd)?,
            tpmo: num("tpmo", &self.tpmo)?,
            concurrent: num("concurrent", &self.concurrent)?,
            models: self.models.as_deref().map(|m| match m.trim() {
                "all" | "none" | "" => Vec::new(),
                list => list.split(',').map(|s| s.trim().to_string()).collect(),
            }),
            expires_ms,
            weight: num("weight", &self.weight)?,
        })
    }
}

#[derive(Args, Debug)]
pub struct ChainArgs {
    #[command(subcommand)]
    pub command: Option<ChainCmd>,
}

#[derive(Subcommand, Debug)]
pub enum ChainCmd {
    /// Show the chain (the default).
    Show,
    /// Move a model to a position (1 = first).
    Move { model: String, position: usize },
    /// Enable a model.
    Enable { model: String },
    /// Disable a model.
    Disable { model: String },
    /// Forget what upstreams taught about a model (fields it refused, tools or images it lost),
    /// or about every model.
    ResetQuirks { model: Option<String> },
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config),
        Command::Keys(cmd) => keys_cmd(config, cmd),
        Command::ClientKeys(cmd) => client_keys_cmd(config, cmd),
        Command::Chain(args) => chain_cmd(config, args.command.unwrap_or(ChainCmd::Show)),
        Command::Models { all } => models_cmd(config, all),
        Command::Status => status_cmd(config),
        Command::Check => check_cmd(config),
        Command::Healthcheck { addr } => healthcheck_cmd(config, addr),
        Command::Admin(AdminCmd::ResetPassword) => reset_password_cmd(config),
    }
}

fn init_tracing(config: &Config) {
    let filter = config.log.clone().unwrap_or_else(|| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    // Colours only for a person at a terminal; JSON lines for log collectors.
    let _ = if config.log_json {
        builder.json().try_init()
    } else {
        builder
            .with_ansi(std::io::stdout().is_terminal())
            .try_init()
    };
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The server's runtime: `workers` threads (1 = single-threaded, the default, which avoids
/// cross-thread wake-ups entirely; 0 = one per core). SQLite work and large request bodies run on
/// the blocking pool either way, so the event loop stays responsive.
fn server_runtime(workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if workers > 1 {
        builder.worker_threads(workers);
    }
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn now_ms() -> i64 {
    crate::ledger::Clock::now_ms(&SystemClock)
}

fn serve(config: Config) -> anyhow::Result<()> {
    init_tracing(&config);
    // Every client connection is a file: take all the process may have.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    let rt = server_runtime(config.workers)?;
    rt.block_on(async move {
        let listen = config.listen;
        let app = App::open(config)?;
        tracing::info!(store = %app.store.describe(), "store opened");
        let first_key = ops::ensure_first_client_key(&app.store, now_ms())?;
        if first_key.is_some() {
            app.ops.reload()?;
        }
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} (set `listen` or FREEWAY_LISTEN)"))?;
        let addr = listener.local_addr()?;
        let ollama = app::bind_ollama(&app.config).await?;
        // Signals are caught from here on, before anyone can know the address.
        let shutdown = app::shutdown_signal();
        out!("Freeway listening on http://{addr}");
        out!("  OpenAI base URL: http://{addr}/v1");
        if let Some(o) = ollama.as_ref().and_then(|l| l.local_addr().ok()) {
            match &app.config.ollama.api_key {
                Some(name) => out!("  Ollama API:      http://{o} (as client key {name:?})"),
                None => out!("  Ollama API:      http://{o} (no client key)"),
            }
        }
        out!("  Dashboard:       http://{}/admin", shown(addr));
        if let Some(token) = app.admin.setup_token()? {
            out!(
                "  Set the admin password (one-time link): http://{}/admin/setup?token={token}",
                shown(addr)
            );
        }
        if let Some(key) = first_key {
            out!("  Your client key (shown once, keep it): {key}");
        }
        if !app.live.keys.any_usable() {
            out!("  No provider keys yet: add one with `freeway keys add <provider>` (e.g. groq, google)");
        }
        // A blank line ends the banner (scripts read up to it).
        out!();
        app::serve_with(app, listener, ollama, shutdown).await
    })
}

/// An address a browser on this machine can open: an unspecified IP becomes loopback.
fn shown(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => ([127, 0, 0, 1], addr.port()).into(),
        ip if ip.is_unspecified() => (std::net::Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

fn reset_password_cmd(config: Config) -> anyhow::Result<()> {
    let listen = config.listen;
    let app = App::open(config)?;
    let token = app.admin.reset_password()?;
    out!("The admin password is forgotten and every session ended.");
    out!(
        "Set a new one: http://{}/admin/setup?token={token}",
        shown(listen)
    );
    Ok(())
}

fn read_secret(prompt: &str) -> anyhow::Result<String> {
    let text = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(prompt).context("cannot read the key")?
    } else {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read the key from stdin")?;
        s
    };
    let key = text.trim().to_string();
    if key.is_empty() {
        bail!("no key given: pipe it on stdin or paste it at the prompt");
    }
    Ok(key)
}

fn keys_cmd(config: Config, cmd: KeysCmd) -> anyhow::Result<()> {
    let app = App::open(config)?;
    let ops = &app.ops;
    match cmd {
        KeysCmd::Add { provider, label } => {
            let p = ops.provider(&provider)?;
            let secret = read_secret(&format!("Paste the {} key (input hidden): ", p.name))?;
            let k = ops.add_key(&p.id, &secret, label.as_deref())?;
            out!("added {} key {} ({})", k.provider, short(&k.id), k.masked);
            if !p.enabled {
                out!(
                    "note: {} is disabled by default; enable it in the config: [providers.{}] enabled = true",
                    p.name,
                    p.id
                );
            }
        }
        KeysCmd::List => {
            out!(
                "{:<10} {:<12} {:<14} {:<12} {:<8} {:<8} LAST ERROR",
                "ID",
                "PROVIDER",
                "LABEL",
                "KEY",
                "ENABLED",
                "STATUS"
            );
            for k in ops.keys()? {
                let (id, status) = match k.source {
                    KeySource::Stored => (short(&k.id).to_string(), k.status.as_str()),
                    KeySource::Config => ("(config)".to_string(), "-"),
                };
                out!(
                    "{:<10} {:<12} {:<14} {:<12} {:<8} {:<8} {}",
                    id,
                    k.provider,
                    k.label,
                    k.masked,
                    if k.enabled { "yes" } else { "no" },
                    status,
                    k.last_error.unwrap_or_default()
                );
            }
        }
        KeysCmd::Rm { id } => {
            let k = ops.remove_key(&id)?;
            out!("removed {} key {}", k.provider, short(&k.id));
        }
        KeysCmd::Enable { id } => {
            let k = ops.set_key_enabled(&id, true)?;
            out!("enabled {} key {}", k.provider, short(&k.id));
        }
        KeysCmd::Disable { id } => {
            let k = ops.set_key_enabled(&id, false)?;
            out!("disabled {} key {}", k.provider, short(&k.id));
        }
        KeysCmd::Import { file } => {
            let text = if file.as_os_str() == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .context("cannot read stdin")?;
                s
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            };
            let done = ops.import_env(&text)?;
            for k in &done.added {
                out!("added {} key {} ({})", k.provider, short(&k.id), k.masked);
            }
            for (line, why) in &done.skipped {
                out!("skipped line {line}: {why}");
            }
            out!(
                "{} key(s) added, {} line(s) skipped",
                done.added.len(),
                done.skipped.len()
            );
        }
    }
    Ok(())
}

fn client_keys_cmd(config: Config, cmd: ClientKeysCmd) -> anyhow::Result<()> {
    let app = App::open(config)?;
    let ops = &app.ops;
    match cmd {
        ClientKeysCmd::Create { name, limits } => {
            let key = ops.create_client_key_with(&name, &limits.patch()?)?;
            out!("{key}");
            let _ = writeln!(
                std::io::stderr(),
                "client key {:?} created; it is shown only this once",
                name.trim()
            );
        }
        ClientKeysCmd::Set { name, limits } => {
            let patch = limits.patch()?;
            if patch.is_empty() {
                anyhow::bail!(
                    "say what to change, e.g. `freeway client-keys set {name} --rpd 500 --models groq/*`"
                );
            }
            let k = ops.set_client_limits(&name, &patch)?;
            out!("{}: {}", k.name, k.limits.summary());
        }
        ClientKeysCmd::List => {
            out!(
                "{:<18} {:<20} {:<10} {:<8} LIMITS (USED TODAY)",
                "ID",
                "NAME",
                "STARTS",
                "STATE"
            );
            for k in ops.client_keys()? {
                let id = k.id.as_deref().map_or("(config)", short);
                let starts = if k.prefix.is_empty() {
                    "-".to_string()
                } else {
                    format!("{}…", k.prefix)
                };
                let used = format!(
                    "{} requests, {} tokens today",
                    k.usage.day_requests, k.usage.day_tokens
                );
                let from = if k.limits_from_config {
                    " [config]"
                } else {
                    ""
                };
                out!(
                    "{:<18} {:<20} {:<10} {:<8} {}{from} ({used})",
                    id,
                    k.name,
                    starts,
                    if k.revoked { "revoked" } else { "active" },
                    k.limits.summary()
                );
            }
        }
        ClientKeysCmd::Revoke { name } => {
            let n = ops.revoke_client_key(&name)?;
            out!("revoked {n} client key(s)");
        }
    }
    Ok(())
}

fn chain_cmd(config: Config, cmd: ChainCmd) -> anyhow::Result<()> {
    let app = App::open(config)?;
    let ops = &app.ops;
    match cmd {
        ChainCmd::Show => {
            out!(
                "{:<4} {:<4} {:<52} {:<5} {:>5} {:>6} {:>8} {:>8}",
                "#",
                "ON",
                "MODEL",
                "RANK",
                "RPM",
                "RPD",
                "TPM",
                "TPD"
            );
            let lim = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
            for e in ops.chain() {
                out!(
                    "{:<4} {:<4} {:<52} {:<5} {:>5} {:>6} {:>8} {:>8}{}",
                    e.position,
                    if e.enabled { "yes" } else { "no" },
                    e.model,
                    e.rank,
                    lim(e.limits.rpm),
                    lim(e.limits.rpd),
                    lim(e.limits.tpm),
                    lim(e.limits.tpd),
                    e.retired
                        .as_ref()
                        .map(|why| format!("  retired: {why}"))
                        .unwrap_or_default()
                );
                for (lesson, why) in &e.learned {
                    out!("          learned: {lesson} ({why})");
                }
            }
        }
        ChainCmd::Move { model, position } => {
            let at = ops.move_model(&model, position)?;
            out!("moved {model} to position {at}");
        }
        ChainCmd::Enable { model } => {
            if let Some(note) = ops.set_model_enabled(&model, true)? {
                out!("note: {note}");
            }
            out!("enabled {model}");
        }
        ChainCmd::Disable { model } => {
            ops.set_model_enabled(&model, false)?;
            out!("disabled {model}");
        }
        ChainCmd::ResetQuirks { model } => {
            let n = ops.reset_quirks(model.as_deref())?;
            let whom = model.as_deref().unwrap_or("every model");
            out!("forgot {n} learned quirk(s) of {whom}");
        }
    }
    Ok(())
}

fn models_cmd(config: Config, all: bool) -> anyhow::Result<()> {
    let app = App::open(config)?;
    out!(
        "{:<52} {:<22} {:>8} {:>6} {:>12} {:>12} KEYS",
        "MODEL",
        "CANONICAL",
        "CONTEXT",
        "TOOLS",
        "TODAY REQ",
        "TODAY TOK"
    );
    for e in app.ops.chain() {
        if !all && e.keys == 0 {
            continue;
        }
        let cap = |used: u64, per_key: Option<u64>| match per_key {
            Some(c) => format!("{used}/{}", c * e.keys.max(1) as u64),
            None => used.to_string(),
        };
        out!(
            "{:<52} {:<22} {:>8} {:>6} {:>12} {:>12} {}{}",
            e.model,
            e.canonical,
            e.context,
            if e.tools { "yes" } else { "no" },
            cap(e.requests_today, e.limits.rpd),
            cap(e.tokens_today, e.limits.tpd),
            e.keys,
            match (&e.retired, e.enabled) {
                (Some(why), _) => format!(" (retired: {why})"),
                (None, true) => String::new(),
                (None, false) => " (disabled)".into(),
            }
        );
        for (lesson, why) in &e.learned {
            out!("    learned: {lesson} ({why})");
        }
    }
    if !all {
        out!("(models whose provider has no key are hidden; --all shows the whole catalog)");
    }
    Ok(())
}

fn healthcheck_cmd(config: Config, addr: Option<String>) -> anyhow::Result<()> {
    use http_body_util::BodyExt;
    let addr = addr.unwrap_or_else(|| {
        let l = config.listen;
        if l.ip().is_unspecified() {
            format!("127.0.0.1:{}", l.port())
        } else {
            l.to_string()
        }
    });
    let uri: hyper::Uri = format!("http://{addr}/readyz")
        .parse()
        .map_err(|e| anyhow::anyhow!("--addr {addr:?}: {e}"))?;
    let (status, body) = runtime()?.block_on(async {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let asked = async {
            let resp = client.get(uri).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), asked)
            .await
            .map_err(|_| anyhow::anyhow!("{addr} did not answer within 5 s"))?
    })?;
    out!("{status} {}", String::from_utf8_lossy(&body).trim());
    if !status.is_success() {
        bail!("not ready");
    }
    Ok(())
}

fn status_cmd(config: Config) -> anyhow::Result<()> {
    // Opening the App restores the counters and cooldowns the server last persisted.
    let app = App::open(config)?;
    let now = now_ms();
    let (providers, soonest) = app.ops.status();
    if let Some(url) = &app.config.cluster.redis_url {
        let said = runtime()?.block_on(crate::cluster::probe(
            url.expose(),
            &app.config.cluster.prefix,
            now,
        ));
        out!("cluster: {said}");
    }
    for p in providers {
        out!(
            "{} ({}): {} key(s), {} usable{}",
            p.id,
            p.name,
            p.keys,
            p.usable,
            if p.enabled { "" } else { ", provider disabled" }
        );
        for k in p.key_lines {
            out!(
                "  key {:<10} {:<8} {}{}",
                k.id,
                k.status.as_str(),
                if k.enabled { "" } else { "disabled " },
                k.cooling
                    .map(|(until, why)| format!("cooling down {}s ({why})", (until - now) / 1000))
                    .unwrap_or_default()
            );
        }
        for m in p.models {
            out!("  {:<48} {}", m.id, m.state);
        }
    }
    if let Some(t) = soonest {
        out!("soonest reset: {}", fmt_time(t));
    }
    let headroom = app.ops.headroom();
    if !headroom.is_empty() {
        out!("");
        out!("headroom (what is left; at the last hour's pace, when it runs out):");
        for h in headroom {
            let pools: Vec<String> = h
                .pools
                .iter()
                .filter(|p| p.window != "minute")
                .map(|p| {
                    let scope = if p.scope == "account" { "account " } else { "" };
                    format!(
                        "{scope}{} {} left {}/{} (key {})",
                        p.window, p.unit, p.remaining, p.limit, p.pool
                    )
                })
                .collect();
            out!(
                "  {}/{:<44} {}{}",
                h.provider,
                h.model,
                if pools.is_empty() {
                    "no daily or monthly cap".to_string()
                } else {
                    pools.join("; ")
                },
                h.exhausts_at
                    .map(|t| format!("; runs out {}", fmt_time(t)))
                    .unwrap_or_default()
            );
        }
    }
    // Pacing (SPEC 3.7): what the pace allows of each daily request cap by now.
    let paced: Vec<_> = app
        .ops
        .chain()
        .into_iter()
        .filter(|e| e.keys > 0 && e.enabled && e.retired.is_none())
        .filter_map(|e| Some((e.model, e.requests_today, e.paced?)))
        .collect();
    if let Some((_, _, first)) = paced.first() {
        out!("");
        out!(
            "pacing ({}; the reserve pass may go further when nothing else has room):",
            first.by
        );
        for (model, used, p) in &paced {
            out!(
                "  {:<48} used {used}/{}; allowed so far {}, held for later {}",
                model,
                p.cap,
                p.allowed,
                p.held
            );
        }
    }
    // Each client key's own limits and use (SPEC 3.8).
    let clients: Vec<_> = app
        .ops
        .client_keys()?
        .into_iter()
        .filter(|k| !k.revoked)
        .collect();
    if !clients.is_empty() {
        out!("");
        out!("client keys (their own limits; days and months in UTC):");
        for k in clients {
            let u = &k.usage;
            out!(
                "  {:<20} {}; today {} requests, {} tokens (day resets {}); this month {} tokens (resets {})",
                k.name,
                k.limits.summary(),
                u.day_requests,
                u.day_tokens,
                fmt_time(u.day_resets_ms),
                u.month_tokens,
                fmt_time(u.month_resets_ms)
            );
        }
    }
    out!("");
    out!("store: {}", app.store.describe());
    Ok(())
}

fn check_cmd(config: Config) -> anyhow::Result<()> {
    let rt = runtime()?;
    rt.block_on(async move {
        let app = App::open(config)?;
        let verdicts = app.ops.check(None).await?;
        if verdicts.is_empty() {
            out!("no keys to check: add one with `freeway keys add <provider>`");
        }
        for v in &verdicts {
            out!(
                "{:<12} {:<10} {:<14} {:<8} {}",
                v.provider,
                short(&v.key_id),
                v.label,
                v.status.as_str(),
                v.detail.clone().unwrap_or_default()
            );
        }
        app.tasks.close();
        app.tasks.wait().await;
        Ok(())
    })
}
