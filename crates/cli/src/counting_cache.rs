//! A shared cache that counts its reads and writes by the entry's kind (the name's first
//! segment: `ratelog` for the rate governor, `sendmode` for the online backlog, ...), for
//! `ksef-relay load`'s report: how many cache round trips each KSeF call costs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use relay_domain::ports::{CacheEntry, Expect, SharedCache, StoreError};

/// Reads and writes (including conflicted ones) of one kind of entry.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Ops {
    pub(crate) gets: u64,
    pub(crate) puts: u64,
    pub(crate) conflicts: u64,
    pub(crate) removes: u64,
}

pub(crate) struct CountingCache {
    inner: Arc<dyn SharedCache>,
    counts: Mutex<BTreeMap<String, Ops>>,
}

impl CountingCache {
    pub(crate) fn new(inner: Arc<dyn SharedCache>) -> CountingCache {
        CountingCache {
            inner,
            counts: Mutex::new(BTreeMap::new()),
        }
    }

    fn count(&self, name: &str, f: impl FnOnce(&mut Ops)) {
        let kind = name.split('/').next().unwrap_or(name).to_owned();
        f(self.counts.lock().expect("counts lock").entry(kind).or_default());
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<String, Ops> {
        self.counts.lock().expect("counts lock").clone()
    }
}

#[async_trait]
impl SharedCache for CountingCache {
    async fn get(&self, name: &str, now: DateTime<Utc>) -> Result<Option<CacheEntry>, StoreError> {
        self.count(name, |o| o.gets += 1);
        self.inner.get(name, now).await
    }

    async fn put(
        &self,
        name: &str,
        value: String,
        expires_at: DateTime<Utc>,
        expect: Expect,
        now: DateTime<Utc>,
    ) -> Result<CacheEntry, StoreError> {
        let res = self.inner.put(name, value, expires_at, expect, now).await;
        self.count(name, |o| {
            o.puts += 1;
            if matches!(res, Err(StoreError::VersionConflict { .. })) {
                o.conflicts += 1;
            }
        });
        res
    }

    async fn remove(&self, name: &str, version: u64) -> Result<(), StoreError> {
        self.count(name, |o| o.removes += 1);
        self.inner.remove(name, version).await
    }
}
