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

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use relay_domain::ports::{OutgoingMessage, StoreError};
use relay_domain::{
    Change, ClaimPurpose, ClaimRefused, DocumentKey, DocumentRecord, DocumentState, HistoryEntry, HistoryEvent, Nip, SendMode,
};

use crate::availability::AvailabilityLook;
use crate::follow_up::{catch_up, REDRIVE_GRACE};
use crate::messages::SendRequest;
use crate::queue_action::{done, stage_document, QueueAction, StageError, StageResult};
use crate::seller_block::{parked_failure, SellerBlock, SellerGate};
use crate::sessions::KsefContexts;
use attempt::{again, on_failure, relay_failure, until, Attempt, Channel, Reconciled, OPERATOR_PARKED};
pub use attempt::{SendConfig, SendPorts, SendStore};
pub use batch::BatchConfig;

/// The outcome of a document parked because its seller's work is parked.
const SELLER_PARKED: &str = "SELLER_PARKED";
/// The outcome of a document held because KSeF is declared (or seen) down.
pub const AVAILABILITY_HELD: &str = "AVAILABILITY_HELD";
/// The outcome of an attempt whose failure is retried (its record's `last_error` is that failure).
const RETRIED: &str = "RETRY";
/// What one call of the stage reads once for all the documents it handles, when first needed:
/// KSeF's availability (a batch's members, and a lone send's hold check and offline check,
/// see one reading), and each seller's gate while it is open (a gate that is not open is read
/// again for each document: taking the probe is a write only one may win).
#[derive(Default)]
struct Looks {
    availability: tokio::sync::OnceCell<AvailabilityLook>,
    open: std::sync::Mutex<HashSet<Nip>>,
}

impl Looks {
    async fn availability(&self, ksef: &KsefContexts, now: DateTime<Utc>) -> &AvailabilityLook {
        self.availability.get_or_init(|| ksef.availability_look(now)).await
    }

    async fn gate(&self, ksef: &KsefContexts, seller: &Nip, now: DateTime<Utc>) -> SellerGate {
        if self.open.lock().expect("open lock").contains(seller) {
            return SellerGate::Open;
        }
        let gate = ksef.seller_gate(seller, now).await;
        if matches!(gate, SellerGate::Open) {
            self.open.lock().expect("open lock").insert(seller.clone());
        }
        gate
    }
}

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
    let looks = Looks::default();
    let mut result = send_document(ports, ksef, cfg, req, now, &looks, &mut probing).await;
    after_attempt(ksef, &req.document.seller_nip, &mut result, probing, now).await;
    result
}

/// Parks the seller's work when the attempt met an operator's problem; clears that block when a
/// probe got through.
async fn after_attempt(ksef: &KsefContexts, seller: &Nip, result: &mut Result<StageResult, StageError>, probing: bool, now: DateTime<Utc>) {
    // The relay's own evidence of KSeF's availability: a call that failed as KSeF being down
    // counts, one that got through resets the count (`crate::availability`).
    if let Ok(res) = result {
        if res.outcome == RETRIED {
            if let Some(f) = res.record.as_ref().and_then(|r| r.last_error.as_ref()) {
                ksef.record_call(seller, Some(f), now).await;
            }
        } else if GOT_THROUGH.contains(&res.outcome) {
            ksef.record_call(seller, None, now).await;
        }
    }
    if let Ok(res) = result {
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
}

#[tracing::instrument(name = "send", skip_all, fields(trace_id = %req.trace_id, seller_nip = %req.document.seller_nip, document = %req.document, erp_doc_id, state, error_class))]
async fn send_document<S: SendStore + ?Sized>(
    ports: &SendPorts<'_, S>,
    ksef: &KsefContexts,
    cfg: &SendConfig,
    req: &SendRequest,
    now: DateTime<Utc>,
    looks: &Looks,
    probing: &mut bool,
) -> Result<StageResult, StageError> {
    match ready_to_send(ports, ksef, cfg, req, now, looks, probing).await? {
        Ok((r, sent_at)) => send_claimed(ports, ksef, cfg, r, sent_at, now, looks).await,
        Err(answer) => Ok(answer),
    }
}

/// The checks, the seller's gate and the claim: the claimed record (and when its last send was
/// started), or the stage's answer when this message has nothing to send.
async fn ready_to_send<S: SendStore + ?Sized>(
    ports: &SendPorts<'_, S>,
    ksef: &KsefContexts,
    cfg: &SendConfig,
    req: &SendRequest,
    now: DateTime<Utc>,
    looks: &Looks,
    probing: &mut bool,
) -> Result<Result<(DocumentRecord, Option<DateTime<Utc>>), StageResult>, StageError> {
    let doc = match stage_document(ports.store, ports.archive, &req.document, &req.trace_id, "send").await? {
        Ok(doc) => doc,
        Err(answer) => return Ok(Err(answer)),
    };
    let sent_at = last_send_started(&doc.history);
    let r = doc.record;
    if r.state != DocumentState::Queued || req.is_behind(&r) {
        // Not this message's work any more; but the write that moved the document on may have
        // been the last thing an earlier handler did: make sure its follow-up exists.
        return catch_up(ports, r, REDRIVE_GRACE, now).await.map(Err);
    }
    if r.content_hash != req.content_hash {
        // The document was resubmitted with new content; its own message is on the queue.
        return done(QueueAction::Delete, "STALE", Some(r)).map(Err);
    }
    if let Some(t) = r.next_attempt_at.filter(|t| *t > now) {
        return done(QueueAction::Requeue { delay: until(now, t) }, "NOT_YET", Some(r)).map(Err);
    }
    // KSeF is declared (or seen) down: wait for the poll to see it back, without calling KSeF
    // and without spending the budget.
    if let Some(a) = looks.availability(ksef, now).await.hold.clone() {
        return hold_for_availability(ports, ksef, r, &a, now).await.map(Err);
    }
    // The seller's work is parked for an operator: wait without calling KSeF, unless this
    // attempt is the one that probes.
    match looks.gate(ksef, &req.document.seller_nip, now).await {
        SellerGate::Open => {}
        SellerGate::Probe(_) => *probing = true,
        SellerGate::Parked(block) => return park_for_seller(ports, r, &block, now).await.map(Err),
    }
    // 1. Claim.
    Ok(claim(ports, cfg, &r, now).await?.map(|r| (r, sent_at)))
}

/// A claimed document: reconcile an unconfirmed send, then send by its channel.
async fn send_claimed<S: SendStore + ?Sized>(
    ports: &SendPorts<'_, S>,
    ksef: &KsefContexts,
    cfg: &SendConfig,
    r: DocumentRecord,
    sent_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    looks: &Looks,
) -> Result<StageResult, StageError> {
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

    // Offline: the ERP's marking or a send after the issue day, the deadline, the QR codes.
    let windows = looks.availability(ksef, now).await.declared_failures();
    let r = crate::offline_send::check(ports, ksef, r, &windows, now).await?;
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

/// Sends the Batch-mode documents `reqs` name, all of ONE seller, together in one batch session
/// (up to KSeF's per-session limits, [`BatchConfig`]); one answer per request, in order.
///
/// Each member is checked and claimed as a lone send would be; one whose claim fails, or that is
/// not plainly due for a batch (an unconfirmed earlier send to reconcile, an online document),
/// takes the lone path instead and stays out of the batch. The rest go through
/// [`batch::submit_group`]: recorded, opened, uploaded, closed, each member left awaiting its
/// batch. A parked seller's requests each take the lone path (which waits, or probes).
pub async fn send_batch<S: SendStore + ?Sized>(
    ports: &SendPorts<'_, S>,
    ksef: &KsefContexts,
    cfg: &SendConfig,
    batch_cfg: &BatchConfig,
    reqs: &[SendRequest],
    now: DateTime<Utc>,
) -> Vec<Result<StageResult, StageError>> {
    let mut answers: Vec<Option<Result<StageResult, StageError>>> = reqs.iter().map(|_| None).collect();
    let Some(seller) = reqs.first().map(|r| r.document.seller_nip.clone()) else {
        return Vec::new();
    };
    let looks = Looks::default();
    let gate_open = matches!(looks.gate(ksef, &seller, now).await, SellerGate::Open);
    let (mut members, mut unconfirmed) = (Vec::new(), Vec::new());
    for (i, req) in reqs.iter().enumerate() {
        batch::let_others_run().await;
        if !gate_open || req.document.seller_nip != seller || members.len() + unconfirmed.len() >= batch_cfg.max_members {
            answers[i] = Some(send(ports, ksef, cfg, req, now).await);
            continue;
        }
        let mut probing = false;
        match ready_to_send(ports, ksef, cfg, req, now, &looks, &mut probing).await {
            Err(e) => answers[i] = Some(Err(e)),
            Ok(Err(answer)) => answers[i] = Some(Ok(answer)),
            Ok(Ok((r, sent_at))) => {
                if let Some((session, SendMode::Batch)) = r.unconfirmed_send() {
                    unconfirmed.push(batch::Unconfirmed {
                        index: i,
                        record: r,
                        sent_at,
                        session,
                    });
                } else if r.unconfirmed_send().is_some() || r.send_mode() != Some(SendMode::Batch) {
                    let mut res = send_claimed(ports, ksef, cfg, r, sent_at, now, &looks).await;
                    after_attempt(ksef, &seller, &mut res, probing, now).await;
                    answers[i] = Some(res);
                } else {
                    // Offline members go in a session of their own (`offlineMode` is per session).
                    let windows = looks.availability(ksef, now).await.declared_failures();
                    match crate::offline_send::check(ports, ksef, r, &windows, now).await {
                        Ok(r) => members.push(batch::Member { index: i, record: r }),
                        Err(e) => answers[i] = Some(Err(e)),
                    }
                }
            }
        }
    }
    // A batch is going anyway: the seller's Online documents whose online send has not
    // happened yet go in it too, rather than wait for their turn in KSeF's online windows.
    let room = batch_cfg.max_members.saturating_sub(members.len() + unconfirmed.len());
    let moved = match ksef.online_backlog() {
        Some(backlog) if gate_open && !members.is_empty() && room > 0 => {
            let taken: HashSet<DocumentKey> = reqs.iter().map(|r| r.document.clone()).collect();
            Box::pin(move_queued_online(ports, cfg, backlog, &seller, &taken, room, now)).await
        }
        _ => Vec::new(),
    };
    let moved_from = reqs.len();
    let mut moved_records = Vec::with_capacity(moved.len());
    for (j, r) in moved.into_iter().enumerate() {
        moved_records.push(r.clone());
        members.push(batch::Member {
            index: moved_from + j,
            record: r,
        });
    }
    if !members.is_empty() || !unconfirmed.is_empty() {
        for (i, mut res) in Box::pin(batch::submit_group(ports, ksef, cfg, batch_cfg, unconfirmed, members, now)).await {
            after_attempt(ksef, &seller, &mut res, false, now).await;
            if i >= moved_from {
                // No message of ours carries it: its follow-up is sent here.
                Box::pin(follow_up_moved(ports, &moved_records[i - moved_from], res)).await;
            } else {
                answers[i] = Some(res);
            }
        }
    }
    answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(StoreError::Unavailable("a batch member was left without an answer".into()).into())))
        .collect()
}

/// The reason a moved document's history gives.
const MOVED_REASON: &str =
    "its seller's batch session was going anyway and its online send had not happened yet (waiting for its turn in KSeF's online windows)";

/// Takes `seller`'s Online documents whose online send has not happened yet into the batch
/// being formed (at most `room`, none named in `taken`), those waiting for their turn (a
/// `next_attempt_at` still to come: parked by the governor, or a retry): each claimed as a send would be, then
/// [`Change::ModeChanged`] to Batch with the reason in its history, and taken out of the online
/// backlog. The records, claimed and Batch-mode, ready to join.
///
/// What a death leaves, at each write: after the claim, the lease runs out and its online
/// message sends it online as before; after `ModeChanged`, the record is Batch-mode and a step
/// ahead of its online message, which (when it comes, or the sweeper) finds it behind and
/// re-drives it as a Batch send: it is never sent online. Every later write is the batch's own.
/// A document the online path holds or has sent (a live lease, an unconfirmed send, past
/// QUEUED) is left alone; the claim settles a race with its online message.
async fn move_queued_online<S: SendStore + ?Sized>(
    ports: &SendPorts<'_, S>,
    cfg: &SendConfig,
    backlog: &ksef_client::OnlineBacklog,
    seller: &Nip,
    taken: &HashSet<DocumentKey>,
    room: usize,
    now: DateTime<Utc>,
) -> Vec<DocumentRecord> {
    // Entries whose projected send is well past are sent by now (or their record says so).
    let since = now - chrono::Duration::minutes(1);
    let candidates = match backlog.queued_online(seller, since, now).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(seller_nip = %seller, error = %e, "the online backlog could not be read; the batch takes only Batch documents");
            return Vec::new();
        }
    };
    let mut moved = Vec::new();
    for id in candidates {
        if moved.len() >= room {
            break;
        }
        let Ok(key) = DocumentKey::parse_storage_id(&id) else { continue };
        if taken.contains(&key) {
            continue;
        }
        // Waiting (parked for its turn in KSeF's windows, or for a retry): one about to be sent
        // now goes online, where it is accepted sooner than in a batch.
        let fits = |r: &DocumentRecord, claimed: bool| {
            r.state == DocumentState::Queued
                && r.send_mode() == Some(SendMode::Online)
                && r.corrects.is_none()
                && r.unconfirmed_send().is_none()
                && r.next_attempt_at.is_some_and(|t| t > now)
                && (claimed || r.lease.as_ref().is_none_or(|l| l.until <= now))
        };
        let read = match ports.store.get(&key).await {
            Ok(Some(doc)) if fits(&doc.record, false) => doc.record,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(document = %key, error = %e, "reading a queued online document failed; it stays online");
                continue;
            }
        };
        let Ok(r) = ports
            .store
            .claim_as_read(&read, ClaimPurpose::Send, &cfg.owner, now, cfg.lease)
            .await
        else {
            continue;
        };
        if !fits(&r, true) {
            // Not movable as claimed: its lease runs out, its own message goes on.
            continue;
        }
        let change = Change::ModeChanged {
            mode: SendMode::Batch,
            reason: MOVED_REASON.into(),
        };
        match ports.store.transition(&r, change, now).await {
            Ok(r) => moved.push(r),
            Err(e) => tracing::warn!(document = %key, error = %e, "moving a queued online document to batch failed; it stays online"),
        }
    }
    if !moved.is_empty() {
        let ids: Vec<String> = moved.iter().map(|r| r.key.storage_id()).collect();
        tracing::info!(seller_nip = %seller, moved = moved.len(), "queued online documents join the seller's batch");
        if let Err(e) = backlog.forget(seller, &ids, now).await {
            tracing::warn!(seller_nip = %seller, error = %e, "the online backlog still counts documents that went in a batch; it frees them within the hour");
        }
    }
    moved
}

/// The follow-up of a document that joined a batch without a message of its own (moved from
/// Online): what its message's action would have been, as a new message. An answer that is
/// not a delayed retry (done, an infrastructure error, the DLQ) sends nothing: its old online
/// message, a step behind, or the sweeper re-drives it from its record if it is still open.
async fn follow_up_moved<S: SendStore + ?Sized>(ports: &SendPorts<'_, S>, moved: &DocumentRecord, res: Result<StageResult, StageError>) {
    let Ok(res) = res else { return };
    let Some(r) = res.record.as_ref() else { return };
    let body = match &res.action {
        QueueAction::Requeue { delay } => Some((SendRequest::for_record(r).to_json(), *delay)),
        QueueAction::Replace { body, delay } => Some((body.clone(), *delay)),
        _ => None,
    };
    if let Some((body, delay)) = body {
        let m = OutgoingMessage::new(body)
            .with_trace_id(&moved.trace_id)
            .delayed(delay.min(relay_domain::ports::MAX_DELAY));
        if let Err(e) = ports.send_queue.send(m).await {
            tracing::warn!(document = %moved.key, error = %e, "the follow-up of a document moved to batch was not sent; the sweeper re-drives it");
        }
    }
}

/// Claims the document for this attempt (`r`: the record as the stage just read it, written
/// over only if nobody wrote since), or the answer when another holds it.
async fn claim<S: SendStore + ?Sized>(
    ports: &SendPorts<'_, S>,
    cfg: &SendConfig,
    r: &DocumentRecord,
    now: DateTime<Utc>,
) -> Result<Result<DocumentRecord, StageResult>, StageError> {
    let busy = |delay| done(QueueAction::Requeue { delay }, "BUSY", None);
    let answer = match ports.store.claim_as_read(r, ClaimPurpose::Send, &cfg.owner, now, cfg.lease).await {
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
    wait_uncharged(ports, r, parked_failure(block), block.until, SELLER_PARKED, now).await
}

/// KSeF is down for everyone: the document waits for the next poll, not charged, with a history
/// line naming the state and its source.
async fn hold_for_availability<S: SendStore + ?Sized>(
    ports: &SendPorts<'_, S>,
    ksef: &KsefContexts,
    r: DocumentRecord,
    a: &relay_domain::Availability,
    now: DateTime<Utc>,
) -> Result<StageResult, StageError> {
    let failure = relay_domain::Failure::new(
        relay_domain::ErrorClass::Transient,
        relay_domain::ErrorSource::Ksef {
            operation: "availability".into(),
        },
        format!("sending held: {}", a.describe()),
    )
    .with_code(a.state.as_str());
    wait_uncharged(
        ports,
        r,
        failure,
        crate::availability::hold_until(a, ksef.availability_poll_every(), now),
        AVAILABILITY_HELD,
        now,
    )
    .await
}

/// The document waits until `retry_at` without a KSeF call and without spending its budget; the
/// history says why (`failure`).
async fn wait_uncharged<S: SendStore + ?Sized>(
    ports: &SendPorts<'_, S>,
    r: DocumentRecord,
    failure: relay_domain::Failure,
    retry_at: DateTime<Utc>,
    outcome: &'static str,
    now: DateTime<Utc>,
) -> Result<StageResult, StageError> {
    let delay = until(now, retry_at).max(Duration::from_secs(1));
    if r.lease.as_ref().is_some_and(|l| l.until > now) {
        // Another instance holds it; it will meet the block itself.
        return done(QueueAction::Requeue { delay }, outcome, None);
    }
    let change = Change::RetryScheduled {
        failure,
        retry_at,
        charged: false,
        // Keep an unconfirmed send unconfirmed: it is reconciled when sending resumes.
        maybe_received: r.ksef.unconfirmed_send.is_some(),
    };
    match ports.store.transition(&r, change, now).await {
        Ok(r) => done(again(&r, delay), outcome, Some(r)),
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
