//! Pacing by demand (SPEC 3.7, `routing.pacing = "demand"`): how much of a day's cap each hour
//! of a provider's day may use, learned from the requests this gateway logged per hour.
//!
//! Pure: the store's hourly request counts go in ([`Demand::learn`]), a [`Curve`] per time zone
//! and kind of day (weekday, weekend) comes out, and the ledger asks a curve what share of the
//! day's cap is allowed at an instant ([`Curve::allowed`]) or when a share will be
//! ([`Curve::when`]). Nothing here reads a clock or remembers use: what was used today is the
//! ledger's (persisted) counters, so a gateway restarted at noon paces exactly as before.
//!
//! How a curve is learned, for one time zone (the provider's reset zone; UTC for a rolling day):
//! - the hours of the last [`HISTORY_DAYS`] days before today, by local date and local hour;
//!   weekdays and weekends apart (Saturday and Sunday of that zone's calendar);
//! - each day weighs `0.5^(age / HALF_LIFE_DAYS)`, so a changed week (a holiday) moves the
//!   curve within days, and its requests count by volume, so one near-empty day (a public
//!   holiday) barely moves it;
//! - the shape is blended with the even curve by how many days of that kind had any requests:
//!   even on a fresh install, wholly learned from [`FULL_DAYS`] days on.

use chrono::{Datelike, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use std::collections::BTreeMap;

/// Days of the request log a curve is learned from.
pub const HISTORY_DAYS: i64 = 28;
/// Days of one kind with requests after which the history alone shapes the curve.
pub const FULL_DAYS: f64 = 5.0;
/// A day's weight halves every this many days of age.
pub const HALF_LIFE_DAYS: f64 = 7.0;
const HOUR_MS: i64 = 3_600_000;

/// The share of a day's cap each of its 24 hours may use (the shares sum to 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Curve {
    share: [f64; 24],
}

impl Default for Curve {
    fn default() -> Self {
        Curve::even()
    }
}

impl Curve {
    /// Every hour alike: pacing `even`.
    pub fn even() -> Curve {
        Curve {
            share: [1.0 / 24.0; 24],
        }
    }

    /// A curve from relative weights per hour (normalized; the even curve if they are all zero,
    /// negative or not numbers).
    pub fn from_weights(weights: [f64; 24]) -> Curve {
        let clean = weights.map(|w| if w.is_finite() && w > 0.0 { w } else { 0.0 });
        let total: f64 = clean.iter().sum();
        if total <= 0.0 {
            return Curve::even();
        }
        Curve {
            share: clean.map(|w| w / total),
        }
    }

    /// The share of the day's cap hour `h` (0–23) may use.
    pub fn hour(&self, h: usize) -> f64 {
        self.share.get(h).copied().unwrap_or(0.0)
    }

    /// The share of the day's cap allowed once `elapsed` (0 to 1) of the day has passed: the
    /// shares of the hours gone, and of the current hour as much as has passed of it.
    pub fn allowed(&self, elapsed: f64) -> f64 {
        let e = if elapsed.is_nan() {
            0.0
        } else {
            elapsed.clamp(0.0, 1.0)
        };
        let t = e * 24.0;
        let whole = (t.floor() as usize).min(24);
        let mut sum: f64 = self.share[..whole].iter().sum();
        if whole < 24 {
            sum += self.share[whole] * (t - whole as f64);
        }
        sum.min(1.0)
    }

    /// The first elapsed share of the day (0 to 1) at which `share` of the cap is allowed;
    /// `None` if never (more than the whole cap).
    pub fn when(&self, share: f64) -> Option<f64> {
        if share <= 0.0 {
            return Some(0.0);
        }
        let mut sum = 0.0;
        for (h, s) in self.share.iter().enumerate() {
            if *s > 0.0 && sum + s >= share {
                return Some((h as f64 + (share - sum) / s) / 24.0);
            }
            sum += s;
        }
        (share <= sum + 1e-9).then_some(1.0)
    }

    /// `self` weighed `w` (0 to 1) against `other`.
    fn blend(&self, other: &Curve, w: f64) -> Curve {
        let mut share = [0.0; 24];
        for (h, s) in share.iter_mut().enumerate() {
            *s = w * self.share[h] + (1.0 - w) * other.share[h];
        }
        Curve { share }
    }
}

/// Weekdays and weekends are learned apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Weekday,
    Weekend,
}

impl Kind {
    fn of(day: Weekday) -> Kind {
        match day {
            Weekday::Sat | Weekday::Sun => Kind::Weekend,
            _ => Kind::Weekday,
        }
    }
}

/// What was learned for one time zone: a curve per kind of day, and how many days of each kind
/// had requests.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Learned {
    pub weekday: Curve,
    pub weekend: Curve,
    pub days: (u32, u32),
    /// How far the days of each kind (weekday, weekend) strayed from their curve: the mean
    /// (weighted as the curve) of each day's total variation distance to the learned shape, 0
    /// when every day had the same shape, up to 1.
    pub spread: (f64, f64),
}

/// Learn one zone's curves from `(hour start ms, requests)` counts, for the day that starts at
/// `today_ms` in `tz` (today itself is not used: it is not over).
pub fn learn(hours: &[(i64, u64)], tz: Tz, today_ms: i64) -> Learned {
    let Some(today) = local(tz, today_ms).map(|t| t.date_naive()) else {
        return Learned::default();
    };
    let from = today_ms - HISTORY_DAYS * 24 * HOUR_MS - 2 * HOUR_MS;
    // Per local date: requests per local hour.
    let mut days: BTreeMap<chrono::NaiveDate, [f64; 24]> = BTreeMap::new();
    for &(at, n) in hours {
        if at < from || at >= today_ms || n == 0 {
            continue;
        }
        let Some(t) = local(tz, at) else { continue };
        let date = t.date_naive();
        let age = (today - date).num_days();
        if !(1..=HISTORY_DAYS).contains(&age) {
            continue;
        }
        days.entry(date).or_insert([0.0; 24])[t.hour() as usize % 24] += n as f64;
    }
    let mut sums = [[0.0f64; 24]; 2];
    let mut counted = [0u32; 2];
    for (date, counts) in &days {
        let age = (today - *date).num_days() as f64;
        let w = 0.5f64.powf(age / HALF_LIFE_DAYS);
        let k = Kind::of(date.weekday()) as usize;
        counted[k] += 1;
        for (h, n) in counts.iter().enumerate() {
            sums[k][h] += w * n;
        }
    }
    let curve = |k: usize| {
        let trust = (counted[k] as f64 / FULL_DAYS).min(1.0);
        Curve::from_weights(sums[k]).blend(&Curve::even(), trust)
    };
    // Each day's shape against its kind's learned shape.
    let shape = |k: usize| Curve::from_weights(sums[k]);
    let shapes = [shape(0), shape(1)];
    let mut spread = [(0.0f64, 0.0f64); 2];
    for (date, counts) in &days {
        let total: f64 = counts.iter().sum();
        if total <= 0.0 {
            continue;
        }
        let w = 0.5f64.powf((today - *date).num_days() as f64 / HALF_LIFE_DAYS);
        let k = Kind::of(date.weekday()) as usize;
        let tv = 0.5
            * counts
                .iter()
                .enumerate()
                .map(|(h, n)| (n / total - shapes[k].hour(h)).abs())
                .sum::<f64>();
        spread[k].0 += w * tv;
        spread[k].1 += w;
    }
    let spread = |k: usize| {
        let (sum, w) = spread[k];
        if w > 0.0 { (sum / w).min(1.0) } else { 0.0 }
    };
    Learned {
        weekday: curve(Kind::Weekday as usize),
        weekend: curve(Kind::Weekend as usize),
        days: (counted[0], counted[1]),
        spread: (spread(0), spread(1)),
    }
}

fn local(tz: Tz, ms: i64) -> Option<chrono::DateTime<Tz>> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.with_timezone(&tz))
}

/// Every zone's curves: what the ledger paces `demand` by. Empty (every curve even) until
/// learned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Demand {
    zones: BTreeMap<String, Learned>,
    /// Hourly counts of requests the curves were learned from (what status can show).
    pub requests: u64,
}

impl Demand {
    /// Learn the curves of every zone in `zones` from `(hour start ms, requests)` counts, for
    /// the day each zone is in at `now_ms`.
    pub fn learn(hours: &[(i64, u64)], zones: &[Tz], now_ms: i64) -> Demand {
        let mut out = Demand {
            zones: BTreeMap::new(),
            requests: hours.iter().map(|(_, n)| n).sum(),
        };
        for tz in zones {
            let today = super::window::midnight(*tz, now_ms, 0);
            out.zones
                .insert(tz.name().to_string(), learn(hours, *tz, today));
        }
        out
    }

    /// What was learned for a zone, if anything.
    pub fn zone(&self, tz: Tz) -> Option<&Learned> {
        self.zones.get(tz.name())
    }

    /// The curve of the day starting at `day_start_ms` in `tz` (even if nothing was learned).
    pub fn curve(&self, tz: Tz, day_start_ms: i64) -> Curve {
        let Some(learned) = self.zones.get(tz.name()) else {
            return Curve::even();
        };
        // An hour in, so a day that starts at a DST change is still its own date.
        match local(tz, day_start_ms + HOUR_MS).map(|t| Kind::of(t.weekday())) {
            Some(Kind::Weekend) => learned.weekend,
            _ => learned.weekday,
        }
    }

    /// How far the curve of the day `at_ms` falls in, in `tz`, can be trusted to say when
    /// requests come: the days of its kind (weekday, weekend) with requests, out of
    /// [`FULL_DAYS`] (0 when nothing was learned), times how alike those days were (1 less
    /// their spread): 1 for a learned day that repeats, less for days whose busy hours move
    /// (bursts at other hours each day).
    pub fn trust(&self, tz: Tz, at_ms: i64) -> f64 {
        let Some(learned) = self.zones.get(tz.name()) else {
            return 0.0;
        };
        let (days, spread) = match local(tz, at_ms).map(|t| Kind::of(t.weekday())) {
            Some(Kind::Weekend) => (learned.days.1, learned.spread.1),
            _ => (learned.days.0, learned.spread.0),
        };
        (days as f64 / FULL_DAYS).min(1.0) * (1.0 - spread)
    }

    /// The share of the hour of the day `now_ms` falls in, in `tz`.
    pub fn hour_share(&self, tz: Tz, now_ms: i64) -> f64 {
        let start = super::window::midnight(tz, now_ms, 0);
        let h = local(tz, now_ms).map_or(0, |t| t.hour() as usize);
        self.curve(tz, start).hour(h)
    }

    /// The share of a day's demand expected between `from_ms` and `to_ms` in `tz` (each day of
    /// the interval by its own curve).
    pub fn between(&self, tz: Tz, from_ms: i64, to_ms: i64) -> f64 {
        let mut total = 0.0;
        let mut at = from_ms;
        // A day at a time; two or three for any span of a day or less.
        for _ in 0..8 {
            if at >= to_ms {
                break;
            }
            let start = super::window::midnight(tz, at, 0);
            let end = super::window::midnight(tz, at, 1).max(at + 1);
            let len = (end - start) as f64;
            let curve = self.curve(tz, start);
            let until = to_ms.min(end);
            total += curve.allowed((until - start) as f64 / len)
                - curve.allowed((at - start) as f64 / len);
            at = until;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BERLIN: Tz = chrono_tz::Europe::Berlin;
    const PACIFIC: Tz = chrono_tz::America::Los_Angeles;

    /// Midnight of a local date in `tz`.
    fn day(tz: Tz, y: i32, m: u32, d: u32) -> i64 {
        tz.with_ymd_and_hms(y, m, d, 0, 0, 0)
            .earliest()
            .map(|t| t.timestamp_millis())
            .unwrap_or(0)
    }

    /// An office day: busy 08–18 local, a little in the evening, nothing at night.
    const OFFICE: [u64; 24] = [
        0, 0, 0, 0, 0, 0, 1, 5, 40, 90, 100, 90, 60, 80, 100, 100, 80, 50, 20, 10, 5, 2, 1, 0,
    ];

    /// `days` days of `shape` per hour, in `tz`, ending the day before `today`.
    fn history(tz: Tz, today: i64, days: i64, shape: &[u64; 24]) -> Vec<(i64, u64)> {
        let mut out = Vec::new();
        for d in 1..=days {
            let start = super::super::window::midnight(tz, today - d * 86_400_000 + 3_600_000, 0);
            for (h, n) in shape.iter().enumerate() {
                out.push((start + h as i64 * HOUR_MS, *n));
            }
        }
        out
    }

    #[test]
    fn a_fresh_install_paces_evenly() {
        let now = day(BERLIN, 2026, 12, 1) + 12 * HOUR_MS;
        let d = Demand::learn(&[], &[BERLIN], now);
        let c = d.curve(BERLIN, day(BERLIN, 2026, 12, 1));
        assert_eq!(c, Curve::even());
        assert!((c.allowed(0.5) - 0.5).abs() < 1e-9);
        assert_eq!(d.zone(BERLIN).map(|l| l.days), Some((0, 0)));
        // A zone never learned is even too.
        assert_eq!(d.curve(PACIFIC, 0), Curve::even());
    }

    #[test]
    fn trust_grows_with_the_days_learned() {
        // Tuesday 2026-09-22, 00:00 UTC.
        let midnight = 1_790_035_200_000;
        assert_eq!(Demand::default().trust(chrono_tz::UTC, midnight), 0.0);
        let days = |n: i64| -> Vec<(i64, u64)> {
            (1..=n)
                .map(|d| (midnight - d * 24 * HOUR_MS + 9 * HOUR_MS, 10))
                .collect()
        };
        // Monday, Sunday, Saturday: one weekday of the five that make a weekday curve learned.
        let some = Demand::learn(&days(3), &[chrono_tz::UTC], midnight);
        assert!((some.trust(chrono_tz::UTC, midnight) - 0.2).abs() < 1e-9);
        let full = Demand::learn(&days(14), &[chrono_tz::UTC], midnight);
        assert_eq!(full.trust(chrono_tz::UTC, midnight), 1.0);
        // Fourteen days whose busy hour moves (a burst at 08:00, 12:00 or 16:00 in turn):
        // each day is far from the learned shape, so the curve is trusted much less.
        let moving: Vec<(i64, u64)> = (1..=14)
            .map(|d| {
                (
                    midnight - d * 24 * HOUR_MS + (8 + 4 * (d % 3)) * HOUR_MS,
                    10,
                )
            })
            .collect();
        let moving = Demand::learn(&moving, &[chrono_tz::UTC], midnight);
        let trust = moving.trust(chrono_tz::UTC, midnight);
        assert!(trust > 0.0 && trust < 0.5, "{trust}");
    }

    #[test]
    fn history_is_blended_in_as_it_grows() {
        // Tuesday 2026-12-01: one weekday behind it (Monday), then a full working week.
        let today = day(BERLIN, 2026, 12, 1);
        let one = learn(&history(BERLIN, today, 1, &OFFICE), BERLIN, today);
        assert_eq!(one.days, (1, 0));
        let full = learn(
            &history(BERLIN, day(BERLIN, 2026, 12, 8), 7, &OFFICE),
            BERLIN,
            day(BERLIN, 2026, 12, 8),
        );
        assert_eq!(full.days, (5, 2));
        let night = |c: &Curve| c.allowed(7.0 / 24.0);
        // Even keeps 7/24 for the night; one day of history a fifth less; a week almost none.
        assert!(night(&one.weekday) < 7.0 / 24.0 && night(&one.weekday) > 0.2);
        assert!(night(&full.weekday) < 0.01, "{}", night(&full.weekday));
        // The weekend had no history of its own kind: even.
        assert_eq!(one.weekend, Curve::even());
        // By 18:00 an office day has used almost everything.
        assert!(full.weekday.allowed(18.0 / 24.0) > 0.9);
    }

    #[test]
    fn a_holiday_week_moves_the_curve_and_a_quiet_day_does_not() {
        let today = day(BERLIN, 2026, 12, 29);
        // Three office weeks, then a week of late, flat holiday traffic (10–22 h).
        let mut hours = history(BERLIN, day(BERLIN, 2026, 12, 22), 21, &OFFICE);
        let mut holiday = [0u64; 24];
        holiday[10..22].fill(50);
        hours.extend(history(BERLIN, today, 7, &holiday));
        let l = learn(&hours, BERLIN, today);
        let office = Curve::from_weights(OFFICE.map(|n| n as f64));
        let flat = Curve::from_weights(holiday.map(|n| n as f64));
        // 20:00–22:00: the holiday's share; recency gives the last week about as much weight as
        // the three before it together (1 + 0.5 + 0.25 + ... halved per week).
        let evening = |c: &Curve| c.hour(20) + c.hour(21);
        let learned = evening(&l.weekday);
        assert!(learned > evening(&office) + 0.03, "{learned}");
        assert!(learned < evening(&flat));
        let last_week_weight = (1..=7).map(|a| 0.5f64.powf(a as f64 / 7.0)).sum::<f64>();
        let before = (8..=28).map(|a| 0.5f64.powf(a as f64 / 7.0)).sum::<f64>();
        assert!(last_week_weight > 0.6 * before);

        // One public holiday (a weekday with a handful of requests at night) barely moves the
        // office curve: requests count by volume.
        let today = day(BERLIN, 2026, 12, 10);
        let mut hours = history(BERLIN, today, 14, &OFFICE);
        let quiet = day(BERLIN, 2026, 12, 9);
        hours.retain(|(at, _)| *at < quiet || *at >= quiet + 24 * HOUR_MS);
        hours.push((quiet + 3 * HOUR_MS, 5));
        let l = learn(&hours, BERLIN, today);
        assert!(l.weekday.hour(3) < 0.01, "{}", l.weekday.hour(3));
        assert!(l.weekday.hour(10) > 0.09);
    }

    #[test]
    fn weekends_are_learned_apart() {
        let today = day(BERLIN, 2026, 12, 14); // a Monday
        let mut hours = Vec::new();
        let mut weekend = [0u64; 24];
        weekend[19..23].fill(30);
        for (at, n) in history(BERLIN, today, 21, &OFFICE) {
            let sat_sun = local(BERLIN, at).is_some_and(|t| Kind::of(t.weekday()) == Kind::Weekend);
            let h = local(BERLIN, at).map_or(0, |t| t.hour() as usize);
            hours.push((at, if sat_sun { weekend[h] } else { n }));
        }
        let d = Demand::learn(&hours, &[BERLIN], today + HOUR_MS);
        let saturday = day(BERLIN, 2026, 12, 19);
        assert!(d.curve(BERLIN, saturday).hour(20) > 0.2);
        assert!(d.curve(BERLIN, today).hour(20) < 0.05);
        assert_eq!(d.zone(BERLIN).map(|l| l.days), Some((15, 6)));
    }

    #[test]
    fn the_provider_day_is_counted_in_its_own_zone() {
        // Berlin office hours are 00–09 of Google's Pacific day: the same log, learned in the
        // Pacific zone, puts the demand at the start of that day.
        let today = day(PACIFIC, 2026, 12, 8);
        let mut hours = Vec::new();
        for d in 1..=14 {
            let berlin = day(BERLIN, 2026, 12, 8) - d * 86_400_000;
            for (h, n) in OFFICE.iter().enumerate() {
                hours.push((berlin + h as i64 * HOUR_MS, *n));
            }
        }
        let d = Demand::learn(&hours, &[BERLIN, PACIFIC], today + HOUR_MS);
        let pacific = d.curve(PACIFIC, today);
        // 10:00 Berlin is 01:00 in Los Angeles in December.
        assert!(
            (pacific.hour(1) - d.curve(BERLIN, day(BERLIN, 2026, 12, 8)).hour(10)).abs() < 0.01
        );
        // By 09:00 Pacific (18:00 Berlin) most of the day's demand is behind.
        assert!(pacific.allowed(9.0 / 24.0) > 0.85);
        // A rolling day paces by the hour of its zone.
        let at = day(BERLIN, 2026, 12, 8) + 10 * HOUR_MS + 60_000;
        assert!((d.hour_share(BERLIN, at) - pacific.hour(1)).abs() < 0.01);
    }

    #[test]
    fn a_restart_at_noon_allows_what_the_curve_allows_at_noon() {
        // Nothing here remembers use: a process started at noon asks the curve at noon, and the
        // ledger's restored counters say what was used. Two learnings from the same log agree.
        let today = day(BERLIN, 2026, 12, 8);
        let hours = history(BERLIN, today, 14, &OFFICE);
        let before = Demand::learn(&hours, &[BERLIN], today + 9 * HOUR_MS);
        let after = Demand::learn(&hours, &[BERLIN], today + 12 * HOUR_MS);
        assert_eq!(before, after);
        let noon = after.curve(BERLIN, today).allowed(0.5);
        let office = Curve::from_weights(OFFICE.map(|n| n as f64)).allowed(0.5);
        assert!((noon - office).abs() < 1e-9, "{noon} {office}");
        // An office day has used 39 % of its demand by noon (even: 50 %).
        assert!(noon > 0.35 && noon < 0.45, "{noon}");
    }

    #[test]
    fn the_demand_ahead_spans_days() {
        let today = day(BERLIN, 2026, 12, 8);
        let d = Demand::learn(&history(BERLIN, today, 14, &OFFICE), &[BERLIN], today);
        // Any 24 hours hold one day's demand; 18:00 to 08:00 the next day 44 of 834.
        let at = today + 15 * HOUR_MS + 1234;
        assert!((d.between(BERLIN, at, at + 24 * HOUR_MS) - 1.0).abs() < 1e-9);
        assert!(d.between(BERLIN, today + 18 * HOUR_MS, today + 32 * HOUR_MS) < 0.06);
        assert_eq!(d.between(BERLIN, at, at - 1), 0.0);
    }

    #[test]
    fn allowed_and_when_are_inverse_and_total() {
        let c = Curve::from_weights(OFFICE.map(|n| n as f64));
        for share in [0.0, 0.01, 0.3, 0.5, 0.99, 1.0] {
            let at = c.when(share).unwrap_or(2.0);
            assert!((c.allowed(at) - share).abs() < 1e-9, "{share} at {at}");
        }
        assert_eq!(c.when(1.5), None);
        assert_eq!(c.allowed(-1.0), 0.0);
        assert!((c.allowed(7.0) - 1.0).abs() < 1e-9);
        assert_eq!(c.allowed(f64::NAN), 0.0);
        assert_eq!(Curve::from_weights([f64::NAN; 24]), Curve::even());
        assert_eq!(c.hour(99), 0.0);
    }
}
