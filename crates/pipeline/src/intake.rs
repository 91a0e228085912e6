//! The intake use case: from the exact bytes an ERP uploaded to a registered, queued document.
//!
//! Identity is KSeF's own duplicate key (seller NIP + RodzajFaktury + P_2); content identity is
//! the SHA-256 of the bytes. Registration is one conditional write, so a repeated upload, a
//! redelivered S3 event and two racing intakes all end the same way: one record.

use chrono::{DateTime, Utc};
use relay_domain::ports::{Archive, DocumentRegistry, DocumentUpdates, ObjectBody, OutgoingMessage, PutOutcome, Queue, Registration};
use relay_domain::storage_keys::archive_key;
use relay_domain::{
    ContentHash, DocumentRecord, ErpDocumentId, ErrorClass, ErrorSource, Failure, HistoryEntry, HistoryEvent, InitialState, NewDocument,
    StorageKeys, TraceId,
};

use crate::messages::SendRequest;

/// One uploaded object, as the intake sees it.
#[derive(Debug, Clone)]
pub struct Upload<'a> {
    pub bytes: &'a [u8],
    /// Where the ERP put it (`inbox/{sellerNip}/{erpDocId}.xml`).
    pub source_key: String,
    pub erp_document_id: ErpDocumentId,
    /// From the object's metadata if the ERP set one.
    pub trace_id: Option<TraceId>,
}

/// What the intake did with an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntakeOutcome {
    /// New document: registered QUEUED and put on the send queue.
    Queued(DocumentRecord),
    /// The same identity with the same content was already registered: nothing new happened.
    Repeat(DocumentRecord),
    /// The same identity with other content: the stored document is untouched, a person decides.
    Conflict {
        existing: DocumentRecord,
        new_hash: ContentHash,
        failure: Failure,
    },
    /// The invoice could not be read as FA(3): not registered (there is no identity to register).
    Unreadable(Failure),
}

/// Why the intake could not finish: every case is retryable (the S3 event is redelivered).
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
}

/// Runs the intake for one upload.
pub async fn intake<S: DocumentRegistry + DocumentUpdates + ?Sized>(
    ports: &IntakePorts<'_, S>,
    upload: Upload<'_>,
    now: DateTime<Utc>,
) -> Result<IntakeOutcome, IntakeError> {
    let identity = match relay_fa3::read_identity(upload.bytes) {
        Ok(id) => id,
        Err(e) => {
            let failure = Failure::new(ErrorClass::Permanent, ErrorSource::Validation, e.to_string()).with_code("FA3_UNREADABLE");
            return Ok(IntakeOutcome::Unreadable(failure));
        }
    };
    let hash = ContentHash::of(upload.bytes);
    let trace_id = upload.trace_id.clone().unwrap_or_else(TraceId::generate);

    // Keep the exact bytes first: a record must never point at an object that does not exist.
    let key = archive_key(&identity.key.seller_nip, &hash);
    let body = ObjectBody::new(upload.bytes.to_vec(), "application/xml")
        .with_metadata("trace-id", trace_id.as_str())
        .with_metadata("content-sha256", hash.to_hex());
    match ports.archive.put_if_absent(&key, body).await? {
        PutOutcome::Created | PutOutcome::AlreadyExists => {} // same key = same hash = same bytes
    }

    let new = NewDocument {
        key: identity.key.clone(),
        content_hash: hash,
        content_size: upload.bytes.len() as u64,
        trace_id: trace_id.clone(),
        erp_document_id: upload.erp_document_id.clone(),
        storage: StorageKeys {
            source: upload.source_key.clone(),
            archive: Some(key),
            upo: None,
        },
        offline: false,
        initial: InitialState::Queued,
    };
    match ports.store.register(new, now).await? {
        Registration::Created(record) => {
            let message = SendRequest {
                document: record.key.clone(),
                content_hash: hash,
                trace_id: trace_id.clone(),
            };
            ports
                .send_queue
                .send(OutgoingMessage::new(message.to_json()).with_trace_id(&trace_id))
                .await?;
            Ok(IntakeOutcome::Queued(record))
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
            Ok(IntakeOutcome::Repeat(doc.record))
        }
        Registration::Existing(doc) => {
            let failure = Failure::new(
                ErrorClass::Permanent,
                ErrorSource::Relay,
                format!(
                    "{} already exists with other content (stored hash {}, new hash {}); the new file {} was not sent",
                    doc.record.key, doc.record.content_hash, hash, upload.source_key
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
            Ok(IntakeOutcome::Conflict {
                existing: doc.record,
                new_hash: hash,
                failure,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_domain::memory::{MemoryArchive, MemoryDocumentStore, MemoryQueue};
    use relay_domain::DocumentState;

    const INVOICE: &str = r#"<Faktura xmlns="http://crd.gov.pl/wzor/2025/06/25/13775/"><Naglowek><KodFormularza kodSystemowy="FA (3)" wersjaSchemy="1-0E">FA</KodFormularza></Naglowek><Podmiot1><DaneIdentyfikacyjne><NIP>5265877635</NIP></DaneIdentyfikacyjne></Podmiot1><Fa><P_1>2026-02-01</P_1><P_2>FV/1</P_2><RodzajFaktury>VAT</RodzajFaktury></Fa></Faktura>"#;

    fn upload(bytes: &[u8]) -> Upload<'_> {
        Upload {
            bytes,
            source_key: "inbox/5265877635/erp-1.xml".into(),
            erp_document_id: ErpDocumentId::parse("erp-1").unwrap(),
            trace_id: None,
        }
    }

    #[tokio::test]
    async fn new_repeat_conflict_and_unreadable() {
        let (store, archive, queue) = (MemoryDocumentStore::new(), MemoryArchive::new(), MemoryQueue::new("send"));
        let ports = IntakePorts {
            store: &store,
            archive: &archive,
            send_queue: &queue,
        };
        let now = Utc::now();

        let IntakeOutcome::Queued(r) = intake(&ports, upload(INVOICE.as_bytes()), now).await.unwrap() else {
            panic!()
        };
        assert_eq!(r.state, DocumentState::Queued);
        assert_eq!(
            archive.get(r.storage.archive.as_deref().unwrap()).await.unwrap().unwrap().bytes,
            INVOICE.as_bytes()
        );
        let msgs = queue
            .receive(10, std::time::Duration::from_secs(30), std::time::Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(msgs.len(), 1);
        let req = SendRequest::from_json(&msgs[0].body).unwrap();
        assert_eq!(
            (req.document, req.content_hash, Some(req.trace_id.clone())),
            (r.key.clone(), r.content_hash, msgs[0].trace_id())
        );
        assert!(!msgs[0].body.contains("Faktura"), "no invoice content on the queue");

        assert!(matches!(
            intake(&ports, upload(INVOICE.as_bytes()), now).await.unwrap(),
            IntakeOutcome::Repeat(_)
        ));
        let changed = INVOICE.replace("2026-02-01", "2026-02-02");
        let IntakeOutcome::Conflict { existing, failure, .. } = intake(&ports, upload(changed.as_bytes()), now).await.unwrap() else {
            panic!()
        };
        assert_eq!(existing.content_hash, r.content_hash);
        assert_eq!(failure.code.as_deref(), Some("IDENTITY_CONFLICT"));
        assert_eq!(queue.stats().await.unwrap().total(), 1, "only the first upload was queued");
        let doc = store.get(&r.key).await.unwrap().unwrap();
        assert_eq!(doc.record, r, "repeats and conflicts do not touch the record");
        assert_eq!(doc.history.len(), 4, "registered, queued, repeat note, conflict error");

        let IntakeOutcome::Unreadable(f) = intake(&ports, upload(b"<not-fa3/>"), now).await.unwrap() else {
            panic!()
        };
        assert!(f.message.contains("Faktura"), "{f}");
        assert_eq!(store.all().len(), 1);
    }
}
