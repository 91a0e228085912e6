//! Online sessions and everything read from a session: open, send, close, session status,
//! invoice status, the session's invoice list (to reconcile by hash) and UPOs.

use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use relay_domain::{ContentHash, ErrorClass, ErrorSource, Failure};
use reqwest::Method;
use serde_json::json;

use crate::client::{Auth, Body, Call, KeyUsage, KsefClient, Result};
use crate::crypto;
use crate::failure_map::{from_response, from_transport, invoice_outcome, session_outcome, InvoiceOutcome};
use crate::limiter::EndpointGroup;
use crate::model::{
    EncryptionInfo, InvoiceStatus, OpenOnlineResponse, ReferenceResponse, SessionInvoices, SessionStatus, SessionSummary, SessionsPage, FA3,
};
use crate::secret::SessionKey;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// An open online session: its reference and the AES key its invoices are encrypted with.
#[derive(Debug)]
pub struct OnlineSession {
    pub reference: String,
    pub valid_until: DateTime<Utc>,
    pub(crate) key: SessionKey,
}

/// Optional fields of a send.
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    pub offline_mode: bool,
    /// For a technical correction of a rejected offline invoice.
    pub hash_of_corrected_invoice: Option<ContentHash>,
}

/// What KSeF acknowledged (202): the invoice reference, and the hash it will report back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentInvoice {
    pub reference: String,
    pub invoice_hash: ContentHash,
}

/// What KSeF answered to a technical correction (API-NOTES §10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorrectionSent {
    /// Taken (202), like any send.
    Sent(SentInvoice),
    /// 21166: a technical correction of that invoice is already accepted (KSeF takes only one).
    /// Nothing was taken now; KSeF's words are in the failure.
    AlreadyAccepted(Failure),
}

/// KSeF's exception code for "a technical correction of this invoice is already accepted".
const CORRECTION_ALREADY_ACCEPTED: &str = "21166";

/// A UPO document with KSeF's `x-ms-meta-hash` (Base64 SHA-256 of the body), when given.
#[derive(Debug, Clone)]
pub struct Upo {
    pub xml: Vec<u8>,
    pub meta_hash: Option<String>,
}

/// The JSON body of `POST /sessions/online/{ref}/invoices`, computed from the exact bytes.
pub fn send_invoice_body(key: &SessionKey, invoice: &[u8], opts: &SendOptions) -> serde_json::Value {
    let encrypted = crypto::aes_encrypt(key, invoice);
    json!({
        "invoiceHash": ContentHash::of(invoice).to_base64(),
        "invoiceSize": invoice.len(),
        "encryptedInvoiceHash": ContentHash::of(&encrypted).to_base64(),
        "encryptedInvoiceSize": encrypted.len(),
        "encryptedInvoiceContent": B64.encode(&encrypted),
        "offlineMode": opts.offline_mode,
        "hashOfCorrectedInvoice": opts.hash_of_corrected_invoice.map(|h| h.to_base64()),
    })
}

/// The shared form of an open session (for a cache many function instances read).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SharedSession {
    reference: String,
    valid_until: DateTime<Utc>,
    key: String,
    iv: String,
}

impl OnlineSession {
    /// The session with its AES key as JSON, so other processes can send in it. The result is
    /// a secret: keep it only in a store meant for secrets, never in logs.
    pub fn export_secret_json(&self) -> String {
        serde_json::to_string(&SharedSession {
            reference: self.reference.clone(),
            valid_until: self.valid_until,
            key: B64.encode(self.key.key()),
            iv: B64.encode(self.key.iv),
        })
        .expect("plain strings serialize")
    }

    /// The inverse of [`OnlineSession::export_secret_json`].
    pub fn import_secret_json(json: &str) -> Result<OnlineSession> {
        let bad = |e: String| Failure::new(ErrorClass::Permanent, ErrorSource::Relay, format!("unreadable shared session: {e}"));
        let s: SharedSession = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        let key: [u8; 32] = B64
            .decode(&s.key)
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| bad("key must be 32 bytes".into()))?;
        let iv: [u8; 16] = B64
            .decode(&s.iv)
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| bad("iv must be 16 bytes".into()))?;
        Ok(OnlineSession {
            reference: s.reference,
            valid_until: s.valid_until,
            key: SessionKey::from_parts(key, iv),
        })
    }

    /// The send body for these bytes under this session's key (what [`KsefClient::send_invoice`] posts).
    pub fn send_body(&self, invoice: &[u8], opts: &SendOptions) -> serde_json::Value {
        send_invoice_body(&self.key, invoice, opts)
    }
}

impl KsefClient {
    /// The encryption block of a session open: a fresh AES key wrapped for KSeF.
    pub(crate) fn encryption_info(key: &SessionKey, rsa: &crate::client::PublicKey) -> Result<EncryptionInfo> {
        let wrapped = crypto::wrap_session_key(&rsa.key, key).map_err(|e| {
            Failure::new(
                ErrorClass::Permanent,
                ErrorSource::Ksef {
                    operation: "open_session".into(),
                },
                format!("RSA-OAEP failed: {e}"),
            )
        })?;
        Ok(EncryptionInfo {
            encrypted_symmetric_key: B64.encode(wrapped),
            initialization_vector: B64.encode(key.iv),
            public_key_id: rsa.public_key_id.clone(),
        })
    }

    /// Opens an online session for FA (3) with a fresh AES-256 key.
    pub async fn open_online_session(&self) -> Result<OnlineSession> {
        let key = SessionKey::generate();
        let r: OpenOnlineResponse = self
            .with_key(KeyUsage::SymmetricKeyEncryption, |rsa| {
                let key = &key;
                async move {
                    let body = json!({"formCode": FA3, "encryption": Self::encryption_info(key, &rsa)?});
                    let a = self
                        .call(Call {
                            operation: "open_online_session",
                            group: EndpointGroup::OnlineSession,
                            method: Method::POST,
                            path: "/sessions/online".into(),
                            body: Some(Body::Json(body)),
                            auth: Auth::Access,
                            headers: Vec::new(),
                        })
                        .await?;
                    a.json("open_online_session")
                }
            })
            .await?;
        Ok(OnlineSession {
            reference: r.reference_number,
            valid_until: r.valid_until,
            key,
        })
    }

    /// Sends the exact bytes of one invoice. A 202 means queued, not accepted: poll its status.
    pub async fn send_invoice(&self, session: &OnlineSession, invoice: &[u8], opts: &SendOptions) -> Result<SentInvoice> {
        let body = send_invoice_body(&session.key, invoice, opts);
        let a = self
            .call(Call {
                operation: "send_invoice",
                group: EndpointGroup::InvoiceSend,
                method: Method::POST,
                path: format!("/sessions/online/{}/invoices", session.reference),
                body: Some(Body::Json(body)),
                auth: Auth::Access,
                headers: Vec::new(),
            })
            .await?;
        let r: ReferenceResponse = a.json("send_invoice")?;
        Ok(SentInvoice {
            reference: r.reference_number,
            invoice_hash: ContentHash::of(invoice),
        })
    }

    /// Closes an online session (starts the session UPO). Safe to retry: a second close is 21180.
    /// Sends a technical correction of the rejected offline invoice whose exact bytes hash to
    /// `corrected`: with `offlineMode: true` and `hashOfCorrectedInvoice` (allowed online even
    /// with attachments). 21166 is [`CorrectionSent::AlreadyAccepted`]; 21167 (the invoice it
    /// names is not a rejected offline one) is a permanent failure like any refused send.
    pub async fn send_technical_correction(
        &self,
        session: &OnlineSession,
        invoice: &[u8],
        corrected: ContentHash,
    ) -> Result<CorrectionSent> {
        let opts = SendOptions {
            offline_mode: true,
            hash_of_corrected_invoice: Some(corrected),
        };
        match self.send_invoice(session, invoice, &opts).await {
            Ok(sent) => Ok(CorrectionSent::Sent(sent)),
            Err(f) if f.code.as_deref() == Some(CORRECTION_ALREADY_ACCEPTED) && matches!(f.source, ErrorSource::Ksef { .. }) => {
                Ok(CorrectionSent::AlreadyAccepted(f))
            }
            Err(f) => Err(f),
        }
    }

    pub async fn close_online_session(&self, reference: &str) -> Result<()> {
        self.call(Call {
            operation: "close_online_session",
            group: EndpointGroup::OnlineSessionClose,
            method: Method::POST,
            path: format!("/sessions/online/{reference}/close"),
            body: None,
            auth: Auth::Access,
            headers: Vec::new(),
        })
        .await
        .map(|_| ())
    }

    /// `GET /rate-limits`: the limits KSeF applies to this context now.
    pub async fn effective_rate_limits(&self) -> Result<crate::limiter::EffectiveRateLimits> {
        let a = self
            .call(Call {
                operation: "rate_limits",
                group: EndpointGroup::Other,
                method: Method::GET,
                path: "/rate-limits".into(),
                body: None,
                auth: Auth::Access,
                headers: Vec::new(),
            })
            .await?;
        a.json("rate_limits")
    }

    pub async fn session_status(&self, reference: &str) -> Result<SessionStatus> {
        let a = self
            .call(Call {
                operation: "session_status",
                group: EndpointGroup::SessionMisc,
                method: Method::GET,
                path: format!("/sessions/{reference}"),
                body: None,
                auth: Auth::Access,
                headers: Vec::new(),
            })
            .await?;
        a.json("session_status")
    }

    pub async fn invoice_status(&self, session: &str, invoice: &str) -> Result<InvoiceStatus> {
        let a = self
            .call(Call {
                operation: "invoice_status",
                group: EndpointGroup::InvoiceStatus,
                method: Method::GET,
                path: format!("/sessions/{session}/invoices/{invoice}"),
                body: None,
                auth: Auth::Access,
                headers: Vec::new(),
            })
            .await?;
        a.json("invoice_status")
    }

    async fn list(&self, session: &str, failed_only: bool) -> Result<Vec<InvoiceStatus>> {
        let op = if failed_only {
            "session_failed_invoices"
        } else {
            "session_invoices"
        };
        let suffix = if failed_only { "/failed" } else { "" };
        self.paged(
            op,
            EndpointGroup::SessionInvoiceList,
            format!("/sessions/{session}/invoices{suffix}?pageSize=1000"),
            |p: SessionInvoices| (p.invoices, p.continuation_token),
        )
        .await
    }

    /// Every page of a listing that continues with `x-continuation-token`, items in order.
    async fn paged<P: serde::de::DeserializeOwned, T>(
        &self,
        op: &'static str,
        group: EndpointGroup,
        path: String,
        split: impl Fn(P) -> (Vec<T>, Option<String>),
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        let mut continuation: Option<String> = None;
        loop {
            let headers = continuation.iter().map(|c| ("x-continuation-token", c.clone())).collect();
            let a = self
                .call(Call {
                    operation: op,
                    group,
                    method: Method::GET,
                    path: path.clone(),
                    body: None,
                    auth: Auth::Access,
                    headers,
                })
                .await?;
            let (items, next) = split(a.json(op)?);
            out.extend(items);
            match next {
                Some(t) if !t.is_empty() => continuation = Some(t),
                _ => return Ok(out),
            }
        }
    }

    /// The context's sessions of one kind created since `created_from`, newest first: how the
    /// relay finds the session an unconfirmed send went to after losing track of it.
    pub async fn list_sessions(&self, online: bool, created_from: DateTime<Utc>) -> Result<Vec<SessionSummary>> {
        let op = "list_sessions";
        let kind = if online { "Online" } else { "Batch" };
        let from: String =
            url::form_urlencoded::byte_serialize(created_from.to_rfc3339_opts(chrono::SecondsFormat::Millis, true).as_bytes()).collect();
        let path = format!("/sessions?sessionType={kind}&dateCreatedFrom={from}&pageSize=1000");
        self.paged(op, EndpointGroup::SessionList, path, |p: SessionsPage| {
            (p.sessions, p.continuation_token)
        })
        .await
    }

    /// Every invoice of a session, following continuation tokens.
    pub async fn session_invoices(&self, session: &str) -> Result<Vec<InvoiceStatus>> {
        self.list(session, false).await
    }

    /// Only the rejected invoices of a session.
    pub async fn failed_session_invoices(&self, session: &str) -> Result<Vec<InvoiceStatus>> {
        self.list(session, true).await
    }

    /// Reconciliation after an ambiguous send: did this session receive these exact bytes?
    pub async fn find_invoice_by_hash(&self, session: &str, hash: &ContentHash) -> Result<Option<InvoiceStatus>> {
        let want = hash.to_base64();
        Ok(self.session_invoices(session).await?.into_iter().find(|i| i.invoice_hash == want))
    }

    /// Polls an invoice until it leaves 100/150 or `timeout` passes (then Transient, code 150).
    pub async fn wait_for_invoice(
        &self,
        session: &str,
        invoice: &str,
        poll: Duration,
        timeout: Duration,
    ) -> Result<(InvoiceStatus, InvoiceOutcome)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = self.invoice_status(session, invoice).await?;
            let o = invoice_outcome("invoice_status", &s);
            if o != InvoiceOutcome::Pending {
                return Ok((s, o));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Failure::new(
                    ErrorClass::Transient,
                    ErrorSource::Ksef {
                        operation: "invoice_status".into(),
                    },
                    format!("invoice {invoice} still processing after {timeout:?}"),
                )
                .with_code(s.status.code.to_string()));
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Polls a session until it is processed (200/445), or fails with its classified status.
    pub async fn wait_for_session(&self, session: &str, poll: Duration, timeout: Duration) -> Result<SessionStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = self.session_status(session).await?;
            if session_outcome("session_status", &s.status)? {
                return Ok(s);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Failure::new(
                    ErrorClass::Transient,
                    ErrorSource::Ksef {
                        operation: "session_status".into(),
                    },
                    format!("session {session} still processing after {timeout:?}"),
                )
                .with_code(s.status.code.to_string()));
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Downloads a UPO from a pre-signed link (`upoDownloadUrl`): no token, no rate limit.
    pub async fn download_upo(&self, url: &str) -> Result<Upo> {
        let op = "upo_download";
        // Measured like every other KSeF call (crate::client::record_call), though it bypasses call().
        let started = std::time::Instant::now();
        let transport = |e: reqwest::Error| {
            let f = from_transport(op, &e);
            crate::client::record_call(op, started, None, e.is_timeout(), Some(&f));
            f
        };
        let resp = self.http().get(url).send().await.map_err(transport)?;
        let status = resp.status();
        let meta_hash = resp
            .headers()
            .get("x-ms-meta-hash")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.bytes().await.map_err(transport)?.to_vec();
        let result = if status.is_success() {
            Ok(Upo { xml: body, meta_hash })
        } else if status == reqwest::StatusCode::NOT_FOUND {
            // Blob storage says 404 until the UPO is written: not yet, try later.
            Err(Failure::new(
                ErrorClass::Transient,
                ErrorSource::Ksef { operation: op.into() },
                "UPO not available yet at its download link",
            )
            .with_code("404"))
        } else {
            // A 429 here carries its own Retry-After, like every other KSeF answer.
            Err(from_response(op, status.as_u16(), retry_after.as_deref(), &body, Utc::now()))
        };
        crate::client::record_call(op, started, Some(status.as_u16()), false, result.as_ref().err());
        result
    }

    async fn upo_at(&self, op: &str, path: String) -> Result<Upo> {
        let a = self
            .call(Call {
                operation: op,
                group: EndpointGroup::SessionMisc,
                method: Method::GET,
                path,
                body: None,
                auth: Auth::Access,
                headers: Vec::new(),
            })
            .await?;
        let meta_hash = a.headers.get("x-ms-meta-hash").and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(Upo { xml: a.body, meta_hash })
    }

    /// The UPO of one invoice by its reference (21178, transient, until it exists).
    pub async fn invoice_upo(&self, session: &str, invoice: &str) -> Result<Upo> {
        self.upo_at("invoice_upo", format!("/sessions/{session}/invoices/{invoice}/upo"))
            .await
    }

    pub async fn invoice_upo_by_ksef_number(&self, session: &str, ksef_number: &str) -> Result<Upo> {
        self.upo_at("invoice_upo", format!("/sessions/{session}/invoices/ksef/{ksef_number}/upo"))
            .await
    }

    /// A page of the session's collective UPO.
    pub async fn session_upo(&self, session: &str, upo_reference: &str) -> Result<Upo> {
        self.upo_at("session_upo", format!("/sessions/{session}/upo/{upo_reference}")).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_session_round_trips_and_encrypts_the_same() {
        let s = OnlineSession {
            reference: "20250625-SO-2C3E6C8000-B675CF5D68-07".into(),
            valid_until: Utc::now(),
            key: SessionKey::generate(),
        };
        let back = OnlineSession::import_secret_json(&s.export_secret_json()).unwrap();
        assert_eq!((back.reference.as_str(), back.valid_until), (s.reference.as_str(), s.valid_until));
        assert_eq!(
            crypto::aes_encrypt(&back.key, b"<Faktura/>"),
            crypto::aes_encrypt(&s.key, b"<Faktura/>")
        );
        assert!(!format!("{back:?}").contains(&B64.encode(s.key.key())));
        assert!(OnlineSession::import_secret_json("{}").is_err());
    }
}
