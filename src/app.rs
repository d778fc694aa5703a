//! The App: every long-lived part of a running Freeway, shared as `Arc<App>`, and
//! [`serve`], which runs it on a listener until a shutdown signal.
//!
//! Opening the App checks the encryption key against the data directory before anything
//! else, so a wrong key stops startup instead of producing garbage provider keys.

use anyhow::{Context, bail};
use rustc_hash::FxHashMap;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::crypto::{self, KEY_FILE, KeySource, Sealer};
use crate::keys::{ClientKeys, KeyRing, ProviderKey};
use crate::ledger::{Clock, Ledger, SystemClock};
use crate::reqlog::{self, RequestLog};
use crate::router::plan::{self, Link};
use crate::router::sticky::Sticky;
use crate::store::{ClientKeyRow, Store};

const CANARY_AAD: &[u8] = b"freeway:canary";
/// How long in-flight requests and streams may take to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// How often background state is persisted and the database checked for CLI changes.
const TICK: Duration = Duration::from_secs(2);
/// Conversations remembered for sticky routing at most.
const STICKY_CAPACITY: usize = 100_000;

/// Everything long-lived.
pub struct App {
    pub config: Config,
    pub catalog: Arc<Catalog>,
    pub store: Arc<Store>,
    /// Opens stored provider keys when they are reloaded.
    pub sealer: Arc<Sealer>,
    pub keys: KeyRing,
    pub clients: ClientKeys,
    pub ledger: Arc<Ledger>,
    pub sticky: Sticky,
    chain: RwLock<Arc<Vec<Link>>>,
    /// Pooled upstream connections (keep-alive, HTTP/2 where offered).
    pub http: crate::upstream::Client,
    pub log: RequestLog,
    /// Gemini thought signatures by tool-call id, for replayed calls.
    pub signatures: Signatures,
    /// Hosts learned for keys of providers with several (Z.ai), by key id.
    hosts: Mutex<FxHashMap<String, String>>,
    /// Parsed upstream URLs: parsing showed up in profiles when done per request.
    urls: RwLock<FxHashMap<String, http::Uri>>,
    /// Background tasks, awaited at shutdown.
    pub tasks: TaskTracker,
    /// Cancels background tasks.
    pub stop: CancellationToken,
    /// The request-log writer thread, started by `start_background`, finished by `serve`.
    log_writer: Mutex<Option<reqlog::Writer>>,
    /// The store's data version last seen, to notice CLI changes.
    data_version: Mutex<i64>,
}

/// Open the data directory and check the encryption key: the part the CLI needs too.
pub fn open_data(config: &Config) -> anyhow::Result<(Arc<Store>, Arc<Sealer>, KeySource)> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let store = Store::open(&config.data_dir)?;
    let canary = store.setting("canary")?;
    let key_file = config.data_dir.join(KEY_FILE);
    if canary.is_some() && config.encryption_key.is_none() && !key_file.exists() {
        bail!(
            "the data directory {} holds encrypted provider keys, but its key file {} is missing. \
             Restore the file, or set FREEWAY_ENCRYPTION_KEY to the key it held.",
            config.data_dir.display(),
            key_file.display()
        );
    }
    let (sealer, source) =
        Sealer::load_or_create(&config.data_dir, config.encryption_key.as_ref())?;
    match canary {
        Some(c) => {
            if sealer.open(&c, CANARY_AAD).is_err() {
                let from = match &source {
                    KeySource::Environment => "FREEWAY_ENCRYPTION_KEY".to_string(),
                    KeySource::File(p) | KeySource::Created(p) => p.display().to_string(),
                };
                bail!(
                    "the encryption key from {from} is not the one the data directory {} was created with. \
                     Set FREEWAY_ENCRYPTION_KEY to the original key (or restore the original key file). \
                     Freeway refuses to start rather than misread the stored provider keys.",
                    config.data_dir.display()
                );
            }
        }
        None => store.set_setting("canary", &sealer.seal(b"freeway", CANARY_AAD))?,
    }
    Ok((Arc::new(store), Arc::new(sealer), source))
}

/// Create the first client key if this data directory has never had one. Returns it (to be
/// shown once) when created.
pub fn ensure_first_client_key(store: &Store, now_ms: i64) -> anyhow::Result<Option<String>> {
    if store.setting("first_client_key")?.is_some() {
        return Ok(None);
    }
    let key = create_client_key(store, "default", now_ms)?;
    store.set_setting("first_client_key", b"created")?;
    Ok(Some(key))
}

/// Create and store a client key; returns the key (shown once, stored hashed).
pub fn create_client_key(store: &Store, name: &str, now_ms: i64) -> anyhow::Result<String> {
    let key = crypto::new_client_key();
    store.insert_client_key(&ClientKeyRow {
        id: crypto::new_id(),
        name: name.to_string(),
        hash: crypto::hash_client_key(&key),
        prefix: key.chars().take(7).collect(),
        created_ms: now_ms,
        revoked_ms: None,
    })?;
    Ok(key)
}

impl App {
    /// Open everything with the real clock.
    pub fn open(config: Config) -> anyhow::Result<Arc<App>> {
        Self::open_with_clock(config, Arc::new(SystemClock))
    }

    /// Open everything; `clock` drives quotas and cooldowns (tests pass a manual one).
    pub fn open_with_clock(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<App>> {
        let (store, sealer, _) = open_data(&config)?;
        let catalog = Arc::new(Catalog::from_config(&config)?);
        let ledger = Arc::new(Ledger::new(clock));
        ledger.restore(&store.load_ledger()?, &store.load_cooldowns()?);
        let http = crate::upstream::Client::new(config.routing.connect_timeout)
            .context("cannot build the HTTP client")?;
        let app = App {
            sticky: Sticky::new(
                config.routing.sticky_ttl.as_millis() as i64,
                STICKY_CAPACITY,
            ),
            config,
            catalog,
            store,
            sealer,
            keys: KeyRing::default(),
            clients: ClientKeys::default(),
            ledger,
            chain: RwLock::new(Arc::new(Vec::new())),
            http,
            log: RequestLog::default(),
            signatures: Signatures::default(),
            hosts: Mutex::new(FxHashMap::default()),
            urls: RwLock::new(FxHashMap::default()),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            log_writer: Mutex::new(None),
            data_version: Mutex::new(0),
        };
        app.reload()?;
        Ok(Arc::new(app))
    }

    /// Reload keys, client keys and the chain from the database.
    pub fn reload(&self) -> anyhow::Result<()> {
        *self.data_version.lock().unwrap_or_else(|e| e.into_inner()) = self.store.data_version()?;
        let rows = self.store.keys()?;
        self.keys.load(&self.catalog, &rows, &self.sealer);
        self.clients.load(&self.config.auth.api_keys, &self.store)?;
        let chain = plan::chain(
            &self.catalog,
            &self.config.routing.chain,
            &self.store.chain()?,
        );
        *self.chain.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(chain);
        Ok(())
    }

    /// Reload if another process committed since the last look.
    fn reload_if_changed(&self) -> anyhow::Result<bool> {
        let now = self.store.data_version()?;
        let seen = *self.data_version.lock().unwrap_or_else(|e| e.into_inner());
        if now == seen {
            return Ok(false);
        }
        self.reload()?;
        Ok(true)
    }

    /// The current chain.
    pub fn chain(&self) -> Arc<Vec<Link>> {
        self.chain.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `text` parsed as a URL, from a cache (a few entries per provider at most; cleared if a
    /// misconfiguration ever makes it grow).
    pub fn url(&self, text: &str) -> Result<http::Uri, String> {
        if let Some(u) = self
            .urls
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(text)
        {
            return Ok(u.clone());
        }
        let parsed = parse_url(text)?;
        let mut urls = self.urls.write().unwrap_or_else(|e| e.into_inner());
        if urls.len() > 1024 {
            urls.clear();
        }
        urls.insert(text.to_string(), parsed.clone());
        Ok(parsed)
    }

    /// The host a key is known to belong to.
    pub fn known_host(&self, key: &ProviderKey) -> Option<String> {
        key.base_url.clone().or_else(|| {
            self.hosts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key.id)
                .cloned()
        })
    }

    /// Remember which host a key belongs to (persisted for stored keys).
    pub fn remember_host(&self, key: &ProviderKey, base: &str) {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if hosts.get(&key.id).map(String::as_str) == Some(base) {
            return;
        }
        hosts.insert(key.id.clone(), base.to_string());
        if key.stored {
            let (store, id, base) = (Arc::clone(&self.store), key.id.clone(), base.to_string());
            self.tasks.spawn_blocking(move || {
                if let Err(e) = store.set_key_base_url(&id, &base) {
                    tracing::error!(error = %e, "could not remember a key's host");
                }
            });
        }
    }

    /// Write a key's health to the database, off the request path. Three confirmed
    /// rejections in a row disable the key.
    pub fn persist_key_health(&self, id: &str) {
        let Some(h) = self.keys.health(id) else {
            return;
        };
        let (store, id) = (Arc::clone(&self.store), id.to_string());
        let at = h.last_check_ms.unwrap_or_else(|| self.ledger.now_ms());
        self.tasks.spawn_blocking(move || {
            let disable = h.invalid_count >= 3;
            if let Err(e) = store.set_key_health(
                &id,
                h.status.as_str(),
                h.invalid_count,
                h.last_error.as_deref(),
                at,
                disable,
            ) {
                tracing::error!(error = %e, "could not record a key's health");
            }
        });
    }

    /// Persist the ledger if it changed.
    fn persist_ledger(&self) {
        let Some((scopes, cooldowns)) = self.ledger.snapshot() else {
            return;
        };
        if let Err(e) = self
            .store
            .save_ledger(&scopes, &cooldowns, self.ledger.now_ms())
        {
            tracing::error!(error = %e, "could not persist usage counters");
        }
    }

    /// Start the background tasks: request-log writer, persistence, reloads, retention and
    /// health probes.
    pub fn start_background(self: &Arc<Self>) {
        if let Some(writer) = self.log.start(Arc::clone(&self.store)) {
            *self.log_writer.lock().unwrap_or_else(|e| e.into_inner()) = Some(writer);
        }
        let app = Arc::clone(self);
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_prune: Option<tokio::time::Instant> = None;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = app.stop.cancelled() => break,
                }
                let a = Arc::clone(&app);
                let prune = last_prune.is_none_or(|t| t.elapsed() > Duration::from_secs(3600));
                if prune {
                    last_prune = Some(tokio::time::Instant::now());
                }
                let _ = tokio::task::spawn_blocking(move || {
                    a.persist_ledger();
                    match a.reload_if_changed() {
                        Ok(true) => {
                            tracing::info!("reloaded keys and chain after a change in the database")
                        }
                        Ok(false) => {}
                        Err(e) => tracing::error!(error = %e, "could not reload keys"),
                    }
                    if prune {
                        let before = a.ledger.now_ms() - a.config.log_retention.as_millis() as i64;
                        match a.store.prune_requests(before) {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(rows = n, "pruned old request log rows"),
                            Err(e) => {
                                tracing::error!(error = %e, "could not prune the request log")
                            }
                        }
                    }
                })
                .await;
            }
            // Last words: counters and cooldowns survive the restart.
            let a = Arc::clone(&app);
            let _ = tokio::task::spawn_blocking(move || a.persist_ledger()).await;
        });
        crate::health::spawn(self);
    }
}

/// Run Freeway on `listener` until `shutdown` resolves; then let in-flight requests finish
/// (at most [`SHUTDOWN_GRACE`]), stop the background tasks and flush what they hold.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use axum::serve::ListenerExt;
    app.start_background();
    let router = crate::http::router(Arc::clone(&app));
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    let signalled = CancellationToken::new();
    let s = signalled.clone();
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown.await;
        s.cancel();
    });
    let grace = async {
        signalled.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        r = server => r.context("the server failed")?,
        _ = grace => tracing::warn!("shutdown grace period over; closing the remaining connections"),
    }
    app.stop.cancel();
    app.tasks.close();
    if tokio::time::timeout(Duration::from_secs(10), app.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("background tasks did not finish in time");
    }
    // Every request is over: the writer drains the queue and stops.
    let writer = app
        .log_writer
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(w) = writer {
        let _ = tokio::task::spawn_blocking(move || w.finish()).await;
    }
    Ok(())
}

/// Wait for SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// Tool-call id → Gemini thought signature, bounded (oldest forgotten first).
#[derive(Default)]
pub struct Signatures {
    inner: Mutex<(HashMap<String, String>, VecDeque<String>)>,
}

impl Signatures {
    const CAPACITY: usize = 10_000;

    pub fn get(&self, id: &str) -> Option<String> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .get(id)
            .cloned()
    }

    pub fn put(&self, id: String, signature: String) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.0.insert(id.clone(), signature).is_none() {
            inner.1.push_back(id);
        }
        while inner.1.len() > Self::CAPACITY {
            if let Some(old) = inner.1.pop_front() {
                inner.0.remove(&old);
            }
        }
    }

    /// Remember the signatures in a translated (OpenAI-shaped) answer.
    pub fn remember_from(&self, answer: &[u8]) {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(answer) {
            for (id, sig) in crate::providers::gemini::signatures(&v) {
                self.put(id, sig);
            }
        }
    }
}

/// An upstream URL: absolute, `http` or `https`, with a host.
fn parse_url(text: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("the URL must start with http:// or https://".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    #[test]
    fn upstream_urls_must_be_absolute_http_with_a_host() {
        for good in [
            "https://api.groq.com/openai/v1/chat/completions",
            "http://127.0.0.1:8080/v1/chat/completions",
        ] {
            assert!(super::parse_url(good).is_ok(), "{good}");
        }
        for bad in [
            "ftp://x/y",
            "/v1/chat",
            "https://",
            "http://exa mple.com/",
            "",
        ] {
            assert!(super::parse_url(bad).is_err(), "{bad}");
        }
    }
}
