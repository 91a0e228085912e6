//! The simulator's memory: challenges, auth operations, tokens, sessions and their invoices,
//! and the one place where invoices move on (100 → 150 → final) and get their KSeF numbers.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use relay_domain::{ContentHash, KsefNumber, KsefReference, Nip};
use serde_json::{json, Map, Value};

use crate::config::SimConfig;
use crate::exchange_log::ExchangeLog;
use crate::faults::FaultSwitch;
use crate::invoice_check::InvoiceFacts;
use crate::keys::SimKeys;
use crate::ledger::{Ledger, LedgerEntry};
use crate::rate_limit::RateLimiter;

/// A session's AES-256 key and IV.
pub type SessionAes = ([u8; 32], [u8; 16]);

/// Everything the handlers share.
pub struct Sim {
    pub cfg: SimConfig,
    pub base_url: String,
    pub keys: RwLock<SimKeys>,
    pub store: Mutex<Store>,
    pub ledger: Ledger,
    pub faults: FaultSwitch,
    pub limiter: RateLimiter,
    pub exchanges: ExchangeLog,
    pub operations: crate::operation_counts::OperationCounts,
    pub latarnia: crate::latarnia::Latarnia,
}

pub struct ChallengeRec {
    pub timestamp_ms: i64,
    pub expires: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Token,
    Certificate,
}

pub struct AuthOp {
    pub method: AuthMethod,
    pub reference: String,
    pub context: Nip,
    pub auth_token: String,
    pub auth_token_valid_until: DateTime<Utc>,
    pub started: DateTime<Utc>,
    pub ready_at: Instant,
    pub outcome: StatusInfo,
    pub redeemed: bool,
    /// Base64 SHA-256 of the request that authenticated (the UPO quotes it).
    pub document_hash: String,
    pub last_refresh: Option<DateTime<Utc>>,
    pub refresh_valid_until: Option<DateTime<Utc>>,
}

#[derive(Clone)]
pub struct Grant {
    pub context: Nip,
    pub auth_reference: String,
    pub valid_until: DateTime<Utc>,
}

/// A status as KSeF returns it: code, description, details, extensions.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusInfo {
    pub code: i32,
    pub description: String,
    pub details: Vec<String>,
    pub extensions: Option<Map<String, Value>>,
}

impl StatusInfo {
    pub fn new(code: i32, description: &str) -> StatusInfo {
        StatusInfo {
            code,
            description: description.to_owned(),
            details: Vec::new(),
            extensions: None,
        }
    }
    pub fn with_details(mut self, details: Vec<String>) -> StatusInfo {
        self.details = details;
        self
    }
    pub fn to_json(&self) -> Value {
        let mut v = json!({"code": self.code, "description": self.description});
        if !self.details.is_empty() {
            v["details"] = json!(self.details);
        }
        if let Some(ext) = &self.extensions {
            v["extensions"] = Value::Object(ext.clone());
        }
        v
    }
}

/// How an invoice will end once its processing time has passed.
#[derive(Debug, Clone)]
pub enum Plan {
    Accept(InvoiceFacts),
    Reject(StatusInfo),
    Cancel550,
    /// In 150 forever (None), or for the given time past the usual processing and then accepted.
    Stuck(Option<(Duration, InvoiceFacts)>),
}

pub struct Accepted {
    pub ksef_number: KsefNumber,
    pub acquired: DateTime<Utc>,
    pub upo_ready_at: Instant,
    pub facts: InvoiceFacts,
}

pub struct Invoice {
    pub ordinal: usize,
    pub reference: String,
    pub hash: ContentHash,
    pub file_name: Option<String>,
    pub invoice_number: Option<String>,
    pub invoicing_date: DateTime<Utc>,
    pub received: Instant,
    /// Filed Offline: asked for, or `P_1`'s day before the invoicing day.
    pub offline: bool,
    /// The `offlineMode` the sender declared (per invoice online, per session in a batch).
    pub offline_requested: bool,
    pub plan: Plan,
    /// A technical correction: the SHA-256 of the rejected offline invoice it corrects
    /// (`hashOfCorrectedInvoice`).
    pub corrects: Option<ContentHash>,
    pub final_status: Option<StatusInfo>,
    pub accepted: Option<Accepted>,
    /// Secret part of the UPO download link.
    pub upo_token: String,
}

impl Invoice {
    /// Whether a stuck-in-150 fault still holds the invoice.
    pub fn stuck(&self, now: Instant, cfg: &SimConfig) -> bool {
        match &self.plan {
            Plan::Stuck(None) => true,
            Plan::Stuck(Some((d, _))) => now.duration_since(self.received) < cfg.accept_delay + cfg.processing_delay + *d,
            _ => false,
        }
    }

    /// The status a client sees now.
    pub fn status(&self, now: Instant, cfg: &SimConfig) -> StatusInfo {
        if let Some(s) = &self.final_status {
            return s.clone();
        }
        if self.stuck(now, cfg) || now.duration_since(self.received) >= cfg.accept_delay {
            StatusInfo::new(150, "Trwa przetwarzanie")
        } else {
            StatusInfo::new(100, "Faktura przyjęta do dalszego przetwarzania")
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zip,
    TarGz,
}

#[derive(Clone)]
pub struct DeclaredPart {
    pub ordinal: u32,
    pub size: u64,
    pub hash: String,
    pub upload_token: String,
}

#[derive(Clone)]
pub struct Batch {
    pub file_size: u64,
    pub file_hash: String,
    pub compression: Compression,
    pub parts: Vec<DeclaredPart>,
    pub uploaded: HashMap<u32, Vec<u8>>,
}

pub struct Session {
    pub seq: u64,
    pub reference: String,
    pub context: Nip,
    pub auth_document_hash: String,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    /// None when the wrapped AES key could not be decrypted (session status 415).
    pub key: Option<SessionAes>,
    pub closed: bool,
    /// A session-level failure (batch 405, 430, 435).
    pub failure: Option<StatusInfo>,
    pub invoices: Vec<Invoice>,
    pub batch: Option<Batch>,
    pub offline_mode: bool,
    /// A closed batch whose archive is still being unpacked and checked (after the close
    /// answered, as in KSeF): processing (150), no invoices listed yet.
    pub unpacking: bool,
    /// Every invoice before this index has its final status (they never lose it): `advance`
    /// looks from here, not at a 10,000-invoice batch's settled invoices on every request.
    pub first_open: usize,
}

impl Session {
    pub fn is_online(&self) -> bool {
        self.batch.is_none()
    }

    pub fn pending(&self) -> bool {
        self.unpacking || self.invoices.iter().skip(self.first_open).any(|i| i.final_status.is_none())
    }

    pub fn status(&self) -> StatusInfo {
        if self.key.is_none() {
            return StatusInfo::new(415, "Błąd odszyfrowania dostarczonego klucza");
        }
        if let Some(f) = &self.failure {
            return f.clone();
        }
        let online = self.is_online();
        if !self.closed {
            return if online {
                StatusInfo::new(100, "Sesja interaktywna otwarta")
            } else {
                StatusInfo::new(100, "Sesja wsadowa rozpoczęta")
            };
        }
        if self.pending() {
            return if online {
                StatusInfo::new(170, "Sesja interaktywna zamknięta")
            } else {
                StatusInfo::new(150, "Trwa przetwarzanie")
            };
        }
        if self.invoices.is_empty() {
            return StatusInfo::new(440, "Sesja anulowana").with_details(vec!["Nie przesłano faktur.".into()]);
        }
        if self.invoices.iter().any(|i| i.accepted.is_some()) {
            StatusInfo::new(
                200,
                if online {
                    "Sesja interaktywna przetworzona pomyślnie"
                } else {
                    "Sesja wsadowa przetworzona pomyślnie"
                },
            )
        } else {
            StatusInfo::new(445, "Błąd weryfikacji, brak poprawnych faktur")
        }
    }

    /// The reference of a page of the session UPO (10,000 invoices per page, as in KSeF).
    pub fn upo_page_reference(&self, page: usize) -> String {
        KsefReference::build(self.created.date_naive(), "UP", self.seq, page as u64).to_string()
    }
}

#[derive(Default)]
pub struct Store {
    seq: u64,
    pub challenges: HashMap<String, ChallengeRec>,
    pub auth_ops: HashMap<String, AuthOp>,
    pub access: HashMap<String, Grant>,
    pub refresh: HashMap<String, Grant>,
    pub revoked_refresh: HashSet<String>,
    pub sessions: HashMap<String, Session>,
    /// UPO download token → (session reference, invoice index).
    pub upo_links: HashMap<String, (String, usize)>,
    /// Certificates revoked in KSeF (SHA-256 fingerprint, uppercase hex): their logins end 460.
    pub revoked_certificates: HashSet<String>,
    /// Every XAdES login whose signature verified, in order.
    pub certificate_logins: Vec<CertificateLogin>,
}

/// A XAdES login the simulator took in (its signature verified): which certificate, for which
/// context, and the auth status it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateLogin {
    pub context: String,
    /// SHA-256 of the certificate's DER, uppercase hex.
    pub fingerprint: String,
    pub subject: String,
    pub status: i32,
}

impl Store {
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// A reference number in KSeF's format with valid check digits.
    pub fn reference(&mut self, kind: &str) -> String {
        let seq = self.next_seq();
        KsefReference::build(Utc::now().date_naive(), kind, seq, rand::random::<u64>()).to_string()
    }
}

/// A random opaque secret (tokens, link signatures).
pub fn secret(prefix: &str) -> String {
    format!("{prefix}-{:032x}{:032x}", rand::random::<u128>(), rand::random::<u128>())
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Sim {
    /// Moves every invoice whose time has come to its final status, in the order received,
    /// so duplicate detection is deterministic.
    pub fn advance(&self) {
        let now = Instant::now();
        let due = self.cfg.accept_delay + self.cfg.processing_delay;
        let upo_delay = self.faults.upo_delay();
        let mut store = self.store.lock().expect("store lock");
        // KSeF closes sessions at validUntil; a batch that was never closed is cancelled.
        let wall = Utc::now();
        for s in store.sessions.values_mut().filter(|s| !s.closed && s.valid_until <= wall) {
            s.closed = true;
            s.updated = wall;
            if !s.is_online() {
                s.failure = Some(StatusInfo::new(440, "Sesja anulowana").with_details(vec!["Przekroczono czas wysyłki.".into()]));
            }
        }
        let mut ready: Vec<(Instant, String, usize)> = Vec::new();
        for s in store.sessions.values_mut() {
            while s.invoices.get(s.first_open).is_some_and(|i| i.final_status.is_some()) {
                s.first_open += 1;
            }
            for (i, inv) in s.invoices.iter().enumerate().skip(s.first_open) {
                if inv.final_status.is_none() && !inv.stuck(now, &self.cfg) && now.duration_since(inv.received) >= due {
                    ready.push((inv.received, s.reference.clone(), i));
                }
            }
        }
        ready.sort();
        for (_, sref, i) in ready {
            let unique = store.next_seq();
            let Some(session) = store.sessions.get_mut(&sref) else { continue };
            let session_ref = session.reference.clone();
            let inv = &mut session.invoices[i];
            let status = match &inv.plan {
                Plan::Reject(s) => s.clone(),
                Plan::Cancel550 => StatusInfo::new(550, "Operacja została anulowana przez system").with_details(vec![
                    "Przetwarzanie zostało przerwane z przyczyn technicznych. Prześlij fakturę ponownie.".into(),
                ]),
                Plan::Stuck(None) => continue,
                Plan::Accept(facts) | Plan::Stuck(Some((_, facts))) => {
                    if let Some(orig) = self.ledger.find(&facts.seller, facts.kind, &facts.number) {
                        let mut ext = Map::new();
                        ext.insert("originalSessionReferenceNumber".into(), json!(orig.session_reference.as_str()));
                        ext.insert("originalKsefNumber".into(), json!(orig.ksef_number.as_str()));
                        let mut s = StatusInfo::new(440, "Duplikat faktury").with_details(vec![format!(
                            "Duplikat faktury. Faktura o numerze KSeF: {} została już prawidłowo przesłana do systemu w sesji: {}",
                            orig.ksef_number, orig.session_reference
                        )]);
                        s.extensions = Some(ext);
                        s
                    } else {
                        let acquired = Utc::now();
                        // 48 bits: a counter in the high half keeps numbers unique within a run.
                        let serial = (unique << 24) | u64::from(rand::random::<u32>() & 0xFF_FFFF);
                        let ksef_number = KsefNumber::build(&facts.seller, acquired.date_naive(), serial);
                        self.ledger.push(LedgerEntry {
                            ksef_number: ksef_number.clone(),
                            invoice_hash: inv.hash,
                            seller_nip: facts.seller.clone(),
                            kind: facts.kind,
                            invoice_number: facts.number.clone(),
                            session_reference: KsefReference::parse(&session_ref).expect("own reference"),
                            invoice_reference: KsefReference::parse(&inv.reference).expect("own reference"),
                            acquisition_date: acquired,
                            offline_requested: inv.offline_requested,
                            hash_of_corrected_invoice: inv.corrects,
                            invoicing_mode: if inv.offline {
                                relay_domain::InvoicingMode::Offline
                            } else {
                                relay_domain::InvoicingMode::Online
                            },
                        });
                        inv.accepted = Some(Accepted {
                            ksef_number,
                            acquired,
                            upo_ready_at: now + upo_delay,
                            facts: facts.clone(),
                        });
                        StatusInfo::new(200, "Sukces")
                    }
                }
            };
            inv.final_status = Some(status);
            session.updated = Utc::now();
        }
    }

    /// The `SessionInvoiceStatusResponse` of one invoice.
    /// Where the links the simulator hands out (UPO downloads, batch part uploads) point: the
    /// configured public base URL, else the host the client called (as KSeF's pre-signed links
    /// name a host the caller can reach), else the bound address.
    pub fn link_base(&self, headers: &axum::http::HeaderMap) -> String {
        if self.cfg.public_base_url.is_some() {
            return self.base_url.clone();
        }
        headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)))
            .map(|h| format!("http://{h}"))
            .unwrap_or_else(|| self.base_url.clone())
    }

    /// An invoice's status as KSeF reports it, its links under `base` ([`Sim::link_base`]).
    pub fn invoice_json(&self, inv: &Invoice, now: Instant, base: &str) -> Value {
        let status = inv.status(now, &self.cfg);
        let mut v = json!({
            "ordinalNumber": inv.ordinal,
            "referenceNumber": inv.reference,
            "invoiceHash": inv.hash.to_base64(),
            "invoicingDate": rfc3339(inv.invoicing_date),
            "invoicingMode": if inv.offline { "Offline" } else { "Online" },
            "status": status.to_json(),
        });
        if let Some(n) = &inv.invoice_number {
            v["invoiceNumber"] = json!(n);
        }
        if let Some(f) = &inv.file_name {
            v["invoiceFileName"] = json!(f);
        }
        if let Some(a) = &inv.accepted {
            v["ksefNumber"] = json!(a.ksef_number.as_str());
            v["acquisitionDate"] = json!(rfc3339(a.acquired));
            v["permanentStorageDate"] = json!(rfc3339(a.acquired + chrono::Duration::milliseconds(50)));
            v["upoDownloadUrl"] = json!(format!("{base}/storage/upo/{}", inv.upo_token));
            v["upoDownloadUrlExpirationDate"] = json!(rfc3339(Utc::now() + chrono::Duration::days(3)));
        }
        v
    }
}
