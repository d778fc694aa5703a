//! The ledger: what each key has used, what is in flight, and who is cooling down.
//!
//! Usage is counted per (provider, model, key) and per (provider, key) for account-wide caps.
//! A request reserves before it is sent (one request and its token estimate) under one lock
//! that checks every cap first, so concurrent requests can never overshoot a cap together.
//! The reservation is settled with the real usage afterwards; dropping it unsettled gives the
//! tokens back. The request itself stays counted once it was sent: the upstream saw it.
//!
//! Everything here is in memory; `snapshot`/`restore` let a background task persist it.

pub mod window;

use serde::{Deserialize, Serialize};
// Scopes come from the catalog and config, never from clients: a fast hasher is safe here.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::catalog::{Limits, Model, Provider, Reset};
pub use window::{Span, Window};

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

impl Scope {
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
}

impl Denied {
    /// When this candidate could serve again.
    pub fn until_ms(&self) -> Option<i64> {
        match self {
            Denied::Cooling { until_ms, .. } => Some(*until_ms),
            Denied::Capped { frees_at_ms, .. } => *frees_at_ms,
        }
    }
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denied::Cooling { reason, .. } => write!(f, "cooling down ({reason})"),
            Denied::Capped { cap, .. } => write!(f, "{cap} cap reached"),
        }
    }
}

/// What one request asks of one candidate.
#[derive(Debug, Clone)]
pub struct Ask {
    pub provider: String,
    pub model: String,
    pub key: String,
    pub limits: Limits,
    pub account: Limits,
    pub reset: Reset,
    /// Estimated tokens: prompt plus the answer reserve.
    pub tokens: u64,
}

impl Ask {
    /// What a request of `tokens` asks of `model` through one key of `provider`.
    pub fn new(provider: &Provider, model: &Model, key: &str, tokens: u64) -> Ask {
        Ask {
            provider: provider.id.clone(),
            model: model.id.clone(),
            key: key.to_string(),
            limits: model.limits,
            account: provider.account,
            reset: provider.reset,
            tokens,
        }
    }

    fn day_span(&self) -> Span {
        match self.reset {
            Reset::Rolling => Span::ROLLING_DAY,
            Reset::Midnight(tz) => Span::Calendar(tz),
        }
    }
}

/// Minute and day windows of one scope.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Counters {
    minute: Window,
    day: Window,
    /// The day rule used last, so a persisted calendar window is read back the same way.
    #[serde(default)]
    calendar_tz: Option<String>,
}

#[derive(Default)]
struct Inner {
    counters: HashMap<Scope, Counters>,
    cooldowns: HashMap<Scope, Cooldown>,
    /// Scopes changed since the last snapshot.
    dirty: HashSet<Scope>,
    cooldowns_dirty: bool,
}

/// Usage of one scope, for status pages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Usage {
    pub minute_requests: u64,
    pub minute_tokens: u64,
    pub day_requests: u64,
    pub day_tokens: u64,
}

/// Counts, reservations and cooldowns. Share as `Arc<Ledger>`.
pub struct Ledger {
    inner: Mutex<Inner>,
    clock: Arc<dyn Clock>,
}

/// Which window an upstream's remaining-quota header speaks about.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QuotaWindow {
    Minute,
    Day,
    /// The header does not say; guessed from which caps the model has.
    Unknown,
}

/// What an upstream said about its remaining quota.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamQuota {
    pub tokens: bool,
    pub window: QuotaWindow,
    pub remaining: u64,
    pub reset: Option<Duration>,
}

impl Ledger {
    pub fn new(clock: Arc<dyn Clock>) -> Ledger {
        Ledger {
            inner: Mutex::new(Inner::default()),
            clock,
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserve one request and `ask.tokens` tokens if every cap allows; else say why not.
    pub fn try_reserve(self: &Arc<Self>, ask: &Ask) -> Result<Reservation, Denied> {
        let now = self.now_ms();
        let mut inner = self.lock();
        let scopes = Self::check(&mut inner, ask, now)?;
        let day = ask.day_span();
        let mut marks = Vec::with_capacity(scopes.len());
        for scope in scopes {
            let c = inner.counters.entry(scope.clone()).or_default();
            let m = c.minute.add(Span::MINUTE, now, 1, ask.tokens);
            let d = c.day.add(day, now, 1, ask.tokens);
            c.calendar_tz = calendar_name(day);
            inner.dirty.insert(scope.clone());
            marks.push((scope, m, d));
        }
        Ok(Reservation {
            ledger: Arc::clone(self),
            marks,
            tokens: ask.tokens,
            done: false,
        })
    }

    /// Whether `ask` would fit now, without reserving.
    pub fn check_only(&self, ask: &Ask) -> Result<(), Denied> {
        let now = self.now_ms();
        let mut inner = self.lock();
        Self::check(&mut inner, ask, now).map(|_| ())
    }

    fn check(inner: &mut Inner, ask: &Ask, now: i64) -> Result<Vec<Scope>, Denied> {
        let model_scope = Scope::model(&ask.provider, &ask.model, &ask.key);
        let key_scope = Scope::key(&ask.provider, &ask.key);
        for scope in [&model_scope, &key_scope] {
            if let Some(c) = inner.cooldowns.get(scope) {
                if c.until_ms > now {
                    return Err(Denied::Cooling {
                        until_ms: c.until_ms,
                        reason: c.reason.clone(),
                    });
                }
                inner.cooldowns.remove(scope);
                inner.cooldowns_dirty = true;
            }
        }
        let day = ask.day_span();
        let mut scopes = vec![(model_scope, ask.limits, "")];
        if !ask.account.is_empty() {
            scopes.push((key_scope, ask.account, "account "));
        }
        for (scope, limits, label) in &scopes {
            let c = inner.counters.entry(scope.clone()).or_default();
            c.minute.prune(Span::MINUTE, now);
            c.day.prune(day, now);
            let (mr, mt) = c.minute.totals();
            let (dr, dt) = c.day.totals();
            let checks = [
                (limits.rpm, mr, 1, &c.minute, Span::MINUTE, false, "rpm"),
                (limits.rpd, dr, 1, &c.day, day, false, "rpd"),
                (
                    limits.tpm,
                    mt,
                    ask.tokens,
                    &c.minute,
                    Span::MINUTE,
                    true,
                    "tpm",
                ),
                (limits.tpd, dt, ask.tokens, &c.day, day, true, "tpd"),
            ];
            for (cap, used, want, window, span, tokens, name) in checks {
                let Some(cap) = cap else { continue };
                if used + want <= cap {
                    continue;
                }
                let cap_name = cap_label(label, name);
                if want > cap {
                    return Err(Denied::Capped {
                        cap: cap_name,
                        frees_at_ms: None,
                    });
                }
                let excess = used + want - cap;
                let frees_at_ms = if tokens {
                    window.frees_at(span, 0, excess)
                } else {
                    window.frees_at(span, excess, 0)
                };
                return Err(Denied::Capped {
                    cap: cap_name,
                    frees_at_ms,
                });
            }
        }
        Ok(scopes.into_iter().map(|(s, _, _)| s).collect())
    }

    /// Cool a scope down until `until_ms` (keeps a later existing cooldown).
    pub fn cool(&self, scope: Scope, until_ms: i64, reason: impl Into<String>) {
        let mut inner = self.lock();
        let entry = inner.cooldowns.entry(scope).or_insert(Cooldown {
            until_ms: 0,
            reason: String::new(),
        });
        if until_ms > entry.until_ms {
            entry.until_ms = until_ms;
            entry.reason = reason.into();
        }
        inner.cooldowns_dirty = true;
    }

    /// Remove cooldowns of a provider (all, or one key's).
    pub fn clear_cooldowns(&self, provider: &str, key: Option<&str>) -> usize {
        let mut inner = self.lock();
        let before = inner.cooldowns.len();
        inner
            .cooldowns
            .retain(|s, _| s.provider != provider || key.is_some_and(|k| k != s.key));
        inner.cooldowns_dirty = true;
        before - inner.cooldowns.len()
    }

    /// The active cooldown of a scope, if any.
    pub fn cooldown(&self, scope: &Scope) -> Option<Cooldown> {
        let now = self.now_ms();
        self.lock()
            .cooldowns
            .get(scope)
            .filter(|c| c.until_ms > now)
            .cloned()
    }

    /// Every active cooldown.
    pub fn cooldowns(&self) -> Vec<(Scope, Cooldown)> {
        let now = self.now_ms();
        self.lock()
            .cooldowns
            .iter()
            .filter(|(_, c)| c.until_ms > now)
            .map(|(s, c)| (s.clone(), c.clone()))
            .collect()
    }

    /// Current usage of a scope.
    pub fn usage(&self, scope: &Scope, reset: Reset) -> Usage {
        let now = self.now_ms();
        let day = match reset {
            Reset::Rolling => Span::ROLLING_DAY,
            Reset::Midnight(tz) => Span::Calendar(tz),
        };
        let mut inner = self.lock();
        let Some(c) = inner.counters.get_mut(scope) else {
            return Usage::default();
        };
        c.minute.prune(Span::MINUTE, now);
        c.day.prune(day, now);
        let (mr, mt) = c.minute.totals();
        let (dr, dt) = c.day.totals();
        Usage {
            minute_requests: mr,
            minute_tokens: mt,
            day_requests: dr,
            day_tokens: dt,
        }
    }

    /// Believe the upstream's own count: raise ours to match it, and cool down when it says
    /// nothing is left.
    pub fn observe(&self, ask: &Ask, quotas: &[UpstreamQuota]) {
        let now = self.now_ms();
        let scope = Scope::model(&ask.provider, &ask.model, &ask.key);
        for q in quotas {
            let window = match q.window {
                QuotaWindow::Unknown => {
                    let (day_cap, minute_cap) = if q.tokens {
                        (ask.limits.tpd, ask.limits.tpm)
                    } else {
                        (ask.limits.rpd, ask.limits.rpm)
                    };
                    if minute_cap.is_some() || day_cap.is_none() {
                        QuotaWindow::Minute
                    } else {
                        QuotaWindow::Day
                    }
                }
                w => w,
            };
            let day_span = ask.day_span();
            if q.remaining == 0 {
                let until = match (q.reset, window) {
                    (Some(d), _) => now + d.as_millis() as i64,
                    (None, QuotaWindow::Day) => day_span.expiry(day_span.bucket_start(now)),
                    (None, _) => now + 60_000,
                };
                let what = if q.tokens { "tokens" } else { "requests" };
                self.cool(
                    scope.clone(),
                    until,
                    format!("upstream reports no {what} left"),
                );
                continue;
            }
            let cap = match (q.tokens, window) {
                (false, QuotaWindow::Day) => ask.limits.rpd,
                (false, _) => ask.limits.rpm,
                (true, QuotaWindow::Day) => ask.limits.tpd,
                (true, _) => ask.limits.tpm,
            };
            let Some(cap) = cap else { continue };
            let upstream_used = cap.saturating_sub(q.remaining);
            let mut inner = self.lock();
            let c = inner.counters.entry(scope.clone()).or_default();
            let (span, w) = if window == QuotaWindow::Day {
                (day_span, &mut c.day)
            } else {
                (Span::MINUTE, &mut c.minute)
            };
            w.prune(span, now);
            let (r, t) = w.totals();
            let ours = if q.tokens { t } else { r };
            if upstream_used > ours {
                let more = upstream_used - ours;
                if q.tokens {
                    w.add(span, now, 0, more);
                } else {
                    w.add(span, now, more, 0);
                }
                inner.dirty.insert(scope.clone());
            }
        }
    }

    fn release(&self, marks: &[(Scope, i64, i64)], dreq: i64, dtok: i64) {
        let mut inner = self.lock();
        for (scope, m, d) in marks {
            if let Some(c) = inner.counters.get_mut(scope) {
                c.minute.adjust(*m, dreq, dtok);
                c.day.adjust(*d, dreq, dtok);
            }
            inner.dirty.insert(scope.clone());
        }
    }

    /// Serialized state of scopes changed since the last call, and every cooldown; `None` when
    /// nothing changed.
    #[allow(clippy::type_complexity)]
    pub fn snapshot(&self) -> Option<(Vec<(String, String)>, Vec<(String, i64, String)>)> {
        let now = self.now_ms();
        let mut inner = self.lock();
        if inner.dirty.is_empty() && !inner.cooldowns_dirty {
            return None;
        }
        let dirty: Vec<Scope> = inner.dirty.drain().collect();
        let scopes = dirty
            .into_iter()
            .filter_map(|s| {
                let c = inner.counters.get(&s)?;
                Some((s.encode(), serde_json::to_string(c).ok()?))
            })
            .collect();
        inner.cooldowns.retain(|_, c| c.until_ms > now);
        let cooldowns = inner
            .cooldowns
            .iter()
            .map(|(s, c)| (s.encode(), c.until_ms, c.reason.clone()))
            .collect();
        inner.cooldowns_dirty = false;
        Some((scopes, cooldowns))
    }

    /// Load persisted state (at start).
    pub fn restore(&self, scopes: &[(String, String)], cooldowns: &[(String, i64, String)]) {
        let mut inner = self.lock();
        for (scope, state) in scopes {
            let (Some(scope), Ok(c)) = (Scope::decode(scope), serde_json::from_str(state)) else {
                continue;
            };
            inner.counters.insert(scope, c);
        }
        for (scope, until_ms, reason) in cooldowns {
            if let Some(scope) = Scope::decode(scope) {
                inner.cooldowns.insert(
                    scope,
                    Cooldown {
                        until_ms: *until_ms,
                        reason: reason.clone(),
                    },
                );
            }
        }
    }
}

fn calendar_name(span: Span) -> Option<String> {
    match span {
        Span::Calendar(tz) => Some(tz.name().to_string()),
        Span::Rolling { .. } => None,
    }
}

fn cap_label(prefix: &str, name: &'static str) -> &'static str {
    match (prefix.is_empty(), name) {
        (true, n) => n,
        (false, "rpm") => "account rpm",
        (false, "rpd") => "account rpd",
        (false, "tpm") => "account tpm",
        (false, _) => "account tpd",
    }
}

/// One request's claim on the ledger. Settle it with the real usage; dropping it unsettled
/// (failure, cancellation) gives the reserved tokens back.
pub struct Reservation {
    ledger: Arc<Ledger>,
    marks: Vec<(Scope, i64, i64)>,
    tokens: u64,
    done: bool,
}

impl Reservation {
    /// The request succeeded and used `tokens` in all.
    pub fn settle(mut self, tokens: u64) {
        let delta = tokens as i64 - self.tokens as i64;
        self.ledger.release(&self.marks, 0, delta);
        self.done = true;
    }

    /// The upstream reported no usage: the estimate stays as the charge.
    pub fn settle_as_estimated(mut self) {
        self.done = true;
    }

    /// The request was never sent: give back the request too.
    pub fn unsent(mut self) {
        self.ledger.release(&self.marks, -1, -(self.tokens as i64));
        self.done = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            self.ledger.release(&self.marks, 0, -(self.tokens as i64));
        }
    }
}

/// Read `x-ratelimit-remaining-*` / `x-ratelimit-reset-*` headers (Groq, Cerebras, OpenRouter
/// and others). Header names are lower-case.
pub fn parse_quota_headers<'a>(
    headers: impl Iterator<Item = (&'a str, &'a str)>,
) -> Vec<UpstreamQuota> {
    let mut remaining: Vec<(bool, QuotaWindow, u64)> = Vec::new();
    let mut resets: Vec<(bool, QuotaWindow, Duration)> = Vec::new();
    for (name, value) in headers {
        let Some(rest) = name.strip_prefix("x-ratelimit-") else {
            continue;
        };
        let (is_remaining, what) = if let Some(w) = rest.strip_prefix("remaining-") {
            (true, w)
        } else if let Some(w) = rest.strip_prefix("reset-") {
            (false, w)
        } else {
            continue;
        };
        let (tokens, window) = match what {
            "requests" => (false, QuotaWindow::Unknown),
            "tokens" => (true, QuotaWindow::Unknown),
            "requests-day" => (false, QuotaWindow::Day),
            "requests-minute" => (false, QuotaWindow::Minute),
            "tokens-day" => (true, QuotaWindow::Day),
            "tokens-minute" => (true, QuotaWindow::Minute),
            _ => continue,
        };
        if is_remaining {
            if let Ok(n) = value.trim().parse::<f64>() {
                if n.is_finite() && n >= 0.0 {
                    remaining.push((tokens, window, n as u64));
                }
            }
        } else if let Some(d) = parse_reset(value) {
            resets.push((tokens, window, d));
        }
    }
    remaining
        .into_iter()
        .map(|(tokens, window, remaining)| UpstreamQuota {
            tokens,
            window,
            remaining,
            reset: resets
                .iter()
                .find(|(t, w, _)| *t == tokens && *w == window)
                .map(|(_, _, d)| *d),
        })
        .collect()
}

/// Seconds from an upstream as a `Duration`, if finite, not negative and below ~30 years:
/// upstream numbers are never trusted to fit (`Duration::from_secs_f64` panics on overflow).
pub fn secs(value: f64) -> Option<Duration> {
    (0.0..1e9)
        .contains(&value)
        .then(|| Duration::try_from_secs_f64(value).ok())
        .flatten()
}

/// `2m59.56s`, `7.66s`, `120ms`, `1h2m3s`, or plain seconds.
pub fn parse_reset(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(value) = v.parse::<f64>() {
        return secs(value);
    }
    let mut total = 0.0f64;
    let mut num = String::new();
    let mut chars = v.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let n: f64 = num.parse().ok()?;
        num.clear();
        let unit = match c {
            'h' => 3600.0,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                0.001
            }
            'm' => 60.0,
            's' => 1.0,
            _ => return None,
        };
        total += n * unit;
        any = true;
    }
    if !num.is_empty() || !any {
        return None;
    }
    secs(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(limits: Limits, tokens: u64) -> Ask {
        Ask {
            provider: "p".into(),
            model: "m".into(),
            key: "k".into(),
            limits,
            account: Limits::default(),
            reset: Reset::Rolling,
            tokens,
        }
    }

    fn ledger_at(ms: i64) -> (Arc<Ledger>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(ms));
        (Arc::new(Ledger::new(clock.clone())), clock)
    }

    #[test]
    fn rpm_cap_counts_in_flight_requests() {
        let (l, clock) = ledger_at(1_000_000);
        let a = ask(
            Limits {
                rpm: Some(2),
                ..Limits::default()
            },
            10,
        );
        let r1 = l.try_reserve(&a).unwrap();
        let _r2 = l.try_reserve(&a).unwrap();
        let denied = l.try_reserve(&a).err().unwrap();
        assert!(
            matches!(denied, Denied::Capped { cap: "rpm", frees_at_ms: Some(t) } if t == 1_061_000)
        );
        r1.settle(5);
        assert!(l.try_reserve(&a).is_err(), "a settled request still counts");
        clock.advance(Duration::from_secs(61));
        assert!(l.try_reserve(&a).is_ok(), "the minute rolled over");
    }

    #[test]
    fn tokens_are_reserved_then_settled_or_released() {
        let (l, _) = ledger_at(0);
        let a = ask(
            Limits {
                tpm: Some(100),
                ..Limits::default()
            },
            60,
        );
        let r = l.try_reserve(&a).unwrap();
        assert!(l.try_reserve(&a).is_err(), "60 + 60 > 100");
        drop(r);
        let r = l.try_reserve(&a).unwrap();
        r.settle(20);
        let scope = Scope::model("p", "m", "k");
        assert_eq!(l.usage(&scope, Reset::Rolling).minute_tokens, 20);
        assert_eq!(l.usage(&scope, Reset::Rolling).minute_requests, 2);
        let too_big = ask(
            Limits {
                tpm: Some(100),
                ..Limits::default()
            },
            500,
        );
        assert_eq!(
            l.try_reserve(&too_big).err(),
            Some(Denied::Capped {
                cap: "tpm",
                frees_at_ms: None
            })
        );
    }

    #[test]
    fn account_caps_span_models() {
        let (l, _) = ledger_at(0);
        let mut a = ask(Limits::default(), 1);
        a.account = Limits {
            rpd: Some(2),
            ..Limits::default()
        };
        let mut b = a.clone();
        b.model = "other".into();
        let _x = l.try_reserve(&a).unwrap();
        let _y = l.try_reserve(&b).unwrap();
        assert!(matches!(
            l.try_reserve(&a).err(),
            Some(Denied::Capped {
                cap: "account rpd",
                ..
            })
        ));
    }

    #[test]
    fn cooldowns_block_until_they_expire() {
        let (l, clock) = ledger_at(0);
        let a = ask(Limits::default(), 1);
        l.cool(Scope::key("p", "k"), 5_000, "5xx");
        assert!(matches!(
            l.try_reserve(&a).err(),
            Some(Denied::Cooling {
                until_ms: 5_000,
                ..
            })
        ));
        clock.set(5_000);
        assert!(l.try_reserve(&a).is_ok());
        l.cool(Scope::model("p", "m", "k"), 9_000, "429");
        l.cool(Scope::model("p", "m", "k"), 7_000, "shorter one is ignored");
        assert_eq!(
            l.cooldown(&Scope::model("p", "m", "k")).unwrap().until_ms,
            9_000
        );
    }

    #[test]
    fn snapshot_restore_round_trip() {
        let (l, _) = ledger_at(10_000);
        let a = ask(
            Limits {
                rpd: Some(3),
                ..Limits::default()
            },
            1,
        );
        l.try_reserve(&a).unwrap().settle(1);
        l.try_reserve(&a).unwrap().settle(1);
        l.cool(Scope::model("p", "x", "k"), 99_000, "429");
        let (scopes, cooldowns) = l.snapshot().unwrap();
        assert!(l.snapshot().is_none(), "nothing changed since");
        let (l2, _) = ledger_at(20_000);
        l2.restore(&scopes, &cooldowns);
        let _third = l2.try_reserve(&a).unwrap();
        assert!(l2.try_reserve(&a).is_err(), "restored counts still count");
        assert!(l2.cooldown(&Scope::model("p", "x", "k")).is_some());
    }

    #[test]
    fn upstream_headers_win() {
        let (l, _) = ledger_at(0);
        let a = ask(
            Limits {
                rpd: Some(1000),
                tpm: Some(6000),
                ..Limits::default()
            },
            1,
        );
        let headers = [
            ("x-ratelimit-remaining-requests", "990"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "7.66s"),
            ("x-ratelimit-reset-requests", "2m59.56s"),
            ("content-type", "application/json"),
        ];
        let q = parse_quota_headers(headers.iter().copied());
        assert_eq!(q.len(), 2);
        l.observe(&a, &q);
        let scope = Scope::model("p", "m", "k");
        assert_eq!(l.usage(&scope, Reset::Rolling).day_requests, 10);
        assert_eq!(l.cooldown(&scope).unwrap().until_ms, 7_660);
    }

    #[test]
    fn reset_durations() {
        assert_eq!(
            parse_reset("2m59.56s"),
            Some(Duration::from_secs_f64(179.56))
        );
        assert_eq!(parse_reset("7.66s"), Some(Duration::from_secs_f64(7.66)));
        assert_eq!(parse_reset("120ms"), Some(Duration::from_millis(120)));
        assert_eq!(parse_reset("1h2m3s"), Some(Duration::from_secs(3723)));
        assert_eq!(parse_reset("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_reset("soon"), None);
        assert_eq!(parse_reset("5x"), None);
        assert_eq!(parse_reset("-3"), None);
    }
}
