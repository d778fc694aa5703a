//! Configuration: the raw TOML file and `FREEWAY_*` environment, validated into [`Config`].
//!
//! Precedence, lowest first: built-in defaults, the file (`--config`, `FREEWAY_CONFIG`, else
//! `./freeway.toml` if present), the environment. Unknown keys and bad values are errors that
//! name the key. Secrets may be written as `env:NAME` and are held in [`Secret`], whose `Debug`
//! never prints the value.

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::units::{parse_duration, parse_size};

/// A secret string: printed as `[redacted]` by `Debug`, compared only where it must be.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The plaintext. Call sites are the few places that must send or compare it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// The validated configuration every other module reads.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the server listens.
    pub listen: SocketAddr,
    /// SQLite database and generated key file live here.
    pub data_dir: PathBuf,
    /// Request body limit in bytes (413 above it).
    pub max_body: usize,
    pub auth: Auth,
    pub routing: Routing,
    /// `[providers.<id>]` overrides of catalog providers, by provider id.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// `[custom.<id>]` OpenAI-compatible endpoints, by provider id.
    pub custom: BTreeMap<String, CustomConfig>,
    pub metrics: Metrics,
    pub http: Http,
    /// Where Anthropic clients' `claude-*` models go (`[anthropic]`).
    pub anthropic: Families,
    /// Where Gemini API clients' unknown `gemini-*` models go (`[gemini_api]`).
    pub gemini_api: GeminiFamilies,
    /// `[embeddings]`: what `auto` means on `/v1/embeddings`.
    pub embeddings: Embeddings,
    /// `[cache]`: the exact answer cache (SPEC 2.8).
    pub cache: Cache,
    /// The key-less listener for Ollama clients (`[ollama]`).
    pub ollama: Ollama,
    /// `[cluster]`: state shared by several replicas (SPEC 5.1).
    pub cluster: Cluster,
    /// Log filter (`FREEWAY_LOG`), e.g. `info` or `freeway=debug`.
    pub log: Option<String>,
    /// Log lines as JSON objects (for log collectors) instead of text.
    pub log_json: bool,
    /// `FREEWAY_ENCRYPTION_KEY`: 64 hex characters; else the key file in `data_dir`.
    pub encryption_key: Option<Secret>,
    /// Request log retention.
    pub log_retention: Duration,
    /// Runtime worker threads: 1 (the default) = one event-loop thread, measured best for a
    /// proxy whose work is waiting on sockets; 0 = one per core; n = n threads.
    pub workers: usize,
    /// `[store] url` / `FREEWAY_STORE_URL`: PostgreSQL instead of SQLite in `data_dir` (SPEC
    /// 5.1). A secret: it may hold a password.
    pub store_url: Option<Secret>,
}

#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// Fixed client keys from the file and `FREEWAY_API_KEY`, in addition to stored ones.
    pub api_keys: Vec<FixedKey>,
    pub admin_password: Option<Secret>,
    /// `[auth.limits.NAME]`: limits of the client key named NAME (fixed or stored); they win
    /// over limits set from the CLI or the dashboard.
    pub limits: BTreeMap<String, ClientLimits>,
}

/// A client key from the config: `"fw-…"` (named `config #N`) or `{ name, key }`.
#[derive(Debug, Clone)]
pub struct FixedKey {
    pub name: String,
    pub key: Secret,
}

/// What one client key may do (SPEC 3.8); every field optional, nothing set = no limit. Stored
/// as JSON; a field a newer build added is ignored, not a reason to drop every limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientLimits {
    /// Requests per minute (rolling).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    /// Requests per day (a UTC calendar day).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpd: Option<u64>,
    /// Tokens per day (a UTC calendar day).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpd: Option<u64>,
    /// Tokens per calendar month (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpmo: Option<u64>,
    /// Requests in flight at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrent: Option<u32>,
    /// Models it may use: canonical ids, `provider/model` references, `provider/*`; empty =
    /// every model.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// After this moment (ms since the Unix epoch) the key answers 401.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
    /// Its share of capped models against other keys' (fair share); 1 when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

impl ClientLimits {
    /// Whether any counted limit (requests or tokens per window) is set.
    pub fn counts(&self) -> bool {
        self.rpm.is_some() || self.rpd.is_some() || self.tpd.is_some() || self.tpmo.is_some()
    }

    /// The weight for fair share (at least 1).
    pub fn weight(&self) -> u32 {
        self.weight.unwrap_or(1).max(1)
    }

    /// Whether the key has expired at `now_ms`.
    pub fn expired(&self, now_ms: i64) -> bool {
        self.expires_ms.is_some_and(|at| now_ms >= at)
    }

    /// In a few words: "rpd 500 · concurrent 4 · models groq/*" ("no limits").
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for (name, v) in [
            ("rpm", self.rpm),
            ("rpd", self.rpd),
            ("tpd", self.tpd),
            ("tpmo", self.tpmo),
        ] {
            if let Some(v) = v {
                parts.push(format!("{name} {v}"));
            }
        }
        if let Some(c) = self.concurrent {
            parts.push(format!("concurrent {c}"));
        }
        if let Some(w) = self.weight {
            parts.push(format!("weight {w}"));
        }
        if !self.models.is_empty() {
            parts.push(format!("models {}", self.models.join(",")));
        }
        if let Some(at) = self
            .expires_ms
            .and_then(chrono::DateTime::from_timestamp_millis)
        {
            parts.push(format!("expires {}", at.format("%Y-%m-%d %H:%M UTC")));
        }
        if parts.is_empty() {
            "no limits".into()
        } else {
            parts.join(" · ")
        }
    }

    /// Check what a person set: weights and limits above zero, model patterns not empty.
    pub fn check(&self) -> Result<(), String> {
        for (name, v) in [
            ("rpm", self.rpm),
            ("rpd", self.rpd),
            ("tpd", self.tpd),
            ("tpmo", self.tpmo),
        ] {
            if v == Some(0) {
                return Err(format!(
                    "{name} must be at least 1 (leave it out for no limit)"
                ));
            }
        }
        if self.concurrent == Some(0) {
            return Err("concurrent must be at least 1 (leave it out for no limit)".into());
        }
        if self.weight == Some(0) || self.weight.is_some_and(|w| w > 1000) {
            return Err("weight must be from 1 to 1000".into());
        }
        if let Some(bad) = self.models.iter().find(|m| m.trim().is_empty()) {
            return Err(format!("models: {bad:?} is not a model id"));
        }
        Ok(())
    }
}

/// When a client key expires: a date (`2027-01-01`, that day's start in UTC) or an RFC 3339
/// moment; in ms since the Unix epoch.
pub fn parse_expiry(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .map_or(0, |dt| dt.and_utc().timestamp_millis()));
    }
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| d.timestamp_millis())
        .map_err(|_| format!("{t:?} is not a date (2027-01-01) or an RFC 3339 time"))
}

#[derive(Debug, Clone)]
pub struct Routing {
    /// Explicit chain order: `provider/model` references that come first.
    pub chain: Vec<String>,
    pub max_attempts: u32,
    pub time_budget: Duration,
    pub sticky_ttl: Duration,
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub stall_timeout: Duration,
    pub cooldown_on_429: Duration,
    pub cooldown_on_5xx: Duration,
    /// How often the health probe runs (5 minutes, with jitter).
    pub health_interval: Duration,
    /// Spread daily caps over the day for `auto` requests (SPEC 3.7).
    pub pacing: Pacing,
    /// Sharing capped models between client keys (SPEC 3.8).
    pub fairness: Fairness,
}

/// `routing.pacing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pacing {
    /// Use a model while it has room.
    Off,
    /// An `auto` request may use a model with a daily cap only while today's use stays within
    /// the cap spread evenly over the day, plus a burst of a tenth of the cap.
    Even,
    /// As `Even`, but the cap is spread along the demand this gateway expects for each hour of
    /// the provider's day, learned from its own request log (`ledger::demand`). The default:
    /// on every profile of `bench/yield.sh --profiles` it serves ≥ 99 % of servable requests,
    /// with no overshoot, and the strongest daily-capped model still serves in the last busy
    /// hour (ARCHITECTURE.md, pacing).
    #[default]
    Demand,
}

/// How capped models are shared between client keys (`routing.fairness`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fairness {
    /// First come, first served.
    Off,
    /// Max-min fair by weight: while several keys want a model with a daily cap, none takes more
    /// than its weighted share while another that has used less still asks.
    #[default]
    Weighted,
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            chain: Vec::new(),
            max_attempts: 20,
            time_budget: Duration::from_secs(45),
            sticky_ttl: Duration::from_secs(30 * 60),
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(60),
            stall_timeout: Duration::from_secs(90),
            cooldown_on_429: Duration::from_secs(90),
            cooldown_on_5xx: Duration::from_secs(90),
            health_interval: Duration::from_secs(300),
            pacing: Pacing::default(),
            fairness: Fairness::Weighted,
        }
    }
}

/// A catalog provider as the config changes it.
#[derive(Debug, Clone, Default)]
pub struct ProviderConfig {
    pub base_url: Option<String>,
    /// Other hosts a key may belong to (replaces the catalog's list when given).
    pub alt_base_urls: Option<Vec<String>>,
    pub keys: Vec<Secret>,
    pub enabled: Option<bool>,
    /// Every key counts against one pool (keys of one Google Cloud project).
    pub shared_quota: Option<bool>,
    /// Account caps across the provider's models (`account_rpd = 1000`): each given one
    /// replaces the catalog's.
    pub account: AccountCaps,
    pub models: Vec<ModelConfig>,
}

/// Account caps as the config file gives them; `None` keeps the catalog's.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AccountCaps {
    pub account_rpm: Option<u64>,
    pub account_rpd: Option<u64>,
    pub account_tpm: Option<u64>,
    pub account_tpd: Option<u64>,
    pub account_rpmo: Option<u64>,
    pub account_tpmo: Option<u64>,
    pub account_credit: Option<u64>,
}

/// A custom OpenAI-compatible endpoint.
#[derive(Debug, Clone, Default)]
pub struct CustomConfig {
    pub name: Option<String>,
    pub base_url: String,
    pub keys: Vec<Secret>,
    pub enabled: Option<bool>,
    pub models: Vec<ModelConfig>,
}

/// A model added or overridden by the config. `None` keeps the catalog's fact.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub id: String,
    pub canonical: Option<String>,
    pub rank: Option<u32>,
    pub tools: Option<bool>,
    pub vision: Option<bool>,
    pub enabled: Option<bool>,
    pub rpm: Option<u64>,
    pub rpd: Option<u64>,
    pub tpm: Option<u64>,
    pub tpd: Option<u64>,
    /// Requests per calendar month.
    pub rpmo: Option<u64>,
    /// Tokens per calendar month.
    pub tpmo: Option<u64>,
    /// A one-time credit of tokens.
    pub credit: Option<u64>,
    pub context: Option<u64>,
    /// The provider shut the model down (why): never routed.
    pub retired: Option<String>,
    /// An embedding model (SPEC 2.5): the size of its vectors. Embedding models are a kind of
    /// their own, never in the chat chain.
    pub dims: Option<u32>,
    /// Smaller vectors it can give: `true` (any size up to `dims`) or the sizes.
    pub shrinks: Option<Shrink>,
    /// Inputs per upstream call.
    pub batch: Option<usize>,
    /// The request field that asks for smaller vectors (default `dimensions`).
    pub dims_param: Option<String>,
    /// Values of the upstream's `input_type` for a query and a document (NVIDIA's
    /// `["query", "passage"]`); none: the upstream takes no such field.
    pub input_types: Option<[String; 2]>,
    /// How it is called: `openai` (`/embeddings`, the default for OpenAI-dialect providers),
    /// `gemini` (`batchEmbedContents`), `cohere` (`/v2/embed`).
    pub embed_api: Option<EmbedApi>,
}

/// The smaller vector sizes an embedding model can give.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Shrink {
    /// Any size up to its own (`true`), or none (`false`).
    Any(bool),
    Sizes(Vec<u32>),
}

/// The API an embedding model is called through.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EmbedApi {
    Openai,
    Gemini,
    Cohere,
}

/// How client connections are held (SPEC 5: timeouts and a cap that sheds).
#[derive(Debug, Clone)]
pub struct Http {
    /// A connection must send a whole request head within this of opening.
    pub header_read_timeout: Duration,
    /// A request body must arrive whole within this.
    pub body_read_timeout: Duration,
    /// A connection with no request in progress is closed after this.
    pub idle_timeout: Duration,
    /// A response the client does not read for this long closes its connection.
    pub send_timeout: Duration,
    /// Open connections at most; `None`: half the open-file limit.
    pub max_connections: Option<usize>,
    /// Origins browsers may call the API from (CORS); none by default.
    pub cors_origins: Vec<String>,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            header_read_timeout: Duration::from_secs(20),
            body_read_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(75),
            send_timeout: Duration::from_secs(60),
            max_connections: None,
            cors_origins: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub public: bool,
    pub token: Option<Secret>,
}

/// `[ollama]`: a second listener that serves only Ollama's API, without a client key.
#[derive(Debug, Clone, Default)]
pub struct Ollama {
    /// Where it listens; none unless set.
    pub listen: Option<SocketAddr>,
    /// The client key (by name) its requests act as: its limits apply, and on an address that
    /// is not loopback a request must present that key. Unset: an unnamed local client.
    pub api_key: Option<String>,
}

// ---- the file as written ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    max_body: Option<String>,
    log: Option<String>,
    log_format: Option<String>,
    log_retention: Option<String>,
    workers: Option<usize>,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    routing: RawRouting,
    #[serde(default)]
    providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    custom: BTreeMap<String, RawCustom>,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    anthropic: RawAnthropic,
    #[serde(default)]
    gemini_api: RawGeminiApi,
    #[serde(default)]
    embeddings: Embeddings,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    ollama: RawOllama,
    #[serde(default)]
    cluster: RawCluster,
    #[serde(default)]
    store: RawStore,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    redis_url: Option<String>,
    prefix: Option<String>,
}

/// `[cluster]` (SPEC 5.1): the Redis (or Valkey) that replicas share their ledger through.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    /// `redis://[user:password@]host:port/db` (`FREEWAY_REDIS_URL` wins); `None`: one replica,
    /// its ledger in memory.
    pub redis_url: Option<Secret>,
    /// What every key Freeway writes in Redis starts with, so gateways can share one server.
    pub prefix: String,
}

/// `[store]`: where the state lives when not in SQLite under `data_dir`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    /// `postgres://user:password@host:port/db`, or `env:NAME`.
    url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGeminiApi {
    pro: Option<String>,
    flash: Option<String>,
    flash_lite: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    #[serde(default)]
    enabled: bool,
    ttl: Option<String>,
    max_bytes: Option<String>,
    #[serde(default)]
    shared: bool,
}

/// `[embeddings]` (SPEC 2.5).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Embeddings {
    /// The model `auto` means; `None`: `auto` is refused (a vector space is never chosen for
    /// the client).
    pub default: Option<String>,
}

/// `[cache]` (SPEC 2.8): exact repeats of successful requests answered from memory.
#[derive(Debug, Clone)]
pub struct Cache {
    pub enabled: bool,
    /// How long an answer is kept.
    pub ttl: Duration,
    /// Bytes of answers kept at most (the oldest go first).
    pub max_bytes: usize,
    /// One cache for every client key (else each key has its own).
    pub shared: bool,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            enabled: false,
            ttl: Duration::from_secs(3600),
            max_bytes: 64 * 1000 * 1000,
            shared: false,
        }
    }
}

/// `[cache]` as written, checked.
fn validate_cache(raw: RawCache) -> anyhow::Result<Cache> {
    let d = Cache::default();
    let ttl = duration("cache", "ttl", raw.ttl, d.ttl)?;
    let max_bytes = match raw.max_bytes {
        Some(v) => parse_size(&v).map_err(|e| anyhow::anyhow!("cache.max_bytes: {e}"))?,
        None => d.max_bytes,
    };
    Ok(Cache {
        enabled: raw.enabled,
        ttl,
        max_bytes,
        shared: raw.shared,
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOllama {
    listen: Option<String>,
    api_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAnthropic {
    opus: Option<String>,
    sonnet: Option<String>,
    haiku: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    header_read_timeout: Option<String>,
    body_read_timeout: Option<String>,
    idle_timeout: Option<String>,
    send_timeout: Option<String>,
    max_connections: Option<usize>,
    #[serde(default)]
    cors_origins: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    #[serde(default)]
    api_keys: Vec<RawFixedKey>,
    admin_password: Option<String>,
    #[serde(default)]
    limits: BTreeMap<String, RawClientLimits>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawFixedKey {
    Plain(String),
    Named { name: String, key: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientLimits {
    rpm: Option<u64>,
    rpd: Option<u64>,
    tpd: Option<u64>,
    tpmo: Option<u64>,
    concurrent: Option<u32>,
    #[serde(default)]
    models: Vec<String>,
    expires: Option<String>,
    weight: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouting {
    chain: Option<Vec<String>>,
    max_attempts: Option<u32>,
    time_budget: Option<String>,
    sticky_ttl: Option<String>,
    connect_timeout: Option<String>,
    first_byte_timeout: Option<String>,
    stall_timeout: Option<String>,
    cooldown_on_429: Option<String>,
    cooldown_on_5xx: Option<String>,
    health_interval: Option<String>,
    pacing: Option<String>,
    fairness: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    base_url: Option<String>,
    alt_base_urls: Option<Vec<String>>,
    #[serde(default)]
    keys: Vec<String>,
    enabled: Option<bool>,
    shared_quota: Option<bool>,
    account_rpm: Option<u64>,
    account_rpd: Option<u64>,
    account_tpm: Option<u64>,
    account_tpd: Option<u64>,
    account_rpmo: Option<u64>,
    account_tpmo: Option<u64>,
    account_credit: Option<u64>,
    #[serde(default)]
    models: Vec<ModelConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCustom {
    name: Option<String>,
    base_url: Option<String>,
    #[serde(default)]
    keys: Vec<String>,
    enabled: Option<bool>,
    #[serde(default)]
    models: Vec<ModelConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    #[serde(default)]
    public: bool,
    token: Option<String>,
}

/// Where the configuration comes from: a file path if any, and an environment lookup
/// (a function so tests need not touch the process environment).
pub struct Sources<'a> {
    pub file: Option<PathBuf>,
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl Config {
    /// Load from `--config` / `FREEWAY_CONFIG` / `./freeway.toml` and the process environment.
    pub fn load(cli_path: Option<&Path>) -> anyhow::Result<Config> {
        let env = |name: &str| std::env::var(name).ok();
        let file = cli_path
            .map(Path::to_path_buf)
            .or_else(|| env("FREEWAY_CONFIG").map(PathBuf::from))
            .or_else(|| {
                let default = PathBuf::from("freeway.toml");
                default.exists().then_some(default)
            });
        Config::from_sources(&Sources { file, env: &env })
    }

    /// Load from explicit sources.
    pub fn from_sources(sources: &Sources<'_>) -> anyhow::Result<Config> {
        let raw = match &sources.file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                Self::parse_raw(&text).with_context(|| format!("config file {}", path.display()))?
            }
            None => RawConfig::default(),
        };
        Self::validate(raw, sources.env)
    }

    /// Parse TOML text with the process environment (for tests of the file format).
    pub fn from_toml(text: &str, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Config> {
        Self::validate(Self::parse_raw(text)?, env)
    }

    fn parse_raw(text: &str) -> anyhow::Result<RawConfig> {
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))
    }

    fn validate(raw: RawConfig, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Config> {
        let secret = |key: &str, value: &str| resolve_secret(key, value, env);
        let listen_text = env("FREEWAY_LISTEN")
            .map(|v| ("FREEWAY_LISTEN", v))
            .or(raw.listen.map(|v| ("listen", v)))
            .unwrap_or(("listen", "127.0.0.1:3001".into()));
        let listen = listen_text.1.parse::<SocketAddr>().map_err(|_| {
            anyhow::anyhow!(
                "{}: {:?} is not an address with a port, e.g. 127.0.0.1:3001",
                listen_text.0,
                listen_text.1
            )
        })?;
        let data_dir = env("FREEWAY_DATA_DIR")
            .map(PathBuf::from)
            .or(raw.data_dir)
            .unwrap_or_else(|| PathBuf::from("./freeway-data"));
        let max_body = match raw.max_body {
            Some(v) => parse_size(&v).map_err(|e| anyhow::anyhow!("max_body: {e}"))?,
            None => 25 * 1000 * 1000,
        };

        let auth = validate_auth(&raw.auth, env)?;
        let routing = validate_routing(raw.routing)?;
        let providers = validate_providers(raw.providers, env)?;
        let custom = validate_custom(raw.custom, env)?;
        let http = validate_http(raw.http)?;
        let anthropic = validate_families(raw.anthropic)?;
        let gemini_api = validate_gemini_families(raw.gemini_api)?;
        let cache = validate_cache(raw.cache)?;
        let embeddings = raw.embeddings;
        if embeddings
            .default
            .as_deref()
            .is_some_and(|m| m.trim().is_empty() || m == "auto")
        {
            bail!(
                "embeddings.default: name an embedding model (e.g. \"gemini-embedding-001\"), not \"auto\""
            );
        }
        let ollama = validate_ollama(raw.ollama)?;
        let cluster = Cluster {
            redis_url: match env("FREEWAY_REDIS_URL").filter(|v| !v.is_empty()) {
                Some(v) => Some(Secret::new(v)),
                None => raw
                    .cluster
                    .redis_url
                    .as_deref()
                    .map(|v| secret("cluster.redis_url", v))
                    .transpose()?,
            },
            prefix: raw.cluster.prefix.unwrap_or_else(|| "freeway".into()),
        };
        if let Some(url) = &cluster.redis_url {
            let u = url.expose();
            if u.starts_with("rediss://") {
                bail!(
                    "cluster.redis_url: TLS to Redis (rediss://) is not built in; reach Redis over a private network or a TLS tunnel with redis://"
                );
            }
            if !(u.starts_with("redis://") || u.starts_with("unix://")) {
                bail!("cluster.redis_url: it must start with redis:// (or unix:// for a socket)");
            }
        }
        if cluster.prefix.is_empty() || cluster.prefix.contains(char::is_whitespace) {
            bail!(
                "cluster.prefix: {:?} must be a word without spaces",
                cluster.prefix
            );
        }
        let log_json = match raw.log_format.as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => bail!("log_format: {other:?} must be \"text\" or \"json\""),
        };
        let metrics = Metrics {
            public: raw.metrics.public,
            token: raw
                .metrics
                .token
                .as_deref()
                .map(|v| secret("metrics.token", v))
                .transpose()?,
        };
        let encryption_key = env("FREEWAY_ENCRYPTION_KEY")
            .filter(|v| !v.is_empty())
            .map(Secret::new);
        let log_retention = match raw.log_retention {
            Some(v) => parse_duration(&v).map_err(|e| anyhow::anyhow!("log_retention: {e}"))?,
            None => Duration::from_secs(90 * 24 * 3600),
        };
        let workers = match env("FREEWAY_WORKERS") {
            Some(v) => v.trim().parse::<usize>().map_err(|_| {
                anyhow::anyhow!("FREEWAY_WORKERS: {v:?} is not a number of threads")
            })?,
            None => raw.workers.unwrap_or(1),
        };
        if workers > 256 {
            bail!(
                "workers: {workers} is more threads than any machine here needs (0 = one per core)"
            );
        }
        let store_url = validate_store_url(raw.store.url.as_deref(), env)?;
        Ok(Config {
            store_url,
            workers,
            listen,
            data_dir,
            max_body,
            auth,
            routing,
            providers,
            custom,
            metrics,
            http,
            anthropic,
            gemini_api,
            embeddings,
            cache,
            ollama,
            cluster,
            log: env("FREEWAY_LOG").or(raw.log),
            log_json,
            encryption_key,
            log_retention,
        })
    }
}

/// A duration setting `section.key`, or its default.
fn duration(
    section: &str,
    key: &str,
    v: Option<String>,
    default: Duration,
) -> anyhow::Result<Duration> {
    match v {
        Some(v) => parse_duration(&v).map_err(|e| anyhow::anyhow!("{section}.{key}: {e}")),
        None => Ok(default),
    }
}

/// `[auth]` and `FREEWAY_API_KEY`.
fn validate_auth(raw: &RawAuth, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Auth> {
    let secret = |key: &str, value: &str| resolve_secret(key, value, env);
    let mut api_keys = Vec::new();
    for (i, k) in raw.api_keys.iter().enumerate() {
        let (name, key) = match k {
            RawFixedKey::Plain(key) => (format!("config #{}", i + 1), key),
            RawFixedKey::Named { name, key } => (name.trim().to_string(), key),
        };
        if name.is_empty() {
            bail!("auth.api_keys[{i}].name: give the key a name");
        }
        let key = secret(&format!("auth.api_keys[{i}]"), key)?;
        api_keys.push(FixedKey { name, key });
    }
    if let Some(k) = env("FREEWAY_API_KEY").filter(|k| !k.is_empty()) {
        api_keys.push(FixedKey {
            name: format!("config #{}", api_keys.len() + 1),
            key: Secret::new(k),
        });
    }
    for k in &api_keys {
        if k.key.expose().trim().is_empty() {
            bail!("auth.api_keys: a client key must not be empty");
        }
    }
    let mut limits = BTreeMap::new();
    for (name, l) in &raw.limits {
        let expires_ms = l
            .expires
            .as_deref()
            .map(parse_expiry)
            .transpose()
            .map_err(|e| anyhow::anyhow!("auth.limits.{name}.expires: {e}"))?;
        let limit = ClientLimits {
            rpm: l.rpm,
            rpd: l.rpd,
            tpd: l.tpd,
            tpmo: l.tpmo,
            concurrent: l.concurrent,
            models: l.models.iter().map(|m| m.trim().to_string()).collect(),
            expires_ms,
            weight: l.weight,
        };
        limit
            .check()
            .map_err(|e| anyhow::anyhow!("auth.limits.{name}: {e}"))?;
        limits.insert(name.clone(), limit);
    }
    let admin_password = raw
        .admin_password
        .as_deref()
        .map(|v| secret("auth.admin_password", v))
        .transpose()?;

    Ok(Auth {
        api_keys,
        admin_password,
        limits,
    })
}

/// `[routing]`.
fn validate_routing(r: RawRouting) -> anyhow::Result<Routing> {
    let d = Routing::default();
    let dur =
        |key: &str, v: Option<String>, default: Duration| duration("routing", key, v, default);
    let routing = Routing {
        chain: r.chain.unwrap_or_default(),
        max_attempts: match r.max_attempts {
            Some(0) => bail!("routing.max_attempts: must be at least 1"),
            Some(n) => n.min(100),
            None => d.max_attempts,
        },
        time_budget: dur("time_budget", r.time_budget, d.time_budget)?,
        sticky_ttl: dur("sticky_ttl", r.sticky_ttl, d.sticky_ttl)?,
        connect_timeout: dur("connect_timeout", r.connect_timeout, d.connect_timeout)?,
        first_byte_timeout: dur(
            "first_byte_timeout",
            r.first_byte_timeout,
            d.first_byte_timeout,
        )?,
        stall_timeout: dur("stall_timeout", r.stall_timeout, d.stall_timeout)?,
        cooldown_on_429: dur("cooldown_on_429", r.cooldown_on_429, d.cooldown_on_429)?,
        cooldown_on_5xx: dur("cooldown_on_5xx", r.cooldown_on_5xx, d.cooldown_on_5xx)?,
        health_interval: dur("health_interval", r.health_interval, d.health_interval)?,
        pacing: match r.pacing.as_deref() {
            None => Pacing::default(),
            Some("off") => Pacing::Off,
            Some("even") => Pacing::Even,
            Some("demand") => Pacing::Demand,
            Some(other) => {
                bail!("routing.pacing: {other:?} must be \"off\", \"even\" or \"demand\"")
            }
        },
        fairness: match r.fairness.as_deref() {
            None | Some("weighted") => Fairness::Weighted,
            Some("off") => Fairness::Off,
            Some(other) => {
                bail!("routing.fairness: {other:?} must be \"weighted\" or \"off\"")
            }
        },
    };
    for (i, entry) in routing.chain.iter().enumerate() {
        if !entry.contains('/') {
            bail!(
                "routing.chain[{i}]: {entry:?} must be <provider>/<model>, e.g. groq/llama-3.3-70b-versatile"
            );
        }
    }

    Ok(routing)
}

/// `[providers.*]`.
fn validate_providers(
    raw: BTreeMap<String, RawProvider>,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<BTreeMap<String, ProviderConfig>> {
    let secret = |key: &str, value: &str| resolve_secret(key, value, env);
    let mut providers = BTreeMap::new();
    for (id, p) in raw {
        let keys = p
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| secret(&format!("providers.{id}.keys[{i}]"), k))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if let Some(url) = &p.base_url {
            check_url(&format!("providers.{id}.base_url"), url)?;
        }
        for (i, url) in p.alt_base_urls.iter().flatten().enumerate() {
            check_url(&format!("providers.{id}.alt_base_urls[{i}]"), url)?;
        }
        check_models(&format!("providers.{id}"), &p.models)?;
        providers.insert(
            id,
            ProviderConfig {
                base_url: p.base_url,
                alt_base_urls: p.alt_base_urls,
                keys,
                enabled: p.enabled,
                shared_quota: p.shared_quota,
                account: AccountCaps {
                    account_rpm: p.account_rpm,
                    account_rpd: p.account_rpd,
                    account_tpm: p.account_tpm,
                    account_tpd: p.account_tpd,
                    account_rpmo: p.account_rpmo,
                    account_tpmo: p.account_tpmo,
                    account_credit: p.account_credit,
                },
                models: p.models,
            },
        );
    }
    Ok(providers)
}

/// `[custom.*]`: OpenAI-compatible endpoints of the user's own.
fn validate_custom(
    raw: BTreeMap<String, RawCustom>,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<BTreeMap<String, CustomConfig>> {
    let secret = |key: &str, value: &str| resolve_secret(key, value, env);
    let mut custom = BTreeMap::new();
    for (id, c) in raw {
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("custom.{id}: the endpoint id may hold only letters, digits, '-' and '_'");
        }
        let Some(base_url) = c.base_url else {
            bail!("custom.{id}.base_url: missing (e.g. \"http://127.0.0.1:11434/v1\")");
        };
        check_url(&format!("custom.{id}.base_url"), &base_url)?;
        let keys = c
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| secret(&format!("custom.{id}.keys[{i}]"), k))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if c.models.is_empty() {
            bail!("custom.{id}.models: list at least one model, e.g. [{{ id = \"qwen3:8b\" }}]");
        }
        check_models(&format!("custom.{id}"), &c.models)?;
        custom.insert(
            id,
            CustomConfig {
                name: c.name,
                base_url,
                keys,
                enabled: c.enabled,
                models: c.models,
            },
        );
    }
    Ok(custom)
}

/// `[http]`: the client connections' clocks and cap, CORS.
fn validate_http(h: RawHttp) -> anyhow::Result<Http> {
    let dh = Http::default();
    let http_dur =
        |key: &str, v: Option<String>, default: Duration| duration("http", key, v, default);
    let http = Http {
        header_read_timeout: http_dur(
            "header_read_timeout",
            h.header_read_timeout,
            dh.header_read_timeout,
        )?,
        body_read_timeout: http_dur(
            "body_read_timeout",
            h.body_read_timeout,
            dh.body_read_timeout,
        )?,
        idle_timeout: http_dur("idle_timeout", h.idle_timeout, dh.idle_timeout)?,
        send_timeout: http_dur("send_timeout", h.send_timeout, dh.send_timeout)?,
        max_connections: match h.max_connections {
            Some(0) => bail!("http.max_connections: must be at least 1"),
            n => n,
        },
        cors_origins: h.cors_origins,
    };
    for (key, d) in [
        ("header_read_timeout", http.header_read_timeout),
        ("body_read_timeout", http.body_read_timeout),
        ("idle_timeout", http.idle_timeout),
        ("send_timeout", http.send_timeout),
    ] {
        if d.is_zero() {
            bail!("http.{key}: must be longer than 0");
        }
    }
    Ok(http)
}

/// `[anthropic]`: where unknown `claude-*` ids go.
fn validate_families(raw: RawAnthropic) -> anyhow::Result<Families> {
    let fam = |key: &str, v: Option<String>| -> anyhow::Result<String> {
        match v {
            None => Ok("auto".into()),
            Some(v) if v.trim().is_empty() => {
                bail!("anthropic.{key}: name a model (e.g. \"gpt-oss-120b\") or \"auto\"")
            }
            Some(v) => Ok(v.trim().to_string()),
        }
    };
    let anthropic = Families {
        opus: fam("opus", raw.opus)?,
        sonnet: fam("sonnet", raw.sonnet)?,
        haiku: fam("haiku", raw.haiku)?,
    };
    Ok(anthropic)
}

/// `[ollama]`: the listener's address, and the client key it requires off loopback.
fn validate_ollama(raw: RawOllama) -> anyhow::Result<Ollama> {
    let api_key = match raw.api_key {
        Some(name) if name.trim().is_empty() => {
            bail!("ollama.api_key: name a client key (e.g. \"laptop\"), or leave it out")
        }
        other => other.map(|n| n.trim().to_string()),
    };
    let listen = match raw.listen {
        None => None,
        Some(text) => Some(text.parse::<SocketAddr>().map_err(|_| {
            anyhow::anyhow!(
                "ollama.listen: {text:?} is not an address with a port, e.g. 127.0.0.1:11434"
            )
        })?),
    };
    if let Some(addr) = listen {
        if !addr.ip().is_loopback() && api_key.is_none() {
            bail!(
                "ollama.listen: {addr} is not a loopback address, and the Ollama listener takes no client key; \
                 listen on 127.0.0.1, or set [ollama] api_key to the name of a client key that clients there must present"
            );
        }
    }
    Ok(Ollama { listen, api_key })
}

/// `[gemini_api]`: where unknown `gemini-*` ids go.
fn validate_gemini_families(raw: RawGeminiApi) -> anyhow::Result<GeminiFamilies> {
    let fam = |key: &str, v: Option<String>| -> anyhow::Result<String> {
        match v {
            None => Ok("auto".into()),
            Some(v) if v.trim().is_empty() => {
                bail!("gemini_api.{key}: name a model (e.g. \"gpt-oss-120b\") or \"auto\"")
            }
            Some(v) => Ok(v.trim().to_string()),
        }
    };
    Ok(GeminiFamilies {
        pro: fam("pro", raw.pro)?,
        flash: fam("flash", raw.flash)?,
        flash_lite: fam("flash_lite", raw.flash_lite)?,
    })
}

fn resolve_secret(
    key: &str,
    value: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Secret> {
    match value.strip_prefix("env:") {
        Some(name) => match env(name) {
            Some(v) if !v.is_empty() => Ok(Secret::new(v)),
            _ => bail!("{key}: refers to environment variable {name}, which is not set"),
        },
        None => Ok(Secret::new(value)),
    }
}

/// `FREEWAY_STORE_URL` (wins) or `[store] url`: a PostgreSQL url; none = SQLite.
fn validate_store_url(
    raw: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<Secret>> {
    let (key, url) = match env("FREEWAY_STORE_URL").filter(|v| !v.is_empty()) {
        Some(v) => ("FREEWAY_STORE_URL", Secret::new(v)),
        None => match raw {
            Some(v) => ("store.url", resolve_secret("store.url", v, env)?),
            None => return Ok(None),
        },
    };
    let text = url.expose();
    if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
        bail!(
            "{key}: {:?} must be a PostgreSQL url, postgres://user:password@host:port/database",
            crate::store::redact(text)
        );
    }
    Ok(Some(url))
}

fn check_url(key: &str, url: &str) -> anyhow::Result<()> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("{key}: {url:?} must start with http:// or https://");
    }
    Ok(())
}

fn check_models(prefix: &str, models: &[ModelConfig]) -> anyhow::Result<()> {
    for (i, m) in models.iter().enumerate() {
        if m.id.trim().is_empty() {
            bail!("{prefix}.models[{i}].id: must not be empty");
        }
        if m.context == Some(0) {
            bail!("{prefix}.models[{i}].context: must be more than 0");
        }
    }
    Ok(())
}

/// Where `claude-*` ids Freeway does not know go, by family (`[anthropic]` in the config).
#[derive(Debug, Clone)]
pub struct Families {
    pub opus: String,
    pub sonnet: String,
    pub haiku: String,
}

impl Default for Families {
    fn default() -> Self {
        Families {
            opus: "auto".into(),
            sonnet: "auto".into(),
            haiku: "auto".into(),
        }
    }
}

impl Families {
    /// The model to route for `requested`: itself when `known`, else a `claude-…` id's family
    /// target (`auto` when it names no family).
    pub fn map(&self, requested: &str, known: impl Fn(&str) -> bool) -> String {
        let lower = requested.to_ascii_lowercase();
        if known(requested) || !lower.starts_with("claude") {
            return requested.to_string();
        }
        if lower.contains("opus") {
            self.opus.clone()
        } else if lower.contains("sonnet") {
            self.sonnet.clone()
        } else if lower.contains("haiku") {
            self.haiku.clone()
        } else {
            "auto".into()
        }
    }
}

/// Where `gemini-*` ids Freeway does not know go, by family (`[gemini_api]` in the config):
/// Gemini API clients (Google's SDKs, the Gemini CLI) ask for Google's newest ids.
#[derive(Debug, Clone)]
pub struct GeminiFamilies {
    pub pro: String,
    pub flash: String,
    pub flash_lite: String,
}

impl Default for GeminiFamilies {
    fn default() -> Self {
        GeminiFamilies {
            pro: "auto".into(),
            flash: "auto".into(),
            flash_lite: "auto".into(),
        }
    }
}

impl GeminiFamilies {
    /// The model to route for `requested`: itself when `known`, else a `gemini-…` id's family
    /// target (`flash-lite` before `flash`; `auto` when it names no family).
    pub fn map(&self, requested: &str, known: impl Fn(&str) -> bool) -> String {
        let lower = requested.to_ascii_lowercase();
        if known(requested) || !lower.starts_with("gemini") {
            return requested.to_string();
        }
        if lower.contains("flash-lite") || lower.contains("flash_lite") {
            self.flash_lite.clone()
        } else if lower.contains("flash") {
            self.flash.clone()
        } else if lower.contains("pro") {
            self.pro.clone()
        } else {
            "auto".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_ollama_listener_stays_on_loopback_unless_it_requires_a_key() {
        let c = Config::from_toml("", &no_env).unwrap();
        assert!(c.ollama.listen.is_none() && c.ollama.api_key.is_none());
        let c = Config::from_toml("[ollama]\nlisten = \"127.0.0.1:11434\"", &no_env).unwrap();
        assert_eq!(c.ollama.listen.unwrap().port(), 11434);
        let err = Config::from_toml("[ollama]\nlisten = \"0.0.0.0:11434\"", &no_env).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("ollama.listen") && msg.contains("api_key"),
            "{msg}"
        );
        let c = Config::from_toml(
            "[ollama]\nlisten = \"0.0.0.0:11434\"\napi_key = \"laptop\"",
            &no_env,
        )
        .unwrap();
        assert_eq!(c.ollama.api_key.as_deref(), Some("laptop"));
        for bad in [
            "[ollama]\nlisten = \"nowhere\"",
            "[ollama]\napi_key = \" \"",
            "[ollama]\nport = 1",
        ] {
            assert!(Config::from_toml(bad, &no_env).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_need_nothing() {
        let c = Config::from_toml("", &no_env).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:3001");
        assert_eq!(c.data_dir, PathBuf::from("./freeway-data"));
        assert_eq!(c.max_body, 25_000_000);
        assert_eq!(c.routing.max_attempts, 20);
        assert_eq!(c.routing.sticky_ttl, Duration::from_secs(1800));
        assert_eq!(c.workers, 1);
    }

    #[test]
    fn gemini_api_families_default_to_auto_and_take_a_model() {
        let c = Config::from_toml("", &no_env).unwrap();
        assert_eq!(c.gemini_api.pro, "auto");
        assert_eq!(c.gemini_api.flash_lite, "auto");
        let c = Config::from_toml(
            "[gemini_api]\npro = \"gpt-oss-120b\"\nflash_lite = \" groq/x \"\n",
            &no_env,
        )
        .unwrap();
        assert_eq!(c.gemini_api.pro, "gpt-oss-120b");
        assert_eq!(c.gemini_api.flash, "auto");
        assert_eq!(c.gemini_api.flash_lite, "groq/x");
        let err = Config::from_toml("[gemini_api]\nflash = \"\"\n", &no_env).unwrap_err();
        assert!(err.to_string().contains("gemini_api.flash"), "{err}");
        let err = Config::from_toml("[gemini_api]\nultra = \"x\"\n", &no_env).unwrap_err();
        assert!(format!("{err:#}").contains("ultra"), "{err:#}");
    }

    #[test]
    fn the_spec_example_parses() {
        let text = r#"
listen   = "127.0.0.1:3001"
data_dir = "./freeway-data"
max_body = "25MB"
[auth]
api_keys = ["fw-test-123"]
[routing]
chain            = ["groq/llama-3.3-70b-versatile", "google/gemini-2.5-flash"]
max_attempts     = 20
time_budget      = "45s"
sticky_ttl       = "30m"
connect_timeout  = "10s"
first_byte_timeout = "60s"
stall_timeout    = "90s"
cooldown_on_429  = "90s"
cooldown_on_5xx  = "90s"
[providers.groq]
base_url = "http://127.0.0.1:9000/openai/v1"
keys     = ["gsk_abc", "env:GROQ_KEY_2"]
enabled  = true
[[providers.groq.models]]
id = "llama-3.3-70b-versatile"
rpm = 30
rpd = 1000
tpm = 12000
tpd = 100000
context = 131072
[custom.local]
base_url = "http://127.0.0.1:11434/v1"
keys     = []
models   = [{ id = "qwen3:8b", tools = true, context = 32768 }]
[metrics]
public = false
"#;
        let env = |n: &str| (n == "GROQ_KEY_2").then(|| "gsk_from_env".to_string());
        let c = Config::from_toml(text, &env).unwrap();
        let groq = &c.providers["groq"];
        assert_eq!(groq.keys[1].expose(), "gsk_from_env");
        assert_eq!(groq.models[0].tpm, Some(12000));
        assert_eq!(c.custom["local"].models[0].context, Some(32768));
        assert_eq!(c.routing.chain.len(), 2);
        assert_eq!(c.auth.api_keys[0].key.expose(), "fw-test-123");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::from_toml("lisen = \"x\"", &no_env).unwrap_err();
        assert!(format!("{err:#}").contains("lisen"), "{err:#}");
        let err = Config::from_toml("[routing]\nmax_attempt = 3", &no_env).unwrap_err();
        assert!(format!("{err:#}").contains("max_attempt"), "{err:#}");
        let err = Config::from_toml("[[providers.groq.models]]\nid = \"x\"\nrmp = 3", &no_env)
            .unwrap_err();
        assert!(format!("{err:#}").contains("rmp"), "{err:#}");
    }

    #[test]
    fn bad_values_name_the_key_and_problem() {
        let err =
            Config::from_toml("[routing]\ntime_budget = \"45 parsecs\"", &no_env).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("routing.time_budget") && msg.contains("parsecs"),
            "{msg}"
        );
        let err = Config::from_toml("max_body = \"lots\"", &no_env).unwrap_err();
        assert!(format!("{err:#}").contains("max_body"));
        let err = Config::from_toml("listen = \"nowhere\"", &no_env).unwrap_err();
        assert!(format!("{err:#}").contains("listen"));
        let err =
            Config::from_toml("[providers.groq]\nkeys = [\"env:NOPE\"]", &no_env).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("providers.groq.keys[0]") && msg.contains("NOPE"),
            "{msg}"
        );
        let err = Config::from_toml("[routing]\nmax_attempts = \"many\"", &no_env).unwrap_err();
        assert!(format!("{err:#}").contains("max_attempts"));
        let err = Config::from_toml("[custom.x]\nmodels = [{id = \"m\"}]", &no_env).unwrap_err();
        assert!(format!("{err:#}").contains("custom.x.base_url"));
    }

    #[test]
    fn environment_wins_over_the_file() {
        let env = |n: &str| match n {
            "FREEWAY_LISTEN" => Some("127.0.0.1:4000".to_string()),
            "FREEWAY_DATA_DIR" => Some("/tmp/fw".to_string()),
            "FREEWAY_API_KEY" => Some("fw-env".to_string()),
            _ => None,
        };
        let c = Config::from_toml("listen = \"127.0.0.1:5000\"\ndata_dir = \"x\"", &env).unwrap();
        assert_eq!(c.listen.port(), 4000);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/fw"));
        assert_eq!(c.auth.api_keys[0].key.expose(), "fw-env");
    }

    #[test]
    fn the_store_url_from_the_file_an_env_reference_or_the_environment() {
        let none = |_: &str| None;
        assert!(Config::from_toml("", &none).unwrap().store_url.is_none());
        let file = "[store]\nurl = \"postgres://fw:pw@db/freeway\"";
        let c = Config::from_toml(file, &none).unwrap();
        assert_eq!(c.store_url.unwrap().expose(), "postgres://fw:pw@db/freeway");
        let env = |n: &str| match n {
            "DB_URL" => Some("postgresql://fw:pw@db2/freeway".to_string()),
            "FREEWAY_STORE_URL" => Some("postgres://env@db3/freeway".to_string()),
            _ => None,
        };
        let c = Config::from_toml("[store]\nurl = \"env:DB_URL\"", &|n| {
            (n == "DB_URL").then(|| env(n)).flatten()
        })
        .unwrap();
        assert_eq!(
            c.store_url.unwrap().expose(),
            "postgresql://fw:pw@db2/freeway"
        );
        let c = Config::from_toml(file, &env).unwrap();
        assert_eq!(
            c.store_url.unwrap().expose(),
            "postgres://env@db3/freeway",
            "the environment wins"
        );
        let err = Config::from_toml("[store]\nurl = \"mysql://fw:hunter2@db/x\"", &none)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("store.url") && !err.contains("hunter2"),
            "{err}"
        );
        assert!(Config::from_toml("[store]\nurl = \"env:MISSING\"", &none).is_err());
        assert!(Config::from_toml("[store]\nuri = \"x\"", &none).is_err());
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let s = Secret::new("gsk_supersecret");
        assert!(!format!("{s:?}").contains("supersecret"));
    }

    #[test]
    fn the_cluster_url_is_checked_and_the_environment_wins() {
        let c = Config::from_toml(
            "[cluster]\nredis_url = \"redis://127.0.0.1:6379/0\"\n",
            &no_env,
        )
        .unwrap();
        assert_eq!(c.cluster.prefix, "freeway");
        assert!(c.cluster.redis_url.is_some());
        let e = Config::from_toml("[cluster]\nredis_url = \"rediss://u:pw@h/0\"\n", &no_env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("rediss") && !e.contains("pw@"), "{e}");
        assert!(Config::from_toml("[cluster]\nredis_url = \"http://h\"\n", &no_env).is_err());
        assert!(Config::from_toml("[cluster]\nprefix = \"a b\"\n", &no_env).is_err());
        let env = |k: &str| (k == "FREEWAY_REDIS_URL").then(|| "redis://other:6379".to_string());
        let c = Config::from_toml("[cluster]\nredis_url = \"redis://a\"\n", &env).unwrap();
        assert_eq!(c.cluster.redis_url.unwrap().expose(), "redis://other:6379");
    }
}
