//! The document store: one record per business identity, its history beside it.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::failure::ErrorClass;
use crate::ids::DocumentKey;
use crate::record::{Change, ClaimPurpose, ClaimRefused, Document, DocumentRecord, HistoryEntry, NewDocument};
use crate::state::{DocumentState, TransitionError};

/// What a registration found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// First time this identity was seen: the record written.
    Created(DocumentRecord),
    /// The identity exists: the stored document, untouched. The caller compares content hashes
    /// (same hash: a harmless repeat; another hash: a conflict for a person).
    Existing(Document),
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("document {0} not found")]
    NotFound(String),
    #[error("document {id} changed since version {expected}: another writer got there first")]
    VersionConflict { id: String, expected: u64 },
    #[error("claim refused: {0}")]
    Claim(#[from] ClaimRefused),
    #[error("transition refused: {0}")]
    Transition(#[from] TransitionError),
    #[error("stored record {id} cannot be read: {reason}")]
    Corrupt { id: String, reason: String },
    #[error("document store unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// The taxonomy class: a busy or unreachable store is transient; lost races are retried by
    /// re-reading; a refused transition or a corrupt record is a bug a person must look at.
    pub fn class(&self) -> ErrorClass {
        match self {
            StoreError::Unavailable(_) | StoreError::VersionConflict { .. } | StoreError::Claim(ClaimRefused::LeaseHeld { .. }) => {
                ErrorClass::Transient
            }
            _ => ErrorClass::Permanent,
        }
    }
}

/// Register and read documents (intake; everyone reads).
#[async_trait]
pub trait DocumentRegistry: Send + Sync {
    /// Writes the document if its identity is new, in one conditional write; otherwise returns
    /// the stored one unchanged.
    async fn register(&self, new: NewDocument, now: DateTime<Utc>) -> Result<Registration, StoreError>;

    /// The record and its whole history, or None.
    async fn get(&self, key: &DocumentKey) -> Result<Option<Document>, StoreError>;
}

/// Take a document for work (send, poll, replay).
#[async_trait]
pub trait DocumentClaims: Send + Sync {
    /// Reads the record and claims it per [`DocumentRecord::claim`]; the write succeeds only if
    /// nobody wrote in between (optimistic version).
    async fn claim(
        &self,
        key: &DocumentKey,
        purpose: ClaimPurpose,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: Duration,
    ) -> Result<DocumentRecord, StoreError>;

    /// Claims `current` as the caller just read it, without reading it again: the write
    /// succeeds only if the stored version is still `current.version` (else
    /// `StoreError::VersionConflict`; a lease `current` shows held is `ClaimRefused::LeaseHeld`).
    async fn claim_as_read(
        &self,
        current: &DocumentRecord,
        purpose: ClaimPurpose,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: Duration,
    ) -> Result<DocumentRecord, StoreError>;
}

/// Record what happened (send, status, replay).
#[async_trait]
pub trait DocumentUpdates: Send + Sync {
    /// Applies `change` to `current` per [`DocumentRecord::apply`] and writes the result and its
    /// history lines together, only if the stored version is still `current.version`.
    async fn transition(&self, current: &DocumentRecord, change: Change, now: DateTime<Utc>) -> Result<DocumentRecord, StoreError>;

    /// Appends history lines without touching the record (for example a second upload of the
    /// same file). Fails with NotFound if the document does not exist.
    async fn append_history(&self, key: &DocumentKey, entries: Vec<HistoryEntry>) -> Result<(), StoreError>;
}

/// Find documents by state (dashboards, stuck-document sweeps, reports).
#[async_trait]
pub trait DocumentQueries: Send + Sync {
    /// Documents in `state` whose state began before `older_than`, oldest first, at most `limit`.
    async fn list_by_state(&self, state: DocumentState, older_than: DateTime<Utc>, limit: usize)
        -> Result<Vec<DocumentRecord>, StoreError>;

    /// Documents in `state` whose state began in `[since, until)`, newest first, at most `limit`
    /// (the status page's recent decisions, the weekly report).
    async fn list_by_state_between(
        &self,
        state: DocumentState,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DocumentRecord>, StoreError>;

    /// How many documents are in `state` now (the `DocumentsInState` metric).
    async fn count_by_state(&self, state: DocumentState) -> Result<u64, StoreError>;
}

/// Every capability at once, for adapters and for the local runner.
pub trait DocumentStore: DocumentRegistry + DocumentClaims + DocumentUpdates + DocumentQueries {}
impl<T: DocumentRegistry + DocumentClaims + DocumentUpdates + DocumentQueries> DocumentStore for T {}
