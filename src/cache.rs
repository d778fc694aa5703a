//! The exact answer cache (SPEC 2.8), off unless `[cache] enabled = true`.
//!
//! The key is a SHA-256 of the canonical request after translation (so the same question asked
//! on chat completions and on the Messages API is one entry), without what only says how to
//! deliver it (`stream`, `stream_options`), and of the client key's name unless
//! `[cache] shared = true`. The value is the typed answer, so a hit is rendered in whatever
//! dialect asks and streamed when the client asks for a stream. Only whole, successful answers
//! are kept (a stream that broke is not); entries live `ttl` and the cache holds at most
//! `max_bytes` of them (the least recently used go first). It lives in memory: a restart
//! empties it. With `[cluster]`, the router also keeps each answer in Redis and looks there on
//! a miss, so one replica's answer is a hit on every other ([`crate::cluster::shared`]).

use lru::LruCache;
use sha2::{Digest, Sha256};
use std::sync::Mutex;

use crate::chat::{Call, Event, Finish, Message, Request};
use crate::config;

/// A request's place in the cache.
pub type Key = [u8; 32];

/// One kept answer.
#[derive(Clone)]
pub struct Hit {
    pub message: Message,
    /// `provider/model` that first served it.
    pub routed_via: String,
    at_ms: i64,
    size: usize,
}

/// The cache.
pub struct AnswerCache {
    settings: config::Cache,
    inner: Mutex<Inner>,
}

struct Inner {
    entries: LruCache<Key, Hit>,
    bytes: usize,
}

impl AnswerCache {
    pub fn new(settings: config::Cache) -> AnswerCache {
        AnswerCache {
            settings,
            inner: Mutex::new(Inner {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }

    /// The key of `req` from `client`; `None` for what is never cached (several choices).
    pub fn key(&self, req: &Request, client: &str) -> Option<Key> {
        let mut map = req.to_map();
        if map
            .get("n")
            .and_then(serde_json::Value::as_u64)
            .is_some_and(|n| n > 1)
        {
            return None;
        }
        map.remove("stream");
        map.remove("stream_options");
        let mut h = Sha256::new();
        h.update(if self.settings.shared { "*" } else { client }.as_bytes());
        h.update([0]);
        h.update(serde_json::Value::Object(map).to_string().as_bytes());
        Some(h.finalize().into())
    }

    /// The answer kept for `key`, if it is still fresh.
    pub fn get(&self, key: &Key, now_ms: i64) -> Option<Hit> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let ttl = self.settings.ttl.as_millis() as i64;
        let fresh = inner.entries.get(key).map(|h| now_ms - h.at_ms < ttl)?;
        if fresh {
            return inner.entries.get(key).cloned();
        }
        if let Some(old) = inner.entries.pop(key) {
            inner.bytes -= old.size;
        }
        None
    }

    /// Keep a whole, successful answer; `false` when it is too large to keep.
    pub fn put(&self, key: Key, message: Message, routed_via: &str, now_ms: i64) -> bool {
        let size = 256
            + message.text.len()
            + message.reasoning.len()
            + message
                .calls
                .iter()
                .map(|c| c.id.len() + c.name.len() + c.arguments.len() + 64)
                .sum::<usize>();
        if size > self.settings.max_bytes {
            return false;
        }
        let hit = Hit {
            message,
            routed_via: routed_via.to_string(),
            at_ms: now_ms,
            size,
        };
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = inner.entries.put(key, hit) {
            inner.bytes -= old.size;
        }
        inner.bytes += size;
        while inner.bytes > self.settings.max_bytes {
            match inner.entries.pop_lru() {
                Some((_, old)) => inner.bytes -= old.size,
                None => break,
            }
        }
        true
    }

    /// How long entries live.
    pub fn ttl(&self) -> std::time::Duration {
        self.settings.ttl
    }

    /// An answer another replica cached (at `at_ms`): kept here too, and the hit it makes.
    pub fn adopt(&self, key: Key, message: Message, routed_via: String, at_ms: i64) -> Hit {
        self.put(key, message.clone(), &routed_via, at_ms);
        Hit {
            message,
            routed_via,
            at_ms,
            size: 0,
        }
    }

    /// Bytes held (for tests and status).
    pub fn bytes(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).bytes
    }
}

/// Builds the whole message of a streamed answer from its events.
#[derive(Default)]
pub struct Collector {
    text: String,
    reasoning: String,
    calls: Vec<Call>,
    finish: Option<Finish>,
    usage: Option<crate::chat::Usage>,
    /// Tool calls came with a gap in their indexes: not an answer worth replaying.
    broken: bool,
}

impl Collector {
    pub fn add(&mut self, e: &Event) {
        match e {
            Event::Text(t) => self.text.push_str(t),
            Event::Reasoning(t) => self.reasoning.push_str(t),
            Event::ToolCall(d) => {
                let i = d.index as usize;
                if i > self.calls.len() {
                    self.broken = true;
                    return;
                }
                if i == self.calls.len() {
                    self.calls.push(Call {
                        id: String::new(),
                        name: String::new(),
                        arguments: String::new(),
                        extra: None,
                    });
                }
                let c = &mut self.calls[i];
                if let Some(id) = &d.id {
                    c.id.clone_from(id);
                }
                if let Some(n) = &d.name {
                    c.name.push_str(n);
                }
                c.arguments.push_str(&d.arguments);
                if d.extra.is_some() {
                    c.extra.clone_from(&d.extra);
                }
            }
            Event::Finish(f) => self.finish = Some(*f),
            Event::Usage(u) => self.usage = Some(*u),
        }
    }

    /// The message, if the stream finished.
    pub fn message(self, model: &str) -> Option<Message> {
        if self.broken {
            return None;
        }
        Some(Message {
            model: model.to_string(),
            text: self.text,
            reasoning: self.reasoning,
            calls: self.calls,
            finish: self.finish?,
            usage: self.usage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cache(max_bytes: usize, shared: bool) -> AnswerCache {
        AnswerCache::new(config::Cache {
            enabled: true,
            ttl: Duration::from_secs(60),
            max_bytes,
            shared,
        })
    }

    fn req(body: &str) -> Request {
        Request::parse(body.as_bytes()).unwrap()
    }

    fn message(text: &str) -> Message {
        Message {
            model: "m".into(),
            text: text.into(),
            reasoning: String::new(),
            calls: Vec::new(),
            finish: Finish::Stop,
            usage: None,
        }
    }

    #[test]
    fn the_key_ignores_how_the_answer_is_delivered_but_not_who_asks() {
        let c = cache(1 << 20, false);
        let a = req(r#"{"model":"x","messages":[{"role":"user","content":"hi"}]}"#);
        let s = req(
            r#"{"model":"x","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#,
        );
        let other = req(r#"{"model":"x","messages":[{"role":"user","content":"hi!"}]}"#);
        assert_eq!(c.key(&a, "k"), c.key(&s, "k"));
        assert_ne!(c.key(&a, "k"), c.key(&other, "k"));
        assert_ne!(c.key(&a, "k"), c.key(&a, "j"));
        let shared = cache(1 << 20, true);
        assert_eq!(shared.key(&a, "k"), shared.key(&a, "j"));
        let n = req(r#"{"model":"x","n":2,"messages":[{"role":"user","content":"hi"}]}"#);
        assert_eq!(c.key(&n, "k"), None);
    }

    #[test]
    fn entries_expire_and_the_byte_bound_holds() {
        let c = cache(1000, false);
        c.put([1; 32], message("a"), "p/m", 0);
        assert!(c.get(&[1; 32], 59_999).is_some());
        assert!(c.get(&[1; 32], 60_000).is_none());
        assert_eq!(c.bytes(), 0);
        for i in 0..10u8 {
            c.put([i; 32], message(&"x".repeat(100)), "p/m", 0);
        }
        assert!(c.bytes() <= 1000);
        assert!(c.get(&[9; 32], 1).is_some(), "the newest stays");
        assert!(c.get(&[0; 32], 1).is_none(), "the oldest went first");
        // One answer larger than the whole cache is not kept.
        c.put([42; 32], message(&"y".repeat(5000)), "p/m", 0);
        assert!(c.get(&[42; 32], 1).is_none());
    }

    #[test]
    fn a_stream_is_collected_into_its_message_only_when_it_finished() {
        let mut col = Collector::default();
        for e in message("hello").events() {
            col.add(&e);
        }
        assert_eq!(col.message("m").unwrap().text, "hello");
        let mut cut = Collector::default();
        cut.add(&Event::Text("half".into()));
        assert!(cut.message("m").is_none());
        // A call at index 1 without one at 0: never kept, even once the stream finished.
        let mut gap = Collector::default();
        gap.add(&Event::ToolCall(crate::chat::CallDelta {
            index: 1,
            id: Some("c".into()),
            name: Some("f".into()),
            arguments: "{}".into(),
            extra: None,
        }));
        gap.add(&Event::Finish(Finish::ToolCalls));
        assert!(gap.message("m").is_none());
    }
}
