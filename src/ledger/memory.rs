//! The ledger kept in this process's memory.

// Scopes come from the catalog and config, never from clients: a fast hasher is safe here.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, MutexGuard};

use super::PACE_BURST;
use super::demand::{Curve, Demand};
use super::journal::Journal;
use super::quota::{QuotaWindow, UpstreamQuota};
use super::{
    Ask, Clock, Cooldown, Denied, Ledger, Mark, Pace, Scope, Span, Ticket, Usage, Window, day_span,
    month_span,
};
use crate::catalog::{Limits, Reset};

/// The windows of one scope.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Counters {
    minute: Window,
    day: Window,
    /// The day rule used last, so a persisted calendar window is read back the same way.
    #[serde(default)]
    calendar_tz: Option<String>,
    /// The last hour: the pace of use (pacing, headroom), no cap of its own.
    #[serde(default)]
    hour: Window,
    #[serde(default)]
    month: Window,
    /// Everything ever counted: a one-time credit.
    #[serde(default)]
    total: Window,
}

impl Counters {
    fn prune(&mut self, day: Span, month: Span, now: i64) {
        self.minute.prune(Span::MINUTE, now);
        self.day.prune(day, now);
        self.hour.prune(Span::HOUR, now);
        self.month.prune(month, now);
    }

    fn add_at(&mut self, m: &Mark, req: u64, tok: u64) {
        self.minute.add_at(m.minute, req, tok);
        self.day.add_at(m.day, req, tok);
        self.hour.add_at(m.hour, req, tok);
        self.month.add_at(m.month, req, tok);
        self.total.add_at(0, req, tok);
    }

    fn adjust(&mut self, m: &Mark, dreq: i64, dtok: i64) {
        self.minute.adjust(m.minute, dreq, dtok);
        self.day.adjust(m.day, dreq, dtok);
        self.hour.adjust(m.hour, dreq, dtok);
        self.month.adjust(m.month, dreq, dtok);
        self.total.adjust(0, dreq, dtok);
    }
}

/// One cap to check: its limit, what is used, what this request adds, the window and its span,
/// whether it counts tokens, and its name.
struct Check<'a> {
    cap: Option<u64>,
    used: u64,
    want: u64,
    window: &'a Window,
    span: Span,
    tokens: bool,
    name: &'static str,
}

/// The caps of `limits` over `c`, in the order they are checked.
fn checks<'a>(
    c: &'a Counters,
    limits: &Limits,
    tokens: u64,
    day: Span,
    month: Span,
) -> [Check<'a>; 7] {
    let (mr, mt) = c.minute.totals();
    let (dr, dt) = c.day.totals();
    let (or, ot) = c.month.totals();
    let (_, ct) = c.total.totals();
    let check = |cap, used, want, window, span, tokens, name| Check {
        cap,
        used,
        want,
        window,
        span,
        tokens,
        name,
    };
    [
        check(limits.rpm, mr, 1, &c.minute, Span::MINUTE, false, "rpm"),
        check(limits.rpd, dr, 1, &c.day, day, false, "rpd"),
        check(limits.tpm, mt, tokens, &c.minute, Span::MINUTE, true, "tpm"),
        check(limits.tpd, dt, tokens, &c.day, day, true, "tpd"),
        check(
            limits.rpmo,
            or,
            1,
            &c.month,
            month,
            false,
            "requests per month",
        ),
        check(
            limits.tpmo,
            ot,
            tokens,
            &c.month,
            month,
            true,
            "tokens per month",
        ),
        check(
            limits.credit,
            ct,
            tokens,
            &c.total,
            Span::Forever,
            true,
            "credit",
        ),
    ]
}

/// Share of what an even pace saves for the rest of the day that [`Pace::Reserve`] keeps.
const PACE_RESERVE: f64 = 0.5;

/// One daily cap as pacing sees it: the cap, what this ask adds, and whether it counts tokens.
#[derive(Clone, Copy)]
struct Use {
    cap: u64,
    want: u64,
    tokens: bool,
}

/// Pacing: the use of a daily cap (plus what is asked) against the cap spread over the day,
/// plus a burst of a tenth. Evenly ([`Pace::Even`]) or along the demand curve of the provider's
/// day ([`Pace::Demand`], `demand`). For a calendar day, what the day so far allows; for a
/// rolling day paced evenly, the last hour's use against an hour's share, or the day's use
/// within the burst; a rolling day paced by demand is paced as a day of UTC hours that starts
/// at the curve's quietest hour ([`Demand::rolling_day`]). [`Pace::Reserve`] allows more:
/// everything but half of what the pace keeps for the rest of the day (half the cap, on a
/// rolling day paced evenly; a rolling day paced by demand has no looser pass). Denied with
/// when the pace allows it again.
fn pace(
    c: &Counters,
    u: Use,
    mode: Pace,
    at: Moment<'_>,
    name: &'static str,
) -> Result<(), Denied> {
    let Moment { day, now, demand } = at;
    let pick = |(r, t): (u64, u64)| if u.tokens { t } else { r };
    // The day the pace runs over: its start, length and curve, and the use counted in it.
    let (start, len, curve, used) = match day {
        Span::Calendar(tz) => {
            let start = day.bucket_start(now);
            let len = day.expiry(start) - start;
            let curve = if mode.by_demand() {
                demand.curve(tz, start)
            } else {
                Curve::even()
            };
            (start, len, curve, pick(c.day.totals()))
        }
        _ if mode.by_demand() => return pace_rolling_demand(c, u, at, name),
        _ => return pace_rolling(c, u, mode, day, now, name),
    };
    let cap = u.cap as f64;
    let burst = (cap * PACE_BURST).ceil();
    let len = len.max(1) as f64;
    let used = (used + u.want) as f64;
    let elapsed = (now - start) as f64 / len;
    let share = curve.allowed(elapsed);
    // The share of the day's curve that must have passed for `used` to be within the pace.
    let (allowed, needed) = if mode.is_reserve() {
        let kept = PACE_RESERVE * (1.0 - share);
        let needed = ((used - burst) / cap - (1.0 - PACE_RESERVE)) / PACE_RESERVE;
        (cap * (1.0 - kept) + burst, needed)
    } else {
        (cap * share + burst, (used - burst) / cap)
    };
    if used <= allowed {
        return Ok(());
    }
    // The even curve's inverse is the share itself (exact, where the curve's is within a ms).
    let when = if mode.by_demand() {
        curve.when(needed)
    } else {
        Some(needed)
    };
    let at = match when {
        Some(e) => start + (e * len).ceil() as i64,
        None => start + len as i64,
    };
    Err(Denied::Paced {
        cap: name,
        frees_at_ms: at.max(now + 1),
    })
}

/// A rolling day paced by demand. A request counted now holds its place in the window for a
/// day, through every hour ahead; so it is allowed while, at each of the next 24 hours, what
/// will still count then (today's use that has not left the window by then, plus this request)
/// and what the demand curve expects until then (the UTC curve, `Demand::between`) fit within
/// the cap plus a burst. On a day that follows the curve this uses each hour's share as the
/// same hour of the day before frees it; on a fresh window it keeps room for the busy hours
/// ahead instead of spending the cap at night. The burst is a tenth of the cap while the curve
/// is even, and shrinks to nothing as it is learned ([`Demand::trust`]): a burst taken from a
/// window is not back for a day, so on a fresh window it is taken from the last hours the
/// window covers (bench/yield.sh: OpenRouter's 50 spent by 21:00 on the `flat` profile,
/// whose last busy hour is 23:00), while a learned curve already allows each hour its share.
/// The reserve pass is this same pace: the window's allowance is already spread along the next
/// 24 hours' demand, so a looser pass could only take what a later busy hour of the window
/// needs (expecting half of it spent OpenRouter's 50 by 21:00 on the `night` profile).
fn pace_rolling_demand(
    c: &Counters,
    u: Use,
    at: Moment<'_>,
    name: &'static str,
) -> Result<(), Denied> {
    let Moment { day, now, demand } = at;
    let cap = u.cap as f64;
    let burst = (cap * PACE_BURST * (1.0 - demand.trust(chrono_tz::UTC, now))).round();
    // Every hour ahead while this request still counts: it leaves the window a day on.
    let hours: Vec<i64> = (1..24).map(|k| now + k * 3_600_000).collect();
    let counting = c.day.counting_at(day, &hours);
    let mut excess = 0.0f64;
    for (t, (r, tk)) in hours.iter().zip(counting) {
        let still = if u.tokens { tk } else { r };
        let ahead = cap * demand.between(chrono_tz::UTC, now, *t);
        excess = excess.max((still + u.want) as f64 + ahead - cap - burst);
    }
    if excess <= 0.0 {
        return Ok(());
    }
    // When that much of the window has left it (the hours ahead move on too: an estimate).
    let over = excess.ceil() as u64;
    let frees = if u.tokens {
        c.day.frees_at(day, 0, over)
    } else {
        c.day.frees_at(day, over, 0)
    };
    Err(Denied::Paced {
        cap: name,
        frees_at_ms: frees.unwrap_or(now + 60_000).max(now + 1),
    })
}

/// Where and when a pace is checked: the day's span, now, and the demand curves.
#[derive(Clone, Copy)]
struct Moment<'a> {
    day: Span,
    now: i64,
    demand: &'a Demand,
}

/// A rolling day paced evenly: the last hour's use within an hour's share, or the whole
/// window's use within the burst (granted once a day, not once an hour).
fn pace_rolling(
    c: &Counters,
    u: Use,
    mode: Pace,
    day: Span,
    now: i64,
    name: &'static str,
) -> Result<(), Denied> {
    let cap = u.cap as f64;
    let burst = (cap * PACE_BURST).ceil();
    let pick = |w: &Window| {
        let (r, t) = w.totals();
        if u.tokens { t } else { r }
    };
    let hour = pick(&c.hour) + u.want;
    let day_used = (pick(&c.day) + u.want) as f64;
    let share = (cap / 24.0).max(1.0);
    let free = if mode.is_reserve() {
        burst.max(cap * (1.0 - PACE_RESERVE))
    } else {
        burst
    };
    if hour as f64 <= share || day_used <= free {
        return Ok(());
    }
    let excess = (hour as f64 - share).ceil() as u64;
    let frees = if u.tokens {
        c.hour.frees_at(Span::HOUR, 0, excess)
    } else {
        c.hour.frees_at(Span::HOUR, excess, 0)
    };
    // An ask larger than an hour's share never fits the hour: it waits for the day's
    // use to fall within what is free of pacing.
    let frees = frees.or_else(|| {
        let over = (day_used - free).max(1.0).ceil() as u64;
        if u.tokens {
            c.day.frees_at(day, 0, over)
        } else {
            c.day.frees_at(day, over, 0)
        }
    });
    Err(Denied::Paced {
        cap: name,
        frees_at_ms: frees.unwrap_or(now + 60_000),
    })
}

#[derive(Default)]
struct Inner {
    counters: HashMap<Scope, Counters>,
    cooldowns: HashMap<Scope, Cooldown>,
    /// Scopes changed since the last snapshot.
    dirty: HashSet<Scope>,
    cooldowns_dirty: bool,
    /// Every reservation, written as it is made (when the ledger persists).
    journal: Option<Journal>,
    /// The demand curves `routing.pacing = "demand"` paces by, learned from the request log
    /// by a background task ([`MemoryLedger::set_demand`]); even until then.
    demand: Arc<Demand>,
}

/// What changed since the last snapshot, to save.
pub struct Snapshot {
    /// (encoded scope, counters as JSON).
    pub scopes: Vec<(String, String)>,
    /// (encoded scope, until, reason): every active cooldown.
    pub cooldowns: Vec<(String, i64, String)>,
    /// The last journal entry these counters hold.
    pub seq: u64,
}

/// The ledger in this process's memory: one mutex around every counter and cooldown, with
/// [`MemoryLedger::snapshot`] and [`MemoryLedger::restore`] for a background task to persist it.
pub struct MemoryLedger {
    inner: Mutex<Inner>,
    clock: Arc<dyn Clock>,
}

impl MemoryLedger {
    pub fn new(clock: Arc<dyn Clock>) -> MemoryLedger {
        MemoryLedger {
            inner: Mutex::new(Inner::default()),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn adjust(&self, ticket: &Ticket, dreq: i64, dtok: i64) {
        let mut inner = self.lock();
        for mark in &ticket.marks {
            if let Some(c) = inner.counters.get_mut(&mark.scope) {
                c.adjust(mark, dreq, dtok);
            }
            inner.dirty.insert(mark.scope.clone());
        }
    }

    fn check(inner: &mut Inner, ask: &Ask, now: i64) -> Result<Vec<Scope>, Denied> {
        // Counters belong to the pool (the key, or a provider's shared pool); a key's own
        // trouble (rejected, erroring) cools the key itself.
        let model_scope = ask.model_scope();
        let pool_scope = Scope::key(&ask.provider, &ask.pool);
        let key_scope = Scope::key(&ask.provider, &ask.key);
        // This model on this key alone (a 403 for one key of a shared pool).
        let key_model_scope = Scope::model(&ask.provider, &ask.model, &ask.key);
        for scope in [&model_scope, &pool_scope, &key_scope, &key_model_scope] {
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
        let month = ask.month_span();
        let mut scopes = vec![(model_scope, ask.limits, false)];
        if !ask.account.is_empty() {
            scopes.push((pool_scope, ask.account, true));
        }
        let demand = Arc::clone(&inner.demand);
        for (scope, limits, account) in &scopes {
            let c = inner.counters.entry(scope.clone()).or_default();
            c.prune(day, month, now);
            for k in checks(c, limits, ask.tokens, day, month) {
                let Some(cap) = k.cap else { continue };
                if k.used + k.want <= cap {
                    continue;
                }
                let cap_name = cap_label(*account, k.name);
                if k.want > cap {
                    return Err(Denied::Capped {
                        cap: cap_name,
                        frees_at_ms: None,
                    });
                }
                let excess = k.used + k.want - cap;
                let frees_at_ms = match k.span {
                    Span::Forever => None,
                    span if k.tokens => k.window.frees_at(span, 0, excess),
                    span => k.window.frees_at(span, excess, 0),
                };
                return Err(Denied::Capped {
                    cap: cap_name,
                    frees_at_ms,
                });
            }
            if ask.pace != Pace::Off {
                let mode = ask.pace;
                let moment = Moment {
                    day,
                    now,
                    demand: &demand,
                };
                if let Some(cap) = limits.rpd {
                    let use_ = Use {
                        cap,
                        want: 1,
                        tokens: false,
                    };
                    pace(c, use_, mode, moment, cap_label(*account, "rpd"))?;
                }
                if let Some(cap) = limits.tpd {
                    let use_ = Use {
                        cap,
                        want: ask.tokens,
                        tokens: true,
                    };
                    pace(c, use_, mode, moment, cap_label(*account, "tpd"))?;
                }
            }
        }
        Ok(scopes.into_iter().map(|(s, _, _)| s).collect())
    }

    /// Scopes changed since the last call and every cooldown, to save; `None` when nothing
    /// changed. The journal moves to a new file: the old one is deleted once this is saved
    /// ([`MemoryLedger::saved`]).
    pub fn snapshot(&self) -> Option<Snapshot> {
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
        let seq = match inner.journal.as_mut() {
            Some(j) => {
                j.rotate();
                j.seq
            }
            None => 0,
        };
        Some(Snapshot {
            scopes,
            cooldowns,
            seq,
        })
    }

    /// Pace `demand` by these curves from now on (learned from the request log).
    pub fn set_demand(&self, demand: Demand) {
        self.lock().demand = Arc::new(demand);
    }

    /// The demand curves in force.
    pub fn demand(&self) -> Arc<Demand> {
        Arc::clone(&self.lock().demand)
    }

    /// A snapshot is in the database: the journal up to it can go.
    pub fn saved(&self, seq: u64) {
        if let Some(j) = self.lock().journal.as_ref() {
            j.saved(seq);
        }
    }

    /// A snapshot could not be saved: everything is to be saved again next time.
    pub fn unsaved(&self) {
        let mut inner = self.lock();
        let all: Vec<Scope> = inner.counters.keys().cloned().collect();
        inner.dirty.extend(all);
        inner.cooldowns_dirty = true;
    }

    /// Keep a journal in `dir`, after replaying what it holds beyond `saved` (the sequence the
    /// restored counters hold); how many reservations were replayed.
    pub fn open_journal(&self, dir: &std::path::Path, saved: u64) -> std::io::Result<usize> {
        let (journal, entries) = Journal::open(dir, saved)?;
        let mut inner = self.lock();
        let replayed = entries.len();
        for e in entries {
            for m in e.marks() {
                let c = inner.counters.entry(m.scope.clone()).or_default();
                c.add_at(&m, 1, e.tokens);
                inner.dirty.insert(m.scope);
            }
        }
        inner.journal = Some(journal);
        Ok(replayed)
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

impl Ledger for MemoryLedger {
    fn pace_share(&self, reset: Reset, pace: Pace) -> Option<f64> {
        if pace == Pace::Off {
            return None;
        }
        let now = self.now_ms();
        let demand = self.demand();
        let (start, len, curve) = match (day_span(reset), pace.by_demand()) {
            (day @ Span::Calendar(tz), by_demand) => {
                let start = day.bucket_start(now);
                let curve = if by_demand {
                    demand.curve(tz, start)
                } else {
                    Curve::even()
                };
                (start, day.expiry(start) - start, curve)
            }
            // A rolling day is paced by the hours ahead, not as a share of a day.
            _ => return None,
        };
        let share = curve.allowed((now - start) as f64 / len.max(1) as f64);
        Some(if pace.is_reserve() {
            1.0 - PACE_RESERVE * (1.0 - share)
        } else {
            share
        })
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn reserve(&self, ask: &Ask) -> Result<Ticket, Denied> {
        let now = self.now_ms();
        let mut inner = self.lock();
        let scopes = Self::check(&mut inner, ask, now)?;
        let day = ask.day_span();
        let month = ask.month_span();
        let mut marks = Vec::with_capacity(scopes.len());
        for scope in scopes {
            let c = inner.counters.entry(scope.clone()).or_default();
            let minute = c.minute.add(Span::MINUTE, now, 1, ask.tokens);
            let day_start = c.day.add(day, now, 1, ask.tokens);
            let hour = c.hour.add(Span::HOUR, now, 1, ask.tokens);
            let month_start = c.month.add(month, now, 1, ask.tokens);
            c.total.add(Span::Forever, now, 1, ask.tokens);
            c.calendar_tz = calendar_name(day);
            inner.dirty.insert(scope.clone());
            marks.push(Mark {
                scope,
                minute,
                day: day_start,
                hour,
                month: month_start,
            });
        }
        if let Some(j) = inner.journal.as_mut() {
            j.append(now, ask.tokens, &marks);
        }
        Ok(Ticket {
            marks,
            tokens: ask.tokens,
        })
    }

    fn check(&self, ask: &Ask) -> Result<(), Denied> {
        let now = self.now_ms();
        let mut inner = self.lock();
        Self::check(&mut inner, ask, now).map(|_| ())
    }

    fn settle(&self, ticket: &Ticket, tokens: Option<u64>) {
        if let Some(used) = tokens {
            self.adjust(ticket, 0, used as i64 - ticket.tokens as i64);
        }
    }

    fn release(&self, ticket: &Ticket, sent: bool) {
        let requests = if sent { 0 } else { -1 };
        self.adjust(ticket, requests, -(ticket.tokens as i64));
    }

    fn clear(&self, scope: &Scope) {
        let mut inner = self.lock();
        if inner.cooldowns.remove(scope).is_some() {
            inner.cooldowns_dirty = true;
        }
    }

    fn cool(&self, scope: Scope, until_ms: i64, reason: &str) {
        let mut inner = self.lock();
        let entry = inner.cooldowns.entry(scope).or_insert(Cooldown {
            until_ms: 0,
            reason: String::new(),
        });
        if until_ms > entry.until_ms {
            entry.until_ms = until_ms;
            entry.reason = reason.to_string();
        }
        inner.cooldowns_dirty = true;
    }

    fn cooldown(&self, scope: &Scope) -> Option<Cooldown> {
        let now = self.now_ms();
        self.lock()
            .cooldowns
            .get(scope)
            .filter(|c| c.until_ms > now)
            .cloned()
    }

    fn cooldowns(&self) -> Vec<(Scope, Cooldown)> {
        let now = self.now_ms();
        self.lock()
            .cooldowns
            .iter()
            .filter(|(_, c)| c.until_ms > now)
            .map(|(s, c)| (s.clone(), c.clone()))
            .collect()
    }

    fn usage(&self, scope: &Scope, reset: Reset) -> Usage {
        let now = self.now_ms();
        let (day, month) = (day_span(reset), month_span(reset));
        let mut inner = self.lock();
        let Some(c) = inner.counters.get_mut(scope) else {
            return Usage::default();
        };
        c.prune(day, month, now);
        let (mr, mt) = c.minute.totals();
        let (dr, dt) = c.day.totals();
        let (or, ot) = c.month.totals();
        let (_, ct) = c.total.totals();
        let (hr, ht) = c.hour.totals();
        Usage {
            minute_requests: mr,
            minute_tokens: mt,
            day_requests: dr,
            day_tokens: dt,
            month_requests: or,
            month_tokens: ot,
            credit_tokens: ct,
            hour_requests: hr,
            hour_tokens: ht,
        }
    }

    fn resets_at(&self, scope: &Scope, span: Span) -> Option<i64> {
        let now = self.now_ms();
        let mut inner = self.lock();
        let c = inner.counters.get_mut(scope)?;
        let w = match span {
            Span::Calendar(_)
            | Span::Rolling {
                span_ms: 86_400_000,
                ..
            } => &mut c.day,
            Span::Month(_) => &mut c.month,
            Span::Forever => return None,
            _ => &mut c.minute,
        };
        w.prune(span, now);
        w.frees_at(span, 1, 0)
    }

    fn mirror(&self, scope: &Scope, reset: Reset, requests: u64, tokens: u64) {
        let now = self.now_ms();
        let day = day_span(reset);
        let mut inner = self.lock();
        let c = inner.counters.entry(scope.clone()).or_default();
        c.day.prune(day, now);
        let (r, t) = c.day.totals();
        let (more_r, more_t) = (requests.saturating_sub(r), tokens.saturating_sub(t));
        if more_r > 0 || more_t > 0 {
            c.day.add(day, now, more_r, more_t);
            c.calendar_tz = calendar_name(day);
            inner.dirty.insert(scope.clone());
        }
    }

    fn observe(&self, ask: &Ask, quotas: &[UpstreamQuota]) {
        let now = self.now_ms();
        let scope = ask.model_scope();
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
                    &format!("upstream reports no {what} left"),
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
}

fn calendar_name(span: Span) -> Option<String> {
    match span {
        Span::Calendar(tz) => Some(tz.name().to_string()),
        _ => None,
    }
}

/// A cap's name, as said of a provider account's cap when `account`.
pub fn cap_label(account: bool, name: &'static str) -> &'static str {
    if !account {
        return name;
    }
    match name {
        "rpm" => "account rpm",
        "rpd" => "account rpd",
        "tpm" => "account tpm",
        "tpd" => "account tpd",
        "requests per month" => "account requests per month",
        "tokens per month" => "account tokens per month",
        _ => "account credit",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Limits;
    use crate::ledger::quota::parse_quota_headers;
    use crate::ledger::{ManualClock, Reservation};
    use std::time::Duration;

    fn ask(limits: Limits, tokens: u64) -> Ask {
        Ask {
            provider: "p".into(),
            model: "m".into(),
            key: "k".into(),
            pool: "k".into(),
            limits,
            account: Limits::default(),
            reset: Reset::Rolling,
            tokens,
            pace: Pace::Off,
        }
    }

    fn memory_at(ms: i64) -> (Arc<MemoryLedger>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(ms));
        (Arc::new(MemoryLedger::new(clock.clone())), clock)
    }

    fn ledger_at(ms: i64) -> (Arc<dyn Ledger>, Arc<ManualClock>) {
        let (l, clock) = memory_at(ms);
        (l, clock)
    }

    /// What a router does: reserve through the trait, settle or drop the claim.
    fn take(l: &Arc<dyn Ledger>, a: &Ask) -> Result<Reservation, Denied> {
        Reservation::take(l, a)
    }

    #[test]
    fn a_paced_ask_larger_than_an_hours_share_waits_for_the_day() {
        let t0 = 1_000_000;
        let (l, _clock) = ledger_at(t0);
        let limits = Limits {
            tpd: Some(2400),
            ..Limits::default()
        };
        for _ in 0..4 {
            take(&l, &ask(limits, 300)).unwrap().settle(None);
        }
        let mut a = ask(limits, 200);
        a.pace = Pace::Even;
        // 1400 of 2400 today is past the burst (240), and 200 is more than an hour's share
        // (100): the hour alone never makes room. The day's 1200 leave the window a day on.
        match take(&l, &a).err() {
            Some(Denied::Paced { frees_at_ms, .. }) => {
                assert!(frees_at_ms > t0 + 86_400_000 - 60_000, "{frees_at_ms}")
            }
            other => panic!("{other:?}"),
        }
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
        let r1 = take(&l, &a).unwrap();
        let _r2 = take(&l, &a).unwrap();
        let denied = take(&l, &a).err().unwrap();
        assert!(
            matches!(denied, Denied::Capped { cap: "rpm", frees_at_ms: Some(t) } if t == 1_060_009)
        );
        r1.settle(Some(5));
        assert!(take(&l, &a).is_err(), "a settled request still counts");
        clock.advance(Duration::from_secs(61));
        assert!(take(&l, &a).is_ok(), "the minute rolled over");
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
        let r = take(&l, &a).unwrap();
        assert!(take(&l, &a).is_err(), "60 + 60 > 100");
        drop(r);
        let r = take(&l, &a).unwrap();
        r.settle(Some(20));
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
            take(&l, &too_big).err(),
            Some(Denied::Capped {
                cap: "tpm",
                frees_at_ms: None
            })
        );
    }

    /// Two weeks of requests logged per UTC hour: busy 08:00–18:00 (10 an hour), nothing else.
    fn office_log(midnight: i64) -> Demand {
        let hours: Vec<(i64, u64)> = (1..=14)
            .flat_map(|d| (8..18).map(move |h| (midnight - d * 86_400_000 + h * 3_600_000, 10)))
            .collect();
        Demand::learn(&hours, &[chrono_tz::UTC], midnight)
    }

    #[test]
    fn pacing_by_demand_follows_the_curve_and_survives_a_restart_at_noon() {
        let midnight = 1_790_035_200_000;
        let hour = 3_600_000;
        let (l, clock) = memory_at(midnight + 7 * hour);
        l.set_demand(office_log(midnight));
        let mut a = ask(
            Limits {
                rpd: Some(100),
                ..Limits::default()
            },
            1,
        );
        a.reset = Reset::Midnight(chrono_tz::UTC);
        a.pace = Pace::Demand;
        let dl: Arc<dyn Ledger> = l.clone();
        let fill = |a: &Ask| {
            let mut n = 0;
            loop {
                match dl.reserve(a) {
                    Ok(_) => n += 1,
                    Err(Denied::Paced { frees_at_ms, .. }) => return (n, frees_at_ms),
                    Err(other) => panic!("{other:?}"),
                }
            }
        };
        // 07:00, before the logged day starts: only the burst; the next is due at 08:00 plus
        // the time a tenth of the busy hour's share takes.
        assert_eq!(fill(&a), (10, midnight + 8 * hour + hour / 10));
        // 09:30: 15 % of the day's demand is behind (1.5 of 10 busy hours), plus the burst.
        clock.set(midnight + 9 * hour + hour / 2);
        assert_eq!(fill(&a).0, 15);
        // Even would have allowed 39.6 by now: the demand pace did not hold the morning back
        // for the night.
        let share = dl.pace_share(a.reset, Pace::Demand).unwrap_or(0.0);
        assert!((share - 0.15).abs() < 1e-9, "{share}");
        // Noon: 40 % of the demand; a restart restores the counters and learns the same curve
        // from the same log, and allows exactly what the running ledger would have.
        clock.set(midnight + 12 * hour);
        let saved = l.snapshot().expect("counters changed").scopes;
        let (restarted, _) = memory_at(midnight + 12 * hour);
        restarted.restore(&saved, &[]);
        restarted.set_demand(office_log(midnight));
        let again: Arc<dyn Ledger> = restarted.clone();
        let mut n = 0;
        while again.reserve(&a).is_ok() {
            n += 1;
        }
        assert_eq!(
            n,
            50 - 25,
            "40 of the cap plus 10 of burst, 25 used before the restart"
        );
        assert_eq!(fill(&a).0, 25, "the running ledger allows the same");
        // The reserve pass keeps half of what the demand pace keeps for later: 100 - 30 + 10.
        a.pace = Pace::DemandReserve;
        assert_eq!(fill(&a).0, 80 - 50);
        // A fresh install (nothing learned) paces evenly.
        let (fresh, _) = memory_at(midnight + 12 * hour);
        let share = (fresh as Arc<dyn Ledger>).pace_share(a.reset, Pace::Demand);
        assert!((share.unwrap_or(0.0) - 0.5).abs() < 1e-9, "{share:?}");
    }

    /// A rolling day (OpenRouter's 50 a day) paced by demand, from a fresh window at the start
    /// of the busy day, every hour saturated (each hour takes all that the demand pass and
    /// then the reserve pass allow): the reserve pass takes nothing the demand pace keeps for
    /// later, and the last busy hour still gets its share.
    #[test]
    fn a_rolling_day_paced_by_demand_keeps_the_last_busy_hours_share() {
        let midnight = 1_790_035_200_000;
        let hour = 3_600_000;
        let (l, clock) = memory_at(midnight + 8 * hour);
        l.set_demand(office_log(midnight));
        let dl: Arc<dyn Ledger> = l.clone();
        let mut a = ask(
            Limits {
                rpd: Some(50),
                ..Limits::default()
            },
            1,
        );
        let fill = |a: &Ask| {
            let mut n = 0;
            while dl.reserve(a).is_ok() {
                n += 1;
            }
            n
        };
        // Every quarter of an hour from 08:00 to 18:00: what each hour got.
        let mut served = [0u64; 24];
        for q in 8 * 4..18 * 4 {
            clock.set(midnight + q * hour / 4);
            a.pace = Pace::Demand;
            let paced = fill(&a);
            a.pace = Pace::DemandReserve;
            let reserve = fill(&a);
            assert_eq!(
                reserve, 0,
                "quarter {q}: the reserve pass took {reserve} more"
            );
            served[(q / 4) as usize] += paced;
        }
        // The curve is learned (14 days): no burst, so each busy hour gets about its share (5
        // of 50), paced within the hour (asked a quarter-hour apart, a little of each hour's
        // share lags into its next quarter), the last (17:00) too.
        assert!(
            served[8..18].iter().all(|&n| (3..=6).contains(&n)),
            "{served:?}"
        );
        assert!(served.iter().sum::<u64>() <= 50, "{served:?}");
        // The quiet evening spends nothing of what tomorrow's busy hours need: they get their
        // shares as today's leave the window.
        clock.set(midnight + 20 * hour);
        a.pace = Pace::Demand;
        assert_eq!(fill(&a), 0);
        clock.set(midnight + 32 * hour + hour / 2);
        assert!(fill(&a) >= 2, "tomorrow 08:30");
        // A fresh install (nothing learned: the even curve) keeps the burst of a tenth: 5, and
        // the hour's share (50 / 24) that leaves the window a day on.
        let (fresh, _) = memory_at(midnight + 8 * hour);
        let fresh: Arc<dyn Ledger> = fresh;
        let mut n = 0;
        while fresh.reserve(&a).is_ok() {
            n += 1;
        }
        assert_eq!(n, 7);
    }

    #[test]
    fn pacing_spreads_a_calendar_day_and_month_and_credit_windows_hold() {
        // 06:00 UTC: a quarter of the day gone.
        let midnight = 1_790_035_200_000;
        let (l, clock) = ledger_at(midnight + 6 * 3_600_000);
        let mut a = ask(
            Limits {
                rpd: Some(100),
                ..Limits::default()
            },
            1,
        );
        a.reset = Reset::Midnight(chrono_tz::UTC);
        // Takes until pacing says no; how many were held, and when the pace frees the next.
        let mut held = Vec::new();
        let mut fill = |a: &Ask| {
            while let Ok(r) = take(&l, a) {
                held.push(r);
            }
            match take(&l, a).err() {
                Some(Denied::Paced { frees_at_ms, .. }) => (held.len(), frees_at_ms),
                other => panic!("{other:?}"),
            }
        };
        let at_26 = midnight + (0.26 * 86_400_000.0_f64).ceil() as i64;
        a.pace = Pace::Even;
        // A quarter of the cap plus a tenth; the 36th fits once 26 % of the day has passed.
        assert_eq!(fill(&a), (35, at_26));
        // Held back to half of what an even pace keeps for later: at a quarter of the day,
        // 100 - 50 * 0.75 + 10 = 72.5; the 73rd fits once (73 - 10) / 100 = 1 - 0.5 * (1 - e),
        // e = 0.26.
        a.pace = Pace::Reserve;
        assert_eq!(fill(&a), (72, at_26));
        a.pace = Pace::Off;
        assert!(
            take(&l, &a).is_ok(),
            "an unpaced ask is only held to the cap"
        );
        clock.set(midnight + 20 * 3_600_000);
        a.pace = Pace::Even;
        assert!(take(&l, &a).is_ok(), "half a day on, the pace allows more");

        // A month cap counts across days and frees at the next month; a credit never frees.
        let (l, clock) = ledger_at(midnight);
        let month = ask(
            Limits {
                rpmo: Some(2),
                ..Limits::default()
            },
            1,
        );
        let _x = take(&l, &month).unwrap();
        clock.advance(Duration::from_secs(5 * 86_400));
        let _y = take(&l, &month).unwrap();
        match take(&l, &month).err() {
            Some(Denied::Capped {
                cap: "requests per month",
                frees_at_ms: Some(t),
            }) => assert!(t > clock.now_ms() && t - midnight <= 31 * 86_400_000),
            other => panic!("{other:?}"),
        }
        let mut credit = ask(
            Limits {
                credit: Some(100),
                ..Limits::default()
            },
            60,
        );
        credit.model = "c".into();
        take(&l, &credit).unwrap().settle(Some(60));
        clock.advance(Duration::from_secs(400 * 86_400));
        assert!(matches!(
            take(&l, &credit).err(),
            Some(Denied::Capped {
                cap: "credit",
                frees_at_ms: None
            })
        ));
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
        let _x = take(&l, &a).unwrap();
        let _y = take(&l, &b).unwrap();
        assert!(matches!(
            take(&l, &a).err(),
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
            take(&l, &a).err(),
            Some(Denied::Cooling {
                until_ms: 5_000,
                ..
            })
        ));
        clock.set(5_000);
        assert!(take(&l, &a).is_ok());
        l.cool(Scope::model("p", "m", "k"), 9_000, "429");
        l.cool(Scope::model("p", "m", "k"), 7_000, "shorter one is ignored");
        assert_eq!(
            l.cooldown(&Scope::model("p", "m", "k")).unwrap().until_ms,
            9_000
        );
    }

    #[test]
    fn snapshot_restore_round_trip() {
        let (mem, _) = memory_at(10_000);
        let l: Arc<dyn Ledger> = mem.clone();
        let a = ask(
            Limits {
                rpd: Some(3),
                ..Limits::default()
            },
            1,
        );
        take(&l, &a).unwrap().settle(Some(1));
        take(&l, &a).unwrap().settle(Some(1));
        l.cool(Scope::model("p", "x", "k"), 99_000, "429");
        let Snapshot {
            scopes, cooldowns, ..
        } = mem.snapshot().unwrap();
        assert!(mem.snapshot().is_none(), "nothing changed since");
        let (mem2, _) = memory_at(20_000);
        mem2.restore(&scopes, &cooldowns);
        let l2: Arc<dyn Ledger> = mem2;
        let _third = take(&l2, &a).unwrap();
        assert!(take(&l2, &a).is_err(), "restored counts still count");
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

    /// Reservations made after the last save are not lost when the process dies: the journal
    /// replays them over the saved counters, and what the save already holds is not counted
    /// twice.
    #[test]
    fn the_journal_replays_what_the_last_save_missed() {
        let dir = tempfile::tempdir().unwrap();
        let a = ask(
            Limits {
                rpd: Some(5),
                ..Limits::default()
            },
            10,
        );
        let (mem, _) = memory_at(1_000_000);
        assert_eq!(mem.open_journal(dir.path(), 0).unwrap(), 0);
        let l: Arc<dyn Ledger> = mem.clone();
        take(&l, &a).unwrap().settle(Some(10));
        take(&l, &a).unwrap().settle(Some(10));
        let saved = mem.snapshot().unwrap();
        mem.saved(saved.seq);
        take(&l, &a).unwrap().settle(Some(10));
        take(&l, &a).unwrap().settle(Some(10));
        // The process dies here: two reservations since the save.
        drop(l);
        drop(mem);
        let (mem2, _) = memory_at(1_000_500);
        mem2.restore(&saved.scopes, &saved.cooldowns);
        assert_eq!(mem2.open_journal(dir.path(), saved.seq).unwrap(), 2);
        let l2: Arc<dyn Ledger> = mem2.clone();
        let scope = Scope::model("p", "m", "k");
        assert_eq!(l2.usage(&scope, Reset::Rolling).day_requests, 4);
        let _fifth = take(&l2, &a).unwrap();
        assert!(take(&l2, &a).is_err(), "the cap holds across the crash");
    }
}
