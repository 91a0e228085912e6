//! The JSON shapes of the KSeF API the client reads and writes (names as in open-api.json).
//! Unknown fields are ignored, as MF asks; nullable fields are `Option`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicKeyCertificate {
    pub certificate: String,
    pub certificate_id: Option<String>,
    pub public_key_id: String,
    pub valid_from: DateTime<Utc>,
    pub valid_to: DateTime<Utc>,
    pub usage: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Challenge {
    pub challenge: String,
    pub timestamp: String,
    pub timestamp_ms: i64,
    #[serde(default)]
    pub client_ip: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TokenInfo {
    pub token: String,
    pub valid_until: DateTime<Utc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AuthInit {
    pub reference_number: String,
    pub authentication_token: TokenInfo,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AuthTokens {
    pub access_token: TokenInfo,
    pub refresh_token: TokenInfo,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AuthRefresh {
    pub access_token: TokenInfo,
}

/// A status as KSeF returns it (`StatusInfo` / `InvoiceStatusInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub code: i32,
    pub description: String,
    #[serde(default)]
    pub details: Option<Vec<String>>,
    #[serde(default)]
    pub extensions: Option<BTreeMap<String, Option<String>>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthStatus {
    pub start_date: DateTime<Utc>,
    pub status: Status,
    #[serde(default)]
    pub is_token_redeemed: Option<bool>,
    #[serde(default)]
    pub refresh_token_valid_until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FormCode {
    pub system_code: &'static str,
    pub schema_version: &'static str,
    pub value: &'static str,
}

/// FA (3), the only form the relay sends.
pub(crate) const FA3: FormCode = FormCode {
    system_code: "FA (3)",
    schema_version: "1-0E",
    value: "FA",
};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EncryptionInfo {
    pub encrypted_symmetric_key: String,
    pub initialization_vector: String,
    pub public_key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OpenOnlineResponse {
    pub reference_number: String,
    pub valid_until: DateTime<Utc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ReferenceResponse {
    pub reference_number: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpoPage {
    pub reference_number: String,
    pub download_url: String,
    pub download_url_expiration_date: DateTime<Utc>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpoPages {
    pub pages: Vec<UpoPage>,
}

/// `SessionStatusResponse`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionStatus {
    pub status: Status,
    pub date_created: DateTime<Utc>,
    pub date_updated: DateTime<Utc>,
    #[serde(default)]
    pub valid_until: Option<DateTime<Utc>>,
    #[serde(default)]
    pub upo: Option<UpoPages>,
    #[serde(default)]
    pub invoice_count: Option<u32>,
    #[serde(default)]
    pub successful_invoice_count: Option<u32>,
    #[serde(default)]
    pub failed_invoice_count: Option<u32>,
}

/// `SessionInvoiceStatusResponse`: one invoice in a session.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvoiceStatus {
    pub ordinal_number: u32,
    #[serde(default)]
    pub invoice_number: Option<String>,
    #[serde(default)]
    pub ksef_number: Option<String>,
    pub reference_number: String,
    pub invoice_hash: String,
    #[serde(default)]
    pub invoice_file_name: Option<String>,
    #[serde(default)]
    pub acquisition_date: Option<DateTime<Utc>>,
    pub invoicing_date: DateTime<Utc>,
    #[serde(default)]
    pub permanent_storage_date: Option<DateTime<Utc>>,
    #[serde(default)]
    pub upo_download_url: Option<String>,
    #[serde(default)]
    pub upo_download_url_expiration_date: Option<DateTime<Utc>>,
    /// `Online` or `Offline`: how KSeF filed it (a word it does not use reads as None).
    #[serde(default, deserialize_with = "invoicing_mode")]
    pub invoicing_mode: Option<relay_domain::InvoicingMode>,
    pub status: Status,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionInvoices {
    #[serde(default)]
    pub continuation_token: Option<String>,
    pub invoices: Vec<InvoiceStatus>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartUploadRequest {
    pub ordinal_number: u32,
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, Option<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OpenBatchResponse {
    pub reference_number: String,
    pub part_upload_requests: Vec<PartUploadRequest>,
}

/// KSeF's 400 body (`ExceptionResponse`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ExceptionResponse {
    #[serde(default)]
    pub exception: Option<ExceptionInfo>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ExceptionInfo {
    #[serde(default)]
    pub exception_detail_list: Option<Vec<ExceptionDetail>>,
    #[serde(default)]
    pub service_code: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ExceptionDetail {
    pub exception_code: i32,
    #[serde(default)]
    pub exception_description: Option<String>,
    #[serde(default)]
    pub details: Option<Vec<String>>,
}

/// problem+json (401, 403, and 400/429 on request).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProblemDetails {
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
    #[serde(default)]
    pub reason_code: Option<String>,
    #[serde(default)]
    pub errors: Option<Vec<ProblemError>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ProblemError {
    pub code: i32,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub details: Option<Vec<String>>,
}

/// The deprecated default 429 body.
#[derive(Debug, Deserialize)]
pub(crate) struct TooManyRequests {
    pub status: Status,
}

/// One session in `GET /sessions` (`SessionsQueryResponseItem`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionSummary {
    pub reference_number: String,
    pub status: Status,
    pub date_created: DateTime<Utc>,
    pub date_updated: DateTime<Utc>,
    #[serde(default)]
    pub valid_until: Option<DateTime<Utc>>,
    pub total_invoice_count: u32,
    pub successful_invoice_count: u32,
    pub failed_invoice_count: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionsPage {
    #[serde(default)]
    pub continuation_token: Option<String>,
    pub sessions: Vec<SessionSummary>,
}

/// `invoicingMode`, leniently: a value KSeF may add later reads as None, never as an error.
fn invoicing_mode<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<relay_domain::InvoicingMode>, D::Error> {
    Ok(Option::<String>::deserialize(d)?
        .as_deref()
        .and_then(relay_domain::InvoicingMode::parse))
}
