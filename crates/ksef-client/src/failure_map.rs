//! The ONE place where what KSeF (or the network) says becomes the relay's error taxonomy.
//!
//! Three inputs: an HTTP answer that is not a success ([`from_response`]), a transport error
//! ([`from_transport`]), and a final status inside a 200 answer: an invoice's
//! ([`invoice_outcome`]), a session's or an auth operation's ([`auth_outcome`]). KSeF's codes,
//! descriptions and details are kept verbatim in the [`Failure`] for the document's history.

use chrono::{DateTime, Duration, Utc};
use relay_domain::{ErrorClass, ErrorSource, Failure, KsefNumber, KsefReference};

use crate::model::{ExceptionResponse, InvoiceStatus, ProblemDetails, Status, TooManyRequests};

fn source(operation: &str) -> ErrorSource {
    ErrorSource::Ksef {
        operation: operation.to_owned(),
    }
}

/// How long to wait when a 429 comes without a usable Retry-After (KSeF always sends one).
const DEFAULT_RETRY_AFTER: i64 = 60;

/// `Retry-After` as delta-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(now + Duration::seconds(secs.min(7 * 24 * 3600) as i64));
    }
    httpdate::parse_http_date(v).ok().map(DateTime::<Utc>::from)
}

/// Class of a KSeF exception code from a 400 answer.
pub fn class_of_exception(code: i32) -> ErrorClass {
    match code {
        // The session is closed, gone, over its invoice limit or cancelled: open a new one.
        // 21205: a batch part never arrived (its upload failed): the package needs a new session.
        // 21184 (2026): the session is "temporarily unavailable": open a new one and go on.
        21173 | 21180 | 21155 | 21208 | 21205 | 21184 => ErrorClass::NeedsNewSession,
        // Not authorised (redeemed, revoked, bad status), unknown auth operation, bad challenge.
        21301 | 21304 | 21111 => ErrorClass::NeedsReauth,
        // UPO or invoice not generated yet.
        21178 | 21165 => ErrorClass::Transient,
        // Unknown public key: the client refreshes its keys and retries once; if that still
        // fails, later is the best hope.
        21470 => ErrorClass::Transient,
        // The request as built from this invoice: its size or hash (21402, 21403), input
        // validation (21405), part sizes and counts (21157, 21161): the invoice cannot go as is.
        21402 | 21403 | 21405 | 21157 | 21161 => ErrorClass::Permanent,
        // A technical correction KSeF will not take: one of that invoice is already accepted
        // (21166; `KsefClient::send_technical_correction` answers it as a typed outcome), or the
        // invoice it names is not a rejected offline invoice (21167).
        21166 | 21167 => ErrorClass::Permanent,
        // A code we do not know says nothing about the invoice: an operator looks, the seller's
        // work is parked meanwhile, and nothing is REJECTED on a guess.
        _ => ErrorClass::Operator,
    }
}

/// A non-success HTTP answer.
pub fn from_response(operation: &str, status: u16, retry_after: Option<&str>, body: &[u8], now: DateTime<Utc>) -> Failure {
    let text = String::from_utf8_lossy(body).into_owned();
    match status {
        429 => {
            let until = retry_after
                .and_then(|v| parse_retry_after(v, now))
                .unwrap_or(now + Duration::seconds(DEFAULT_RETRY_AFTER));
            let (message, details) = match serde_json::from_slice::<TooManyRequests>(body) {
                Ok(t) => (t.status.description, t.status.details.unwrap_or_default()),
                Err(_) => match serde_json::from_slice::<ProblemDetails>(body) {
                    Ok(p) => (
                        p.title.unwrap_or_else(|| "Too Many Requests".into()),
                        p.detail.into_iter().collect(),
                    ),
                    Err(_) => ("Too Many Requests".to_owned(), non_empty(text)),
                },
            };
            Failure::new(ErrorClass::RateLimited { until }, source(operation), message)
                .with_code("429")
                .with_details(details)
        }
        400 => {
            if let Ok(ExceptionResponse { exception: Some(e) }) = serde_json::from_slice::<ExceptionResponse>(body) {
                if let Some(list) = e.exception_detail_list.filter(|l| !l.is_empty()) {
                    let first = list[0].exception_code;
                    let message = list
                        .iter()
                        .filter_map(|d| d.exception_description.clone())
                        .collect::<Vec<_>>()
                        .join(" ");
                    let mut details: Vec<String> = list.into_iter().flat_map(|d| d.details.unwrap_or_default()).collect();
                    if let Some(sc) = e.service_code {
                        details.push(format!("serviceCode: {sc}"));
                    }
                    return Failure::new(class_of_exception(first), source(operation), message)
                        .with_code(first.to_string())
                        .with_details(details);
                }
            }
            if let Ok(p) = serde_json::from_slice::<ProblemDetails>(body) {
                if let Some(errors) = p.errors.filter(|e| !e.is_empty()) {
                    let first = errors[0].code;
                    let message = errors.iter().filter_map(|e| e.description.clone()).collect::<Vec<_>>().join(" ");
                    let details = errors.into_iter().flat_map(|e| e.details.unwrap_or_default()).collect();
                    return Failure::new(class_of_exception(first), source(operation), message)
                        .with_code(first.to_string())
                        .with_details(details);
                }
            }
            // A 400 KSeF did not explain: an operator looks; the invoice is not to blame.
            Failure::new(ErrorClass::Operator, source(operation), "HTTP 400 Bad Request")
                .with_code("400")
                .with_details(non_empty(text))
        }
        401 => {
            let p = serde_json::from_slice::<ProblemDetails>(body).unwrap_or_default();
            Failure::new(
                ErrorClass::NeedsReauth,
                source(operation),
                p.detail.unwrap_or_else(|| "Unauthorized".into()),
            )
            .with_code("401")
        }
        403 => {
            // missing-permissions, ip-not-allowed, security-service-blocked...: an operator must
            // act, and every invoice of the seller would get the same answer meanwhile.
            let p = serde_json::from_slice::<ProblemDetails>(body).unwrap_or_default();
            let code = p.reason_code.map(|r| format!("403 {r}")).unwrap_or_else(|| "403".into());
            Failure::new(
                ErrorClass::Operator,
                source(operation),
                p.detail.unwrap_or_else(|| "Forbidden".into()),
            )
            .with_code(code)
            .with_details(non_empty(text))
        }
        // An auth operation older than 7 days: start again.
        410 if operation.starts_with("auth") => Failure::new(
            ErrorClass::NeedsReauth,
            source(operation),
            "Gone: the authentication operation expired",
        )
        .with_code("410")
        .with_details(non_empty(text)),
        500..=599 => Failure::new(ErrorClass::Transient, source(operation), format!("HTTP {status} from KSeF"))
            .with_code(status.to_string())
            .with_details(non_empty(text)),
        // A status KSeF documents no meaning for here (404, 405, 409, a 410 outside auth, 3xx...).
        _ => Failure::new(ErrorClass::Operator, source(operation), format!("HTTP {status} from KSeF"))
            .with_code(status.to_string())
            .with_details(non_empty(text)),
    }
}

fn non_empty(text: String) -> Vec<String> {
    if text.trim().is_empty() {
        Vec::new()
    } else {
        vec![text.chars().take(2000).collect()]
    }
}

/// Whether `f` (as this module made it) says KSeF itself is down: a 5xx answer, or no answer
/// at all (timeout, refused or reset connection). Not a 429, a 4xx, a refused login or our own
/// configuration: those are KSeF answering. The pipeline counts such failures as the relay's own
/// evidence of an outage (`relay_domain::availability::FailedCalls`) without reading codes.
pub fn means_ksef_down(f: &Failure) -> bool {
    if f.class != ErrorClass::Transient || !matches!(f.source, ErrorSource::Ksef { .. }) {
        return false;
    }
    match f.code.as_deref() {
        Some("timeout" | "connect" | "network") => true,
        Some(code) => code.parse::<u16>().is_ok_and(|status| (500..600).contains(&status)),
        None => false,
    }
}

/// A request that got no HTTP answer: timeouts, refused or reset connections. All transient;
/// after an ambiguous one (the request may have arrived) the caller reconciles before resending.
pub fn from_transport(operation: &str, e: &reqwest::Error) -> Failure {
    let code = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_decode() || e.is_body() {
        "body"
    } else {
        "network"
    };
    // reqwest's Display omits the cause chain; the chain names the reset or the refused port.
    let mut message = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    Failure::new(ErrorClass::Transient, source(operation), message).with_code(code)
}

/// A 2xx answer whose body we could not read: KSeF broke its contract, or a proxy answered.
pub fn unreadable(operation: &str, what: &str, err: impl std::fmt::Display) -> Failure {
    Failure::new(ErrorClass::Transient, source(operation), format!("unreadable {what}: {err}")).with_code("body")
}

/// Where an invoice stands, from its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvoiceOutcome {
    /// 100 or 150: keep polling.
    Pending,
    /// 200: the KSeF number and acquisition date are set.
    Accepted {
        ksef_number: KsefNumber,
        acquisition_date: Option<DateTime<Utc>>,
    },
    /// Anything else, classified.
    Failed(Failure),
}

fn status_failure(class: ErrorClass, operation: &str, s: &Status) -> Failure {
    let mut details = s.details.clone().unwrap_or_default();
    if let Some(ext) = &s.extensions {
        details.extend(ext.iter().map(|(k, v)| format!("{k}: {}", v.as_deref().unwrap_or("null"))));
    }
    Failure::new(class, source(operation), s.description.clone())
        .with_code(s.code.to_string())
        .with_details(details)
}

/// The outcome of an invoice status.
pub fn invoice_outcome(operation: &str, inv: &InvoiceStatus) -> InvoiceOutcome {
    let s = &inv.status;
    let class = match s.code {
        100 | 150 => return InvoiceOutcome::Pending,
        200 => {
            return match inv.ksef_number.as_deref().map(KsefNumber::parse) {
                Some(Ok(n)) => InvoiceOutcome::Accepted {
                    ksef_number: n,
                    acquisition_date: inv.acquisition_date,
                },
                Some(Err(e)) => InvoiceOutcome::Failed(
                    Failure::new(
                        ErrorClass::Transient,
                        source(operation),
                        format!("status 200 with an invalid KSeF number: {e}"),
                    )
                    .with_code("200"),
                ),
                None => InvoiceOutcome::Failed(
                    Failure::new(ErrorClass::Transient, source(operation), "status 200 without a KSeF number").with_code("200"),
                ),
            };
        }
        405 => ErrorClass::NeedsNewSession,
        440 => {
            let original = s
                .extensions
                .as_ref()
                .and_then(|e| e.get("originalKsefNumber"))
                .and_then(|v| v.as_deref())
                .map(KsefNumber::parse);
            match original {
                Some(Ok(original)) => ErrorClass::Duplicate { original },
                // A duplicate without a usable original cannot be proven ours: a person decides.
                _ => ErrorClass::Permanent,
            }
        }
        // Unknown error: retry, then the retry budget escalates.
        500 | 550 => ErrorClass::Transient,
        // The invoice file itself: 450 validation (XSD, semantics, UTF-8), 430 file verification,
        // 435 decryption of this file, 415 an attachment the taxpayer may not send (drop it or
        // enable attachments; parking the seller would hold back its invoices without one).
        415 | 430 | 435 | 450 => ErrorClass::Permanent,
        // 410 the context may not issue for this seller (permissions), and any code KSeF has not
        // documented: an operator's problem.
        _ => ErrorClass::Operator,
    };
    InvoiceOutcome::Failed(status_failure(class, operation, s))
}

/// KSeF's 440: the invoice duplicates `original`, held in `original_session` (where its UPO is
/// fetched by number). Read from the classified failure, whose details keep KSeF's extensions
/// verbatim (also in failures stored before this type existed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub original: KsefNumber,
    /// None when KSeF named no session (or an unreadable one): the original cannot be checked.
    pub original_session: Option<KsefReference>,
}

/// The extension that names the original's session in a 440.
const ORIGINAL_SESSION: &str = "originalSessionReferenceNumber";

impl Duplicate {
    /// The duplicate `f` reports, if it is one.
    pub fn of(f: &Failure) -> Option<Duplicate> {
        let ErrorClass::Duplicate { original } = &f.class else {
            return None;
        };
        let original_session = f
            .details
            .iter()
            .find_map(|d| d.strip_prefix(ORIGINAL_SESSION)?.strip_prefix(": "))
            .and_then(|s| KsefReference::parse(s).ok());
        Some(Duplicate {
            original: original.clone(),
            original_session,
        })
    }
}

/// Where an auth operation stands: Ok(true) done, Ok(false) pending, Err classified.
pub fn auth_outcome(operation: &str, s: &Status) -> Result<bool, Failure> {
    match s.code {
        100 => Ok(false),
        200 => Ok(true),
        // Cancelled by the system or unknown: try again.
        500 | 550 => Err(status_failure(ErrorClass::Transient, operation, s)),
        // 415 no permissions, 425 revoked, 450 bad token, 460 certificate, 470, 480 blocked: the
        // credentials, never an invoice, are at fault.
        _ => Err(status_failure(ErrorClass::Operator, operation, s)),
    }
}

/// A session's final status. 200 and 445 ("no valid invoices") are processed sessions: their
/// invoices carry the verdicts. 415 (key), 405/430/435 (batch package) failures: a new session.
pub fn session_outcome(operation: &str, s: &Status) -> Result<bool, Failure> {
    match s.code {
        100 | 150 | 170 => Ok(false),
        200 | 445 => Ok(true),
        440 => Err(status_failure(ErrorClass::NeedsNewSession, operation, s)),
        500 => Err(status_failure(ErrorClass::Transient, operation, s)),
        _ => Err(status_failure(ErrorClass::NeedsNewSession, operation, s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ksef_down_is_a_5xx_or_no_answer_never_a_429_a_4xx_or_a_hold() {
        assert!(means_ksef_down(&from_response("send", 503, None, b"", now())));
        assert!(means_ksef_down(&from_response("send", 502, None, b"<html/>", now())));
        assert!(!means_ksef_down(&from_response("send", 429, Some("5"), b"", now())));
        assert!(!means_ksef_down(&from_response("send", 400, None, b"{}", now())));
        let timeout = Failure::new(ErrorClass::Transient, source("send"), "timed out").with_code("timeout");
        assert!(means_ksef_down(&timeout));
        let held = Failure::new(ErrorClass::Transient, source("availability"), "sending held").with_code("DEGRADED");
        assert!(!means_ksef_down(&held));
        let ours = Failure::new(ErrorClass::Transient, ErrorSource::Relay, "x").with_code("503");
        assert!(!means_ksef_down(&ours), "only KSeF's answers");
    }
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn ksef400(code: i32) -> Vec<u8> {
        serde_json::to_vec(&json!({"exception": {"exceptionDetailList": [{"exceptionCode": code, "exceptionDescription": "Opis.", "details": ["Szczegół 1."]}], "serviceCode": "00-abc-00", "timestamp": "2026-02-12T01:03:23.70Z"}})).unwrap()
    }

    #[test]
    fn retry_after_as_seconds_or_http_date() {
        let f = from_response(
            "send_invoice",
            429,
            Some("30"),
            r#"{"status":{"code":429,"description":"Too Many Requests","details":["Przekroczono limit 20 żądań na minutę."]}}"#.as_bytes(),
            now(),
        );
        assert_eq!(
            f.class,
            ErrorClass::RateLimited {
                until: now() + Duration::seconds(30)
            }
        );
        assert_eq!(f.details, vec!["Przekroczono limit 20 żądań na minutę."]);
        let f = from_response("send_invoice", 429, Some("Sun, 01 Mar 2026 12:05:00 GMT"), b"", now());
        assert_eq!(
            f.class,
            ErrorClass::RateLimited {
                until: now() + Duration::minutes(5)
            }
        );
        let f = from_response("send_invoice", 429, None, b"", now());
        assert_eq!(
            f.class,
            ErrorClass::RateLimited {
                until: now() + Duration::seconds(DEFAULT_RETRY_AFTER)
            }
        );
    }

    #[test]
    fn exception_codes_map_to_their_classes_and_stay_verbatim() {
        for (code, class) in [
            (21180, ErrorClass::NeedsNewSession),
            (21173, ErrorClass::NeedsNewSession),
            (21184, ErrorClass::NeedsNewSession),
            (21301, ErrorClass::NeedsReauth),
            (21402, ErrorClass::Permanent),
            (21403, ErrorClass::Permanent),
            (21405, ErrorClass::Permanent),
            (21178, ErrorClass::Transient),
            (21999, ErrorClass::Operator),
        ] {
            let f = from_response("op", 400, None, &ksef400(code), now());
            assert_eq!(f.class, class, "{code}");
            assert_eq!(f.code.as_deref(), Some(code.to_string().as_str()));
            assert_eq!(f.message, "Opis.");
            assert_eq!(f.details[0], "Szczegół 1.");
        }
    }

    #[test]
    fn http_statuses_map() {
        assert_eq!(from_response("op", 401, None, b"{}", now()).class, ErrorClass::NeedsReauth);
        assert_eq!(from_response("op", 503, None, b"", now()).class, ErrorClass::Transient);
        assert_eq!(from_response("op", 502, None, b"<html>", now()).class, ErrorClass::Transient);
        let f = from_response(
            "op",
            403,
            None,
            br#"{"title":"Forbidden","detail":"x","reasonCode":"ip-not-allowed"}"#,
            now(),
        );
        assert_eq!((f.class, f.code.as_deref()), (ErrorClass::Operator, Some("403 ip-not-allowed")));
    }

    /// Failed on main: a 403, an unexplained 400, an undocumented status and a refused login
    /// were PERMANENT, so an IP block or a revoked token turned the whole backlog REJECTED.
    #[test]
    fn credentials_permissions_and_unknown_answers_are_an_operators_problem() {
        for reason in ["missing-permissions", "ip-not-allowed", "security-service-blocked"] {
            let body = format!(r#"{{"title":"Forbidden","detail":"x","reasonCode":"{reason}"}}"#);
            assert_eq!(
                from_response("send_invoice", 403, None, body.as_bytes(), now()).class,
                ErrorClass::Operator,
                "{reason}"
            );
        }
        assert_eq!(
            from_response("send_invoice", 400, None, b"<html>", now()).class,
            ErrorClass::Operator
        );
        for status in [404, 405, 409, 410, 418] {
            assert_eq!(
                from_response("send_invoice", status, None, b"", now()).class,
                ErrorClass::Operator,
                "{status}"
            );
        }
        let status = |code: i32| Status {
            code,
            description: "d".into(),
            details: None,
            extensions: None,
        };
        for code in [415, 425, 450, 460, 470, 480] {
            assert_eq!(
                auth_outcome("auth_status", &status(code)).unwrap_err().class,
                ErrorClass::Operator,
                "{code}"
            );
        }
        let class = |c| match invoice_outcome("s", &inv(c, None)) {
            InvoiceOutcome::Failed(f) => f.class,
            o => panic!("{o:?}"),
        };
        for c in [410, 499] {
            assert_eq!(class(c), ErrorClass::Operator, "{c}");
        }
    }

    fn inv(code: i32, ext: Option<serde_json::Value>) -> InvoiceStatus {
        serde_json::from_value(json!({
            "ordinalNumber": 1, "referenceNumber": "20250625-EE-319D7EE000-B67F415CDC-2C",
            "invoiceHash": "mkht+3m5trnfxlTYhq3QFn74LkEO69MFNlsMAkCDSPA=", "invoicingDate": "2026-03-01T12:00:00Z",
            "status": {"code": code, "description": "d", "details": ["x"], "extensions": ext}
        }))
        .unwrap()
    }

    #[test]
    fn invoice_statuses_map() {
        assert_eq!(invoice_outcome("s", &inv(100, None)), InvoiceOutcome::Pending);
        assert_eq!(invoice_outcome("s", &inv(150, None)), InvoiceOutcome::Pending);
        let class = |c| match invoice_outcome("s", &inv(c, None)) {
            InvoiceOutcome::Failed(f) => f.class,
            o => panic!("{o:?}"),
        };
        assert_eq!(class(405), ErrorClass::NeedsNewSession);
        assert_eq!(class(550), ErrorClass::Transient);
        for c in [415, 430, 435, 450] {
            assert_eq!(class(c), ErrorClass::Permanent, "{c}");
        }
        let dup = inv(
            440,
            Some(
                json!({"originalKsefNumber": "5265877635-20250626-010080DD2B5E-26", "originalSessionReferenceNumber": "20250626-SO-2F14610000-242991F8C9-B4"}),
            ),
        );
        match invoice_outcome("s", &dup) {
            InvoiceOutcome::Failed(f) => {
                assert_eq!(
                    f.class,
                    ErrorClass::Duplicate {
                        original: KsefNumber::parse("5265877635-20250626-010080DD2B5E-26").unwrap()
                    }
                );
                assert!(f.details.iter().any(|d| d.contains("originalSessionReferenceNumber")));
                assert_eq!(
                    Duplicate::of(&f),
                    Some(Duplicate {
                        original: KsefNumber::parse("5265877635-20250626-010080DD2B5E-26").unwrap(),
                        original_session: Some(KsefReference::parse("20250626-SO-2F14610000-242991F8C9-B4").unwrap()),
                    })
                );
            }
            o => panic!("{o:?}"),
        }
        // A 440 without a parsable original cannot be proven ours.
        assert_eq!(class(440), ErrorClass::Permanent);
    }

    #[test]
    fn a_duplicate_names_its_original_and_the_session_only_when_ksef_does() {
        let original = KsefNumber::parse("5265877635-20250626-010080DD2B5E-26").unwrap();
        let dup = |details: Vec<String>| {
            Failure::new(
                ErrorClass::Duplicate {
                    original: original.clone(),
                },
                source("invoice_status"),
                "Duplikat",
            )
            .with_details(details)
        };
        for details in [
            vec![],
            vec!["originalSessionReferenceNumber: null".to_owned()],
            vec!["originalSessionReferenceNumber: garbage".to_owned()],
        ] {
            assert_eq!(
                Duplicate::of(&dup(details.clone())),
                Some(Duplicate {
                    original: original.clone(),
                    original_session: None
                }),
                "{details:?}"
            );
        }
        let named = Duplicate::of(&dup(vec![
            "Duplikat".into(),
            "originalSessionReferenceNumber: 20250626-SO-2F14610000-242991F8C9-B4".into(),
        ]))
        .unwrap();
        assert_eq!(named.original_session.unwrap().as_str(), "20250626-SO-2F14610000-242991F8C9-B4");
        assert_eq!(Duplicate::of(&Failure::new(ErrorClass::Permanent, source("s"), "x")), None);
    }
}
