//! The status use case: follow a sent invoice until KSeF decides, then finish the document.
//!
//! Polls with growing delays (seconds, then minutes, then hours; the client's limiter keeps
//! every call inside KSeF's invoiceStatus limits). On 200: the UPO is downloaded and archived at
//! `upo/{sellerNip}/{ksefNumber}.xml`, the invoice's QR code (KOD I, labelled with the KSeF
//! number) is written at `qr/{sellerNip}/{ksefNumber}-kod1.png|svg`, the document becomes
//! ACCEPTED naming both, the outbox says so. Both writes come before the state change and give
//! the same bytes each time, so a stage that dies between them and the change is simply run
//! again; one that dies after the change has its outbox rewritten from the record (`catch_up`). On
//! 440 (duplicate): ACCEPTED only if the original is provably ours (its UPO's SkrotDokumentu is
//! our hash), else CONFLICT. On 405/550/500: back to the send queue (a new session), charged to
//! the budget. On other 4xx: REJECTED with KSeF's messages verbatim and the corrections queue.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ksef_client::{Duplicate, Environment, InvoiceOutcome, KsefClient};
use relay_domain::ports::{DocumentRegistry, DocumentUpdates, ObjectBody, OutgoingMessage};
use relay_domain::storage_keys::upo_key;
use relay_domain::{Change, DocumentRecord, DocumentState, ErrorClass, ErrorSource, Failure, KsefNumber, RetryDecision, RetryPolicy};

use crate::follow_up::{catch_up, FollowUpPorts, REDRIVE_GRACE};
use crate::messages::{report_for_correction, SendRequest, StatusRequest};
use crate::outbox::{give_up, OutboxResult};
use crate::queue_action::{done, stage_document, QueueAction, StageError, StageResult};
use crate::seller_block::SellerGate;
use crate::sessions::KsefContexts;

/// What the status use case needs of the document store.
pub trait StatusStore: DocumentRegistry + DocumentUpdates {}
impl<T: DocumentRegistry + DocumentUpdates + ?Sized> StatusStore for T {}

/// The ports the status use case needs: a stage's store, outbox and queues (its own queue too: a
/// leftover message that finds its document's follow-up lost re-issues it).
pub type StatusPorts<'a, S> = FollowUpPorts<'a, S>;

#[derive(Debug, Clone)]
pub struct StatusConfig {
    /// The send budget, charged when KSeF cancels an invoice (405, 550) and it is resent.
    pub policy: RetryPolicy,
    /// Delay before poll n+1: `schedule[n]`, the last entry repeating.
    pub schedule: Vec<Duration>,
    /// Give up polling (FAILED, DLQ, alarm) after this many polls without a decision.
    pub max_polls: u32,
}

impl StatusConfig {
    /// 2 s, 5 s, 10 s, 30 s, 1 min, 2 min, 5 min, 15 min, 30 min, 1 h, then every 2 h; up to 100
    /// polls (about a week: KSeF has kept invoices in 150 for hours during incidents).
    pub fn standard(policy: RetryPolicy) -> Self {
        let s = Duration::from_secs;
        StatusConfig {
            policy,
            schedule: vec![s(2), s(5), s(10), s(30), s(60), s(120), s(300), s(900), s(1800), s(3600), s(7200)],
            max_polls: 100,
        }
    }

    pub fn delay(&self, poll: u32) -> Duration {
        self.schedule
            .get(poll as usize)
            .or(self.schedule.last())
            .copied()
            .unwrap_or(Duration::from_secs(60))
    }
}

/// The next poll, for the step `r` is now at.
fn next(req: &StatusRequest, r: &DocumentRecord, delay: Duration) -> QueueAction {
    QueueAction::Replace {
        body: req.next_poll(r).to_json(),
        delay,
    }
}

/// Polls the invoice a [`StatusRequest`] names and acts on KSeF's answer.
#[tracing::instrument(name = "status", skip_all, fields(trace_id = %req.trace_id, seller_nip = %req.document.seller_nip, document = %req.document, erp_doc_id, state, error_class))]
pub async fn poll<S: StatusStore + ?Sized>(
    ports: &StatusPorts<'_, S>,
    ksef: &KsefContexts,
    cfg: &StatusConfig,
    req: &StatusRequest,
    now: DateTime<Utc>,
) -> Result<StageResult, StageError> {
    let r = match stage_document(ports.store, ports.archive, &req.document, &req.trace_id, "status").await? {
        Ok(doc) => doc.record,
        Err(answer) => return Ok(answer),
    };
    let upo_pending = r.state == DocumentState::Accepted && r.storage.upo.is_none();
    let polling = matches!(r.state, DocumentState::Sent | DocumentState::Processing) || upo_pending;
    if !polling || req.is_behind(&r) || r.ksef.invoice_reference.as_ref() != Some(&req.invoice_reference) {
        // Not this message's work any more; but the write that moved the document on may have
        // been the last thing an earlier handler did: make sure its follow-up exists.
        return catch_up(ports, r, REDRIVE_GRACE, now).await;
    }
    if let Some(t) = r.next_attempt_at.filter(|t| *t > now) {
        return done(
            QueueAction::Requeue {
                delay: (t - now).to_std().unwrap_or_default(),
            },
            "NOT_YET",
            Some(r),
        );
    }
    if req.poll >= cfg.max_polls && !upo_pending {
        let f = Failure::new(
            ErrorClass::Transient,
            ErrorSource::Relay,
            format!(
                "KSeF gave no decision after {} status polls; the invoice may still be processing: check it by hand",
                req.poll
            ),
        )
        .with_code("POLL_LIMIT");
        return give_up(ports.store, ports.archive, &r, f, now).await;
    }
    // The seller's work is parked for an operator's problem (a refused login, an IP block):
    // polling would meet it too. The message waits for the block's end, unchanged. When the
    // block has ended, this poll may be the probe: a KSeF answer clears the block.
    let probing = match ksef.seller_gate(&r.key.seller_nip, now).await {
        SellerGate::Parked(block) => {
            let delay = (block.until - now).to_std().unwrap_or_default().max(Duration::from_secs(1));
            return done(QueueAction::Requeue { delay }, "SELLER_PARKED", Some(r));
        }
        SellerGate::Probe(_) => true,
        SellerGate::Open => false,
    };
    let client = match ksef.client_ready(&r.key.seller_nip, now).await {
        Ok(c) => c,
        // The seller's secret cannot be read or used, or KSeF refused the login: our
        // configuration, not the invoice's, and not worth a poll. Park the seller's work (as a
        // send would) and check again when the block ends, the poll count unspent.
        Err(f) if f.class == ErrorClass::Operator => return parked(ports, ksef, req, r, f, now).await,
        Err(f) => return poll_error(ports, cfg, req, r, f, now).await,
    };
    if upo_pending {
        let res = fetch_upo(ports, &client, cfg, req, r, now).await?;
        if probing && res.outcome == "UPO_ARCHIVED" {
            ksef.clear_seller_block(&req.document.seller_nip, now).await;
        }
        return Ok(res);
    }
    let status = match client.invoice_status(req.session.as_str(), req.invoice_reference.as_str()).await {
        Ok(s) => s,
        // A 403 (an IP block) or 410 on the read itself: the seller's problem, not a poll's.
        Err(f) if f.class == ErrorClass::Operator => return parked(ports, ksef, req, r, f, now).await,
        Err(f) => {
            if f.class == ErrorClass::NeedsReauth {
                client.forget_access_token().await;
            }
            return poll_error(ports, cfg, req, r, f, now).await;
        }
    };
    // KSeF answered: whatever parked the seller is fixed (the probe that ends the block may be a
    // status poll when the seller has nothing left to send).
    if probing {
        ksef.clear_seller_block(&req.document.seller_nip, now).await;
    }
    act_on_status(ports, ksef, &client, cfg, req, r, status, now).await
}

/// Acts on KSeF's status of the invoice `req` follows (from a poll, or from a batch session's
/// invoice list read once for all its members): wait, ACCEPTED with the UPO (through the
/// status's pre-signed link when it has one), a duplicate proven ours or not, REJECTED with
/// KSeF's words, or sent again.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn act_on_status<S: StatusStore + ?Sized>(
    ports: &StatusPorts<'_, S>,
    ksef: &KsefContexts,
    client: &KsefClient,
    cfg: &StatusConfig,
    req: &StatusRequest,
    r: DocumentRecord,
    status: ksef_client::InvoiceStatus,
    now: DateTime<Utc>,
) -> Result<StageResult, StageError> {
    match ksef_client::failure_map::invoice_outcome("invoice_status", &status) {
        InvoiceOutcome::Pending => {
            let detail = format!("KSeF status {} ({})", status.status.code, status.status.description);
            let next_poll_at = now + chrono::Duration::from_std(cfg.delay(req.poll)).unwrap_or_default();
            let r = ports.store.transition(&r, Change::Processing { detail, next_poll_at }, now).await?;
            done(next(req, &r, cfg.delay(req.poll)), "PROCESSING", Some(r))
        }
        InvoiceOutcome::Accepted {
            ksef_number,
            acquisition_date,
        } => {
            let upo = match status.upo_download_url.as_deref() {
                Some(url) => client.download_upo(url).await,
                None => client.invoice_upo(req.session.as_str(), req.invoice_reference.as_str()).await,
            };
            let acquisition_date = acquisition_date.unwrap_or(now);
            match upo {
                Ok(upo) => {
                    let r = accept(
                        ports,
                        &client.config().environment,
                        r,
                        ksef_number,
                        acquisition_date,
                        Some(upo.xml),
                        status.invoicing_mode,
                        "KSeF status 200".into(),
                        now,
                    )
                    .await?;
                    done(QueueAction::Delete, "ACCEPTED", Some(r))
                }
                // The number is assigned: the invoice legally exists, and the record and the ERP
                // get the number now. The receipt is not ready: come back for it.
                Err(f) => {
                    let reason = "KSeF status 200; the UPO is not ready yet and will be fetched later".to_owned();
                    let r = accept(
                        ports,
                        &client.config().environment,
                        r,
                        ksef_number,
                        acquisition_date,
                        None,
                        status.invoicing_mode,
                        reason,
                        now,
                    )
                    .await?;
                    poll_error(ports, cfg, req, r, f, now).await.map(|res| StageResult {
                        outcome: "ACCEPTED_UPO_PENDING",
                        ..res
                    })
                }
            }
        }
        InvoiceOutcome::Failed(f) => match (Duplicate::of(&f), f.class.clone()) {
            (Some(duplicate), _) => resolve_duplicate(ports, client, cfg, req, r, f, duplicate, now).await,
            (None, ErrorClass::Permanent) => {
                let r = ports
                    .store
                    .transition(&r, Change::Rejected { failures: vec![f.clone()] }, now)
                    .await?;
                report_for_correction(ports.archive, ports.corrections_queue, &r, "REJECTED", f).await?;
                done(QueueAction::Delete, "REJECTED", Some(r))
            }
            // 410 (permissions) or a status KSeF does not explain: not the invoice's fault. Park
            // the seller's work and send it again when the block ends, not charged.
            (None, ErrorClass::Operator) => {
                ksef.park_seller(&r.key.seller_nip, &f, now).await;
                resend(ports, cfg, r, f, now).await
            }
            // 405 (session error), 500, 550: KSeF did not keep the invoice; send it again.
            _ => resend(ports, cfg, r, f, now).await,
        },
    }
}

/// An ACCEPTED document whose UPO could not be fetched when KSeF numbered it: fetch it now.
async fn fetch_upo<S: StatusStore + ?Sized>(
    ports: &StatusPorts<'_, S>,
    client: &KsefClient,
    cfg: &StatusConfig,
    req: &StatusRequest,
    r: DocumentRecord,
    now: DateTime<Utc>,
) -> Result<StageResult, StageError> {
    let Some(number) = r.ksef.ksef_number.clone() else {
        return done(QueueAction::Delete, "LEFTOVER", Some(r));
    };
    // A duplicate a person confirmed as ours has no receipt of its own send (KSeF answered 440):
    // the UPO is the original's, fetched by number in the session that holds it.
    let upo = match &r.ksef.original_session {
        Some(original) => client.invoice_upo_by_ksef_number(original.as_str(), number.as_str()).await,
        None => client.invoice_upo(req.session.as_str(), req.invoice_reference.as_str()).await,
    };
    match upo {
        Ok(upo) => {
            let key = archive_upo(ports, &r, &number, upo.xml).await?;
            let r = ports.store.transition(&r, Change::UpoArchived { upo_key: key }, now).await?;
            OutboxResult::for_record(&r, Vec::new()).publish(ports.archive).await?;
            done(QueueAction::Delete, "UPO_ARCHIVED", Some(r))
        }
        Err(f) => poll_error(ports, cfg, req, r, f, now).await.map(|res| StageResult {
            outcome: "UPO_PENDING",
            ..res
        }),
    }
}

/// A poll that could not get an answer: note it in the history and poll again later.
async fn poll_error<S: StatusStore + ?Sized>(
    ports: &StatusPorts<'_, S>,
    cfg: &StatusConfig,
    req: &StatusRequest,
    r: DocumentRecord,
    f: Failure,
    now: DateTime<Utc>,
) -> Result<StageResult, StageError> {
    relay_observe::logging::note_error_class(f.class.name());
    tracing::warn!(document = %r.key, trace_id = %r.trace_id, class = f.class.name(), code = ?f.code, "status poll failed");
    // A Retry-After longer than the queue's 15-minute delay is kept in the record: the message
    // hops in 15-minute steps until then (the NOT_YET check).
    let delay = match &f.class {
        ErrorClass::RateLimited { until } => (*until - now).to_std().unwrap_or_default().max(cfg.delay(req.poll)),
        _ => cfg.delay(req.poll),
    };
    let next_poll_at = now + chrono::Duration::from_std(delay).unwrap_or_default();
    let r = ports
        .store
        .transition(&r, Change::PollFailed { failure: f, next_poll_at }, now)
        .await?;
    done(next(req, &r, delay), "POLL_ERROR", Some(r))
}

/// An operator's problem met by a poll (credentials, a refused login, an IP block): the seller's
/// work is parked, the document's history says why, and the same poll (its count unspent) comes
/// back when the block ends.
async fn parked<S: StatusStore + ?Sized>(
    ports: &StatusPorts<'_, S>,
    ksef: &KsefContexts,
    req: &StatusRequest,
    r: DocumentRecord,
    f: Failure,
    now: DateTime<Utc>,
) -> Result<StageResult, StageError> {
    relay_observe::logging::note_error_class(f.class.name());
    tracing::warn!(document = %r.key, trace_id = %r.trace_id, class = f.class.name(), code = ?f.code, "status poll parked: the seller's credentials");
    let block = ksef.park_seller(&r.key.seller_nip, &f, now).await;
    let delay = (block.until - now).to_std().unwrap_or_default().max(Duration::from_secs(1));
    let next_poll_at = now + chrono::Duration::from_std(delay).unwrap_or_default();
    let r = ports
        .store
        .transition(&r, Change::PollFailed { failure: f, next_poll_at }, now)
        .await?;
    let again = StatusRequest {
        step: r.step,
        ..req.clone()
    };
    done(
        QueueAction::Replace {
            body: again.to_json(),
            delay,
        },
        "SELLER_PARKED",
        Some(r),
    )
}

/// Archives a UPO at `upo/{sellerNip}/{ksefNumber}.xml`; returns its key.
async fn archive_upo<S: StatusStore + ?Sized>(
    ports: &StatusPorts<'_, S>,
    r: &DocumentRecord,
    ksef_number: &KsefNumber,
    upo_xml: Vec<u8>,
) -> Result<String, StageError> {
    let key = upo_key(&r.key.seller_nip, ksef_number);
    let body = ObjectBody::new(upo_xml, "application/xml")
        .with_metadata("trace-id", r.trace_id.as_str())
        .with_metadata("ksef-number", ksef_number.as_str());
    ports.archive.put_if_absent(&key, body).await?;
    Ok(key)
}

#[allow(clippy::too_many_arguments)]
async fn accept<S: StatusStore + ?Sized>(
    ports: &StatusPorts<'_, S>,
    environment: &Environment,
    r: DocumentRecord,
    ksef_number: KsefNumber,
    acquisition_date: DateTime<Utc>,
    upo_xml: Option<Vec<u8>>,
    invoicing_mode: Option<relay_domain::InvoicingMode>,
    reason: String,
    now: DateTime<Utc>,
) -> Result<DocumentRecord, StageError> {
    let upo_mode = upo_xml
        .as_deref()
        .and_then(|xml| ksef_client::upo_read::sending_mode_of(xml, &r.content_hash));
    let key = match upo_xml {
        Some(xml) => Some(archive_upo(ports, &r, &ksef_number, xml).await?),
        None => None,
    };
    let qr_code = crate::qr_codes::write_invoice_code(ports.archive, environment, &r, &ksef_number).await?;
    let r = ports
        .store
        .transition(
            &r,
            Change::Accepted {
                ksef_number,
                acquisition_date,
                upo_key: key,
                qr_code,
                invoicing_mode,
                upo_mode,
                reason,
            },
            now,
        )
        .await?;
    OutboxResult::for_record(&r, Vec::new()).publish(ports.archive).await?;
    Ok(r)
}

/// 440: the same seller + kind + number is already in KSeF. Ours only if the original's UPO
/// carries our content hash.
#[allow(clippy::too_many_arguments)]
async fn resolve_duplicate<S: StatusStore + ?Sized>(
    ports: &StatusPorts<'_, S>,
    client: &KsefClient,
    cfg: &StatusConfig,
    req: &StatusRequest,
    r: DocumentRecord,
    f: Failure,
    duplicate: Duplicate,
    now: DateTime<Utc>,
) -> Result<StageResult, StageError> {
    let Duplicate {
        original,
        original_session,
    } = duplicate;
    let proof = match &original_session {
        Some(session) => match client.invoice_upo_by_ksef_number(session.as_str(), original.as_str()).await {
            Ok(upo) => Some(upo),
            // No answer is no proof either way: ask again later, never call it a conflict.
            Err(e) => {
                let f = Failure {
                    message: format!(
                        "{}; the original's UPO could not be read to check whose it is: {}",
                        f.message, e.message
                    ),
                    ..e
                };
                return poll_error(ports, cfg, req, r, f, now).await.map(|res| StageResult {
                    outcome: "DUPLICATE_UNPROVEN",
                    ..res
                });
            }
        },
        None => None,
    };
    let ours = proof.as_ref().and_then(|upo| {
        crate::upo_read::documents(&upo.xml)
            .into_iter()
            .find(|d| d.ksef_number == original.as_str() && d.hash == r.content_hash.to_base64())
    });
    if let (Some(doc), Some(upo)) = (ours, proof) {
        let reason = format!("KSeF reported a duplicate of {original}, whose UPO carries this document's hash: it is ours");
        // The invoice was received when the original was numbered, not now.
        let acquired = doc.numbered_at.unwrap_or(now);
        let r = accept(
            ports,
            &client.config().environment,
            r,
            original,
            acquired,
            Some(upo.xml),
            None,
            reason,
            now,
        )
        .await?;
        return done(QueueAction::Delete, "ACCEPTED_DUPLICATE_OURS", Some(r));
    }
    let why = if original_session.is_none() {
        "KSeF named no original session, so the original cannot be checked"
    } else {
        "the original's receipt does not carry this document's hash: another invoice holds this number"
    };
    let conflict = Failure {
        message: format!("{} ({why})", f.message),
        ..f
    };
    let r = ports
        .store
        .transition(&r, Change::Conflict { failure: conflict.clone() }, now)
        .await?;
    report_for_correction(ports.archive, ports.corrections_queue, &r, "CONFLICT", conflict).await?;
    done(QueueAction::Delete, "CONFLICT", Some(r))
}

/// KSeF cancelled the invoice (405, 550, 500): charge the budget and send it again.
async fn resend<S: StatusStore + ?Sized>(
    ports: &StatusPorts<'_, S>,
    cfg: &StatusConfig,
    r: DocumentRecord,
    f: Failure,
    now: DateTime<Utc>,
) -> Result<StageResult, StageError> {
    // An operator's problem is not charged; the send stage waits for the seller's block.
    let charged = f.class != ErrorClass::Operator;
    let failed_attempts = r.attempts + u32::from(charged);
    match cfg.policy.decide_now(&ErrorClass::Transient, failed_attempts, now) {
        RetryDecision::Exhausted if charged => give_up(ports.store, ports.archive, &r, f, now).await,
        decision => {
            let delay = match decision {
                RetryDecision::RetryAfter { delay } => delay,
                _ => Duration::ZERO,
            };
            let retry_at = now + chrono::Duration::from_std(delay).unwrap_or_default();
            let change = Change::RetryScheduled {
                failure: f,
                retry_at,
                charged,
                maybe_received: false,
            };
            let r = ports.store.transition(&r, change, now).await?;
            let r = ports
                .store
                .transition(
                    &r,
                    Change::Requeued {
                        reason: "KSeF cancelled the invoice; sending it again in a new session".into(),
                        reset_budget: false,
                    },
                    now,
                )
                .await?;
            let msg = SendRequest::for_record(&r);
            ports
                .send_queue
                .send(
                    OutgoingMessage::new(msg.to_json())
                        .with_trace_id(&r.trace_id)
                        .delayed(delay.min(relay_domain::ports::MAX_DELAY)),
                )
                .await?;
            done(QueueAction::Delete, "RESEND", Some(r))
        }
    }
}
