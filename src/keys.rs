//! Provider keys in memory (opened from the store, plus the config's), client keys as hashes,
//! and each provider key's health.
//!
//! The server reloads both from the database when another process (the CLI) commits, so
//! `freeway keys add` reaches a running server within seconds. Plaintext provider keys live
//! only here, in memory, and leave only in an upstream request's header.

// Keyed by provider and key ids from the catalog and store: a fast hasher is safe here.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::catalog::{AuthStyle, Catalog};
use crate::config::{Auth, ClientLimits, Secret};
use crate::crypto::{self, Sealer};
use crate::store::{KeyRow, Store};

/// One provider key.
#[derive(Debug)]
pub struct ProviderKey {
    /// Stable id: the row id, or `cfg-<hash>` for keys from the config.
    pub id: String,
    pub provider: String,
    pub label: String,
    pub secret: Secret,
    /// Turned off by the user (or by three confirmed rejections).
    pub enabled: bool,
    /// Stored in the database (else from the config file or environment).
    pub stored: bool,
    /// The host this key belongs to, for providers with several.
    pub base_url: Option<String>,
    /// What probes and requests found out; its own lock, taken alone.
    health: Mutex<Health>,
}

impl ProviderKey {
    pub fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn status(&self) -> Status {
        self.health.lock().unwrap_or_else(|e| e.into_inner()).status
    }

    /// Enabled and not rejected as invalid.
    pub fn usable(&self) -> bool {
        self.enabled && self.status() != Status::Invalid
    }
}

/// Health of a key (SPEC 3.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Unknown,
    Healthy,
    Invalid,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unknown => "unknown",
            Status::Healthy => "healthy",
            Status::Invalid => "invalid",
            Status::Error => "error",
        }
    }
    pub fn parse(s: &str) -> Status {
        match s {
            "healthy" => Status::Healthy,
            "invalid" => Status::Invalid,
            "error" => Status::Error,
            _ => Status::Unknown,
        }
    }
}

/// Health of one key as the running server sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub status: Status,
    /// Confirmed rejections in a row.
    pub invalid_count: u32,
    pub last_error: Option<String>,
    pub last_check_ms: Option<i64>,
}

/// Row id used as associated data when sealing a provider key.
pub fn aad(id: &str, provider: &str) -> Vec<u8> {
    format!("freeway:provider_key:{id}:{provider}").into_bytes()
}

/// A newly added provider key as a row to store: a fresh id, the secret sealed to it, enabled,
/// health unknown until a probe says otherwise.
pub fn new_row(
    sealer: &Sealer,
    provider: &str,
    label: String,
    secret: &str,
    created_ms: i64,
) -> KeyRow {
    let id = crypto::new_id();
    KeyRow {
        sealed: sealer.seal(secret.as_bytes(), &aad(&id, provider)),
        id,
        provider: provider.to_string(),
        label,
        enabled: true,
        status: "unknown".into(),
        invalid_count: 0,
        last_check_ms: None,
        last_error: None,
        base_url: None,
        created_ms,
    }
}

impl Health {
    const UNKNOWN: Health = Health {
        status: Status::Unknown,
        invalid_count: 0,
        last_error: None,
        last_check_ms: None,
    };
}

/// The keys of every provider, swapped whole on reload.
#[derive(Default)]
struct Ring {
    by_provider: HashMap<String, Vec<Arc<ProviderKey>>>,
    by_id: HashMap<String, Arc<ProviderKey>>,
    /// Finds every key (and the token part of `account:token` keys) in a text.
    secrets: Option<aho_corasick::AhoCorasick>,
}

impl Ring {
    /// Build the finder of every secret this ring holds. Secrets shorter than four characters
    /// would match ordinary words; no provider issues such keys.
    fn index_secrets(&mut self) {
        let mut secrets: Vec<&str> = Vec::new();
        for k in self.by_id.values() {
            let s = k.secret.expose();
            secrets.push(s);
            if let Some((_, token)) = s.split_once(':') {
                secrets.push(token);
            }
        }
        secrets.retain(|s| s.len() >= 4);
        // Longest first, so a key is replaced whole rather than by a part of it.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        self.secrets = aho_corasick::AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(secrets)
            .ok();
    }

    fn add(&mut self, key: ProviderKey) {
        let key = Arc::new(key);
        self.by_id.insert(key.id.clone(), Arc::clone(&key));
        self.by_provider
            .entry(key.provider.clone())
            .or_default()
            .push(key);
    }
}

/// Keys by provider, with round-robin spreading and each key's health.
///
/// Locks are taken one at a time, never nested: readers clone the current ring out of its
/// lock and then look at a key's health, which has its own lock.
#[derive(Default)]
pub struct KeyRing {
    ring: RwLock<Arc<Ring>>,
    /// Where the next request starts in each provider's key list.
    next: Mutex<HashMap<String, Arc<AtomicUsize>>>,
    /// Stored keys whose health changed since it was last written.
    dirty: Mutex<HashSet<String>>,
}

impl KeyRing {
    fn ring(&self) -> Arc<Ring> {
        self.ring.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Rebuild from the config's keys and the stored rows. Rows that do not open are skipped
    /// with a warning (the canary check at start makes a wrong master key fail earlier).
    pub fn load(&self, catalog: &Catalog, rows: &[KeyRow], sealer: &Sealer) {
        let old = self.ring();
        let kept = |id: &str| old.by_id.get(id).map(|k| k.health());
        let mut ring = Ring::default();
        for p in &catalog.providers {
            for (i, s) in p.config_keys.iter().enumerate() {
                let id = format!(
                    "cfg-{}",
                    &hex::encode(crypto::hash_client_key(s.expose()))[..12]
                );
                ring.add(ProviderKey {
                    health: Mutex::new(kept(&id).unwrap_or(Health::UNKNOWN)),
                    id,
                    provider: p.id.clone(),
                    label: format!("config #{}", i + 1),
                    secret: s.clone(),
                    enabled: true,
                    stored: false,
                    base_url: None,
                });
            }
        }
        for row in rows {
            let Some(provider) = catalog.provider(&row.provider) else {
                continue;
            };
            let Ok(plain) = sealer.open(&row.sealed, &aad(&row.id, &row.provider)) else {
                tracing::warn!(key = %row.id, provider = %row.provider, "a stored key does not decrypt; skipped");
                continue;
            };
            let Ok(secret) = String::from_utf8(plain) else {
                continue;
            };
            // The database wins when it holds a newer verdict (a `freeway check` run, or a
            // key the user re-enabled); otherwise what this process saw last stands.
            let stored = Health {
                status: Status::parse(&row.status),
                invalid_count: row.invalid_count,
                last_error: row.last_error.clone(),
                last_check_ms: row.last_check_ms,
            };
            let health = match kept(&row.id) {
                Some(h)
                    if h.last_check_ms >= row.last_check_ms
                        && !(row.status == "unknown" && h.status == Status::Invalid) =>
                {
                    h
                }
                _ => stored,
            };
            ring.add(ProviderKey {
                id: row.id.clone(),
                provider: provider.id.clone(),
                label: row.label.clone(),
                secret: Secret::new(secret),
                enabled: row.enabled,
                stored: true,
                base_url: row.base_url.clone(),
                health: Mutex::new(health),
            });
        }
        // Providers that need no key get one empty key so routing treats them alike.
        for p in &catalog.providers {
            let needs_none = p.auth == AuthStyle::None || (p.custom && p.config_keys.is_empty());
            if needs_none && !ring.by_provider.contains_key(&p.id) {
                ring.add(ProviderKey {
                    id: format!("none-{}", p.id),
                    provider: p.id.clone(),
                    label: "no key".into(),
                    secret: Secret::new(""),
                    enabled: true,
                    stored: false,
                    base_url: None,
                    health: Mutex::new(Health::UNKNOWN),
                });
            }
        }
        ring.index_secrets();
        *self.ring.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ring);
    }

    /// `text` with every known key replaced by `[redacted]`, and then anything else that looks
    /// like a key (SPEC 2.3): for every text that came from an upstream.
    pub fn redact(&self, text: &str) -> String {
        let ring = self.ring();
        let mut exact = String::with_capacity(text.len());
        match &ring.secrets {
            Some(finder) => finder.replace_all_with(text, &mut exact, |_, _, out| {
                out.push_str("[redacted]");
                true
            }),
            None => exact.push_str(text),
        }
        crate::error::scrub(&exact)
    }

    /// Every key of a provider (enabled or not).
    pub fn all(&self, provider: &str) -> Vec<Arc<ProviderKey>> {
        self.ring()
            .by_provider
            .get(provider)
            .cloned()
            .unwrap_or_default()
    }

    /// One key by id.
    pub fn get(&self, id: &str) -> Option<Arc<ProviderKey>> {
        self.ring().by_id.get(id).cloned()
    }

    /// Keys that may be used: enabled and not invalid.
    pub fn usable(&self, provider: &str) -> Vec<Arc<ProviderKey>> {
        let ring = self.ring();
        ring.by_provider
            .get(provider)
            .map(|keys| keys.iter().filter(|k| k.usable()).cloned().collect())
            .unwrap_or_default()
    }

    /// The usable keys for one request, rotated so consecutive requests start at different
    /// keys and the load spreads over them. Call once per request and provider.
    pub fn rotated(&self, provider: &str) -> Vec<Arc<ProviderKey>> {
        let mut keys = self.usable(provider);
        if keys.len() > 1 {
            let counter = self
                .next
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(provider.to_string())
                .or_default()
                .clone();
            let start = counter.fetch_add(1, Ordering::Relaxed) % keys.len();
            keys.rotate_left(start);
        }
        keys
    }

    /// How many usable keys `provider` has, without copying its key list.
    pub fn usable_count(&self, provider: &str) -> usize {
        self.ring()
            .by_provider
            .get(provider)
            .map_or(0, |keys| keys.iter().filter(|k| k.usable()).count())
    }

    /// Whether `provider` has a usable key, without copying its key list (a request asks this
    /// for every candidate model).
    pub fn has_usable(&self, provider: &str) -> bool {
        self.ring()
            .by_provider
            .get(provider)
            .is_some_and(|keys| keys.iter().any(|k| k.usable()))
    }

    /// Whether any provider has at least one usable key.
    pub fn any_usable(&self) -> bool {
        self.ring().by_id.values().any(|k| k.usable())
    }

    pub fn status(&self, id: &str) -> Status {
        self.get(id).map_or(Status::Unknown, |k| k.status())
    }

    pub fn health(&self, id: &str) -> Option<Health> {
        self.get(id).map(|k| k.health())
    }

    /// Record a verdict; returns the new health. An `invalid` verdict counts toward the three
    /// confirmed rejections that disable a key; a healthy one resets the count.
    pub fn set_status(
        &self,
        id: &str,
        status: Status,
        error: Option<String>,
        at_ms: i64,
    ) -> Option<Health> {
        let key = self.get(id)?;
        let h = {
            let mut h = key.health.lock().unwrap_or_else(|e| e.into_inner());
            h.invalid_count = match status {
                Status::Invalid => h.invalid_count + 1,
                Status::Healthy => 0,
                _ => h.invalid_count,
            };
            h.status = status;
            h.last_error = error;
            h.last_check_ms = Some(at_ms);
            h.clone()
        };
        if key.stored {
            self.dirty
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.to_string());
        }
        Some(h)
    }

    /// A successful request proves an `error` or `unknown` key healthy.
    pub fn mark_success(&self, id: &str, at_ms: i64) {
        if self.status(id) != Status::Healthy {
            self.set_status(id, Status::Healthy, None, at_ms);
        }
    }

    /// Stored keys whose health changed since the last call, with that health, to write.
    pub fn take_changed(&self) -> Vec<(String, Health)> {
        let ids: Vec<String> = self
            .dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        ids.into_iter()
            .filter_map(|id| self.health(&id).map(|h| (id, h)))
            .collect()
    }
}

/// A client key as the server checks it: its hash, name, row id (`None` for the config's) and
/// what it may do.
#[derive(Debug)]
pub struct Client {
    hash: [u8; 32],
    pub name: String,
    pub id: Option<String>,
    /// Limits, allowed models, expiry and weight (SPEC 3.8).
    pub limits: ClientLimits,
    /// Whether the limits come from the config file (`[auth.limits.NAME]`), which wins.
    pub limits_from_config: bool,
}

impl Client {
    /// A caller with no key and no limits (the dashboard's playground).
    pub fn unlimited(name: &str) -> Arc<Client> {
        Self::with_limits(name, ClientLimits::default())
    }

    /// A caller without a key of its own but with limits (the simulation's clients, tests).
    pub fn with_limits(name: &str, limits: ClientLimits) -> Arc<Client> {
        Arc::new(Client {
            hash: [0; 32],
            name: name.to_string(),
            id: None,
            limits,
            limits_from_config: false,
        })
    }
}

/// Client keys: hashes only, compared in constant time; when each was last used.
#[derive(Default)]
pub struct ClientKeys {
    keys: RwLock<Arc<Vec<Arc<Client>>>>,
    /// Stored keys used since the last write: id → when (ms since the Unix epoch).
    used: Mutex<HashMap<String, i64>>,
}

impl ClientKeys {
    /// Replace the set: the config's fixed keys and every stored key not revoked, each with its
    /// limits (the config's `[auth.limits.NAME]` over the stored ones).
    pub fn load(&self, auth: &Auth, store: &Store) -> anyhow::Result<()> {
        let limits_of = |name: &str, stored: Option<&str>| -> (ClientLimits, bool) {
            if let Some(l) = auth.limits.get(name) {
                return (l.clone(), true);
            }
            let stored = stored
                .and_then(|json| match serde_json::from_str(json) {
                    Ok(l) => Some(l),
                    Err(e) => {
                        tracing::error!(client = name, error = %e, "the stored limits of a client key cannot be read; it has none until they are set again");
                        None
                    }
                })
                .unwrap_or_default();
            (stored, false)
        };
        let mut keys: Vec<Arc<Client>> = auth
            .api_keys
            .iter()
            .map(|k| {
                let (limits, from_config) = limits_of(&k.name, None);
                Arc::new(Client {
                    hash: crypto::hash_client_key(k.key.expose()),
                    name: k.name.clone(),
                    id: None,
                    limits,
                    limits_from_config: from_config,
                })
            })
            .collect();
        for row in store.client_keys()? {
            if row.revoked_ms.is_none() {
                let (limits, from_config) = limits_of(&row.name, row.limits.as_deref());
                keys.push(Arc::new(Client {
                    hash: row.hash,
                    name: row.name,
                    id: Some(row.id),
                    limits,
                    limits_from_config: from_config,
                }));
            }
        }
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        Ok(())
    }

    /// The client key `presented` is, if any. Every stored hash is compared, in constant time,
    /// whatever matches.
    pub fn check(&self, presented: &str) -> Option<Arc<Client>> {
        let digest = crypto::hash_client_key(presented);
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut found: Option<&Arc<Client>> = None;
        for k in keys.iter() {
            if crypto::digest_eq(&k.hash, &digest) && found.is_none() {
                found = Some(k);
            }
        }
        let k = found?;
        if let Some(id) = &k.id {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            self.used
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.clone(), now);
        }
        Some(Arc::clone(k))
    }

    /// Every live client key.
    pub fn all(&self) -> Arc<Vec<Arc<Client>>> {
        Arc::clone(&self.keys.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The live key named `name`, if any.
    pub fn named(&self, name: &str) -> Option<Arc<Client>> {
        self.all().iter().find(|k| k.name == name).cloned()
    }

    /// Stored keys used since the last call, and when, to write.
    pub fn take_used(&self) -> Vec<(String, i64)> {
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A reload while requests look for usable keys must never wait forever: an earlier
    /// version took the health lock and then the key map's, while lookups took them in the
    /// other order, and with one event-loop thread the server hung.
    #[test]
    fn reloads_and_lookups_do_not_wait_on_each_other() {
        let config = Config::from_toml(
            "[providers.groq]\nkeys = [\"gsk_config_key_1234567890\"]",
            &|_| None,
        )
        .unwrap();
        let catalog = Arc::new(Catalog::from_config(&config).unwrap());
        let sealer = Arc::new(Sealer::from_hex(&"11".repeat(32)).unwrap());
        let rows: Vec<KeyRow> = (0..8)
            .map(|i| new_row(&sealer, "groq", format!("k{i}"), &format!("gsk_{i:020}"), 0))
            .collect();
        let ring = Arc::new(KeyRing::default());
        ring.load(&catalog, &rows, &sealer);
        let (done, finished) = mpsc::channel();
        let reloader = {
            let (ring, catalog, sealer, rows, done) = (
                ring.clone(),
                catalog.clone(),
                sealer.clone(),
                rows.clone(),
                done.clone(),
            );
            std::thread::spawn(move || {
                for _ in 0..3_000 {
                    ring.load(&catalog, &rows, &sealer);
                }
                let _ = done.send("reloads");
            })
        };
        let reader = {
            let (ring, id) = (ring.clone(), rows[0].id.clone());
            std::thread::spawn(move || {
                for i in 0..300_000 {
                    assert!(ring.has_usable("groq"));
                    if i % 100 == 0 {
                        ring.set_status(&id, Status::Healthy, None, i);
                    }
                }
                let _ = done.send("lookups");
            })
        };
        for _ in 0..2 {
            finished
                .recv_timeout(Duration::from_secs(120))
                .expect("a reload and a lookup waited on each other");
        }
        reloader.join().unwrap();
        reader.join().unwrap();
    }
}
