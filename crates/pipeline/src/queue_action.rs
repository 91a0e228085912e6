//! What a queue-driven handler does with the message it was given, decided by the use case
//! and carried out by the Lambda handler or the local runner in the same way.
//!
//! Delays are carried out by sending a fresh copy of the message with `DelaySeconds` (at most
//! 15 minutes; a longer wait is walked in 15-minute hops, each checking the document's
//! `next_attempt_at`) and deleting the original. Unlike stretching the visibility timeout, this
//! keeps each message's receive count at one in normal operation, so SQS's own redrive to the
//! DLQ (maxReceiveCount) fires only for what it is meant for: a handler that keeps crashing.
//! The retry budget is the document's, counted in the store, and exhausting it sends the
//! message to the DLQ explicitly.

use std::time::Duration;

use relay_domain::ports::DocumentRegistry;
use relay_domain::ports::{Archive, ArchiveError, OutgoingMessage, Queue, QueueError, ReceivedMessage, StoreError, MAX_DELAY};
use relay_domain::{Document, DocumentKey, DocumentRecord, DocumentState, TraceId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueAction {
    /// Done with: delete the message.
    Delete,
    /// Try again after `delay`: a fresh copy with that delay (capped at 15 min), then delete.
    Requeue { delay: Duration },
    /// Like `Requeue`, with a new body (the status poll counter moves on).
    Replace { body: String, delay: Duration },
    /// Give up on it: copy it to the dead-letter queue (an alarm fires there), then delete.
    DeadLetter,
    /// Leave it: it comes back after its visibility timeout (the work could not even be judged).
    Release,
}

/// What a stage (send, status) decided for one message: the action, an outcome name for logs,
/// metrics and tests, and the record as it now stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageResult {
    pub action: QueueAction,
    /// Send: `SENT`, `RECONCILED_SENT`, `RETRY`, `PARKED`, `REJECTED`, `FAILED`, `CONFLICT`,
    /// `NOT_YET`, `BUSY`, `NOT_QUEUED`, `STALE`, `UNKNOWN_DOCUMENT`, `BATCH_CLOSED`,
    /// `BATCH_PROCESSING`, `FAILED_BACK_TO_DLQ`. Status: `ACCEPTED`, `ACCEPTED_DUPLICATE_OURS`,
    /// `PROCESSING`, `RESEND`, `SELLER_PARKED`, `REJECTED`, `CONFLICT`, `FAILED`, `UPO_PENDING`, `POLL_ERROR`,
    /// `NOT_YET`, `NOT_PENDING`, `STALE`, `UNKNOWN_DOCUMENT`, `FAILED_BACK_TO_DLQ`.
    pub outcome: &'static str,
    pub record: Option<DocumentRecord>,
}

/// A stage's infrastructure failure (store, archive, queues): the message is released and
/// comes back after its visibility timeout.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Correction(#[from] crate::messages::CorrectionError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// A finished stage step.
pub fn done(action: QueueAction, outcome: &'static str, record: Option<DocumentRecord>) -> Result<StageResult, StageError> {
    if let Some(r) = &record {
        // The document span (send, status) carries the state the stage left the document in.
        relay_observe::logging::note_state(r.erp_document_id.as_str(), r.state.code());
        if let Some(f) = &r.last_error {
            relay_observe::logging::note_error_class(f.class.name());
        }
    }
    Ok(StageResult { action, outcome, record })
}

/// The document a send or status message names, or the stage's answer when it has nothing to
/// do with it: an unknown document's message goes to the DLQ, and so does a FAILED document's.
/// Only a DLQ redrive that skipped dlq-replay (the console's native one) brings a FAILED
/// document's message to a stage; back in the DLQ, dlq-replay can still move it.
pub async fn stage_document<S: DocumentRegistry + ?Sized>(
    store: &S,
    archive: &dyn Archive,
    document: &DocumentKey,
    trace_id: &TraceId,
    stage: &str,
) -> Result<Result<Document, StageResult>, StageError> {
    let Some(doc) = store.get(document).await? else {
        tracing::error!(%document, %trace_id, stage, "a message for a document the store does not know");
        return done(QueueAction::DeadLetter, "UNKNOWN_DOCUMENT", None).map(Err);
    };
    relay_observe::logging::note_state(doc.record.erp_document_id.as_str(), doc.record.state.code());
    if doc.record.state == DocumentState::Failed {
        // The stage that gave up may have died before telling the ERP: tell it (again).
        let errors = doc.record.last_error.iter().cloned().collect();
        crate::outbox::OutboxResult::for_record(&doc.record, errors)
            .publish(archive)
            .await?;
        return done(QueueAction::DeadLetter, "FAILED_BACK_TO_DLQ", Some(doc.record)).map(Err);
    }
    Ok(Ok(doc))
}

/// Carries out `action` for `message` taken from `queue`.
pub async fn apply(action: &QueueAction, message: &ReceivedMessage, queue: &dyn Queue, dlq: &dyn Queue) -> Result<(), QueueError> {
    let copy = || {
        let mut m = OutgoingMessage::new(message.body.clone());
        m.attributes = message.attributes.clone();
        m
    };
    match action {
        QueueAction::Delete => queue.delete(&message.receipt).await,
        QueueAction::Requeue { delay } => {
            queue.send(copy().delayed((*delay).min(MAX_DELAY))).await?;
            queue.delete(&message.receipt).await
        }
        QueueAction::Replace { body, delay } => {
            let mut m = OutgoingMessage::new(body.clone());
            m.attributes = message.attributes.clone();
            queue.send(m.delayed((*delay).min(MAX_DELAY))).await?;
            queue.delete(&message.receipt).await
        }
        QueueAction::DeadLetter => {
            dlq.send(copy()).await?;
            queue.delete(&message.receipt).await
        }
        QueueAction::Release => Ok(()),
    }
}
