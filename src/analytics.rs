//! What the request log adds up to: hourly rollups kept as requests are logged, and the reports
//! built from them (SPEC 6.2 analytics: totals, per provider, per model, over time).
//!
//! A rollup counts one hour of one (provider, model): requests, how they ended, tokens, and
//! latency and time-to-first-token histograms with log-spaced buckets, so percentiles of any
//! window come from merging at most a few thousand rollups, never from scanning the log. A
//! percentile is the middle of the bucket it falls in: within about 7 % of the true value
//! (exact below 10 ms).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::LazyLock;

use crate::record::RequestRow;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

/// Bucket `i` holds values in `[EDGES[i], EDGES[i + 1])` milliseconds; the last is open.
static EDGES: LazyLock<Vec<u64>> = LazyLock::new(|| {
    let mut edges = vec![0u64];
    let mut next = 1u64;
    while next < 24 * 3_600_000 {
        edges.push(next);
        next = (next + 1).max(next * 115 / 100);
    }
    edges
});

/// Counts of values per bucket, sparse.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram(BTreeMap<u16, u64>);

impl Histogram {
    fn bucket(ms: u64) -> u16 {
        (EDGES.partition_point(|&e| e <= ms) - 1) as u16
    }

    pub fn add(&mut self, ms: u64) {
        *self.0.entry(Self::bucket(ms)).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (b, n) in &other.0 {
            *self.0.entry(*b).or_default() += n;
        }
    }

    pub fn count(&self) -> u64 {
        self.0.values().sum()
    }

    /// The `q` quantile (0..=1), as the middle of its bucket; `None` without values.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (&b, &n) in &self.0 {
            seen += n;
            if seen >= rank {
                let lo = EDGES[b as usize];
                let hi = EDGES.get(b as usize + 1).copied().unwrap_or(lo + 1);
                return Some(if hi - lo <= 1 { lo } else { (lo + hi) / 2 });
            }
        }
        None
    }
}

/// One hour of one (provider, model), or of requests no provider served.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rollup {
    pub requests: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// The client went away before the answer ended.
    pub cancelled: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub latency: Histogram,
    /// Streams only.
    pub ttft: Histogram,
    /// Upstream attempts on this model that failed (their requests may have been served by
    /// another).
    pub failed_attempts: u64,
}

impl Rollup {
    pub fn merge(&mut self, o: &Rollup) {
        self.requests += o.requests;
        self.succeeded += o.succeeded;
        self.failed += o.failed;
        self.cancelled += o.cancelled;
        self.tokens_in += o.tokens_in;
        self.tokens_out += o.tokens_out;
        self.latency.merge(&o.latency);
        self.ttft.merge(&o.ttft);
        self.failed_attempts += o.failed_attempts;
    }
}

/// How a logged request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Succeeded,
    Failed,
    Cancelled,
}

/// 200 without an error succeeded, 499 (the client went away) was cancelled, the rest failed
/// (a stream interrupted after content included).
pub fn ending(row: &RequestRow) -> Ending {
    match (row.status, &row.error) {
        (200, None) => Ending::Succeeded,
        (499, _) => Ending::Cancelled,
        _ => Ending::Failed,
    }
}

/// Where a rollup row belongs: (hour start, provider, model, client key); `""` for none (a
/// request no provider served, or a row older than the client dimension).
pub type Key = (i64, String, String, String);

fn split(reference: &str) -> (String, String) {
    match reference.split_once('/') {
        Some((p, m)) => (p.to_string(), m.to_string()),
        None => (String::new(), reference.to_string()),
    }
}

/// The rollup increments a batch of logged requests makes.
pub fn rollups(rows: &[RequestRow]) -> BTreeMap<Key, Rollup> {
    let mut out: BTreeMap<Key, Rollup> = BTreeMap::new();
    for row in rows {
        let hour = row.at_ms - row.at_ms.rem_euclid(HOUR_MS);
        let (provider, model) = row.served_by.as_deref().map(split).unwrap_or_default();
        let client = row.client.clone();
        let r = out
            .entry((hour, provider, model, client.clone()))
            .or_default();
        r.requests += 1;
        match ending(row) {
            Ending::Succeeded => r.succeeded += 1,
            Ending::Failed => r.failed += 1,
            Ending::Cancelled => r.cancelled += 1,
        }
        // Tokens count where an upstream worked on the request: a request no provider took
        // carries only its estimate.
        if row.served_by.is_some() {
            r.tokens_in += row.tokens_in;
            r.tokens_out += row.tokens_out;
        }
        r.latency.add(row.latency_ms);
        if row.stream {
            if let Some(t) = row.ttft_ms {
                r.ttft.add(t);
            }
        }
        for a in row.attempts.iter().filter(|a| a.outcome != "ok") {
            let (p, m) = split(&a.target);
            out.entry((hour, p, m, client.clone()))
                .or_default()
                .failed_attempts += 1;
        }
    }
    out
}

/// A report's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Day,
    Week,
    Month,
}

impl Window {
    pub fn parse(s: &str) -> Option<Window> {
        match s {
            "24h" => Some(Window::Day),
            "7d" => Some(Window::Week),
            "30d" => Some(Window::Month),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Window::Day => "24h",
            Window::Week => "7d",
            Window::Month => "30d",
        }
    }

    /// The series' step, and its steps' starts ending with the one `now` falls in.
    pub fn steps(self, now: i64) -> (i64, Vec<i64>) {
        let (step, n) = match self {
            Window::Day => (HOUR_MS, 24),
            Window::Week => (DAY_MS, 7),
            Window::Month => (DAY_MS, 30),
        };
        let last = now - now.rem_euclid(step);
        (step, (0..n).rev().map(|i| last - i * step).collect())
    }
}

/// Counts with their percentiles, for a total or a breakdown row.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub rollup: Rollup,
}

impl Figures {
    pub fn success_rate(&self) -> Option<f64> {
        let r = &self.rollup;
        (r.requests > 0).then(|| r.succeeded as f64 / r.requests as f64)
    }
}

/// One step of the series.
#[derive(Debug, Clone, Default)]
pub struct Step {
    pub start: i64,
    pub requests: u64,
    pub failed: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
}

/// A window's report.
#[derive(Debug, Clone)]
pub struct Report {
    pub window: Window,
    pub totals: Figures,
    /// By provider (`""`: requests no provider served), most requests first.
    pub by_provider: Vec<(String, Figures)>,
    /// By `provider/model`, most requests first.
    pub by_model: Vec<(String, Figures)>,
    /// Per client key (`""`: requests logged before clients were counted), whatever the filter.
    pub by_client: Vec<(String, Figures)>,
    /// The client key the other figures are limited to, if any.
    pub client: Option<String>,
    pub series: Vec<Step>,
}

/// The report of `window` at `now` from the rollups since its start.
/// `client`: only that client key's requests (the per-client table still lists every key).
pub fn report(window: Window, now: i64, rows: &[(Key, Rollup)], client: Option<&str>) -> Report {
    let (step, starts) = window.steps(now);
    let from = starts.first().copied().unwrap_or(now);
    let mut totals = Figures::default();
    let mut by_provider: BTreeMap<String, Figures> = BTreeMap::new();
    let mut by_model: BTreeMap<String, Figures> = BTreeMap::new();
    let mut by_client: BTreeMap<String, Figures> = BTreeMap::new();
    let mut series: Vec<Step> = starts
        .iter()
        .map(|&start| Step {
            start,
            ..Step::default()
        })
        .collect();
    for ((hour, provider, model, who), r) in rows {
        if *hour < from {
            continue;
        }
        by_client.entry(who.clone()).or_default().rollup.merge(r);
        if client.is_some_and(|c| c != who) {
            continue;
        }
        totals.rollup.merge(r);
        by_provider
            .entry(provider.clone())
            .or_default()
            .rollup
            .merge(r);
        let reference = if provider.is_empty() {
            String::new()
        } else {
            format!("{provider}/{model}")
        };
        by_model.entry(reference).or_default().rollup.merge(r);
        let i = ((hour - from) / step) as usize;
        if let Some(s) = series.get_mut(i) {
            s.requests += r.requests;
            s.failed += r.failed;
            s.tokens_in += r.tokens_in;
            s.tokens_out += r.tokens_out;
        }
    }
    let ranked = |m: BTreeMap<String, Figures>| {
        let mut v: Vec<(String, Figures)> = m
            .into_iter()
            .filter(|(_, f)| f.rollup.requests > 0 || f.rollup.failed_attempts > 0)
            .collect();
        v.sort_by(|a, b| {
            b.1.rollup
                .requests
                .cmp(&a.1.rollup.requests)
                .then(a.0.cmp(&b.0))
        });
        v
    };
    Report {
        window,
        totals,
        by_provider: ranked(by_provider),
        by_model: ranked(by_model),
        by_client: ranked(by_client),
        client: client.map(str::to_string),
        series,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::AttemptRow;

    #[test]
    fn histogram_quantiles_are_close() {
        let mut h = Histogram::default();
        for ms in 1..=1000 {
            h.add(ms);
        }
        for (q, exact) in [(0.5, 500.0), (0.95, 950.0), (0.99, 990.0)] {
            let got = h.quantile(q).unwrap() as f64;
            assert!((got - exact).abs() / exact < 0.08, "q{q}: {got} vs {exact}");
        }
        let mut small = Histogram::default();
        for ms in [3, 3, 4, 7, 9] {
            small.add(ms);
        }
        assert_eq!(small.quantile(0.5), Some(4), "exact below 10 ms");
        assert_eq!(Histogram::default().quantile(0.5), None);
        let mut big = Histogram::default();
        big.add(u64::MAX);
        assert!(big.quantile(0.5).is_some());
    }

    #[test]
    fn rows_roll_up_by_hour_and_model() {
        let row = |at_ms: i64, served: Option<&str>, status: u16, stream: bool| RequestRow {
            at_ms,
            served_by: served.map(str::to_string),
            status,
            stream,
            latency_ms: 100,
            ttft_ms: Some(20),
            tokens_in: 10,
            tokens_out: 5,
            attempts: vec![AttemptRow {
                target: "groq/x".into(),
                outcome: "rate_limited".into(),
                ..AttemptRow::default()
            }],
            ..RequestRow::default()
        };
        let rows = [
            row(HOUR_MS + 5, Some("google/g"), 200, true),
            row(HOUR_MS + 6, Some("google/g"), 499, false),
            row(HOUR_MS * 2, None, 429, false),
        ];
        let r = rollups(&rows);
        let g = &r[&(HOUR_MS, "google".into(), "g".into(), String::new())];
        assert_eq!(
            (g.requests, g.succeeded, g.cancelled, g.failed),
            (2, 1, 1, 0)
        );
        assert_eq!((g.tokens_in, g.tokens_out), (20, 10));
        assert_eq!(g.ttft.count(), 1, "streams only");
        assert_eq!(
            r[&(HOUR_MS, "groq".into(), "x".into(), String::new())].failed_attempts,
            2
        );
        let none = &r[&(HOUR_MS * 2, String::new(), String::new(), String::new())];
        assert_eq!((none.requests, none.failed), (1, 1));
        let rows: Vec<(Key, Rollup)> = r.into_iter().collect();
        let rep = report(Window::Day, HOUR_MS * 2 + 10, &rows, None);
        assert_eq!(rep.totals.rollup.requests, 3);
        assert_eq!(rep.series.len(), 24);
        assert_eq!(rep.series[22].requests, 2);
        assert_eq!(rep.series[23].failed, 1);
        assert_eq!(rep.by_provider[0].0, "google");
    }

    #[test]
    fn a_client_filter_limits_the_figures_but_not_the_per_client_table() {
        let row = |client: &str, served: &str| RequestRow {
            at_ms: HOUR_MS + 5,
            client: client.into(),
            served_by: Some(served.into()),
            status: 200,
            tokens_in: 10,
            tokens_out: 5,
            ..RequestRow::default()
        };
        let rows = [
            row("laptop", "groq/x"),
            row("batch", "groq/x"),
            row("batch", "google/g"),
        ];
        let rolled: Vec<(Key, Rollup)> = rollups(&rows).into_iter().collect();
        let all = report(Window::Day, HOUR_MS * 2, &rolled, None);
        assert_eq!(all.totals.rollup.requests, 3);
        let batch = report(Window::Day, HOUR_MS * 2, &rolled, Some("batch"));
        assert_eq!(batch.totals.rollup.requests, 2);
        assert_eq!(batch.by_provider.len(), 2);
        assert_eq!(batch.client.as_deref(), Some("batch"));
        let per: Vec<(&str, u64)> = batch
            .by_client
            .iter()
            .map(|(c, f)| (c.as_str(), f.rollup.requests))
            .collect();
        assert_eq!(per, [("batch", 2), ("laptop", 1)]);
    }
}
