//! Fair share of capped models between client keys (SPEC 3.8, `routing.fairness =
//! "weighted"`): while several keys want a model with a daily request cap, none takes more than
//! its weighted share of that day's cap while another key that has used less of its share still
//! asks (max-min fairness by weight). A key alone on the gateway may use everything, and a
//! share nobody asks for goes to whoever does.
//!
//! A key *asks* for a model when one of its requests could use it, and keeps asking for
//! [`ASKING_MS`] after that. Use is counted per (model, key) in the model's own day (its
//! provider's reset), one request per attempt sent, like the provider counts it. A model
//! without a daily cap of its own shares its provider account's (OpenRouter's free models:
//! `provider/*`). In memory: a restart starts the day's shares over.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::ledger::{Span, Window};

/// How long a key counts as asking for a model after its last request that could use it.
pub const ASKING_MS: i64 = 15 * 60_000;
/// Models (or accounts) tracked at most; past that the map starts over (bounded memory).
const CAPACITY: usize = 4_096;

/// One key's use of one capped model.
#[derive(Default)]
struct Share {
    weight: u32,
    last_ask_ms: i64,
    /// Requests sent today (the model's day).
    used: Window,
}

#[derive(Default)]
pub struct Fair {
    /// Capped model (or `provider/*` account) → client key → its share.
    models: Mutex<HashMap<String, HashMap<String, Share>>>,
}

impl Fair {
    /// `client` (of `weight`) asks for `model`, whose daily cap across its quota pools is `cap`
    /// (the day is `day`): whether it may take one more request now (then that request is
    /// counted at once, under the same lock, so two requests cannot both pass just below a
    /// share; [`Fair::uncount`] takes it back if it is not sent); else when it may.
    pub fn check(
        &self,
        model: &str,
        client: &str,
        weight: u32,
        cap: u64,
        day: Span,
        now: i64,
    ) -> Result<(), i64> {
        let mut models = self.models.lock().unwrap_or_else(|e| e.into_inner());
        if models.len() >= CAPACITY && !models.contains_key(model) {
            models.clear();
        }
        let shares = models.entry(model.to_string()).or_default();
        {
            let me = shares.entry(client.to_string()).or_default();
            me.weight = weight.max(1);
            me.last_ask_ms = now;
        }
        shares.retain(|_, s| {
            s.used.prune(day, now);
            now - s.last_ask_ms < ASKING_MS || !s.used.is_empty()
        });
        let asking: Vec<(&String, &Share)> = shares
            .iter()
            .filter(|(_, s)| now - s.last_ask_ms < ASKING_MS)
            .collect();
        if asking.len() <= 1 {
            drop(asking);
            if let Some(me) = shares.get_mut(client) {
                me.used.add(day, now, 1, 0);
            }
            return Ok(());
        }
        let total: u64 = asking.iter().map(|(_, s)| u64::from(s.weight)).sum();
        let share_of = |s: &Share| cap as f64 * f64::from(s.weight) / total as f64;
        let used = |s: &Share| s.used.totals().0 as f64;
        let Some(me) = shares.get(client) else {
            return Ok(());
        };
        if used(me) < share_of(me) {
            drop(asking);
            if let Some(me) = shares.get_mut(client) {
                me.used.add(day, now, 1, 0);
            }
            return Ok(());
        }
        // Over its share: held only while another asking key is below its own.
        let waiting = asking
            .iter()
            .filter(|(name, s)| name.as_str() != client && used(s) < share_of(s))
            .map(|(_, s)| s.last_ask_ms + ASKING_MS)
            .max();
        match waiting {
            None => {
                if let Some(me) = shares.get_mut(client) {
                    me.used.add(day, now, 1, 0);
                }
                Ok(())
            }
            Some(stops_asking) => {
                let day_ends = day.expiry(day.bucket_start(now));
                Err(stops_asking.min(day_ends).max(now + 1))
            }
        }
    }

    /// A request [`Fair::check`] let through at `at` was not sent after all (the ledger said
    /// no): it no longer counts.
    pub fn uncount(&self, model: &str, client: &str, day: Span, at: i64) {
        let mut models = self.models.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = models.get_mut(model).and_then(|m| m.get_mut(client)) {
            s.used.adjust(day.bucket_start(at), -1, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Span = Span::ROLLING_DAY;

    /// Serve `asks` (client, weight) in turn against a cap; how many each got.
    fn run(fair: &Fair, cap: u64, asks: &[(&str, u32)], rounds: usize) -> HashMap<String, u64> {
        let mut got: HashMap<String, u64> = HashMap::new();
        let mut sent = 0;
        for r in 0..rounds {
            for (c, w) in asks {
                let now = 1_000 + (r as i64) * 10;
                if sent < cap && fair.check("m", c, *w, cap, DAY, now).is_ok() {
                    *got.entry(c.to_string()).or_default() += 1;
                    sent += 1;
                }
            }
        }
        got
    }

    #[test]
    fn a_key_alone_takes_everything() {
        let got = run(&Fair::default(), 50, &[("batch", 1)], 100);
        assert_eq!(got["batch"], 50);
    }

    #[test]
    fn keys_that_ask_share_by_weight() {
        // The batch job asks twice as often as the person; weights 1 : 3.
        let fair = Fair::default();
        let got = run(&fair, 40, &[("batch", 1), ("batch", 1), ("person", 3)], 200);
        assert_eq!(got["person"], 30, "{got:?}");
        assert_eq!(got["batch"], 10, "{got:?}");
    }

    #[test]
    fn a_share_nobody_asks_for_goes_to_who_asks() {
        let fair = Fair::default();
        // The person asked once at the start of the day, then went quiet.
        assert!(fair.check("m", "person", 1, 10, DAY, 0).is_ok());
        let mut batch = 0;
        let mut held_until = None;
        for i in 0..20 {
            match fair.check("m", "batch", 1, 10, DAY, 1_000 + i) {
                Ok(()) => batch += 1,
                Err(at) => held_until = Some(at),
            }
        }
        assert_eq!(
            batch, 5,
            "its share while the person still counts as asking"
        );
        assert_eq!(held_until, Some(ASKING_MS));
        // The person stopped asking: the batch job may use the rest.
        assert!(fair.check("m", "batch", 1, 10, DAY, ASKING_MS + 1).is_ok());
    }

    #[test]
    fn a_request_not_sent_no_longer_counts() {
        let fair = Fair::default();
        assert!(fair.check("m", "person", 1, 2, DAY, 0).is_ok());
        assert!(fair.check("m", "batch", 1, 2, DAY, 10).is_ok());
        // At its share (1 of 2) while the person, at 1, is not below its own: let through.
        assert!(fair.check("m", "batch", 1, 2, DAY, 20).is_ok());
        fair.uncount("m", "batch", DAY, 20);
        fair.uncount("m", "person", DAY, 0);
        // The person's request was not sent: it is below its share, so the batch job waits.
        assert!(fair.check("m", "batch", 1, 2, DAY, 30).is_err());
    }
}
