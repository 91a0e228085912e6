//! Online sessions and everything read from a session: open, send, close, session status, the
//! invoice list, invoice status and UPOs (by reference, by KSeF number, through the download
//! link, and the session's collective UPO).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use relay_domain::{ContentHash, Nip};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::api_error::{ApiError, Code};
use crate::http_auth::{bearer, parse_json};
use crate::invoice_check;
use crate::state::{rfc3339, secret, Invoice, Plan, Session, SessionAes, Sim, StatusInfo, Store};
use crate::upo::{self, UpoDocument, UpoHeader};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// KSeF's per-page limit for session UPOs.
const UPO_PAGE: usize = 10_000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FormCode {
    pub system_code: String,
    pub schema_version: String,
    pub value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Encryption {
    pub encrypted_symmetric_key: String,
    pub initialization_vector: String,
    #[serde(default)]
    pub public_key_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OpenOnline {
    form_code: FormCode,
    encryption: Encryption,
}

/// Checks the form code (the simulator speaks FA (3) only).
pub fn check_form_code(f: &FormCode) -> Result<(), ApiError> {
    if (f.system_code.as_str(), f.schema_version.as_str(), f.value.as_str()) != ("FA (3)", "1-0E", "FA") {
        return Err(ApiError::validation(format!(
            "Nieobsługiwany kod formularza ({}, {}, {}); symulator obsługuje FA (3) 1-0E FA.",
            f.system_code, f.schema_version, f.value
        )));
    }
    Ok(())
}

/// Unwraps the session key. Err is a synchronous 400; Ok(None) is a key KSeF cannot decrypt,
/// which KSeF reports as session status 415.
pub fn unwrap_key(sim: &Sim, e: &Encryption) -> Result<Option<SessionAes>, ApiError> {
    let keys = sim.keys.read().expect("keys lock");
    if let Some(id) = &e.public_key_id {
        if id != &keys.symmetric.public_key_id {
            return Err(ApiError::bad(
                Code::UnknownKey,
                format!("Klucz o identyfikatorze {id} nie jest wspierany."),
            ));
        }
    }
    let iv: [u8; 16] = B64
        .decode(&e.initialization_vector)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| ApiError::validation("initializationVector musi zawierać 16 bajtów w Base64."))?;
    let wrapped = B64
        .decode(&e.encrypted_symmetric_key)
        .map_err(|_| ApiError::validation("encryptedSymmetricKey nie jest poprawnym Base64."))?;
    Ok(keys
        .symmetric
        .decrypt(&wrapped)
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .map(|k| (k, iv)))
}

/// The auth document hash behind a bearer access token (the UPO quotes it).
pub fn auth_document_hash(store: &Store, headers: &HeaderMap) -> String {
    bearer(headers)
        .and_then(|t| store.access.get(t))
        .and_then(|g| store.auth_ops.get(&g.auth_reference))
        .map(|op| op.document_hash.clone())
        .unwrap_or_else(|| ContentHash::of(b"").to_base64())
}

pub async fn open_online(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let context = sim.authorize(&headers, "/v2/sessions/online")?;
    let req: OpenOnline = parse_json(&body)?;
    check_form_code(&req.form_code)?;
    let key = unwrap_key(&sim, &req.encryption)?;
    let mut store = sim.store.lock().expect("store lock");
    let seq = store.next_seq();
    let reference = store.reference("SO");
    let now = Utc::now();
    let valid_until = now + chrono::Duration::from_std(sim.cfg.session_lifetime).unwrap_or(chrono::Duration::hours(12));
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
            valid_until,
            key,
            closed: false,
            failure: None,
            invoices: Vec::new(),
            batch: None,
            offline_mode: false,
            unpacking: false,
            first_open: 0,
        },
    );
    Ok((
        StatusCode::CREATED,
        Json(json!({"referenceNumber": reference, "validUntil": rfc3339(valid_until)})),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendInvoice {
    invoice_hash: String,
    invoice_size: u64,
    encrypted_invoice_hash: String,
    encrypted_invoice_size: u64,
    encrypted_invoice_content: String,
    #[serde(default)]
    offline_mode: bool,
    #[serde(default)]
    hash_of_corrected_invoice: Option<String>,
}

/// Finds the caller's session: another context's session does not exist for this caller.
pub fn session_mut<'a>(store: &'a mut Store, reference: &str, context: &Nip) -> Result<&'a mut Session, ApiError> {
    match store.sessions.get_mut(reference) {
        Some(s) if &s.context == context => Ok(s),
        _ => Err(ApiError::no_session(reference)),
    }
}

/// Decides how a decrypted invoice ends: the checks KSeF runs after the 202.
/// `context` is the session's: the simulator lets a context issue only for its own NIP (KSeF
/// also honours granted permissions, which the simulator does not model).
/// `offline_requested`: sent with `offlineMode: true` (the `reject-offline` fault rejects such an
/// invoice when it is not a technical correction).
pub fn plan_for(
    sim: &Sim,
    context: &Nip,
    plain: &[u8],
    online: bool,
    offline_requested: bool,
    technical_correction: bool,
) -> (Plan, Option<String>) {
    match invoice_check::check(plain) {
        Err(details) => (
            Plan::Reject(StatusInfo::new(450, "Błąd weryfikacji semantyki dokumentu faktury").with_details(details)),
            None,
        ),
        Ok(facts) => {
            let number = Some(facts.number.to_string());
            if &facts.seller != context {
                let s = StatusInfo::new(410, "Nieprawidłowy zakres uprawnień").with_details(vec![format!(
                    "Kontekst {context} nie ma uprawnień do wystawiania faktur w imieniu podmiotu {}.",
                    facts.seller
                )]);
                return (Plan::Reject(s), number);
            }
            if facts.has_attachment && !sim.cfg.attachments_allowed {
                let s = StatusInfo::new(415, "Brak możliwości wysyłania faktury z załącznikiem")
                    .with_details(vec!["Podatnik nie zgłosił zamiaru wysyłania faktur z załącznikami.".into()]);
                return (Plan::Reject(s), number);
            }
            if facts.has_attachment && online && !technical_correction {
                let s = StatusInfo::new(415, "Brak możliwości wysyłania faktury z załącznikiem")
                    .with_details(vec!["Faktury z załącznikiem można przesyłać wyłącznie w sesji wsadowej.".into()]);
                return (Plan::Reject(s), number);
            }
            let plan = match sim.faults.for_invoice(offline_requested && !technical_correction) {
                Some(crate::faults::InvoiceFault::Status550) => Plan::Cancel550,
                Some(crate::faults::InvoiceFault::Stuck(None)) => Plan::Stuck(None),
                Some(crate::faults::InvoiceFault::Stuck(Some(d))) => Plan::Stuck(Some((d, facts))),
                Some(crate::faults::InvoiceFault::Decryption435) => Plan::Reject(decrypt_error()),
                Some(crate::faults::InvoiceFault::RejectOffline) => Plan::Reject(
                    StatusInfo::new(450, "Błąd weryfikacji semantyki dokumentu faktury").with_details(vec![
                        "Faktura offline odrzucona technicznie (scenariusz symulatora reject-offline); prześlij korektę techniczną.".into(),
                    ]),
                ),
                None => Plan::Accept(facts),
            };
            (plan, number)
        }
    }
}

pub fn decrypt_error() -> StatusInfo {
    StatusInfo::new(435, "Błąd odszyfrowania pliku").with_details(vec!["Nie udało się odszyfrować pliku faktury.".into()])
}

/// Offline when asked, or when the issue date (`P_1`) is a calendar day before the invoicing
/// date in Poland (KSeF's automatic offline; the invoicing date is the send time online, the
/// session's opening time in a batch).
pub fn is_offline(asked: bool, plan: &Plan, invoicing_date: DateTime<Utc>) -> bool {
    let day = relay_domain::polish_calendar::poland_date(invoicing_date)
        .format("%Y-%m-%d")
        .to_string();
    asked || matches!(plan, Plan::Accept(f) | Plan::Stuck(Some((_, f))) if f.issue_date < day)
}

pub async fn send_invoice(
    State(sim): State<Arc<Sim>>,
    Path(reference): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let context = sim.authorize(&headers, &format!("/v2/sessions/online/{reference}/invoices"))?;
    let req: SendInvoice = parse_json(&body)?;
    let declared_hash = ContentHash::parse(&req.invoice_hash).map_err(|e| ApiError::validation(e.to_string()))?;
    let declared_enc_hash = ContentHash::parse(&req.encrypted_invoice_hash).map_err(|e| ApiError::validation(e.to_string()))?;
    let corrects = match &req.hash_of_corrected_invoice {
        Some(h) => Some(ContentHash::parse(h).map_err(|e| ApiError::validation(e.to_string()))?),
        None => None,
    };
    if corrects.is_some() && !req.offline_mode {
        return Err(ApiError::validation(
            "hashOfCorrectedInvoice wymaga offlineMode: true (korekta techniczna faktury offline).",
        ));
    }
    let encrypted = B64
        .decode(&req.encrypted_invoice_content)
        .map_err(|_| ApiError::validation("encryptedInvoiceContent nie jest poprawnym Base64."))?;
    let key = {
        let mut store = sim.store.lock().expect("store lock");
        let s = session_mut(&mut store, &reference, &context)?;
        if !s.is_online() {
            return Err(ApiError::no_session(&reference));
        }
        let status = s.status();
        if !s.closed && sim.faults.session_unavailable() {
            return Err(ApiError::bad(
                Code::SessionUnavailable,
                format!("Sesja {reference} jest tymczasowo niedostępna; otwórz nową sesję."),
            ));
        }
        let key = match (s.closed, s.key) {
            (false, Some(k)) => k,
            _ => {
                return Err(ApiError::bad(
                    Code::SessionStatus,
                    format!("Status sesji {} uniemożliwia wysyłkę faktur.", status.code),
                ))
            }
        };
        if let Some(target) = &corrects {
            check_correction_target(&store, &context, target)?;
        }
        let s = session_mut(&mut store, &reference, &context)?;
        if s.invoices.len() >= sim.cfg.max_invoices_per_session {
            return Err(ApiError::bad(
                Code::SessionInvoiceLimit,
                format!(
                    "Sesja o numerze referencyjnym {reference} osiągnęła dozwolony limit liczby faktur {}.",
                    sim.cfg.max_invoices_per_session
                ),
            ));
        }
        key
    };
    if encrypted.len() as u64 != req.encrypted_invoice_size {
        return Err(ApiError::bad(
            Code::SizeMismatch,
            "Długość treści nie zgadza się z rozmiarem pliku.",
        ));
    }
    if ContentHash::of(&encrypted) != declared_enc_hash {
        return Err(ApiError::bad(Code::HashMismatch, "Skrót treści nie zgadza się ze skrótem pliku."));
    }
    // From here on KSeF answers 202 and reports problems in the invoice status.
    let (plan, number) = match crate::aes_cbc::decrypt(&key.0, &key.1, &encrypted) {
        None => (Plan::Reject(decrypt_error()), None),
        Some(plain) if plain.len() as u64 != req.invoice_size => (
            Plan::Reject(
                StatusInfo::new(430, "Błąd weryfikacji pliku faktury")
                    .with_details(vec!["Rozmiar faktury nie zgadza się z zadeklarowaną wartością.".into()]),
            ),
            None,
        ),
        Some(plain) if ContentHash::of(&plain) != declared_hash => (
            Plan::Reject(
                StatusInfo::new(430, "Błąd weryfikacji pliku faktury")
                    .with_details(vec!["Skrót faktury nie zgadza się z zadeklarowaną wartością.".into()]),
            ),
            None,
        ),
        Some(plain) => plan_for(&sim, &context, &plain, true, req.offline_mode, corrects.is_some()),
    };
    let invoicing_date = Utc::now();
    let offline = is_offline(req.offline_mode, &plan, invoicing_date);
    let mut store = sim.store.lock().expect("store lock");
    if let Some(target) = &corrects {
        // Again under the lock that records it: two corrections of one invoice sent at once
        // must not both be taken.
        check_correction_target(&store, &context, target)?;
    }
    let inv_ref = store.reference("EE");
    let s = session_mut(&mut store, &reference, &context)?;
    let ordinal = s.invoices.len() + 1;
    s.invoices.push(Invoice {
        ordinal,
        reference: inv_ref.clone(),
        hash: declared_hash,
        file_name: None,
        invoice_number: number,
        invoicing_date,
        received: Instant::now(),
        offline,
        offline_requested: req.offline_mode,
        plan,
        corrects,
        final_status: None,
        accepted: None,
        upo_token: secret("upo"),
    });
    s.updated = Utc::now();
    let index = ordinal - 1;
    let token = s.invoices[index].upo_token.clone();
    store.upo_links.insert(token, (reference.clone(), index));
    Ok((StatusCode::ACCEPTED, Json(json!({"referenceNumber": inv_ref}))).into_response())
}

/// A technical correction names (by hash) an offline invoice of this context that KSeF rejected
/// (21167 otherwise), and only one correction of it is ever accepted (21166). A correction still
/// being processed counts as accepted unless it ends rejected.
fn check_correction_target(store: &Store, context: &Nip, target: &ContentHash) -> Result<(), ApiError> {
    let ours = || {
        store
            .sessions
            .values()
            .filter(|s| &s.context == context)
            .flat_map(|s| s.invoices.iter())
    };
    let rejected = ours().any(|i| &i.hash == target && i.offline_requested && matches!(i.plan, Plan::Reject(_)));
    if !rejected {
        return Err(ApiError::bad(
            Code::NotCorrectable,
            format!(
                "Faktura o skrócie {target} nie jest odrzuconą fakturą offline podmiotu {context}; korekta techniczna jest niemożliwa."
            ),
        ));
    }
    if ours().any(|i| i.corrects.as_ref() == Some(target) && !matches!(i.plan, Plan::Reject(_) | Plan::Cancel550)) {
        return Err(ApiError::bad(
            Code::CorrectionAlreadyAccepted,
            format!("Korekta techniczna faktury o skrócie {target} została już przyjęta."),
        ));
    }
    Ok(())
}

pub async fn close_online(State(sim): State<Arc<Sim>>, Path(reference): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    let context = sim.authorize(&headers, &format!("/v2/sessions/online/{reference}/close"))?;
    let mut store = sim.store.lock().expect("store lock");
    let s = session_mut(&mut store, &reference, &context)?;
    if !s.is_online() {
        return Err(ApiError::no_session(&reference));
    }
    if s.closed || s.key.is_none() {
        return Err(ApiError::bad(
            Code::SessionStatus,
            format!("Status sesji {} uniemożliwia jej zamknięcie.", s.status().code),
        ));
    }
    s.closed = true;
    s.updated = Utc::now();
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /rate-limits`: the effective limits for the caller's context (`EffectiveApiRateLimits`).
pub async fn rate_limits(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Result<Response, ApiError> {
    sim.authorize(&headers, "/v2/rate-limits")?;
    Ok(Json(sim.limiter.effective_json()).into_response())
}

pub async fn session_status(State(sim): State<Arc<Sim>>, Path(reference): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    let context = sim.authorize(&headers, &format!("/v2/sessions/{reference}"))?;
    let base = sim.link_base(&headers);
    let mut store = sim.store.lock().expect("store lock");
    let s = session_mut(&mut store, &reference, &context)?;
    let status = s.status();
    let final_count = s.invoices.iter().filter(|i| i.final_status.is_some()).count();
    let ok = s.invoices.iter().filter(|i| i.accepted.is_some()).count();
    let mut body = json!({
        "status": status.to_json(),
        "dateCreated": rfc3339(s.created),
        "dateUpdated": rfc3339(s.updated),
        "validUntil": rfc3339(s.valid_until),
        "invoiceCount": s.invoices.len(),
        "successfulInvoiceCount": ok,
        "failedInvoiceCount": final_count - ok,
    });
    if status.code == 200 {
        let pages = ok.div_ceil(UPO_PAGE).max(1);
        let expires = rfc3339(Utc::now() + chrono::Duration::days(3));
        let list: Vec<_> = (1..=pages)
            .map(|p| {
                let r = s.upo_page_reference(p);
                json!({
                    "referenceNumber": r,
                    "downloadUrl": format!("{base}/storage/session-upo/{}/{}", reference, r),
                    "downloadUrlExpirationDate": expires,
                })
            })
            .collect();
        body["upo"] = json!({"pages": list});
    }
    Ok(Json(body).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Paging {
    #[serde(default)]
    page_size: Option<usize>,
}

fn list_invoices(sim: &Sim, reference: &str, headers: &HeaderMap, paging: &Paging, failed_only: bool) -> Result<Response, ApiError> {
    let path = if failed_only {
        format!("/v2/sessions/{reference}/invoices/failed")
    } else {
        format!("/v2/sessions/{reference}/invoices")
    };
    let context = sim.authorize(headers, &path)?;
    let page_size = paging.page_size.unwrap_or(10);
    if !(10..=1000).contains(&page_size) {
        return Err(ApiError::validation("pageSize musi mieścić się w przedziale 10-1000."));
    }
    let offset: usize = match headers.get("x-continuation-token").and_then(|v| v.to_str().ok()) {
        None | Some("") => 0,
        Some(t) => t
            .strip_prefix("sim-offset-")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| ApiError::BadRequest {
                code: Code::InputValidation,
                details: vec!["Nieprawidłowy token kontynuacji.".into()],
            })?,
    };
    let now = Instant::now();
    let base = sim.link_base(headers);
    let mut store = sim.store.lock().expect("store lock");
    let s = session_mut(&mut store, reference, &context)?;
    let selected: Vec<&Invoice> = s
        .invoices
        .iter()
        .filter(|i| !failed_only || i.final_status.as_ref().is_some_and(|st| st.code != 200))
        .collect();
    let page: Vec<_> = selected
        .iter()
        .skip(offset)
        .take(page_size)
        .map(|i| sim.invoice_json(i, now, &base))
        .collect();
    let mut body = json!({"invoices": page});
    if offset + page_size < selected.len() {
        body["continuationToken"] = json!(format!("sim-offset-{}", offset + page_size));
    }
    Ok(Json(body).into_response())
}

pub async fn session_invoices(
    State(sim): State<Arc<Sim>>,
    Path(reference): Path<String>,
    Query(p): Query<Paging>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    list_invoices(&sim, &reference, &headers, &p, false)
}

pub async fn session_failed_invoices(
    State(sim): State<Arc<Sim>>,
    Path(reference): Path<String>,
    Query(p): Query<Paging>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    list_invoices(&sim, &reference, &headers, &p, true)
}

pub async fn invoice_status(
    State(sim): State<Arc<Sim>>,
    Path((reference, invoice)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let context = sim.authorize(&headers, &format!("/v2/sessions/{reference}/invoices/{invoice}"))?;
    let mut store = sim.store.lock().expect("store lock");
    let s = session_mut(&mut store, &reference, &context)?;
    let inv = s.invoices.iter().find(|i| i.reference == invoice).ok_or_else(|| {
        ApiError::validation(format!(
            "Faktura o numerze referencyjnym {invoice} nie została znaleziona w sesji {reference}."
        ))
    })?;
    Ok(Json(sim.invoice_json(inv, Instant::now(), &sim.link_base(&headers))).into_response())
}

fn upo_header<'a>(sim: &'a Sim, s: &'a Session, page: Option<(usize, usize, usize, usize, usize)>) -> UpoHeader<'a> {
    UpoHeader {
        receiver_name: &sim.cfg.receiver_name,
        session_reference: &s.reference,
        context: &s.context,
        auth_document_hash: &s.auth_document_hash,
        page,
    }
}

fn upo_doc(inv: &Invoice) -> Option<UpoDocument<'_>> {
    let a = inv.accepted.as_ref()?;
    Some(UpoDocument {
        seller: &a.facts.seller,
        ksef_number: &a.ksef_number,
        invoice_number: a.facts.number.as_str(),
        issue_date: &a.facts.issue_date,
        received: inv.invoicing_date,
        acquired: a.acquired,
        hash: &inv.hash,
        offline: inv.offline,
    })
}

/// A UPO document as KSeF serves it: XML with `x-ms-meta-hash` = Base64 SHA-256 of the body.
pub fn xml_response(xml: String) -> Response {
    let hash = B64.encode(Sha256::digest(xml.as_bytes()));
    let mut r = (StatusCode::OK, xml).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    r.headers_mut()
        .insert("x-ms-meta-hash", HeaderValue::from_str(&hash).expect("base64 is a valid header"));
    r
}

/// The UPO of one invoice, if it exists and its (fault-delayed) time has come. Clearing the
/// `upo-late` fault ends every delay at once (KSeF's UPO service is back).
fn invoice_upo(sim: &Sim, s: &Session, inv: &Invoice) -> Option<String> {
    let a = inv.accepted.as_ref()?;
    if Instant::now() < a.upo_ready_at && !sim.faults.upo_delay().is_zero() {
        return None;
    }
    Some(upo::render(&upo_header(sim, s, None), &[upo_doc(inv)?]))
}

pub async fn invoice_upo_by_reference(
    State(sim): State<Arc<Sim>>,
    Path((reference, invoice)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let context = sim.authorize(&headers, &format!("/v2/sessions/{reference}/invoices/{invoice}/upo"))?;
    let mut store = sim.store.lock().expect("store lock");
    let s = session_mut(&mut store, &reference, &context)?;
    let s: &Session = s;
    s.invoices
        .iter()
        .find(|i| i.reference == invoice)
        .and_then(|inv| invoice_upo(&sim, s, inv))
        .map(xml_response)
        .ok_or_else(|| {
            ApiError::bad(
                Code::UpoNotFound,
                format!("UPO o numerze referencyjnym {invoice} dla sesji {reference} nie zostało znalezione."),
            )
        })
}

pub async fn invoice_upo_by_ksef_number(
    State(sim): State<Arc<Sim>>,
    Path((reference, ksef)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let context = sim.authorize(&headers, &format!("/v2/sessions/{reference}/invoices/ksef/{ksef}/upo"))?;
    let mut store = sim.store.lock().expect("store lock");
    let s = session_mut(&mut store, &reference, &context)?;
    let s: &Session = s;
    s.invoices
        .iter()
        .find(|i| i.accepted.as_ref().is_some_and(|a| a.ksef_number.as_str() == ksef))
        .and_then(|inv| invoice_upo(&sim, s, inv))
        .map(xml_response)
        .ok_or_else(|| {
            ApiError::bad(
                Code::UpoNotFound,
                format!("UPO o numerze KSeF {ksef} i numerze referencyjnym sesji {reference} nie zostało znalezione."),
            )
        })
}

/// The pre-signed link: no token, no rate limit; 404 (as blob storage) until the UPO exists.
pub async fn upo_download(State(sim): State<Arc<Sim>>, Path(token): Path<String>) -> Response {
    let store = sim.store.lock().expect("store lock");
    let found = store.upo_links.get(&token).and_then(|(sref, i)| {
        let s = store.sessions.get(sref)?;
        invoice_upo(&sim, s, s.invoices.get(*i)?)
    });
    match found {
        Some(xml) => xml_response(xml),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn session_upo_page(sim: &Sim, s: &Session, page_ref: &str) -> Option<String> {
    if s.status().code != 200 {
        return None;
    }
    let accepted: Vec<&Invoice> = s.invoices.iter().filter(|i| i.accepted.is_some()).collect();
    let pages = accepted.len().div_ceil(UPO_PAGE).max(1);
    let page = (1..=pages).find(|p| s.upo_page_reference(*p) == page_ref)?;
    let from = (page - 1) * UPO_PAGE;
    let chunk: Vec<UpoDocument<'_>> = accepted.iter().skip(from).take(UPO_PAGE).filter_map(|i| upo_doc(i)).collect();
    let to = from + chunk.len();
    Some(upo::render(
        &upo_header(sim, s, Some((page, pages, from + 1, to, accepted.len()))),
        &chunk,
    ))
}

pub async fn session_upo(
    State(sim): State<Arc<Sim>>,
    Path((reference, upo_ref)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let context = sim.authorize(&headers, &format!("/v2/sessions/{reference}/upo/{upo_ref}"))?;
    let mut store = sim.store.lock().expect("store lock");
    let s: &Session = session_mut(&mut store, &reference, &context)?;
    session_upo_page(&sim, s, &upo_ref).map(xml_response).ok_or_else(|| {
        ApiError::bad(
            Code::UpoNotFound,
            format!("UPO o numerze referencyjnym {upo_ref} dla sesji {reference} nie zostało znalezione."),
        )
    })
}

pub async fn session_upo_download(State(sim): State<Arc<Sim>>, Path((reference, upo_ref)): Path<(String, String)>) -> Response {
    let store = sim.store.lock().expect("store lock");
    match store.sessions.get(&reference).and_then(|s| session_upo_page(&sim, s, &upo_ref)) {
        Some(xml) => xml_response(xml),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `GET /sessions`: the caller's sessions of one type, newest first, with the filters the
/// relay uses to reconcile (created since, statuses), paged with `x-continuation-token`.
pub async fn list_sessions(
    State(sim): State<Arc<Sim>>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let context = sim.authorize(&headers, "/v2/sessions")?;
    let mut session_type = None;
    let mut page_size = 10usize;
    let mut created_from: Option<chrono::DateTime<Utc>> = None;
    let mut statuses: Vec<String> = Vec::new();
    for (k, v) in url_pairs(query.as_deref().unwrap_or("")) {
        match k.as_str() {
            "sessionType" => session_type = Some(v),
            "pageSize" => page_size = v.parse().map_err(|_| ApiError::validation("pageSize musi być liczbą."))?,
            "dateCreatedFrom" => {
                created_from = Some(
                    v.parse()
                        .map_err(|_| ApiError::validation("dateCreatedFrom musi być datą ISO 8601."))?,
                )
            }
            "statuses" => statuses.push(v),
            _ => {}
        }
    }
    let online = match session_type.as_deref() {
        Some("Online") => true,
        Some("Batch") => false,
        _ => return Err(ApiError::validation("Parametr sessionType (Online lub Batch) jest wymagany.")),
    };
    if !(10..=1000).contains(&page_size) {
        return Err(ApiError::validation("pageSize musi mieścić się w przedziale 10-1000."));
    }
    let offset: usize = match headers.get("x-continuation-token").and_then(|v| v.to_str().ok()) {
        None | Some("") => 0,
        Some(t) => t
            .strip_prefix("sim-offset-")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| ApiError::bad(Code::InputValidation, "Nieprawidłowy token kontynuacji."))?,
    };
    let store = sim.store.lock().expect("store lock");
    let mut list: Vec<&Session> = store
        .sessions
        .values()
        .filter(|s| s.context == context && s.is_online() == online)
        .filter(|s| created_from.is_none_or(|f| s.created >= f))
        .filter(|s| statuses.is_empty() || statuses.iter().any(|st| st == common_status(s.status().code)))
        .collect();
    list.sort_by(|a, b| b.created.cmp(&a.created).then(b.seq.cmp(&a.seq)));
    let page: Vec<_> = list
        .iter()
        .skip(offset)
        .take(page_size)
        .map(|s| {
            let ok = s.invoices.iter().filter(|i| i.accepted.is_some()).count();
            let done = s.invoices.iter().filter(|i| i.final_status.is_some()).count();
            json!({
                "referenceNumber": s.reference,
                "status": s.status().to_json(),
                "dateCreated": rfc3339(s.created),
                "dateUpdated": rfc3339(s.updated),
                "validUntil": rfc3339(s.valid_until),
                "totalInvoiceCount": s.invoices.len(),
                "successfulInvoiceCount": ok,
                "failedInvoiceCount": done - ok,
            })
        })
        .collect();
    let mut body = json!({"sessions": page});
    if offset + page_size < list.len() {
        body["continuationToken"] = json!(format!("sim-offset-{}", offset + page_size));
    }
    Ok(Json(body).into_response())
}

/// The `CommonSessionStatus` a session status code falls under.
fn common_status(code: i32) -> &'static str {
    match code {
        100 | 150 | 170 => "InProgress",
        200 | 445 => "Succeeded",
        440 => "Cancelled",
        _ => "Failed",
    }
}

/// Decodes `a=1&b=x%20y` pairs (repeated keys kept, as `statuses=...&statuses=...`).
fn url_pairs(q: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}
