//! The App: every long-lived part of a running Freeway, wired together, and [`serve`], which
//! runs it on a listener until a shutdown signal.
//!
//! The App owns the parts and the background tasks (ledger persistence, noticing other
//! processes' changes, request-log retention, health probes); it hands each consumer only what
//! that consumer needs: the router its [`Router`] dependencies, the HTTP layer a
//! [`crate::http::Server`], the CLI the [`Ops`]. Opening the App checks the encryption key
//! against the data directory before anything else, so a wrong key stops startup instead of
//! producing garbage provider keys.

use anyhow::{Context, bail};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::catalog::Catalog;
use crate::config::{Config, Pacing};
use crate::crypto::{KEY_FILE, KeySource, Sealer};
use crate::health::{self, Prober};
use crate::ledger::{Clock, Ledger, MemoryLedger, SystemClock};
use crate::live::Live;
use crate::offload;
use crate::ops::Ops;
use crate::providers::Dialects;
use crate::reqlog::{self, RequestLog};
use crate::router::Router;
use crate::store::Store;
use crate::upstream;

const CANARY_AAD: &[u8] = b"freeway:canary";
/// How long in-flight requests and streams may take to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// How often background state is persisted.
const TICK: Duration = Duration::from_secs(2);
/// How often the store's data version is read, so a change made elsewhere (the CLI, another
/// replica) serves here within 2 s.
const RELOAD_TICK: Duration = Duration::from_secs(1);
/// Request-log rows deleted in one transaction when old ones are pruned: the store's lock is
/// let go between batches, so the log writer and the admin side are not held up for long.
const PRUNE_BATCH: usize = 5_000;

const HOUR_MS: i64 = 3_600_000;

/// Learn the demand curves of every provider's day from the request log's hourly counts and
/// hand them to the ledger (`routing.pacing = "demand"`). Blocking: the store.
fn learn_demand(store: &Store, ledger: &MemoryLedger, catalog: &Catalog) {
    let now = ledger.now_ms();
    let from = now - (crate::ledger::demand::HISTORY_DAYS + 2) * 24 * HOUR_MS;
    let hours = match store.requests_per_hour(from) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "could not read the request log's hourly counts; pacing keeps its curves");
            return;
        }
    };
    let mut zones = vec![chrono_tz::UTC];
    for p in &catalog.providers {
        if let crate::catalog::Reset::Midnight(tz) = p.reset {
            if !zones.contains(&tz) {
                zones.push(tz);
            }
        }
    }
    ledger.set_demand(crate::ledger::Demand::learn(&hours, &zones, now));
}

/// Everything long-lived.
pub struct App {
    pub config: Arc<Config>,
    pub store: Arc<Store>,
    /// Opens stored provider keys when they are reloaded.
    pub sealer: Arc<Sealer>,
    /// Catalog, chain, provider keys and client keys, as the router reads them.
    pub live: Arc<Live>,
    pub ledger: Arc<MemoryLedger>,
    /// The operations every front door calls.
    pub ops: Arc<Ops>,
    /// The admin side's password, sessions and setup link.
    pub admin: Arc<crate::admin::Admin>,
    pub log: Arc<RequestLog>,
    /// Pooled upstream connections (keep-alive, HTTP/2 where offered).
    pub http: upstream::Client,
    /// What the upstream dialects remember between requests.
    pub dialects: Arc<Dialects>,
    /// Background tasks, awaited at shutdown.
    pub tasks: TaskTracker,
    /// Cancels background tasks.
    pub stop: CancellationToken,
    /// The request-log writer thread, started by `start_background`, finished by `serve`.
    log_writer: Mutex<Option<reqlog::Writer>>,
    /// The exact answer cache, when `[cache] enabled` (SPEC 2.8).
    pub cache: Option<Arc<crate::cache::AnswerCache>>,
    /// Answers kept for `Idempotency-Key` retries (SPEC 2.8).
    pub idempotency: Arc<crate::http::idempotent::Idempotency>,
    /// The ledger, cooldowns and sticky sessions shared with other replicas (`[cluster]`).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// Open the data directory and check the encryption key: the part the CLI needs too.
pub fn open_data(config: &Config) -> anyhow::Result<(Arc<Store>, Arc<Sealer>, KeySource)> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    // Keys, counters and the request log: nobody else's business, whatever the umask.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| {
                format!(
                    "cannot make the data directory {} private",
                    config.data_dir.display()
                )
            })?;
    }
    // With `[store] url` the state is in PostgreSQL; the key file (unless
    // FREEWAY_ENCRYPTION_KEY is given) stays in data_dir, and every replica needs the same key.
    let (store, holder) = match &config.store_url {
        Some(url) => {
            let store = Store::connect(url.expose())?;
            let holder = format!("the store ({})", store.describe());
            (store, holder)
        }
        None => (
            Store::open(&config.data_dir)?,
            format!("the data directory {}", config.data_dir.display()),
        ),
    };
    let canary = store.setting("canary")?;
    let key_file = config.data_dir.join(KEY_FILE);
    if canary.is_some() && config.encryption_key.is_none() && !key_file.exists() {
        bail!(
            "{holder} holds encrypted provider keys, but the key file {} is missing. \
             Restore the file, or set FREEWAY_ENCRYPTION_KEY to the key it held.",
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
                    "the encryption key from {from} is not the one {holder} was created with. \
                     Set FREEWAY_ENCRYPTION_KEY to the original key (or restore the original key file). \
                     Freeway refuses to start rather than misread the stored provider keys.",
                );
            }
        }
        None => {
            // Replicas starting at once on an empty store: the first canary written wins, and
            // a replica whose key does not open it stops here.
            let kept = store.set_setting_once("canary", &sealer.seal(b"freeway", CANARY_AAD))?;
            if sealer.open(&kept, CANARY_AAD).is_err() {
                bail!(
                    "another replica set up {holder} with a different encryption key at the same \
                     moment. Give every replica the same FREEWAY_ENCRYPTION_KEY."
                );
            }
        }
    }
    Ok((Arc::new(store), Arc::new(sealer), source))
}

impl App {
    /// Open everything with the real clock.
    pub fn open(config: Config) -> anyhow::Result<Arc<App>> {
        Self::open_with_clock(config, Arc::new(SystemClock))
    }

    /// Open everything; `clock` drives quotas and cooldowns (tests pass a manual one).
    pub fn open_with_clock(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<App>> {
        let config = Arc::new(config);
        let cache = config
            .cache
            .enabled
            .then(|| Arc::new(crate::cache::AnswerCache::new(config.cache.clone())));
        let (store, sealer, _) = open_data(&config)?;
        let catalog = Arc::new(Catalog::from_config(&config)?);
        let ledger = Arc::new(MemoryLedger::new(Arc::clone(&clock)));
        // Only a server shares its ledger (the CLI opens the App outside any runtime, and
        // asks Redis itself: `freeway status`).
        let serving = tokio::runtime::Handle::try_current().is_ok();
        let cluster = match &config.cluster.redis_url {
            Some(url) if serving => Some(crate::cluster::Cluster::new(
                url.expose(),
                &config.cluster.prefix,
                ledger.clone(),
                Arc::clone(&clock),
                config.routing.sticky_ttl,
            )?),
            _ => None,
        };
        if let Some(url) = &config.cluster.redis_url {
            if serving {
                tracing::info!(
                    redis = %crate::cluster::redact_url(url.expose()),
                    "several replicas: the ledger, cooldowns and sticky sessions are shared through Redis"
                );
            }
        }
        let admin = Arc::new(crate::admin::Admin::new(
            Arc::clone(&store),
            config.auth.admin_password.clone(),
            clock,
        ));
        ledger.restore(&store.load_ledger()?, &store.load_cooldowns()?);
        let replayed = ledger
            .open_journal(&config.data_dir, store.ledger_seq()?)
            .context("cannot open the reservation journal")?;
        if replayed > 0 {
            tracing::info!(
                replayed,
                "counted reservations the last run made after its last save"
            );
        }
        if config.routing.pacing == Pacing::Demand {
            learn_demand(&store, &ledger, &catalog);
        }
        let http = upstream::Client::new(config.routing.connect_timeout)
            .context("cannot build the HTTP client")?;
        let tasks = TaskTracker::new();
        let dialects = Arc::new(Dialects::new(remember_hosts(&store, &tasks)));
        let live = Arc::new(Live::new(catalog));
        let prober = Prober {
            http: http.clone(),
            dialects: Arc::clone(&dialects),
        };
        let ops = Arc::new(
            Ops::new(
                Arc::clone(&config),
                Arc::clone(&store),
                Arc::clone(&sealer),
                Arc::clone(&live),
                ledger.clone(),
                prober,
            )?
            .with_cluster(cluster.clone()),
        );
        let idempotency = Arc::new(crate::http::idempotent::Idempotency::new(Arc::clone(&ops)));
        Ok(Arc::new(App {
            config,
            store,
            sealer,
            live,
            ledger,
            ops,
            admin,
            log: Arc::new(RequestLog::default()),
            http,
            dialects,
            tasks,
            stop: CancellationToken::new(),
            log_writer: Mutex::new(None),
            cache,
            idempotency,
            cluster,
        }))
    }

    /// The router's dependencies.
    pub fn router(&self) -> Router {
        let router = Router::new(
            Arc::clone(&self.live),
            self.ledger.clone(),
            Arc::clone(&self.dialects),
            self.http.clone(),
            Arc::clone(&self.log),
            self.config.routing.clone(),
        );
        let router = router.with_cluster(self.cluster.clone());
        match &self.cache {
            Some(c) => router.with_cache(Arc::clone(c)),
            None => router,
        }
    }

    /// What the HTTP handlers need.
    pub fn http_server(&self) -> Arc<crate::http::Server> {
        Arc::new(crate::http::Server {
            router: self.router(),
            ops: Arc::clone(&self.ops),
            admin: Arc::clone(&self.admin),
            max_body: self.config.max_body,
            body_read_timeout: self.config.http.body_read_timeout,
            metrics: self.config.metrics.clone(),
            families: self.config.anthropic.clone(),
            embeddings: self.config.embeddings.clone(),
            idempotency: Arc::clone(&self.idempotency),
            cors_origins: self.config.http.cors_origins.clone(),
            gemini_families: self.config.gemini_api.clone(),
        })
    }

    /// Persist the ledger if it changed.
    fn persist_ledger(&self) {
        let Some(snap) = self.ledger.snapshot() else {
            return;
        };
        let at = self.ledger.now_ms();
        match self
            .store
            .save_ledger(&snap.scopes, &snap.cooldowns, at, snap.seq)
        {
            Ok(()) => self.ledger.saved(snap.seq),
            Err(e) => {
                self.ledger.unsaved();
                tracing::error!(error = %e, "could not persist usage counters");
            }
        }
    }

    /// Start the background tasks: request-log writer, persistence, reloads, retention and
    /// health probes.
    pub fn start_background(self: &Arc<Self>) {
        if let Some(c) = &self.cluster {
            c.start(&self.tasks, self.stop.clone());
        }
        if let Some(writer) = self.log.start(Arc::clone(&self.store)) {
            *self.log_writer.lock().unwrap_or_else(|e| e.into_inner()) = Some(writer);
        }
        let app = Arc::clone(self);
        self.tasks.spawn(offload::on_loop(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_prune: Option<tokio::time::Instant> = None;
            // Pacing by demand learns its curves again each hour of the ledger's clock (learned
            // when the App opened, so not at the first tick).
            let demand = app.config.routing.pacing == Pacing::Demand;
            let mut learned_hour = app.ledger.now_ms().div_euclid(HOUR_MS);
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
                let hour = app.ledger.now_ms().div_euclid(HOUR_MS);
                let learn = demand && hour != learned_hour;
                learned_hour = hour;
                let _ = offload::run(move || {
                    if learn {
                        learn_demand(&a.store, &a.ledger, &a.live.snapshot().catalog);
                    }
                    a.persist_ledger();
                    a.ops.persist();
                    if prune {
                        let before = a.ledger.now_ms() - a.config.log_retention.as_millis() as i64;
                        match a.store.prune_requests(before, PRUNE_BATCH) {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(rows = n, "pruned old request log rows"),
                            Err(e) => {
                                tracing::error!(error = %e, "could not prune the request log")
                            }
                        }
                        let kept = a.ledger.now_ms() - crate::http::idempotent::KEEP_MS;
                        if let Err(e) = a.store.prune_idempotent(kept) {
                            tracing::error!(error = %e, "could not prune idempotency answers");
                        }
                    }
                })
                .await;
            }
            // Last words: counters, cooldowns and key health survive the restart.
            let a = Arc::clone(&app);
            let _ = offload::run(move || {
                a.persist_ledger();
                a.ops.persist();
            })
            .await;
        }));
        self.spawn_reloads();
        self.spawn_probes();
    }

    /// Notice changes another process made (the CLI beside a server, another replica on the
    /// same PostgreSQL) every [`RELOAD_TICK`], so they serve here within 2 s.
    fn spawn_reloads(self: &Arc<Self>) {
        let app = Arc::clone(self);
        self.tasks.spawn(offload::on_loop(async move {
            let mut tick = tokio::time::interval(RELOAD_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Said once when the store stops answering, and once when it answers again.
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = app.stop.cancelled() => break,
                }
                let a = Arc::clone(&app);
                let Ok(result) = offload::run(move || a.ops.reload_if_changed()).await else {
                    continue;
                };
                match result {
                    Ok(reloaded) => {
                        if reloaded {
                            tracing::info!("reloaded keys and chain after a change in the database");
                        }
                        if std::mem::take(&mut failing) {
                            tracing::info!("the store answers again");
                        }
                    }
                    Err(e) if !failing => {
                        failing = true;
                        tracing::error!(error = %format!("{e:#}"), "could not reload keys (serving with the keys held)");
                    }
                    Err(_) => {}
                }
            }
        }));
    }

    /// The periodic health probe (SPEC 3.6).
    fn spawn_probes(self: &Arc<Self>) {
        let app = Arc::clone(self);
        self.tasks.spawn(offload::on_loop(async move {
            let interval = app.config.routing.health_interval;
            // The first round waits a little so a restart loop does not hammer providers.
            let mut wait = health::jitter(Duration::from_secs(20).min(interval));
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = app.stop.cancelled() => break,
                }
                tokio::select! {
                    _ = app.ops.check(None) => {}
                    _ = app.stop.cancelled() => break,
                }
                wait = health::jitter(interval);
            }
        }));
    }
}

/// Keys of multi-host providers remember the host that accepted them, in the store for stored
/// keys (off the request path).
fn remember_hosts(store: &Arc<Store>, tasks: &TaskTracker) -> crate::providers::HostSink {
    let (store, tasks) = (Arc::clone(store), tasks.clone());
    Box::new(move |key, base| {
        if !key.stored {
            return;
        }
        let (store, id, base) = (Arc::clone(&store), key.id.clone(), base.to_string());
        tasks.spawn(offload::run(move || {
            if let Err(e) = store.set_key_base_url(&id, &base) {
                tracing::error!(error = %e, "could not remember a key's host");
            }
        }));
    })
}

/// Run Freeway on `listener` until `shutdown` resolves; then let in-flight requests finish
/// (at most [`SHUTDOWN_GRACE`]), stop the background tasks and flush what they hold.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let ollama = bind_ollama(&app.config).await?;
    serve_with(app, listener, ollama, shutdown).await
}

/// The Ollama listener of `[ollama] listen`, bound, when the config has one.
pub async fn bind_ollama(config: &Config) -> anyhow::Result<Option<TcpListener>> {
    let Some(addr) = config.ollama.listen else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for Ollama clients ([ollama] listen)"))?;
    Ok(Some(listener))
}

/// [`serve`] with the Ollama listener already bound (or none): both are served until
/// `shutdown`, with the same clocks and connection cap each.
pub async fn serve_with(
    app: Arc<App>,
    listener: TcpListener,
    ollama: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    app.start_background();
    let h = &app.config.http;
    let server = app.http_server();
    let limits = crate::http::serve::Limits {
        header_read_timeout: h.header_read_timeout,
        idle_timeout: h.idle_timeout,
        send_timeout: h.send_timeout,
        max_connections: h.max_connections.unwrap_or_else(default_max_connections),
    };
    match ollama {
        None => crate::http::serve(server, listener, limits, shutdown, SHUTDOWN_GRACE).await,
        Some(ollama) => {
            let stop = CancellationToken::new();
            let signal = stop.clone();
            tokio::spawn(async move {
                shutdown.await;
                signal.cancel();
            });
            let loopback = ollama.local_addr().is_ok_and(|a| a.ip().is_loopback());
            let access = crate::http::ollama::Access::Listener {
                as_key: app.config.ollama.api_key.clone(),
                require_key: !loopback,
            };
            tokio::join!(
                crate::http::serve(
                    Arc::clone(&server),
                    listener,
                    limits,
                    stop.clone().cancelled_owned(),
                    SHUTDOWN_GRACE
                ),
                crate::http::ollama::serve(
                    server,
                    ollama,
                    access,
                    limits,
                    stop.cancelled_owned(),
                    SHUTDOWN_GRACE
                ),
            );
        }
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
        let _ = offload::run(move || w.finish()).await;
    }
    Ok(())
}

/// Half the open-file limit: the other half is for upstream connections and the database.
fn default_max_connections() -> usize {
    let (soft, _) = rlimit::Resource::NOFILE.get().unwrap_or((1024, 1024));
    (soft / 2).clamp(64, 65_536) as usize
}

/// Wait for SIGINT or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled: a signal that arrives right after the banner is not lost (nor does
/// it kill the process the default way).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    #[cfg(unix)]
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    async move {
        #[cfg(unix)]
        {
            let term = async {
                match term.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let int = async {
                match int.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = term => {}
                _ = int => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutting down: finishing in-flight requests");
    }
}
