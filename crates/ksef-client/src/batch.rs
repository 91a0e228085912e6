//! Batch sessions: many invoices in one ZIP (or tar.gz) archive, split binarily into parts of
//! at most 100 MB, each part encrypted with the session key; open, PUT each part to its
//! pre-signed URL with the given headers and WITHOUT the access token, close, then read the
//! per-invoice results from the session's invoice list (matched by `invoiceFileName` or hash).

use std::io::Write;

use relay_domain::{ContentHash, ErrorClass, ErrorSource, Failure};
use reqwest::Method;
use serde_json::json;

use crate::client::{Auth, Body, Call, KeyUsage, KsefClient, Result};
use crate::crypto;
use crate::failure_map::{from_response, from_transport};
use crate::limiter::EndpointGroup;
use crate::model::{OpenBatchResponse, PartUploadRequest, FA3};
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
        let r: OpenBatchResponse = self
            .with_key(KeyUsage::SymmetricKeyEncryption, |rsa| {
                let (key, parts) = (&key, &parts);
                async move {
                    let body = json!({
                        "formCode": FA3,
                        "batchFile": {
                            "fileSize": archive.bytes.len(),
                            "fileHash": ContentHash::of(&archive.bytes).to_base64(),
                            "compressionType": match archive.compression { Compression::Zip => "Zip", Compression::TarGz => "TarGz" },
                            "fileParts": parts.iter().map(|p| json!({"ordinalNumber": p.ordinal, "fileSize": p.bytes.len(), "fileHash": p.hash.to_base64()})).collect::<Vec<_>>(),
                        },
                        "encryption": Self::encryption_info(key, &rsa)?,
                        "offlineMode": offline_mode,
                    });
                    let a = self
                        .call(Call { operation: "open_batch_session", group: EndpointGroup::BatchSession, method: Method::POST, path: "/sessions/batch".into(), body: Some(Body::Json(body)), auth: Auth::Access, headers: Vec::new() })
                        .await?;
                    a.json("open_batch_session")
                }
            })
            .await?;
        Ok(BatchSession {
            reference: r.reference_number,
            uploads: r.part_upload_requests,
            parts,
        })
    }

    /// Uploads every part to its pre-signed URL: the given method and headers, the raw
    /// encrypted bytes, and no access token. Part uploads are not rate-limited.
    pub async fn upload_batch_parts(&self, session: &BatchSession) -> Result<()> {
        let op = "upload_batch_part";
        let uploads = session.uploads.iter().map(|u| async move {
            let part = session.parts.iter().find(|p| p.ordinal == u.ordinal_number).ok_or_else(|| {
                Failure::new(
                    ErrorClass::Permanent,
                    ErrorSource::Ksef { operation: op.into() },
                    format!("KSeF asked for part {} which was not declared", u.ordinal_number),
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
        });
        // KSeF recommends parallel uploads.
        futures::future::try_join_all(uploads).await.map(|_| ())
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
