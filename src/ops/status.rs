//! What can serve now: the model list clients see, readiness, per-provider status, and the
//! quota gauges for metrics.

use std::collections::BTreeMap;

use super::Ops;
use crate::keys::Status;
use crate::ledger::{Ask, Scope, short};

/// One model as `/v1/models` lists it: a canonical model and the providers that serve it.
#[derive(Debug, Clone)]
pub struct ModelGroup {
    pub canonical: String,
    /// The provider of the first serving model in chain order.
    pub owned_by: String,
    pub context: u64,
    pub tools: bool,
    pub vision: bool,
    /// Some enabled serving model could take a request now.
    pub available: bool,
    /// Some serving model is switched on.
    pub enabled: bool,
    /// `provider/upstream-id` of each serving model, in chain order.
    pub providers: Vec<String>,
    /// Serving models their provider or the catalog retired: (`provider/upstream-id`, why).
    pub retired: Vec<(String, String)>,
    /// An embedding model: the size of its vectors (SPEC 2.5).
    pub embedding: Option<u32>,
}

/// One model's line in a provider's status.
#[derive(Debug, Clone)]
pub struct ModelRow {
    pub id: String,
    /// `ready`, `disabled`, `no usable key`, or why each key cannot serve.
    pub state: String,
}

/// One key's line in a provider's status.
#[derive(Debug, Clone)]
pub struct KeyLine {
    /// The id, shortened.
    pub id: String,
    pub status: Status,
    pub enabled: bool,
    /// A cooldown of the whole key: until (ms), and why.
    pub cooling: Option<(i64, String)>,
}

/// One provider with keys.
#[derive(Debug, Clone)]
pub struct ProviderStatus {
    pub id: String,
    pub name: String,
    pub enabled: bool,
    pub keys: usize,
    pub usable: usize,
    pub key_lines: Vec<KeyLine>,
    pub models: Vec<ModelRow>,
}

impl Ops {
    /// Whether some usable key of this model's provider could take a small request now.
    fn available(&self, reference: &str) -> bool {
        let snap = self.live.snapshot();
        let Some(m) = snap
            .catalog
            .model(reference)
            .or_else(|| snap.catalog.embedding(reference))
        else {
            return false;
        };
        let p = snap.catalog.provider_of(m);
        self.live
            .keys
            .usable(&p.id)
            .iter()
            .any(|k| self.ledger.check(&Ask::new(p, m, &k.id, 1)).is_ok())
    }

    /// Canonical models in chain order: those an enabled, usable key can serve, or with `all`
    /// the whole catalog. Also whether any model can serve now (`auto`).
    pub fn model_groups(&self, all: bool) -> (Vec<ModelGroup>, bool) {
        let snap = self.live.snapshot();
        let mut groups: Vec<ModelGroup> = Vec::new();
        let mut any_available = false;
        for link in &snap.chain {
            let Some(m) = snap.catalog.model(&link.model) else {
                continue;
            };
            let available = link.enabled && self.available(&m.reference);
            any_available |= available;
            let has_key = self.live.keys.has_usable(&m.provider);
            if !(all || link.enabled && has_key) {
                continue;
            }
            let g = match groups.iter_mut().position(|g| g.canonical == m.canonical) {
                Some(i) => &mut groups[i],
                None => {
                    groups.push(ModelGroup {
                        canonical: m.canonical.clone(),
                        owned_by: m.provider.clone(),
                        context: 0,
                        tools: false,
                        vision: false,
                        available: false,
                        enabled: false,
                        providers: Vec::new(),
                        retired: Vec::new(),
                        embedding: None,
                    });
                    let last = groups.len() - 1;
                    &mut groups[last]
                }
            };
            g.context = g.context.max(m.context);
            g.tools |= m.tools;
            g.vision |= m.vision;
            g.available |= available;
            g.enabled |= link.enabled;
            g.providers.push(m.reference.clone());
            if let Some(why) = &link.retired {
                g.retired.push((m.reference.clone(), why.clone()));
            }
        }
        groups.extend(self.embedding_groups(all));
        (groups, any_available)
    }

    /// Embedding models, one group per model (canonical id), in catalog order.
    fn embedding_groups(&self, all: bool) -> Vec<ModelGroup> {
        let snap = self.live.snapshot();
        let mut groups: Vec<ModelGroup> = Vec::new();
        for m in &snap.catalog.embeddings {
            let provider = snap.catalog.provider_of(m);
            let enabled = m.enabled && m.retired.is_none() && provider.enabled;
            if !(all || enabled && self.live.keys.has_usable(&m.provider)) {
                continue;
            }
            let available = enabled && self.available(&m.reference);
            let g = match groups.iter_mut().position(|g| g.canonical == m.canonical) {
                Some(i) => &mut groups[i],
                None => {
                    groups.push(ModelGroup {
                        canonical: m.canonical.clone(),
                        owned_by: m.provider.clone(),
                        context: 0,
                        tools: false,
                        vision: false,
                        available: false,
                        enabled: false,
                        providers: Vec::new(),
                        retired: Vec::new(),
                        embedding: m.embed.as_ref().map(|e| e.dims),
                    });
                    let last = groups.len() - 1;
                    &mut groups[last]
                }
            };
            g.context = g.context.max(m.context);
            g.available |= available;
            g.enabled |= enabled;
            g.providers.push(m.reference.clone());
            if let Some(why) = &m.retired {
                g.retired.push((m.reference.clone(), why.clone()));
            }
        }
        groups
    }

    /// Ready when some enabled model can serve now; else why not.
    pub fn readiness(&self) -> Result<(), &'static str> {
        let snap = self.live.snapshot();
        let enabled: Vec<&str> = snap
            .chain
            .iter()
            .filter(|l| l.enabled)
            .map(|l| l.model.as_str())
            .collect();
        if enabled.iter().any(|r| self.available(r)) {
            return Ok(());
        }
        let has_keys = enabled.iter().any(|r| {
            snap.catalog
                .model(r)
                .is_some_and(|m| self.live.keys.has_usable(&m.provider))
        });
        Err(if has_keys {
            "every enabled model is capped or cooling down right now"
        } else {
            "no enabled, valid provider key: add one with `freeway keys add <provider>`"
        })
    }

    /// Every provider that has keys, its keys and models; and the soonest moment a capped or
    /// cooling candidate frees up.
    pub fn status(&self) -> (Vec<ProviderStatus>, Option<i64>) {
        let snap = self.live.snapshot();
        let now = self.ledger.now_ms();
        let mut soonest: Option<i64> = None;
        let mut out = Vec::new();
        for p in &snap.catalog.providers {
            let keys = self.live.keys.all(&p.id);
            if keys.is_empty() {
                continue;
            }
            let usable = self.live.keys.usable(&p.id);
            let key_lines = keys
                .iter()
                .map(|k| {
                    let cool = self
                        .ledger
                        .cooldown(&Scope::key(&p.id, &k.id))
                        .filter(|c| c.until_ms > now)
                        .map(|c| (c.until_ms, c.reason));
                    KeyLine {
                        id: short(&k.id).to_string(),
                        status: k.status(),
                        enabled: k.enabled,
                        cooling: cool,
                    }
                })
                .collect();
            let mut models = Vec::new();
            for link in &snap.chain {
                let Some(m) = snap
                    .catalog
                    .model(&link.model)
                    .filter(|m| m.provider == p.id)
                else {
                    continue;
                };
                let mut states = Vec::new();
                let mut ready = false;
                for k in &usable {
                    match self.ledger.check(&Ask::new(p, m, &k.id, 1)) {
                        Ok(()) => ready = true,
                        Err(d) => match d.until_ms() {
                            Some(t) => {
                                soonest = Some(soonest.map_or(t, |s| s.min(t)));
                                states.push(format!("{d} until {}", fmt_time(t)));
                            }
                            None => states.push(d.to_string()),
                        },
                    }
                }
                let state = if let Some(why) = &link.retired {
                    format!(
                        "retired: {why} (`freeway chain enable {}` if it is back)",
                        m.reference
                    )
                } else if !link.enabled {
                    "disabled".to_string()
                } else if ready {
                    "ready".to_string()
                } else if usable.is_empty() {
                    "no usable key".to_string()
                } else {
                    states.join("; ")
                };
                models.push(ModelRow {
                    id: m.id.clone(),
                    state,
                });
            }
            out.push(ProviderStatus {
                id: p.id.clone(),
                name: p.name.clone(),
                enabled: p.enabled,
                keys: keys.len(),
                usable: usable.len(),
                key_lines,
                models,
            });
        }
        (out, soonest)
    }

    /// Active cooldowns per provider, for metrics.
    pub fn cooldown_counts(&self) -> Vec<(String, i64)> {
        let mut cooling: BTreeMap<String, i64> = BTreeMap::new();
        for (scope, _) in self.ledger.cooldowns() {
            *cooling.entry(scope.provider).or_default() += 1;
        }
        cooling.into_iter().collect()
    }

    /// What is left per (provider, model, key, window) of every enabled model, for metrics.
    pub fn quota_left(&self) -> Vec<(String, String, String, String, i64)> {
        let snap = self.live.snapshot();
        let mut out = Vec::new();
        for link in snap.chain.iter().filter(|l| l.enabled) {
            let Some(m) = snap.catalog.model(&link.model) else {
                continue;
            };
            let p = snap.catalog.provider_of(m);
            for pool in self.pools(p) {
                let u = self
                    .ledger
                    .usage(&Scope::model(&p.id, &m.id, &pool), p.reset);
                let windows = [
                    ("rpm", m.limits.rpm, u.minute_requests),
                    ("rpd", m.limits.rpd, u.day_requests),
                    ("tpm", m.limits.tpm, u.minute_tokens),
                    ("tpd", m.limits.tpd, u.day_tokens),
                ];
                for (window, cap, used) in windows {
                    if let Some(cap) = cap {
                        out.push((
                            p.id.clone(),
                            m.id.clone(),
                            short(&pool).to_string(),
                            window.to_string(),
                            cap.saturating_sub(used) as i64,
                        ));
                    }
                }
            }
        }
        out
    }
}

/// One pool's window of a model's headroom.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PoolWindow {
    /// `model` (the model on one key or shared pool) or `account` (the provider's caps across
    /// models).
    pub scope: &'static str,
    /// The key's short id, or `shared` for a provider whose keys share one quota.
    pub pool: String,
    /// `minute`, `day`, `month` or `credit`.
    pub window: &'static str,
    /// `requests` or `tokens`.
    pub unit: &'static str,
    pub limit: u64,
    pub used: u64,
    pub remaining: u64,
    /// When what is used starts to come back (ms; `None`: nothing used, or a credit).
    pub resets_at: Option<i64>,
}

/// What a servable model has left (SPEC 3.7, `GET /v1/quota`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Headroom {
    pub model: String,
    pub provider: String,
    pub available: bool,
    pub pools: Vec<PoolWindow>,
    /// At the last hour's pace, when the first of its daily, monthly or credit pools runs out,
    /// if before it resets (ms).
    pub exhausts_at: Option<i64>,
}

impl Ops {
    /// Headroom of every servable model, in chain order.
    pub fn headroom(&self) -> Vec<Headroom> {
        use crate::ledger::{Span, day_span, month_span};
        let snap = self.live.snapshot();
        let now = self.ledger.now_ms();
        let mut out = Vec::new();
        for link in snap.chain.iter().filter(|l| l.enabled) {
            let Some(m) = snap.catalog.model(&link.model) else {
                continue;
            };
            let p = snap.catalog.provider_of(m);
            let pools = self.pools(p);
            if pools.is_empty() {
                continue;
            }
            let (day, month) = (day_span(p.reset), month_span(p.reset));
            let mut windows = Vec::new();
            let mut exhausts_at: Option<i64> = None;
            for pool in &pools {
                let shown = if pool == crate::ledger::SHARED_POOL {
                    "shared".to_string()
                } else {
                    short(pool).to_string()
                };
                for (scope_name, scope, limits) in [
                    ("model", Scope::model(&p.id, &m.id, pool), m.limits),
                    ("account", Scope::key(&p.id, pool), p.account),
                ] {
                    if limits.is_empty() {
                        continue;
                    }
                    let u = self.ledger.usage(&scope, p.reset);
                    let caps = [
                        (
                            "minute",
                            "requests",
                            limits.rpm,
                            u.minute_requests,
                            Span::MINUTE,
                            u.hour_requests,
                        ),
                        (
                            "minute",
                            "tokens",
                            limits.tpm,
                            u.minute_tokens,
                            Span::MINUTE,
                            u.hour_tokens,
                        ),
                        (
                            "day",
                            "requests",
                            limits.rpd,
                            u.day_requests,
                            day,
                            u.hour_requests,
                        ),
                        (
                            "day",
                            "tokens",
                            limits.tpd,
                            u.day_tokens,
                            day,
                            u.hour_tokens,
                        ),
                        (
                            "month",
                            "requests",
                            limits.rpmo,
                            u.month_requests,
                            month,
                            u.hour_requests,
                        ),
                        (
                            "month",
                            "tokens",
                            limits.tpmo,
                            u.month_tokens,
                            month,
                            u.hour_tokens,
                        ),
                        (
                            "credit",
                            "tokens",
                            limits.credit,
                            u.credit_tokens,
                            Span::Forever,
                            u.hour_tokens,
                        ),
                    ];
                    for (window, unit, cap, used, span, hour) in caps {
                        let Some(limit) = cap else { continue };
                        let remaining = limit.saturating_sub(used);
                        let resets_at = match span {
                            Span::Forever => None,
                            Span::Calendar(_) | Span::Month(_) => {
                                Some(span.expiry(span.bucket_start(now)))
                            }
                            _ => self.ledger.resets_at(&scope, span),
                        };
                        // The last hour's pace, projected onto what remains.
                        if window != "minute" && hour > 0 {
                            let at = now + (remaining as f64 / hour as f64 * 3_600_000.0) as i64;
                            if resets_at.is_none_or(|r| at < r) {
                                exhausts_at = Some(exhausts_at.map_or(at, |e| e.min(at)));
                            }
                        }
                        windows.push(PoolWindow {
                            scope: scope_name,
                            pool: shown.clone(),
                            window,
                            unit,
                            limit,
                            used,
                            remaining,
                            resets_at,
                        });
                    }
                }
            }
            out.push(Headroom {
                model: m.id.clone(),
                provider: p.id.clone(),
                available: self.available(&m.reference),
                pools: windows,
                exhausts_at,
            });
        }
        out
    }
}

/// A moment for people: `2026-11-25 22:07:24 UTC`.
pub fn fmt_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

impl Ops {
    /// The analytics report of a window (`24h`, `7d`, `30d`), from the hourly rollups.
    pub fn analytics(&self, window: &str) -> super::Result<crate::analytics::Report> {
        self.analytics_of(window, None)
    }

    /// The analytics of a window, limited to one client key's requests when `client` is given.
    pub fn analytics_of(
        &self,
        window: &str,
        client: Option<&str>,
    ) -> super::Result<crate::analytics::Report> {
        let w = crate::analytics::Window::parse(window).ok_or_else(|| {
            super::Error::Invalid(format!("window must be 24h, 7d or 30d, not {window:?}"))
        })?;
        let now = self.ledger.now_ms();
        let (_, starts) = w.steps(now);
        let from = starts.first().copied().unwrap_or(now);
        let rows = self.store.rollups(from)?;
        Ok(crate::analytics::report(w, now, &rows, client))
    }

    /// Logged requests, newest first, before the one with id `before` (or the newest).
    pub fn requests(
        &self,
        before: Option<&str>,
        limit: usize,
    ) -> super::Result<Vec<crate::store::RequestRow>> {
        Ok(self.store.requests_before(before, limit)?)
    }
}
