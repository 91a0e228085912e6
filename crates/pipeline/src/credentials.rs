//! Where a seller's KSeF credentials come from: a [`CredentialsProvider`] reads one seller's
//! secret when [`KsefContexts`](crate::sessions::KsefContexts) first needs it, again after a time
//! to live (so a rotated certificate is picked up without a redeploy), and again after an
//! operator's problem (a refused login). The deployed functions read AWS Secrets Manager
//! (`relay_lambda::SecretsManagerCredentials`); tests and the local runner use
//! [`MemoryCredentials`].
//!
//! A secret that cannot be read or parsed is the operator's problem ([`ErrorClass::Operator`]):
//! the send stage parks that seller's work alone, and the others keep sending. The failure says
//! which secret and what is wrong with it, never what it holds.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use ksef_client::{CredentialFacts, CredentialKind, StoredCredentials};
use relay_domain::credential_facts::{CredentialFacts as RecordedFacts, LoginKind};
use relay_domain::{ErrorClass, ErrorSource, Failure, Nip};
use relay_observe::emf::MetricLine;

/// Code of a secret that was read but cannot be used.
pub const CREDENTIALS_INVALID: &str = "CREDENTIALS_INVALID";
/// Code of a secret that cannot be read (missing, access denied, no string value).
pub const CREDENTIALS_UNREADABLE: &str = "CREDENTIALS_UNREADABLE";

/// One seller's credentials as read now.
#[derive(Debug, Clone)]
pub struct ProvidedCredentials {
    pub stored: StoredCredentials,
    /// The secret's version (Secrets Manager's VersionId): an unchanged version keeps the
    /// client (and its tokens) when the time to live ends.
    pub version: Option<String>,
}

/// Reads a seller's credentials afresh; [`KsefContexts`](crate::sessions::KsefContexts) caches.
#[async_trait::async_trait]
pub trait CredentialsProvider: Send + Sync {
    async fn read(&self, seller: &Nip) -> Result<ProvidedCredentials, Failure>;
}

/// The failure for a secret that was read but cannot be used; `why` must not quote it.
pub fn invalid(secret: &str, why: impl std::fmt::Display) -> Failure {
    Failure::new(
        ErrorClass::Operator,
        ErrorSource::Relay,
        format!("the KSeF credentials secret {secret} cannot be used: {why}"),
    )
    .with_code(CREDENTIALS_INVALID)
}

/// Credentials held in memory, as the secret's text: for tests and the local runner. `set`
/// again to rotate (the version goes up).
#[derive(Default)]
pub struct MemoryCredentials {
    secrets: Mutex<HashMap<Nip, (String, u64)>>,
}

impl MemoryCredentials {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores (or rotates) `seller`'s secret text.
    pub fn set(&self, seller: Nip, secret: impl Into<String>) {
        let mut map = self.secrets.lock().expect("credentials lock");
        let version = map.get(&seller).map_or(1, |(_, v)| v + 1);
        map.insert(seller, (secret.into(), version));
    }

    /// With `seller`'s secret text.
    pub fn with(self, seller: Nip, secret: impl Into<String>) -> Self {
        self.set(seller, secret);
        self
    }
}

#[async_trait::async_trait]
impl CredentialsProvider for MemoryCredentials {
    async fn read(&self, seller: &Nip) -> Result<ProvidedCredentials, Failure> {
        let found = self.secrets.lock().expect("credentials lock").get(seller).cloned();
        let name = format!("memory:{seller}");
        let Some((text, version)) = found else {
            return Err(Failure::new(
                ErrorClass::Operator,
                ErrorSource::Relay,
                format!("the KSeF credentials secret {name} does not exist"),
            )
            .with_code(CREDENTIALS_UNREADABLE));
        };
        let stored = StoredCredentials::parse(&text).map_err(|e| invalid(&name, e))?;
        Ok(ProvidedCredentials {
            stored,
            version: Some(version.to_string()),
        })
    }
}

/// The EMF line with the days left on a seller's login (a certificate's notAfter, or the end of
/// token logins): `CredentialDaysLeft` without dimensions for the alarms (their statistic is the
/// minimum over all sellers) and by `SellerNip` for the dashboard.
pub fn days_left_line(seller: &Nip, facts: &CredentialFacts, now: DateTime<Utc>) -> MetricLine {
    relay_observe::credential_metrics::days_left_line(seller.as_str(), facts.kind.as_str(), facts.not_after, facts.days_left(now), now)
}

/// The facts recorded for the report function (`relay/credential-facts/{nip}`): what
/// [`CredentialFacts`] says, without the fingerprint, and when it was read. Never the secret.
pub fn recorded_facts(facts: &CredentialFacts, read_at: DateTime<Utc>) -> RecordedFacts {
    RecordedFacts {
        kind: match facts.kind {
            CredentialKind::Token => LoginKind::Token,
            CredentialKind::Certificate => LoginKind::Certificate,
        },
        subject: facts.subject.clone(),
        key_type: facts.key_type.clone(),
        not_after: facts.not_after,
        offline_not_after: facts.offline_not_after,
        read_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_credentials_parse_rotate_and_refuse_without_quoting() {
        let seller = Nip::parse("9999999999").unwrap();
        let other = Nip::parse("5265877635").unwrap();
        let m = MemoryCredentials::new()
            .with(seller.clone(), "tok-1")
            .with(other.clone(), "{\"token\": 7}");
        let first = m.read(&seller).await.unwrap();
        m.set(seller.clone(), "{\"token\": \"tok-2\"}");
        let second = m.read(&seller).await.unwrap();
        assert_ne!(first.version, second.version);
        let f = m.read(&other).await.unwrap_err();
        assert_eq!(f.class, ErrorClass::Operator);
        assert_eq!(f.code.as_deref(), Some(CREDENTIALS_INVALID));
        assert!(f.message.contains("token must be a string"), "{f}");
        let missing = m.read(&Nip::parse("1111111111").unwrap()).await.unwrap_err();
        assert_eq!(missing.code.as_deref(), Some(CREDENTIALS_UNREADABLE));
    }

    #[test]
    fn the_days_left_line_has_the_alarm_metric_and_the_seller() {
        let seller = Nip::parse("9999999999").unwrap();
        let stored = StoredCredentials::parse("tok").unwrap();
        let now = DateTime::parse_from_rfc3339("2026-12-24T23:00:00Z").unwrap().with_timezone(&Utc);
        let line: serde_json::Value = serde_json::from_str(&days_left_line(&seller, &stored.facts(), now).to_line().unwrap()).unwrap();
        assert_eq!(line["CredentialDaysLeft"], 7.0);
        assert_eq!(line["SellerNip"], "9999999999");
        assert_eq!(line["CredentialKind"], "token");
    }
}
