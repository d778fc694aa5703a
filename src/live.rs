//! What the running server knows, in memory: the catalog and the chain (one snapshot, replaced
//! whole), provider keys with their health, and client keys.
//!
//! Only state lives here, no loading: the operations layer (`ops`) fills it from the store and
//! the config, at start, after every change it makes, and when another process (the CLI)
//! commits to the database. Readers take a snapshot and keep it for the request, so a reload
//! in the middle of one never mixes two chains.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use crate::catalog::Catalog;
use crate::catalog::chain::Link;
use crate::keys::{ClientKeys, KeyRing};
use crate::lessons::{Lesson, Lessons};

/// A catalog and the chain built from it, consistent with each other.
pub struct Snapshot {
    pub catalog: Arc<Catalog>,
    pub chain: Vec<Link>,
}

pub struct Live {
    snapshot: RwLock<Arc<Snapshot>>,
    pub keys: KeyRing,
    pub clients: ClientKeys,
    /// Models a provider retired since the last save: (reference, why), to persist.
    retired: Mutex<Vec<(String, String)>>,
    /// What upstreams taught about models (SPEC 3.9), by model reference; replaced whole.
    lessons: RwLock<Arc<HashMap<String, Arc<Lessons>>>>,
    /// Lessons learned since the last save: (reference, lesson, the upstream's words).
    learned: Mutex<Vec<(String, Lesson, String)>>,
    /// Routes whose streams kept breaking, tried last until then (ms): reference → (until, why).
    benched: RwLock<HashMap<String, (i64, String)>>,
}

impl Live {
    /// Empty keys and an empty chain over `catalog`, until the first load.
    pub fn new(catalog: Arc<Catalog>) -> Live {
        Live {
            snapshot: RwLock::new(Arc::new(Snapshot {
                catalog,
                chain: Vec::new(),
            })),
            keys: KeyRing::default(),
            clients: ClientKeys::default(),
            retired: Mutex::new(Vec::new()),
            lessons: RwLock::new(Arc::new(HashMap::new())),
            learned: Mutex::new(Vec::new()),
            benched: RwLock::new(HashMap::new()),
        }
    }

    /// The current catalog and chain.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_snapshot(&self, snapshot: Snapshot) {
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
    }

    /// A provider says it retired `model`: off at once (a new snapshot with its link off and
    /// marked), and queued for the store. Whether this is news.
    pub fn retire(&self, model: &str, why: &str) -> bool {
        let mut slot = self.snapshot.write().unwrap_or_else(|e| e.into_inner());
        let Some(pos) = slot
            .chain
            .iter()
            .position(|l| l.model == model && l.retired.is_none())
        else {
            return false;
        };
        let mut chain = slot.chain.clone();
        chain[pos].enabled = false;
        chain[pos].retired = Some(why.to_string());
        *slot = Arc::new(Snapshot {
            catalog: Arc::clone(&slot.catalog),
            chain,
        });
        drop(slot);
        self.retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((model.to_string(), why.to_string()));
        true
    }

    /// Retirements not yet saved.
    pub fn take_retired(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.retired.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Retirements that could not be written: kept for the next try.
    pub fn keep_retired(&self, rows: Vec<(String, String)>) {
        self.retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(rows);
    }
}

impl Live {
    /// What upstreams taught about `model`, if anything.
    pub fn lessons(&self, model: &str) -> Option<Arc<Lessons>> {
        let all = self.lessons.read().unwrap_or_else(|e| e.into_inner());
        if all.is_empty() {
            return None;
        }
        all.get(model).cloned()
    }

    /// An upstream taught `lesson` about `model`: in force at once, queued for the store.
    /// Whether it is news.
    pub fn learn(&self, model: &str, lesson: Lesson, why: &str) -> bool {
        let mut slot = self.lessons.write().unwrap_or_else(|e| e.into_inner());
        let mut lessons = slot.get(model).map(|l| (**l).clone()).unwrap_or_default();
        if !lessons.add(lesson.clone(), why) {
            return false;
        }
        let mut all = (**slot).clone();
        all.insert(model.to_string(), Arc::new(lessons));
        *slot = Arc::new(all);
        drop(slot);
        self.learned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((model.to_string(), lesson, why.to_string()));
        true
    }

    /// Lessons not yet saved.
    pub fn take_learned(&self) -> Vec<(String, Lesson, String)> {
        std::mem::take(&mut *self.learned.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Lessons that could not be written: kept for the next try.
    pub fn keep_learned(&self, rows: Vec<(String, Lesson, String)>) {
        self.learned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(rows);
    }

    /// Replace every lesson (loaded from the store).
    pub fn set_lessons(&self, rows: Vec<(String, Lesson, String)>) {
        let mut all: HashMap<String, Lessons> = HashMap::new();
        for (model, lesson, why) in rows {
            all.entry(model).or_default().add(lesson, &why);
        }
        let all = all.into_iter().map(|(m, l)| (m, Arc::new(l))).collect();
        *self.lessons.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(all);
    }
}

impl Live {
    /// Try `model` last until `until_ms` (its streams kept breaking).
    pub fn bench(&self, model: &str, until_ms: i64, why: &str) {
        // One entry per model of the catalog at most: nothing to prune.
        let mut b = self.benched.write().unwrap_or_else(|e| e.into_inner());
        b.insert(model.to_string(), (until_ms, why.to_string()));
    }

    /// Until when and why `model` is benched, if it is at `now_ms`.
    pub fn benched(&self, model: &str, now_ms: i64) -> Option<(i64, String)> {
        let b = self.benched.read().unwrap_or_else(|e| e.into_inner());
        if b.is_empty() {
            return None;
        }
        b.get(model).filter(|(until, _)| *until > now_ms).cloned()
    }
}
