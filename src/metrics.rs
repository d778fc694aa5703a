//! Prometheus metrics: requests by provider/model/outcome, latency and time-to-first-token
//! histograms, attempts, and (computed at scrape time) cooldowns and remaining quota per key.
//!
//! Counters are fed from finished request-log rows, so the request path only pays for a few
//! atomic increments. One registry per App (tests run several Apps in one process).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Mutex;

use crate::record::RequestRow;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    provider: String,
    model: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Finished {
    surface: String,
    /// The client key's name; past [`CLIENT_LABELS`] names, `other` (bounded cardinality).
    client: String,
    provider: String,
    model: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Target {
    provider: String,
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Quota {
    provider: String,
    model: String,
    key: String,
    window: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabel {
    provider: String,
}

/// The registry and its families.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<Finished, Counter>,
    attempts: Family<Outcome, Counter>,
    latency: Family<Target, Histogram>,
    ttft: Family<Target, Histogram>,
    cooldowns: Family<ProviderLabel, Gauge>,
    remaining: Family<Quota, Gauge>,
    log_dropped: Counter,
    /// Client key names given a label of their own so far.
    clients: Mutex<std::collections::HashSet<String>>,
}

/// Client keys with a `client` label of their own, at most; the rest are `other`.
pub const CLIENT_LABELS: usize = 32;

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
    ])
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("freeway");
        let requests = Family::<Finished, Counter>::default();
        let attempts = Family::<Outcome, Counter>::default();
        let latency = Family::<Target, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let ttft = Family::<Target, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let cooldowns = Family::<ProviderLabel, Gauge>::default();
        let remaining = Family::<Quota, Gauge>::default();
        let log_dropped = Counter::default();
        registry.register(
            "requests",
            "Requests by what served them and how they ended",
            requests.clone(),
        );
        registry.register(
            "attempts",
            "Upstream attempts by target and outcome",
            attempts.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Whole request latency",
            latency.clone(),
        );
        registry.register(
            "time_to_first_token_seconds",
            "Time until the first content",
            ttft.clone(),
        );
        registry.register(
            "cooldowns",
            "Active cooldowns per provider",
            cooldowns.clone(),
        );
        registry.register(
            "quota_remaining",
            "Requests or tokens left per key and window",
            remaining.clone(),
        );
        registry.register(
            "request_log_dropped",
            "Request-log rows dropped because the writer fell behind",
            log_dropped.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            requests,
            attempts,
            latency,
            ttft,
            cooldowns,
            remaining,
            log_dropped,
            clients: Mutex::default(),
        }
    }
}

fn split(reference: &str) -> (String, String) {
    match reference.split_once('/') {
        Some((p, m)) => (p.to_string(), m.to_string()),
        None => ("none".to_string(), reference.to_string()),
    }
}

impl Metrics {
    /// Count a finished request.
    pub fn observe(&self, row: &RequestRow) {
        let (provider, model) = split(row.served_by.as_deref().unwrap_or("none/none"));
        let outcome = match (row.status, &row.error) {
            (200, None) => "ok",
            (429, Some(e)) if e.starts_with("the client key ") => "client_limited",
            (200, Some(_)) => "interrupted",
            (499, _) => "cancelled",
            (429, _) => "rate_limited",
            (400..=499, _) => "client_error",
            _ => "upstream_error",
        };
        self.requests
            .get_or_create(&Finished {
                surface: row.surface.clone().unwrap_or_else(|| "chat".into()),
                client: self.client_label(&row.client),
                provider: provider.clone(),
                model: model.clone(),
                outcome: outcome.into(),
            })
            .inc();
        for a in &row.attempts {
            let (p, m) = split(&a.target);
            self.attempts
                .get_or_create(&Outcome {
                    provider: p,
                    model: m,
                    outcome: a.outcome.clone(),
                })
                .inc();
        }
        let target = Target { provider, model };
        self.latency
            .get_or_create(&target)
            .observe(row.latency_ms as f64 / 1000.0);
        if let Some(t) = row.ttft_ms {
            self.ttft.get_or_create(&target).observe(t as f64 / 1000.0);
        }
    }

    /// The `client` label of a client key: its name while fewer than [`CLIENT_LABELS`] have
    /// one, else `other`.
    fn client_label(&self, name: &str) -> String {
        let mut seen = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(name) {
            return name.to_string();
        }
        if seen.len() < CLIENT_LABELS {
            seen.insert(name.to_string());
            return name.to_string();
        }
        "other".into()
    }

    pub fn log_dropped(&self) {
        self.log_dropped.inc();
    }

    /// The dropped-rows counter, for the request-log writer thread.
    pub fn log_dropped_counter(&self) -> Counter {
        self.log_dropped.clone()
    }

    /// Set the scrape-time gauges and render the text format.
    pub fn render(
        &self,
        cooldowns: &[(String, i64)],
        remaining: &[(String, String, String, String, i64)],
    ) -> String {
        self.cooldowns.clear();
        for (provider, n) in cooldowns {
            self.cooldowns
                .get_or_create(&ProviderLabel {
                    provider: provider.clone(),
                })
                .set(*n);
        }
        self.remaining.clear();
        for (provider, model, key, window, left) in remaining {
            self.remaining
                .get_or_create(&Quota {
                    provider: provider.clone(),
                    model: model.clone(),
                    key: key.clone(),
                    window: window.clone(),
                })
                .set(*left);
        }
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}
