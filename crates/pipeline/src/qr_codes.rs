//! The invoice's QR codes in the archive, for the ERP to print on what it gives the buyer
//! (`ksef_client::qr` makes them; this module decides where they go and when).
//!
//! - [`write_invoice_code`]: KOD I of a numbered invoice, labelled with its KSeF number, at
//!   `qr/{sellerNip}/{ksefNumber}-kod1.png|svg`. The status stage calls it before the ACCEPTED
//!   write, which records the keys; the outbox names them from the record.
//! - [`write_offline_codes`]: the two codes of an invoice issued offline, before KSeF numbers it:
//!   KOD I labelled `OFFLINE` and KOD II (`CERTYFIKAT`) signed with the seller's Offline
//!   certificate from its credentials secret, at `qr/{sellerNip}/offline/{sha256}-kod1|-kod2`.
//!   Nothing calls it yet: offline invoices (issue 14) will, when the ERP marks an upload offline.
//!
//! Every image is written with its link in the object's `qr-url` metadata. KOD I's images are the
//! same bytes every time, so they are simply rewritten. KOD II's RSA signature is randomized: a
//! KOD II already written keeps its link (read back from the PNG's metadata and drawn again), so
//! the code first made, perhaps already printed, stays, and its PNG and SVG always agree.

use chrono::{DateTime, Utc};
use ksef_client::qr::{ContextIdentifier, QrImage};
use ksef_client::Environment;
use relay_domain::ports::{Archive, ObjectBody};
use relay_domain::storage_keys::{qr_invoice_keys, qr_offline_keys, QrCodeKeys};
use relay_domain::{DocumentRecord, ErrorClass, ErrorSource, Failure, KsefNumber};

use crate::queue_action::StageError;
use crate::sessions::KsefContexts;

/// The metadata name of the link a QR code image carries.
pub const QR_URL_METADATA: &str = "qr-url";

fn body(code: &QrImage, bytes: Vec<u8>, content_type: &str, r: &DocumentRecord, ksef_number: Option<&KsefNumber>) -> ObjectBody {
    let body = ObjectBody::new(bytes, content_type)
        .with_metadata("trace-id", r.trace_id.as_str())
        .with_metadata(QR_URL_METADATA, code.url.as_str());
    match ksef_number {
        Some(n) => body.with_metadata("ksef-number", n.as_str()),
        None => body,
    }
}

/// Writes (replaces) both images of `code`.
async fn put(
    archive: &dyn Archive,
    keys: &QrCodeKeys,
    code: &QrImage,
    r: &DocumentRecord,
    ksef_number: Option<&KsefNumber>,
) -> Result<(), StageError> {
    archive
        .put(&keys.png, body(code, code.png.clone(), "image/png", r, ksef_number))
        .await?;
    archive
        .put(
            &keys.svg,
            body(code, code.svg.clone().into_bytes(), "image/svg+xml", r, ksef_number),
        )
        .await?;
    Ok(())
}

/// Writes KOD I for `r`, numbered `ksef_number`, and returns its keys; None for a record without
/// its issue date (written before the relay kept `P_1`). A code that cannot be made (nothing an
/// invoice can cause: the link is short) is logged and left out; the invoice is accepted all
/// the same.
pub async fn write_invoice_code(
    archive: &dyn Archive,
    environment: &Environment,
    r: &DocumentRecord,
    ksef_number: &KsefNumber,
) -> Result<Option<QrCodeKeys>, StageError> {
    let Some(issue_date) = r.issue_date else {
        return Ok(None);
    };
    let code = match ksef_client::qr::invoice_code(
        environment,
        &r.key.seller_nip,
        issue_date,
        r.content_hash.bytes(),
        Some(ksef_number),
    ) {
        Ok(code) => code,
        Err(f) => {
            tracing::error!(document = %r.key, trace_id = %r.trace_id, error = %f, "the QR code (KOD I) could not be made");
            return Ok(None);
        }
    };
    let keys = qr_invoice_keys(&r.key.seller_nip, ksef_number);
    put(archive, &keys, &code, r, Some(ksef_number)).await?;
    Ok(Some(keys))
}

/// The two codes of an offline invoice, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineCodes {
    /// KOD I, labelled `OFFLINE`.
    pub invoice: QrCodeKeys,
    pub invoice_url: String,
    /// KOD II, labelled `CERTYFIKAT`.
    pub certificate: QrCodeKeys,
    pub certificate_url: String,
}

/// Writes KOD I (`OFFLINE`) and KOD II for `r`, an invoice issued offline and not yet numbered,
/// signed with the seller's Offline certificate in the seller's KSeF context (its NIP). Fails
/// as the operator's problem when the secret has no Offline certificate or it cannot sign, and
/// as the invoice's when it has no issue date.
pub async fn write_offline_codes(
    archive: &dyn Archive,
    ksef: &KsefContexts,
    r: &DocumentRecord,
    now: DateTime<Utc>,
) -> Result<Result<OfflineCodes, Failure>, StageError> {
    let Some(issue_date) = r.issue_date else {
        return Ok(Err(Failure::new(
            ErrorClass::Permanent,
            ErrorSource::Relay,
            "the invoice's issue date (P_1) is not known, so its QR codes cannot be made",
        )
        .with_code("QR_CODE")));
    };
    let (offline, environment) = match ksef.offline_identity(&r.key.seller_nip, now).await {
        Ok(found) => found,
        Err(f) => return Ok(Err(f)),
    };
    let seller = &r.key.seller_nip;
    let hash = r.content_hash.bytes();
    let kod1 = match ksef_client::qr::invoice_code(&environment, seller, issue_date, hash, None) {
        Ok(code) => code,
        Err(f) => return Ok(Err(f)),
    };
    let (invoice, certificate) = qr_offline_keys(seller, &r.content_hash);
    // KOD II made before (a redelivery after a crash) is kept: its link is re-read from the PNG
    // and drawn again, so both images always carry the same signature.
    let earlier = archive
        .get(&certificate.png)
        .await?
        .and_then(|o| o.metadata.get(QR_URL_METADATA).cloned());
    let kod2 = match earlier {
        Some(url) => ksef_client::qr::render(&url, ksef_client::qr::CERTIFICATE_LABEL),
        None => {
            let context = ContextIdentifier::Nip(seller.clone());
            ksef_client::qr::certificate_code(&environment, &context, seller, &offline, hash)
        }
    };
    let kod2 = match kod2 {
        Ok(code) => code,
        Err(f) => return Ok(Err(f)),
    };
    put(archive, &invoice, &kod1, r, None).await?;
    put(archive, &certificate, &kod2, r, None).await?;
    let (invoice_url, certificate_url) = (kod1.url, kod2.url);
    Ok(Ok(OfflineCodes {
        invoice,
        invoice_url,
        certificate,
        certificate_url,
    }))
}
