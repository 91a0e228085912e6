//! A send handler that dies between KSeF's acceptance and the state write: the store refuses
//! the SENT write once (as if the function timed out right after the 202). The message comes
//! back, the next attempt finds the invoice in the session by hash, and KSeF ends up with
//! exactly one acceptance.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use common::{invoice, world};
use relay_domain::memory::{MemoryDocumentStore, MemoryQueue};
use relay_domain::ports::{
    DocumentClaims, DocumentQueries, DocumentRegistry, DocumentUpdates, OutgoingMessage, Queue, Registration, StoreError,
};
use relay_domain::{Change, ClaimPurpose, Document, DocumentKey, DocumentRecord, DocumentState, HistoryEntry, NewDocument};
use relay_pipeline::drive::Stages;

/// The in-memory store, except that the first SENT write fails.
struct DiesOnceAfterAcceptance {
    inner: MemoryDocumentStore,
    died: AtomicBool,
}

#[async_trait]
impl DocumentRegistry for DiesOnceAfterAcceptance {
    async fn register(&self, new: NewDocument, now: DateTime<Utc>) -> Result<Registration, StoreError> {
        self.inner.register(new, now).await
    }
    async fn get(&self, key: &DocumentKey) -> Result<Option<Document>, StoreError> {
        self.inner.get(key).await
    }
}

#[async_trait]
impl DocumentClaims for DiesOnceAfterAcceptance {
    async fn claim(
        &self,
        key: &DocumentKey,
        purpose: ClaimPurpose,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: Duration,
    ) -> Result<DocumentRecord, StoreError> {
        self.inner.claim(key, purpose, owner, now, lease_for).await
    }
    async fn claim_as_read(
        &self,
        current: &DocumentRecord,
        purpose: ClaimPurpose,
        owner: &str,
        now: DateTime<Utc>,
        lease_for: Duration,
    ) -> Result<DocumentRecord, StoreError> {
        self.inner.claim_as_read(current, purpose, owner, now, lease_for).await
    }
}

#[async_trait]
impl DocumentUpdates for DiesOnceAfterAcceptance {
    async fn transition(&self, current: &DocumentRecord, change: Change, now: DateTime<Utc>) -> Result<DocumentRecord, StoreError> {
        if matches!(change, Change::Sent { .. }) && !self.died.swap(true, Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the function died before writing SENT".into()));
        }
        self.inner.transition(current, change, now).await
    }
    async fn append_history(&self, key: &DocumentKey, entries: Vec<HistoryEntry>) -> Result<(), StoreError> {
        self.inner.append_history(key, entries).await
    }
}

#[async_trait]
impl DocumentQueries for DiesOnceAfterAcceptance {
    async fn list_by_state(
        &self,
        state: DocumentState,
        older_than: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DocumentRecord>, StoreError> {
        self.inner.list_by_state(state, older_than, limit).await
    }
    async fn list_by_state_between(
        &self,
        state: DocumentState,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DocumentRecord>, StoreError> {
        self.inner.list_by_state_between(state, since, until, limit).await
    }
    async fn count_by_state(&self, state: DocumentState) -> Result<u64, StoreError> {
        self.inner.count_by_state(state).await
    }
}

#[tokio::test]
async fn dying_between_acceptance_and_the_state_write_still_ends_with_one_acceptance() {
    let w = world(10).await;
    let req = w.register(&invoice("CRASH/1")).await;
    // Hand the registered document over to the failing store.
    let store = DiesOnceAfterAcceptance {
        inner: MemoryDocumentStore::new(),
        died: AtomicBool::new(false),
    };
    let doc = w.store.get(&req.document).await.unwrap().unwrap();
    let new = NewDocument {
        key: doc.record.key.clone(),
        content_hash: doc.record.content_hash,
        content_size: doc.record.content_size,
        trace_id: doc.record.trace_id.clone(),
        erp_document_id: doc.record.erp_document_id.clone(),
        storage: doc.record.storage.clone(),
        offline_mode: None,
        issue_date: doc.record.issue_date,
        send_mode: doc.record.send_mode().unwrap_or(relay_domain::SendMode::Online),
        send_mode_reason: None,
        initial: relay_domain::InitialState::Queued,
    };
    store.register(new, Utc::now()).await.unwrap();
    w.send_q.send(OutgoingMessage::new(req.to_json())).await.unwrap();

    let (send_dlq, status_dlq) = (MemoryQueue::new("send-dlq"), MemoryQueue::new("status-dlq"));
    // A short lease and visibility, so the redelivery comes within the test's patience.
    let send_cfg = relay_pipeline::send::SendConfig {
        lease: Duration::from_millis(300),
        ..w.cfg.clone()
    };
    let status_cfg = w.status_cfg();
    let stages = Stages {
        store: &store,
        archive: &w.archive,
        send_queue: &w.send_q,
        send_dlq: &send_dlq,
        status_queue: &w.status_q,
        status_dlq: &status_dlq,
        corrections_queue: &w.corrections_q,
        ksef: &w.ksef,
        send_cfg: &send_cfg,
        status_cfg: &status_cfg,
        visibility: Duration::from_secs(1),
        clock: &relay_domain::clock::SystemClock,
        sweep: relay_pipeline::sweeper::SweepConfig::standard(),
        batch_cfg: relay_pipeline::send::BatchConfig::default(),
    };
    let mut outcomes = Vec::new();
    assert!(stages
        .run_until_quiet(Duration::from_secs(30), Duration::from_millis(20), |s| outcomes.push(s.outcome))
        .await
        .unwrap());
    assert!(store.died.load(Ordering::SeqCst), "the crash happened");
    assert_eq!(outcomes.first(), Some(&"INFRASTRUCTURE_ERROR"), "{outcomes:?}");
    assert!(
        outcomes.contains(&"RECONCILED_SENT"),
        "the next attempt found it by hash: {outcomes:?}"
    );
    assert!(!outcomes.contains(&"SENT"), "and never posted it again: {outcomes:?}");
    let r = store.get(&req.document).await.unwrap().unwrap().record;
    assert_eq!(r.state, DocumentState::Accepted);
    assert_eq!(w.sim.ledger().count_hash(&req.content_hash), 1, "exactly one acceptance");
}
