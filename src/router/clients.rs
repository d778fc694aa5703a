//! Client keys' own limits (SPEC 3.8): what one client key may ask of the whole gateway,
//! counted before any upstream call, and which models it may use.
//!
//! Requests and tokens per minute, day and month are counted in the same ledger as the
//! upstream caps, under a scope of their own (`*client` / the key's name): reserved before the
//! first attempt, settled with the real usage, given back on failure, journaled like every
//! reservation (a `kill -9` lets nothing extra through). Days and months are UTC calendar days
//! and months. Requests in flight are counted here, in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::catalog::Model;
use crate::config::ClientLimits;
use crate::error::ApiError;
use crate::keys::Client;
use crate::ledger::{Ask, Denied, Ledger, Reservation};

/// What a client key holds while its request runs: its claim on its own limits and its place
/// among its requests in flight. Dropped, it gives the place back (the claim as a sent
/// request, see [`Reservation`]).
#[derive(Default)]
pub struct Admission {
    pub reservation: Option<Reservation>,
    _in_flight: Option<InFlight>,
    /// Its place among the key's requests in flight on every replica (`[cluster]`).
    pub seat: Option<crate::cluster::Seat>,
}

impl Admission {
    /// The request was answered with `tokens` in all (`None`: the estimate stands).
    pub fn settle(&mut self, tokens: Option<u64>) {
        if let Some(r) = self.reservation.take() {
            r.settle(tokens);
        }
    }

    /// The request failed: its tokens go back; the request too when nothing was sent.
    pub fn release(&mut self, sent: bool) {
        if let Some(r) = self.reservation.take() {
            if sent { r.release() } else { r.unsent() }
        }
    }
}

/// One request in flight of a client key.
struct InFlight {
    gate: Arc<Mutex<HashMap<String, u32>>>,
    client: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut m = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.client);
            }
        }
    }
}

/// Admits client keys' requests under their limits.
#[derive(Default)]
pub struct Gate {
    in_flight: Arc<Mutex<HashMap<String, u32>>>,
}

impl Gate {
    /// Admit a request of `tokens` from `client`, or say which of its limits it is over.
    pub fn admit(
        &self,
        ledger: &Arc<dyn Ledger>,
        client: &Client,
        tokens: u64,
    ) -> Result<Admission, ApiError> {
        let limits = &client.limits;
        let mut admission = Admission::default();
        if let Some(max) = limits.concurrent {
            let mut m = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            let n = m.entry(client.name.clone()).or_default();
            if *n >= max {
                return Err(busy(&client.name, max));
            }
            *n += 1;
            admission._in_flight = Some(InFlight {
                gate: Arc::clone(&self.in_flight),
                client: client.name.clone(),
            });
        }
        if limits.counts() {
            let ask = Ask::client(&client.name, limits, tokens);
            match Reservation::take(ledger, &ask) {
                Ok(r) => admission.reservation = Some(r),
                Err(denied) => return Err(over(&client.name, limits, &denied, ledger.now_ms())),
            }
        }
        Ok(admission)
    }
}

/// The 429 for a client key with `max` requests in flight already.
pub fn busy(name: &str, max: u32) -> ApiError {
    ApiError::ClientQuota {
        message: format!(
            "the client key `{name}` has {max} request(s) in flight, its limit (concurrent = {max}); wait for one to finish"
        ),
        retry_after: Some(std::time::Duration::from_secs(1)),
    }
}

/// The 429 for a client key over one of its limits, naming it.
pub fn over(name: &str, limits: &ClientLimits, denied: &Denied, now: i64) -> ApiError {
    let (what, value) = match denied {
        Denied::Capped { cap: "rpm", .. } => ("requests per minute", limits.rpm),
        Denied::Capped { cap: "rpd", .. } => ("requests per day", limits.rpd),
        Denied::Capped { cap: "tpd", .. } => ("tokens per day", limits.tpd),
        Denied::Capped {
            cap: "tokens per month",
            ..
        } => ("tokens per month", limits.tpmo),
        _ => ("limit", None),
    };
    let value = value.map(|v| format!(" ({v})")).unwrap_or_default();
    let wait = denied
        .until_ms()
        .map(|t| ((t - now).max(0) as u64).div_ceil(1000).max(1));
    let when = match wait {
        Some(s) => format!(
            "; it frees up in {}",
            humantime::format_duration(std::time::Duration::from_secs(s))
        ),
        None => "; this request alone is larger than the limit".into(),
    };
    ApiError::ClientQuota {
        message: format!(
            "the client key `{name}` reached its {what} limit{value}{when}. This is the key's own limit, set by the gateway's admin, not a provider's"
        ),
        retry_after: wait.map(std::time::Duration::from_secs),
    }
}

/// Whether a key allowed `patterns` (canonical ids, `provider/model` references, `provider/*`;
/// none = every model) may use `model`.
pub fn allows(patterns: &[String], model: &Model) -> bool {
    patterns.is_empty()
        || patterns.iter().any(|p| {
            let p = p.trim();
            p == model.canonical
                || p == model.reference
                || p == model.id
                || p.strip_suffix("/*")
                    .is_some_and(|provider| provider == model.provider)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::ledger::{ManualClock, MemoryLedger};
    use std::time::Duration;

    fn client(limits: ClientLimits) -> Arc<Client> {
        Client::with_limits("laptop", limits)
    }

    #[test]
    fn limits_hold_and_name_themselves() {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let ledger: Arc<dyn Ledger> = Arc::new(MemoryLedger::new(clock.clone()));
        let gate = Gate::default();
        let c = client(ClientLimits {
            rpm: Some(2),
            tpd: Some(1_000),
            ..Default::default()
        });
        let mut a = gate.admit(&ledger, &c, 100).unwrap();
        a.settle(Some(300));
        let mut b = gate.admit(&ledger, &c, 100).unwrap();
        b.release(false);
        let _kept = gate.admit(&ledger, &c, 100).unwrap();
        let Err(ApiError::ClientQuota {
            message,
            retry_after,
        }) = gate.admit(&ledger, &c, 100)
        else {
            panic!("a third request in the minute was let through")
        };
        assert!(
            message.contains("requests per minute limit (2)"),
            "{message}"
        );
        assert!(
            retry_after.is_some_and(|d| (1..=61).contains(&d.as_secs())),
            "{retry_after:?} {message}"
        );
        clock.advance(Duration::from_secs(61));
        // 300 + 100 used of 1,000 tokens: a 700-token request no longer fits.
        let Err(ApiError::ClientQuota { message, .. }) = gate.admit(&ledger, &c, 700) else {
            panic!("the day's tokens were not counted")
        };
        assert!(message.contains("tokens per day"), "{message}");
        assert!(gate.admit(&ledger, &c, 500).is_ok());
    }

    #[test]
    fn requests_in_flight_are_bounded() {
        let ledger: Arc<dyn Ledger> = Arc::new(MemoryLedger::new(Arc::new(ManualClock::new(0))));
        let gate = Gate::default();
        let c = client(ClientLimits {
            concurrent: Some(2),
            ..Default::default()
        });
        let one = gate.admit(&ledger, &c, 1).unwrap();
        let _two = gate.admit(&ledger, &c, 1).unwrap();
        assert!(matches!(
            gate.admit(&ledger, &c, 1),
            Err(ApiError::ClientQuota { .. })
        ));
        drop(one);
        assert!(gate.admit(&ledger, &c, 1).is_ok());
    }

    #[test]
    fn allowed_models_by_canonical_reference_and_provider() {
        let c = Catalog::builtin().unwrap();
        let m = c.model("groq/openai/gpt-oss-120b").unwrap();
        assert!(allows(&[], m));
        assert!(allows(&["gpt-oss-120b".into()], m));
        assert!(allows(&["groq/openai/gpt-oss-120b".into()], m));
        assert!(allows(&["groq/*".into()], m));
        assert!(!allows(
            &["cerebras/*".into(), "gemini-2.5-flash".into()],
            m
        ));
    }
}
