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

use crate::app::App;
use crate::catalog::{AuthStyle, Provider};
use crate::keys::{ProviderKey, Status};
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

/// Start the periodic probe.
pub fn spawn(app: &Arc<App>) {
    let app = Arc::clone(app);
    let stop = app.stop.clone();
    app.clone().tasks.spawn(async move {
        let interval = app.config.routing.health_interval;
        // The first round waits a little so a restart loop does not hammer providers.
        let mut wait = jitter(Duration::from_secs(20).min(interval));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => break,
            }
            tokio::select! {
                _ = run(&app) => {}
                _ = stop.cancelled() => break,
            }
            wait = jitter(interval);
        }
    });
}

/// `d` ± 20 %.
fn jitter(d: Duration) -> Duration {
    let f: f64 = rand::rng().random_range(0.8..1.2);
    d.mul_f64(f)
}

/// Probe every key of every enabled provider now; records and returns the verdicts.
pub async fn run(app: &Arc<App>) -> Vec<Verdict> {
    let groups: Vec<(Provider, Vec<Arc<ProviderKey>>)> = app
        .catalog
        .providers
        .iter()
        .filter(|p| p.enabled)
        .map(|p| (p.clone(), app.keys.all(&p.id)))
        .filter(|(_, keys)| !keys.is_empty())
        .collect();
    let results: Vec<Vec<Verdict>> = futures_util::stream::iter(groups)
        .map(|(provider, keys)| {
            let app = Arc::clone(app);
            async move {
                let mut out = Vec::new();
                for (i, key) in keys.iter().filter(|k| k.enabled).enumerate() {
                    if i > 0 {
                        tokio::time::sleep(SPACING).await;
                    }
                    let (status, detail) = probe(&app, &provider, key).await;
                    record(&app, key, status, detail.clone());
                    out.push(Verdict {
                        provider: provider.id.clone(),
                        key_id: key.id.clone(),
                        label: key.label.clone(),
                        status,
                        detail,
                    });
                }
                out
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    results.into_iter().flatten().collect()
}

fn record(app: &Arc<App>, key: &ProviderKey, status: Status, detail: Option<String>) {
    let now = app.ledger.now_ms();
    // A key already invalid stays so until a probe passes: an `error` says nothing new.
    let status = if status == Status::Error && app.keys.status(&key.id) == Status::Invalid {
        Status::Invalid
    } else {
        status
    };
    let h = app.keys.set_status(&key.id, status, detail, now);
    if status == Status::Invalid && h.invalid_count >= 3 {
        tracing::warn!(provider = %key.provider, key = %crate::ledger::short(&key.id), "three confirmed rejections: key disabled");
    }
    if key.stored {
        app.persist_key_health(&key.id);
    }
}

/// One credential check.
pub async fn probe(app: &App, provider: &Provider, key: &ProviderKey) -> (Status, Option<String>) {
    let secret = key.secret.expose();
    let (account, token) = if provider.quirks.account_in_url {
        secret.split_once(':').unwrap_or(("", secret))
    } else {
        ("", secret)
    };
    let base = app
        .known_host(key)
        .unwrap_or_else(|| provider.base_url.clone())
        .replace("{account_id}", account);
    let url = if provider.key_check.starts_with("http://")
        || provider.key_check.starts_with("https://")
    {
        provider.key_check.clone()
    } else {
        format!("{base}/{}", provider.key_check)
    };
    let mut headers: Vec<(&'static str, String)> = Vec::new();
    if !token.is_empty() {
        match provider.auth {
            AuthStyle::Bearer => headers.push(("authorization", format!("Bearer {token}"))),
            AuthStyle::Goog => headers.push(("x-goog-api-key", token.to_string())),
            AuthStyle::None => {}
        }
    }
    let Ok(uri) = url.parse::<http::Uri>() else {
        return (Status::Error, Some("bad probe URL".into()));
    };
    let answer = tokio::time::timeout(PROBE_TIMEOUT, async {
        let resp = app
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
