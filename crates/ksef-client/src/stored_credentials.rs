//! A seller's KSeF credentials as the relay stores them: one secret per seller, a JSON object in
//! one documented format, parsed here once for every reader (the Lambda functions, the CLI).
//!
//! ```json
//! {"token": "..."}                                                  a KSeF token (until 31.12.2026)
//! {"certificate_pem": "-----BEGIN CERTIFICATE-----...",             a KSeF Authentication certificate
//!  "private_key_pem": "-----BEGIN PRIVATE KEY-----..."}              and its key (PKCS#8, PKCS#1 or SEC1)
//! {"pkcs12_base64": "MII...", "pkcs12_password": "..."}             the same as PKCS#12 (.p12/.pfx)
//! ```
//!
//! Optional members: `"subject_identifier": "certificateSubject" | "certificateFingerprint"`
//! (how KSeF finds the certificate's subject; the subject by default), and
//! `"offline_certificate_pem"` with `"offline_private_key_pem"` (the seller's Offline
//! certificate, kept for offline QR codes; it cannot log in). A secret holding both a token and a
//! certificate logs in with the certificate. A secret that is not a JSON object is a KSeF token
//! (the relay's first format), so existing token secrets keep working.
//!
//! Every error message here is written by us and names only the member at fault: never a
//! value, never a parser's message that might quote one (serde_json's and base64's do).

use std::fmt;

use base64::Engine as _;
use chrono::{DateTime, TimeZone, Utc};
use relay_domain::Nip;
use sha2::{Digest, Sha256};
use x509_cert::der::{Decode, Encode};

use crate::client::Credentials;
use crate::secret::KsefToken;
use crate::xades::{SigningIdentity, SigningKey, SubjectIdentifierType};

/// KSeF tokens stop being a login method at the end of 31 December 2026, Polish time (CET,
/// UTC+1): the regulation of 12.12.2025, §13(1)(1).
pub fn token_logins_end() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 31, 23, 0, 0).single().expect("a valid date")
}

/// Why a stored secret cannot be used. The message never contains the secret's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CredentialsError(String);

impl CredentialsError {
    fn new(message: impl Into<String>) -> Self {
        CredentialsError(message.into())
    }
}

/// How the seller logs in.
#[derive(Debug, Clone)]
pub enum Login {
    Token(KsefToken),
    Certificate {
        identity: SigningIdentity,
        subject: SubjectIdentifierType,
    },
}

/// A parsed credentials secret.
#[derive(Debug, Clone)]
pub struct StoredCredentials {
    pub login: Login,
    /// The Offline certificate (for offline QR codes later); never used to log in.
    pub offline: Option<SigningIdentity>,
}

/// What kind of credential logs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    Token,
    Certificate,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Token => "token",
            CredentialKind::Certificate => "certificate",
        }
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What may be said about a credential without revealing it: for logs, metrics and the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialFacts {
    pub kind: CredentialKind,
    /// The login certificate's subject (RFC 4514).
    pub subject: Option<String>,
    /// `RSA-2048`, `EC P-256`, ...
    pub key_type: Option<String>,
    /// The certificate's SHA-256 fingerprint, hex.
    pub fingerprint: Option<String>,
    /// When the login stops working: the certificate's notAfter, or for a token the end of
    /// token logins.
    pub not_after: DateTime<Utc>,
    /// The Offline certificate's notAfter, when one is stored.
    pub offline_not_after: Option<DateTime<Utc>>,
}

impl CredentialFacts {
    /// Whole days left until `not_after` (negative once it has passed).
    pub fn days_left(&self, now: DateTime<Utc>) -> i64 {
        (self.not_after - now).num_days()
    }
}

/// The members a secret may have.
const MEMBERS: &[&str] = &[
    "token",
    "certificate_pem",
    "private_key_pem",
    "pkcs12_base64",
    "pkcs12_password",
    "subject_identifier",
    "offline_certificate_pem",
    "offline_private_key_pem",
];

impl StoredCredentials {
    /// Parses a secret's string value.
    pub fn parse(raw: &str) -> Result<StoredCredentials, CredentialsError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(CredentialsError::new("the secret is empty"));
        }
        if trimmed.starts_with("-----BEGIN") {
            return Err(CredentialsError::new(
                "the secret is a bare PEM: store a JSON object with certificate_pem and private_key_pem",
            ));
        }
        if !trimmed.starts_with(['{', '[', '"']) {
            // The first format: the token itself (a KSeF token never starts like JSON).
            return Ok(StoredCredentials {
                login: Login::Token(KsefToken::new(trimmed)),
                offline: None,
            });
        }
        let value: serde_json::Value = serde_json::from_str(trimmed).map_err(|e| {
            // Line and column only: serde_json's message can quote the value.
            CredentialsError::new(format!("the secret is not valid JSON (line {}, column {})", e.line(), e.column()))
        })?;
        let serde_json::Value::Object(map) = value else {
            return Err(CredentialsError::new("the secret is not a JSON object"));
        };
        if let Some(unknown) = map.keys().find(|k| !MEMBERS.contains(&k.as_str())) {
            return Err(CredentialsError::new(format!(
                "the secret has an unknown member {unknown:?} (known: {})",
                MEMBERS.join(", ")
            )));
        }
        let text = |name: &str| -> Result<Option<&str>, CredentialsError> {
            match map.get(name) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) if s.trim().is_empty() => Err(CredentialsError::new(format!("{name} is empty"))),
                Some(serde_json::Value::String(s)) => Ok(Some(s.as_str())),
                Some(_) => Err(CredentialsError::new(format!("{name} must be a string"))),
            }
        };
        let subject = match text("subject_identifier")? {
            None | Some("certificateSubject") => SubjectIdentifierType::CertificateSubject,
            Some("certificateFingerprint") => SubjectIdentifierType::CertificateFingerprint,
            Some(_) => {
                return Err(CredentialsError::new(
                    "subject_identifier must be certificateSubject or certificateFingerprint",
                ))
            }
        };
        let pem_identity = match (text("certificate_pem")?, text("private_key_pem")?) {
            (Some(c), Some(k)) => Some(identity_from_pem(c, k, "certificate_pem", "private_key_pem")?),
            (None, None) => None,
            (Some(_), None) => return Err(CredentialsError::new("certificate_pem needs private_key_pem")),
            (None, Some(_)) => return Err(CredentialsError::new("private_key_pem needs certificate_pem")),
        };
        let p12_identity = match text("pkcs12_base64")? {
            Some(b64) => {
                let compact: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
                let der = base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .map_err(|_| CredentialsError::new("pkcs12_base64 is not valid base64"))?;
                // A missing password is the empty one (some tools write such stores).
                let password = match map.get("pkcs12_password") {
                    None | Some(serde_json::Value::Null) => "",
                    Some(serde_json::Value::String(s)) => s.as_str(),
                    Some(_) => return Err(CredentialsError::new("pkcs12_password must be a string")),
                };
                Some(identity_from_pkcs12(&der, password)?)
            }
            None if map.contains_key("pkcs12_password") => return Err(CredentialsError::new("pkcs12_password needs pkcs12_base64")),
            None => None,
        };
        let certificate = match (pem_identity, p12_identity) {
            (Some(_), Some(_)) => {
                return Err(CredentialsError::new(
                    "the secret has both certificate_pem and pkcs12_base64: keep one",
                ))
            }
            (a, b) => a.or(b),
        };
        if certificate.as_ref().is_some_and(|c| is_offline_type(&c.certificate_der)) {
            return Err(CredentialsError::new(
                "the login certificate is an Offline certificate (keyUsage nonRepudiation only): it cannot log in to KSeF; \
                 store it as offline_certificate_pem and give the Authentication certificate",
            ));
        }
        let offline = match (text("offline_certificate_pem")?, text("offline_private_key_pem")?) {
            (Some(c), Some(k)) => Some(identity_from_pem(c, k, "offline_certificate_pem", "offline_private_key_pem")?),
            (None, None) => None,
            _ => {
                return Err(CredentialsError::new(
                    "offline_certificate_pem and offline_private_key_pem go together",
                ))
            }
        };
        let login = match (certificate, text("token")?) {
            (Some(identity), _) => Login::Certificate { identity, subject },
            (None, Some(token)) => Login::Token(KsefToken::new(token.trim())),
            (None, None) => {
                return Err(CredentialsError::new(
                    "the secret has no login: give token, or certificate_pem with private_key_pem, or pkcs12_base64",
                ))
            }
        };
        Ok(StoredCredentials { login, offline })
    }

    /// The client's credentials for `context`.
    pub fn credentials(&self, context: Nip) -> Credentials {
        match &self.login {
            Login::Token(token) => Credentials::Token {
                context,
                token: token.clone(),
            },
            Login::Certificate { identity, subject } => Credentials::Certificate {
                context,
                identity: identity.clone(),
                subject: *subject,
            },
        }
    }

    /// What may be said about these credentials.
    pub fn facts(&self) -> CredentialFacts {
        let offline_not_after = self
            .offline
            .as_ref()
            .and_then(|o| certificate_facts(&o.certificate_der).map(|c| c.not_after));
        match &self.login {
            Login::Token(_) => CredentialFacts {
                kind: CredentialKind::Token,
                subject: None,
                key_type: None,
                fingerprint: None,
                not_after: token_logins_end(),
                offline_not_after,
            },
            Login::Certificate { identity, .. } => {
                let cert = certificate_facts(&identity.certificate_der);
                CredentialFacts {
                    kind: CredentialKind::Certificate,
                    subject: cert.as_ref().map(|c| c.subject.clone()),
                    key_type: Some(identity.key_type().to_owned()),
                    fingerprint: Some(
                        Sha256::digest(&identity.certificate_der)
                            .iter()
                            .map(|b| format!("{b:02X}"))
                            .collect(),
                    ),
                    // Parsed when the identity was made, so present; the epoch would alarm at once.
                    not_after: cert.map_or(DateTime::<Utc>::UNIX_EPOCH, |c| c.not_after),
                    offline_not_after,
                }
            }
        }
    }
}

struct CertificateFacts {
    subject: String,
    not_after: DateTime<Utc>,
}

fn certificate_facts(der: &[u8]) -> Option<CertificateFacts> {
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let not_after = cert.tbs_certificate.validity.not_after.to_unix_duration();
    Some(CertificateFacts {
        subject: cert.tbs_certificate.subject.to_string(),
        not_after: DateTime::from_timestamp(i64::try_from(not_after.as_secs()).ok()?, 0)?,
    })
}

/// Whether a certificate is a KSeF certificate of type Offline: its keyUsage allows
/// nonRepudiation and not digitalSignature (it signs KOD II; KSeF refuses it for a login). A
/// certificate without keyUsage is not.
pub fn is_offline_type(der: &[u8]) -> bool {
    use x509_cert::der::oid::AssociatedOid;
    use x509_cert::ext::pkix::{KeyUsage, KeyUsages};
    let Ok(cert) = x509_cert::Certificate::from_der(der) else {
        return false;
    };
    let extensions = cert.tbs_certificate.extensions.unwrap_or_default();
    extensions
        .iter()
        .filter(|e| e.extn_id == KeyUsage::OID)
        .filter_map(|e| KeyUsage::from_der(e.extn_value.as_bytes()).ok())
        .any(|u| u.0.contains(KeyUsages::NonRepudiation) && !u.0.contains(KeyUsages::DigitalSignature))
}

/// A certificate (PEM) and its private key (PEM), checked to belong together.
pub fn identity_from_pem(
    certificate_pem: &str,
    key_pem: &str,
    cert_name: &str,
    key_name: &str,
) -> Result<SigningIdentity, CredentialsError> {
    let (label, der) = x509_cert::der::pem::decode_vec(certificate_pem.trim().as_bytes())
        .map_err(|_| CredentialsError::new(format!("{cert_name} is not a PEM document")))?;
    if label != "CERTIFICATE" {
        return Err(CredentialsError::new(format!("{cert_name} is a {label} PEM, not a CERTIFICATE")));
    }
    let key = private_key_from_pem(key_pem, key_name)?;
    checked_identity(der, key, cert_name, key_name)
}

/// A private key in PEM: PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1
/// (`EC PRIVATE KEY`); RSA or EC P-256.
/// A seller's secret in the documented format for a simulator or a local run: the KSeF `token`
/// and an Offline certificate made now (a fresh EC P-256 key, self-signed for `nip`, valid a
/// year), so that KOD II can be signed. Never for a real KSeF environment: there the Offline
/// certificate is the one KSeF issued (`/certificates/enrollments`).
pub fn local_secret_with_offline_certificate(nip: &str, token: &str) -> Result<String, CredentialsError> {
    use rsa::pkcs8::EncodePrivateKey;
    let key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let key_pem = key
        .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
        .map_err(|e| CredentialsError::new(format!("the Offline key cannot be written: {e}")))?;
    let identity = crate::xades::SigningIdentity::self_signed(
        &format!("CN=Offline {nip},2.5.4.97=VATPL-{nip},C=PL"),
        SigningKey::EcP256(key),
        std::time::Duration::from_secs(365 * 24 * 3600),
    )
    .map_err(|e| CredentialsError::new(format!("the Offline certificate cannot be made: {e}")))?;
    Ok(serde_json::json!({
        "token": token,
        "offline_certificate_pem": identity.certificate_pem(),
        "offline_private_key_pem": key_pem.as_str(),
    })
    .to_string())
}

pub fn private_key_from_pem(key_pem: &str, key_name: &str) -> Result<SigningKey, CredentialsError> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    let (label, der) = x509_cert::der::pem::decode_vec(key_pem.trim().as_bytes())
        .map_err(|_| CredentialsError::new(format!("{key_name} is not a PEM document")))?;
    let unreadable = |what: &str| CredentialsError::new(format!("{key_name}: {what}"));
    match label {
        "PRIVATE KEY" => private_key_from_pkcs8(&der).ok_or_else(|| unreadable("not an RSA or EC P-256 PKCS#8 private key")),
        "RSA PRIVATE KEY" => rsa::RsaPrivateKey::from_pkcs1_der(&der)
            .map(|k| SigningKey::Rsa(Box::new(k)))
            .map_err(|_| unreadable("not a readable PKCS#1 RSA private key")),
        "EC PRIVATE KEY" => p256::SecretKey::from_sec1_der(&der)
            .map(|k| SigningKey::EcP256(k.into()))
            .map_err(|_| unreadable("not a readable SEC1 EC P-256 private key")),
        "ENCRYPTED PRIVATE KEY" => Err(unreadable(
            "an encrypted PEM key is not supported: store it unencrypted (Secrets Manager encrypts the secret) or as PKCS#12",
        )),
        other => Err(unreadable(&format!("a {other} PEM is not a private key"))),
    }
}

fn private_key_from_pkcs8(der: &[u8]) -> Option<SigningKey> {
    use rsa::pkcs8::DecodePrivateKey;
    if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_der(der) {
        return Some(SigningKey::Rsa(Box::new(k)));
    }
    p256::ecdsa::SigningKey::from_pkcs8_der(der).ok().map(SigningKey::EcP256)
}

/// A PKCS#12 store: its private key and the certificate whose public key is that key's.
pub fn identity_from_pkcs12(der: &[u8], password: &str) -> Result<SigningIdentity, CredentialsError> {
    let archive = p12_keystore::Pkcs12Archive::from_pkcs12(der, password).map_err(|e| {
        let why = match e {
            p12_keystore::error::Error::MacError(_) => "wrong pkcs12_password (or a damaged store)".to_owned(),
            p12_keystore::error::Error::DerError(_) | p12_keystore::error::Error::InvalidVersion => "not a PKCS#12 store".to_owned(),
            // Enum names only: no variant carries input bytes.
            other => format!("unreadable ({other})"),
        };
        CredentialsError::new(format!("pkcs12_base64: {why}"))
    })?;
    let [bag] = archive.keys.as_slice() else {
        return Err(CredentialsError::new(format!(
            "pkcs12_base64 holds {} private keys; it must hold exactly one",
            archive.keys.len()
        )));
    };
    let key = private_key_from_pkcs8(bag.key.as_der())
        .ok_or_else(|| CredentialsError::new("pkcs12_base64: the private key is not RSA or EC P-256"))?;
    let spki = public_key_der(&key).ok_or_else(|| CredentialsError::new("pkcs12_base64: the private key is unusable"))?;
    let cert = archive
        .certs
        .iter()
        .find(|c| certificate_spki(c.cert.as_der()).is_some_and(|s| s == spki))
        .ok_or_else(|| CredentialsError::new("pkcs12_base64 holds no certificate for its private key"))?;
    Ok(SigningIdentity::new(cert.cert.as_der().to_vec(), key))
}

fn public_key_der(key: &SigningKey) -> Option<Vec<u8>> {
    match key {
        SigningKey::Rsa(k) => {
            use rsa::pkcs8::EncodePublicKey;
            k.to_public_key().to_public_key_der().ok().map(|d| d.as_bytes().to_vec())
        }
        SigningKey::EcP256(k) => {
            use p256::pkcs8::EncodePublicKey;
            k.verifying_key().to_public_key_der().ok().map(|d| d.as_bytes().to_vec())
        }
    }
}

fn certificate_spki(der: &[u8]) -> Option<Vec<u8>> {
    x509_cert::Certificate::from_der(der)
        .ok()?
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .ok()
}

fn checked_identity(
    certificate_der: Vec<u8>,
    key: SigningKey,
    cert_name: &str,
    key_name: &str,
) -> Result<SigningIdentity, CredentialsError> {
    let Some(cert_spki) = certificate_spki(&certificate_der) else {
        return Err(CredentialsError::new(format!("{cert_name} is not a readable X.509 certificate")));
    };
    if public_key_der(&key).is_none_or(|k| k != cert_spki) {
        return Err(CredentialsError::new(format!("{key_name} is not the key of {cert_name}")));
    }
    Ok(SigningIdentity::new(certificate_der, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_secret_reads_back_with_its_token_and_an_offline_certificate_for_the_seller() {
        let raw = local_secret_with_offline_certificate("9999999999", "tok-1").unwrap();
        let stored = StoredCredentials::parse(&raw).unwrap();
        assert!(matches!(&stored.login, Login::Token(_)));
        let offline = stored.offline.expect("an Offline certificate");
        let pem = offline.certificate_pem();
        let (_, der) = x509_cert::der::pem::decode_vec(pem.as_bytes()).unwrap();
        let parsed = x509_cert::Certificate::from_der(&der).unwrap();
        assert!(
            parsed.tbs_certificate.subject.to_string().contains("CN=Offline 9999999999"),
            "{}",
            parsed.tbs_certificate.subject
        );
        // Two secrets, two keys.
        assert_ne!(raw, local_secret_with_offline_certificate("9999999999", "tok-1").unwrap());
    }
}
