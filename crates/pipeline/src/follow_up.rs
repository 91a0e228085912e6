//! No document without a next step.
//!
//! Every stage writes the document's new state first and its follow-up (the next message, the
//! outbox result, the corrections notice) after it. A process that dies, times out or gets an AWS
//! error between the two leaves a state with nothing to move it on, unless something reads the
//! state again and re-issues what it implies. Two things do:
//!
//! - **the message that made the write**, redelivered because it was never deleted: it finds its
//!   record a step ahead (`DocumentRecord::step`) and, instead of answering "not for me" and
//!   deleting itself, calls [`catch_up`]: a final state gets its outbox result (and corrections
//!   notice) again; an open one whose next step is overdue is re-driven;
//! - **the sweeper** ([`crate::sweeper`]), on a schedule, for what no message will bring back
//!   (a message lost on the way, a crash whose redelivery found the step not yet overdue).
//!
//! Re-driving writes [`Change::Redriven`] (the record's step moves on, its history says why) and
//! then sends the follow-up for the new step. A message that was only late, not lost, is behind
//! that step when it arrives and does nothing, so a re-drive never leaves two live messages.

use std::time::Duration;

use chrono::{DateTime, Utc};
use relay_domain::ports::{Archive, DocumentQueries, DocumentUpdates, OutgoingMessage, Queue, StoreError, MAX_DELAY};
use relay_domain::{Change, DocumentRecord, DocumentState};

use crate::messages::{SendRequest, StatusRequest};
use crate::outbox::OutboxResult;
use crate::queue_action::{done, QueueAction, StageError, StageResult};

/// What catching up needs: the store, the outbox, and every queue a follow-up can go to.
pub struct FollowUpPorts<'a, S: DocumentUpdates + ?Sized> {
    pub store: &'a S,
    pub archive: &'a dyn Archive,
    pub send_queue: &'a dyn Queue,
    pub status_queue: &'a dyn Queue,
    pub corrections_queue: &'a dyn Queue,
}

/// The message an open record's next step needs, or None for a record with nothing to send
/// (a final state, or SENT without KSeF's references, which only a person can sort out).
pub enum NextMessage {
    Send(SendRequest),
    Status(StatusRequest),
}

impl NextMessage {
    pub fn for_record(r: &DocumentRecord) -> Option<NextMessage> {
        match r.state {
            DocumentState::Queued => Some(NextMessage::Send(SendRequest::for_record(r))),
            DocumentState::Sent | DocumentState::Processing => status_request(r).map(NextMessage::Status),
            DocumentState::Accepted if r.storage.upo.is_none() => status_request(r).map(NextMessage::Status),
            _ => None,
        }
    }

    /// Which stage handles it (for logs and metrics).
    pub fn stage(&self) -> &'static str {
        match self {
            NextMessage::Send(_) => "send",
            NextMessage::Status(_) => "status",
        }
    }

    /// Sends it, delayed until the record's next step is due.
    pub async fn send(
        &self,
        ports_send: &dyn Queue,
        ports_status: &dyn Queue,
        r: &DocumentRecord,
        now: DateTime<Utc>,
    ) -> Result<(), StageError> {
        let delay = r
            .next_attempt_at
            .map(|t| (t - now).to_std().unwrap_or_default())
            .unwrap_or_default()
            .min(MAX_DELAY);
        let (queue, body) = match self {
            NextMessage::Send(m) => (ports_send, m.to_json()),
            NextMessage::Status(m) => (ports_status, m.to_json()),
        };
        queue
            .send(OutgoingMessage::new(body).with_trace_id(&r.trace_id).delayed(delay))
            .await?;
        Ok(())
    }
}

fn status_request(r: &DocumentRecord) -> Option<StatusRequest> {
    match (&r.ksef.session_reference, &r.ksef.invoice_reference) {
        (Some(session), Some(invoice)) => Some(StatusRequest::first(r, session.clone(), invoice.clone())),
        _ => None,
    }
}

/// Whether `r` is open (a stage still has work to do on it).
pub fn is_open(r: &DocumentRecord) -> bool {
    matches!(r.state, DocumentState::Queued | DocumentState::Sent | DocumentState::Processing)
        || (r.state == DocumentState::Accepted && r.storage.upo.is_none())
}

/// How many documents are open ([`is_open`]): QUEUED, SENT, PROCESSING, and ACCEPTED ones whose
/// UPO is still to be fetched. Read from the store, which is consistent, unlike a queue's
/// approximate counts: "every queue looks empty" is not "every document has arrived" (a delayed
/// message can be on its way, and SQS's counts lag). Listing ACCEPTED documents reads them all:
/// meant for the local runner and tests, not for a production table.
pub async fn count_open<S: DocumentQueries + ?Sized>(store: &S, now: DateTime<Utc>) -> Result<u64, StoreError> {
    let mut n = 0;
    for state in [DocumentState::Queued, DocumentState::Sent, DocumentState::Processing] {
        n += store.count_by_state(state).await?;
    }
    let later = now + chrono::Duration::days(1);
    let accepted = store.list_by_state(DocumentState::Accepted, later, usize::MAX).await?;
    n += accepted.iter().filter(|r| is_open(r)).count() as u64;
    Ok(n)
}

/// When `r`'s next step was due: its `next_attempt_at`, else when it entered its state.
pub fn due_at(r: &DocumentRecord) -> DateTime<Utc> {
    r.next_attempt_at.unwrap_or(r.state_since)
}

/// Whether nobody has moved `r` on for `grace` past its due time and no attempt holds it.
pub fn is_overdue(r: &DocumentRecord, grace: Duration, now: DateTime<Utc>) -> bool {
    let lease_live = r.lease.as_ref().is_some_and(|l| l.until > now);
    is_open(r) && !lease_live && due_at(r) + chrono::Duration::from_std(grace).unwrap_or_default() <= now
}

/// Re-drives an open record: [`Change::Redriven`] (with `why` in its history), then the
/// follow-up for the new step. Returns the record as written.
pub async fn redrive<S: DocumentUpdates + ?Sized>(
    ports: &FollowUpPorts<'_, S>,
    r: &DocumentRecord,
    why: String,
    now: DateTime<Utc>,
) -> Result<Option<DocumentRecord>, StageError> {
    if NextMessage::for_record(r).is_none() {
        return Ok(None);
    }
    let r = ports.store.transition(r, Change::Redriven { reason: why }, now).await?;
    let Some(next) = NextMessage::for_record(&r) else {
        return Ok(Some(r));
    };
    next.send(ports.send_queue, ports.status_queue, &r, now).await?;
    tracing::warn!(document = %r.key, trace_id = %r.trace_id, stage = next.stage(), state = %r.state, "document re-driven");
    Ok(Some(r))
}

/// Writes the outbox result (and, for REJECTED and CONFLICT, the corrections notice) that `r`'s
/// final state implies. Both are idempotent for the ERP (the same result again; the notice names
/// the document), so a redelivered message may simply write them again.
pub async fn republish_final<S: DocumentUpdates + ?Sized>(ports: &FollowUpPorts<'_, S>, r: &DocumentRecord) -> Result<(), StageError> {
    let errors: Vec<_> = r.last_error.iter().cloned().collect();
    match (r.state, r.last_error.clone()) {
        (DocumentState::Rejected | DocumentState::Conflict, Some(f)) => {
            crate::messages::report_for_correction(ports.archive, ports.corrections_queue, r, r.state.code(), f).await?
        }
        _ => OutboxResult::for_record(r, errors).publish(ports.archive).await?,
    }
    Ok(())
}

/// A stage's message found its record past the step it was sent for (or in a state the stage
/// does not handle): it does no work of its own, but makes sure the record's follow-up exists.
pub async fn catch_up<S: DocumentUpdates + ?Sized>(
    ports: &FollowUpPorts<'_, S>,
    r: DocumentRecord,
    grace: Duration,
    now: DateTime<Utc>,
) -> Result<StageResult, StageError> {
    if matches!(r.state, DocumentState::Accepted | DocumentState::Rejected | DocumentState::Conflict) {
        // The write that made it final (or numbered it) may have been the last thing a dying
        // stage did: the ERP must not keep reading an older state.
        republish_final(ports, &r).await?;
    }
    if !is_open(&r) {
        return done(QueueAction::Delete, "FINAL_REPUBLISHED", Some(r));
    }
    if !is_overdue(&r, grace, now) {
        // Its next step is not due yet (or an attempt holds it): the message for that step, or
        // the sweeper if it never comes, moves it on.
        return done(QueueAction::Delete, "LEFTOVER", Some(r));
    }
    let why = format!(
        "{} since {}, next step due at {}, and no message moved it on: a redelivered message of step {} re-issued it",
        r.state,
        r.state_since.to_rfc3339(),
        due_at(&r).to_rfc3339(),
        r.step
    );
    match redrive(ports, &r, why, now).await? {
        Some(r) => done(QueueAction::Delete, "REDRIVEN", Some(r)),
        None => done(QueueAction::Delete, "LEFTOVER", Some(r)),
    }
}

/// How long past its due time a document's next step may wait before a leftover message or the
/// sweeper re-issues it. Longer than any queue hop takes when nothing is wrong, short against
/// the legal deadlines; a re-drive that turns out needless costs one extra message, which the
/// step check then drops.
pub const REDRIVE_GRACE: Duration = Duration::from_secs(60);
