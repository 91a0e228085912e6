//! A small shared cache with versions and expiry, for what many function instances must share
//! instead of each fetching its own: KSeF access tokens and open online sessions per seller
//! NIP (KSeF rate-limits authentication too, and a cold-start storm must not log in 50 times).
//! Writes are conditional on the version read, so two instances refreshing at once cannot
//! overwrite each other unseen; an expired entry counts as absent (DynamoDB's TTL deletes late).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::document_store::StoreError;

/// A cached value and what guards it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    pub value: String,
    pub version: u64,
    pub expires_at: DateTime<Utc>,
}

/// What a write expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Nothing, or only an expired entry.
    Absent,
    /// Exactly this version.
    Version(u64),
}

#[async_trait]
pub trait SharedCache: Send + Sync {
    /// The live entry, or None if absent or expired at `now`.
    async fn get(&self, name: &str, now: DateTime<Utc>) -> Result<Option<CacheEntry>, StoreError>;

    /// Writes `value` if the stored entry matches `expect` (judged at `now`); returns the new
    /// entry, or `StoreError::VersionConflict` when another writer got there first.
    async fn put(
        &self,
        name: &str,
        value: String,
        expires_at: DateTime<Utc>,
        expect: Expect,
        now: DateTime<Utc>,
    ) -> Result<CacheEntry, StoreError>;

    /// Removes the entry if it still has `version` (a token KSeF refused, a closed session).
    async fn remove(&self, name: &str, version: u64) -> Result<(), StoreError>;
}
