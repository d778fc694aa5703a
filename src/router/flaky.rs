//! Routes whose streams keep breaking (SPEC 3.9). A (provider, model) whose streams are cut
//! before their end [`CUTS_IN_A_ROW`] times in a row (stalled, cut, or ended without a finish
//! reason; before content or after it) is benched for the 5xx cooldown: tried after every other
//! candidate, so a flaky route stops costing every request a failed first attempt, yet still
//! answers when nothing else can (benching is not a cooldown: a lone flaky route is better than
//! none). A stream that ends cleanly starts the count over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::ledger::Ledger;
use crate::live::Live;

/// Cut streams in a row that bench a route.
pub const CUTS_IN_A_ROW: u32 = 3;
/// Routes counted at most (a map of cut counts cannot grow without end).
const CAPACITY: usize = 10_000;

/// Which route a stream took.
#[derive(Debug, Clone)]
pub struct Route {
    pub provider: String,
    pub model: String,
    /// `provider/model`.
    pub reference: String,
}

pub struct Flaky {
    /// Cut streams in a row, by model reference.
    runs: Mutex<HashMap<String, u32>>,
    ledger: Arc<dyn Ledger>,
    live: Arc<Live>,
    /// How long a benched route rests.
    bench_ms: i64,
}

impl Flaky {
    pub fn new(ledger: Arc<dyn Ledger>, live: Arc<Live>, bench_ms: i64) -> Flaky {
        Flaky {
            runs: Mutex::new(HashMap::new()),
            ledger,
            live,
            bench_ms: bench_ms.max(1),
        }
    }

    /// A stream on `route` ended cleanly.
    pub fn ended(&self, route: &Route) {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        if !runs.is_empty() {
            runs.remove(&route.reference);
        }
    }

    /// A stream on `route` was cut; benches the route at the [`CUTS_IN_A_ROW`]th in a row.
    /// Whether it did.
    pub fn cut(&self, route: &Route, why: &str) -> bool {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        if runs.len() >= CAPACITY && !runs.contains_key(&route.reference) {
            runs.clear();
        }
        let n = runs.entry(route.reference.clone()).or_default();
        *n += 1;
        if *n < CUTS_IN_A_ROW {
            return false;
        }
        runs.remove(&route.reference);
        drop(runs);
        let until = self.ledger.now_ms() + self.bench_ms;
        let reason = format!("streams cut {CUTS_IN_A_ROW} times in a row ({why})");
        self.live.bench(&route.reference, until, &reason);
        tracing::warn!(target = %route.reference, reason = %reason, "benched a flaky route");
        true
    }
}
