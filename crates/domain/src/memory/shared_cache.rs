use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::ports::{CacheEntry, Expect, SharedCache, StoreError};

/// A shared cache in a mutex-guarded map.
#[derive(Debug, Default)]
pub struct MemorySharedCache {
    entries: Mutex<BTreeMap<String, CacheEntry>>,
}

impl MemorySharedCache {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl SharedCache for MemorySharedCache {
    async fn get(&self, name: &str, now: DateTime<Utc>) -> Result<Option<CacheEntry>, StoreError> {
        Ok(self
            .entries
            .lock()
            .expect("cache lock")
            .get(name)
            .filter(|e| e.expires_at > now)
            .cloned())
    }

    async fn put(
        &self,
        name: &str,
        value: String,
        expires_at: DateTime<Utc>,
        expect: Expect,
        now: DateTime<Utc>,
    ) -> Result<CacheEntry, StoreError> {
        let mut entries = self.entries.lock().expect("cache lock");
        let current = entries.get(name);
        let ok = match (expect, current) {
            (Expect::Absent, None) => true,
            (Expect::Absent, Some(e)) => e.expires_at <= now,
            (Expect::Version(v), Some(e)) => e.version == v,
            (Expect::Version(_), None) => false,
        };
        if !ok {
            let expected = match expect {
                Expect::Version(v) => v,
                Expect::Absent => 0,
            };
            return Err(StoreError::VersionConflict {
                id: name.to_owned(),
                expected,
            });
        }
        let version = current.map_or(1, |e| e.version + 1);
        let entry = CacheEntry {
            value,
            version,
            expires_at,
        };
        entries.insert(name.to_owned(), entry.clone());
        Ok(entry)
    }

    async fn remove(&self, name: &str, version: u64) -> Result<(), StoreError> {
        let mut entries = self.entries.lock().expect("cache lock");
        if entries.get(name).is_some_and(|e| e.version == version) {
            entries.remove(name);
        }
        Ok(())
    }
}
