//! Health probes (SPEC 3.6): the cheapest credential check each provider offers, run in the
//! background every few minutes with jitter, a few at a time, keys of one provider spaced apart.
//!
//! Only a confirmed rejection (401/403, Gemini's `API_KEY_INVALID`) marks a key invalid; three in
//! a row disable it. Timeouts, 5xx and network errors are `error`: the probe could not tell.

use bytes::Bytes;
use futures_util::StreamExt;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;

use crate::catalog::Provider;
use crate::keys::{KeyRing, ProviderKey, Status};
use crate::live::Live;
use crate::providers::{self, Dialects};
use crate::upstream;

/// Probes running at once, at most.
const CONCURRENCY: usize = 4;
/// Pause between two probes of the same provider.
const SPACING: Duration = Duration::from_millis(500);
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// One probe's verdict.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub provider: String,
    pub key_id: String,
    pub label: String,
    pub status: Status,
    pub detail: Option<String>,
}

/// What a probe needs: the upstream client and the dialects (which know each key's host).
#[derive(Clone)]
pub struct Prober {
    pub http: upstream::Client,
    pub dialects: Arc<Dialects>,
}

/// `d` ± 20 %, so probes of many servers (and restarts) do not line up.
pub fn jitter(d: Duration) -> Duration {
    let f: f64 = rand::rng().random_range(0.8..1.2);
    d.mul_f64(f)
}

/// Probe every key of every enabled provider now (or only the keys `only` accepts); records
/// the verdicts in the key ring, dated by `now`, and returns them.
pub async fn run(
    live: &Live,
    prober: &Prober,
    only: &(dyn Fn(&ProviderKey) -> bool + Sync),
    now: &(dyn Fn() -> i64 + Sync),
) -> Vec<Verdict> {
    let snap = live.snapshot();
    let groups: Vec<(Provider, Vec<Arc<ProviderKey>>)> = snap
        .catalog
        .providers
        .iter()
        .filter(|p| p.enabled)
        .map(|p| {
            let keys: Vec<_> = live
                .keys
                .all(&p.id)
                .into_iter()
                .filter(|k| k.enabled && only(k))
                .collect();
            (p.clone(), keys)
        })
        .filter(|(_, keys)| !keys.is_empty())
        .collect();
    let probes = groups.into_iter().map(|(provider, keys)| async move {
        let mut out = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(SPACING).await;
            }
            let (status, detail) = probe(prober, &provider, key).await;
            record(&live.keys, key, status, detail.clone(), now());
            out.push(Verdict {
                provider: provider.id.clone(),
                key_id: key.id.clone(),
                label: key.label.clone(),
                status,
                detail,
            });
        }
        out
    });
    let results: Vec<Vec<Verdict>> = futures_util::stream::iter(probes)
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    results.into_iter().flatten().collect()
}

fn record(keys: &KeyRing, key: &ProviderKey, status: Status, detail: Option<String>, now: i64) {
    // A key already invalid stays so until a probe passes: an `error` says nothing new.
    let status = if status == Status::Error && key.status() == Status::Invalid {
        Status::Invalid
    } else {
        status
    };
    let h = keys.set_status(&key.id, status, detail, now);
    if status == Status::Invalid && h.is_some_and(|h| h.invalid_count >= 3) {
        tracing::warn!(provider = %key.provider, key = %crate::ledger::short(&key.id), "three confirmed rejections: key disabled");
    }
}

/// One credential check.
pub async fn probe(
    prober: &Prober,
    provider: &Provider,
    key: &ProviderKey,
) -> (Status, Option<String>) {
    let host = prober
        .dialects
        .known_host(key)
        .unwrap_or_else(|| provider.base_url.clone());
    let (base, headers) = providers::credentials(provider, key.secret.expose(), &host);
    let url = if provider.key_check.starts_with("http://")
        || provider.key_check.starts_with("https://")
    {
        provider.key_check.clone()
    } else {
        format!("{base}/{}", provider.key_check)
    };
    let Ok(uri) = url.parse::<http::Uri>() else {
        return (Status::Error, Some("bad probe URL".into()));
    };
    let answer = tokio::time::timeout(PROBE_TIMEOUT, async {
        let resp = prober
            .http
            .send(http::Method::GET, uri, &headers, Bytes::new())
            .await?;
        let code = resp.status().as_u16();
        // Enough of the body to see Gemini's API_KEY_INVALID; probes answer small.
        let text = upstream::read_limited(resp, PROBE_TIMEOUT, 64 * 1024)
            .await
            .unwrap_or_default();
        Ok::<_, upstream::Error>((code, text))
    })
    .await;
    let (code, body) = match answer {
        Ok(Ok(a)) => a,
        Err(_) => return (Status::Error, Some("probe timed out".into())),
        Ok(Err(_)) => return (Status::Error, Some("could not connect".into())),
    };
    match code {
        200..=299 => (Status::Healthy, None),
        401 | 403 => (Status::Invalid, Some(format!("rejected ({code})"))),
        400 if String::from_utf8_lossy(&body).contains("API_KEY_INVALID") => {
            (Status::Invalid, Some("rejected (API_KEY_INVALID)".into()))
        }
        _ => (Status::Error, Some(format!("probe answered {code}"))),
    }
}
