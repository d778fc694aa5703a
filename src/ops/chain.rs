//! The chain: its order and switches, and what each model has left today.

use super::{Error, Ops, Result};
use crate::catalog::Limits;
use crate::config::Pacing;
use crate::ledger::{Ask, Pace, Scope};
use crate::store::ChainRow;

/// One model in the chain, with today's usage summed over its usable keys.
#[derive(Debug, Clone)]
pub struct ChainEntry {
    /// 1 = tried first.
    pub position: usize,
    pub provider: String,
    /// `provider/upstream-id`.
    pub model: String,
    pub canonical: String,
    pub rank: u32,
    pub context: u64,
    pub tools: bool,
    pub vision: bool,
    pub enabled: bool,
    /// Per quota pool (a key, or all keys of a provider with `shared_quota`): the model's own
    /// caps, and where it has none, its provider account's (OpenRouter's free models share
    /// the account's 20 a minute and 50 a day).
    pub limits: Limits,
    /// Whether the daily request cap in `limits` is the account's, across its models.
    pub rpd_of_account: bool,
    /// Usable keys of its provider.
    pub keys: usize,
    /// Quota pools of those keys (fewer than keys when they share one).
    pub pools: usize,
    pub requests_today: u64,
    pub tokens_today: u64,
    /// Requests today against the account's caps (all models of the provider).
    pub account_requests_today: u64,
    /// Some usable key could take a small request now.
    pub available: bool,
    /// When the soonest capped or cooling key frees up, if none is available.
    pub frees_at_ms: Option<i64>,
    /// Retired by the catalog or its provider (why).
    pub retired: Option<String>,
    /// What upstreams taught about it (SPEC 3.9): each lesson with the words that taught it.
    pub learned: Vec<(String, String)>,
    /// Tried last until then (ms), and why: its streams kept breaking (SPEC 3.9).
    pub benched: Option<(i64, String)>,
    /// Pacing (`routing.pacing`, SPEC 3.7) of its daily request cap over all its pools.
    pub paced: Option<Paced>,
}

/// What pacing allows of a model's daily request cap today (all its pools together).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Paced {
    /// `even` or `demand`.
    pub by: &'static str,
    /// The day's cap over all pools.
    pub cap: u64,
    /// What the pace allows by now (the burst of a tenth included; the reserve pass allows
    /// more when nothing else has room).
    pub allowed: u64,
    /// What is held for later today: the cap less what is allowed by now.
    pub held: u64,
}

impl Ops {
    /// The chain as routing walks it.
    pub fn chain(&self) -> Vec<ChainEntry> {
        let snap = self.live.snapshot();
        snap.chain
            .iter()
            .enumerate()
            .filter_map(|(i, link)| {
                let m = snap.catalog.model(&link.model)?;
                let p = snap.catalog.provider_of(m);
                let keys = self.live.keys.usable(&p.id);
                let (mut requests, mut tokens, mut account_requests) = (0, 0, 0);
                let mut available = false;
                let mut frees_at_ms: Option<i64> = None;
                let pools = self.pools(p);
                for pool in &pools {
                    let u = self
                        .ledger
                        .usage(&Scope::model(&p.id, &m.id, pool), p.reset);
                    requests += u.day_requests;
                    tokens += u.day_tokens;
                    account_requests += self
                        .ledger
                        .usage(&Scope::key(&p.id, pool), p.reset)
                        .day_requests;
                }
                let (own, acc) = (m.limits, p.account);
                let limits = Limits {
                    rpm: own.rpm.or(acc.rpm),
                    rpd: own.rpd.or(acc.rpd),
                    tpm: own.tpm.or(acc.tpm),
                    tpd: own.tpd.or(acc.tpd),
                    ..own
                };
                for k in &keys {
                    match self.ledger.check(&Ask::new(p, m, &k.id, 1)) {
                        Ok(()) => available = true,
                        Err(d) => {
                            if let Some(t) = d.until_ms() {
                                frees_at_ms = Some(frees_at_ms.map_or(t, |s| s.min(t)));
                            }
                        }
                    }
                }
                Some(ChainEntry {
                    position: i + 1,
                    provider: p.id.clone(),
                    model: m.reference.clone(),
                    canonical: m.canonical.clone(),
                    rank: m.rank,
                    context: m.context,
                    tools: m.tools,
                    vision: m.vision,
                    enabled: link.enabled,
                    limits,
                    rpd_of_account: own.rpd.is_none() && acc.rpd.is_some(),
                    keys: keys.len(),
                    pools: pools.len(),
                    requests_today: requests,
                    tokens_today: tokens,
                    account_requests_today: account_requests,
                    available: link.enabled && available,
                    frees_at_ms: (!available).then_some(frees_at_ms).flatten(),
                    retired: link.retired.clone(),
                    learned: self
                        .live
                        .lessons(&m.reference)
                        .map(|l| {
                            l.list
                                .iter()
                                .map(|(lesson, why)| (lesson.to_string(), why.clone()))
                                .collect()
                        })
                        .unwrap_or_default(),
                    benched: self.live.benched(&m.reference, self.ledger.now_ms()),
                    paced: limits
                        .rpd
                        .and_then(|cap| self.paced(p.reset, cap * pools.len().max(1) as u64)),
                })
            })
            .collect()
    }

    /// What the configured pace allows of a daily cap `cap` by now.
    fn paced(&self, reset: crate::catalog::Reset, cap: u64) -> Option<Paced> {
        let (by, pace) = match self.config.routing.pacing {
            Pacing::Off => return None,
            Pacing::Even => ("even", Pace::Even),
            Pacing::Demand => ("demand", Pace::Demand),
        };
        let share = self.ledger.pace_share(reset, pace)?;
        let burst = (cap as f64 * crate::ledger::PACE_BURST).ceil();
        let allowed = ((cap as f64 * share + burst).floor() as u64).min(cap);
        Some(Paced {
            by,
            cap,
            allowed,
            held: cap - allowed,
        })
    }

    /// The stored form of the current chain: every model in order, with the switches the user
    /// set (a model the catalog or config disables is not switched off here).
    fn chain_rows(&self) -> Result<(Vec<ChainRow>, Vec<String>)> {
        let stored = self.store.chain()?;
        let snap = self.live.snapshot();
        let refs: Vec<String> = snap.chain.iter().map(|l| l.model.clone()).collect();
        let rows = refs
            .iter()
            .map(|r| ChainRow {
                model: r.clone(),
                enabled: stored
                    .iter()
                    .find(|s| {
                        snap.catalog
                            .model(&s.model)
                            .is_some_and(|m| &m.reference == r)
                    })
                    .is_none_or(|s| s.enabled),
            })
            .collect();
        Ok((rows, refs))
    }

    /// The reference of a model named `provider/model` (upstream or canonical id).
    pub(super) fn chain_model(&self, name: &str) -> Result<String> {
        let snap = self.live.snapshot();
        snap.catalog
            .model(name)
            .map(|m| m.reference.clone())
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "{name:?} is not a <provider>/<model> in the catalog (see `freeway chain`)"
                ))
            })
    }

    fn save_chain(&self, rows: &[ChainRow]) -> Result<()> {
        self.store.set_chain(rows)?;
        self.reload()?;
        Ok(())
    }

    /// Move a model to a position (1 = first); returns the position it took.
    pub fn move_model(&self, name: &str, position: usize) -> Result<usize> {
        let target = self.chain_model(name)?;
        let (mut rows, refs) = self.chain_rows()?;
        let from = refs
            .iter()
            .position(|r| *r == target)
            .ok_or_else(|| Error::NotFound(format!("{name:?} is not in the chain")))?;
        let row = rows.remove(from);
        let to = position.clamp(1, rows.len() + 1) - 1;
        rows.insert(to, row);
        self.save_chain(&rows)?;
        Ok(to + 1)
    }

    /// Put these models first, in this order; the rest keep their order after them.
    pub fn reorder(&self, order: &[String]) -> Result<()> {
        let mut wanted = Vec::with_capacity(order.len());
        for name in order {
            let r = self.chain_model(name)?;
            if wanted.contains(&r) {
                return Err(Error::Invalid(format!("{name:?} is listed twice")));
            }
            wanted.push(r);
        }
        let (rows, _) = self.chain_rows()?;
        let (mut first, rest): (Vec<ChainRow>, Vec<ChainRow>) =
            rows.into_iter().partition(|r| wanted.contains(&r.model));
        first.sort_by_key(|r| wanted.iter().position(|w| *w == r.model));
        first.extend(rest);
        self.save_chain(&first)
    }

    /// Switch a model on or off in the chain. Returns a note when the catalog or config keeps
    /// it off anyway.
    pub fn set_model_enabled(&self, name: &str, enabled: bool) -> Result<Option<String>> {
        let target = self.chain_model(name)?;
        let (mut rows, _) = self.chain_rows()?;
        if let Some(row) = rows.iter_mut().find(|r| r.model == target) {
            row.enabled = enabled;
        }
        if enabled {
            // Enabling is how the user says a model its provider retired is back (a retirement
            // still waiting to be written is written first, then lifted).
            self.persist_retired();
            self.store.unretire(&target)?;
        }
        self.save_chain(&rows)?;
        let snap = self.live.snapshot();
        let note = snap.catalog.model(&target).and_then(|m| {
            let p = snap.catalog.provider_of(m);
            if !enabled {
                return None;
            }
            if let Some(why) = m.retired.as_ref().or(p.retired.as_ref()) {
                return Some(format!(
                    "the catalog marks it retired ({why}); declare it under [[providers.{}.models]] in the config file to use it anyway",
                    p.id
                ));
            }
            (!m.enabled || !p.enabled).then(|| {
                "the catalog or config disables this model or its provider; set enabled = true there too"
                    .to_string()
            })
        });
        Ok(note)
    }
}
