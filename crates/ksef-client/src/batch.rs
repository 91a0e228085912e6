//! Batch sessions: many invoices in one ZIP (or tar.gz) archive, split binarily into parts of
//! at most 100 MB, each part encrypted with the session key; open, PUT each part to its
//! pre-signed URL with the given headers and WITHOUT the access token, close, then read the
//! per-invoice results from the session's invoice list (matched by `invoiceFileName` or hash).

use std::io::Write;

use relay_domain::{ContentHash, ErrorClass, ErrorSource, Failure, KsefReference};
use reqwest::Method;
use serde_json::json;

use crate::batch_builder::{BatchPlan, PartDeclaration};
use crate::client::{Auth, Body, Call, KeyUsage, KsefClient, Result};
use crate::crypto;
use crate::failure_map::{from_response, from_transport};
use crate::limiter::EndpointGroup;
use crate::model::{InvoiceStatus, OpenBatchResponse, PartUploadRequest, Status, FA3};
use crate::secret::SessionKey;

/// KSeF's limits: a part ≤ 100 MB before encryption, ≤ 50 parts, ≤ 5 GB in all.
pub const MAX_PART_SIZE: usize = 100_000_000;
pub const MAX_PARTS: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zip,
    TarGz,
}

/// An unencrypted archive of invoices, ready to be split and encrypted.
#[derive(Debug, Clone)]
pub struct BatchArchive {
    pub bytes: Vec<u8>,
    pub compression: Compression,
    /// (file name in the archive, hash of the invoice bytes): how results are matched back.
    pub files: Vec<(String, ContentHash)>,
}

fn archive_failure(e: impl std::fmt::Display) -> Failure {
    Failure::new(
        ErrorClass::Permanent,
        ErrorSource::Ksef {
            operation: "batch_archive".into(),
        },
        format!("cannot build the batch archive: {e}"),
    )
}

impl BatchArchive {
    /// A ZIP (deflate) of `(file name, exact invoice bytes)`.
    pub fn zip(invoices: &[(String, Vec<u8>)]) -> Result<BatchArchive> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        for (name, bytes) in invoices {
            w.start_file(name.as_str(), opts).map_err(archive_failure)?;
            w.write_all(bytes).map_err(archive_failure)?;
        }
        let bytes = w.finish().map_err(archive_failure)?.into_inner();
        Ok(BatchArchive {
            bytes,
            compression: Compression::Zip,
            files: Self::index(invoices),
        })
    }

    /// A tar.gz of the same (KSeF 2.6+: `compressionType: TarGz`).
    pub fn tar_gz(invoices: &[(String, Vec<u8>)]) -> Result<BatchArchive> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut t = tar::Builder::new(gz);
        for (name, bytes) in invoices {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            t.append_data(&mut h, name, bytes.as_slice()).map_err(archive_failure)?;
        }
        let bytes = t.into_inner().map_err(archive_failure)?.finish().map_err(archive_failure)?;
        Ok(BatchArchive {
            bytes,
            compression: Compression::TarGz,
            files: Self::index(invoices),
        })
    }

    fn index(invoices: &[(String, Vec<u8>)]) -> Vec<(String, ContentHash)> {
        invoices.iter().map(|(n, b)| (n.clone(), ContentHash::of(b))).collect()
    }
}

/// One encrypted part, as declared at open and uploaded afterwards.
#[derive(Debug, Clone)]
pub struct EncryptedPart {
    pub ordinal: u32,
    pub bytes: Vec<u8>,
    pub hash: ContentHash,
}

/// Splits the archive binarily into parts of at most `part_size` bytes and encrypts each
/// with the session key and IV (the official clients reuse both for every part).
pub fn encrypt_parts(archive: &[u8], key: &SessionKey, part_size: usize) -> Result<Vec<EncryptedPart>> {
    let part_size = part_size.clamp(1, MAX_PART_SIZE);
    let parts: Vec<EncryptedPart> = archive
        .chunks(part_size)
        .enumerate()
        .map(|(i, chunk)| {
            let bytes = crypto::aes_encrypt(key, chunk);
            EncryptedPart {
                ordinal: i as u32 + 1,
                hash: ContentHash::of(&bytes),
                bytes,
            }
        })
        .collect();
    if parts.is_empty() || parts.len() > MAX_PARTS {
        return Err(archive_failure(format!("{} parts; KSeF allows 1 to {MAX_PARTS}", parts.len())));
    }
    Ok(parts)
}

/// What a batch session says about one invoice sent in it: how a send whose result is unknown
/// is reconciled. Nothing about the invoice is known until KSeF has processed the session, so
/// "not listed" means "not received" only once the session is final.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchInvoice {
    /// The session was opened and never closed (a crash, a failed upload or close): closing it
    /// now lets KSeF process what was uploaded, or refuse if the part never arrived.
    SessionOpen,
    /// KSeF lists the invoice under this reference, whatever its status (the status stage reads
    /// the verdict).
    Listed(KsefReference),
    /// KSeF lists it under a reference that does not parse: it broke its contract.
    ListedUnreadable(Failure),
    /// Not listed while KSeF is still processing the session (`status`: its words): it may be yet.
    NotYet { status: String },
    /// Not listed and the session is final: KSeF did not take it. The failure says how the
    /// session ended, in KSeF's words.
    Missing(Failure),
}

impl BatchInvoice {
    /// The verdict from the session's status and, unless the session is open, its listing of
    /// our invoice.
    fn of(session: &str, status: &Status, listed: Option<&InvoiceStatus>) -> BatchInvoice {
        if status.code == 100 {
            return BatchInvoice::SessionOpen;
        }
        match (listed, status.code) {
            (Some(i), _) => match KsefReference::parse(&i.reference_number) {
                Ok(reference) => BatchInvoice::Listed(reference),
                Err(e) => BatchInvoice::ListedUnreadable(
                    Failure::new(
                        ErrorClass::Transient,
                        ErrorSource::Relay,
                        format!("KSeF listed our invoice under an unreadable reference: {e}"),
                    )
                    .with_code("BAD_REFERENCE"),
                ),
            },
            (None, 150) => BatchInvoice::NotYet {
                status: format!("KSeF status {} ({})", status.code, status.description),
            },
            (None, code) => {
                let mut message = format!(
                    "batch session {session} ended with status {code} ({}) without our invoice",
                    status.description
                );
                if let Some(d) = status.details.as_ref().filter(|d| !d.is_empty()) {
                    message.push_str(&format!(": {}", d.join("; ")));
                }
                // Transient and charged: a batch that keeps failing ends in FAILED, not a loop.
                BatchInvoice::Missing(
                    Failure::new(
                        ErrorClass::Transient,
                        ErrorSource::Ksef {
                            operation: "batch_session".into(),
                        },
                        message,
                    )
                    .with_code(code.to_string()),
                )
            }
        }
    }
}

/// A batch session's status and invoice list, read once ([`KsefClient::batch_results`]) and
/// asked about each member.
#[derive(Debug, Clone)]
pub struct BatchResults {
    pub session: String,
    status: Status,
    invoices: Vec<InvoiceStatus>,
    /// Each listed invoice's place in `invoices`, by its hash (base64): a harvest asks about
    /// every member of a session of up to 10,000.
    by_hash: std::collections::HashMap<String, usize>,
}

impl BatchResults {
    fn new(session: &str, status: Status, invoices: Vec<InvoiceStatus>) -> BatchResults {
        let mut by_hash = std::collections::HashMap::with_capacity(invoices.len());
        for (i, inv) in invoices.iter().enumerate() {
            // The first listing of a hash wins, as a scan of the list would find it.
            by_hash.entry(inv.invoice_hash.clone()).or_insert(i);
        }
        BatchResults {
            session: session.to_owned(),
            status,
            invoices,
            by_hash,
        }
    }

    /// How many invoices the session lists.
    pub fn listed(&self) -> usize {
        self.invoices.len()
    }

    /// Still open (never closed): closing it lets KSeF process what was uploaded.
    pub fn is_open(&self) -> bool {
        self.status.code == 100
    }

    /// KSeF has finished with the session: its list is complete, every listed invoice decided.
    pub fn is_final(&self) -> bool {
        !matches!(self.status.code, 100 | 150)
    }

    /// The session's status in KSeF's words, for a history line.
    pub fn describe(&self) -> String {
        format!("KSeF status {} ({})", self.status.code, self.status.description)
    }

    /// The verdict on the invoice with content `hash`, and KSeF's listing of it (with its own
    /// status, KSeF number and UPO link) when listed.
    pub fn find(&self, hash: &ContentHash) -> (BatchInvoice, Option<&InvoiceStatus>) {
        let want = hash.to_base64();
        let listed = if self.is_open() {
            None
        } else {
            self.by_hash.get(&want).map(|i| &self.invoices[*i])
        };
        (BatchInvoice::of(&self.session, &self.status, listed), listed)
    }
}

/// An opened batch session: its reference and where to upload each part.
#[derive(Debug, Clone)]
pub struct OpenedBatch {
    pub reference: String,
    pub uploads: Vec<PartUploadRequest>,
}

/// An open batch session with its parts and where to upload them.
#[derive(Debug)]
pub struct BatchSession {
    pub reference: String,
    pub uploads: Vec<PartUploadRequest>,
    pub parts: Vec<EncryptedPart>,
}

impl KsefClient {
    /// Opens a batch session for an archive split into parts of `part_size` bytes.
    pub async fn open_batch_session(&self, archive: &BatchArchive, part_size: usize, offline_mode: bool) -> Result<BatchSession> {
        let key = SessionKey::generate();
        let parts = encrypt_parts(&archive.bytes, &key, part_size)?;
        let declared: Vec<PartDeclaration> = parts
            .iter()
            .map(|p| PartDeclaration {
                ordinal: p.ordinal,
                size: p.bytes.len() as u64,
                hash: p.hash,
            })
            .collect();
        let archive_size = archive.bytes.len() as u64;
        let archive_hash = ContentHash::of(&archive.bytes);
        let opened = self
            .open_batch(&key, archive.compression, archive_size, &archive_hash, &declared, offline_mode)
            .await?;
        Ok(BatchSession {
            reference: opened.reference,
            uploads: opened.uploads,
            parts,
        })
    }

    /// Opens a batch session for an archive declared by a streaming pass ([`BatchPlan`]); its
    /// parts are uploaded one at a time with [`KsefClient::upload_batch_part`].
    pub async fn open_planned_batch(&self, plan: &BatchPlan, offline_mode: bool) -> Result<OpenedBatch> {
        self.open_batch(
            &plan.key,
            plan.compression,
            plan.file_size,
            &plan.file_hash,
            &plan.parts,
            offline_mode,
        )
        .await
    }

    async fn open_batch(
        &self,
        key: &SessionKey,
        compression: Compression,
        file_size: u64,
        file_hash: &ContentHash,
        parts: &[PartDeclaration],
        offline_mode: bool,
    ) -> Result<OpenedBatch> {
        let r: OpenBatchResponse = self
            .with_key(KeyUsage::SymmetricKeyEncryption, |rsa| async move {
                let body = json!({
                    "formCode": FA3,
                    "batchFile": {
                        "fileSize": file_size,
                        "fileHash": file_hash.to_base64(),
                        "compressionType": match compression { Compression::Zip => "Zip", Compression::TarGz => "TarGz" },
                        "fileParts": parts.iter().map(|p| json!({"ordinalNumber": p.ordinal, "fileSize": p.size, "fileHash": p.hash.to_base64()})).collect::<Vec<_>>(),
                    },
                    "encryption": Self::encryption_info(key, &rsa)?,
                    "offlineMode": offline_mode,
                });
                let a = self
                    .call(Call { operation: "open_batch_session", group: EndpointGroup::BatchSession, method: Method::POST, path: "/sessions/batch".into(), body: Some(Body::Json(body)), auth: Auth::Access, headers: Vec::new() })
                    .await?;
                a.json("open_batch_session")
            })
            .await?;
        Ok(OpenedBatch {
            reference: r.reference_number,
            uploads: r.part_upload_requests,
        })
    }

    /// Uploads every part to its pre-signed URL: the given method and headers, the raw
    /// encrypted bytes, and no access token. Part uploads are not rate-limited.
    pub async fn upload_batch_parts(&self, session: &BatchSession) -> Result<()> {
        let opened = OpenedBatch {
            reference: session.reference.clone(),
            uploads: session.uploads.clone(),
        };
        let opened = &opened;
        // Each part KSeF asked for (the uploads it listed), KSeF recommends in parallel.
        let uploads = session.uploads.iter().map(|u| async move {
            let part = session.parts.iter().find(|p| p.ordinal == u.ordinal_number).ok_or_else(|| {
                Failure::new(
                    ErrorClass::Permanent,
                    ErrorSource::Ksef {
                        operation: "upload_batch_part".into(),
                    },
                    format!("KSeF asked for part {} which was not declared", u.ordinal_number),
                )
            })?;
            self.upload_batch_part(opened, part).await
        });
        futures::future::try_join_all(uploads).await.map(|_| ())
    }

    /// Uploads one encrypted part to the URL KSeF gave for its ordinal number.
    pub async fn upload_batch_part(&self, batch: &OpenedBatch, part: &EncryptedPart) -> Result<()> {
        let op = "upload_batch_part";
        let u = batch.uploads.iter().find(|u| u.ordinal_number == part.ordinal).ok_or_else(|| {
            Failure::new(
                ErrorClass::Permanent,
                ErrorSource::Ksef { operation: op.into() },
                format!("KSeF gave no upload link for part {}", part.ordinal),
            )
        })?;
        let method = Method::from_bytes(u.method.as_bytes()).map_err(|e| crate::failure_map::unreadable(op, "upload method", e))?;
        let mut req = self.http().request(method, &u.url).body(part.bytes.clone());
        for (k, v) in &u.headers {
            if let Some(v) = v {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        let resp = req.send().await.map_err(|e| from_transport(op, &e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.bytes().await.map_err(|e| from_transport(op, &e))?;
        Err(from_response(
            op,
            status.as_u16(),
            retry_after.as_deref(),
            &body,
            chrono::Utc::now(),
        ))
    }

    /// Where the invoice with content `hash` stands in batch session `session`: the session's
    /// status, then (unless it is still open) its invoice list.
    pub async fn find_in_batch(&self, session: &str, hash: &ContentHash) -> Result<BatchInvoice> {
        Ok(self.batch_results(session).await?.find(hash).0)
    }

    /// What a batch session holds, read once for all its members: its status, then (unless it
    /// is still open) every page of its invoice list.
    pub async fn batch_results(&self, session: &str) -> Result<BatchResults> {
        self.read_batch(session, false).await
    }

    /// Like [`KsefClient::batch_results`], but the list is read only once the session is final
    /// (one read of it per batch; a session still processing costs one status call).
    pub async fn final_batch_results(&self, session: &str) -> Result<BatchResults> {
        self.read_batch(session, true).await
    }

    async fn read_batch(&self, session: &str, only_final: bool) -> Result<BatchResults> {
        let status = self.session_status(session).await?.status;
        let invoices = if status.code == 100 || (only_final && status.code == 150) {
            Vec::new()
        } else {
            self.session_invoices(session).await?
        };
        Ok(BatchResults::new(session, status, invoices))
    }

    /// Closes a batch session: KSeF starts processing the archive.
    pub async fn close_batch_session(&self, reference: &str) -> Result<()> {
        self.call(Call {
            operation: "close_batch_session",
            group: EndpointGroup::BatchSessionClose,
            method: Method::POST,
            path: format!("/sessions/batch/{reference}/close"),
            body: None,
            auth: Auth::Access,
            headers: Vec::new(),
        })
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: &str = "20250625-SB-2C3E6C8000-B675CF5D68-87";

    fn status(code: i32, details: Option<Vec<String>>) -> Status {
        Status {
            code,
            description: "Opis".into(),
            details,
            extensions: None,
        }
    }

    fn listed(reference: &str) -> InvoiceStatus {
        serde_json::from_value(serde_json::json!({
            "ordinalNumber": 1, "referenceNumber": reference,
            "invoiceHash": "mkht+3m5trnfxlTYhq3QFn74LkEO69MFNlsMAkCDSPA=", "invoicingDate": "2026-03-01T12:00:00Z",
            "status": {"code": 450, "description": "d"}
        }))
        .unwrap()
    }

    #[test]
    fn a_batch_session_says_open_listed_not_yet_or_missing() {
        assert_eq!(BatchInvoice::of(SESSION, &status(100, None), None), BatchInvoice::SessionOpen);
        let reference = "20250625-EE-319D7EE000-B67F415CDC-2C";
        for code in [150, 200, 445] {
            assert_eq!(
                BatchInvoice::of(SESSION, &status(code, None), Some(&listed(reference))),
                BatchInvoice::Listed(KsefReference::parse(reference).unwrap()),
                "any listed copy is ours, whatever its status ({code})"
            );
        }
        match BatchInvoice::of(SESSION, &status(200, None), Some(&listed("not-a-reference"))) {
            BatchInvoice::ListedUnreadable(f) => assert_eq!(f.code.as_deref(), Some("BAD_REFERENCE")),
            o => panic!("{o:?}"),
        }
        assert_eq!(
            BatchInvoice::of(SESSION, &status(150, None), None),
            BatchInvoice::NotYet {
                status: "KSeF status 150 (Opis)".into()
            }
        );
        for code in [200, 445, 440, 170] {
            let BatchInvoice::Missing(f) = BatchInvoice::of(SESSION, &status(code, Some(vec!["a".into(), "b".into()])), None) else {
                panic!("{code}")
            };
            assert_eq!((f.class, f.code), (ErrorClass::Transient, Some(code.to_string())));
            assert_eq!(
                f.message,
                format!("batch session {SESSION} ended with status {code} (Opis) without our invoice: a; b")
            );
        }
    }
}
