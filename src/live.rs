//! What the running server knows, in memory: the catalog and the chain (one snapshot, replaced
//! whole), provider keys with their health, and client keys.
//!
//! Only state lives here, no loading: the operations layer (`ops`) fills it from the store and
//! the config, at start, after every change it makes, and when another process (the CLI)
//! commits to the database. Readers take a snapshot and keep it for the request, so a reload
//! in the middle of one never mixes two chains.

use std::sync::{Arc, Mutex, RwLock};

use crate::catalog::Catalog;
use crate::catalog::chain::Link;
use crate::keys::{ClientKeys, KeyRing};

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
}
