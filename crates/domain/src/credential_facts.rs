//! What may be known about a seller's KSeF login without its secret: the kind (token or
//! certificate), the certificate's subject and key type, when the login stops working, and when
//! these facts were read. The KSeF-calling functions record them in the shared cache each time
//! they read a seller's secret ([`cache_name`], plain: nothing here is secret), so the report
//! function, which may not read secrets, can show and measure every seller's expiry on quiet
//! days too.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::Nip;

/// How long recorded facts are kept after the read that wrote them. Every secret read (at
/// least each `KSEF_CREDENTIALS_TTL_SECONDS` while a seller sends) rewrites them; a seller quiet
/// for longer than this shows "no facts" on the status page and emits no metric.
pub fn retention() -> Duration {
    Duration::days(400)
}

/// The shared-cache entry that holds `seller`'s facts.
pub fn cache_name(seller: &Nip) -> String {
    format!("relay/credential-facts/{seller}")
}

/// What logs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginKind {
    /// A KSeF token: accepted only until the end of token logins (31.12.2026).
    Token,
    /// A KSeF Authentication certificate and its key.
    Certificate,
}

impl LoginKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LoginKind::Token => "token",
            LoginKind::Certificate => "certificate",
        }
    }
}

/// One seller's login facts as recorded at a secret read. Holds no secret by construction:
/// there is no member a token, key or password could go into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialFacts {
    pub kind: LoginKind,
    /// The login certificate's subject (RFC 4514); none for a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// `RSA-2048`, `EC P-256`, ...; none for a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_type: Option<String>,
    /// When the login stops working: the certificate's notAfter, or for a token the end of
    /// token logins.
    pub not_after: DateTime<Utc>,
    /// The Offline certificate's notAfter, when one is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_not_after: Option<DateTime<Utc>>,
    /// When the secret was read.
    pub read_at: DateTime<Utc>,
}

impl CredentialFacts {
    /// Whole days left until `not_after` (negative once it has passed), as the
    /// `CredentialDaysLeft` metric counts them.
    pub fn days_left(&self, now: DateTime<Utc>) -> i64 {
        (self.not_after - now).num_days()
    }

    /// The entry's text in the shared cache.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("credential facts serialise")
    }

    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_round_trip_and_count_whole_days() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let f = CredentialFacts {
            kind: LoginKind::Certificate,
            subject: Some("CN=Firma,2.5.4.97=VATPL-5265877635".into()),
            key_type: Some("EC P-256".into()),
            not_after: at("2027-01-10T12:00:00Z"),
            offline_not_after: None,
            read_at: at("2026-11-28T06:00:00Z"),
        };
        assert_eq!(CredentialFacts::from_json(&f.to_json()).unwrap(), f);
        assert_eq!(f.days_left(at("2027-01-03T12:00:01Z")), 6);
        assert_eq!(f.days_left(at("2027-01-11T12:00:00Z")), -1);
        assert_eq!(cache_name(&Nip::parse("5265877635").unwrap()), "relay/credential-facts/5265877635");
    }
}
