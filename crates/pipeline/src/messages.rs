//! Queue message bodies. A message names the document by its business identity and carries the
//! trace id (also as a message attribute); never its content.

use relay_domain::{ContentHash, DocumentKey, ErpDocumentId, Failure, SendMode, TraceId};
use serde::{Deserialize, Serialize};

/// "Send this document": from intake (and replays) to the send function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRequest {
    pub document: DocumentKey,
    pub content_hash: ContentHash,
    pub trace_id: TraceId,
    /// The record's step this message was sent for (see `DocumentRecord::step`); 0 in messages
    /// from before the relay kept steps, which count as current.
    #[serde(default)]
    pub step: u64,
    /// The document's channel, so a consumer can gather Batch-mode messages of one seller into
    /// one batch session (`send_batch`) without reading each record first. None in messages from
    /// before the relay carried it (they take the lone path, which reads the record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<SendMode>,
}

impl SendRequest {
    /// "Send `record`", for its current step.
    pub fn for_record(record: &relay_domain::DocumentRecord) -> Self {
        SendRequest {
            document: record.key.clone(),
            content_hash: record.content_hash,
            trace_id: record.trace_id.clone(),
            step: record.step,
            mode: record.send_mode(),
        }
    }

    /// Whether the record has moved past the step this message was sent for.
    pub fn is_behind(&self, record: &relay_domain::DocumentRecord) -> bool {
        self.step != 0 && self.step < record.step
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a SendRequest always serialises")
    }

    pub fn from_json(body: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(body)
    }
}

/// "A person must look at this": to the corrections queue, for an ERP team or an accountant.
/// Carries the findings in full (messages and XML paths), never the invoice content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorrectionNotice {
    /// The registered document, when the file had a readable identity.
    pub document: Option<DocumentKey>,
    pub source_key: String,
    pub erp_document_id: ErpDocumentId,
    pub trace_id: TraceId,
    /// `REJECTED`, `CONFLICT` or `NOT_REGISTERED`.
    pub outcome: String,
    pub failures: Vec<Failure>,
}

impl CorrectionNotice {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a CorrectionNotice always serialises")
    }
}

/// "Check this invoice's status at KSeF": from send (and status itself) to the status function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRequest {
    pub document: DocumentKey,
    pub session: relay_domain::KsefReference,
    pub invoice_reference: relay_domain::KsefReference,
    pub trace_id: TraceId,
    /// How many polls came before this one (drives the growing delay).
    pub poll: u32,
    /// The record's step this message was sent for (see [`SendRequest::step`]).
    #[serde(default)]
    pub step: u64,
}

impl StatusRequest {
    /// The first status check for `record`'s invoice, known to KSeF as `invoice_reference` in
    /// `session`.
    pub fn first(
        record: &relay_domain::DocumentRecord,
        session: relay_domain::KsefReference,
        invoice_reference: relay_domain::KsefReference,
    ) -> Self {
        StatusRequest {
            document: record.key.clone(),
            session,
            invoice_reference,
            trace_id: record.trace_id.clone(),
            poll: 0,
            step: record.step,
        }
    }

    /// The same check, one poll later, for `record`'s new step.
    pub fn next_poll(&self, record: &relay_domain::DocumentRecord) -> Self {
        StatusRequest {
            poll: self.poll + 1,
            step: record.step,
            ..self.clone()
        }
    }

    /// Whether the record has moved past the step this message was sent for.
    pub fn is_behind(&self, record: &relay_domain::DocumentRecord) -> bool {
        self.step != 0 && self.step < record.step
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a StatusRequest always serialises")
    }

    pub fn from_json(body: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(body)
    }
}

/// Tells the ERP and the people who fix invoices that a registered document needs them: the
/// outbox result with the failure, and a notice on the corrections queue.
pub async fn report_for_correction(
    archive: &dyn relay_domain::ports::Archive,
    corrections_queue: &dyn relay_domain::ports::Queue,
    r: &relay_domain::DocumentRecord,
    outcome: &str,
    f: Failure,
) -> Result<(), CorrectionError> {
    crate::outbox::OutboxResult::for_record(r, vec![f.clone()]).publish(archive).await?;
    let notice = CorrectionNotice {
        document: Some(r.key.clone()),
        source_key: r.storage.source.clone(),
        erp_document_id: r.erp_document_id.clone(),
        trace_id: r.trace_id.clone(),
        outcome: outcome.into(),
        failures: vec![f],
    };
    corrections_queue
        .send(relay_domain::ports::OutgoingMessage::new(notice.to_json()).with_trace_id(&r.trace_id))
        .await?;
    Ok(())
}

/// Why a correction report could not be written (both are retryable infrastructure failures).
#[derive(Debug, thiserror::Error)]
pub enum CorrectionError {
    #[error(transparent)]
    Archive(#[from] relay_domain::ports::ArchiveError),
    #[error(transparent)]
    Queue(#[from] relay_domain::ports::QueueError),
}
