//! `CredentialDaysLeft`: the days left on a seller's KSeF login, written by the KSeF-calling
//! functions when they read a seller's secret and by the report function's scheduled snapshot
//! from the facts those reads recorded (so the alarms see a quiet seller too). One builder, so
//! both write the same line.

use chrono::{DateTime, Utc};

use crate::emf::{MetricLine, Unit};

/// The line: `CredentialDaysLeft` without dimensions for the alarms (their statistic is the
/// minimum over all sellers) and by `SellerNip` for the dashboard; properties `CredentialKind`
/// (`token`, `certificate`) and `NotAfter`.
pub fn days_left_line(seller_nip: &str, kind: &str, not_after: DateTime<Utc>, days_left: i64, now: DateTime<Utc>) -> MetricLine {
    let days = days_left as f64;
    MetricLine::new(crate::NAMESPACE, now)
        .group(&[], &[("CredentialDaysLeft", Unit::None, days)])
        .group(&[("SellerNip", seller_nip)], &[("CredentialDaysLeft", Unit::None, days)])
        .property("CredentialKind", kind)
        .property("NotAfter", not_after.to_rfc3339())
}
