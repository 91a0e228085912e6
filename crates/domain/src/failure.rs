//! The one error taxonomy. Every failure anywhere in the relay ends as an [`ErrorClass`];
//! retries, the DLQ, alarms and the ERP's outbox all read that class, and nobody re-derives it
//! from status codes. The [`Failure`] keeps what the other side said verbatim for the history.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::KsefNumber;

/// How a failure is handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "class", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorClass {
    /// Network error, timeout, 5xx, KSeF status 550: back off and retry.
    Transient,
    /// HTTP 429: wait until `until` (KSeF's Retry-After); costs no attempt.
    RateLimited { until: DateTime<Utc> },
    /// The session is closed, gone or broken (21180, 21173, invoice status 405): open a new one, retry.
    NeedsNewSession,
    /// The access token is no longer good (401, 21301): authenticate again, retry.
    NeedsReauth,
    /// Retrying cannot help (our validation, KSeF 450, 410, 415, 430, 435): a person must fix it.
    Permanent,
    /// KSeF 440: the same seller NIP + kind + number exists, under `original`. Success only if
    /// the original is provably ours (same content hash); otherwise a conflict.
    Duplicate { original: KsefNumber },
    /// Needs an operator, not a corrected invoice: credentials (a wrong or revoked token, a
    /// login KSeF refuses), permissions, an IP block, a status whose meaning KSeF does not
    /// document, or the relay's own configuration. Never REJECTED and never charged to the
    /// invoice: the seller's work is parked with growing waits, an alarm fires, and when a wait
    /// ends one attempt probes whether it is fixed.
    Operator,
}

impl ErrorClass {
    /// A short stable name for metrics, logs and reports.
    pub fn name(&self) -> &'static str {
        match self {
            ErrorClass::Transient => "TRANSIENT",
            ErrorClass::RateLimited { .. } => "RATE_LIMITED",
            ErrorClass::NeedsNewSession => "NEEDS_NEW_SESSION",
            ErrorClass::NeedsReauth => "NEEDS_REAUTH",
            ErrorClass::Permanent => "PERMANENT",
            ErrorClass::Duplicate { .. } => "DUPLICATE",
            ErrorClass::Operator => "OPERATOR",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorClass::RateLimited { until } => write!(f, "RATE_LIMITED until {}", until.to_rfc3339()),
            ErrorClass::Duplicate { original } => write!(f, "DUPLICATE of {original}"),
            other => f.write_str(other.name()),
        }
    }
}

/// Where a failure came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ErrorSource {
    /// The relay's own FA(3) validation at intake.
    Validation,
    /// A KSeF call; `operation` names it (`send_invoice`, `invoice_status`, ...).
    Ksef { operation: String },
    /// The document store, queue or archive.
    Storage { operation: String },
    /// The relay's own logic (identity conflicts, budget exhausted, ...).
    Relay,
}

impl fmt::Display for ErrorSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorSource::Validation => f.write_str("validation"),
            ErrorSource::Ksef { operation } => write!(f, "KSeF {operation}"),
            ErrorSource::Storage { operation } => write!(f, "storage {operation}"),
            ErrorSource::Relay => f.write_str("relay"),
        }
    }
}

/// One failure, classified, with everything the other side said kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Flattened: `{"class": "RATE_LIMITED", "until": "...", "source": ..., "message": ...}`.
    #[serde(flatten)]
    pub class: ErrorClass,
    pub source: ErrorSource,
    /// KSeF's exception or status code, an HTTP status, or our own validation rule id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The full message, verbatim.
    pub message: String,
    /// KSeF's `details` list or extra lines, verbatim.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// Where in the document, for validation findings (an XML path such as `/Faktura/Fa/P_2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

impl Failure {
    pub fn new(class: ErrorClass, source: ErrorSource, message: impl Into<String>) -> Self {
        Failure {
            class,
            source,
            code: None,
            message: message.into(),
            details: Vec::new(),
            location: None,
        }
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    pub fn with_details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }

    pub fn at(mut self, location: impl Into<String>) -> Self {
        self.location = Some(location.into());
        self
    }

    /// Whether this failure blames the invoice's own content: our validation, or KSeF refusing
    /// the invoice itself. Only such failures may leave a document REJECTED; any other rejection
    /// (an operator's problem recorded as PERMANENT before the [`ErrorClass::Operator`] class
    /// existed: a 403, an unknown status, a failed login) is worth sending again.
    pub fn is_content_failure(&self) -> bool {
        if self.class != ErrorClass::Permanent {
            return false;
        }
        match &self.source {
            ErrorSource::Validation => true,
            ErrorSource::Ksef { operation } => {
                // Records written before the Operator class: a 403, an unknown 400, an HTTP
                // status without a documented meaning, a failed login, a permission (410) or
                // taxpayer-setting (415) invoice status were never about the content.
                let code = self.code.as_deref().unwrap_or("");
                let operator = operation.starts_with("auth")
                    || code.starts_with("403")
                    || code == "400"
                    || self.message.starts_with("HTTP ")
                    || (operation == "invoice_status" && matches!(code, "410" | "415"));
                !operator
            }
            ErrorSource::Storage { .. } | ErrorSource::Relay => false,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.class.name(), self.source)?;
        if let Some(code) = &self.code {
            write!(f, " {code}")?;
        }
        if let Some(loc) = &self.location {
            write!(f, " at {loc}")?;
        }
        write!(f, ": {}", self.message)?;
        for d in &self.details {
            write!(f, "; {d}")?;
        }
        Ok(())
    }
}
