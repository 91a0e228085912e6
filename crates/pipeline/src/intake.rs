//! The intake use case: from the exact bytes an ERP uploaded to a registered document that is
//! queued for sending, or to a clear answer why not. Validation (relay-fa3: XSD-equal structure,
//! KSeF's file rules, business rules) happens here, separated from shipping: an invalid invoice
//! is registered REJECTED with every finding and its XML path, and never reaches KSeF.
//!
//! Identity is KSeF's own duplicate key (seller NIP + RodzajFaktury + P_2); content identity is
//! the SHA-256 of the bytes. Registration is one conditional write, so a repeated upload, a
//! redelivered S3 event and two racing intakes all end the same way: one record. Every outcome
//! is published to the ERP's outbox; every outcome a person must act on also goes to the
//! corrections queue, with the findings in full.

use chrono::{DateTime, Utc};
use relay_domain::offline::{CORRECTS_METADATA, OFFLINE_MODE_METADATA};
use relay_domain::ports::{Archive, DocumentRegistry, DocumentUpdates, ObjectBody, OutgoingMessage, Queue, Registration};
use relay_domain::storage_keys::{archive_key, classify_inbox_key, outbox_key, InboxObject};
use relay_domain::{
    Change, ContentHash, CorrectedUpload, Document, DocumentKey, DocumentRecord, DocumentState, ErpDocumentId, ErrorClass, ErrorSource,
    Failure, HistoryEntry, HistoryEvent, InitialState, NewDocument, Nip, OfflineMode, SendMode, StorageKeys, TraceId,
};

use crate::messages::{CorrectionNotice, SendRequest};
use crate::outbox::OutboxResult;

/// KSeF's largest accepted invoice (with attachments): nothing bigger is even read.
pub const HARD_SIZE_LIMIT: u64 = 3_000_000;

/// One uploaded object, as the intake sees it.
#[derive(Debug, Clone)]
pub struct Upload<'a> {
    /// The exact bytes (empty when the upload is refused before reading, see [`refuse`]).
    pub bytes: &'a [u8],
    /// Where the ERP put it (`inbox/{sellerNip}/{erpDocId}.xml`).
    pub source_key: String,
    pub erp_document_id: ErpDocumentId,
    /// The seller NIP the inbox folder names; the invoice's own seller must match it.
    /// None for local files outside an inbox.
    pub expected_seller: Option<Nip>,
    /// From the object's metadata if the ERP set one.
    pub trace_id: Option<TraceId>,
    /// Issued offline, as the ERP marked it (object metadata `ksef-offline-mode`, read by
    /// [`intake_created_object`]); None: issued online.
    pub offline_mode: Option<OfflineMode>,
    /// A technical correction: the ERP document id of the rejected offline upload it corrects
    /// (object metadata `ksef-corrects`). None: not a technical correction.
    pub corrects: Option<ErpDocumentId>,
}

/// What the intake did with an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntakeOutcome {
    /// New document: registered QUEUED and put on the send queue.
    Queued(DocumentRecord),
    /// A corrected file replaced a REJECTED one under the same identity: QUEUED again.
    Resubmitted(DocumentRecord),
    /// Registered REJECTED with every finding; never sent.
    Rejected(DocumentRecord),
    /// The same identity with the same content was already registered: nothing new happened.
    Repeat(DocumentRecord),
    /// The same identity with other content: the stored document is untouched, a person decides.
    Conflict {
        existing: DocumentRecord,
        new_hash: ContentHash,
        failure: Failure,
    },
    /// Not registered: no readable identity (not FA(3), hostile, too large, ...).
    NotRegistered(Vec<Failure>),
}

impl IntakeOutcome {
    pub fn name(&self) -> &'static str {
        match self {
            IntakeOutcome::Queued(_) => "QUEUED",
            IntakeOutcome::Resubmitted(_) => "RESUBMITTED",
            IntakeOutcome::Rejected(_) => "REJECTED",
            IntakeOutcome::Repeat(_) => "REPEAT",
            IntakeOutcome::Conflict { .. } => "CONFLICT",
            IntakeOutcome::NotRegistered(_) => "NOT_REGISTERED",
        }
    }
}

/// Why the intake could not finish: every case is retryable (the S3 event is redelivered, and
/// the intake is idempotent).
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error(transparent)]
    Store(#[from] relay_domain::ports::StoreError),
    #[error(transparent)]
    Archive(#[from] relay_domain::ports::ArchiveError),
    #[error(transparent)]
    Queue(#[from] relay_domain::ports::QueueError),
}

/// The ports the intake needs, and nothing more: of the document store, only registration and
/// history (`S` may be a concrete store or `dyn DocumentStore`).
pub struct IntakePorts<'a, S: DocumentRegistry + DocumentUpdates + ?Sized> {
    pub store: &'a S,
    pub archive: &'a dyn Archive,
    pub send_queue: &'a dyn Queue,
    pub corrections_queue: &'a dyn Queue,
    /// Chooses Online or Batch from the seller's online backlog (shared by every intake). None:
    /// only an attachment makes an invoice Batch.
    pub backlog: Option<&'a ksef_client::OnlineBacklog>,
}

fn finding(code: &str, message: impl Into<String>) -> Failure {
    Failure::new(ErrorClass::Permanent, ErrorSource::Validation, message).with_code(code)
}

/// Runs the intake for one upload.
#[tracing::instrument(name = "intake", skip_all, fields(erp_doc_id = %upload.erp_document_id, trace_id, seller_nip, document, state, error_class))]
pub async fn intake<S: DocumentRegistry + DocumentUpdates + ?Sized>(
    ports: &IntakePorts<'_, S>,
    upload: Upload<'_>,
    now: DateTime<Utc>,
) -> Result<IntakeOutcome, IntakeError> {
    let trace_id = upload.trace_id.clone().unwrap_or_else(TraceId::generate);
    tracing::Span::current().record("trace_id", trace_id.as_str());
    let size = upload.bytes.len() as u64;
    if size > HARD_SIZE_LIMIT {
        return not_registered(ports, &upload, trace_id, vec![oversize(size)], now).await;
    }
    let identity = match relay_fa3::read_identity(upload.bytes) {
        Ok(id) => id,
        Err(e) => return not_registered(ports, &upload, trace_id, vec![finding("FA3_UNREADABLE", e.to_string())], now).await,
    };
    let span = tracing::Span::current();
    span.record("seller_nip", tracing::field::display(&identity.key.seller_nip));
    span.record("document", tracing::field::display(&identity.key));
    // Everything KSeF would refuse, found here instead of hours later as a 450: the structure
    // exactly as the XSD defines it, KSeF's file rules, and the business rules (all findings).
    let options = relay_fa3::ValidateOptions {
        today: Some(relay_fa3::date_in_poland(now)),
        ..Default::default()
    };
    let findings = relay_fa3::validate_with(upload.bytes, &options).failures();
    if let Some(expected) = &upload.expected_seller {
        if *expected != identity.key.seller_nip {
            // Answered in the uploader's folder only: nothing is archived, registered or
            // published under the invoice's NIP, so another seller's records stay untouched.
            let mut failures = vec![finding(
                "SELLER_FOLDER",
                format!(
                    "the invoice's seller NIP {} is not the NIP of its inbox folder {expected}; upload it to inbox/{}/",
                    identity.key.seller_nip, identity.key.seller_nip
                ),
            )
            .at("/Faktura/Podmiot1/DaneIdentyfikacyjne/NIP")];
            failures.extend(findings);
            return not_registered(ports, &upload, trace_id, failures, now).await;
        }
    }
    let hash = ContentHash::of(upload.bytes);

    // A technical correction must name a rejected offline invoice of this identity; checked
    // before anything is archived or registered, so a wrong marking changes nothing. Boxed: the
    // check's future stays off intake's own frame (a debug build keeps a slot for each await).
    let corrects = match Box::pin(check_correction(ports.store, &upload, &identity.key, &hash, &findings)).await? {
        Ok(corrects) => corrects,
        Err(failures) => return not_registered(ports, &upload, trace_id, failures, now).await,
    };

    // Keep the exact bytes first: a record must never point at an object that does not exist.
    // The key is the content hash, so an existing object is these very bytes.
    let archived = archive_key(&identity.key.seller_nip, &hash);
    let body = ObjectBody::new(upload.bytes.to_vec(), "application/xml")
        .with_metadata("trace-id", trace_id.as_str())
        .with_metadata("content-sha256", hash.to_hex());
    ports.archive.put_if_absent(&archived, body).await?;
    let storage = StorageKeys {
        source: upload.source_key.clone(),
        archive: Some(archived),
        upo: None,
        qr_code: None,
    };

    // The channel, chosen once here and stored: only a valid document counts in the backlog.
    let mode = if corrects.is_some() {
        ksef_client::ModeChoice {
            mode: SendMode::Online,
            reason: "a technical correction goes online (KSeF takes hashOfCorrectedInvoice only there, attachments too)".into(),
        }
    } else if findings.is_empty() {
        choose_mode(ports, &identity.key, identity.has_attachment, now).await
    } else {
        ksef_client::ModeChoice {
            mode: SendMode::for_invoice(identity.has_attachment),
            reason: String::new(),
        }
    };
    let initial = if findings.is_empty() {
        InitialState::Queued
    } else {
        InitialState::Rejected {
            findings: findings.clone(),
        }
    };
    let new = NewDocument {
        key: identity.key.clone(),
        content_hash: hash,
        content_size: size,
        trace_id: trace_id.clone(),
        erp_document_id: upload.erp_document_id.clone(),
        storage: storage.clone(),
        offline_mode: upload.offline_mode,
        issue_date: Some(identity.issue_date),
        send_mode: mode.mode,
        send_mode_reason: (!mode.reason.is_empty()).then(|| mode.reason.clone()),
        initial,
    };
    let outcome = match ports.store.register(new, now).await? {
        Registration::Created(record) if record.state == DocumentState::Rejected => IntakeOutcome::Rejected(record),
        Registration::Created(record) => {
            queue_for_send(ports, &record).await?;
            IntakeOutcome::Queued(record)
        }
        Registration::Existing(doc) if doc.record.content_hash == hash && findings.is_empty() && doc.record.may_send_again() => {
            // Rejected for something that was not its content (an IP block, a revoked token, an
            // unknown status, before such failures had their own class): the same file again is
            // the ERP asking to send it once more.
            let why = format!(
                "the same file arrived again as {} (ERP id {})",
                upload.source_key, upload.erp_document_id
            );
            let change = crate::resolve::send_again_change(&doc.record, &why).expect("may_send_again");
            let record = ports.store.transition(&doc.record, change, now).await?;
            queue_for_send(ports, &record).await?;
            IntakeOutcome::Resubmitted(record)
        }
        Registration::Existing(doc) if doc.record.content_hash == hash => {
            let note = format!(
                "the same file arrived again as {} (ERP id {}); nothing to do",
                upload.source_key, upload.erp_document_id
            );
            ports
                .store
                .append_history(
                    &doc.record.key,
                    vec![HistoryEntry {
                        at: now,
                        event: HistoryEvent::Note { message: note },
                    }],
                )
                .await?;
            // The intake that registered it may have died before queueing it (or its message
            // was lost): a QUEUED document whose next step is overdue is queued again (the step
            // check drops the old message if it turns up). A redelivered S3 event comes back
            // after the intake queue's visibility timeout, well past the grace.
            let r = doc.record;
            if r.state == DocumentState::Queued && crate::follow_up::is_overdue(&r, crate::follow_up::REDRIVE_GRACE, now) {
                let why = format!("the same file arrived again as {} while the document was QUEUED", upload.source_key);
                let r = ports.store.transition(&r, Change::Redriven { reason: why }, now).await?;
                queue_for_send(ports, &r).await?;
                IntakeOutcome::Repeat(r)
            } else {
                IntakeOutcome::Repeat(r)
            }
        }
        Registration::Existing(doc) if doc.record.state == DocumentState::Rejected && findings.is_empty() => {
            let change = Change::Resubmitted {
                content_hash: hash,
                content_size: size,
                erp_document_id: upload.erp_document_id.clone(),
                trace_id: trace_id.clone(),
                storage,
                issue_date: Some(identity.issue_date),
                send_mode: mode.mode,
                offline_mode: upload.offline_mode,
                corrects: corrects.clone().map(Box::new),
            };
            let record = ports.store.transition(&doc.record, change, now).await?;
            queue_for_send(ports, &record).await?;
            IntakeOutcome::Resubmitted(record)
        }
        Registration::Existing(doc) => {
            let failure = Failure::new(
                ErrorClass::Permanent,
                ErrorSource::Relay,
                format!(
                    "{} is already registered ({}, ERP id {}) with other content (stored hash {}, new hash {}); the new file {} was not sent",
                    doc.record.key, doc.record.state, doc.record.erp_document_id, doc.record.content_hash, hash, upload.source_key
                ),
            )
            .with_code("IDENTITY_CONFLICT");
            ports
                .store
                .append_history(
                    &doc.record.key,
                    vec![HistoryEntry {
                        at: now,
                        event: HistoryEvent::Error { failure: failure.clone() },
                    }],
                )
                .await?;
            IntakeOutcome::Conflict {
                existing: doc.record,
                new_hash: hash,
                failure,
            }
        }
    };
    if let IntakeOutcome::Queued(r) | IntakeOutcome::Resubmitted(r) | IntakeOutcome::Rejected(r) | IntakeOutcome::Repeat(r) = &outcome {
        relay_observe::logging::note_state(r.erp_document_id.as_str(), r.state.code());
    }
    report(ports, &upload, &trace_id, &outcome, now).await?;
    Ok(outcome)
}

/// What an upload marked `ksef-corrects` corrects (None: not a correction, or the same correction
/// again, which registration reports as a repeat), or the findings it is refused with.
async fn check_correction<S: DocumentRegistry + DocumentUpdates + ?Sized>(
    store: &S,
    upload: &Upload<'_>,
    key: &DocumentKey,
    hash: &ContentHash,
    findings: &[Failure],
) -> Result<Result<Option<CorrectedUpload>, Vec<Failure>>, IntakeError> {
    let Some(named) = &upload.corrects else { return Ok(Ok(None)) };
    let existing = store.get(key).await?;
    let checked = match existing {
        // The same correction again (a redelivered event, a repeated upload).
        Some(doc) if doc.record.content_hash == *hash && doc.record.corrects.is_some() => return Ok(Ok(None)),
        // The rejected file itself, marked as its own correction: nothing was fixed.
        Some(doc) if doc.record.content_hash == *hash => Err(correction_finding(format!(
            "{CORRECTS_METADATA} names ERP id {named}, but this file is byte for byte the one registered as ERP id {} (SHA-256 {hash}): a technical correction is the fixed file; nothing was sent",
            doc.record.erp_document_id
        ))),
        _ if !findings.is_empty() => Err(correction_finding(format!(
            "the technical correction of ERP id {named} is itself invalid (see the other findings); the rejected invoice is untouched"
        ))),
        existing => correction_target(existing.as_ref(), key, named),
    };
    Ok(match checked {
        Ok(target) => Ok(Some(target)),
        Err(f) => {
            let mut failures = vec![f];
            failures.extend(findings.iter().cloned());
            Err(failures)
        }
    })
}

fn correction_finding(message: String) -> Failure {
    finding("TECHNICAL_CORRECTION_TARGET", message)
}

/// What a technical correction of ERP id `named` corrects: the document registered under the
/// correction's own identity (a technical correction keeps the business content: the seller,
/// the kind and the number), which must be that upload, REJECTED by KSeF (not by the relay's
/// own validation), offline, and not itself a correction. Anything else is a specific finding.
fn correction_target(existing: Option<&Document>, key: &DocumentKey, named: &ErpDocumentId) -> Result<CorrectedUpload, Failure> {
    let bad = |why: String| {
        Err(correction_finding(format!(
            "{CORRECTS_METADATA} names ERP id {named}, but {why}; nothing was sent"
        )))
    };
    let Some(doc) = existing else {
        return bad(format!(
            "no invoice {key} is registered (a technical correction keeps the rejected invoice's seller NIP, kind and number P_2)"
        ));
    };
    let r = &doc.record;
    if let Some(c) = &r.corrects {
        return bad(format!(
            "{key} is already a technical correction (ERP id {}, of ERP id {}): a correction of a correction is not sent (KSeF accepts one technical correction per invoice)",
            r.erp_document_id, c.erp_document_id
        ));
    }
    if &r.erp_document_id != named {
        return bad(format!(
            "the invoice {key} was uploaded as ERP id {}, not {named}",
            r.erp_document_id
        ));
    }
    if r.state != DocumentState::Rejected {
        return bad(format!(
            "ERP id {named} is {}, not REJECTED: only an invoice KSeF rejected is corrected technically",
            r.state
        ));
    }
    if !r.offline {
        return bad(format!(
            "ERP id {named} was not an offline invoice: a technical correction is only for an offline invoice KSeF rejected (upload the fixed file without {CORRECTS_METADATA})"
        ));
    }
    let rejection = r.last_error.clone();
    if !rejection
        .as_ref()
        .is_some_and(|f| matches!(f.source, ErrorSource::Ksef { .. }) && f.is_content_failure())
    {
        return bad(format!(
            "ERP id {named} was not rejected by KSeF for its content (it never reached KSeF, or its rejection was not technical): upload the fixed file without {CORRECTS_METADATA}"
        ));
    }
    Ok(CorrectedUpload {
        erp_document_id: r.erp_document_id.clone(),
        content_hash: r.content_hash,
        source: r.storage.source.clone(),
        trace_id: r.trace_id.clone(),
        rejection,
    })
}

/// The send mode of a valid invoice: from the seller's online backlog when intake has one.
async fn choose_mode<S: DocumentRegistry + DocumentUpdates + ?Sized>(
    ports: &IntakePorts<'_, S>,
    document: &DocumentKey,
    has_attachment: bool,
    now: DateTime<Utc>,
) -> ksef_client::ModeChoice {
    match ports.backlog {
        // Logged under the document's name: a batch of its seller going anyway may take it.
        Some(backlog) => {
            backlog
                .choose_for(&document.seller_nip, &document.storage_id(), has_attachment, now)
                .await
        }
        None if has_attachment => ksef_client::ModeChoice {
            mode: SendMode::Batch,
            reason: "it carries an attachment, which KSeF takes only in batch sessions".into(),
        },
        None => ksef_client::ModeChoice {
            mode: SendMode::Online,
            reason: String::new(),
        },
    }
}

async fn queue_for_send<S: DocumentRegistry + DocumentUpdates + ?Sized>(
    ports: &IntakePorts<'_, S>,
    record: &DocumentRecord,
) -> Result<(), IntakeError> {
    let message = SendRequest::for_record(record);
    ports
        .send_queue
        .send(OutgoingMessage::new(message.to_json()).with_trace_id(&record.trace_id))
        .await?;
    Ok(())
}

/// Answers an upload the handler refused before reading it (larger than KSeF could ever
/// accept): outbox result and corrections notice, nothing registered.
pub async fn refuse<S: DocumentRegistry + DocumentUpdates + ?Sized>(
    ports: &IntakePorts<'_, S>,
    upload: &Upload<'_>,
    failures: Vec<Failure>,
    now: DateTime<Utc>,
) -> Result<IntakeOutcome, IntakeError> {
    let trace_id = upload.trace_id.clone().unwrap_or_else(TraceId::generate);
    not_registered(ports, upload, trace_id, failures, now).await
}

/// The finding for a file over [`HARD_SIZE_LIMIT`].
pub fn oversize(size: u64) -> Failure {
    finding(
        "SIZE_LIMIT",
        format!("the file is {size} bytes; KSeF accepts at most {HARD_SIZE_LIMIT} (1,000,000 without attachments)"),
    )
}

async fn not_registered<S: DocumentRegistry + DocumentUpdates + ?Sized>(
    ports: &IntakePorts<'_, S>,
    upload: &Upload<'_>,
    trace_id: TraceId,
    failures: Vec<Failure>,
    now: DateTime<Utc>,
) -> Result<IntakeOutcome, IntakeError> {
    let outcome = IntakeOutcome::NotRegistered(failures);
    report(ports, upload, &trace_id, &outcome, now).await?;
    Ok(outcome)
}

/// The outbox result for every outcome; a corrections notice for those a person must act on.
async fn report<S: DocumentRegistry + DocumentUpdates + ?Sized>(
    ports: &IntakePorts<'_, S>,
    upload: &Upload<'_>,
    trace_id: &TraceId,
    outcome: &IntakeOutcome,
    now: DateTime<Utc>,
) -> Result<(), IntakeError> {
    let (result, correction) = match outcome {
        IntakeOutcome::Queued(r) | IntakeOutcome::Resubmitted(r) | IntakeOutcome::Repeat(r) => {
            (Some(OutboxResult::for_record(r, Vec::new())), None)
        }
        IntakeOutcome::Rejected(r) => {
            let findings: Vec<Failure> = r.last_error.iter().cloned().collect::<Vec<_>>();
            let all = all_findings(ports, r).await?.unwrap_or(findings);
            (Some(OutboxResult::for_record(r, all.clone())), Some((Some(r.key.clone()), all)))
        }
        IntakeOutcome::Conflict { existing, failure, .. } => {
            let seller = existing.key.seller_nip.clone();
            let mut result =
                OutboxResult::not_registered(seller, upload.erp_document_id.clone(), trace_id.clone(), vec![failure.clone()], now);
            result.state = "CONFLICT".into();
            result.state_label = DocumentState::Conflict.label_pl().into();
            (Some(result), Some((Some(existing.key.clone()), vec![failure.clone()])))
        }
        IntakeOutcome::NotRegistered(failures) => {
            // Without an identity, the outbox folder is the inbox folder's NIP, if there is one.
            let result = upload
                .expected_seller
                .clone()
                .map(|nip| OutboxResult::not_registered(nip, upload.erp_document_id.clone(), trace_id.clone(), failures.clone(), now));
            (result, Some((None, failures.clone())))
        }
    };
    if let Some(result) = result {
        result.publish(ports.archive).await?;
    }
    // A technical correction: the rejected upload's answer names it (again after a redelivery,
    // so a crash between the registration and this write loses nothing).
    if let IntakeOutcome::Queued(r) | IntakeOutcome::Resubmitted(r) | IntakeOutcome::Repeat(r) = outcome {
        if let Some(c) = &r.corrects {
            OutboxResult::for_corrected_upload(r, c).publish(ports.archive).await?;
        }
    }
    if let Some((document, failures)) = correction {
        let notice = CorrectionNotice {
            document,
            source_key: upload.source_key.clone(),
            erp_document_id: upload.erp_document_id.clone(),
            trace_id: trace_id.clone(),
            outcome: outcome.name().into(),
            failures,
        };
        ports
            .corrections_queue
            .send(OutgoingMessage::new(notice.to_json()).with_trace_id(trace_id))
            .await?;
    }
    Ok(())
}

/// Every validation finding recorded at registration, in order.
async fn all_findings<S: DocumentRegistry + DocumentUpdates + ?Sized>(
    ports: &IntakePorts<'_, S>,
    r: &DocumentRecord,
) -> Result<Option<Vec<Failure>>, IntakeError> {
    let Some(doc) = ports.store.get(&r.key).await? else {
        return Ok(None);
    };
    Ok(Some(
        doc.history
            .into_iter()
            .filter_map(|h| match h.event {
                HistoryEvent::Error { failure } => Some(failure),
                _ => None,
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_domain::memory::{MemoryArchive, MemoryDocumentStore, MemoryQueue};
    use std::time::Duration;

    /// The Ministry's sample 1 (seller 9999999999, VAT, FV2026/02/150): valid FA(3).
    const SAMPLE: &[u8] = include_bytes!("../../../data/ksef/samples/FA_3_Przykład_1.xml");

    fn invoice() -> String {
        String::from_utf8(SAMPLE.to_vec()).unwrap()
    }

    struct World {
        store: MemoryDocumentStore,
        archive: MemoryArchive,
        send: MemoryQueue,
        corrections: MemoryQueue,
    }

    impl World {
        fn new() -> Self {
            World {
                store: MemoryDocumentStore::new(),
                archive: MemoryArchive::new(),
                send: MemoryQueue::new("send"),
                corrections: MemoryQueue::new("corrections"),
            }
        }
        fn ports(&self) -> IntakePorts<'_, MemoryDocumentStore> {
            IntakePorts {
                store: &self.store,
                archive: &self.archive,
                send_queue: &self.send,
                corrections_queue: &self.corrections,
                backlog: None,
            }
        }
        async fn bodies(q: &MemoryQueue) -> Vec<String> {
            q.receive(10, Duration::from_secs(30), Duration::ZERO)
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.body)
                .collect()
        }
        async fn outbox(&self, erp: &str) -> serde_json::Value {
            let body = self
                .archive
                .get(&format!("outbox/9999999999/{erp}.json"))
                .await
                .unwrap()
                .expect("an outbox result");
            serde_json::from_slice(&body.bytes).unwrap()
        }
    }

    fn upload<'a>(bytes: &'a [u8], erp: &str) -> Upload<'a> {
        Upload {
            bytes,
            source_key: format!("inbox/9999999999/{erp}.xml"),
            erp_document_id: ErpDocumentId::parse(erp).unwrap(),
            expected_seller: Some(Nip::parse("9999999999").unwrap()),
            trace_id: None,
            offline_mode: None,
            corrects: None,
        }
    }

    #[tokio::test]
    async fn new_repeat_and_conflict() {
        let w = World::new();
        let now = Utc::now();
        let IntakeOutcome::Queued(r) = intake(&w.ports(), upload(invoice().as_bytes(), "erp-1"), now).await.unwrap() else {
            panic!()
        };
        assert_eq!(
            w.archive.get(r.storage.archive.as_deref().unwrap()).await.unwrap().unwrap().bytes,
            invoice().as_bytes()
        );
        let sends = World::bodies(&w.send).await;
        assert_eq!(sends.len(), 1);
        let req = SendRequest::from_json(&sends[0]).unwrap();
        assert_eq!((req.document.clone(), req.content_hash), (r.key.clone(), r.content_hash));
        assert!(!sends[0].contains("Faktura"), "no invoice content on the queue");
        assert_eq!(w.outbox("erp-1").await["state"], "QUEUED");

        assert!(matches!(
            intake(&w.ports(), upload(invoice().as_bytes(), "erp-1"), now).await.unwrap(),
            IntakeOutcome::Repeat(_)
        ));
        let changed = invoice().replace("<P_1>2026-02-15</P_1>", "<P_1>2026-02-14</P_1>");
        let IntakeOutcome::Conflict { existing, failure, .. } = intake(&w.ports(), upload(changed.as_bytes(), "erp-2"), now).await.unwrap()
        else {
            panic!()
        };
        assert_eq!(existing.content_hash, r.content_hash);
        assert_eq!(failure.code.as_deref(), Some("IDENTITY_CONFLICT"));
        assert_eq!(
            w.send.stats().await.unwrap().total(),
            1,
            "only the first upload was queued for sending"
        );
        let notes = World::bodies(&w.corrections).await;
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("\"outcome\":\"CONFLICT\""), "{}", notes[0]);
        assert_eq!(w.outbox("erp-2").await["state"], "CONFLICT");
        assert_eq!(w.outbox("erp-1").await["state"], "QUEUED", "the original's result is untouched");
        let doc = w.store.get(&r.key).await.unwrap().unwrap();
        assert_eq!(doc.record, r, "repeats and conflicts do not touch the record");
        assert_eq!(doc.history.len(), 4, "registered, queued, repeat note, conflict error");
    }

    #[tokio::test]
    async fn the_send_mode_is_chosen_at_intake_from_the_invoice() {
        let now = Utc::now();
        let with_attachment = include_bytes!("../../../data/ksef/samples/FA_3_Przykład_24.xml");
        for (bytes, erp, mode) in [
            (SAMPLE, "erp-1", SendMode::Online),
            (&with_attachment[..], "erp-24", SendMode::Batch),
        ] {
            // Both samples carry the same number: one store each.
            let w = World::new();
            let o = intake(&w.ports(), upload(bytes, erp), now).await.unwrap();
            let IntakeOutcome::Queued(r) = o else { panic!("{erp}: {o:?}") };
            assert_eq!(r.send_mode(), Some(mode), "{erp}");
        }
    }

    #[tokio::test]
    async fn a_rejected_document_is_recorded_reported_and_replaceable() {
        let w = World::new();
        let now = Utc::now();
        let wrong_rate = invoice().replacen("<P_12>23</P_12>", "<P_12>24</P_12>", 1);
        let IntakeOutcome::Rejected(r) = intake(&w.ports(), upload(wrong_rate.as_bytes(), "erp-1"), now).await.unwrap() else {
            panic!()
        };
        assert_eq!(r.state, DocumentState::Rejected);
        assert_eq!(w.send.stats().await.unwrap().total(), 0, "never sent");
        let notes = World::bodies(&w.corrections).await;
        assert!(notes[0].contains("\"outcome\":\"REJECTED\""), "{}", notes[0]);
        assert_eq!(w.outbox("erp-1").await["state"], "REJECTED");
        // The corrected file (here: with a fixed date) replaces it.
        let fixed = invoice().replace("<P_1>2026-02-15</P_1>", "<P_1>2026-02-13</P_1>");
        let IntakeOutcome::Resubmitted(r2) = intake(&w.ports(), upload(fixed.as_bytes(), "erp-1b"), now).await.unwrap() else {
            panic!()
        };
        assert_eq!(
            (r2.state, r2.content_hash),
            (DocumentState::Queued, ContentHash::of(fixed.as_bytes()))
        );
        assert_eq!(World::bodies(&w.send).await.len(), 1);
    }

    /// Failed on main: the upload was handled under the invoice's NIP (9999999999): the same
    /// invoice became a note on that seller's record with a result in that seller's outbox, a
    /// changed one an IDENTITY_CONFLICT on that seller's record.
    #[tokio::test]
    async fn a_folder_seller_mismatch_is_answered_in_the_uploaders_folder_and_touches_no_other_seller() {
        let w = World::new();
        let now = Utc::now();
        let IntakeOutcome::Queued(theirs) = intake(&w.ports(), upload(invoice().as_bytes(), "theirs"), now).await.unwrap() else {
            panic!()
        };
        let before = w.store.get(&theirs.key).await.unwrap().unwrap();
        let outbox_before = w.outbox("theirs").await;
        let objects_before = w.archive.snapshot().len();
        let other_folder = Nip::parse("5265877635").unwrap();
        // The same invoice, and a changed one, put into seller 5265877635's folder.
        let changed = invoice().replace("<P_1>2026-02-15</P_1>", "<P_1>2026-02-14</P_1>");
        for (bytes, erp) in [(invoice(), "mine-1"), (changed, "mine-2")] {
            let wrong_folder = Upload {
                source_key: format!("inbox/5265877635/{erp}.xml"),
                expected_seller: Some(other_folder.clone()),
                ..upload(bytes.as_bytes(), erp)
            };
            let IntakeOutcome::NotRegistered(f) = intake(&w.ports(), wrong_folder, now).await.unwrap() else {
                panic!("{erp}")
            };
            assert_eq!(f[0].code.as_deref(), Some("SELLER_FOLDER"));
            let answer = w
                .archive
                .get(&format!("outbox/5265877635/{erp}.json"))
                .await
                .unwrap()
                .expect("answered in the uploader's folder");
            let answer: serde_json::Value = serde_json::from_slice(&answer.bytes).unwrap();
            assert_eq!(
                (answer["state"].as_str(), answer["errors"][0]["code"].as_str()),
                (Some("NOT_REGISTERED"), Some("SELLER_FOLDER"))
            );
            assert!(answer["errors"][0]["message"].as_str().unwrap().contains("inbox/9999999999/"));
        }
        assert_eq!(
            w.store.get(&theirs.key).await.unwrap().unwrap(),
            before,
            "the other seller's record and history are untouched"
        );
        assert_eq!(w.outbox("theirs").await, outbox_before);
        assert_eq!(w.store.all().len(), 1, "nothing registered");
        assert_eq!(w.archive.snapshot().len(), objects_before + 2, "only the two answers were written");
        assert!(w.archive.get("outbox/9999999999/mine-1.json").await.unwrap().is_none());
        assert_eq!(w.send.stats().await.unwrap().total(), 1, "only the right-folder upload was queued");
        let notes = World::bodies(&w.corrections).await;
        assert_eq!(notes.len(), 2);
        assert!(
            notes.iter().all(|n| n.contains("SELLER_FOLDER") && n.contains("\"document\":null")),
            "{notes:?}"
        );
    }

    fn created(key: &str, version_id: Option<&str>) -> crate::s3_event::CreatedObject {
        crate::s3_event::CreatedObject {
            bucket: "b".into(),
            key: key.into(),
            size: None,
            event_name: "ObjectCreated:Put".into(),
            version_id: version_id.map(str::to_owned),
        }
    }

    async fn put(w: &World, key: &str, bytes: &[u8]) -> String {
        w.archive
            .put(key, ObjectBody::new(bytes.to_vec(), "application/xml"))
            .await
            .unwrap();
        w.archive.current_version(key).await.unwrap().unwrap()
    }

    /// The ERP marks an upload issued offline with the object metadata `ksef-offline-mode`: the
    /// record keeps the mode and its deadline, the outbox says both; a value the relay cannot read
    /// is refused in the uploader's outbox, naming the allowed values, and nothing is registered.
    #[tokio::test]
    async fn the_erps_offline_marking_is_read_from_the_metadata_and_a_bad_one_refused() {
        let w = World::new();
        let now = Utc::now();
        let marked = |n: u32, value: &str| {
            let key = format!("inbox/9999999999/erp-off-{n}.xml");
            let bytes = invoice().replace("<P_2>FV2026/02/150</P_2>", &format!("<P_2>FV2026/02/{n}</P_2>"));
            let body = ObjectBody::new(bytes.into_bytes(), "application/xml").with_metadata(OFFLINE_MODE_METADATA, value);
            (key, body)
        };
        for (n, value, mode) in [
            (1, "offline24", Some(OfflineMode::Offline24)),
            (2, "Unavailability", Some(OfflineMode::Unavailability)),
            (3, "failure", Some(OfflineMode::Failure)),
            (4, "online", None),
        ] {
            let (key, body) = marked(n, value);
            w.archive.put(&key, body).await.unwrap();
            let ObjectIntake::Done(o) = intake_created_object(&w.ports(), &created(&key, None), now).await else {
                panic!()
            };
            let IntakeOutcome::Queued(r) = *o else { panic!("{value}: {o:?}") };
            assert_eq!((r.offline_mode, r.offline), (mode, mode.is_some()), "{value}");
            // The sample's P_1 is 2026-02-15 (a Sunday): the next business day is Monday the 16th,
            // due by its end, 23:00 UTC (CET). No outage is declared here.
            let due = relay_domain::LegalDeadline::By {
                at: "2026-02-16T23:00:00Z".parse().unwrap(),
            };
            assert_eq!(r.legal_deadline.as_ref(), Some(&due), "{value}");
            let out = w.outbox(&format!("erp-off-{n}")).await;
            assert_eq!(
                out["offlineMode"],
                mode.map_or(serde_json::Value::Null, |m| m.name().into()),
                "{value}"
            );
            assert_eq!(out["legalDeadline"]["at"], "2026-02-16T23:00:00Z", "{value}");
        }
        let (key, body) = marked(5, "offline-24h");
        w.archive.put(&key, body).await.unwrap();
        let ObjectIntake::Done(o) = intake_created_object(&w.ports(), &created(&key, None), now).await else {
            panic!()
        };
        assert_eq!(o.name(), "NOT_REGISTERED");
        let out = w.outbox("erp-off-5").await;
        assert_eq!(out["state"], "NOT_REGISTERED");
        assert_eq!(out["errors"][0]["code"], "OFFLINE_MODE_MARKING");
        let message = out["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.contains("\"offline-24h\"") && message.contains("offline24, unavailability, failure"),
            "{message}"
        );
        assert_eq!(w.store.all().len(), 4, "the badly marked upload is not registered");
    }

    /// Failed on main: the event's version was ignored, so the second upload's bytes were read
    /// for both events and the first invoice was never taken in.
    #[tokio::test]
    async fn the_version_an_event_names_is_the_one_taken_in() {
        let w = World::new();
        let now = Utc::now();
        let key = "inbox/9999999999/erp-1.xml";
        let second = invoice().replace("<P_2>FV2026/02/150</P_2>", "<P_2>FV2026/02/151</P_2>");
        let v1 = put(&w, key, invoice().as_bytes()).await;
        let v2 = put(&w, key, second.as_bytes()).await;
        let mut numbers = Vec::new();
        for v in [v1, v2] {
            let ObjectIntake::Done(outcome) = intake_created_object(&w.ports(), &created(key, Some(&v)), now).await else {
                panic!()
            };
            let IntakeOutcome::Queued(r) = *outcome else {
                panic!("{outcome:?}")
            };
            numbers.push(r.key.invoice_number.to_string());
        }
        assert_eq!(numbers, ["FV2026/02/150", "FV2026/02/151"]);
        assert_eq!(w.store.all().len(), 2, "both versions registered");
    }

    /// Failed on main: these keys were skipped with a warning and nobody was told.
    #[tokio::test]
    async fn every_object_under_the_inbox_is_answered() {
        let w = World::new();
        let now = Utc::now();
        // `.XML` is an upload like `.xml`.
        put(&w, "inbox/9999999999/upper.XML", invoice().as_bytes()).await;
        let ObjectIntake::Done(o) = intake_created_object(&w.ports(), &created("inbox/9999999999/upper.XML", None), now).await else {
            panic!()
        };
        assert_eq!(o.name(), "QUEUED");
        assert_eq!(w.outbox("upper").await["state"], "QUEUED");
        // A subfolder and another extension: refused in the seller's outbox, nothing registered.
        for (key, answer) in [
            ("inbox/9999999999/2026/sub.xml", "outbox/9999999999/2026/sub.json"),
            ("inbox/9999999999/scan.pdf", "outbox/9999999999/scan.pdf.json"),
        ] {
            put(&w, key, invoice().as_bytes()).await;
            let ObjectIntake::Done(o) = intake_created_object(&w.ports(), &created(key, None), now).await else {
                panic!("{key}")
            };
            assert_eq!(o.name(), "NOT_REGISTERED", "{key}");
            let body = w
                .archive
                .get(answer)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("no answer at {answer}"));
            let body: serde_json::Value = serde_json::from_slice(&body.bytes).unwrap();
            assert_eq!(
                (body["state"].as_str(), body["errors"][0]["code"].as_str()),
                (Some("NOT_REGISTERED"), Some("INBOX_KEY"))
            );
        }
        // A refusal never replaces a registered document's answer (`a.txt` would answer at a.txt.json).
        put(&w, "inbox/9999999999/upper", b"x").await;
        assert!(matches!(
            intake_created_object(&w.ports(), &created("inbox/9999999999/upper", None), now).await,
            ObjectIntake::Done(_)
        ));
        assert_eq!(
            w.archive
                .get("outbox/9999999999/upper.json")
                .await
                .unwrap()
                .map(|b| serde_json::from_slice::<serde_json::Value>(&b.bytes).unwrap()["state"].clone()),
            Some("QUEUED".into())
        );
        // No readable seller (a NIP with a wrong checksum): a corrections notice, no outbox.
        World::bodies(&w.corrections).await;
        let outboxes = w.archive.snapshot().iter().filter(|(k, _)| k.starts_with("outbox/")).count();
        let ObjectIntake::Done(o) = intake_created_object(&w.ports(), &created("inbox/1234567890/erp-9.xml", None), now).await else {
            panic!()
        };
        assert_eq!(o.name(), "NOT_REGISTERED");
        let notes = World::bodies(&w.corrections).await;
        assert!(
            notes.len() == 1 && notes[0].contains("INBOX_KEY") && notes[0].contains("inbox/1234567890/erp-9.xml"),
            "{notes:?}"
        );
        assert_eq!(
            w.archive.snapshot().iter().filter(|(k, _)| k.starts_with("outbox/")).count(),
            outboxes
        );
        assert!(relay_observe::emf::check_line(&upload_without_seller_metric(now).to_line().unwrap()).is_ok());
        // An object deleted before it was read is answered, without replacing an answer.
        let ObjectIntake::Done(o) = intake_created_object(&w.ports(), &created("inbox/9999999999/gone.xml", None), now).await else {
            panic!()
        };
        assert_eq!(o.name(), "NOT_REGISTERED");
        assert_eq!(w.outbox("gone").await["errors"][0]["code"], "OBJECT_GONE");
        // A folder marker is no file.
        assert!(matches!(
            intake_created_object(&w.ports(), &created("inbox/9999999999/", None), now).await,
            ObjectIntake::Skipped(_)
        ));
        assert_eq!(w.store.all().len(), 1, "only the .XML upload is registered");
    }

    #[tokio::test]
    async fn unreadable_and_oversize_files_are_answered_not_registered() {
        let w = World::new();
        let now = Utc::now();
        let IntakeOutcome::NotRegistered(f) = intake(&w.ports(), upload(b"<not-fa3/>", "junk"), now).await.unwrap() else {
            panic!()
        };
        assert!(f[0].message.contains("Faktura"), "{f:?}");
        let big = vec![b' '; HARD_SIZE_LIMIT as usize + 1];
        let IntakeOutcome::NotRegistered(f) = intake(&w.ports(), upload(&big, "big"), now).await.unwrap() else {
            panic!()
        };
        assert_eq!(f[0].code.as_deref(), Some("SIZE_LIMIT"));
        assert_eq!(w.outbox("junk").await["state"], "NOT_REGISTERED");
        assert_eq!(World::bodies(&w.corrections).await.len(), 2);
        assert!(w.store.all().is_empty());
        assert!(
            w.archive.snapshot().iter().all(|(k, _)| k.starts_with("outbox/")),
            "nothing unregistered is archived"
        );
    }
}

/// What became of one object an S3 notification announced.
#[derive(Debug)]
pub enum ObjectIntake {
    /// Answered (whatever the outcome): in the outbox, and a corrections notice for what a
    /// person must act on.
    Done(Box<IntakeOutcome>),
    /// Nothing to answer: the key is outside `inbox/`, or a folder marker. The reason is for
    /// the log.
    Skipped(String),
    /// A store, queue or bucket failed: the notification must be redelivered (intake is
    /// idempotent, so that is harmless).
    Retry(String),
}

/// The metric for an object under `inbox/` that names no seller (so no outbox can answer it,
/// only a corrections notice): an alarm watches it.
pub fn upload_without_seller_metric(now: DateTime<Utc>) -> relay_observe::emf::MetricLine {
    relay_observe::emf::MetricLine::new(relay_observe::NAMESPACE, now)
        .group(&[], &[("InboxUploadsWithoutSeller", relay_observe::emf::Unit::Count, 1.0)])
}

/// The intake of one created object, as the intake function and the local runner (with the AWS
/// emulator) do it. Every object under `inbox/` is answered (see
/// [`relay_domain::storage_keys::classify_inbox_key`]): an upload is read at the very version
/// the event names (an overwrite before the read loses nothing) and taken in; an object larger
/// than KSeF could ever accept is refused unread; a misplaced one is refused in its seller's
/// outbox; one without a readable seller gets a corrections notice and a metric. The optional
/// `trace-id` metadata is the trace id.
pub async fn intake_created_object<S: DocumentRegistry + DocumentUpdates + ?Sized>(
    ports: &IntakePorts<'_, S>,
    object: &crate::s3_event::CreatedObject,
    now: DateTime<Utc>,
) -> ObjectIntake {
    let unread = |erp: ErpDocumentId, seller: Option<Nip>| Upload {
        bytes: &[],
        source_key: object.key.clone(),
        erp_document_id: erp,
        expected_seller: seller,
        trace_id: None,
        offline_mode: None,
        corrects: None,
    };
    let (seller, erp) = match classify_inbox_key(&object.key) {
        Ok(InboxObject::Upload { seller, erp }) => (seller, erp),
        Ok(InboxObject::Misplaced {
            seller,
            erp,
            answer,
            reason,
        }) => {
            let upload = unread(erp, None);
            return finish(refuse_at(ports, &upload, seller, &answer, vec![finding("INBOX_KEY", reason)], now).await);
        }
        Ok(InboxObject::NoSeller { erp, reason }) => {
            tracing::error!(key = %object.key, reason, "an upload names no seller: answered by a corrections notice only");
            upload_without_seller_metric(now).emit();
            let upload = unread(erp, None);
            return finish(refuse(ports, &upload, vec![finding("INBOX_KEY", reason)], now).await);
        }
        Ok(InboxObject::Folder) => return ObjectIntake::Skipped("a folder marker, not a file".into()),
        Err(e) => return ObjectIntake::Skipped(format!("not an inbox object: {e}")),
    };
    let upload = unread(erp, Some(seller.clone()));
    if let Some(size) = object.size.filter(|s| *s > HARD_SIZE_LIMIT) {
        return finish(refuse(ports, &upload, vec![oversize(size)], now).await);
    }
    let read = match &object.version_id {
        Some(version) => ports.archive.get_version(&object.key, version).await,
        None => ports.archive.get(&object.key).await,
    };
    let result = match read {
        Ok(Some(found)) => {
            let upload = Upload {
                bytes: &found.bytes,
                trace_id: found.metadata.get("trace-id").and_then(|t| TraceId::parse(t).ok()),
                ..upload
            };
            // The ERP's offline marking; a value the relay cannot read is refused before anything
            // is registered (a guess would give the invoice the wrong deadline, or none).
            let corrects = found
                .metadata
                .get(CORRECTS_METADATA)
                .map(|v| ErpDocumentId::parse(v.trim()).map_err(|e| format!("{CORRECTS_METADATA} must name the ERP document id of the rejected upload ({{erpDocId}} of inbox/{{sellerNip}}/{{erpDocId}}.xml): {e}")));
            match (
                found.metadata.get(OFFLINE_MODE_METADATA).map(|v| OfflineMode::from_marking(v)),
                corrects,
            ) {
                (Some(Err(why)), _) => {
                    let trace_id = upload.trace_id.clone().unwrap_or_else(TraceId::generate);
                    let bad = finding("OFFLINE_MODE_MARKING", why);
                    not_registered(ports, &upload, trace_id, vec![bad], now).await
                }
                (_, Some(Err(why))) => {
                    let trace_id = upload.trace_id.clone().unwrap_or_else(TraceId::generate);
                    not_registered(ports, &upload, trace_id, vec![correction_finding(why)], now).await
                }
                (marked, corrects) => {
                    let upload = Upload {
                        offline_mode: marked.and_then(Result::ok).flatten(),
                        corrects: corrects.and_then(Result::ok),
                        ..upload
                    };
                    intake(ports, upload, now).await
                }
            }
        }
        Ok(None) => {
            let gone = finding(
                "OBJECT_GONE",
                format!("{} was deleted before the relay could read it; upload it again", object.key),
            );
            let answer = outbox_key(&seller, &upload.erp_document_id);
            let upload = Upload {
                expected_seller: None,
                ..upload
            };
            refuse_at(ports, &upload, seller, &answer, vec![gone], now).await
        }
        Err(e) => return ObjectIntake::Retry(format!("cannot read the object: {e}")),
    };
    finish(result)
}

fn finish(result: Result<IntakeOutcome, IntakeError>) -> ObjectIntake {
    match result {
        Ok(outcome) => ObjectIntake::Done(Box::new(outcome)),
        Err(e) => ObjectIntake::Retry(e.to_string()),
    }
}

/// Refuses an object unread, answering at `answer` in `seller`'s outbox without replacing an
/// answer already there, plus a corrections notice.
async fn refuse_at<S: DocumentRegistry + DocumentUpdates + ?Sized>(
    ports: &IntakePorts<'_, S>,
    upload: &Upload<'_>,
    seller: Nip,
    answer: &str,
    failures: Vec<Failure>,
    now: DateTime<Utc>,
) -> Result<IntakeOutcome, IntakeError> {
    let trace_id = upload.trace_id.clone().unwrap_or_else(TraceId::generate);
    OutboxResult::not_registered(seller, upload.erp_document_id.clone(), trace_id.clone(), failures.clone(), now)
        .publish_if_absent(ports.archive, answer)
        .await?;
    // `upload` names no folder, so `not_registered` adds only the corrections notice.
    not_registered(ports, upload, trace_id, failures, now).await
}
