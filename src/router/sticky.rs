//! Sticky sessions: a conversation keeps the model that answered it (SPEC 3.5).
//!
//! A bounded map from conversation identity to the model that last served it. Entries expire
//! `ttl` after their last turn; when the map is full the stalest entry goes, in constant time
//! (an LRU list: every turn is a `put`, so the least recently put is the stalest), since
//! clients fill the map with `X-Session-Id`s of their choosing.

use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::Mutex;

/// Conversation → (model reference, last turn in ms).
pub struct Sticky {
    map: Mutex<LruCache<String, (String, i64)>>,
    ttl_ms: i64,
}

impl Sticky {
    pub fn new(ttl_ms: i64, capacity: usize) -> Sticky {
        Sticky {
            map: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
            ttl_ms,
        }
    }

    /// The conversation identity: the session header if sent, else the client key plus the
    /// hash of the system prompt and first user message.
    pub fn identity(client: &str, session: Option<&str>, conversation: u64) -> String {
        match session {
            Some(s) => format!("s\u{1f}{client}\u{1f}{s}"),
            None => format!("c\u{1f}{client}\u{1f}{conversation:x}"),
        }
    }

    /// The model this conversation is on, if its last turn is recent enough.
    pub fn get(&self, id: &str, now_ms: i64) -> Option<String> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.peek(id)
            .filter(|(_, at)| now_ms - at < self.ttl_ms)
            .map(|(m, _)| m.clone())
    }

    /// Remember that `model` served this conversation now.
    pub fn put(&self, id: String, model: &str, now_ms: i64) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.put(id, (model.to_string(), now_ms));
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_ttl_and_stays_bounded() {
        let s = Sticky::new(1_000, 3);
        s.put("a".into(), "p/1", 0);
        assert_eq!(s.get("a", 999).as_deref(), Some("p/1"));
        assert_eq!(s.get("a", 1_000), None);
        s.put("b".into(), "p/2", 10);
        s.put("c".into(), "p/3", 20);
        s.put("d".into(), "p/4", 30);
        assert_eq!(s.len(), 3);
        assert_eq!(s.get("a", 30), None, "the stalest went");
        assert_eq!(s.get("d", 30).as_deref(), Some("p/4"));
        s.put("b".into(), "p/5", 40);
        s.put("e".into(), "p/6", 50);
        assert_eq!(s.get("c", 50), None, "a new turn made b fresher than c");
        assert_eq!(s.get("b", 50).as_deref(), Some("p/5"));
    }

    #[test]
    fn identities_differ_by_client_and_session() {
        assert_ne!(
            Sticky::identity("x", None, 1),
            Sticky::identity("y", None, 1)
        );
        assert_ne!(
            Sticky::identity("x", Some("s"), 1),
            Sticky::identity("x", None, 1)
        );
    }
}
