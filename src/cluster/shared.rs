//! In-flight `Idempotency-Key`s and the answer cache, shared by the replicas through Redis
//! (SPEC 2.8 and 5.1).
//!
//! **Idempotency.** Before a replica runs a request that carries an `Idempotency-Key`, it
//! claims the key in Redis (`{prefix}:idem:<h>:run`, `h` = SHA-256 of the client key's name
//! and the Idempotency-Key) with one script that also looks for a kept answer
//! (`{prefix}:idem:<h>`): one round trip, paid only by requests with the header. The claim
//! holds the replica's id and the request's fingerprint, so another replica refuses a
//! different body at once (`422`) and makes the same body wait: it polls every
//! [`POLL`] until the answer appears (a replay) or the claim is gone without one (the run
//! failed or its answer was too large to keep: it claims the key and runs the request
//! itself, as a retry does on one replica). The claim lives [`CLAIM_TTL`] and is renewed
//! every [`RENEW`] while the run goes on, so a replica killed while running frees the key
//! within [`CLAIM_TTL`]. A kept answer is written to Redis before the claim is released; it
//! stays there 24 hours when it is at most [`SMALL_ANSWER`] bytes, else [`LARGE_ANSWER_TTL`]
//! (enough for the duplicates in flight and quick retries without filling Redis with large
//! answers; the store keeps every answer 24 hours, and PostgreSQL is shared by all replicas).
//!
//! **The answer cache.** A put is also written to `{prefix}:cache:<cache key in hex>` with
//! the cache's TTL (by the background writer, off the request path); a local miss looks
//! there before going upstream (one round trip, only when `[cache] enabled`).
//!
//! While Redis cannot be reached (the ledger's mode is `Alone`), neither pays a round trip:
//! idempotency and the cache are this replica's own, as with one replica.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;
use std::time::Duration;

use super::{Cluster, Mode, Op, redact_url, unreachable};
use crate::chat::{Call, Finish, Message, Usage};
use crate::record::Kept;

/// How long a claim holds without being renewed: a replica killed mid-run frees the key
/// after this.
pub const CLAIM_TTL: Duration = Duration::from_secs(30);
/// How often a running claim is renewed.
pub const RENEW: Duration = Duration::from_secs(10);
/// How often a replica waiting for another's answer looks again.
pub const POLL: Duration = Duration::from_millis(100);
/// Answers up to this size stay in Redis as long as the store keeps them (24 hours).
pub const SMALL_ANSWER: usize = 64 << 10;
/// How long larger answers stay in Redis.
pub const LARGE_ANSWER_TTL: Duration = Duration::from_secs(600);

/// Look for a kept answer, else claim the key, else say who holds it.
/// KEYS: answer, claim. ARGV: claim value, claim TTL (ms).
static CLAIM: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local a = redis.call('GET', KEYS[1])
if a then return {1, a} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end
return {3, redis.call('GET', KEYS[2]) or ''}
",
    )
});

/// Keep the answer (when there is one), then release the claim if it is still this run's.
/// KEYS: answer, claim. ARGV: claim value, answer ('' for none), answer TTL (ms).
static DONE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if ARGV[2] ~= '' then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
",
    )
});

/// Extend the claim if it is still this run's. KEYS: claim. ARGV: claim value, TTL (ms).
static RENEW_CLAIM: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
",
    )
});

/// What the shared keeper says of an Idempotency-Key.
#[derive(Debug)]
pub enum Idem {
    /// Another replica kept this answer.
    Kept(Kept),
    /// This replica holds the key now: run the request, then [`Cluster::idem_done`].
    Run(Held),
    /// Another replica runs a request with this fingerprint.
    Running(Vec<u8>),
    /// Redis cannot be reached (or refused): decide on this replica alone.
    Local,
}

/// A claim on an Idempotency-Key this replica holds.
#[derive(Debug, Clone)]
pub struct Held {
    answer: String,
    claim: String,
    value: String,
}

impl Cluster {
    fn idem_keys(&self, client: &str, key: &str) -> (String, String) {
        let mut h = Sha256::new();
        h.update(client.as_bytes());
        h.update([0]);
        h.update(key.as_bytes());
        let h = hex::encode(h.finalize());
        let answer = format!("{}:idem:{h}", self.prefix);
        let claim = format!("{answer}:run");
        (answer, claim)
    }

    fn shared_now(&self) -> bool {
        self.lock().mode == Mode::Shared
    }

    /// Redis failed a command: alone from now on when it cannot be reached, else say so.
    fn failed(&self, e: &redis::RedisError, what: &str) {
        if unreachable(e) {
            self.alone(self.clock.now_ms(), e);
        } else {
            tracing::error!(error = %redact_url(&e.to_string()), "Redis refused {what}");
        }
    }

    /// Claim `key` of `client` for a request with `fingerprint`, or learn who answered or
    /// runs it (one round trip).
    pub async fn idem_claim(&self, client: &str, key: &str, fingerprint: &[u8]) -> Idem {
        if !self.shared_now() {
            tracing::debug!("Idempotency-Key checked on this replica only: Redis unreachable");
            return Idem::Local;
        }
        let (answer, claim) = self.idem_keys(client, key);
        let value = format!("{}:{}", self.replica, hex::encode(fingerprint));
        let mut conn = self.conn.clone();
        let got: Result<Vec<redis::Value>, _> = CLAIM
            .key(&answer)
            .key(&claim)
            .arg(&value)
            .arg(CLAIM_TTL.as_millis() as u64)
            .invoke_async(&mut conn)
            .await;
        let got = match got {
            Ok(v) => v,
            Err(e) => {
                self.failed(&e, "an Idempotency-Key claim");
                tracing::warn!(
                    "Idempotency-Key checked on this replica only: Redis did not answer the claim"
                );
                return Idem::Local;
            }
        };
        let bytes = |i: usize| match got.get(i) {
            Some(redis::Value::BulkString(b)) => Some(b.as_slice()),
            _ => None,
        };
        match got.first() {
            Some(redis::Value::Int(1)) => match bytes(1).and_then(decode_kept) {
                Some(k) => Idem::Kept(k),
                None => {
                    tracing::error!("an answer kept in Redis for an Idempotency-Key is unreadable");
                    Idem::Local
                }
            },
            Some(redis::Value::Int(2)) => Idem::Run(Held {
                answer,
                claim,
                value,
            }),
            _ => {
                let holder = bytes(1).unwrap_or_default();
                let fp = holder
                    .iter()
                    .position(|b| *b == b':')
                    .and_then(|i| hex::decode(&holder[i + 1..]).ok())
                    .unwrap_or_default();
                Idem::Running(fp)
            }
        }
    }

    /// Keep the claim alive a while longer; `false` when it is no longer this run's (or Redis
    /// is away).
    pub async fn idem_renew(&self, held: &Held) -> bool {
        let mut conn = self.conn.clone();
        let renewed: Result<i64, _> = RENEW_CLAIM
            .key(&held.claim)
            .arg(&held.value)
            .arg(CLAIM_TTL.as_millis() as u64)
            .invoke_async(&mut conn)
            .await;
        match renewed {
            Ok(n) => n == 1,
            Err(e) => {
                self.failed(&e, "an Idempotency-Key renewal");
                false
            }
        }
    }

    /// The run ended: keep its answer for every replica (when there is one) until `keep_ms`
    /// after it was asked, then release the claim.
    pub async fn idem_done(&self, held: &Held, kept: Option<&Kept>, keep_ms: i64) {
        let (value, ttl_ms) = match kept {
            Some(k) => {
                let left = keep_ms.saturating_sub(self.clock.now_ms().saturating_sub(k.at_ms));
                let ttl = if k.body.len() <= SMALL_ANSWER {
                    left
                } else {
                    left.min(LARGE_ANSWER_TTL.as_millis() as i64)
                };
                (encode_kept(k), ttl.max(1))
            }
            None => (Vec::new(), 1),
        };
        let mut conn = self.conn.clone();
        let done: Result<i64, _> = DONE
            .key(&held.answer)
            .key(&held.claim)
            .arg(&held.value)
            .arg(value)
            .arg(ttl_ms)
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = done {
            self.failed(&e, "an Idempotency-Key answer");
            tracing::warn!(
                "an Idempotency-Key answer was not shared with the other replicas (its claim frees in {} s)",
                CLAIM_TTL.as_secs()
            );
        }
    }

    fn cache_key(&self, key: &[u8; 32]) -> String {
        format!("{}:cache:{}", self.prefix, hex::encode(key))
    }

    /// The answer another replica cached under `key`: the message, what served it, when.
    pub async fn cache_get(&self, key: &[u8; 32]) -> Option<(Message, String, i64)> {
        if !self.shared_now() {
            return None;
        }
        let mut conn = self.conn.clone();
        let got: Result<Option<Vec<u8>>, _> = redis::cmd("GET")
            .arg(self.cache_key(key))
            .query_async(&mut conn)
            .await;
        match got {
            Ok(Some(b)) => {
                let c: Cached = serde_json::from_slice(&b).ok()?;
                Some((c.message.into(), c.routed_via, c.at_ms))
            }
            Ok(None) => None,
            Err(e) => {
                self.failed(&e, "an answer cache read");
                None
            }
        }
    }

    /// Cache `message` for every replica for `ttl` (written in the background).
    pub fn cache_put(
        &self,
        key: &[u8; 32],
        message: &Message,
        routed_via: &str,
        at_ms: i64,
        ttl: Duration,
    ) {
        if !self.shared_now() {
            return;
        }
        let cached = Cached {
            message: Msg::from(message),
            routed_via: routed_via.to_string(),
            at_ms,
        };
        let Ok(value) = serde_json::to_vec(&cached) else {
            return;
        };
        self.send(Op::Set {
            key: self.cache_key(key),
            value,
            ttl_ms: (ttl.as_millis() as i64).max(1),
        });
    }
}

/// A kept answer as Redis holds it: a JSON head, a newline, then the body's bytes.
fn encode_kept(k: &Kept) -> Vec<u8> {
    let head = serde_json::json!({
        "fingerprint": hex::encode(&k.fingerprint),
        "status": k.status,
        "headers": k.headers,
        "at_ms": k.at_ms,
    });
    let mut out = head.to_string().into_bytes();
    out.push(b'\n');
    out.extend_from_slice(&k.body);
    out
}

fn decode_kept(b: &[u8]) -> Option<Kept> {
    #[derive(Deserialize)]
    struct Head {
        fingerprint: String,
        status: u16,
        headers: Vec<(String, String)>,
        at_ms: i64,
    }
    let nl = b.iter().position(|c| *c == b'\n')?;
    let head: Head = serde_json::from_slice(&b[..nl]).ok()?;
    Some(Kept {
        fingerprint: hex::decode(head.fingerprint).ok()?,
        status: head.status,
        headers: head.headers,
        body: b[nl + 1..].to_vec(),
        at_ms: head.at_ms,
    })
}

/// An answer cache entry as Redis holds it (its own shape: the canonical types stay free of
/// serde, and this format is versioned by its fields).
#[derive(Serialize, Deserialize)]
struct Cached {
    message: Msg,
    routed_via: String,
    at_ms: i64,
}

#[derive(Serialize, Deserialize)]
struct Msg {
    model: String,
    text: String,
    reasoning: String,
    calls: Vec<SharedCall>,
    finish: String,
    usage: Option<SharedUsage>,
}

#[derive(Serialize, Deserialize)]
struct SharedCall {
    id: String,
    name: String,
    arguments: String,
    extra: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
struct SharedUsage {
    input: u64,
    output: u64,
    cached: Option<u64>,
    reasoning: Option<u64>,
}

impl From<&Message> for Msg {
    fn from(m: &Message) -> Msg {
        Msg {
            model: m.model.clone(),
            text: m.text.clone(),
            reasoning: m.reasoning.clone(),
            calls: m
                .calls
                .iter()
                .map(|c| SharedCall {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    arguments: c.arguments.clone(),
                    extra: c.extra.clone(),
                })
                .collect(),
            finish: m.finish.as_openai().to_string(),
            usage: m.usage.map(|u| SharedUsage {
                input: u.input,
                output: u.output,
                cached: u.cached,
                reasoning: u.reasoning,
            }),
        }
    }
}

impl From<Msg> for Message {
    fn from(m: Msg) -> Message {
        Message {
            model: m.model,
            text: m.text,
            reasoning: m.reasoning,
            calls: m
                .calls
                .into_iter()
                .map(|c| Call {
                    id: c.id,
                    name: c.name,
                    arguments: c.arguments,
                    extra: c.extra,
                })
                .collect(),
            finish: Finish::from_openai(&m.finish),
            usage: m.usage.map(|u| Usage {
                input: u.input,
                output: u.output,
                cached: u.cached,
                reasoning: u.reasoning,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_answer_reads_back_whole_and_garbage_reads_as_nothing() {
        let k = Kept {
            fingerprint: vec![1, 2, 255],
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            body: b"data: {\"a\":1}\n\ndata: [DONE]\n\n\xff".to_vec(),
            at_ms: 42,
        };
        assert_eq!(decode_kept(&encode_kept(&k)), Some(k));
        assert_eq!(decode_kept(b""), None);
        assert_eq!(decode_kept(b"{\"status\":1}\nbody"), None);
        assert_eq!(decode_kept(b"not json\n"), None);
    }

    #[test]
    fn a_cached_message_reads_back_whole() {
        let m = Message {
            model: "m".into(),
            text: "hi".into(),
            reasoning: "because".into(),
            calls: vec![Call {
                id: "c1".into(),
                name: "f".into(),
                arguments: "{\"x\":1}".into(),
                extra: Some(serde_json::json!({"google": {"thought_signature": "s"}})),
            }],
            finish: Finish::ToolCalls,
            usage: Some(Usage {
                input: 3,
                output: 4,
                cached: Some(1),
                reasoning: None,
            }),
        };
        let text = serde_json::to_vec(&Msg::from(&m)).unwrap();
        let back: Msg = serde_json::from_slice(&text).unwrap();
        assert_eq!(Message::from(back), m);
    }
}
