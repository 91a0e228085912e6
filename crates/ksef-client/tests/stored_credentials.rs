//! The credentials secret, every format: a plain token (the first format), `{"token"}`, a
//! certificate and key as PEM (PKCS#8, PKCS#1, SEC1), PKCS#12 (OpenSSL 3's AES default and the
//! legacy 3DES scheme), an Offline certificate beside the login; and every refusal with a message
//! that names the member at fault and never quotes the secret. The certificates and keys are
//! OpenSSL's (fixtures/README.md), so the parsing is checked against files we did not write.

mod common;

use base64::Engine as _;
use chrono::{TimeZone, Utc};
use ksef_client::stored_credentials::{token_logins_end, Login};
use ksef_client::{CredentialKind, Credentials, KsefClient, StoredCredentials};
use relay_domain::Nip;

const EC_CERT: &str = include_str!("fixtures/openssl-ec-cert.pem");
const EC_KEY: &str = include_str!("fixtures/openssl-ec-key.pem");
const EC_KEY_SEC1: &str = include_str!("fixtures/openssl-ec-key-sec1.pem");
const RSA_CERT: &str = include_str!("fixtures/openssl-rsa-cert.pem");
const RSA_KEY: &str = include_str!("fixtures/xades-test-rsa-key.pem");
const RSA_KEY_PKCS1: &str = include_str!("fixtures/openssl-rsa-key-pkcs1.pem");
const EC_P12: &[u8] = include_bytes!("fixtures/openssl-ec.p12");
const RSA_P12_3DES: &[u8] = include_bytes!("fixtures/openssl-rsa-3des.p12");

fn json(members: &[(&str, &str)]) -> String {
    serde_json::Value::Object(members.iter().map(|(k, v)| ((*k).to_owned(), (*v).into())).collect()).to_string()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn token_of(c: &StoredCredentials) -> String {
    match &c.login {
        Login::Token(t) => t.expose_secret().to_owned(),
        Login::Certificate { .. } => panic!("a certificate login, not a token"),
    }
}

fn the_fixtures_not_after() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2126, 10, 29, 0, 39, 21).unwrap()
}

#[test]
fn a_plain_string_is_a_token_as_before() {
    let c = StoredCredentials::parse("  20251101-EC-0000|nip-9999999999|secret\n").unwrap();
    assert_eq!(token_of(&c), "20251101-EC-0000|nip-9999999999|secret");
    let facts = c.facts();
    assert_eq!(facts.kind, CredentialKind::Token);
    assert_eq!(facts.not_after, token_logins_end());
    assert_eq!(facts.not_after.to_rfc3339(), "2026-12-31T23:00:00+00:00");
    assert_eq!(facts.days_left(Utc.with_ymd_and_hms(2026, 12, 1, 23, 0, 0).unwrap()), 30);
}

#[test]
fn a_json_token() {
    let c = StoredCredentials::parse(&json(&[("token", "tok-1")])).unwrap();
    assert_eq!(token_of(&c), "tok-1");
    assert!(matches!(
        c.credentials(Nip::parse("9999999999").unwrap()),
        Credentials::Token { .. }
    ));
}

#[test]
fn pem_certificates_with_pkcs8_pkcs1_and_sec1_keys() {
    for (cert, key, key_type) in [
        (EC_CERT, EC_KEY, "EC P-256"),
        (EC_CERT, EC_KEY_SEC1, "EC P-256"),
        (RSA_CERT, RSA_KEY, "RSA-2048"),
        (RSA_CERT, RSA_KEY_PKCS1, "RSA-2048"),
    ] {
        let c = StoredCredentials::parse(&json(&[("certificate_pem", cert), ("private_key_pem", key)])).unwrap();
        let facts = c.facts();
        assert_eq!(facts.kind, CredentialKind::Certificate);
        assert_eq!(facts.key_type.as_deref(), Some(key_type));
        assert_eq!(facts.not_after, the_fixtures_not_after());
        assert!(
            facts.subject.as_deref().is_some_and(|s| s.contains("CN=ksef-relay test seal")),
            "{facts:?}"
        );
        assert_eq!(facts.fingerprint.as_ref().map(String::len), Some(64));
        assert!(matches!(
            c.credentials(Nip::parse("9999999999").unwrap()),
            Credentials::Certificate { .. }
        ));
    }
}

#[test]
fn pkcs12_stores_aes_and_legacy_3des() {
    for (store, key_type) in [(EC_P12, "EC P-256"), (RSA_P12_3DES, "RSA-2048")] {
        let c = StoredCredentials::parse(&json(&[("pkcs12_base64", &b64(store)), ("pkcs12_password", "test-password")])).unwrap();
        let facts = c.facts();
        assert_eq!(facts.kind, CredentialKind::Certificate);
        assert_eq!(facts.key_type.as_deref(), Some(key_type));
        assert_eq!(facts.not_after, the_fixtures_not_after());
    }
    // Base64 wrapped over lines, as `base64` writes it, is fine.
    let wrapped: String = b64(EC_P12)
        .as_bytes()
        .chunks(76)
        .map(|l| std::str::from_utf8(l).unwrap().to_owned() + "\n")
        .collect();
    StoredCredentials::parse(&json(&[("pkcs12_base64", &wrapped), ("pkcs12_password", "test-password")])).unwrap();
}

#[test]
fn a_certificate_beside_a_token_logs_in_and_the_offline_certificate_is_kept_apart() {
    let c = StoredCredentials::parse(&json(&[
        ("token", "tok-1"),
        ("certificate_pem", RSA_CERT),
        ("private_key_pem", RSA_KEY),
        ("offline_certificate_pem", EC_CERT),
        ("offline_private_key_pem", EC_KEY),
        ("subject_identifier", "certificateFingerprint"),
    ]))
    .unwrap();
    let facts = c.facts();
    assert_eq!(facts.kind, CredentialKind::Certificate);
    assert_eq!(facts.key_type.as_deref(), Some("RSA-2048"));
    assert_eq!(facts.offline_not_after, Some(the_fixtures_not_after()));
    assert_eq!(c.offline.as_ref().map(|o| o.key_type()).as_deref(), Some("EC P-256"));
    assert!(matches!(
        c.credentials(Nip::parse("9999999999").unwrap()),
        Credentials::Certificate {
            subject: ksef_client::SubjectIdentifierType::CertificateFingerprint,
            ..
        }
    ));
}

/// Each refusal: the message names what is wrong and quotes nothing of the secret.
#[test]
fn every_refusal_names_the_member_and_never_the_secret() {
    const MARK: &str = "S3CRETMARK";
    let p12 = b64(EC_P12);
    let cases: Vec<(String, &str)> = vec![
        ("   ".into(), "the secret is empty"),
        (EC_CERT.into(), "bare PEM"),
        (format!("{{\"token\": \"{MARK}\""), "not valid JSON (line 1"),
        (format!("[\"{MARK}\"]"), "not a JSON object"),
        (json(&[("tokn", MARK)]), "unknown member \"tokn\""),
        (format!("{{\"token\": [\"{MARK}\"]}}"), "token must be a string"),
        (json(&[("token", "")]), "token is empty"),
        (json(&[("pkcs12_password", MARK)]), "pkcs12_password needs pkcs12_base64"),
        (json(&[("certificate_pem", EC_CERT)]), "certificate_pem needs private_key_pem"),
        (json(&[("private_key_pem", EC_KEY)]), "private_key_pem needs certificate_pem"),
        (
            json(&[("certificate_pem", MARK), ("private_key_pem", EC_KEY)]),
            "certificate_pem is not a PEM document",
        ),
        (
            json(&[("certificate_pem", EC_KEY), ("private_key_pem", EC_KEY)]),
            "certificate_pem is a PRIVATE KEY PEM",
        ),
        (
            json(&[("certificate_pem", EC_CERT), ("private_key_pem", MARK)]),
            "private_key_pem is not a PEM document",
        ),
        (
            json(&[("certificate_pem", EC_CERT), ("private_key_pem", RSA_KEY)]),
            "private_key_pem is not the key of certificate_pem",
        ),
        (
            json(&[("certificate_pem", EC_CERT), ("private_key_pem", EC_CERT)]),
            "a CERTIFICATE PEM is not a private key",
        ),
        (
            json(&[
                ("certificate_pem", EC_CERT),
                (
                    "private_key_pem",
                    "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
                ),
            ]),
            "an encrypted PEM key is not supported",
        ),
        (
            json(&[("pkcs12_base64", &format!("{MARK}!!")), ("pkcs12_password", "x")]),
            "pkcs12_base64 is not valid base64",
        ),
        (json(&[("pkcs12_base64", &p12), ("pkcs12_password", MARK)]), "wrong pkcs12_password"),
        (
            json(&[("pkcs12_base64", &b64(b"not a store at all")), ("pkcs12_password", MARK)]),
            "not a PKCS#12 store",
        ),
        (
            json(&[
                ("pkcs12_base64", &p12),
                ("pkcs12_password", "test-password"),
                ("certificate_pem", EC_CERT),
                ("private_key_pem", EC_KEY),
            ]),
            "both certificate_pem and pkcs12_base64",
        ),
        (json(&[("subject_identifier", MARK), ("token", "t")]), "subject_identifier must be"),
        (json(&[("offline_certificate_pem", EC_CERT), ("token", "t")]), "go together"),
        (json(&[("subject_identifier", "certificateSubject")]), "the secret has no login"),
    ];
    for (secret, expected) in cases {
        let err = StoredCredentials::parse(&secret).expect_err(expected).to_string();
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        assert!(!err.contains(MARK), "the secret leaked into {err:?}");
        assert!(!err.contains("BEGIN"), "a PEM leaked into {err:?}");
    }
}

/// The parsed identities sign logins the simulator verifies (RSA from a legacy PKCS#12, EC
/// from PEM with a SEC1 key).
#[tokio::test]
async fn parsed_certificates_log_in_to_the_simulator() {
    let sim = common::sim().await;
    let nip = Nip::parse("9999999999").unwrap();
    for secret in [
        json(&[("pkcs12_base64", &b64(RSA_P12_3DES)), ("pkcs12_password", "test-password")]),
        json(&[("certificate_pem", EC_CERT), ("private_key_pem", EC_KEY_SEC1)]),
    ] {
        let creds = StoredCredentials::parse(&secret).unwrap().credentials(nip.clone());
        let client = KsefClient::new(common::client_config(&sim), Some(creds)).unwrap();
        client.authenticate().await.unwrap();
    }
}

/// The fixture EC key's certificate for 9999999999 with only this keyUsage, as PEM.
fn ec_certificate_with(usage: x509_cert::ext::pkix::KeyUsages) -> String {
    use std::str::FromStr;
    use x509_cert::builder::{Builder, CertificateBuilder, Profile};
    use x509_cert::der::Encode;
    use x509_cert::spki::SubjectPublicKeyInfoOwned;
    let ksef_client::SigningKey::EcP256(key) = ksef_client::stored_credentials::private_key_from_pem(EC_KEY, "key").unwrap() else {
        panic!("an EC key")
    };
    let now = std::time::SystemTime::now();
    let validity = x509_cert::time::Validity {
        not_before: x509_cert::time::Time::try_from(now - std::time::Duration::from_secs(3600)).unwrap(),
        not_after: x509_cert::time::Time::try_from(now + std::time::Duration::from_secs(86_400)).unwrap(),
    };
    let spki = {
        use p256::pkcs8::EncodePublicKey;
        SubjectPublicKeyInfoOwned::try_from(key.verifying_key().to_public_key_der().unwrap().as_bytes()).unwrap()
    };
    let subject = x509_cert::name::Name::from_str("CN=Seller,2.5.4.97=VATPL-9999999999,C=PL").unwrap();
    let serial = x509_cert::serial_number::SerialNumber::new(&[0x42]).unwrap();
    let mut b = CertificateBuilder::new(Profile::Manual { issuer: None }, serial, validity, subject, spki, &key).unwrap();
    b.add_extension(&x509_cert::ext::pkix::KeyUsage(usage.into())).unwrap();
    let der = b.build::<p256::ecdsa::DerSignature>().unwrap().to_der().unwrap();
    ksef_client::SigningIdentity::new(der, ksef_client::SigningKey::EcP256(key)).certificate_pem()
}

/// An Offline certificate put where the login certificate goes is refused when the secret is
/// read (it could only be refused by KSeF later), with where it belongs; as the Offline
/// certificate it is kept; an Authentication one logs in.
#[test]
fn an_offline_certificate_is_not_a_login() {
    use x509_cert::ext::pkix::KeyUsages;
    let offline = ec_certificate_with(KeyUsages::NonRepudiation);
    let e = StoredCredentials::parse(&json(&[("certificate_pem", &offline), ("private_key_pem", EC_KEY)])).unwrap_err();
    assert!(
        e.to_string().contains("Offline certificate") && e.to_string().contains("offline_certificate_pem"),
        "{e}"
    );
    let authentication = ec_certificate_with(KeyUsages::DigitalSignature);
    let ok = StoredCredentials::parse(&json(&[
        ("certificate_pem", &authentication),
        ("private_key_pem", EC_KEY),
        ("offline_certificate_pem", &offline),
        ("offline_private_key_pem", EC_KEY),
    ]))
    .unwrap();
    assert!(matches!(ok.login, Login::Certificate { .. }));
    assert!(ok.offline.is_some());
}
