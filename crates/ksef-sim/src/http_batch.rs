//! Batch sessions: open (declaring the archive and its encrypted parts), part uploads through
//! the returned PUT links (no token, as on KSeF's blob storage), close, then processing of the
//! archive: decrypt each part, join, check the declared size and hash, unpack ZIP or tar.gz and
//! run every file through the same checks as an online invoice.

use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use relay_domain::{ContentHash, Nip};
use serde::Deserialize;
use serde_json::json;

use crate::api_error::{ApiError, Code};
use crate::http_auth::parse_json;
use crate::http_sessions::{auth_document_hash, check_form_code, is_offline, plan_for, session_mut, unwrap_key, Encryption, FormCode};
use crate::state::{secret, Batch, Compression, DeclaredPart, Invoice, Session, SessionAes, Sim, StatusInfo};

pub(crate) const MAX_PART: u64 = 100_000_000;
const MAX_PARTS: usize = 50;
/// The whole package before encryption: 5 GB.
const MAX_PACKAGE: u64 = 5_000_000_000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PartInfo {
    ordinal_number: u32,
    file_size: u64,
    file_hash: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileInfo {
    file_size: u64,
    file_hash: String,
    #[serde(default)]
    compression_type: Option<String>,
    file_parts: Vec<PartInfo>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OpenBatch {
    form_code: FormCode,
    batch_file: FileInfo,
    encryption: Encryption,
    #[serde(default)]
    offline_mode: bool,
}

pub async fn open_batch(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let context = sim.authorize(&headers, "/v2/sessions/batch")?;
    let req: OpenBatch = parse_json(&body)?;
    check_form_code(&req.form_code)?;
    let f = &req.batch_file;
    let compression = match f.compression_type.as_deref() {
        None | Some("Zip") => Compression::Zip,
        Some("TarGz") => Compression::TarGz,
        Some(other) => return Err(ApiError::validation(format!("Nieznany typ kompresji {other}."))),
    };
    if f.file_parts.is_empty() {
        return Err(ApiError::validation("Paczka musi mieć co najmniej jedną część."));
    }
    if f.file_parts.len() > MAX_PARTS {
        return Err(ApiError::bad(
            Code::TooManyParts,
            format!("Paczka ma {} części; dozwolone najwyżej {MAX_PARTS}.", f.file_parts.len()),
        ));
    }
    if f.file_size > MAX_PACKAGE {
        return Err(ApiError::validation(format!(
            "Paczka ma {} B; dozwolone najwyżej {MAX_PACKAGE} B.",
            f.file_size
        )));
    }
    ContentHash::parse(&f.file_hash).map_err(|e| ApiError::validation(e.to_string()))?;
    for (i, p) in f.file_parts.iter().enumerate() {
        if p.ordinal_number as usize != i + 1 {
            return Err(ApiError::validation("Części paczki muszą być numerowane kolejno od 1."));
        }
        if p.file_size == 0 || p.file_size > MAX_PART {
            return Err(ApiError::bad(
                Code::PartSize,
                format!(
                    "Część {} ma rozmiar {} B; dozwolone 1..{MAX_PART} B.",
                    p.ordinal_number, p.file_size
                ),
            ));
        }
        ContentHash::parse(&p.file_hash).map_err(|e| ApiError::validation(e.to_string()))?;
    }
    let key = unwrap_key(&sim, &req.encryption)?;
    let base = sim.link_base(&headers);
    let mut store = sim.store.lock().expect("store lock");
    let seq = store.next_seq();
    let reference = store.reference("SB");
    let now = Utc::now();
    let parts: Vec<DeclaredPart> = f
        .file_parts
        .iter()
        .map(|p| DeclaredPart {
            ordinal: p.ordinal_number,
            size: p.file_size,
            hash: p.file_hash.clone(),
            upload_token: secret("sig"),
        })
        .collect();
    let uploads: Vec<_> = parts
        .iter()
        .map(|p| {
            json!({
                "ordinalNumber": p.ordinal,
                "method": "PUT",
                "url": format!("{base}/storage/batch/{}/{}?sig={}", reference, p.ordinal, p.upload_token),
                "headers": {"x-ms-blob-type": "BlockBlob"},
            })
        })
        .collect();
    let auth_document_hash = auth_document_hash(&store, &headers);
    store.sessions.insert(
        reference.clone(),
        Session {
            seq,
            reference: reference.clone(),
            context,
            auth_document_hash,
            created: now,
            updated: now,
            valid_until: now + chrono::Duration::from_std(sim.cfg.session_lifetime).unwrap_or(chrono::Duration::hours(12)),
            key,
            closed: false,
            failure: None,
            invoices: Vec::new(),
            batch: Some(Batch {
                file_size: f.file_size,
                file_hash: f.file_hash.clone(),
                compression,
                parts,
                uploaded: Default::default(),
            }),
            offline_mode: req.offline_mode,
            unpacking: false,
            first_open: 0,
        },
    );
    Ok((
        StatusCode::CREATED,
        Json(json!({"referenceNumber": reference, "partUploadRequests": uploads})),
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct Sig {
    sig: String,
}

/// A part upload. Like KSeF's blob storage it wants `x-ms-blob-type: BlockBlob` and the link's
/// signature, and it refuses a bearer token: the access token must never leave for storage.
pub async fn upload_part(
    State(sim): State<Arc<Sim>>,
    Path((reference, ordinal)): Path<(String, u32)>,
    Query(q): Query<Sig>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if headers.contains_key("authorization") {
        return (
            StatusCode::BAD_REQUEST,
            "Authorization header is not allowed on a pre-signed upload",
        )
            .into_response();
    }
    if headers.get("x-ms-blob-type").and_then(|v| v.to_str().ok()) != Some("BlockBlob") {
        return (StatusCode::BAD_REQUEST, "x-ms-blob-type: BlockBlob is required").into_response();
    }
    let mut store = sim.store.lock().expect("store lock");
    let Some(s) = store.sessions.get_mut(&reference) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let closed = s.closed;
    let Some(b) = s.batch.as_mut() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !b.parts.iter().any(|p| p.ordinal == ordinal && p.upload_token == q.sig) {
        return StatusCode::FORBIDDEN.into_response();
    }
    if closed {
        return StatusCode::FORBIDDEN.into_response();
    }
    b.uploaded.insert(ordinal, body.to_vec());
    StatusCode::CREATED.into_response()
}

pub async fn close_batch(State(sim): State<Arc<Sim>>, Path(reference): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    let context = sim.authorize(&headers, &format!("/v2/sessions/batch/{reference}/close"))?;
    let mut store = sim.store.lock().expect("store lock");
    let s = session_mut(&mut store, &reference, &context)?;
    if s.closed || s.key.is_none() {
        return Err(ApiError::bad(
            Code::SessionStatus,
            format!("Status sesji {} uniemożliwia jej zamknięcie.", s.status().code),
        ));
    }
    let Some(b) = s.batch.as_ref() else {
        return Err(ApiError::no_session(&reference));
    };
    for p in &b.parts {
        match b.uploaded.get(&p.ordinal) {
            None => {
                return Err(ApiError::bad(
                    Code::PartMissing,
                    format!("Nie przesłano zadeklarowanej '{}' części pliku.", p.ordinal),
                ))
            }
            Some(bytes) if bytes.len() as u64 != p.size => {
                return Err(ApiError::bad(
                    Code::PartSize,
                    format!("Zadeklarowany rozmiar części '{}' nie zgadza się z rzeczywistym.", p.ordinal),
                ))
            }
            Some(_) => {}
        }
    }
    let batch = b.clone();
    s.closed = true;
    s.unpacking = true;
    s.updated = Utc::now();
    let key = s.key.expect("checked above");
    let offline_mode = s.offline_mode;
    drop(store);
    // KSeF answers the close at once and processes the archive afterwards (the session reads
    // 150 meanwhile): unpacking and checking thousands of invoices inside the request made the
    // close outlast a client's timeout. Optional (`SimConfig::batch_processing_after_close`).
    if sim.cfg.batch_processing_after_close {
        tokio::task::spawn_blocking(move || process_batch(&sim, &context, &reference, &batch, &key, offline_mode));
    } else {
        process_batch(&sim, &context, &reference, &batch, &key, offline_mode);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The closed batch's archive unpacked, each invoice checked and listed in the session.
fn process_batch(sim: &Arc<Sim>, context: &Nip, reference: &str, b: &Batch, key: &SessionAes, offline_mode: bool) {
    let outcome = unpack(b, key);
    let files = match outcome {
        Ok(files) => files,
        Err(failure) => {
            let mut store = sim.store.lock().expect("store lock");
            if let Some(s) = store.sessions.get_mut(reference) {
                s.failure = Some(failure);
                s.unpacking = false;
            }
            return;
        }
    };
    let planned: Vec<_> = files
        .into_iter()
        .map(|(name, bytes)| {
            let (plan, number) = plan_for(sim, context, &bytes, false, offline_mode, false);
            (name, ContentHash::of(&bytes), plan, number)
        })
        .collect();
    let mut store = sim.store.lock().expect("store lock");
    let refs: Vec<String> = planned.iter().map(|_| store.reference("EE")).collect();
    let tokens: Vec<String> = planned.iter().map(|_| secret("upo")).collect();
    let now = Instant::now();
    let Some(s) = store.sessions.get_mut(reference) else { return };
    s.unpacking = false;
    let opened = s.created;
    for ((name, hash, plan, number), (r, token)) in planned.into_iter().zip(refs.into_iter().zip(tokens)) {
        let offline = is_offline(offline_mode, &plan, opened);
        s.invoices.push(Invoice {
            ordinal: s.invoices.len() + 1,
            reference: r,
            hash,
            file_name: Some(name),
            invoice_number: number,
            // For batch invoices the invoicing date is the session's opening time.
            invoicing_date: opened,
            received: now,
            offline,
            offline_requested: offline_mode,
            plan,
            corrects: None,
            final_status: None,
            accepted: None,
            upo_token: token,
        });
    }
    let links: Vec<(String, usize)> = s.invoices.iter().enumerate().map(|(i, inv)| (inv.upo_token.clone(), i)).collect();
    for (t, i) in links {
        store.upo_links.insert(t, (reference.to_owned(), i));
    }
}

/// Decrypts, joins, verifies and unpacks the archive; Err is the session's failure status.
fn unpack(b: &Batch, key: &SessionAes) -> Result<Vec<(String, Vec<u8>)>, StatusInfo> {
    let verification =
        |d: &str| StatusInfo::new(405, "Błąd weryfikacji poprawności dostarczonych elementów paczki").with_details(vec![d.to_owned()]);
    let mut archive = Vec::with_capacity(b.file_size as usize);
    for p in &b.parts {
        let enc = &b.uploaded[&p.ordinal];
        if ContentHash::of(enc).to_base64() != p.hash {
            return Err(verification(&format!(
                "Skrót części '{}' nie zgadza się z zadeklarowanym.",
                p.ordinal
            )));
        }
        let plain = crate::aes_cbc::decrypt(&key.0, &key.1, enc).ok_or_else(|| {
            StatusInfo::new(435, "Błąd odszyfrowania pliku")
                .with_details(vec![format!("Nie udało się odszyfrować części '{}'.", p.ordinal)])
        })?;
        archive.extend_from_slice(&plain);
    }
    if archive.len() as u64 != b.file_size || ContentHash::of(&archive).to_base64() != b.file_hash {
        return Err(verification("Rozmiar lub skrót paczki nie zgadza się z zadeklarowanym."));
    }
    let decompression = |e: String| StatusInfo::new(430, "Błąd dekompresji pierwotnego archiwum").with_details(vec![e]);
    let mut files = Vec::new();
    match b.compression {
        Compression::Zip => {
            let mut z = zip::ZipArchive::new(std::io::Cursor::new(archive)).map_err(|e| decompression(e.to_string()))?;
            for i in 0..z.len() {
                let mut f = z.by_index(i).map_err(|e| decompression(e.to_string()))?;
                if f.is_dir() {
                    continue;
                }
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes).map_err(|e| decompression(e.to_string()))?;
                let name = f.name().map(|n| n.into_owned()).map_err(|e| decompression(e.to_string()))?;
                files.push((name, bytes));
            }
        }
        Compression::TarGz => {
            let mut t = tar::Archive::new(flate2::read::GzDecoder::new(std::io::Cursor::new(archive)));
            for entry in t.entries().map_err(|e| decompression(e.to_string()))? {
                let mut entry = entry.map_err(|e| decompression(e.to_string()))?;
                if !entry.header().entry_type().is_file() {
                    continue;
                }
                let name = entry.path().map_err(|e| decompression(e.to_string()))?.display().to_string();
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).map_err(|e| decompression(e.to_string()))?;
                files.push((name, bytes));
            }
        }
    }
    if files.is_empty() {
        return Err(decompression("Archiwum nie zawiera plików.".into()));
    }
    Ok(files)
}
