use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::ids::DocumentKey;
use crate::ports::{DocumentClaims, DocumentQueries, DocumentRegistry, DocumentUpdates, Registration, StoreError};
use crate::record::{Change, ClaimPurpose, Document, DocumentRecord, HistoryEntry, NewDocument};
use crate::state::DocumentState;

/// A document store in a mutex-guarded map.
#[derive(Debug, Default)]
pub struct MemoryDocumentStore {
    docs: Mutex<BTreeMap<String, Document>>,
}

impl MemoryDocumentStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every document, for the local runner's report.
    pub fn all(&self) -> Vec<Document> {
        self.docs.lock().expect("store lock").values().cloned().collect()
    }

    fn write_if_version(&self, expected: u64, record: DocumentRecord, history: Vec<HistoryEntry>) -> Result<(), StoreError> {
        let mut docs = self.docs.lock().expect("store lock");
        let id = record.key.storage_id();
        let doc = docs.get_mut(&id).ok_or_else(|| StoreError::NotFound(id.clone()))?;
        if doc.record.version != expected {
            return Err(StoreError::VersionConflict { id, expected });
        }
        doc.record = record;
        doc.history.extend(history);
        Ok(())
    }
}

#[async_trait]
impl DocumentRegistry for MemoryDocumentStore {
    async fn register(&self, new: NewDocument, now: DateTime<Utc>) -> Result<Registration, StoreError> {
        let mut docs = self.docs.lock().expect("store lock");
        let id = new.key.storage_id();
        if let Some(existing) = docs.get(&id) {
            return Ok(Registration::Existing(existing.clone()));
        }
        let applied = DocumentRecord::register(new, now);
        docs.insert(
            id,
            Document {
                record: applied.record.clone(),
                history: applied.history,
            },
        );
        Ok(Registration::Created(applied.record))
    }

    async fn get(&self, key: &DocumentKey) -> Result<Option<Document>, StoreError> {
        Ok(self.docs.lock().expect("store lock").get(&key.storage_id()).cloned())
    }
}

#[async_trait]
impl DocumentClaims for MemoryDocumentStore {
    async fn claim(
        &self,
        key: &DocumentKey,
        purpose: ClaimPurpose,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: Duration,
    ) -> Result<DocumentRecord, StoreError> {
        let current = self.get(key).await?.ok_or_else(|| StoreError::NotFound(key.storage_id()))?.record;
        self.claim_as_read(&current, purpose, owner, now, lease_for).await
    }

    async fn claim_as_read(
        &self,
        current: &DocumentRecord,
        purpose: ClaimPurpose,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: Duration,
    ) -> Result<DocumentRecord, StoreError> {
        let claimed = current.claim(purpose, owner, now, lease_for)?;
        self.write_if_version(current.version, claimed.clone(), Vec::new())?;
        Ok(claimed)
    }
}

#[async_trait]
impl DocumentUpdates for MemoryDocumentStore {
    async fn transition(&self, current: &DocumentRecord, change: Change, now: DateTime<Utc>) -> Result<DocumentRecord, StoreError> {
        let applied = current.apply(change, now)?;
        self.write_if_version(current.version, applied.record.clone(), applied.history)?;
        Ok(applied.record)
    }

    async fn append_history(&self, key: &DocumentKey, entries: Vec<HistoryEntry>) -> Result<(), StoreError> {
        let mut docs = self.docs.lock().expect("store lock");
        let doc = docs
            .get_mut(&key.storage_id())
            .ok_or_else(|| StoreError::NotFound(key.storage_id()))?;
        doc.history.extend(entries);
        Ok(())
    }
}

#[async_trait]
impl DocumentQueries for MemoryDocumentStore {
    // Compared in whole microseconds, the precision the DynamoDB adapter's index keeps.
    async fn list_by_state(
        &self,
        state: DocumentState,
        older_than: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DocumentRecord>, StoreError> {
        let docs = self.docs.lock().expect("store lock");
        let mut found: Vec<DocumentRecord> = docs
            .values()
            .map(|d| &d.record)
            .filter(|r| r.state == state && r.state_since.timestamp_micros() < older_than.timestamp_micros())
            .cloned()
            .collect();
        found.sort_by(|a, b| a.state_since.cmp(&b.state_since).then_with(|| a.key.cmp(&b.key)));
        found.truncate(limit);
        Ok(found)
    }

    async fn list_by_state_between(
        &self,
        state: DocumentState,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DocumentRecord>, StoreError> {
        let docs = self.docs.lock().expect("store lock");
        let (from, to) = (since.timestamp_micros(), until.timestamp_micros());
        let mut found: Vec<DocumentRecord> = docs
            .values()
            .map(|d| &d.record)
            .filter(|r| r.state == state && (from..to).contains(&r.state_since.timestamp_micros()))
            .cloned()
            .collect();
        found.sort_by(|a, b| b.state_since.cmp(&a.state_since).then_with(|| a.key.cmp(&b.key)));
        found.truncate(limit);
        Ok(found)
    }

    async fn count_by_state(&self, state: DocumentState) -> Result<u64, StoreError> {
        let docs = self.docs.lock().expect("store lock");
        Ok(docs.values().filter(|d| d.record.state == state).count() as u64)
    }
}
