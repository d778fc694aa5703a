//! Provider keys in memory (opened from the store, plus the config's), client keys as hashes,
//! and each provider key's health.
//!
//! The server reloads both from the database when another process (the CLI) commits, so
//! `freeway keys add` reaches a running server within seconds. Plaintext provider keys live
//! only here, in memory, and leave only in an upstream request's header.

// Keyed by provider and key ids from the catalog and store: a fast hasher is safe here.
use rustc_hash::FxHashMap as HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::catalog::{AuthStyle, Catalog};
use crate::config::Secret;
use crate::crypto::{self, Sealer};
use crate::store::{KeyRow, Store};

/// One usable provider key.
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
#[derive(Debug, Clone)]
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

/// Keys by provider, with round-robin spreading.
#[derive(Default)]
pub struct KeyRing {
    by_provider: RwLock<Arc<HashMap<String, Vec<Arc<ProviderKey>>>>>,
    health: Mutex<HashMap<String, Health>>,
    /// Where the next request starts in each provider's key list.
    next: Mutex<HashMap<String, Arc<AtomicUsize>>>,
}

impl KeyRing {
    /// Rebuild from the config's keys and the stored rows. Rows that do not open are skipped
    /// with a warning (the canary check at start makes a wrong master key fail earlier).
    pub fn load(&self, catalog: &Catalog, rows: &[KeyRow], sealer: &Sealer) {
        let mut map: HashMap<String, Vec<Arc<ProviderKey>>> = HashMap::default();
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        for p in &catalog.providers {
            for (i, s) in p.config_keys.iter().enumerate() {
                let id = format!(
                    "cfg-{}",
                    &hex::encode(crypto::hash_client_key(s.expose()))[..12]
                );
                map.entry(p.id.clone())
                    .or_default()
                    .push(Arc::new(ProviderKey {
                        id,
                        provider: p.id.clone(),
                        label: format!("config #{}", i + 1),
                        secret: s.clone(),
                        enabled: true,
                        stored: false,
                        base_url: None,
                    }));
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
            match health.get(&row.id) {
                Some(h)
                    if h.last_check_ms >= row.last_check_ms
                        && !(row.status == "unknown" && h.status == Status::Invalid) => {}
                _ => {
                    health.insert(row.id.clone(), stored);
                }
            }
            map.entry(provider.id.clone())
                .or_default()
                .push(Arc::new(ProviderKey {
                    id: row.id.clone(),
                    provider: row.provider.clone(),
                    label: row.label.clone(),
                    secret: Secret::new(secret),
                    enabled: row.enabled,
                    stored: true,
                    base_url: row.base_url.clone(),
                }));
        }
        // Providers that need no key get one empty key so routing treats them alike.
        for p in &catalog.providers {
            let needs_none = p.auth == AuthStyle::None || (p.custom && p.config_keys.is_empty());
            if needs_none && !map.contains_key(&p.id) {
                map.insert(
                    p.id.clone(),
                    vec![Arc::new(ProviderKey {
                        id: format!("none-{}", p.id),
                        provider: p.id.clone(),
                        label: "no key".into(),
                        secret: Secret::new(""),
                        enabled: true,
                        stored: false,
                        base_url: None,
                    })],
                );
            }
        }
        *self.by_provider.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
    }

    /// Every key of a provider (enabled or not).
    pub fn all(&self, provider: &str) -> Vec<Arc<ProviderKey>> {
        let map = self
            .by_provider
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        map.get(provider).cloned().unwrap_or_default()
    }

    /// Keys that may be used: enabled and not invalid.
    pub fn usable(&self, provider: &str) -> Vec<Arc<ProviderKey>> {
        self.all(provider)
            .into_iter()
            .filter(|k| k.enabled && self.status(&k.id) != Status::Invalid)
            .collect()
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

    /// Whether `provider` has a usable key, without copying its key list (a request asks this
    /// for every candidate model).
    pub fn has_usable(&self, provider: &str) -> bool {
        let map = self.by_provider.read().unwrap_or_else(|e| e.into_inner());
        map.get(provider).is_some_and(|keys| {
            keys.iter()
                .any(|k| k.enabled && self.status(&k.id) != Status::Invalid)
        })
    }

    /// Whether any provider has at least one usable key.
    pub fn any_usable(&self) -> bool {
        let map = self
            .by_provider
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        map.values()
            .flatten()
            .any(|k| k.enabled && self.status(&k.id) != Status::Invalid)
    }

    pub fn status(&self, id: &str) -> Status {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .map_or(Status::Unknown, |h| h.status)
    }

    pub fn health(&self, id: &str) -> Option<Health> {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Record a verdict; returns the new health. `confirmed_invalid` counts toward the three
    /// rejections that disable a key.
    pub fn set_status(
        &self,
        id: &str,
        status: Status,
        error: Option<String>,
        at_ms: i64,
    ) -> Health {
        let mut map = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let h = map.entry(id.to_string()).or_insert(Health {
            status: Status::Unknown,
            invalid_count: 0,
            last_error: None,
            last_check_ms: None,
        });
        h.invalid_count = if status == Status::Invalid {
            h.invalid_count + 1
        } else if status == Status::Healthy {
            0
        } else {
            h.invalid_count
        };
        h.status = status;
        h.last_error = error;
        h.last_check_ms = Some(at_ms);
        h.clone()
    }

    /// A successful request proves an `error` or `unknown` key healthy.
    pub fn mark_success(&self, id: &str, at_ms: i64) -> bool {
        let current = self.status(id);
        if current == Status::Healthy {
            return false;
        }
        self.set_status(id, Status::Healthy, None, at_ms);
        true
    }
}

/// A client key's hash and display name.
type ClientKey = ([u8; 32], String);

/// Client keys: hashes only, compared in constant time.
#[derive(Default)]
pub struct ClientKeys {
    keys: RwLock<Arc<Vec<ClientKey>>>,
}

impl ClientKeys {
    /// Replace the set: the config's fixed keys and every stored key not revoked.
    pub fn load(&self, fixed: &[Secret], store: &Store) -> anyhow::Result<()> {
        let mut keys: Vec<ClientKey> = fixed
            .iter()
            .enumerate()
            .map(|(i, k)| {
                (
                    crypto::hash_client_key(k.expose()),
                    format!("config #{}", i + 1),
                )
            })
            .collect();
        for row in store.client_keys()? {
            if row.revoked_ms.is_none() {
                keys.push((row.hash, row.name));
            }
        }
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        Ok(())
    }

    /// The name of the client key `presented` is, if any. Every stored hash is compared, in
    /// constant time, whatever matches.
    pub fn check(&self, presented: &str) -> Option<String> {
        let digest = crypto::hash_client_key(presented);
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut found = None;
        for (hash, name) in keys.iter() {
            if crypto::digest_eq(hash, &digest) && found.is_none() {
                found = Some(name.clone());
            }
        }
        found
    }
}
