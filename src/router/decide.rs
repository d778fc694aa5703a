//! The failover policy (SPEC 3.4) as one pure function: what a failed attempt means for the
//! request (try another key, another model, give up) and for the candidate (cool down, mark the
//! key). No I/O; the router applies the decision.

use crate::catalog::{Provider, Reset};
use crate::keys::Status;
use crate::ledger::Span;
use crate::lessons::Lesson;
use crate::providers::Failure;

const DAY_MS: i64 = 86_400_000;
/// Cooldowns on a local endpoint stay short: it is a machine on the desk, not a quota.
const LOCAL_COOLDOWN_MS: i64 = 5_000;
/// How long a daily quota rests on a provider with a rolling day when it names no wait.
const ROLLING_DAY_REST_MS: i64 = 3_600_000;

/// Where the request goes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The next key of the same model.
    Key,
    /// The next model.
    Model,
    /// The next model, skipping the rest of this provider's models for this request.
    Provider,
    /// The same key again, once, with what the failure taught applied (a refused field
    /// dropped).
    Again,
    /// Stop: the request itself is at fault; the client gets a 400.
    Refuse,
}

/// What cools down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rest {
    /// This (provider, model, key).
    Model,
    /// The whole key.
    Key,
}

/// What to do about one failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub next: Next,
    /// Cool something down until then (ms), for this reason.
    pub cool: Option<(Rest, i64, String)>,
    /// The key's health as this failure shows it.
    pub key: Option<Status>,
    /// A rate limit, rather than a failure: when every candidate ends like this the client
    /// gets a 429, else a 502.
    pub rate_limited: bool,
    /// What the model taught (SPEC 3.9): remembered for it from now on.
    pub learn: Option<Lesson>,
}

/// The settings the policy reads.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub cooldown_on_429_ms: i64,
    pub cooldown_on_5xx_ms: i64,
}

/// Decide about `failure` of an attempt on `provider` at `now`.
pub fn decide(failure: &Failure, provider: &Provider, policy: &Policy, now: i64) -> Decision {
    let cap = |ms: i64| {
        if provider.local {
            ms.min(LOCAL_COOLDOWN_MS)
        } else {
            ms
        }
        .max(1)
    };
    let plain = |next| Decision {
        next,
        cool: None,
        key: None,
        rate_limited: false,
        learn: None,
    };
    match failure {
        Failure::RateLimited {
            retry_after, daily, ..
        } => {
            let wait = match (retry_after, daily) {
                (Some(d), _) => d.as_millis() as i64,
                (None, true) => match provider.reset {
                    Reset::Midnight(tz) => {
                        let span = Span::Calendar(tz);
                        span.expiry(span.bucket_start(now)) - now
                    }
                    Reset::Rolling => ROLLING_DAY_REST_MS,
                },
                (None, false) => policy.cooldown_on_429_ms,
            };
            let why = if *daily {
                "daily quota exhausted"
            } else {
                "429"
            };
            Decision {
                cool: Some((Rest::Model, now + cap(wait), why.into())),
                rate_limited: true,
                ..plain(Next::Key)
            }
        }
        Failure::Server(reason) => Decision {
            cool: Some((
                Rest::Key,
                now + cap(policy.cooldown_on_5xx_ms),
                reason.clone(),
            )),
            key: Some(Status::Error),
            ..plain(Next::Provider)
        },
        Failure::Denied(reason) => Decision {
            cool: Some((Rest::Model, now + cap(DAY_MS), format!("denied: {reason}"))),
            ..plain(Next::Key)
        },
        Failure::InvalidKey(_) => Decision {
            key: Some(Status::Invalid),
            ..plain(Next::Key)
        },
        // The router switches a retired model off; nothing cools, the key is fine.
        Failure::ModelGone(_)
        | Failure::Retired(_)
        | Failure::BadAnswer(_)
        | Failure::TooLarge(_) => plain(Next::Model),
        Failure::Request(_) => plain(Next::Refuse),
        // A field the answer's meaning does not depend on is dropped and the key tried again;
        // one it does (the messages, the tools) is the client's to fix.
        Failure::UnknownField {
            field, in_messages, ..
        } => match Lesson::from_refused_field(field, *in_messages) {
            Some(Lesson::NoTools) => Decision {
                learn: Some(Lesson::NoTools),
                ..plain(Next::Model)
            },
            Some(lesson) => Decision {
                learn: Some(lesson),
                ..plain(Next::Again)
            },
            None => plain(Next::Refuse),
        },
        Failure::Incapable { tools, .. } => Decision {
            learn: Some(if *tools {
                Lesson::NoTools
            } else {
                Lesson::NoImages
            }),
            ..plain(Next::Model)
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use std::time::Duration;

    const NOW: i64 = 1_700_000_000_000;
    const POLICY: Policy = Policy {
        cooldown_on_429_ms: 90_000,
        cooldown_on_5xx_ms: 60_000,
    };

    fn limited(retry_after: Option<u64>, daily: bool) -> Failure {
        Failure::RateLimited {
            retry_after: retry_after.map(Duration::from_secs),
            daily,
            message: String::new(),
        }
    }

    /// A failure, and what should follow: next step, what rests for how long, the key's
    /// verdict, whether it counts as a rate limit.
    type Row = (Failure, Next, Option<(Rest, i64)>, Option<Status>, bool);

    /// The failover table, row by row.
    #[test]
    fn the_failover_table() {
        let c = Catalog::builtin().unwrap();
        let groq = c.provider("groq").unwrap();
        let rows: Vec<Row> = vec![
            (
                limited(Some(7), false),
                Next::Key,
                Some((Rest::Model, 7_000)),
                None,
                true,
            ),
            (
                limited(None, false),
                Next::Key,
                Some((Rest::Model, 90_000)),
                None,
                true,
            ),
            (
                limited(None, true),
                Next::Key,
                Some((Rest::Model, 3_600_000)),
                None,
                true,
            ),
            (
                Failure::Server("upstream 503".into()),
                Next::Provider,
                Some((Rest::Key, 60_000)),
                Some(Status::Error),
                false,
            ),
            (
                Failure::InvalidKey("x".into()),
                Next::Key,
                None,
                Some(Status::Invalid),
                false,
            ),
            (
                Failure::Denied("x".into()),
                Next::Key,
                Some((Rest::Model, DAY_MS)),
                None,
                false,
            ),
            (Failure::Retired("x".into()), Next::Model, None, None, false),
            (
                Failure::ModelGone("x".into()),
                Next::Model,
                None,
                None,
                false,
            ),
            (
                Failure::BadAnswer("x".into()),
                Next::Model,
                None,
                None,
                false,
            ),
            (
                Failure::TooLarge("x".into()),
                Next::Model,
                None,
                None,
                false,
            ),
            (
                Failure::Request("x".into()),
                Next::Refuse,
                None,
                None,
                false,
            ),
        ];
        for (failure, next, cool, key, rate_limited) in rows {
            assert_eq!(decide(&failure, groq, &POLICY, NOW).learn, None);
            let d = decide(&failure, groq, &POLICY, NOW);
            assert_eq!(d.next, next, "{failure:?}");
            assert_eq!(
                d.cool.as_ref().map(|(r, until, _)| (*r, until - NOW)),
                cool,
                "{failure:?}"
            );
            assert_eq!(d.key, key, "{failure:?}");
            assert_eq!(d.rate_limited, rate_limited, "{failure:?}");
        }
    }

    #[test]
    fn refusals_teach_and_meaning_is_never_stripped() {
        let c = Catalog::builtin().unwrap();
        let groq = c.provider("groq").unwrap();
        let field = |f: &str, in_messages: bool| Failure::UnknownField {
            field: f.into(),
            in_messages,
            message: String::new(),
        };
        let d = decide(&field("top_k", false), groq, &POLICY, NOW);
        assert_eq!(
            (d.next, d.learn, d.cool),
            (Next::Again, Some(Lesson::Drop("top_k".into())), None)
        );
        let d = decide(&field("cache_control", true), groq, &POLICY, NOW);
        assert_eq!(d.next, Next::Again);
        assert_eq!(
            d.learn,
            Some(Lesson::DropInMessages("cache_control".into()))
        );
        for meaning in ["messages", "response_format"] {
            let d = decide(&field(meaning, false), groq, &POLICY, NOW);
            assert_eq!((d.next, d.learn), (Next::Refuse, None), "{meaning}");
        }
        let d = decide(&field("tools", false), groq, &POLICY, NOW);
        assert_eq!((d.next, d.learn), (Next::Model, Some(Lesson::NoTools)));
        let images = Failure::Incapable {
            tools: false,
            message: String::new(),
        };
        let d = decide(&images, groq, &POLICY, NOW);
        assert_eq!((d.next, d.learn), (Next::Model, Some(Lesson::NoImages)));
    }

    #[test]
    fn a_daily_quota_rests_until_the_providers_midnight() {
        let c = Catalog::builtin().unwrap();
        let google = c.provider("google").unwrap();
        let d = decide(&limited(None, true), google, &POLICY, NOW);
        let (_, until, why) = d.cool.unwrap();
        let Reset::Midnight(tz) = google.reset else {
            panic!("Google resets at midnight Pacific")
        };
        assert_eq!(until, crate::ledger::window::midnight(tz, NOW, 1));
        assert_eq!(why, "daily quota exhausted");
    }

    #[test]
    fn local_endpoints_rest_for_seconds_at_most() {
        let mut c = Catalog::builtin().unwrap();
        let local = c.providers.iter_mut().find(|p| p.id == "groq").unwrap();
        local.local = true;
        let local = c.provider("groq").unwrap();
        for f in [
            limited(Some(600), false),
            Failure::Server("x".into()),
            Failure::Denied("x".into()),
        ] {
            let (_, until, _) = decide(&f, local, &POLICY, NOW).cool.unwrap();
            assert_eq!(until - NOW, LOCAL_COOLDOWN_MS, "{f:?}");
        }
    }
}
