//! The ledger: what each key has used, what is in flight, and who is cooling down.
//!
//! [`Ledger`] is the interface the router and the operations use: a request reserves before it
//! is sent (one request and its token estimate), checked against every cap at once so concurrent
//! requests can never overshoot a cap together; it is settled with the real usage afterwards, or
//! released when it failed or the client went away. The request itself stays counted once it was
//! sent: the upstream saw it. [`Reservation`] carries one claim and releases it when dropped
//! unsettled, as a safety net behind the explicit calls.
//!
//! [`MemoryLedger`] keeps everything in memory and lets a background task persist it; another
//! implementation (counters shared by several replicas) can stand behind the same trait.

pub mod demand;
mod journal;
mod memory;
pub mod quota;
pub mod window;

pub use demand::{Curve, Demand};
pub use memory::{MemoryLedger, Snapshot, cap_label};
pub use quota::{QuotaWindow, UpstreamQuota, parse_quota_headers};
pub use window::{Span, Window};

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::catalog::{Limits, Model, Provider, Reset};

/// Where time comes from, so tests can move it.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}

/// A clock that moves only when told (tests).
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(now_ms: i64) -> Self {
        ManualClock(AtomicI64::new(now_ms))
    }
    pub fn set(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// What a counter or cooldown belongs to. `model: None` is the whole key (account caps,
/// key-wide cooldowns).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Scope {
    pub provider: String,
    pub model: Option<String>,
    pub key: String,
}

/// The provider name of client keys' scopes (no provider id looks like it).
pub const CLIENT_SCOPE: &str = "*client";
/// Client keys' days and months: UTC.
pub const CLIENT_RESET: Reset = Reset::Midnight(chrono_tz::UTC);

impl Scope {
    /// Where a client key's own use is counted (SPEC 3.8).
    pub fn client(name: &str) -> Scope {
        Scope::model(CLIENT_SCOPE, "*", name)
    }

    pub fn model(provider: &str, model: &str, key: &str) -> Scope {
        Scope {
            provider: provider.into(),
            model: Some(model.into()),
            key: key.into(),
        }
    }
    pub fn key(provider: &str, key: &str) -> Scope {
        Scope {
            provider: provider.into(),
            model: None,
            key: key.into(),
        }
    }
    /// Stable text form for the database.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
    pub fn decode(text: &str) -> Option<Scope> {
        serde_json::from_str(text).ok()
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.model {
            Some(m) => write!(f, "{}/{} (key {})", self.provider, m, short(&self.key)),
            None => write!(f, "{} (key {})", self.provider, short(&self.key)),
        }
    }
}

/// Key ids are long; eight characters tell them apart.
pub fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// A scope that cannot be used until a moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cooldown {
    pub until_ms: i64,
    pub reason: String,
}

/// Why a candidate was not used.
#[derive(Debug, Clone, PartialEq)]
pub enum Denied {
    /// Cooling down until then.
    Cooling { until_ms: i64, reason: String },
    /// A cap is full; `frees_at_ms` is when enough of it frees up (None: this request can
    /// never fit, e.g. it is larger than the whole token cap).
    Capped {
        cap: &'static str,
        frees_at_ms: Option<i64>,
    },
    /// Pacing (`routing.pacing = "even"` or `"demand"`): today's use is ahead of the cap spread
    /// over the day (evenly, or along the demand this gateway expects).
    Paced { cap: &'static str, frees_at_ms: i64 },
    /// Fair share (`routing.fairness = "weighted"`): this client key used its share of the
    /// model's day while another that used less still asks.
    Shared { frees_at_ms: i64 },
}

impl Denied {
    /// When this candidate could serve again.
    pub fn until_ms(&self) -> Option<i64> {
        match self {
            Denied::Cooling { until_ms, .. } => Some(*until_ms),
            Denied::Capped { frees_at_ms, .. } => *frees_at_ms,
            Denied::Paced { frees_at_ms, .. } | Denied::Shared { frees_at_ms } => {
                Some(*frees_at_ms)
            }
        }
    }
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denied::Cooling { reason, .. } => write!(f, "cooling down ({reason})"),
            Denied::Capped { cap, .. } => write!(f, "{cap} cap reached"),
            Denied::Paced { cap, .. } => write!(f, "paced ({cap} ahead of its pace for the day)"),
            Denied::Shared { .. } => {
                write!(f, "held for other client keys' fair share of its daily cap")
            }
        }
    }
}

/// What one request asks of one candidate.
#[derive(Debug, Clone)]
pub struct Ask {
    pub provider: String,
    pub model: String,
    pub key: String,
    /// Whose quota it counts against: the key, or one pool for every key of a provider with
    /// `shared_quota` (a Google Cloud project).
    pub pool: String,
    pub limits: Limits,
    pub account: Limits,
    pub reset: Reset,
    /// Estimated tokens: prompt plus the answer reserve.
    pub tokens: u64,
    /// How daily caps are paced (`routing.pacing`, `auto` requests).
    pub pace: Pace,
}

/// Share of a day's cap a pace allows beyond the share of the day passed: a tenth of the cap.
pub const PACE_BURST: f64 = 0.1;

/// How an ask is held to its daily caps beyond the caps themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pace {
    /// Only the caps.
    #[default]
    Off,
    /// Within the cap spread evenly over the day, plus a burst of a tenth (SPEC 3.7).
    Even,
    /// When nothing within its pace can serve: beyond the even pace, but keeping half of what an
    /// even pace saves for the rest of the day (on a rolling day, half the cap), so the model
    /// still serves later at half its even rate.
    Reserve,
    /// Within the cap spread along the demand this gateway expects for each hour of the
    /// provider's day ([`demand`]), plus a burst of a tenth (SPEC 3.7, `"demand"`).
    Demand,
    /// [`Pace::Reserve`] along the demand curve: everything but half of what the demand pace
    /// keeps for the rest of the day.
    DemandReserve,
}

impl Pace {
    /// The looser pace the router retries a held-back model with before refusing a request.
    pub fn looser(self) -> Option<Pace> {
        match self {
            Pace::Even => Some(Pace::Reserve),
            Pace::Demand => Some(Pace::DemandReserve),
            _ => None,
        }
    }

    /// Whether this pace follows the demand curve.
    pub fn by_demand(self) -> bool {
        matches!(self, Pace::Demand | Pace::DemandReserve)
    }

    /// Whether this is a reserve pass.
    pub fn is_reserve(self) -> bool {
        matches!(self, Pace::Reserve | Pace::DemandReserve)
    }
}

impl Ask {
    /// What a request of `tokens` asks of `model` through one key of `provider`.
    pub fn new(provider: &Provider, model: &Model, key: &str, tokens: u64) -> Ask {
        Ask {
            provider: provider.id.clone(),
            model: model.id.clone(),
            key: key.to_string(),
            pool: pool_of(provider, key),
            limits: model.limits,
            account: provider.account,
            reset: provider.reset,
            tokens,
            pace: Pace::Off,
        }
    }

    /// The same ask, held to a pace.
    pub fn paced(mut self, pace: Pace) -> Ask {
        self.pace = pace;
        self
    }

    fn day_span(&self) -> Span {
        day_span(self.reset)
    }

    fn month_span(&self) -> Span {
        month_span(self.reset)
    }

    /// What one request of the client key `client` asks of its own limits (SPEC 3.8): counted
    /// under [`Scope::client`], in UTC days and months.
    pub fn client(client: &str, limits: &crate::config::ClientLimits, tokens: u64) -> Ask {
        Ask {
            provider: CLIENT_SCOPE.into(),
            model: "*".into(),
            key: client.to_string(),
            pool: client.to_string(),
            limits: Limits {
                rpm: limits.rpm,
                rpd: limits.rpd,
                tpd: limits.tpd,
                tpmo: limits.tpmo,
                ..Limits::default()
            },
            account: Limits::default(),
            reset: CLIENT_RESET,
            tokens,
            pace: Pace::Off,
        }
    }

    /// The scope of this model's counters (and its rate-limit cooldowns).
    pub fn model_scope(&self) -> Scope {
        Scope::model(&self.provider, &self.model, &self.pool)
    }
}

/// The pool a key of `provider` counts against: itself, or the provider's shared pool.
pub fn pool_of(provider: &Provider, key: &str) -> String {
    if provider.shared_quota {
        SHARED_POOL.to_string()
    } else {
        key.to_string()
    }
}

/// The pool name of a provider whose keys share one quota (no key id looks like it).
pub const SHARED_POOL: &str = "*shared";

/// The day window of a reset rule.
pub fn day_span(reset: Reset) -> Span {
    match reset {
        Reset::Rolling => Span::ROLLING_DAY,
        Reset::Midnight(tz) => Span::Calendar(tz),
    }
}

/// The month window of a reset rule (UTC months for providers with a rolling day).
pub fn month_span(reset: Reset) -> Span {
    match reset {
        Reset::Rolling => Span::Month(chrono_tz::UTC),
        Reset::Midnight(tz) => Span::Month(tz),
    }
}

/// Usage of one scope, for status pages and headroom.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Usage {
    pub minute_requests: u64,
    pub minute_tokens: u64,
    pub day_requests: u64,
    pub day_tokens: u64,
    pub month_requests: u64,
    pub month_tokens: u64,
    /// Tokens spent of a one-time credit.
    pub credit_tokens: u64,
    /// The last hour (the pace of use).
    pub hour_requests: u64,
    pub hour_tokens: u64,
}

/// One request's claim, as the ledger that granted it recorded it: the scopes it counts in,
/// the window buckets it went to, and the tokens it reserved.
#[derive(Debug, Clone, PartialEq)]
pub struct Ticket {
    pub marks: Vec<Mark>,
    pub tokens: u64,
}

/// Where a claim was counted in one scope: the start of its minute, day, hour and month
/// buckets (a credit has one bucket).
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub scope: Scope,
    pub minute: i64,
    pub day: i64,
    pub hour: i64,
    pub month: i64,
}

/// Usage counters, reservations and cooldowns.
pub trait Ledger: Send + Sync + 'static {
    /// The ledger's clock, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
    /// Reserve one request and `ask.tokens` tokens if every cap allows; else say why not.
    fn reserve(&self, ask: &Ask) -> Result<Ticket, Denied>;
    /// Whether `ask` would fit now, without reserving.
    fn check(&self, ask: &Ask) -> Result<(), Denied>;
    /// The request was answered and used `tokens` in all (`None`: the upstream did not say,
    /// the estimate stands).
    fn settle(&self, ticket: &Ticket, tokens: Option<u64>);
    /// The request failed or was cancelled: its tokens go back. A request that was `sent`
    /// stays counted (the upstream saw it); one that never left goes back too.
    fn release(&self, ticket: &Ticket, sent: bool);
    /// Believe the upstream's own count of what is left.
    fn observe(&self, ask: &Ask, quotas: &[UpstreamQuota]);
    /// Cool a scope down until `until_ms` (a later existing cooldown stays).
    fn cool(&self, scope: Scope, until_ms: i64, reason: &str);
    /// End a scope's cooldown now (the user says it may be tried again).
    fn clear(&self, scope: &Scope);
    /// The active cooldown of a scope, if any.
    fn cooldown(&self, scope: &Scope) -> Option<Cooldown>;
    /// Every active cooldown.
    fn cooldowns(&self) -> Vec<(Scope, Cooldown)>;
    /// Current usage of a scope.
    fn usage(&self, scope: &Scope, reset: Reset) -> Usage;
    /// When the oldest of a scope's counted requests (or tokens) in a capped window leaves it:
    /// the reset time shown for that window (`None`: nothing counted).
    fn resets_at(&self, scope: &Scope, span: Span) -> Option<i64>;
    /// The share of a daily cap `pace` allows by now in a calendar day of `reset`, burst left
    /// out (`None`: `Off`, or a rolling day, which is paced by the hours around now rather than
    /// as a share of a day).
    fn pace_share(&self, reset: Reset, pace: Pace) -> Option<f64>;
    /// Another replica's use, as the shared ledger counts it (`cluster`): raise this scope's
    /// day to `requests` and `tokens` if it holds less, so pacing and the dashboards see the
    /// whole cluster's use.
    fn mirror(&self, _scope: &Scope, _reset: Reset, _requests: u64, _tokens: u64) {}
}

/// The same claim counted somewhere else too (the ledger several replicas share), settled
/// and released with the local one.
pub trait SharedClaim: Send + Sync {
    /// The request was answered and used `tokens` in all (`None`: the estimate stands).
    fn settle(&self, tokens: Option<u64>);
    /// The request failed (`sent`) or never left.
    fn release(&self, sent: bool);
}

/// A granted claim. Settle or release it; dropped unsettled (the client went away, a panic),
/// it releases itself as a request that was sent.
pub struct Reservation {
    ledger: Arc<dyn Ledger>,
    ticket: Ticket,
    done: bool,
    /// The same claim in the ledger several replicas share, when there is one.
    shared: Option<Box<dyn SharedClaim>>,
}

impl Reservation {
    /// Reserve `ask` in `ledger`.
    pub fn take(ledger: &Arc<dyn Ledger>, ask: &Ask) -> Result<Reservation, Denied> {
        let ticket = ledger.reserve(ask)?;
        Ok(Reservation {
            ledger: Arc::clone(ledger),
            ticket,
            done: false,
            shared: None,
        })
    }

    /// Count this claim in another ledger too: settled and released with this one.
    pub fn also(&mut self, claim: Box<dyn SharedClaim>) {
        self.shared = Some(claim);
    }

    /// The request succeeded and used `tokens` in all (`None`: the estimate stands).
    pub fn settle(mut self, tokens: Option<u64>) {
        self.ledger.settle(&self.ticket, tokens);
        if let Some(c) = &self.shared {
            c.settle(tokens);
        }
        self.done = true;
    }

    /// The request was sent and failed: its tokens go back.
    pub fn release(mut self) {
        self.give_back(true);
    }

    /// The request was never sent: give back the request too.
    pub fn unsent(mut self) {
        self.give_back(false);
    }

    fn give_back(&mut self, sent: bool) {
        self.ledger.release(&self.ticket, sent);
        if let Some(c) = &self.shared {
            c.release(sent);
        }
        self.done = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            self.give_back(true);
        }
    }
}
