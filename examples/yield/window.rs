//! The mock providers' own counters: rolling windows as a queue of (time, tokens), calendar
//! days and months in a zone. Deliberately simple, and written without looking at
//! `freeway::ledger`: the point is a second opinion.

use std::collections::VecDeque;

use chrono::{Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use crate::truth::{Caps, Day};

pub const MINUTE_MS: i64 = 60_000;
pub const DAY_MS: i64 = 86_400_000;

/// Requests and tokens in the last `span` milliseconds.
#[derive(Debug)]
struct Rolling {
    span: i64,
    events: VecDeque<(i64, u64)>,
    requests: u64,
    tokens: u64,
}

impl Rolling {
    fn new(span: i64) -> Rolling {
        Rolling {
            span,
            events: VecDeque::new(),
            requests: 0,
            tokens: 0,
        }
    }

    /// Forget what left the window by `now`.
    fn advance(&mut self, now: i64) {
        while let Some(&(t, tokens)) = self.events.front() {
            if t + self.span > now {
                break;
            }
            self.events.pop_front();
            self.requests -= 1;
            self.tokens -= tokens;
        }
    }

    fn add(&mut self, now: i64, tokens: u64) {
        self.events.push_back((now, tokens));
        self.requests += 1;
        self.tokens += tokens;
    }

    /// Milliseconds until one more request fits under `cap`.
    fn request_frees_in(&self, now: i64, cap: u64) -> i64 {
        let over = (self.requests + 1).saturating_sub(cap) as usize;
        match over.checked_sub(1).and_then(|i| self.events.get(i)) {
            Some(&(t, _)) => (t + self.span - now).max(1),
            None => self.span,
        }
    }

    /// Milliseconds until `more` tokens fit under `cap` (the whole span if never).
    fn tokens_free_in(&self, now: i64, cap: u64, more: u64) -> i64 {
        let mut excess = (self.tokens + more).saturating_sub(cap);
        for &(t, tokens) in &self.events {
            excess = excess.saturating_sub(tokens);
            if excess == 0 {
                return (t + self.span - now).max(1);
            }
        }
        self.span
    }
}

/// Requests and tokens since the start of the current calendar day (or month) in a zone.
#[derive(Debug)]
struct Calendar {
    tz: Tz,
    month: bool,
    period: i64,
    requests: u64,
    tokens: u64,
}

impl Calendar {
    fn new(tz: Tz, month: bool) -> Calendar {
        Calendar {
            tz,
            month,
            period: i64::MIN,
            requests: 0,
            tokens: 0,
        }
    }

    fn date(&self, now: i64) -> NaiveDate {
        Utc.timestamp_millis_opt(now)
            .single()
            .expect("valid time")
            .with_timezone(&self.tz)
            .date_naive()
    }

    fn period_of(&self, now: i64) -> i64 {
        let d = self.date(now);
        if self.month {
            i64::from(d.year()) * 12 + i64::from(d.month0())
        } else {
            i64::from(d.num_days_from_ce())
        }
    }

    fn advance(&mut self, now: i64) {
        let p = self.period_of(now);
        if p != self.period {
            self.period = p;
            self.requests = 0;
            self.tokens = 0;
        }
    }

    fn add(&mut self, tokens: u64) {
        self.requests += 1;
        self.tokens += tokens;
    }

    /// Milliseconds until the next reset.
    fn resets_in(&self, now: i64) -> i64 {
        next_midnight(self.tz, now, self.month) - now
    }
}

/// The next local midnight (or first of the month) after `now`, in ms since the epoch.
pub fn next_midnight(tz: Tz, now: i64, month: bool) -> i64 {
    let local = Utc
        .timestamp_millis_opt(now)
        .single()
        .expect("valid time")
        .with_timezone(&tz)
        .date_naive();
    let next = if month {
        let (y, mo) = if local.month() == 12 {
            (local.year() + 1, 1)
        } else {
            (local.year(), local.month() + 1)
        };
        NaiveDate::from_ymd_opt(y, mo, 1).expect("valid date")
    } else {
        local.succ_opt().expect("valid date")
    };
    tz.from_local_datetime(&next.and_hms_opt(0, 0, 0).expect("midnight"))
        .earliest()
        .expect("midnight exists")
        .timestamp_millis()
}

#[derive(Debug)]
enum DayWindow {
    Rolling(Rolling),
    Calendar(Calendar),
}

/// What one request is charged at admission: tokens against the minute caps and against the
/// day and month caps (the prompt, plus `max_tokens` where the provider reserves it).
#[derive(Debug, Clone, Copy)]
pub struct Charge {
    pub minute: u64,
    pub day: u64,
}

/// Which cap said no, and when it frees.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// `rpm`, `rpd`, `tpm`, `tpd`, `tokens/month`.
    pub cap: &'static str,
    pub limit: u64,
    pub used: u64,
    pub frees_in_ms: i64,
}

impl Refusal {
    pub fn daily(&self) -> bool {
        matches!(self.cap, "rpd" | "tpd" | "tokens/month")
    }
}

/// One pool's counters: a rolling minute, a day (rolling or calendar) and a calendar month.
#[derive(Debug)]
pub struct Pool {
    caps: Caps,
    minute: Rolling,
    day: DayWindow,
    month: Calendar,
}

impl Pool {
    pub fn new(caps: Caps, day: Day) -> Pool {
        Pool {
            caps,
            minute: Rolling::new(MINUTE_MS),
            day: match day {
                Day::Rolling => DayWindow::Rolling(Rolling::new(DAY_MS)),
                Day::Midnight(tz) => DayWindow::Calendar(Calendar::new(tz, false)),
            },
            month: Calendar::new(chrono_tz::UTC, true),
        }
    }

    /// Whether one more request charged `charge` fits every cap at `now`.
    pub fn check(&mut self, now: i64, charge: Charge) -> Result<(), Refusal> {
        self.minute.advance(now);
        self.month.advance(now);
        let (day_requests, day_tokens, day_frees_request, day_frees_tokens) = match &mut self.day {
            DayWindow::Rolling(r) => {
                r.advance(now);
                (
                    r.requests,
                    r.tokens,
                    self.caps.rpd.map(|c| r.request_frees_in(now, c)),
                    self.caps.tpd.map(|c| r.tokens_free_in(now, c, charge.day)),
                )
            }
            DayWindow::Calendar(c) => {
                c.advance(now);
                let reset = c.resets_in(now);
                (c.requests, c.tokens, Some(reset), Some(reset))
            }
        };
        let refuse = |cap, limit, used, frees_in_ms: Option<i64>| Refusal {
            cap,
            limit,
            used,
            frees_in_ms: frees_in_ms.unwrap_or(DAY_MS),
        };
        if let Some(c) = self.caps.rpd
            && day_requests + 1 > c
        {
            return Err(refuse("rpd", c, day_requests, day_frees_request));
        }
        if let Some(c) = self.caps.tpd
            && day_tokens + charge.day > c
        {
            return Err(refuse("tpd", c, day_tokens, day_frees_tokens));
        }
        if let Some(c) = self.caps.tokens_per_month
            && self.month.tokens + charge.day > c
        {
            let reset = self.month.resets_in(now);
            return Err(refuse("tokens/month", c, self.month.tokens, Some(reset)));
        }
        if let Some(c) = self.caps.rpm
            && self.minute.requests + 1 > c
        {
            let frees = self.minute.request_frees_in(now, c);
            return Err(refuse("rpm", c, self.minute.requests, Some(frees)));
        }
        if let Some(c) = self.caps.tpm
            && self.minute.tokens + charge.minute > c
        {
            let frees = self.minute.tokens_free_in(now, c, charge.minute);
            return Err(refuse("tpm", c, self.minute.tokens, Some(frees)));
        }
        Ok(())
    }

    /// Count one admitted request that used `tokens` (prompt plus completion).
    pub fn record(&mut self, now: i64, tokens: u64) {
        self.minute.advance(now);
        self.minute.add(now, tokens);
        self.month.advance(now);
        self.month.add(tokens);
        match &mut self.day {
            DayWindow::Rolling(r) => {
                r.advance(now);
                r.add(now, tokens);
            }
            DayWindow::Calendar(c) => {
                c.advance(now);
                c.add(tokens);
            }
        }
    }

    /// Requests and tokens in the day window.
    pub fn day_totals(&self) -> (u64, u64) {
        match &self.day {
            DayWindow::Rolling(r) => (r.requests, r.tokens),
            DayWindow::Calendar(c) => (c.requests, c.tokens),
        }
    }

    /// Remaining requests and tokens in the day and minute windows (for rate-limit headers).
    pub fn remaining(&self) -> Remaining {
        let day_requests = match &self.day {
            DayWindow::Rolling(r) => r.requests,
            DayWindow::Calendar(c) => c.requests,
        };
        Remaining {
            day_requests: self.caps.rpd.map(|c| c.saturating_sub(day_requests)),
            minute_tokens: self.caps.tpm.map(|c| c.saturating_sub(self.minute.tokens)),
        }
    }
}

/// What a pool has left, as upstreams report it in `x-ratelimit-remaining-*`.
#[derive(Debug, Clone, Copy)]
pub struct Remaining {
    pub day_requests: Option<u64>,
    pub minute_tokens: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTHING: Charge = Charge { minute: 0, day: 0 };

    #[test]
    fn rolling_minute_frees_after_sixty_seconds() {
        let caps = Caps {
            rpm: Some(2),
            ..Caps::NONE
        };
        let mut p = Pool::new(caps, Day::Rolling);
        p.check(0, NOTHING).unwrap();
        p.record(0, 0);
        p.check(10_000, NOTHING).unwrap();
        p.record(10_000, 0);
        let r = p.check(30_000, NOTHING).unwrap_err();
        assert_eq!((r.cap, r.frees_in_ms), ("rpm", 30_000));
        assert!(p.check(60_000, NOTHING).is_ok());
    }

    #[test]
    fn a_calendar_day_counts_what_was_recorded_before_any_check() {
        let caps = Caps {
            rpd: Some(1),
            ..Caps::NONE
        };
        let mut p = Pool::new(caps, Day::Midnight(chrono_tz::America::Los_Angeles));
        let noon_utc = 1_796_126_400_000;
        p.record(noon_utc, 0);
        assert_eq!(p.check(noon_utc + 1000, NOTHING).unwrap_err().cap, "rpd");
    }
}
