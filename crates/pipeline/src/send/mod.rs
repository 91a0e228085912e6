//! The send use case: one queued document to KSeF, at most once.
//!
//! The order of writes is what makes "at most once" hold through crashes and timeouts:
//!
//! 1. claim the document (lease + optimistic version): no two senders work on it at once;
//! 2. if an earlier attempt's result is unknown (`unconfirmed_send`), the channel it went by
//!    reconciles it first: KSeF has the invoice (record SENT, never resend), may still get it
//!    (wait), or did not take it (send again);
//! 3. record "about to send" (SendStarted: session + hash) BEFORE KSeF can receive anything;
//! 4. send; once KSeF has it, record SENT and queue a status check.
//!
//! A crash or timeout between 3 and 4 leaves `unconfirmed_send` set, so the next attempt
//! reconciles (step 2) instead of resending.
//!
//! The document's [`SendMode`], chosen at intake, names its channel; each channel is a module
//! behind one small interface ([`Channel`]: submit, reconcile):
//!
//! - [`online`]: the seller's shared online session, one POST per invoice;
//! - [`batch`]: an invoice with an attachment (KSeF takes those only in batch) in a batch
//!   session of its own, known only once KSeF has processed the session.
//!
//! Here: the checks, the seller's gate, the claim, and the choice of channel. What every
//! channel shares is in [`attempt`]: SENT and its status check, and the retry policy. Every
//! failure goes through the one taxonomy and the retry policy: transient → retry later
//! (charged), 429 → park until Retry-After (not charged), new session / re-auth → fix and retry
//! (the recovery limit, not the send budget), a failed reconciliation read → retry later (the
//! recovery limit too: it sent nothing), an operator's problem (credentials, permissions, IP
//! block, unknown status) → park the seller's work ([`crate::seller_block`], not charged, never
//! REJECTED), permanent (the invoice's content) → REJECTED and the corrections queue, budget
//! spent → FAILED and the DLQ.

mod attempt;
mod batch;
mod online;

use std::time::Duration;

use chrono::{DateTime, Utc};
use relay_domain::ports::StoreError;
use relay_domain::{Change, ClaimPurpose, ClaimRefused, DocumentRecord, DocumentState, HistoryEntry, HistoryEvent, SendMode};

use crate::follow_up::{catch_up, REDRIVE_GRACE};
use crate::messages::SendRequest;
use crate::queue_action::{done, stage_document, QueueAction, StageError, StageResult};
use crate::seller_block::{parked_failure, SellerBlock, SellerGate};
use crate::sessions::KsefContexts;
use attempt::{again, on_failure, relay_failure, until, Attempt, Channel, Reconciled, OPERATOR_PARKED};
pub use attempt::{SendConfig, SendPorts, SendStore};

/// The outcome of a document parked because its seller's work is parked.
const SELLER_PARKED: &str = "SELLER_PARKED";
/// Outcomes that prove KSeF took our call: a probe that ends so clears the seller's block.
const GOT_THROUGH: [&str; 5] = ["SENT", "RECONCILED_SENT", "BATCH_CLOSED", "BATCH_PROCESSING", "REJECTED"];

/// Sends the document a [`SendRequest`] names; parks the seller's work when the attempt met an
/// operator's problem, and clears that block when a probe got through.
pub async fn send<S: SendStore + ?Sized>(
    ports: &SendPorts<'_, S>,
    ksef: &KsefContexts,
    cfg: &SendConfig,
    req: &SendRequest,
    now: DateTime<Utc>,
) -> Result<StageResult, StageError> {
    let mut probing = false;
    let mut result = send_document(ports, ksef, cfg, req, now, &mut probing).await;
    if let Ok(res) = &mut result {
        let seller = &req.document.seller_nip;
        if res.outcome == OPERATOR_PARKED {
            if let Some(f) = res.record.as_ref().and_then(|r| r.last_error.clone()) {
                let block = ksef.park_seller(seller, &f, now).await;
                if let QueueAction::Requeue { delay } | QueueAction::Replace { delay, .. } = &mut res.action {
                    *delay = (*delay).max(until(now, block.until));
                }
            }
        } else if probing && GOT_THROUGH.contains(&res.outcome) {
            ksef.clear_seller_block(seller, now).await;
        }
    }
    result
}

#[tracing::instrument(name = "send", skip_all, fields(trace_id = %req.trace_id, seller_nip = %req.document.seller_nip, document = %req.document, erp_doc_id, state, error_class))]
async fn send_document<S: SendStore + ?Sized>(
    ports: &SendPorts<'_, S>,
    ksef: &KsefContexts,
    cfg: &SendConfig,
    req: &SendRequest,
    now: DateTime<Utc>,
    probing: &mut bool,
) -> Result<StageResult, StageError> {
    let doc = match stage_document(ports.store, ports.archive, &req.document, &req.trace_id, "send").await? {
        Ok(doc) => doc,
        Err(answer) => return Ok(answer),
    };
    let sent_at = last_send_started(&doc.history);
    let r = doc.record;
    if r.state != DocumentState::Queued || req.is_behind(&r) {
        // Not this message's work any more; but the write that moved the document on may have
        // been the last thing an earlier handler did: make sure its follow-up exists.
        return catch_up(ports, r, REDRIVE_GRACE, now).await;
    }
    if r.content_hash != req.content_hash {
        // The document was resubmitted with new content; its own message is on the queue.
        return done(QueueAction::Delete, "STALE", Some(r));
    }
    if let Some(t) = r.next_attempt_at.filter(|t| *t > now) {
        return done(QueueAction::Requeue { delay: until(now, t) }, "NOT_YET", Some(r));
    }
    // The seller's work is parked for an operator: wait without calling KSeF, unless this
    // attempt is the one that probes.
    match ksef.seller_gate(&req.document.seller_nip, now).await {
        SellerGate::Open => {}
        SellerGate::Probe(_) => *probing = true,
        SellerGate::Parked(block) => return park_for_seller(ports, r, &block, now).await,
    }
    // 1. Claim.
    let r = match claim(ports, cfg, req, now).await? {
        Ok(r) => r,
        Err(answer) => return Ok(answer),
    };
    let client = match ksef.client_ready(&r.key.seller_nip, now).await {
        Ok(c) => c,
        // Classified by the client: a refused login or missing credentials is an operator's
        // problem, a network failure transient.
        Err(f) => return on_failure(ports, cfg, r, f, false, now).await,
    };
    let a = Attempt {
        ports,
        ksef,
        cfg,
        client,
        sent_at,
        now,
    };

    // 2. An earlier attempt may have reached KSeF: its channel looks before sending again.
    let mut r = r;
    if let Some((session, mode)) = r.unconfirmed_send() {
        let reconciled = match mode {
            SendMode::Online => online::Online.reconcile(&a, r, session).await?,
            SendMode::Batch => batch::Batch.reconcile(&a, r, session).await?,
        };
        match reconciled {
            Reconciled::Decided(result) => return Ok(result),
            Reconciled::NotReceived(back) => r = back,
        }
    }

    let Some(archive_key) = r.storage.archive.clone() else {
        return a
            .fail(r, relay_failure("the record names no archived bytes", "NO_ARCHIVE"), false)
            .await;
    };
    let Some(object) = ports.archive.get(&archive_key).await? else {
        let f = relay_failure(format!("archived bytes {archive_key} are missing"), "NO_ARCHIVE");
        return a.fail(r, f, false).await;
    };
    // 3. and 4., by the channel chosen at intake (a record registered before the relay kept the
    // mode: read from the invoice).
    let mode = r
        .send_mode()
        .unwrap_or_else(|| SendMode::for_invoice(relay_fa3::read_identity(&object.bytes).is_ok_and(|i| i.has_attachment)));
    match mode {
        SendMode::Online => online::Online.submit(&a, r, &object.bytes).await,
        SendMode::Batch => batch::Batch.submit(&a, r, &object.bytes).await,
    }
}

/// Claims the document for this attempt, or the answer when another holds it.
async fn claim<S: SendStore + ?Sized>(
    ports: &SendPorts<'_, S>,
    cfg: &SendConfig,
    req: &SendRequest,
    now: DateTime<Utc>,
) -> Result<Result<DocumentRecord, StageResult>, StageError> {
    let busy = |delay| done(QueueAction::Requeue { delay }, "BUSY", None);
    let answer = match ports
        .store
        .claim(&req.document, ClaimPurpose::Send, &cfg.owner, now, cfg.lease)
        .await
    {
        Ok(r) => return Ok(Ok(r)),
        Err(StoreError::Claim(ClaimRefused::LeaseHeld { until: t, .. })) => busy(until(now, t).max(Duration::from_secs(1))),
        Err(StoreError::VersionConflict { .. }) => busy(Duration::from_secs(1)),
        Err(StoreError::Claim(ClaimRefused::WrongState { .. })) => done(QueueAction::Delete, "NOT_QUEUED", None),
        Err(e) => return Err(e.into()),
    };
    answer.map(Err)
}

fn last_send_started(history: &[HistoryEntry]) -> Option<DateTime<Utc>> {
    history
        .iter()
        .rev()
        .find(|h| matches!(h.event, HistoryEvent::SendStarted { .. }))
        .map(|h| h.at)
}

/// The seller's work is parked: the document waits for the block to end, not charged.
async fn park_for_seller<S: SendStore + ?Sized>(
    ports: &SendPorts<'_, S>,
    r: DocumentRecord,
    block: &SellerBlock,
    now: DateTime<Utc>,
) -> Result<StageResult, StageError> {
    let delay = until(now, block.until).max(Duration::from_secs(1));
    if r.lease.as_ref().is_some_and(|l| l.until > now) {
        // Another instance holds it; it will meet the block itself.
        return done(QueueAction::Requeue { delay }, SELLER_PARKED, None);
    }
    let change = Change::RetryScheduled {
        failure: parked_failure(block),
        retry_at: block.until,
        charged: false,
        // Keep an unconfirmed send unconfirmed: it is reconciled when the seller resumes.
        maybe_received: r.ksef.unconfirmed_send.is_some(),
    };
    match ports.store.transition(&r, change, now).await {
        Ok(r) => done(again(&r, delay), SELLER_PARKED, Some(r)),
        Err(StoreError::VersionConflict { .. }) => done(
            QueueAction::Requeue {
                delay: Duration::from_secs(1),
            },
            "BUSY",
            None,
        ),
        Err(e) => Err(e.into()),
    }
}
