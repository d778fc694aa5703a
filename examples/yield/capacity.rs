//! The theoretical capacity of the simulated keys: how many requests their caps allow in the
//! simulated 24 hours, starting from nothing used.
//!
//! A pool (a model on a key, a model of a project, or a whole account) allows, in each stretch
//! of the day between two of its resets (one stretch for a rolling day; two for Google, split
//! at midnight US Pacific), the least of: its requests per day, requests per minute × minutes,
//! tokens per day ÷ t, tokens per minute × minutes ÷ t', where t is the mean tokens (prompt plus
//! answer) of the day's requests that model could take at all and t' what its provider charges
//! up front for them. An account pool allows the least of its own figure and the sum of its
//! models'. The keys' capacity is the sum over pools. It is an upper bound: it assumes each
//! pool gets exactly the requests it can take, whenever it has room.

use crate::trace::{Req, start_ms};
use crate::truth::{Caps, Day, ModelFact, ProviderFact, Status};
use crate::window::{DAY_MS, next_midnight};

/// Capacity of the keys, in requests.
pub struct Capacity {
    /// Requests the caps allow in the 24 hours.
    pub per_day: u64,
    /// Requests per minute the per-minute caps allow while no daily cap is reached.
    pub per_minute: u64,
    /// Per provider: (id, requests per day, requests per minute).
    pub providers: Vec<(&'static str, u64, u64)>,
}

/// Minutes of each stretch between resets in the simulated day.
fn stretches(day: Day) -> Vec<f64> {
    match day {
        Day::Rolling => vec![1440.0],
        Day::Midnight(tz) => {
            let reset = next_midnight(tz, start_ms(), false);
            let first = ((reset - start_ms()).min(DAY_MS) as f64) / 60_000.0;
            vec![first, 1440.0 - first]
                .into_iter()
                .filter(|m| *m > 0.0)
                .collect()
        }
    }
}

/// Requests a pool allows over the day and per minute; `None` where nothing caps it.
fn pool(caps: &Caps, day: Day, used: f64, upfront: f64) -> (Option<f64>, Option<f64>) {
    let per_minute = [
        caps.rpm.map(|r| r as f64),
        caps.tpm.map(|t| t as f64 / upfront.max(1.0)),
    ]
    .into_iter()
    .flatten()
    .reduce(f64::min);
    let mut total = None;
    for minutes in stretches(day) {
        let bound = [
            caps.rpd.map(|r| r as f64),
            per_minute.map(|r| r * minutes),
            caps.tpd.map(|t| t as f64 / used.max(1.0)),
            caps.tokens_per_month
                .map(|t| t as f64 / used.max(1.0) * minutes / 1440.0),
        ]
        .into_iter()
        .flatten()
        .reduce(f64::min);
        if let Some(b) = bound {
            total = Some(total.unwrap_or(0.0) + b.floor());
        }
    }
    (total, per_minute)
}

fn mean(values: impl Iterator<Item = u64>) -> Option<f64> {
    let (n, sum) = values.fold((0u64, 0u64), |(n, s), v| (n + 1, s + v));
    (n > 0).then(|| sum as f64 / n as f64)
}

fn add(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? + b?)
}

fn min(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The day's requests `m` of `p` could take at all.
fn takes<'a>(
    trace: &'a [Req],
    p: &'a ProviderFact,
    m: &'a ModelFact,
) -> impl Iterator<Item = &'a Req> + 'a {
    trace.iter().filter(move |r| r.fits(p, m))
}

/// The capacity of `providers`' keys for the requests of `trace`.
pub fn capacity(providers: &[ProviderFact], trace: &[Req]) -> Capacity {
    let mut out = Capacity {
        per_day: 0,
        per_minute: 0,
        providers: Vec::new(),
    };
    for p in providers {
        let live: Vec<&ModelFact> = p
            .models
            .iter()
            .filter(|m| m.status == Status::Live)
            .collect();
        // `None`: some model has no cap of that kind (only its account, if any, bounds it).
        let mut models_day = Some(0.0);
        let mut models_minute = Some(0.0);
        // Per minute, a model with daily caps only counts as nothing (it has no minute rate).
        let mut capped_minute = 0.0;
        for m in &live {
            let Some(used) = mean(takes(trace, p, m).map(|r| r.used_tokens(p.dialect))) else {
                continue;
            };
            let upfront = mean(
                takes(trace, p, m).map(|r| r.charge(p, m).minute.max(r.used_tokens(p.dialect))),
            )
            .unwrap_or(used);
            let (day, minute) = if m.caps.is_empty() {
                (None, None)
            } else {
                pool(&m.caps, p.day, used, upfront)
            };
            models_day = add(models_day, day);
            models_minute = add(models_minute, minute);
            capped_minute += minute.unwrap_or(0.0);
        }
        let (day, minute) = if p.account.is_empty() {
            (models_day, Some(capped_minute))
        } else {
            let any = trace.iter().filter(|r| live.iter().any(|m| r.fits(p, m)));
            let used = mean(any.map(|r| r.used_tokens(p.dialect))).unwrap_or(1.0);
            let (d, m) = pool(&p.account, p.day, used, used);
            (min(d, models_day), min(m, models_minute))
        };
        let owners = p.owners().len() as u64;
        let day = day.map_or(0, |d| d as u64) * owners;
        let minute = minute.map_or(0, |m| m as u64) * owners;
        out.per_day += day;
        out.per_minute += minute;
        out.providers.push((p.id, day, minute));
    }
    out
}
