//! The send use case: one queued document to KSeF, at most once.
//!
//! The order of writes is what makes "at most once" hold through crashes and timeouts:
//!
//! 1. claim the document (lease + optimistic version): no two senders work on it at once;
//! 2. if an earlier attempt's result is unknown (`unconfirmed_send`), look for our hash in that
//!    session's invoice list first: found means KSeF has it (record SENT, never resend);
//! 3. record "about to send" (SendStarted: session + hash) BEFORE the POST;
//! 4. POST; on 202 record SENT and queue a status check.
//!
//! A crash or timeout between 3 and 4 leaves `unconfirmed_send` set, so the next attempt
//! reconciles (step 2) instead of resending.
//!
//! An invoice with an attachment (`Zalacznik`) goes in a batch session of its own, as KSeF
//! takes attachments only in batch: open (SB), record SendStarted, upload the encrypted part,
//! close. Nothing is known about the invoice until KSeF has processed the session, so the send
//! stays unconfirmed (`AwaitingBatch`) and later attempts reconcile against the session: while it
//! is processing they wait, a session left open by a crash is closed, and only a final session
//! that does not list our hash counts as "not received" (charged, then sent in a new batch). Every failure goes through the one taxonomy and the
//! retry policy: transient → retry later (charged), 429 → park until Retry-After (not charged),
//! new session / re-auth → fix and retry (the recovery limit, not the send budget), a failed
//! reconciliation read → retry later (the recovery limit too: it sent nothing), an operator's
//! problem (credentials, permissions, IP block, unknown status) → park the seller's work
//! ([`crate::seller_block`], not charged, never REJECTED), permanent (the invoice's content) →
//! REJECTED and the corrections queue, budget spent → FAILED and the DLQ.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ksef_client::batch::MAX_PART_SIZE;
use ksef_client::{BatchArchive, BatchInvoice, KsefClient, SendOptions};
use relay_domain::ports::{DocumentClaims, DocumentRegistry, DocumentUpdates, OutgoingMessage, StoreError};
use relay_domain::{
    Change, Charge, ClaimPurpose, ClaimRefused, DocumentRecord, DocumentState, ErrorClass, ErrorSource, Failure, HistoryEntry,
    HistoryEvent, KsefReference, Nip, RetryDecision, RetryPolicy, SendMode,
};

use crate::follow_up::{catch_up, FollowUpPorts, REDRIVE_GRACE};
use crate::messages::{report_for_correction, SendRequest, StatusRequest};
use crate::outbox::give_up;
use crate::queue_action::{done, stage_document, QueueAction, StageError, StageResult};
use crate::seller_block::{parked_failure, SellerBlock, SellerGate};
use crate::sessions::KsefContexts;

/// What the send use case needs of the document store.
pub trait SendStore: DocumentRegistry + DocumentClaims + DocumentUpdates {}
impl<T: DocumentRegistry + DocumentClaims + DocumentUpdates + ?Sized> SendStore for T {}

/// The ports the send use case needs: a stage's store, outbox and queues (its own queue too: a
/// leftover message that finds its document's follow-up lost re-issues it).
pub type SendPorts<'a, S> = FollowUpPorts<'a, S>;

/// Tunables, from the function's settings.
#[derive(Debug, Clone)]
pub struct SendConfig {
    pub policy: RetryPolicy,
    /// Who holds the lease (the function instance).
    pub owner: String,
    pub lease: Duration,
    /// When to ask KSeF for the status the first time.
    pub first_poll_delay: Duration,
}

fn relay_failure(message: impl Into<String>, code: &str) -> Failure {
    // Our own inability to proceed (missing credentials, missing bytes) is technical: it ends in
    // FAILED and an alarm, never in REJECTED, which would blame the invoice.
    Failure::new(ErrorClass::Transient, ErrorSource::Relay, message).with_code(code)
}

fn until(now: DateTime<Utc>, t: DateTime<Utc>) -> Duration {
    (t - now).to_std().unwrap_or_default()
}

/// The outcome of a document parked for an operator's problem it met itself.
const OPERATOR_PARKED: &str = "OPERATOR_PARKED";
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
    let last_send_started = last_send_started(&doc.history);
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
    let r = match ports
        .store
        .claim(&req.document, ClaimPurpose::Send, &cfg.owner, now, cfg.lease)
        .await
    {
        Ok(r) => r,
        Err(StoreError::Claim(ClaimRefused::LeaseHeld { until: t, .. })) => {
            return done(
                QueueAction::Requeue {
                    delay: until(now, t).max(Duration::from_secs(1)),
                },
                "BUSY",
                None,
            )
        }
        Err(StoreError::VersionConflict { .. }) => {
            return done(
                QueueAction::Requeue {
                    delay: Duration::from_secs(1),
                },
                "BUSY",
                None,
            )
        }
        Err(StoreError::Claim(ClaimRefused::WrongState { .. })) => return done(QueueAction::Delete, "NOT_QUEUED", None),
        Err(e) => return Err(e.into()),
    };
    let seller = r.key.seller_nip.clone();
    let client = match ksef.client_ready(&seller, now).await {
        Ok(c) => c,
        // Classified by the client: a refused login or missing credentials is an operator's
        // problem, a network failure transient.
        Err(f) => return on_failure(ports, cfg, r, f, false, now).await,
    };

    // 2. An earlier attempt may have reached KSeF: look before sending again.
    let mut r = r;
    if let Some((session, SendMode::Batch)) = r.unconfirmed_send() {
        match reconcile_batch(ports, cfg, &client, r, &session, last_send_started, now).await? {
            BatchCheck::Decided(result) => return Ok(result),
            BatchCheck::NotReceived(back) => r = back,
        }
    }
    if let Some(session) = r.ksef.unconfirmed_send.clone() {
        match ksef.find_live_invoice(&seller, &session, &r.content_hash).await {
            Ok(Some(invoice_reference)) => return mark_sent(ports, cfg, &r, session, invoice_reference, "RECONCILED_SENT", now).await,
            Ok(None) => {
                let detail = format!(
                    "session {session} holds no live invoice with hash {}: KSeF did not take the earlier attempt (or cancelled it); sending again",
                    r.content_hash
                );
                r = ports.store.transition(&r, Change::Reconciled { detail }, now).await?;
            }
            Err(f) => return on_read_failure(ports, cfg, r, f, now).await,
        }
    }

    let Some(archive_key) = r.storage.archive.clone() else {
        return on_failure(
            ports,
            cfg,
            r,
            relay_failure("the record names no archived bytes", "NO_ARCHIVE"),
            false,
            now,
        )
        .await;
    };
    let Some(object) = ports.archive.get(&archive_key).await? else {
        return on_failure(
            ports,
            cfg,
            r,
            relay_failure(format!("archived bytes {archive_key} are missing"), "NO_ARCHIVE"),
            false,
            now,
        )
        .await;
    };
    // Chosen at intake; a record registered before the relay kept the mode is read here.
    let mode = r
        .send_mode()
        .unwrap_or_else(|| SendMode::for_invoice(relay_fa3::read_identity(&object.bytes).is_ok_and(|i| i.has_attachment)));
    if mode == SendMode::Batch {
        return send_in_batch(ports, cfg, &client, &seller, r, &object.bytes, now).await;
    }
    let session = match ksef.session(&seller, now).await {
        Ok(s) => s,
        Err(f) => return on_failure(ports, cfg, r, f, false, now).await,
    };
    let session_ref = match opened_session(&session.reference) {
        Ok(s) => s,
        Err(f) => return on_failure(ports, cfg, r, f, false, now).await,
    };

    // 3. Record "about to send" before the POST.
    let r = ports
        .store
        .transition(
            &r,
            Change::SendStarted {
                session: session_ref.clone(),
            },
            now,
        )
        .await?;
    let opts = SendOptions {
        offline_mode: r.offline,
        hash_of_corrected_invoice: None,
    };
    match client.send_invoice(&session, &object.bytes, &opts).await {
        Ok(sent) => {
            let Ok(invoice_reference) = KsefReference::parse(&sent.reference) else {
                let f = relay_failure(
                    format!("KSeF answered with an unreadable invoice reference {:?}", sent.reference),
                    "BAD_REFERENCE",
                );
                return on_failure(ports, cfg, r, f, true, now).await;
            };
            mark_sent(ports, cfg, &r, session_ref, invoice_reference, "SENT", now).await
        }
        Err(f) => {
            if f.class == ErrorClass::NeedsNewSession {
                ksef.drop_session(&seller, &session.reference).await;
            }
            if f.class == ErrorClass::NeedsReauth {
                client.forget_access_token().await;
            }
            // Only a transient failure (timeout, reset, 5xx) may hide a receipt; KSeF refused
            // everything else outright.
            let maybe_received = f.class == ErrorClass::Transient;
            on_failure(ports, cfg, r, f, maybe_received, now).await
        }
    }
}

fn last_send_started(history: &[HistoryEntry]) -> Option<DateTime<Utc>> {
    history
        .iter()
        .rev()
        .find(|h| matches!(h.event, HistoryEvent::SendStarted { .. }))
        .map(|h| h.at)
}

/// How long to wait before looking at a batch session again: a quarter of the time since the
/// send, between the first poll delay and 15 minutes (seconds at first, minutes for a slow one).
fn batch_wait(cfg: &SendConfig, since: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Duration {
    let elapsed = since.map(|t| until(t, now)).unwrap_or_default();
    (elapsed / 4).clamp(cfg.first_poll_delay, Duration::from_secs(15 * 60).max(cfg.first_poll_delay))
}

async fn await_batch<S: SendStore + ?Sized>(
    ports: &SendPorts<'_, S>,
    r: &DocumentRecord,
    detail: String,
    wait: Duration,
    outcome: &'static str,
    now: DateTime<Utc>,
) -> Result<StageResult, StageError> {
    let check_at = now + chrono::Duration::from_std(wait).unwrap_or_default();
    let r = ports.store.transition(r, Change::AwaitingBatch { detail, check_at }, now).await?;
    done(again(&r, wait), outcome, Some(r))
}

/// Sends an invoice with an attachment in a batch session of its own.
async fn send_in_batch<S: SendStore + ?Sized>(
    ports: &SendPorts<'_, S>,
    cfg: &SendConfig,
    client: &KsefClient,
    seller: &Nip,
    r: DocumentRecord,
    bytes: &[u8],
    now: DateTime<Utc>,
) -> Result<StageResult, StageError> {
    let archive = match BatchArchive::zip(&[(format!("{}.xml", r.content_hash.to_hex()), bytes.to_vec())]) {
        Ok(a) => a,
        Err(f) => return on_failure(ports, cfg, r, f, false, now).await,
    };
    // Opening sends no invoice: a failure here cannot hide a receipt.
    let batch = match client.open_batch_session(&archive, MAX_PART_SIZE, r.offline).await {
        Ok(b) => b,
        Err(f) => return on_failure(ports, cfg, r, f, false, now).await,
    };
    let batch_ref = match opened_session(&batch.reference) {
        Ok(s) => s,
        Err(f) => return on_failure(ports, cfg, r, f, false, now).await,
    };
    let r = ports
        .store
        .transition(
            &r,
            Change::SendStarted {
                session: batch_ref.clone(),
            },
            now,
        )
        .await?;
    tracing::info!(document = %r.key, trace_id = %r.trace_id, seller_nip = %seller, session = %batch_ref, "invoice with an attachment: sending in a batch session");
    // From here on KSeF may end up with the invoice. A refused upload (429, 4xx) left the batch
    // without its part, so it can never carry the invoice: the next attempt opens a new one. A
    // transient failure may hide a stored part: the next attempt reconciles (closes) first.
    if let Err(f) = client.upload_batch_parts(&batch).await {
        let maybe_stored = f.class == ErrorClass::Transient;
        return on_failure(ports, cfg, r, f, maybe_stored, now).await;
    }
    if let Err(f) = client.close_batch_session(&batch.reference).await {
        return on_failure(ports, cfg, r, f, true, now).await;
    }
    let detail = format!("batch session {batch_ref} closed; KSeF is processing it");
    await_batch(ports, &r, detail, cfg.first_poll_delay, "BATCH_CLOSED", now).await
}

enum BatchCheck {
    /// The attempt is decided (sent, waiting, retry scheduled).
    Decided(StageResult),
    /// KSeF did not take the invoice in that session: send it again (the record is updated).
    NotReceived(DocumentRecord),
}

/// Reconciles an unconfirmed send in batch session `session`.
async fn reconcile_batch<S: SendStore + ?Sized>(
    ports: &SendPorts<'_, S>,
    cfg: &SendConfig,
    client: &KsefClient,
    r: DocumentRecord,
    session: &KsefReference,
    sent_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<BatchCheck, StageError> {
    let decided = |res: Result<StageResult, StageError>| res.map(BatchCheck::Decided);
    let wait = batch_wait(cfg, sent_at, now);
    let found = match client.find_in_batch(session.as_str(), &r.content_hash).await {
        Ok(found) => found,
        Err(f) => return decided(on_read_failure(ports, cfg, r, f, now).await),
    };
    match found {
        BatchInvoice::SessionOpen => {
            // Opened but never closed (a crash or a failed upload or close): close it now. With
            // the part uploaded KSeF processes it; without, it refuses and nothing was received.
            match client.close_batch_session(session.as_str()).await {
                Ok(()) => {
                    let detail = format!("batch session {session} was left open by an earlier attempt; closed it");
                    decided(await_batch(ports, &r, detail, wait, "BATCH_CLOSED", now).await)
                }
                Err(f)
                    if matches!(
                        f.class,
                        ErrorClass::Transient | ErrorClass::RateLimited { .. } | ErrorClass::NeedsReauth
                    ) =>
                {
                    if f.class == ErrorClass::NeedsReauth {
                        client.forget_access_token().await;
                    }
                    decided(on_failure(ports, cfg, r, f, true, now).await)
                }
                Err(f) => {
                    let detail = format!(
                        "batch session {session} could not be closed ({}): KSeF did not take the earlier attempt; sending again",
                        f.message
                    );
                    Ok(BatchCheck::NotReceived(
                        ports.store.transition(&r, Change::Reconciled { detail }, now).await?,
                    ))
                }
            }
        }
        // Any copy with our hash is ours, whatever its status: the status stage accepts,
        // rejects (with KSeF's words) or resends it.
        BatchInvoice::Listed(invoice_reference) => {
            decided(mark_sent(ports, cfg, &r, session.clone(), invoice_reference, "RECONCILED_SENT", now).await)
        }
        BatchInvoice::ListedUnreadable(f) => decided(on_failure(ports, cfg, r, f, true, now).await),
        // Absence means something only once the session is final: KSeF may not have listed it yet.
        BatchInvoice::NotYet { status } => {
            let detail = format!("batch session {session}: {status}, our invoice not listed yet; checking again later");
            decided(await_batch(ports, &r, detail, wait, "BATCH_PROCESSING", now).await)
        }
        // Charged, so a batch that keeps failing ends in FAILED rather than a loop.
        BatchInvoice::Missing(f) => decided(on_failure(ports, cfg, r, f, false, now).await),
    }
}

/// KSeF's reference for a session it opened, or the failure to record.
fn opened_session(raw: &str) -> Result<KsefReference, Failure> {
    KsefReference::parse(raw).map_err(|_| {
        relay_failure(
            format!("KSeF opened a session with an unreadable reference {raw:?}"),
            "BAD_REFERENCE",
        )
    })
}

/// KSeF has the invoice as `invoice_reference`: SENT, and a status check queued.
async fn mark_sent<S: SendStore + ?Sized>(
    ports: &SendPorts<'_, S>,
    cfg: &SendConfig,
    r: &DocumentRecord,
    session: KsefReference,
    invoice_reference: KsefReference,
    outcome: &'static str,
    now: DateTime<Utc>,
) -> Result<StageResult, StageError> {
    let change = Change::Sent {
        session: session.clone(),
        invoice_reference: invoice_reference.clone(),
    };
    let r = ports.store.transition(r, change, now).await?;
    let msg = StatusRequest::first(&r, session, invoice_reference);
    ports
        .status_queue
        .send(
            OutgoingMessage::new(msg.to_json())
                .with_trace_id(&r.trace_id)
                .delayed(cfg.first_poll_delay),
        )
        .await?;
    done(QueueAction::Delete, outcome, Some(r))
}

/// The same document's next send attempt, after `delay`, for the step just written.
fn again(r: &DocumentRecord, delay: Duration) -> QueueAction {
    QueueAction::Replace {
        body: SendRequest::for_record(r).to_json(),
        delay,
    }
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

/// A reconciliation read failed (is our invoice in that session?). It sent nothing and says
/// nothing about the invoice: it spends the recovery limit, never the send budget, and is
/// never a rejection. The unconfirmed send stays unconfirmed.
async fn on_read_failure<S: SendStore + ?Sized>(
    ports: &SendPorts<'_, S>,
    cfg: &SendConfig,
    r: DocumentRecord,
    f: Failure,
    now: DateTime<Utc>,
) -> Result<StageResult, StageError> {
    let recoveries = r.recoveries + 1;
    let (delay, outcome) = match cfg.policy.decide_read_now(&f.class, recoveries, now) {
        RetryDecision::RetryAfter { delay } => (delay, "RETRY"),
        RetryDecision::FixAndRetry => (Duration::ZERO, "RETRY"),
        RetryDecision::Exhausted => {
            let f = Failure {
                message: format!(
                    "{} (reconciliation read; {} recoveries spent, the limit is {})",
                    f.message,
                    r.recoveries,
                    cfg.policy.max_recoveries()
                ),
                ..f
            };
            return give_up(ports.store, ports.archive, &r, f, now).await;
        }
        // A rate limit or an operator's problem: the same as for any call, uncharged.
        _ => return on_failure(ports, cfg, r, f, true, now).await,
    };
    relay_observe::logging::note_error_class(f.class.name());
    tracing::warn!(document = %r.key, trace_id = %r.trace_id, class = f.class.name(), code = ?f.code, recoveries, "reconciliation read failed");
    let retry_at = now + chrono::Duration::from_std(delay).unwrap_or_default();
    let change = Change::RecoveryScheduled {
        failure: f,
        retry_at,
        maybe_received: true,
    };
    let r = ports.store.transition(&r, change, now).await?;
    done(again(&r, delay), outcome, Some(r))
}

/// Classifies `f` with the retry policy and records the decision.
async fn on_failure<S: SendStore + ?Sized>(
    ports: &SendPorts<'_, S>,
    cfg: &SendConfig,
    r: DocumentRecord,
    f: Failure,
    maybe_received: bool,
    now: DateTime<Utc>,
) -> Result<StageResult, StageError> {
    let charge = RetryPolicy::charge(&f.class);
    let charged = charge == Charge::Attempt;
    let spent = match charge {
        Charge::Attempt => r.attempts + 1,
        Charge::Recovery => r.recoveries + 1,
        Charge::Nothing => r.attempts,
    };
    relay_observe::logging::note_error_class(f.class.name());
    tracing::warn!(document = %r.key, trace_id = %r.trace_id, class = f.class.name(), code = ?f.code, attempts = r.attempts + u32::from(charged), recoveries = r.recoveries, "send attempt failed");
    let retry = |retry_at: DateTime<Utc>, charged: bool| Change::RetryScheduled {
        failure: f.clone(),
        retry_at,
        charged,
        maybe_received,
    };
    match cfg.policy.decide_now(&f.class, spent, now) {
        RetryDecision::RetryAfter { delay } => {
            let at = now + chrono::Duration::from_std(delay).unwrap_or_default();
            let r = ports.store.transition(&r, retry(at, charged), now).await?;
            done(again(&r, delay), "RETRY", Some(r))
        }
        RetryDecision::FixAndRetry => {
            // A new session or login: nothing was sent, so the recovery limit pays, not the budget.
            let change = Change::RecoveryScheduled {
                failure: f.clone(),
                retry_at: now,
                maybe_received,
            };
            let r = ports.store.transition(&r, change, now).await?;
            done(again(&r, Duration::ZERO), "RETRY", Some(r))
        }
        RetryDecision::ParkUntil { until: t } => {
            let r = ports.store.transition(&r, retry(t, false), now).await?;
            done(again(&r, until(now, t)), "PARKED", Some(r))
        }
        RetryDecision::ParkForOperator => {
            // Not the invoice's fault and not charged; `send` parks the seller's work (the wait
            // grows with the seller's strikes) and the alarm fires.
            let t = now + chrono::Duration::from_std(RetryPolicy::operator_wait(1, 0.0)).unwrap_or_default();
            let r = ports.store.transition(&r, retry(t, false), now).await?;
            done(again(&r, until(now, t)), OPERATOR_PARKED, Some(r))
        }
        RetryDecision::Exhausted => {
            let f = match charge {
                Charge::Recovery => Failure {
                    message: format!(
                        "{} ({} recoveries (new sessions, logins, reconciliation reads) spent, the limit is {})",
                        f.message,
                        r.recoveries,
                        cfg.policy.max_recoveries()
                    ),
                    ..f
                },
                _ => f,
            };
            give_up(ports.store, ports.archive, &r, f, now).await
        }
        RetryDecision::Reject => {
            let r = ports
                .store
                .transition(&r, Change::Rejected { failures: vec![f.clone()] }, now)
                .await?;
            report_for_correction(ports.archive, ports.corrections_queue, &r, "REJECTED", f).await?;
            done(QueueAction::Delete, "REJECTED", Some(r))
        }
        RetryDecision::ResolveDuplicate => {
            // KSeF reports duplicates through the invoice status, where the status function
            // proves whether the original is ours; a synchronous duplicate cannot be proven here.
            let r = ports.store.transition(&r, Change::Conflict { failure: f.clone() }, now).await?;
            report_for_correction(ports.archive, ports.corrections_queue, &r, "CONFLICT", f).await?;
            done(QueueAction::Delete, "CONFLICT", Some(r))
        }
    }
}
