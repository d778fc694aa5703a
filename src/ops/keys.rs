//! Provider keys and client keys.

use std::sync::Arc;

use super::{Error, Ops, Result};
use crate::catalog::Provider;
use crate::config::ClientLimits;
use crate::crypto;
use crate::health::{self, Verdict};
use crate::keys::{self, Status};
use crate::ledger::{Scope, short};
use crate::store::{ClientKeyRow, KeyRow};

/// Where a provider key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// Added through the CLI or the dashboard; kept sealed in the store.
    Stored,
    /// From the config file or the environment; never written anywhere.
    Config,
}

impl KeySource {
    pub fn as_str(self) -> &'static str {
        match self {
            KeySource::Stored => "stored",
            KeySource::Config => "config",
        }
    }
}

/// A provider key as people see it: masked, never whole.
#[derive(Debug, Clone)]
pub struct KeyView {
    pub id: String,
    pub provider: String,
    pub label: String,
    pub masked: String,
    pub enabled: bool,
    pub source: KeySource,
    pub status: Status,
    pub last_checked_ms: Option<i64>,
    pub last_error: Option<String>,
    /// Active cooldowns: (model, or `None` for the whole key; until, in ms; why).
    pub cooldowns: Vec<(Option<String>, i64, String)>,
}

/// A client key as people see it.
#[derive(Debug, Clone)]
pub struct ClientKeyView {
    /// `None` for fixed keys from the config or environment.
    pub id: Option<String>,
    pub name: String,
    /// The first characters, to tell keys apart.
    pub prefix: String,
    pub created_ms: Option<i64>,
    pub last_used_ms: Option<i64>,
    pub revoked: bool,
    /// Limits, allowed models, expiry and weight (SPEC 3.8).
    pub limits: ClientLimits,
    /// The limits come from `[auth.limits.NAME]` in the config (they cannot be changed here).
    pub limits_from_config: bool,
    /// What it used against its limits.
    pub usage: ClientUsage,
}

/// A client key's use of its own limits (SPEC 3.8), in UTC days and months.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientUsage {
    pub minute_requests: u64,
    pub day_requests: u64,
    pub day_tokens: u64,
    pub month_tokens: u64,
    /// When the day and the month start over (ms).
    pub day_resets_ms: i64,
    pub month_resets_ms: i64,
}

/// A change to a client key's limits: each field set (`Some(Some(v))`), cleared
/// (`Some(None)`) or left as it is (`None`).
#[derive(Debug, Clone, Default)]
pub struct LimitsPatch {
    pub rpm: Option<Option<u64>>,
    pub rpd: Option<Option<u64>>,
    pub tpd: Option<Option<u64>>,
    pub tpmo: Option<Option<u64>>,
    pub concurrent: Option<Option<u32>>,
    /// An empty list: every model.
    pub models: Option<Vec<String>>,
    pub expires_ms: Option<Option<i64>>,
    pub weight: Option<Option<u32>>,
}

impl LimitsPatch {
    /// `limits` with this change.
    pub fn apply(&self, mut limits: ClientLimits) -> ClientLimits {
        fn set<T: Copy>(field: &mut Option<T>, change: Option<Option<T>>) {
            if let Some(v) = change {
                *field = v;
            }
        }
        set(&mut limits.rpm, self.rpm);
        set(&mut limits.rpd, self.rpd);
        set(&mut limits.tpd, self.tpd);
        set(&mut limits.tpmo, self.tpmo);
        set(&mut limits.concurrent, self.concurrent);
        set(&mut limits.expires_ms, self.expires_ms);
        set(&mut limits.weight, self.weight);
        if let Some(m) = &self.models {
            limits.models = m
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
        }
        limits
    }

    pub fn is_empty(&self) -> bool {
        self.rpm.is_none()
            && self.rpd.is_none()
            && self.tpd.is_none()
            && self.tpmo.is_none()
            && self.concurrent.is_none()
            && self.models.is_none()
            && self.expires_ms.is_none()
            && self.weight.is_none()
    }
}

impl Ops {
    /// A provider by id; an unknown one is an error that names the known ones.
    pub fn provider(&self, id: &str) -> Result<Provider> {
        let catalog = self.catalog();
        catalog.provider(id).cloned().ok_or_else(|| {
            let known: Vec<&str> = catalog.providers.iter().map(|p| p.id.as_str()).collect();
            Error::Invalid(format!(
                "unknown provider {id:?}; known: {}",
                known.join(", ")
            ))
        })
    }

    /// Add a provider key; it is sealed in the store and used at once.
    pub fn add_key(&self, provider: &str, secret: &str, label: Option<&str>) -> Result<KeyView> {
        let p = self.provider(provider)?;
        let secret = secret.trim();
        if secret.is_empty() {
            return Err(Error::Invalid("the key is empty".into()));
        }
        if secret.chars().any(char::is_whitespace) {
            return Err(Error::Invalid(
                "the key contains whitespace; paste only the key".into(),
            ));
        }
        if p.quirks.account_in_url && !secret.contains(':') {
            return Err(Error::Invalid(format!(
                "a {} key is `account_id:api_token` (both parts, joined by a colon)",
                p.name
            )));
        }
        let row = keys::new_row(
            &self.sealer,
            &p.id,
            label.unwrap_or_default().trim().to_string(),
            secret,
            self.ledger.now_ms(),
        );
        self.store.insert_key(&row)?;
        self.reload()?;
        self.key(&row.id)
    }

    /// Every provider key: stored ones, then the config's.
    pub fn keys(&self) -> Result<Vec<KeyView>> {
        let mut out = Vec::new();
        for row in self.store.keys()? {
            out.push(self.stored_view(&row));
        }
        let snap = self.live.snapshot();
        for p in &snap.catalog.providers {
            for k in self.live.keys.all(&p.id) {
                if k.stored || k.secret.expose().is_empty() {
                    continue;
                }
                let h = k.health();
                out.push(KeyView {
                    id: k.id.clone(),
                    provider: p.id.clone(),
                    label: k.label.clone(),
                    masked: crypto::mask(k.secret.expose()),
                    enabled: k.enabled,
                    source: KeySource::Config,
                    status: h.status,
                    last_checked_ms: h.last_check_ms,
                    last_error: h.last_error,
                    cooldowns: self.cooldowns_of(&p.id, &k.id),
                });
            }
        }
        Ok(out)
    }

    /// One key by id or unambiguous id prefix.
    pub fn key(&self, id: &str) -> Result<KeyView> {
        let all = self.keys()?;
        let mut found: Vec<KeyView> = all.into_iter().filter(|k| k.id.starts_with(id)).collect();
        match found.len() {
            _ if id.is_empty() => Err(Error::Invalid("give a key id (see the key list)".into())),
            0 => Err(Error::NotFound(format!(
                "no key has an id starting with {id:?} (see `freeway keys list`)"
            ))),
            1 => Ok(found.remove(0)),
            n => Err(Error::Invalid(format!(
                "{n} keys have ids starting with {id:?}; give more characters"
            ))),
        }
    }

    fn stored_view(&self, row: &KeyRow) -> KeyView {
        let masked = self
            .sealer
            .open(&row.sealed, &keys::aad(&row.id, &row.provider))
            .map(|k| crypto::mask(&String::from_utf8_lossy(&k)))
            .unwrap_or_else(|_| "(undecryptable)".into());
        // This process's verdict when newer than the row's (not yet written).
        let live = self.live.keys.health(&row.id);
        let (status, last_checked_ms, last_error) = match live {
            Some(h) if h.last_check_ms >= row.last_check_ms => {
                (h.status, h.last_check_ms, h.last_error)
            }
            _ => (
                Status::parse(&row.status),
                row.last_check_ms,
                row.last_error.clone(),
            ),
        };
        KeyView {
            id: row.id.clone(),
            provider: row.provider.clone(),
            label: row.label.clone(),
            masked,
            enabled: row.enabled,
            source: KeySource::Stored,
            status,
            last_checked_ms,
            last_error,
            cooldowns: self.cooldowns_of(&row.provider, &row.id),
        }
    }

    fn cooldowns_of(&self, provider: &str, key: &str) -> Vec<(Option<String>, i64, String)> {
        self.ledger
            .cooldowns()
            .into_iter()
            .filter(|(s, _)| s.provider == provider && s.key == key)
            .map(|(s, c)| (s.model, c.until_ms, c.reason))
            .collect()
    }

    /// A stored key by id or prefix; a config key is a conflict (it lives in the file).
    fn stored_key(&self, id: &str, doing: &str) -> Result<KeyView> {
        let k = self.key(id)?;
        if k.source == KeySource::Config {
            return Err(Error::Conflict(format!(
                "key {} comes from the config file or environment; {doing} it there",
                short(&k.id)
            )));
        }
        Ok(k)
    }

    /// Remove a stored key.
    pub fn remove_key(&self, id: &str) -> Result<KeyView> {
        let k = self.stored_key(id, "remove")?;
        self.store.remove_key(&k.id)?;
        self.reload()?;
        Ok(k)
    }

    /// Enable (which also clears an `invalid` verdict) or disable a stored key.
    pub fn set_key_enabled(&self, id: &str, enabled: bool) -> Result<KeyView> {
        let k = self.stored_key(id, if enabled { "enable" } else { "disable" })?;
        self.store.set_key_enabled(&k.id, enabled)?;
        if enabled && k.status == Status::Invalid {
            // The user says it is good again: forget this process's verdict too.
            self.live
                .keys
                .set_status(&k.id, Status::Unknown, None, self.ledger.now_ms());
            self.live.keys.take_changed();
        }
        self.reload()?;
        self.key(&k.id)
    }

    /// Rename a stored key.
    pub fn set_key_label(&self, id: &str, label: &str) -> Result<KeyView> {
        let k = self.stored_key(id, "relabel")?;
        let label = label.trim();
        if label.chars().count() > 100 {
            return Err(Error::Invalid("a label has at most 100 characters".into()));
        }
        self.store.set_key_label(&k.id, label)?;
        self.reload()?;
        self.key(&k.id)
    }

    /// Probe keys now (every key, or those `only` accepts) and write what was found. The key
    /// lookup and the write run off the event loop (`offload::run`).
    pub async fn check(self: &Arc<Self>, only: Option<&str>) -> Result<Vec<Verdict>> {
        let target = match only {
            Some(id) => {
                let (ops, id) = (Arc::clone(self), id.to_string());
                Some(offloaded(move || ops.key(&id)).await?)
            }
            None => None,
        };
        let filter = |k: &keys::ProviderKey| target.as_ref().is_none_or(|t| t.id == k.id);
        let now = || self.ledger.now_ms();
        let verdicts = health::run(&self.live, &self.prober, &filter, &now).await;
        let ops = Arc::clone(self);
        offloaded(move || {
            ops.persist_health();
            Ok(())
        })
        .await?;
        Ok(verdicts)
    }

    /// Clear a key's cooldowns (every model's and the key's own).
    pub fn clear_cooldowns(&self, id: &str) -> Result<usize> {
        let k = self.key(id)?;
        let scopes: Vec<Scope> = self
            .ledger
            .cooldowns()
            .into_iter()
            .filter(|(s, _)| s.provider == k.provider && s.key == k.id)
            .map(|(s, _)| s)
            .collect();
        for s in &scopes {
            self.ledger.clear(s);
        }
        if let Some(c) = &self.cluster {
            // Other replicas' cooldowns of this key: those this one knows, and the key's own.
            for s in scopes.iter().chain([&Scope::key(&k.provider, &k.id)]) {
                c.clear(s);
            }
        }
        Ok(scopes.len())
    }

    // ---- client keys ----

    /// Create a client key; returns it whole, the only time it is shown.
    pub fn create_client_key(&self, name: &str) -> Result<String> {
        self.create_client_key_with(name, &LimitsPatch::default())
    }

    /// Create a client key with limits (SPEC 3.8); returns it whole, the only time it is shown.
    pub fn create_client_key_with(&self, name: &str, limits: &LimitsPatch) -> Result<String> {
        let name = name.trim();
        if name.is_empty() {
            return Err(Error::Invalid(
                "give the key a name, e.g. `freeway client-keys create laptop`".into(),
            ));
        }
        // A name is a key's identity for its limits, use and fair share: one live key each.
        let taken = self.live.clients.named(name).is_some()
            || self.config.auth.api_keys.iter().any(|k| k.name == name)
            || name == "dashboard";
        if taken {
            return Err(Error::Conflict(format!(
                "a client key named {name:?} exists already; pick another name (or revoke it first)"
            )));
        }
        let limits = self.checked(limits.apply(ClientLimits::default()))?;
        let stored = (limits != ClientLimits::default()).then_some(&limits);
        let key = create_client_key(&self.store, name, self.ledger.now_ms(), stored)?;
        self.reload()?;
        Ok(key)
    }

    /// Change the limits of the live client keys named `name`; the key as it is now.
    pub fn set_client_limits(&self, name: &str, patch: &LimitsPatch) -> Result<ClientKeyView> {
        let name = name.trim();
        let Some(current) = self.live.clients.named(name) else {
            return Err(Error::NotFound(format!(
                "no live client key is named {name:?} (see `freeway client-keys list`)"
            )));
        };
        if current.limits_from_config {
            return Err(Error::Conflict(format!(
                "the limits of `{name}` come from [auth.limits.{name}] in the config file; change them there"
            )));
        }
        if current.id.is_none() {
            return Err(Error::Conflict(format!(
                "`{name}` is a key from the config file; give it limits under [auth.limits.{name}] there"
            )));
        }
        let limits = self.checked(patch.apply(current.limits.clone()))?;
        let json = (limits != ClientLimits::default())
            .then(|| serde_json::to_string(&limits))
            .transpose()
            .map_err(|e| Error::Internal(e.into()))?;
        self.store.set_client_limits(name, json.as_deref())?;
        self.reload()?;
        self.client_keys()?
            .into_iter()
            .find(|k| k.name == name && !k.revoked)
            .ok_or_else(|| Error::NotFound(format!("{name:?} went away")))
    }

    /// Limits a person set, checked, with model patterns that name something.
    fn checked(&self, limits: ClientLimits) -> Result<ClientLimits> {
        limits.check().map_err(Error::Invalid)?;
        let snap = self.live.snapshot();
        for p in &limits.models {
            let known = match p.strip_suffix("/*") {
                Some(provider) => snap.catalog.provider(provider).is_some(),
                None => snap
                    .catalog
                    .models
                    .iter()
                    .any(|m| m.canonical == *p || m.reference == *p || m.id == *p),
            };
            if !known {
                return Err(Error::Invalid(format!(
                    "models: {p:?} is no model or provider of the catalog (a canonical id, provider/model or provider/*; see `freeway models --all`)"
                )));
            }
        }
        Ok(limits)
    }

    /// A client key's use of its own limits.
    pub fn client_usage(&self, name: &str) -> ClientUsage {
        use crate::ledger::{CLIENT_RESET, Scope, day_span, month_span};
        let now = self.ledger.now_ms();
        let u = self.ledger.usage(&Scope::client(name), CLIENT_RESET);
        let (day, month) = (day_span(CLIENT_RESET), month_span(CLIENT_RESET));
        ClientUsage {
            minute_requests: u.minute_requests,
            day_requests: u.day_requests,
            day_tokens: u.day_tokens,
            month_tokens: u.month_tokens,
            day_resets_ms: day.expiry(day.bucket_start(now)),
            month_resets_ms: month.expiry(month.bucket_start(now)),
        }
    }

    /// Client keys: stored ones (revoked too), then the config's fixed keys.
    pub fn client_keys(&self) -> Result<Vec<ClientKeyView>> {
        let mut out: Vec<ClientKeyView> = self
            .store
            .client_keys()?
            .into_iter()
            .map(|r| {
                let live = self
                    .live
                    .clients
                    .named(&r.name)
                    .filter(|_| r.revoked_ms.is_none());
                ClientKeyView {
                    limits: live.as_ref().map(|c| c.limits.clone()).unwrap_or_default(),
                    limits_from_config: live.as_ref().is_some_and(|c| c.limits_from_config),
                    usage: self.client_usage(&r.name),
                    id: Some(r.id),
                    name: r.name,
                    prefix: r.prefix,
                    created_ms: Some(r.created_ms),
                    last_used_ms: r.last_used_ms,
                    revoked: r.revoked_ms.is_some(),
                }
            })
            .collect();
        for k in &self.config.auth.api_keys {
            let limits = self.config.auth.limits.get(&k.name);
            out.push(ClientKeyView {
                limits: limits.cloned().unwrap_or_default(),
                limits_from_config: limits.is_some(),
                usage: self.client_usage(&k.name),
                id: None,
                name: k.name.clone(),
                prefix: String::new(),
                created_ms: None,
                last_used_ms: None,
                revoked: false,
            });
        }
        Ok(out)
    }

    /// Revoke client keys by name, or one by id or unambiguous id prefix; how many.
    pub fn revoke_client_key(&self, name_or_id: &str) -> Result<usize> {
        let now = self.ledger.now_ms();
        let mut n = self.store.revoke_client_key(name_or_id, now)?;
        if n == 0 && !name_or_id.is_empty() {
            // Ids are shown shortened: accept a unique prefix.
            let matches: Vec<_> = self
                .store
                .client_keys()?
                .into_iter()
                .filter(|r| r.revoked_ms.is_none() && r.id.starts_with(name_or_id))
                .collect();
            match matches.len() {
                1 => n = self.store.revoke_client_key(&matches[0].id, now)?,
                0 => {}
                m => {
                    return Err(Error::Invalid(format!(
                        "{m} client keys have ids starting with {name_or_id:?}; give more characters"
                    )));
                }
            }
        }
        if n == 0 {
            return Err(Error::NotFound(format!(
                "no active client key is named {name_or_id:?} or has that id"
            )));
        }
        self.reload()?;
        Ok(n)
    }
}

/// Create the first client key if this data directory has never had one. Returns it (to be
/// shown once) when created.
pub fn ensure_first_client_key(
    store: &crate::store::Store,
    now_ms: i64,
) -> anyhow::Result<Option<String>> {
    if store.setting("first_client_key")?.is_some() {
        return Ok(None);
    }
    let key = create_client_key(store, "default", now_ms, None)?;
    store.set_setting("first_client_key", b"created")?;
    Ok(Some(key))
}

/// Create and store a client key; returns the key (shown once, stored hashed).
fn create_client_key(
    store: &crate::store::Store,
    name: &str,
    now_ms: i64,
    limits: Option<&ClientLimits>,
) -> anyhow::Result<String> {
    let key = crypto::new_client_key();
    store.insert_client_key(&ClientKeyRow {
        id: crypto::new_id(),
        name: name.to_string(),
        hash: crypto::hash_client_key(&key),
        prefix: key.chars().take(7).collect(),
        created_ms: now_ms,
        revoked_ms: None,
        last_used_ms: None,
        limits: limits.and_then(|l| serde_json::to_string(l).ok()),
    })?;
    Ok(key)
}

/// What importing a `.env` text did.
#[derive(Debug, Clone, Default)]
pub struct Imported {
    pub added: Vec<KeyView>,
    /// (line number, why it was not imported).
    pub skipped: Vec<(usize, String)>,
}

/// Variable names that name a provider's key, besides `<PROVIDER>_API_KEY`.
const ALIASES: &[(&str, &str)] = &[
    ("GEMINI_API_KEY", "google"),
    ("GOOGLE_AI_API_KEY", "google"),
    ("GOOGLE_GENERATIVE_AI_API_KEY", "google"),
    ("GITHUB_TOKEN", "github"),
    ("GITHUB_MODELS_TOKEN", "github"),
    ("HF_TOKEN", "huggingface"),
    ("HUGGINGFACE_TOKEN", "huggingface"),
    ("HUGGING_FACE_HUB_TOKEN", "huggingface"),
    ("CO_API_KEY", "cohere"),
    ("ZAI_API_KEY", "zhipu"),
    ("Z_AI_API_KEY", "zhipu"),
    ("ZHIPUAI_API_KEY", "zhipu"),
    ("NVIDIA_NIM_API_KEY", "nvidia"),
    ("NIM_API_KEY", "nvidia"),
    ("CLOUDFLARE_API_TOKEN", "cloudflare"),
    ("CF_API_TOKEN", "cloudflare"),
];

/// Variables that hold a Cloudflare account id, to pair with its token.
const CLOUDFLARE_ACCOUNT: &[&str] = &["CLOUDFLARE_ACCOUNT_ID", "CF_ACCOUNT_ID"];

/// One `NAME=value` line of a `.env` file: `export`, quotes and trailing comments allowed.
fn env_line(line: &str) -> Option<(String, String)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
    let (name, value) = line.split_once('=')?;
    let value = value.trim();
    let value = match value.chars().next() {
        Some(q @ ('"' | '\'')) => value[1..].split(q).next().unwrap_or("").to_string(),
        _ => value.split(" #").next().unwrap_or("").trim().to_string(),
    };
    Some((name.trim().to_string(), value))
}

/// A shell variable's name: a letter or `_`, then letters, digits and `_`.
fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `GROQ_API_KEY_2` → (`GROQ_API_KEY`, `_2`): the suffix tells several keys apart.
fn split_suffix(name: &str) -> (&str, &str) {
    match name.rsplit_once('_') {
        Some((base, n)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => {
            (base, &name[base.len()..])
        }
        _ => (name, ""),
    }
}

impl Ops {
    /// Add the provider keys a `.env` text holds (`GROQ_API_KEY=...`, `GEMINI_API_KEY=...`;
    /// `_2`, `_3` for more keys of one provider).
    pub fn import_env(&self, text: &str) -> Result<Imported> {
        let catalog = self.catalog();
        let provider_of = |base: &str| -> Option<String> {
            let upper = base.to_ascii_uppercase();
            ALIASES
                .iter()
                .find(|(alias, _)| *alias == upper)
                .map(|(_, p)| p.to_string())
                .or_else(|| {
                    let id = upper.strip_suffix("_API_KEY")?.to_ascii_lowercase();
                    catalog.provider(&id).map(|p| p.id.clone())
                })
        };
        let mut out = Imported::default();
        let mut lines: Vec<(usize, String, String)> = Vec::new();
        for (i, l) in text.lines().enumerate() {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            match env_line(l).filter(|(n, _)| is_variable_name(n)) {
                Some((n, v)) => lines.push((i + 1, n, v)),
                // The line itself is not repeated: it may be a pasted key.
                None => out.skipped.push((
                    i + 1,
                    "not a NAME=value line (e.g. GROQ_API_KEY=gsk_…); nothing was read from it"
                        .into(),
                )),
            }
        }
        let account = |suffix: &str| {
            lines.iter().find_map(|(_, n, v)| {
                let (base, s) = split_suffix(n);
                (CLOUDFLARE_ACCOUNT.contains(&base.to_ascii_uppercase().as_str()) && s == suffix)
                    .then(|| v.clone())
            })
        };
        let known: Vec<String> = {
            let snap = self.live.snapshot();
            snap.catalog
                .providers
                .iter()
                .flat_map(|p| self.live.keys.all(&p.id))
                .map(|k| k.secret.expose().to_string())
                .collect()
        };
        let mut seen: Vec<String> = Vec::new();
        for (line, name, value) in &lines {
            let (base, suffix) = split_suffix(name);
            if CLOUDFLARE_ACCOUNT.contains(&base.to_ascii_uppercase().as_str()) {
                continue;
            }
            let Some(provider) = provider_of(base) else {
                out.skipped.push((
                    *line,
                    format!(
                        "{name} is not a provider key variable (e.g. GROQ_API_KEY, GEMINI_API_KEY)"
                    ),
                ));
                continue;
            };
            if value.is_empty() {
                out.skipped.push((*line, format!("{name} is empty")));
                continue;
            }
            let mut secret = value.clone();
            if provider == "cloudflare" && !secret.contains(':') {
                match account(suffix) {
                    Some(a) => secret = format!("{a}:{secret}"),
                    None => {
                        out.skipped.push((
                            *line,
                            format!("{name} needs CLOUDFLARE_ACCOUNT_ID{suffix} beside it"),
                        ));
                        continue;
                    }
                }
            }
            if known.contains(&secret) || seen.contains(&secret) {
                out.skipped
                    .push((*line, format!("the key in {name} is already added")));
                continue;
            }
            let label = name.to_ascii_lowercase();
            match self.add_key(&provider, &secret, Some(&label)) {
                Ok(k) => {
                    seen.push(secret);
                    out.added.push(k);
                }
                Err(Error::Internal(e)) => return Err(Error::Internal(e)),
                Err(e) => out.skipped.push((*line, e.to_string())),
            }
        }
        out.skipped.sort_by_key(|(line, _)| *line);
        Ok(out)
    }
}

/// An operation run off the event loop.
async fn offloaded<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    crate::offload::run(f)
        .await
        .map_err(|e| Error::Internal(e.into()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_lines_and_suffixes() {
        assert_eq!(
            env_line("GROQ_API_KEY=gsk_1"),
            Some(("GROQ_API_KEY".into(), "gsk_1".into()))
        );
        assert_eq!(
            env_line("export GEMINI_API_KEY=\"AIza x\" # mine"),
            Some(("GEMINI_API_KEY".into(), "AIza x".into()))
        );
        assert_eq!(
            env_line(" MISTRAL_API_KEY = 'abc' "),
            Some(("MISTRAL_API_KEY".into(), "abc".into()))
        );
        assert_eq!(
            env_line("COHERE_API_KEY=abc # trailing"),
            Some(("COHERE_API_KEY".into(), "abc".into()))
        );
        assert_eq!(env_line("# GROQ_API_KEY=x"), None);
        assert_eq!(env_line("no equals sign"), None);
        assert_eq!(split_suffix("GROQ_API_KEY_2"), ("GROQ_API_KEY", "_2"));
        assert_eq!(split_suffix("GROQ_API_KEY"), ("GROQ_API_KEY", ""));
        assert_eq!(split_suffix("HF_TOKEN_10"), ("HF_TOKEN", "_10"));
    }
}
