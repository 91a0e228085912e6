//! The technical level: one EMF line per KSeF call, written by `ksef-client` where every call
//! goes through (`KsefClient::call`). Per endpoint (the client's operation name, such as
//! `send_invoice` or `invoice_status`): latency, one call, and whether it timed out, met a 5xx
//! or a 429; per error class: the failed calls; and the token refreshes and full logins.

use std::time::Duration;

use chrono::Utc;

use crate::emf::{MetricLine, Unit};
use crate::NAMESPACE;

/// How one call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallOutcome<'a> {
    /// The HTTP status, if an answer arrived.
    pub status: Option<u16>,
    /// The transport gave up waiting.
    pub timed_out: bool,
    /// The error class (`ErrorClass::name`) of a failed call; None on success.
    pub error_class: Option<&'a str>,
}

/// The line for one call, not yet written.
pub fn call_line(endpoint: &str, latency: Duration, outcome: CallOutcome<'_>) -> MetricLine {
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    let status = outcome.status.unwrap_or(0);
    let mut line = MetricLine::new(NAMESPACE, Utc::now()).group(
        &[("Endpoint", endpoint)],
        &[
            ("KsefCallLatency", Unit::Milliseconds, latency.as_secs_f64() * 1000.0),
            ("KsefCalls", Unit::Count, 1.0),
            ("KsefCallTimeouts", Unit::Count, flag(outcome.timed_out)),
            ("KsefCall5xx", Unit::Count, flag((500..600).contains(&status))),
            ("KsefCall429", Unit::Count, flag(status == 429)),
        ],
    );
    if let Some(class) = outcome.error_class {
        line = line.group(&[("ErrorClass", class)], &[("KsefCallErrors", Unit::Count, 1.0)]);
    }
    let success = outcome.error_class.is_none();
    if success && endpoint == "auth_refresh" {
        line = line.group(&[], &[("KsefAuthRefreshes", Unit::Count, 1.0)]);
    }
    if success && endpoint == "auth_redeem" {
        line = line.group(&[], &[("KsefLogins", Unit::Count, 1.0)]);
    }
    if let Some(s) = outcome.status {
        line = line.property("HttpStatus", s);
    }
    line
}

/// Writes the line for one call.
pub fn record_call(endpoint: &str, latency: Duration, outcome: CallOutcome<'_>) {
    call_line(endpoint, latency, outcome).emit();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emf::check_line;

    #[test]
    fn a_failed_call_counts_per_endpoint_and_per_error_class() {
        let line = call_line(
            "send_invoice",
            Duration::from_millis(1500),
            CallOutcome {
                status: Some(503),
                timed_out: false,
                error_class: Some("TRANSIENT"),
            },
        )
        .to_line()
        .unwrap();
        let names: Vec<String> = check_line(&line).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "KsefCallLatency",
                "KsefCalls",
                "KsefCallTimeouts",
                "KsefCall5xx",
                "KsefCall429",
                "KsefCallErrors"
            ]
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["Endpoint"], "send_invoice");
        assert_eq!(v["ErrorClass"], "TRANSIENT");
        assert_eq!(v["KsefCallLatency"], 1500.0);
        assert_eq!(v["KsefCall5xx"], 1.0);
        assert_eq!(v["KsefCall429"], 0.0);
        assert_eq!(v["HttpStatus"], 503);
    }

    #[test]
    fn a_successful_refresh_counts_as_a_refresh() {
        let ok = CallOutcome {
            status: Some(200),
            timed_out: false,
            error_class: None,
        };
        let line = call_line("auth_refresh", Duration::from_millis(20), ok).to_line().unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["KsefAuthRefreshes"], 1.0);
        assert!(v.get("ErrorClass").is_none());
        check_line(&line).unwrap();
    }
}
