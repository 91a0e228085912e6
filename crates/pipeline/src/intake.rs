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
use relay_domain::ports::{Archive, DocumentRegistry, DocumentUpdates, ObjectBody, OutgoingMessage, Queue, Registration};
use relay_domain::storage_keys::archive_key;
use relay_domain::{
    Change, ContentHash, DocumentRecord, DocumentState, ErpDocumentId, ErrorClass, ErrorSource, Failure, HistoryEntry, HistoryEvent,
    InitialState, NewDocument, Nip, StorageKeys, TraceId,
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
    let mut findings = relay_fa3::validate_with(upload.bytes, &options).failures();
    if let Some(expected) = &upload.expected_seller {
        if *expected != identity.key.seller_nip {
            findings.push(
                finding(
                    "SELLER_FOLDER",
                    format!(
                        "the invoice's seller NIP {} is not the NIP of its inbox folder {expected}",
                        identity.key.seller_nip
                    ),
                )
                .at("/Faktura/Podmiot1/DaneIdentyfikacyjne/NIP"),
            );
        }
    }
    let hash = ContentHash::of(upload.bytes);

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
        offline: false,
        issue_date: Some(identity.issue_date),
        initial,
    };
    let outcome = match ports.store.register(new, now).await? {
        Registration::Created(record) if record.state == DocumentState::Rejected => IntakeOutcome::Rejected(record),
        Registration::Created(record) => {
            queue_for_send(ports, &record).await?;
            IntakeOutcome::Queued(record)
        }
        Registration::Existing(doc)
            if doc.record.content_hash == hash
                && doc.record.state == DocumentState::Rejected
                && findings.is_empty()
                && !doc.record.last_error.as_ref().is_none_or(Failure::is_content_failure) =>
        {
            // Rejected for something that was not its content (an IP block, a revoked token, an
            // unknown status, before such failures had their own class): the same file again is
            // the ERP asking to send it once more.
            let reason = format!(
                "the same file arrived again as {} (ERP id {}); its rejection was not about its content, so it is sent again",
                upload.source_key, upload.erp_document_id
            );
            let change = Change::Requeued {
                reason,
                reset_budget: true,
            };
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
    async fn a_rejected_document_is_recorded_reported_and_replaceable() {
        let w = World::new();
        let now = Utc::now();
        let original = invoice();
        let wrong_folder = Upload {
            expected_seller: Some(Nip::parse("5265877635").unwrap()),
            ..upload(original.as_bytes(), "erp-1")
        };
        let IntakeOutcome::Rejected(r) = intake(&w.ports(), wrong_folder, now).await.unwrap() else {
            panic!()
        };
        assert_eq!(r.state, DocumentState::Rejected);
        assert_eq!(w.send.stats().await.unwrap().total(), 0, "never sent");
        let notes = World::bodies(&w.corrections).await;
        assert!(
            notes[0].contains("SELLER_FOLDER") && notes[0].contains("/Faktura/Podmiot1/DaneIdentyfikacyjne/NIP"),
            "{}",
            notes[0]
        );
        assert_eq!(w.outbox("erp-1").await["errors"][0]["code"], "SELLER_FOLDER");
        // The corrected file (here: uploaded to the right folder, with a fixed date) replaces it.
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
    /// Intake ran (whatever its outcome, answered in the outbox).
    Done(Box<IntakeOutcome>),
    /// Nothing to do: the key is outside `inbox/{sellerNip}/{erpDocId}.xml`, or the object is
    /// gone. The reason is for the log.
    Skipped(String),
    /// A store, queue or bucket failed: the notification must be redelivered (intake is
    /// idempotent, so that is harmless).
    Retry(String),
}

/// The intake of one created object, as the intake function and the local runner (with the AWS
/// emulator) do it: the key names the seller and the ERP document; an object larger than KSeF
/// could ever accept is refused unread; the optional `trace-id` metadata is the trace id.
pub async fn intake_created_object<S: DocumentRegistry + DocumentUpdates + ?Sized>(
    ports: &IntakePorts<'_, S>,
    object: &crate::s3_event::CreatedObject,
    now: DateTime<Utc>,
) -> ObjectIntake {
    let (seller, erp) = match relay_domain::storage_keys::parse_inbox_key(&object.key) {
        Ok(parts) => parts,
        // Outside the inbox layout there is no seller to answer; the object stays where it is.
        Err(e) => return ObjectIntake::Skipped(format!("key is not inbox/{{sellerNip}}/{{erpDocId}}.xml: {e}")),
    };
    let upload = Upload {
        bytes: &[],
        source_key: object.key.clone(),
        erp_document_id: erp,
        expected_seller: Some(seller),
        trace_id: None,
    };
    let result = if let Some(size) = object.size.filter(|s| *s > HARD_SIZE_LIMIT) {
        refuse(ports, &upload, vec![oversize(size)], now).await
    } else {
        match ports.archive.get(&object.key).await {
            Ok(Some(found)) => {
                let upload = Upload {
                    bytes: &found.bytes,
                    trace_id: found.metadata.get("trace-id").and_then(|t| TraceId::parse(t).ok()),
                    ..upload
                };
                intake(ports, upload, now).await
            }
            Ok(None) => return ObjectIntake::Skipped("the object is gone (deleted after upload)".into()),
            Err(e) => return ObjectIntake::Retry(format!("cannot read the object: {e}")),
        }
    };
    match result {
        Ok(outcome) => ObjectIntake::Done(Box::new(outcome)),
        Err(e) => ObjectIntake::Retry(e.to_string()),
    }
}
