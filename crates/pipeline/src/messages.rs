//! Queue message bodies. A message names the document by its business identity and carries the
//! trace id (also as a message attribute); never its content.

use relay_domain::{ContentHash, DocumentKey, ErpDocumentId, Failure, TraceId};
use serde::{Deserialize, Serialize};

/// "Send this document": from intake (and replays) to the send function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRequest {
    pub document: DocumentKey,
    pub content_hash: ContentHash,
    pub trace_id: TraceId,
}

impl SendRequest {
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
}

impl StatusRequest {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a StatusRequest always serialises")
    }

    pub fn from_json(body: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(body)
    }
}
