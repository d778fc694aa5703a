//! The provider and model catalog: built-in data (`catalog.toml`, embedded) with the config's
//! overrides, added models and custom endpoints applied on top.
//!
//! Vendors that speak the OpenAI dialect differ only in data ([`Quirks`]); the catalog is the
//! one place those differences live. A catalog is immutable once built; a model's identity is
//! its reference `provider/upstream-id`, never its place in a list, so a new catalog can replace
//! a running one and everything that outlives a request (the chain, sticky sessions, usage
//! counters, the request log) still means the same model.

pub mod chain;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::config::{Config, EmbedApi, ModelConfig, Secret, Shrink};
use crate::units::parse_duration;

const BUILTIN: &str = include_str!("catalog.toml");

/// How a provider is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// `POST {base}/chat/completions`.
    Openai,
    /// Google's `generateContent` API.
    Gemini,
}

/// How the key travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthStyle {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// `x-goog-api-key: <key>`.
    Goog,
    /// No key at all (local endpoints).
    None,
}

/// When a provider's daily counters start again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reset {
    /// A rolling 24-hour window.
    Rolling,
    /// Midnight in this time zone.
    Midnight(chrono_tz::Tz),
}

/// Request and token limits of one pool. `None` = no published limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub rpm: Option<u64>,
    pub rpd: Option<u64>,
    pub tpm: Option<u64>,
    pub tpd: Option<u64>,
    /// Requests per calendar month (in the provider's reset zone; UTC for rolling providers).
    pub rpmo: Option<u64>,
    /// Tokens per calendar month.
    pub tpmo: Option<u64>,
    /// A one-time credit of tokens: spent, it never comes back.
    pub credit: Option<u64>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }
}

/// What an OpenAI-dialect vendor does differently, as data.
#[derive(Debug, Clone, Default)]
pub struct Quirks {
    /// Request fields the vendor rejects.
    pub drop_params: Vec<String>,
    /// Request fields the vendor spells differently (from → to).
    pub rename_params: Vec<(String, String)>,
    /// Ceiling for `max_tokens` / `max_completion_tokens`.
    pub max_tokens_cap: Option<u64>,
    /// Extra headers on every request.
    pub headers: Vec<(String, String)>,
    /// Message content must be a plain string.
    pub flatten_content: bool,
    /// The key is `account_id:token`; the account id fills `{account_id}` in the base URL.
    pub account_in_url: bool,
    /// Other hosts a key may belong to.
    pub alt_base_urls: Vec<String>,
    /// Fields set on requests that carry tools.
    pub tool_params: Map<String, Value>,
    /// JSON Schema keys removed from tool parameter schemas.
    pub clean_tool_schema: Vec<String>,
    /// Ask for usage in streams.
    pub stream_usage: bool,
    /// The vendor counts a request's whole `max_tokens` against its token caps up front (Groq,
    /// Cerebras): Freeway reserves the same, and clamps `max_tokens` so one request fits the
    /// per-minute token cap.
    pub reserve_max_tokens: bool,
}

/// One provider.
#[derive(Debug, Clone)]
pub struct Provider {
    pub id: String,
    pub name: String,
    pub base_url: String,
    pub dialect: Dialect,
    pub auth: AuthStyle,
    pub enabled: bool,
    pub reset: Reset,
    /// Path under `base_url`, or an absolute URL, for the cheapest credential check.
    pub key_check: String,
    pub quirks: Quirks,
    /// Caps across all models of one account (= one key).
    pub account: Limits,
    /// Overrides `routing.first_byte_timeout`.
    pub first_byte_timeout: Option<Duration>,
    /// A `[custom.*]` endpoint.
    pub custom: bool,
    /// A custom endpoint on this machine (loopback): short cooldowns, no daily quotas.
    pub local: bool,
    /// Keys from the config file or environment (never stored).
    pub config_keys: Vec<Secret>,
    /// The provider's free tier is gone (why): kept so old configs parse, never routed.
    pub retired: Option<String>,
    /// Every key counts against one pool (Google counts free limits per Cloud project, not
    /// per key): `shared_quota = true`.
    pub shared_quota: bool,
}

/// One model on one provider.
#[derive(Debug, Clone)]
pub struct Model {
    /// `provider/upstream-id`: the model's identity.
    pub reference: String,
    /// The provider's id.
    pub provider: String,
    /// Position of the provider in its catalog's list (a shortcut for [`Catalog::provider_of`]).
    provider_index: usize,
    /// The provider's own id for it.
    pub id: String,
    /// The model it is, whoever serves it.
    pub canonical: String,
    /// 1 = strongest.
    pub rank: u32,
    pub limits: Limits,
    pub context: u64,
    pub tools: bool,
    pub vision: bool,
    pub enabled: bool,
    /// The catalog says the provider shut it down (why); never routed unless the config file
    /// declares the model again.
    pub retired: Option<String>,
    /// An embedding model's facts (embedding models live in [`Catalog::embeddings`]).
    pub embed: Option<Box<Embedding>>,
}

/// What an embedding model gives and how it is called (SPEC 2.5).
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    /// The size of its vectors.
    pub dims: u32,
    /// Smaller sizes it can give.
    pub shrinks: Shrink,
    /// Inputs per upstream call.
    pub batch: usize,
    /// The request field asking for a smaller size.
    pub dims_param: String,
    /// The upstream's `input_type` values for a query and a document, if it takes one.
    pub input_types: Option<[String; 2]>,
    pub api: EmbedApi,
}

impl Embedding {
    /// May it give vectors of `size`?
    pub fn gives(&self, size: u32) -> bool {
        size == self.dims
            || match &self.shrinks {
                Shrink::Any(any) => *any && size > 0 && size < self.dims,
                Shrink::Sizes(sizes) => sizes.contains(&size),
            }
    }
}

/// Providers and models, with lookups.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub providers: Vec<Provider>,
    pub models: Vec<Model>,
    /// Embedding models: a kind of their own, never in the chat chain.
    pub embeddings: Vec<Model>,
    by_provider: HashMap<String, usize>,
    /// Reference → position in `embeddings`.
    by_embedding: HashMap<String, usize>,
    /// Reference → position in `models`.
    by_reference: HashMap<String, usize>,
}

// ---- the data file as written ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    providers: Vec<RawProvider>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    id: String,
    name: String,
    base_url: String,
    #[serde(default = "default_dialect")]
    dialect: Dialect,
    #[serde(default = "default_auth")]
    auth: AuthStyle,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    reset: Option<String>,
    #[serde(default)]
    key_check: Option<String>,
    #[serde(default)]
    drop_params: Vec<String>,
    #[serde(default)]
    rename_params: BTreeMap<String, String>,
    #[serde(default)]
    max_tokens_cap: Option<u64>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    flatten_content: bool,
    #[serde(default)]
    account_in_url: bool,
    #[serde(default)]
    alt_base_urls: Vec<String>,
    #[serde(default)]
    tool_params: Map<String, Value>,
    #[serde(default)]
    clean_tool_schema: Vec<String>,
    #[serde(default)]
    first_byte_timeout: Option<String>,
    #[serde(default = "yes")]
    stream_usage: bool,
    #[serde(default)]
    reserve_max_tokens: bool,
    account_rpm: Option<u64>,
    account_rpd: Option<u64>,
    account_tpm: Option<u64>,
    account_tpd: Option<u64>,
    account_rpmo: Option<u64>,
    account_tpmo: Option<u64>,
    account_credit: Option<u64>,
    #[serde(default)]
    retired: Option<String>,
    #[serde(default)]
    shared_quota: bool,
    #[serde(default)]
    models: Vec<ModelConfig>,
}

fn default_dialect() -> Dialect {
    Dialect::Openai
}
fn default_auth() -> AuthStyle {
    AuthStyle::Bearer
}
fn yes() -> bool {
    true
}

/// Rank given to models that do not say: after every built-in model.
const DEFAULT_RANK: u32 = 50;
const DEFAULT_CONTEXT: u64 = 32768;

impl Catalog {
    /// The built-in catalog alone.
    pub fn builtin() -> anyhow::Result<Catalog> {
        let raw: RawCatalog = toml::from_str(BUILTIN).context("built-in catalog")?;
        let mut catalog = Catalog {
            providers: Vec::new(),
            models: Vec::new(),
            embeddings: Vec::new(),
            by_provider: HashMap::new(),
            by_embedding: HashMap::new(),
            by_reference: HashMap::new(),
        };
        for p in raw.providers {
            let reset = match p.reset.as_deref() {
                None | Some("rolling") => Reset::Rolling,
                Some(tz) => Reset::Midnight(
                    tz.parse()
                        .map_err(|_| anyhow::anyhow!("catalog {}: unknown time zone {tz}", p.id))?,
                ),
            };
            let first_byte_timeout = p
                .first_byte_timeout
                .as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(|e| anyhow::anyhow!("catalog {}: first_byte_timeout: {e}", p.id))?;
            let provider = Provider {
                id: p.id.clone(),
                name: p.name,
                local: false,
                base_url: p.base_url,
                dialect: p.dialect,
                auth: p.auth,
                reset,
                key_check: p.key_check.unwrap_or_else(|| "models".into()),
                quirks: Quirks {
                    drop_params: p.drop_params,
                    rename_params: p.rename_params.into_iter().collect(),
                    max_tokens_cap: p.max_tokens_cap,
                    headers: p.headers.into_iter().collect(),
                    flatten_content: p.flatten_content,
                    account_in_url: p.account_in_url,
                    alt_base_urls: p.alt_base_urls,
                    tool_params: p.tool_params,
                    clean_tool_schema: p.clean_tool_schema,
                    stream_usage: p.stream_usage,
                    reserve_max_tokens: p.reserve_max_tokens,
                },
                account: Limits {
                    rpm: p.account_rpm,
                    rpd: p.account_rpd,
                    tpm: p.account_tpm,
                    tpd: p.account_tpd,
                    rpmo: p.account_rpmo,
                    tpmo: p.account_tpmo,
                    credit: p.account_credit,
                },
                first_byte_timeout,
                custom: false,
                config_keys: Vec::new(),
                enabled: p.enabled && p.retired.is_none(),
                retired: p.retired,
                shared_quota: p.shared_quota,
            };
            let idx = catalog.push_provider(provider)?;
            for m in &p.models {
                catalog.upsert_model(idx, m);
            }
        }
        Ok(catalog)
    }

    /// The built-in catalog with the config applied.
    pub fn from_config(config: &Config) -> anyhow::Result<Catalog> {
        let mut catalog = Catalog::builtin()?;
        for (id, pc) in &config.providers {
            let Some(idx) = catalog.provider_index(id) else {
                let known: Vec<&str> = catalog.providers.iter().map(|p| p.id.as_str()).collect();
                bail!(
                    "providers.{id}: unknown provider (known: {}); use [custom.{id}] for your own endpoint",
                    known.join(", ")
                );
            };
            let p = &mut catalog.providers[idx];
            if let Some(url) = &pc.base_url {
                p.base_url = url.trim_end_matches('/').to_string();
                // A base URL override points at one host; the alternates belong to the default.
                p.quirks.alt_base_urls.clear();
            }
            if let Some(alts) = &pc.alt_base_urls {
                p.quirks.alt_base_urls = alts
                    .iter()
                    .map(|u| u.trim_end_matches('/').to_string())
                    .collect();
            }
            if let Some(enabled) = pc.enabled {
                // A retired provider stays off: its free tier is gone.
                p.enabled = enabled && p.retired.is_none();
            }
            if let Some(shared) = pc.shared_quota {
                p.shared_quota = shared;
            }
            let a = &pc.account;
            let account = &mut p.account;
            for (cap, given) in [
                (&mut account.rpm, a.account_rpm),
                (&mut account.rpd, a.account_rpd),
                (&mut account.tpm, a.account_tpm),
                (&mut account.tpd, a.account_tpd),
                (&mut account.rpmo, a.account_rpmo),
                (&mut account.tpmo, a.account_tpmo),
                (&mut account.credit, a.account_credit),
            ] {
                if given.is_some() {
                    *cap = given;
                }
            }
            p.config_keys = pc.keys.clone();
            for m in &pc.models {
                // A model the config file declares is the user's: a catalog retirement no
                // longer applies (the config may retire it itself).
                catalog.upsert_model(idx, m);
                if let Some(model) = catalog.model_mut(idx, &m.id) {
                    model.retired = m.retired.clone();
                }
            }
        }
        for (id, cc) in &config.custom {
            if catalog.provider_index(id).is_some() {
                bail!("custom.{id}: {id} is a built-in provider id; pick another name");
            }
            let provider = Provider {
                id: id.clone(),
                name: cc.name.clone().unwrap_or_else(|| id.clone()),
                base_url: cc.base_url.trim_end_matches('/').to_string(),
                dialect: Dialect::Openai,
                auth: AuthStyle::Bearer,
                enabled: cc.enabled.unwrap_or(true),
                reset: Reset::Rolling,
                key_check: "models".into(),
                quirks: Quirks {
                    stream_usage: true,
                    ..Quirks::default()
                },
                account: Limits::default(),
                first_byte_timeout: None,
                custom: true,
                local: is_loopback(&cc.base_url),
                config_keys: cc.keys.clone(),
                retired: None,
                shared_quota: false,
            };
            let idx = catalog.push_provider(provider)?;
            for m in &cc.models {
                catalog.upsert_model(idx, m);
            }
        }
        Ok(catalog)
    }

    fn push_provider(&mut self, provider: Provider) -> anyhow::Result<usize> {
        if self.by_provider.contains_key(&provider.id) {
            bail!("provider {} is defined twice", provider.id);
        }
        let idx = self.providers.len();
        self.by_provider.insert(provider.id.clone(), idx);
        self.providers.push(provider);
        Ok(idx)
    }

    fn upsert_model(&mut self, provider_index: usize, m: &ModelConfig) {
        let provider = self.providers[provider_index].id.clone();
        let reference = format!("{provider}/{}", m.id);
        if m.dims.is_some() || self.by_embedding.contains_key(&reference) {
            self.upsert_embedding(provider_index, reference, m);
            return;
        }
        if let Some(&i) = self.by_reference.get(&reference) {
            let e = &mut self.models[i];
            if let Some(v) = &m.canonical {
                e.canonical = v.clone();
            }
            e.rank = m.rank.unwrap_or(e.rank);
            e.tools = m.tools.unwrap_or(e.tools);
            e.vision = m.vision.unwrap_or(e.vision);
            e.enabled = m.enabled.unwrap_or(e.enabled);
            e.context = m.context.unwrap_or(e.context);
            e.limits.rpm = m.rpm.or(e.limits.rpm);
            e.limits.rpd = m.rpd.or(e.limits.rpd);
            e.limits.tpm = m.tpm.or(e.limits.tpm);
            e.limits.tpd = m.tpd.or(e.limits.tpd);
            e.limits.rpmo = m.rpmo.or(e.limits.rpmo);
            e.limits.tpmo = m.tpmo.or(e.limits.tpmo);
            e.limits.credit = m.credit.or(e.limits.credit);
            return;
        }
        self.by_reference
            .insert(reference.clone(), self.models.len());
        self.models.push(Model {
            reference,
            provider,
            provider_index,
            id: m.id.clone(),
            canonical: m.canonical.clone().unwrap_or_else(|| canonical_of(&m.id)),
            rank: m.rank.unwrap_or(DEFAULT_RANK),
            limits: Limits {
                rpm: m.rpm,
                rpd: m.rpd,
                tpm: m.tpm,
                tpd: m.tpd,
                rpmo: m.rpmo,
                tpmo: m.tpmo,
                credit: m.credit,
            },
            context: m.context.unwrap_or(DEFAULT_CONTEXT),
            tools: m.tools.unwrap_or(false),
            vision: m.vision.unwrap_or(false),
            enabled: m.enabled.unwrap_or(true),
            retired: m.retired.clone(),
            embed: None,
        });
    }

    /// An embedding model added, or its facts overridden.
    fn upsert_embedding(&mut self, provider_index: usize, reference: String, m: &ModelConfig) {
        let provider = &self.providers[provider_index];
        let default_api = match provider.dialect {
            Dialect::Gemini => EmbedApi::Gemini,
            Dialect::Openai => EmbedApi::Openai,
        };
        if let Some(&i) = self.by_embedding.get(&reference) {
            let e = &mut self.embeddings[i];
            let limits = &mut e.limits;
            limits.rpm = m.rpm.or(limits.rpm);
            limits.rpd = m.rpd.or(limits.rpd);
            limits.tpm = m.tpm.or(limits.tpm);
            limits.tpd = m.tpd.or(limits.tpd);
            limits.rpmo = m.rpmo.or(limits.rpmo);
            limits.tpmo = m.tpmo.or(limits.tpmo);
            limits.credit = m.credit.or(limits.credit);
            e.enabled = m.enabled.unwrap_or(e.enabled);
            e.context = m.context.unwrap_or(e.context);
            if let Some(v) = &m.canonical {
                e.canonical = v.clone();
            }
            if let Some(embed) = e.embed.as_deref_mut() {
                embed.dims = m.dims.unwrap_or(embed.dims);
                embed.shrinks = m.shrinks.clone().unwrap_or(embed.shrinks.clone());
                embed.batch = m.batch.unwrap_or(embed.batch).max(1);
                embed.dims_param = m.dims_param.clone().unwrap_or(embed.dims_param.clone());
                embed.input_types = m.input_types.clone().or(embed.input_types.clone());
                embed.api = m.embed_api.unwrap_or(embed.api);
            }
            return;
        }
        let api = m.embed_api.unwrap_or(default_api);
        let embed = Embedding {
            dims: m.dims.unwrap_or(0),
            shrinks: m.shrinks.clone().unwrap_or(Shrink::Any(false)),
            batch: m
                .batch
                .unwrap_or(match api {
                    EmbedApi::Gemini => 100,
                    EmbedApi::Cohere => 96,
                    EmbedApi::Openai => 64,
                })
                .max(1),
            dims_param: m.dims_param.clone().unwrap_or_else(|| "dimensions".into()),
            input_types: m.input_types.clone(),
            api,
        };
        self.by_embedding
            .insert(reference.clone(), self.embeddings.len());
        self.embeddings.push(Model {
            reference,
            provider: provider.id.clone(),
            provider_index,
            id: m.id.clone(),
            canonical: m.canonical.clone().unwrap_or_else(|| canonical_of(&m.id)),
            rank: m.rank.unwrap_or(DEFAULT_RANK),
            limits: Limits {
                rpm: m.rpm,
                rpd: m.rpd,
                tpm: m.tpm,
                tpd: m.tpd,
                rpmo: m.rpmo,
                tpmo: m.tpmo,
                credit: m.credit,
            },
            context: m.context.unwrap_or(DEFAULT_CONTEXT),
            tools: false,
            vision: false,
            enabled: m.enabled.unwrap_or(true),
            retired: m.retired.clone(),
            embed: Some(Box::new(embed)),
        });
    }

    /// An embedding model by its reference (`provider/id` or `provider/canonical`).
    pub fn embedding(&self, reference: &str) -> Option<&Model> {
        if let Some(&i) = self.by_embedding.get(reference) {
            return Some(&self.embeddings[i]);
        }
        let (provider, model) = reference.split_once('/')?;
        let p = self.provider_index(provider)?;
        self.embeddings
            .iter()
            .find(|m| m.provider_index == p && (m.id == model || m.canonical == model))
    }

    fn model_mut(&mut self, provider_index: usize, id: &str) -> Option<&mut Model> {
        let reference = format!("{}/{id}", self.providers[provider_index].id);
        if let Some(&i) = self.by_embedding.get(&reference) {
            return Some(&mut self.embeddings[i]);
        }
        let i = *self.by_reference.get(&reference)?;
        Some(&mut self.models[i])
    }

    fn provider_index(&self, id: &str) -> Option<usize> {
        self.by_provider.get(id).copied()
    }

    pub fn provider(&self, id: &str) -> Option<&Provider> {
        self.provider_index(id).map(|i| &self.providers[i])
    }

    /// The provider that serves `model` (a model of this catalog).
    pub fn provider_of(&self, model: &Model) -> &Provider {
        &self.providers[model.provider_index]
    }

    /// Position of a provider in the catalog's order (ties in the default chain).
    pub fn provider_position(&self, model: &Model) -> usize {
        model.provider_index
    }

    /// A model by its reference: `provider/upstream-id`, or `provider/canonical-id`.
    pub fn model(&self, reference: &str) -> Option<&Model> {
        if let Some(&i) = self.by_reference.get(reference) {
            return Some(&self.models[i]);
        }
        let (provider, model) = reference.split_once('/')?;
        let p = self.provider_index(provider)?;
        self.models
            .iter()
            .find(|m| m.provider_index == p && (m.id == model || m.canonical == model))
    }
}

/// A model's canonical id when the catalog does not name one: the upstream id without any
/// vendor prefix or `:free` suffix, lower-cased.
pub fn canonical_of(upstream: &str) -> String {
    let base = upstream.rsplit('/').next().unwrap_or(upstream);
    let base = base.strip_suffix(":free").unwrap_or(base);
    base.to_ascii_lowercase()
}

fn is_loopback(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_has_every_provider() {
        let c = Catalog::builtin().unwrap();
        for id in [
            "google",
            "groq",
            "cerebras",
            "sambanova",
            "mistral",
            "openrouter",
            "github",
            "cloudflare",
            "cohere",
            "zhipu",
            "nvidia",
            "huggingface",
            "ollama",
        ] {
            assert!(c.provider(id).is_some(), "{id} missing");
        }
        assert_eq!(c.models.len(), 41);
        assert!(c.provider("github").unwrap().retired.is_some());
        assert!(!c.provider("github").unwrap().enabled);
        assert!(!c.provider("sambanova").unwrap().enabled);
        assert!(!c.provider("nvidia").unwrap().enabled);
        assert_eq!(c.provider("google").unwrap().dialect, Dialect::Gemini);
        assert!(matches!(
            c.provider("google").unwrap().reset,
            Reset::Midnight(_)
        ));
    }

    #[test]
    fn canonical_groups_follow_providers_md() {
        let c = Catalog::builtin().unwrap();
        let group = |canon: &str| {
            let mut v: Vec<String> = c
                .models
                .iter()
                .filter(|m| m.canonical == canon)
                .map(|m| m.reference.clone())
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            group("llama-3.3-70b"),
            [
                "cloudflare/@cf/meta/llama-3.3-70b-instruct-fp8-fast",
                "groq/llama-3.3-70b-versatile",
                "openrouter/meta-llama/llama-3.3-70b-instruct:free"
            ]
        );
        assert_eq!(group("gpt-oss-120b").len(), 4);
        assert_eq!(group("qwen3-coder-480b").len(), 3);
        assert_eq!(
            group("kimi-k2-instruct"),
            ["huggingface/moonshotai/Kimi-K2-Instruct"]
        );
        assert_eq!(group("qwen3-32b"), ["groq/qwen/qwen3-32b"]);
        assert_eq!(group("glm-4.5-air"), ["openrouter/z-ai/glm-4.5-air:free"]);
    }

    #[test]
    fn config_overrides_adds_and_customs() {
        let text = r#"
[providers.groq]
base_url = "http://127.0.0.1:9/v1"
keys = ["gsk_x"]
[[providers.groq.models]]
id = "llama-3.3-70b-versatile"
rpm = 3
[[providers.groq.models]]
id = "brand-new"
tools = true
[custom.local]
base_url = "http://127.0.0.1:11434/v1"
models = [{ id = "qwen3:8b", tools = true, context = 32768 }]
"#;
        let config = Config::from_toml(text, &|_| None).unwrap();
        let c = Catalog::from_config(&config).unwrap();
        let groq = c.provider("groq").unwrap();
        assert_eq!(groq.base_url, "http://127.0.0.1:9/v1");
        assert!(
            !groq.local,
            "a catalog provider behind a local proxy keeps its quotas"
        );
        let llama = c.model("groq/llama-3.3-70b-versatile").unwrap();
        assert_eq!(llama.limits.rpm, Some(3));
        assert_eq!(llama.limits.rpd, Some(1000), "other facts kept");
        let added = c.model("groq/brand-new").unwrap();
        assert_eq!(added.rank, DEFAULT_RANK);
        assert!(added.tools);
        let local = c.provider("local").unwrap();
        assert!(local.custom && local.local);
        assert!(c.model("local/qwen3:8b").is_some());
        assert!(
            c.model("groq/llama-3.3-70b").is_some(),
            "canonical after the slash"
        );
    }

    #[test]
    fn account_caps_and_project_pools_follow_the_config() {
        let c = Catalog::builtin().unwrap();
        assert!(
            !c.provider("google").unwrap().shared_quota,
            "marked by the user"
        );
        let or = c.provider("openrouter").unwrap();
        assert_eq!((or.account.rpm, or.account.rpd), (Some(20), Some(50)));
        let coder = c.model("openrouter/qwen/qwen3-coder:free").unwrap();
        assert_eq!(
            coder.limits.rpd, None,
            "the account's pool, not one per model"
        );
        let text =
            "[providers.openrouter]\naccount_rpd = 1000\n[providers.google]\nshared_quota = true\n";
        let config = Config::from_toml(text, &|_| None).unwrap();
        let c = Catalog::from_config(&config).unwrap();
        let or = c.provider("openrouter").unwrap();
        assert_eq!((or.account.rpm, or.account.rpd), (Some(20), Some(1000)));
        assert!(c.provider("google").unwrap().shared_quota);
        let typo = Config::from_toml("[providers.openrouter]\naccount_rdp = 1\n", &|_| None);
        assert!(typo.is_err(), "unknown fields are refused");
    }

    #[test]
    fn unknown_provider_in_config_is_an_error() {
        let config = Config::from_toml("[providers.nope]\nenabled = true", &|_| None).unwrap();
        let err = Catalog::from_config(&config).unwrap_err().to_string();
        assert!(err.contains("providers.nope"), "{err}");
    }
}
