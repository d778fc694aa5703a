//! The command line: `serve` (the default) and the management subcommands. Secrets are read
//! from stdin or a hidden prompt, never from argv.

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use crate::app::{self, App};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::crypto;
use crate::keys;
use crate::ledger::{Scope, SystemClock, short};
use crate::router::plan;
use crate::store::{ChainRow, KeyRow};

#[derive(Parser, Debug)]
#[command(
    name = "freeway",
    version,
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
}

#[derive(Subcommand, Debug)]
pub enum ClientKeysCmd {
    /// Create a client key; it is shown once.
    Create { name: String },
    /// List client keys (never the keys themselves).
    List,
    /// Revoke a client key by name or id.
    Revoke { name: String },
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
    }
}

fn init_tracing(config: &Config) {
    let filter = config.log.clone().unwrap_or_else(|| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
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
    let rt = server_runtime(config.workers)?;
    rt.block_on(async move {
        let listen = config.listen;
        let app = App::open(config)?;
        let first_key = app::ensure_first_client_key(&app.store, now_ms())?;
        if first_key.is_some() {
            app.reload()?;
        }
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} (set `listen` or FREEWAY_LISTEN)"))?;
        let addr = listener.local_addr()?;
        println!("Freeway listening on http://{addr}");
        println!("  OpenAI base URL: http://{addr}/v1");
        if let Some(key) = first_key {
            println!("  Your client key (shown once, keep it): {key}");
        }
        if !app.keys.any_usable() {
            println!("  No provider keys yet: add one with `freeway keys add <provider>` (e.g. groq, google)");
        }
        app::serve(app, listener, app::shutdown_signal()).await
    })
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
    if key.chars().any(char::is_whitespace) {
        bail!("the key contains whitespace; paste only the key");
    }
    Ok(key)
}

fn keys_cmd(config: Config, cmd: KeysCmd) -> anyhow::Result<()> {
    let catalog = Catalog::from_config(&config)?;
    let (store, sealer, _) = app::open_data(&config)?;
    let one = |prefix: &str| -> anyhow::Result<KeyRow> {
        let mut found = store.find_keys(prefix)?;
        match found.len() {
            0 => {
                bail!("no stored key has an id starting with {prefix:?} (see `freeway keys list`)")
            }
            1 => Ok(found.remove(0)),
            n => bail!("{n} keys have ids starting with {prefix:?}; give more characters"),
        }
    };
    match cmd {
        KeysCmd::Add { provider, label } => {
            let Some(p) = catalog.provider(&provider) else {
                let known: Vec<&str> = catalog.providers.iter().map(|p| p.id.as_str()).collect();
                bail!("unknown provider {provider:?}; known: {}", known.join(", "));
            };
            let secret = read_secret(&format!("Paste the {} key (input hidden): ", p.name))?;
            if p.quirks.account_in_url && !secret.contains(':') {
                bail!(
                    "a {} key is `account_id:api_token` (both parts, joined by a colon)",
                    p.name
                );
            }
            let row = keys::new_row(&sealer, &p.id, label.unwrap_or_default(), &secret, now_ms());
            store.insert_key(&row)?;
            let id = row.id;
            println!(
                "added {} key {} ({})",
                p.id,
                short(&id),
                crypto::mask(&secret)
            );
            if !p.enabled {
                println!(
                    "note: {} is disabled by default; enable it in the config: [providers.{}] enabled = true",
                    p.name, p.id
                );
            }
        }
        KeysCmd::List => {
            println!(
                "{:<10} {:<12} {:<14} {:<12} {:<8} {:<8} LAST ERROR",
                "ID", "PROVIDER", "LABEL", "KEY", "ENABLED", "STATUS"
            );
            for row in store.keys()? {
                let masked = sealer
                    .open(&row.sealed, &keys::aad(&row.id, &row.provider))
                    .map(|k| crypto::mask(&String::from_utf8_lossy(&k)))
                    .unwrap_or_else(|_| "(undecryptable)".into());
                println!(
                    "{:<10} {:<12} {:<14} {:<12} {:<8} {:<8} {}",
                    short(&row.id),
                    row.provider,
                    row.label,
                    masked,
                    if row.enabled { "yes" } else { "no" },
                    row.status,
                    row.last_error.unwrap_or_default()
                );
            }
            for p in &catalog.providers {
                for (i, k) in p.config_keys.iter().enumerate() {
                    println!(
                        "{:<10} {:<12} {:<14} {:<12} {:<8} {:<8}",
                        "(config)",
                        p.id,
                        format!("config #{}", i + 1),
                        crypto::mask(k.expose()),
                        "yes",
                        "-"
                    );
                }
            }
        }
        KeysCmd::Rm { id } => {
            let row = one(&id)?;
            store.remove_key(&row.id)?;
            println!("removed {} key {}", row.provider, short(&row.id));
        }
        KeysCmd::Enable { id } => {
            let row = one(&id)?;
            store.set_key_enabled(&row.id, true)?;
            println!("enabled {} key {}", row.provider, short(&row.id));
        }
        KeysCmd::Disable { id } => {
            let row = one(&id)?;
            store.set_key_enabled(&row.id, false)?;
            println!("disabled {} key {}", row.provider, short(&row.id));
        }
    }
    Ok(())
}

fn client_keys_cmd(config: Config, cmd: ClientKeysCmd) -> anyhow::Result<()> {
    let (store, _, _) = app::open_data(&config)?;
    match cmd {
        ClientKeysCmd::Create { name } => {
            if name.trim().is_empty() {
                bail!("give the key a name, e.g. `freeway client-keys create laptop`");
            }
            let key = app::create_client_key(&store, name.trim(), now_ms())?;
            println!("{key}");
            eprintln!("client key {name:?} created; it is shown only this once");
        }
        ClientKeysCmd::List => {
            println!("{:<18} {:<20} {:<10} STATE", "ID", "NAME", "STARTS");
            for row in store.client_keys()? {
                println!(
                    "{:<18} {:<20} {:<10} {}",
                    short(&row.id),
                    row.name,
                    format!("{}…", row.prefix),
                    if row.revoked_ms.is_some() {
                        "revoked"
                    } else {
                        "active"
                    }
                );
            }
            for (i, _) in config.auth.api_keys.iter().enumerate() {
                println!(
                    "{:<18} {:<20} {:<10} active",
                    "(config)",
                    format!("config #{}", i + 1),
                    "-"
                );
            }
        }
        ClientKeysCmd::Revoke { name } => {
            let mut n = store.revoke_client_key(&name, now_ms())?;
            if n == 0 {
                // Ids are shown shortened: accept a unique prefix.
                let matches: Vec<_> = store
                    .client_keys()?
                    .into_iter()
                    .filter(|r| r.revoked_ms.is_none() && r.id.starts_with(&name))
                    .collect();
                if matches.len() == 1 {
                    n = store.revoke_client_key(&matches[0].id, now_ms())?;
                }
            }
            if n == 0 {
                bail!("no active client key is named {name:?} or has that id");
            }
            println!("revoked {n} client key(s)");
        }
    }
    Ok(())
}

fn chain_cmd(config: Config, cmd: ChainCmd) -> anyhow::Result<()> {
    let catalog = Catalog::from_config(&config)?;
    let (store, _, _) = app::open_data(&config)?;
    let chain = plan::chain(&catalog, &config.routing.chain, &store.chain()?);
    let mut rows: Vec<ChainRow> = chain
        .iter()
        .map(|l| ChainRow {
            model: catalog.reference(l.model),
            // Stored flags say only what the user switched off here.
            enabled: store
                .chain()
                .ok()
                .and_then(|s| {
                    s.into_iter()
                        .find(|r| r.model == catalog.reference(l.model))
                })
                .is_none_or(|r| r.enabled),
        })
        .collect();
    let find = |rows: &[ChainRow], name: &str| -> anyhow::Result<usize> {
        let target = catalog
            .find_reference(name)
            .map(|i| catalog.reference(i))
            .with_context(|| {
                format!("{name:?} is not a <provider>/<model> in the catalog (see `freeway chain`)")
            })?;
        rows.iter()
            .position(|r| r.model == target)
            .context("model not in the chain")
    };
    match cmd {
        ChainCmd::Show => {
            println!(
                "{:<4} {:<4} {:<52} {:<5} {:>5} {:>6} {:>8} {:>8}",
                "#", "ON", "MODEL", "RANK", "RPM", "RPD", "TPM", "TPD"
            );
            for (i, l) in chain.iter().enumerate() {
                let m = &catalog.models[l.model];
                let lim = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
                println!(
                    "{:<4} {:<4} {:<52} {:<5} {:>5} {:>6} {:>8} {:>8}",
                    i + 1,
                    if l.enabled { "yes" } else { "no" },
                    catalog.reference(l.model),
                    m.rank,
                    lim(m.limits.rpm),
                    lim(m.limits.rpd),
                    lim(m.limits.tpm),
                    lim(m.limits.tpd)
                );
            }
            return Ok(());
        }
        ChainCmd::Move { model, position } => {
            let from = find(&rows, &model)?;
            let row = rows.remove(from);
            let to = position.clamp(1, rows.len() + 1) - 1;
            rows.insert(to, row);
            println!("moved {model} to position {}", to + 1);
        }
        ChainCmd::Enable { model } => {
            let i = find(&rows, &model)?;
            rows[i].enabled = true;
            let m = &catalog.models[catalog.find_reference(&model).unwrap_or_default()];
            if !m.enabled || !catalog.provider_of(m).enabled {
                println!(
                    "note: the catalog or config disables this model or its provider; set enabled = true there too"
                );
            }
            println!("enabled {model}");
        }
        ChainCmd::Disable { model } => {
            let i = find(&rows, &model)?;
            rows[i].enabled = false;
            println!("disabled {model}");
        }
    }
    store.set_chain(&rows)?;
    Ok(())
}

fn models_cmd(config: Config, all: bool) -> anyhow::Result<()> {
    let app = App::open(config)?;
    let ledger = &app.ledger;
    println!(
        "{:<52} {:<22} {:>8} {:>6} {:>12} {:>12} KEYS",
        "MODEL", "CANONICAL", "CONTEXT", "TOOLS", "TODAY REQ", "TODAY TOK"
    );
    for l in app.chain().iter() {
        let m = &app.catalog.models[l.model];
        let p = app.catalog.provider_of(m);
        let keys = app.keys.usable(&p.id);
        if !all && keys.is_empty() {
            continue;
        }
        let (mut req, mut tok) = (0, 0);
        for k in &keys {
            let u = ledger.usage(&Scope::model(&p.id, &m.id, &k.id), p.reset);
            req += u.day_requests;
            tok += u.day_tokens;
        }
        let cap = |used: u64, per_key: Option<u64>| match per_key {
            Some(c) => format!("{used}/{}", c * keys.len().max(1) as u64),
            None => used.to_string(),
        };
        println!(
            "{:<52} {:<22} {:>8} {:>6} {:>12} {:>12} {}{}",
            app.catalog.reference(l.model),
            m.canonical,
            m.context,
            if m.tools { "yes" } else { "no" },
            cap(req, m.limits.rpd),
            cap(tok, m.limits.tpd),
            keys.len(),
            if l.enabled { "" } else { " (disabled)" }
        );
    }
    if !all {
        println!("(models whose provider has no key are hidden; --all shows the whole catalog)");
    }
    Ok(())
}

fn status_cmd(config: Config) -> anyhow::Result<()> {
    let app = App::open(config)?;
    // Opening the App restored the counters and cooldowns the server last persisted.
    let ledger = &app.ledger;
    let now = now_ms();
    let mut soonest: Option<i64> = None;
    for p in &app.catalog.providers {
        let keys = app.keys.all(&p.id);
        if keys.is_empty() {
            continue;
        }
        let usable = app.keys.usable(&p.id);
        println!(
            "{} ({}): {} key(s), {} usable{}",
            p.id,
            p.name,
            keys.len(),
            usable.len(),
            if p.enabled { "" } else { ", provider disabled" }
        );
        for k in &keys {
            let status = app.keys.status(&k.id);
            let cool = ledger.cooldown(&Scope::key(&p.id, &k.id));
            println!(
                "  key {:<10} {:<8} {}{}",
                short(&k.id),
                status.as_str(),
                if k.enabled { "" } else { "disabled " },
                cool.map(|c| format!("cooling down {}s ({})", (c.until_ms - now) / 1000, c.reason))
                    .unwrap_or_default()
            );
        }
        for l in app.chain().iter().filter(|l| {
            app.catalog.models[l.model].provider
                == app.catalog.provider_index(&p.id).unwrap_or(usize::MAX)
        }) {
            let m = &app.catalog.models[l.model];
            let mut states = Vec::new();
            let mut ready = false;
            for k in &usable {
                let ask = crate::ledger::Ask::new(p, m, &k.id, 1);
                match ledger.check_only(&ask) {
                    Ok(()) => ready = true,
                    Err(d) => {
                        if let Some(t) = d.until_ms() {
                            soonest = Some(soonest.map_or(t, |s| s.min(t)));
                            states.push(format!("{d} until {}", fmt_time(t)));
                        } else {
                            states.push(d.to_string());
                        }
                    }
                }
            }
            let state = if !l.enabled {
                "disabled".to_string()
            } else if ready {
                "ready".to_string()
            } else if usable.is_empty() {
                "no usable key".to_string()
            } else {
                states.join("; ")
            };
            println!("  {:<48} {}", m.id, state);
        }
    }
    if let Some(t) = soonest {
        println!("soonest reset: {}", fmt_time(t));
    }
    Ok(())
}

fn fmt_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn check_cmd(config: Config) -> anyhow::Result<()> {
    let rt = runtime()?;
    rt.block_on(async move {
        let app = App::open(config)?;
        let verdicts = crate::health::run(&app).await;
        if verdicts.is_empty() {
            println!("no keys to check: add one with `freeway keys add <provider>`");
        }
        for v in &verdicts {
            println!(
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
