//! The ERP's feedback: `outbox/{sellerNip}/{erpDocId}.json`, rewritten at every milestone, so
//! an ERP that can only read files from S3 learns the state, the KSeF number and acquisition
//! date, where the UPO and the invoice's QR code images are, every error in full, and the trace
//! id to quote to support.

use chrono::{DateTime, Utc};
use relay_domain::ports::{Archive, ArchiveError, ObjectBody};
use relay_domain::storage_keys::outbox_key;
use relay_domain::{
    CorrectedUpload, DocumentRecord, DocumentState, ErpDocumentId, Failure, InvoicingMode, LegalDeadline, Nip, OfflineMode, TraceId,
};
use serde::Serialize;

/// What the ERP reads back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxResult {
    pub erp_document_id: ErpDocumentId,
    pub seller_nip: Nip,
    /// `QUEUED`, `ACCEPTED`, `REJECTED`, ... or `NOT_REGISTERED` for a file without a readable identity.
    pub state: String,
    pub state_label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invoice_kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invoice_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ksef_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acquisition_date: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upo_key: Option<String>,
    /// The QR codes to print on the invoice's visualisation (a PDF, a printout): KOD I once the
    /// document is ACCEPTED. Each names its PNG (label drawn under the code) and SVG.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub qr_codes: Vec<OutboxQrCode>,
    /// Issued offline: `offline24`, `unavailability`, `failure` (the ERP's marking) or
    /// `sent_after_issue_day` (the relay's, for an invoice sent after its issue day).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offline_mode: Option<OfflineMode>,
    /// By when the invoice must be in KSeF, as last computed (`{"kind":"by","at":...}`,
    /// `after_open_failure`, or `no_obligation`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legal_deadline: Option<LegalDeadline>,
    /// How KSeF filed it (`Online`, `Offline`), from its status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invoicing_mode: Option<InvoicingMode>,
    /// A technical correction: the ERP id of the rejected offline upload it corrects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corrects: Option<ErpDocumentId>,
    /// A rejected offline upload that a technical correction corrects: the correction's ERP id
    /// (its own result says how it goes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corrected_by: Option<ErpDocumentId>,
    pub trace_id: TraceId,
    pub errors: Vec<Failure>,
    pub updated_at: DateTime<Utc>,
}

/// One QR code in the outbox result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxQrCode {
    /// `KOD_I` (invoice verification) or `KOD_II` (an offline invoice's issuer certificate).
    pub code: &'static str,
    /// The text under the code: the KSeF number, `OFFLINE` or `CERTYFIKAT`. Drawn in the PNG and
    /// the SVG; here for an ERP that lays the code out itself.
    pub label: String,
    pub png_key: String,
    pub svg_key: String,
}

/// The QR codes of `r`: KOD I with its KSeF number once ACCEPTED; an offline invoice's KOD I
/// labelled OFFLINE and its KOD II as soon as they are written (before KSeF numbers it).
fn qr_codes(r: &DocumentRecord) -> Vec<OutboxQrCode> {
    let mut codes = Vec::new();
    if let (Some(keys), Some(number)) = (&r.storage.qr_code, &r.ksef.ksef_number) {
        codes.push(OutboxQrCode {
            code: "KOD_I",
            label: number.to_string(),
            png_key: keys.png.clone(),
            svg_key: keys.svg.clone(),
        });
    }
    if r.offline_codes == relay_domain::OfflineCodes::Written {
        let (kod1, kod2) = relay_domain::storage_keys::qr_offline_keys(&r.key.seller_nip, &r.content_hash);
        for (code, label, keys) in [
            ("KOD_I", ksef_client::qr::OFFLINE_LABEL, kod1),
            ("KOD_II", ksef_client::qr::CERTIFICATE_LABEL, kod2),
        ] {
            codes.push(OutboxQrCode {
                code,
                label: label.to_owned(),
                png_key: keys.png,
                svg_key: keys.svg,
            });
        }
    }
    codes
}

impl OutboxResult {
    /// The result for a registered document, with the errors to report (all findings for a
    /// rejection; the last error otherwise).
    pub fn for_record(r: &DocumentRecord, errors: Vec<Failure>) -> Self {
        OutboxResult {
            erp_document_id: r.erp_document_id.clone(),
            seller_nip: r.key.seller_nip.clone(),
            state: r.state.code().into(),
            state_label: r.state.label_pl().into(),
            invoice_kind: Some(r.key.kind.code().into()),
            invoice_number: Some(r.key.invoice_number.to_string()),
            content_hash: Some(r.content_hash.to_base64()),
            ksef_number: r.ksef.ksef_number.as_ref().map(|k| k.to_string()),
            acquisition_date: r.ksef.acquisition_date,
            upo_key: r.storage.upo.clone(),
            qr_codes: qr_codes(r),
            offline_mode: r.offline_mode,
            legal_deadline: r.legal_deadline.clone(),
            invoicing_mode: r.ksef.invoicing_mode,
            corrects: r.corrects.as_ref().map(|c| c.erp_document_id.clone()),
            corrected_by: None,
            trace_id: r.trace_id.clone(),
            errors,
            updated_at: r.updated_at,
        }
    }

    /// The answer of the rejected offline upload `c` that the technical correction `r` corrects:
    /// still REJECTED with KSeF's words, and naming its correction.
    pub fn for_corrected_upload(r: &DocumentRecord, c: &CorrectedUpload) -> Self {
        OutboxResult {
            erp_document_id: c.erp_document_id.clone(),
            seller_nip: r.key.seller_nip.clone(),
            state: DocumentState::Rejected.code().into(),
            state_label: DocumentState::Rejected.label_pl().into(),
            invoice_kind: Some(r.key.kind.code().into()),
            invoice_number: Some(r.key.invoice_number.to_string()),
            content_hash: Some(c.content_hash.to_base64()),
            ksef_number: None,
            acquisition_date: None,
            upo_key: None,
            qr_codes: Vec::new(),
            offline_mode: r.offline_mode,
            legal_deadline: None,
            invoicing_mode: None,
            corrects: None,
            corrected_by: Some(r.erp_document_id.clone()),
            trace_id: c.trace_id.clone(),
            errors: c.rejection.iter().cloned().collect(),
            updated_at: r.updated_at,
        }
    }

    /// The result for a file the relay could not register (no readable identity, too large, ...).
    pub fn not_registered(seller: Nip, erp: ErpDocumentId, trace_id: TraceId, errors: Vec<Failure>, now: DateTime<Utc>) -> Self {
        OutboxResult {
            erp_document_id: erp,
            seller_nip: seller,
            state: "NOT_REGISTERED".into(),
            state_label: "NIE_PRZYJĘTA_DO_WYSYŁKI".into(),
            invoice_kind: None,
            invoice_number: None,
            content_hash: None,
            ksef_number: None,
            acquisition_date: None,
            upo_key: None,
            qr_codes: Vec::new(),
            offline_mode: None,
            legal_deadline: None,
            invoicing_mode: None,
            corrects: None,
            corrected_by: None,
            trace_id,
            errors,
            updated_at: now,
        }
    }

    pub fn key(&self) -> String {
        outbox_key(&self.seller_nip, &self.erp_document_id)
    }

    fn body(&self) -> ObjectBody {
        let body = serde_json::to_vec_pretty(self).expect("an outbox result always serialises");
        ObjectBody::new(body, "application/json").with_metadata("trace-id", self.trace_id.as_str())
    }

    /// Writes (replaces) the result.
    pub async fn publish(&self, archive: &dyn Archive) -> Result<(), ArchiveError> {
        archive.put(&self.key(), self.body()).await
    }

    /// Writes the result at `key` unless something is there already: the answer to an object the
    /// relay could not take in (a misplaced file, one gone before it was read) never replaces a
    /// registered document's result.
    pub async fn publish_if_absent(&self, archive: &dyn Archive, key: &str) -> Result<(), ArchiveError> {
        archive.put_if_absent(key, self.body()).await.map(|_| ())
    }
}

/// Gives up on a document: FAILED (an alarm fires on the DLQ), the ERP told why, the message to
/// the dead-letter queue, where dlq-replay can bring it back.
pub async fn give_up<S: relay_domain::ports::DocumentUpdates + ?Sized>(
    store: &S,
    archive: &dyn Archive,
    r: &DocumentRecord,
    f: Failure,
    now: DateTime<Utc>,
) -> Result<crate::queue_action::StageResult, crate::queue_action::StageError> {
    let r = store
        .transition(r, relay_domain::Change::Failed { failure: f.clone() }, now)
        .await?;
    OutboxResult::for_record(&r, vec![f]).publish(archive).await?;
    crate::queue_action::done(crate::queue_action::QueueAction::DeadLetter, "FAILED", Some(r))
}
