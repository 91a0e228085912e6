//! KSeF's error bodies, as the spec defines them: `ExceptionResponse` for 400, problem+json for
//! 401 and 403, `TooManyRequestsResponse` (or problem+json on request) for 429.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::json;

/// A KSeF exception code with its official description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    BadChallenge = 21111,
    NoSession = 21173,
    UpoNotFound = 21178,
    SessionStatus = 21180,
    PartMissing = 21205,
    PartSize = 21157,
    NotAuthorised = 21301,
    UnknownAuthOperation = 21304,
    SizeMismatch = 21402,
    HashMismatch = 21403,
    InputValidation = 21405,
    UnknownKey = 21470,
    SessionInvoiceLimit = 21155,
    TooManyParts = 21161,
    SessionUnavailable = 21184,
    CorrectionAlreadyAccepted = 21166,
    NotCorrectable = 21167,
    BadDocument = 9101,
    NoSignature = 9102,
    TooManySignatures = 9103,
    BadSignature = 9105,
    BadCertificate = 21115,
    SchemaViolation = 21401,
}

impl Code {
    pub fn description(self) -> &'static str {
        match self {
            Code::BadChallenge => "Nieprawidłowe wyzwanie autoryzacyjne.",
            Code::NoSession => "Brak sesji o wskazanym numerze referencyjnym.",
            Code::UpoNotFound => "Nie znaleziono UPO dla podanych kryteriów.",
            Code::SessionStatus => "Status sesji nie pozwala na wykonanie operacji.",
            Code::PartMissing => "Pakiet nie może być pusty.",
            Code::PartSize => "Nieprawidłowy rozmiar części pakietu.",
            Code::NotAuthorised => "Brak autoryzacji.",
            Code::UnknownAuthOperation => "Brak uwierzytelnienia.",
            Code::SizeMismatch => "Nieprawidłowy rozmiar pliku.",
            Code::HashMismatch => "Nieprawidłowy skrót pliku.",
            Code::InputValidation => "Błąd walidacji danych wejściowych.",
            Code::UnknownKey => "Przesłany identyfikator klucza jest nieznany lub wskazuje na wycofany klucz.",
            Code::SessionInvoiceLimit => "Przekroczono dozwoloną liczbę faktur w sesji.",
            Code::TooManyParts => "Przekroczono dozwoloną liczbę części pakietu.",
            Code::SessionUnavailable => "Sesja tymczasowo niedostępna.",
            Code::CorrectionAlreadyAccepted => "Korekta techniczna faktury została już przyjęta.",
            Code::NotCorrectable => "Faktura nie jest w stanie pozwalającym na korektę techniczną.",
            Code::BadDocument => "Nieprawidłowy dokument.",
            Code::NoSignature => "Brak podpisu.",
            Code::TooManySignatures => "Przekroczona liczba dozwolonych podpisów.",
            Code::BadSignature => "Nieprawidłowy podpis.",
            Code::BadCertificate => "Nieprawidłowy certyfikat.",
            Code::SchemaViolation => "Dokument nie jest zgodny ze schemą (xsd).",
        }
    }
}

/// An error the handlers return; it renders as the spec's body.
#[derive(Debug)]
pub enum ApiError {
    BadRequest { code: Code, details: Vec<String> },
    Unauthorized { detail: String, instance: String },
}

impl ApiError {
    pub fn bad(code: Code, detail: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            code,
            details: vec![detail.into()],
        }
    }
    pub fn validation(detail: impl Into<String>) -> ApiError {
        ApiError::bad(Code::InputValidation, detail)
    }
    pub fn no_session(reference: &str) -> ApiError {
        ApiError::bad(
            Code::NoSession,
            format!("Sesja o numerze referencyjnym {reference} nie została znaleziona."),
        )
    }
}

fn trace_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::BadRequest { code, details } => {
                let body = json!({
                    "exception": {
                        "exceptionDetailList": [{
                            "exceptionCode": code as i32,
                            "exceptionDescription": code.description(),
                            "details": details,
                        }],
                        "referenceNumber": null,
                        "serviceCode": format!("00-{}-{:016x}-00", trace_id(), rand::random::<u64>()),
                        "serviceCtx": "srvKSEFSIM",
                        "serviceName": "ksef-sim",
                        "timestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    }
                });
                (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
            }
            ApiError::Unauthorized { detail, instance } => {
                let body = json!({
                    "title": "Unauthorized",
                    "status": 401,
                    "detail": detail,
                    "instance": instance,
                    "traceId": trace_id(),
                    "timestamp": Utc::now().to_rfc3339(),
                });
                problem(StatusCode::UNAUTHORIZED, body)
            }
        }
    }
}

fn problem(status: StatusCode, body: serde_json::Value) -> Response {
    let mut r = (status, axum::Json(body)).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    r
}

/// HTTP 429 with Retry-After in whole seconds; the body in the default (deprecated) form or
/// as problem+json when the client asked with `X-Error-Format: problem-details`.
pub fn too_many_requests(retry_after_s: u64, message: &str, problem_details: bool, instance: &str) -> Response {
    let mut r = if problem_details {
        problem(
            StatusCode::TOO_MANY_REQUESTS,
            json!({
                "title": "Too Many Requests",
                "status": 429,
                "instance": instance,
                "detail": message,
                "timestamp": Utc::now().to_rfc3339(),
                "traceId": trace_id(),
            }),
        )
    } else {
        let body = json!({"status": {"code": 429, "description": "Too Many Requests", "details": [message]}});
        (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response()
    };
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
    r
}
