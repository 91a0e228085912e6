//! What the reports read: the documents from the store, with their histories.
//!
//! The store answers by state (the `by-state` index): every document still owed an outcome
//! (QUEUED, SENT, PROCESSING, FAILED, CONFLICT) and the recent decisions (ACCEPTED, REJECTED
//! within a window), each with its whole history, plus the count of documents in every state.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use relay_domain::ports::{DocumentQueries, DocumentRegistry, StoreError};
use relay_domain::{Document, DocumentRecord, DocumentState, HistoryEntry};
use serde::{Deserialize, Serialize};

/// The states in which the relay or a person still owes the document its way into KSeF.
pub const OPEN_STATES: [DocumentState; 5] = [
    DocumentState::Queued,
    DocumentState::Sent,
    DocumentState::Processing,
    DocumentState::Failed,
    DocumentState::Conflict,
];

/// The states that are decisions (KSeF's or our validation's).
pub const DECIDED_STATES: [DocumentState; 2] = [DocumentState::Accepted, DocumentState::Rejected];

/// A document as the reports and the local runner's `store.json` keep it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDocument {
    pub record: DocumentRecord,
    pub history: Vec<HistoryEntry>,
}

impl From<Document> for StoredDocument {
    fn from(d: Document) -> Self {
        StoredDocument {
            record: d.record,
            history: d.history,
        }
    }
}

/// How much to read.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotLimits {
    /// Decisions (ACCEPTED, REJECTED) this recent are listed; older ones are only counted.
    pub recent: Duration,
    /// At most this many documents per state.
    pub per_state: usize,
}

impl Default for SnapshotLimits {
    fn default() -> Self {
        SnapshotLimits {
            recent: Duration::days(7),
            per_state: 2000,
        }
    }
}

/// The documents at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub taken_at: DateTime<Utc>,
    pub documents: Vec<StoredDocument>,
    /// Documents in each state in the whole store (not only the listed ones).
    pub counts: BTreeMap<DocumentState, u64>,
    /// Whether a per-state limit cut a list short.
    pub truncated: bool,
}

impl Snapshot {
    /// A snapshot of documents already in hand (the local runner's), counting them.
    pub fn of(documents: Vec<StoredDocument>, taken_at: DateTime<Utc>) -> Snapshot {
        let mut counts: BTreeMap<DocumentState, u64> = DocumentState::ALL.iter().map(|s| (*s, 0)).collect();
        for d in &documents {
            *counts.entry(d.record.state).or_default() += 1;
        }
        Snapshot {
            taken_at,
            documents,
            counts,
            truncated: false,
        }
    }
}

async fn with_histories<S: DocumentRegistry + ?Sized>(store: &S, records: Vec<DocumentRecord>) -> Result<Vec<StoredDocument>, StoreError> {
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        match store.get(&r.key).await? {
            Some(d) => out.push(d.into()),
            // Moved on between the two reads: keep what the index said.
            None => out.push(StoredDocument {
                record: r,
                history: Vec::new(),
            }),
        }
    }
    Ok(out)
}

/// Reads the open documents and the recent decisions from the store. Histories are read for
/// every document except the ACCEPTED ones (the bulk, and the least interesting to a person:
/// `ksef-relay status ID` tells their story), so a snapshot costs one Query per document that
/// is open or rejected, plus the index pages.
pub async fn take<S: DocumentRegistry + DocumentQueries + ?Sized>(
    store: &S,
    now: DateTime<Utc>,
    limits: SnapshotLimits,
) -> Result<Snapshot, StoreError> {
    let mut documents = Vec::new();
    let mut truncated = false;
    let until = now + Duration::microseconds(1);
    for state in OPEN_STATES {
        let found = store.list_by_state(state, until, limits.per_state).await?;
        truncated |= found.len() == limits.per_state;
        documents.extend(with_histories(store, found).await?);
    }
    for state in DECIDED_STATES {
        let found = store
            .list_by_state_between(state, now - limits.recent, until, limits.per_state)
            .await?;
        truncated |= found.len() == limits.per_state;
        if state == DocumentState::Accepted {
            documents.extend(found.into_iter().map(|record| StoredDocument {
                record,
                history: Vec::new(),
            }));
        } else {
            documents.extend(with_histories(store, found).await?);
        }
    }
    let mut counts = BTreeMap::new();
    for state in DocumentState::ALL {
        counts.insert(state, store.count_by_state(state).await?);
    }
    Ok(Snapshot {
        taken_at: now,
        documents,
        counts,
        truncated,
    })
}

/// Every document whose current state began in `[from, to)` (the weekly report's week), plus
/// the ones still open that entered their state earlier (a document retrying all week keeps its
/// state and `state_since`, yet its errors belong to the week), each with its history.
pub async fn take_window<S: DocumentRegistry + DocumentQueries + ?Sized>(
    store: &S,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    per_state: usize,
) -> Result<Vec<StoredDocument>, StoreError> {
    let mut documents = Vec::new();
    for state in DocumentState::ALL {
        let found = if OPEN_STATES.contains(&state) {
            store.list_by_state(state, to, per_state).await?
        } else {
            store.list_by_state_between(state, from, to, per_state).await?
        };
        documents.extend(with_histories(store, found).await?);
    }
    Ok(documents)
}
