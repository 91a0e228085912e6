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
//! What every channel shares lives here: the checks and the claim, the seller's gate, SENT and
//! its status check, and the retry policy. Every failure goes through the one taxonomy and the
//! retry policy: transient → retry later (charged), 429 → park until Retry-After (not charged),
//! new session / re-auth → fix and retry (the recovery limit, not the send budget), a failed
//! reconciliation read → retry later (the recovery limit too: it sent nothing), an operator's
//! problem (credentials, permissions, IP block, unknown status) → park the seller's work
//! ([`crate::seller_block`], not charged, never REJECTED), permanent (the invoice's content) →
//! REJECTED and the corrections queue, budget spent → FAILED and the DLQ.

mod batch;
mod online;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ksef_client::KsefClient;
use relay_domain::ports::{DocumentClaims, DocumentRegistry, DocumentUpdates, OutgoingMessage, StoreError};
use relay_domain::{
    Change, Charge, ClaimPurpose, ClaimRefused, DocumentRecord, DocumentState, ErrorClass, ErrorSource, Failure, HistoryEntry,
    HistoryEvent, KsefReference, RetryDecision, RetryPolicy, SendMode,
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

/// A way to KSeF. Each channel submits in its own way and reconciles the sends it left
/// unconfirmed; the claim, the seller's gate, SENT and the retry policy are the stage's
/// ([`Attempt`]).
trait Channel {
    /// The send in `session` has no known result (a timeout, a crash, a batch KSeF has not
    /// processed yet): find out whether KSeF has the invoice before anything is sent again.
    async fn reconcile<S: SendStore + ?Sized>(
        &self,
        a: &Attempt<'_, S>,
        r: DocumentRecord,
        session: KsefReference,
    ) -> Result<Reconciled, StageError>;

    /// Sends the invoice's exact `bytes`: SendStarted before KSeF can receive anything.
    async fn submit<S: SendStore + ?Sized>(&self, a: &Attempt<'_, S>, r: DocumentRecord, bytes: &[u8]) -> Result<StageResult, StageError>;
}

/// What reconciling an unconfirmed send found.
enum Reconciled {
    /// The attempt is decided (sent, waiting, retry scheduled).
    Decided(StageResult),
    /// KSeF did not take the invoice: send it again (the record says so).
    NotReceived(DocumentRecord),
}

/// One attempt at a claimed document, with its seller's client ready: what its steps share.
struct Attempt<'a, S: SendStore + ?Sized> {
    ports: &'a SendPorts<'a, S>,
    ksef: &'a KsefContexts,
    cfg: &'a SendConfig,
    client: Arc<KsefClient>,
    /// When the document's last send was started (its history).
    sent_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
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

impl<S: SendStore + ?Sized> Attempt<'_, S> {
    /// KSeF has the invoice as `invoice_reference`: SENT, and a status check queued.
    async fn sent(
        &self,
        r: &DocumentRecord,
        session: KsefReference,
        invoice_reference: KsefReference,
        outcome: &'static str,
    ) -> Result<StageResult, StageError> {
        let change = Change::Sent {
            session: session.clone(),
            invoice_reference: invoice_reference.clone(),
        };
        let r = self.ports.store.transition(r, change, self.now).await?;
        let msg = StatusRequest::first(&r, session, invoice_reference);
        self.ports
            .status_queue
            .send(
                OutgoingMessage::new(msg.to_json())
                    .with_trace_id(&r.trace_id)
                    .delayed(self.cfg.first_poll_delay),
            )
            .await?;
        done(QueueAction::Delete, outcome, Some(r))
    }

    /// The attempt failed with `f`: the retry policy decides ([`on_failure`]).
    async fn fail(&self, r: DocumentRecord, f: Failure, maybe_received: bool) -> Result<StageResult, StageError> {
        on_failure(self.ports, self.cfg, r, f, maybe_received, self.now).await
    }

    /// A reconciliation read failed (is our invoice in that session?). It sent nothing and says
    /// nothing about the invoice: it spends the recovery limit, never the send budget, and is
    /// never a rejection. The unconfirmed send stays unconfirmed.
    async fn read_failed(&self, r: DocumentRecord, f: Failure) -> Result<StageResult, StageError> {
        let (cfg, now) = (self.cfg, self.now);
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
                return give_up(self.ports.store, self.ports.archive, &r, f, now).await;
            }
            // A rate limit or an operator's problem: the same as for any call, uncharged.
            _ => return self.fail(r, f, true).await,
        };
        relay_observe::logging::note_error_class(f.class.name());
        tracing::warn!(document = %r.key, trace_id = %r.trace_id, class = f.class.name(), code = ?f.code, recoveries, "reconciliation read failed");
        let retry_at = now + chrono::Duration::from_std(delay).unwrap_or_default();
        let change = Change::RecoveryScheduled {
            failure: f,
            retry_at,
            maybe_received: true,
        };
        let r = self.ports.store.transition(&r, change, now).await?;
        done(again(&r, delay), outcome, Some(r))
    }
}

fn last_send_started(history: &[HistoryEntry]) -> Option<DateTime<Utc>> {
    history
        .iter()
        .rev()
        .find(|h| matches!(h.event, HistoryEvent::SendStarted { .. }))
        .map(|h| h.at)
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
