//! The operations: what a person does with Freeway (provider keys, client keys, the chain,
//! models, status, health checks), written once and called from every front door: the CLI,
//! the HTTP handlers and the admin API.
//!
//! A change goes to the store and, in this process, to the live state at once, so a running
//! server's router sees it on its next request. Another process (the CLI next to a running
//! server) is noticed through the store's data version ([`Ops::reload_if_changed`], polled by
//! the server).

mod chain;
mod keys;
mod status;

pub use chain::ChainEntry;
pub use keys::{
    ClientKeyView, ClientUsage, KeySource, KeyView, LimitsPatch, ensure_first_client_key,
};
pub use status::{KeyLine, ModelGroup, ModelRow, ProviderStatus, fmt_time};

use std::sync::{Arc, Mutex};

use crate::catalog::Catalog;
use crate::catalog::chain::chain as build_chain;
use crate::config::Config;
use crate::crypto::Sealer;
use crate::health::Prober;
use crate::ledger::Ledger;
use crate::live::{Live, Snapshot};
use crate::store::Store;

/// Why an operation could not be done, by who can fix it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such key, client key or model.
    #[error("{0}")]
    NotFound(String),
    /// The input is wrong (unknown provider, empty key, ambiguous id, ...).
    #[error("{0}")]
    Invalid(String),
    /// The thing exists but cannot be changed this way (a key from the config file).
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// When `e` says the store could not be reached (PostgreSQL down): what to tell the admin side
/// (the server and database, never a password). `None` for any other failure.
pub fn store_unreachable(e: &anyhow::Error) -> Option<String> {
    e.chain()
        .find_map(|c| c.downcast_ref::<crate::store::Unavailable>())
        .map(ToString::to_string)
}

/// The operations, over the parts they work on.
pub struct Ops {
    config: Arc<Config>,
    store: Arc<Store>,
    sealer: Arc<Sealer>,
    live: Arc<Live>,
    ledger: Arc<dyn Ledger>,
    prober: Prober,
    /// The store's data version last seen, to notice other processes' changes.
    data_version: Mutex<i64>,
    /// Cooldowns shared with other replicas (`[cluster]`).
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl Ops {
    /// Operations over these parts; loads the live state from the store.
    pub fn new(
        config: Arc<Config>,
        store: Arc<Store>,
        sealer: Arc<Sealer>,
        live: Arc<Live>,
        ledger: Arc<dyn Ledger>,
        prober: Prober,
    ) -> anyhow::Result<Ops> {
        let ops = Ops {
            config,
            store,
            sealer,
            live,
            ledger,
            prober,
            data_version: Mutex::new(0),
            cluster: None,
        };
        ops.reload()?;
        Ok(ops)
    }

    /// With cooldowns shared with other replicas.
    pub fn with_cluster(mut self, cluster: Option<Arc<crate::cluster::Cluster>>) -> Ops {
        self.cluster = cluster;
        self
    }

    /// The shared ledger's state, when several replicas share one.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.cluster.as_ref()
    }

    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn ledger(&self) -> &Arc<dyn Ledger> {
        &self.ledger
    }

    /// The answer kept for `client`'s Idempotency-Key `key` since `since_ms` (SPEC 2.8).
    pub fn idempotent(
        &self,
        client: &str,
        key: &str,
        since_ms: i64,
    ) -> anyhow::Result<Option<crate::record::Kept>> {
        self.store.idempotent(client, key, since_ms)
    }

    /// Keep an answer for an Idempotency-Key.
    pub fn keep_idempotent(
        &self,
        client: &str,
        key: &str,
        kept: &crate::record::Kept,
    ) -> anyhow::Result<()> {
        self.store.keep_idempotent(client, key, kept)
    }

    /// The quota pools of a provider's usable keys: one per key, or one for all of them when
    /// they share a quota (`shared_quota`).
    pub fn pools(&self, provider: &crate::catalog::Provider) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for k in self.live.keys.usable(&provider.id) {
            let pool = crate::ledger::pool_of(provider, &k.id);
            if !out.contains(&pool) {
                out.push(pool);
            }
        }
        out
    }

    fn catalog(&self) -> Arc<Catalog> {
        Arc::clone(&self.live.snapshot().catalog)
    }

    /// Record the models providers retired since the last look (before any reload rebuilds
    /// the chain from the store, so none is lost).
    pub fn persist_retired(&self) {
        let mut unwritten = Vec::new();
        for (model, why) in self.live.take_retired() {
            tracing::warn!(model = %model, reason = %why, "the provider retired this model: switched off until you enable it again");
            if let Err(e) = self.store.retire(&model, &why, self.ledger.now_ms()) {
                tracing::error!(error = %e, "could not record a retired model (tried again later)");
                unwritten.push((model, why));
            }
        }
        if !unwritten.is_empty() {
            self.live.keep_retired(unwritten);
        }
    }

    /// Record what upstreams taught since the last look (before any reload reads the store).
    pub fn persist_learned(&self) {
        // The router logged each lesson when it learned it.
        let mut unwritten = Vec::new();
        for (model, lesson, why) in self.live.take_learned() {
            if let Err(e) = self
                .store
                .learn(&model, &lesson, &why, self.ledger.now_ms())
            {
                tracing::error!(error = %e, "could not record what an upstream taught (tried again later)");
                unwritten.push((model, lesson, why));
            }
        }
        if !unwritten.is_empty() {
            self.live.keep_learned(unwritten);
        }
    }

    /// Forget what upstreams taught about `model` (a reference or canonical id), or about every
    /// model; how many lessons.
    pub fn reset_quirks(&self, model: Option<&str>) -> Result<usize> {
        self.persist_learned();
        let target = match model {
            Some(m) => Some(self.chain_model(m)?),
            None => None,
        };
        let n = self.store.forget_lessons(target.as_deref())?;
        self.reload()?;
        Ok(n)
    }

    /// Load keys, client keys and the chain from the store into the live state.
    pub fn reload(&self) -> anyhow::Result<()> {
        self.persist_retired();
        self.persist_learned();
        // Read first, recorded last: a load that fails half-way is tried again next time.
        let version = self.store.data_version()?;
        let catalog = self.catalog();
        let rows = self.store.keys()?;
        self.live.keys.load(&catalog, &rows, &self.sealer);
        self.live.clients.load(&self.config.auth, &self.store)?;
        let chain = build_chain(
            &catalog,
            &self.config.routing.chain,
            &self.store.chain()?,
            &self.store.retired()?,
        );
        self.live.set_snapshot(Snapshot { catalog, chain });
        self.live.set_lessons(self.store.lessons()?);
        *self.data_version.lock().unwrap_or_else(|e| e.into_inner()) = version;
        Ok(())
    }

    /// Reload if another process committed since the last look; whether it did.
    pub fn reload_if_changed(&self) -> anyhow::Result<bool> {
        let now = self.store.data_version()?;
        let seen = *self.data_version.lock().unwrap_or_else(|e| e.into_inner());
        if now == seen {
            return Ok(false);
        }
        self.reload()?;
        Ok(true)
    }

    /// Write what changed in memory: key health (three confirmed rejections disable a key) and
    /// when client keys were last used.
    pub fn persist(&self) {
        self.persist_retired();
        self.persist_learned();
        let used = self.live.clients.take_used();
        if !used.is_empty() {
            if let Err(e) = self.store.touch_client_keys(&used) {
                tracing::error!(error = %e, "could not record when client keys were used");
            }
        }
        self.persist_health();
    }

    /// Write the health of keys that changed (three confirmed rejections disable a key).
    pub fn persist_health(&self) {
        for (id, h) in self.live.keys.take_changed() {
            let at = h.last_check_ms.unwrap_or_else(|| self.ledger.now_ms());
            if let Err(e) = self.store.set_key_health(
                &id,
                h.status.as_str(),
                h.invalid_count,
                h.last_error.as_deref(),
                at,
                h.invalid_count >= 3,
            ) {
                tracing::error!(error = %e, "could not record a key's health");
            }
        }
    }
}
