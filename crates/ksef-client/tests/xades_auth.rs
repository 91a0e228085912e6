//! Certificate authentication end to end: the client signs an AuthTokenRequest with XAdES-BES
//! (EC P-256 and RSA-2048), the simulator verifies the signature and the certificate's right
//! to the context, and the session works. Tampered and unsigned requests are refused.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::*;
use ksef_client::failure_map::InvoiceOutcome;
use ksef_client::xades::{auth_token_request, sign_enveloped};
use ksef_client::{Credentials, KsefClient, SendOptions, SigningIdentity, SigningKey, SubjectIdentifierType};
use relay_domain::{ErrorClass, Nip};

fn ec_identity(subject: &str) -> SigningIdentity {
    let key = SigningKey::EcP256(p256::ecdsa::SigningKey::random(&mut rand_core::OsRng));
    SigningIdentity::self_signed(subject, key, Duration::from_secs(3600)).unwrap()
}

fn rsa_identity(subject: &str) -> SigningIdentity {
    use rsa::pkcs8::DecodePrivateKey;
    // A fixed test key: generating RSA-2048 in a debug build takes seconds.
    let pem = include_str!("fixtures/xades-test-rsa-key.pem");
    let key = SigningKey::Rsa(Box::new(rsa::RsaPrivateKey::from_pkcs8_pem(pem).unwrap()));
    SigningIdentity::self_signed(subject, key, Duration::from_secs(3600)).unwrap()
}

fn nip() -> Nip {
    Nip::parse("9999999999").unwrap()
}

async fn send_one(c: &KsefClient, number: &str) {
    let s = c.open_online_session().await.unwrap();
    let sent = c.send_invoice(&s, &invoice(number), &SendOptions::default()).await.unwrap();
    let (_, o) = c.wait_for_invoice(&s.reference, &sent.reference, POLL, WAIT).await.unwrap();
    assert!(matches!(o, InvoiceOutcome::Accepted { .. }), "{o:?}");
}

#[tokio::test]
async fn ec_p256_and_rsa_2048_certificates_log_in_and_send() {
    let sim = sim().await;
    for (i, identity) in [
        ec_identity("CN=Relay EC,2.5.4.97=VATPL-9999999999,C=PL"),
        rsa_identity("CN=Relay RSA,2.5.4.97=VATPL-9999999999,C=PL"),
    ]
    .into_iter()
    .enumerate()
    {
        let creds = Credentials::Certificate {
            context: nip(),
            identity,
            subject: SubjectIdentifierType::CertificateSubject,
        };
        let c = KsefClient::new(client_config(&sim), Some(creds)).unwrap();
        let t = c.authenticate().await.unwrap();
        assert_eq!(t.auth_reference.len(), 36);
        send_one(&c, &format!("XADES/{i}")).await;
    }
    assert_eq!(sim.ledger().len(), 2);
}

#[tokio::test]
async fn a_certificate_without_rights_to_the_context_is_refused_with_415_an_operators_problem() {
    let sim = sim().await;
    let creds = Credentials::Certificate {
        context: nip(),
        identity: ec_identity("CN=Stranger,2.5.4.97=VATPL-5265877635,C=PL"),
        subject: SubjectIdentifierType::CertificateSubject,
    };
    let c = KsefClient::new(client_config(&sim), Some(creds)).unwrap();
    let f = c.authenticate().await.unwrap_err();
    assert_eq!((f.class, f.code.as_deref()), (ErrorClass::Operator, Some("415")));
}

#[tokio::test]
async fn tampered_or_unsigned_requests_are_refused() {
    let sim = sim().await;
    let c = client(&sim);
    let identity = ec_identity("CN=Relay,2.5.4.97=VATPL-9999999999,C=PL");
    let post = |body: String| {
        let url = format!("{}/auth/xades-signature", sim.api_url());
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .header("content-type", "application/xml")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let bytes = r.bytes().await.unwrap();
            (
                status,
                ksef_client::failure_map::from_response("auth_xades_signature", status, None, &bytes, Utc::now()),
            )
        }
    };
    // The signed NIP changed after signing: the document digest no longer matches.
    let ch = c.challenge().await.unwrap();
    let signed = sign_enveloped(
        &auth_token_request(&ch.challenge, &nip(), SubjectIdentifierType::CertificateSubject),
        &identity,
        Utc::now(),
    )
    .unwrap();
    let (status, f) = post(signed.replace("<Nip>9999999999</Nip>", "<Nip>5265877635</Nip>")).await;
    assert_eq!(status, 400);
    assert_eq!((f.class.clone(), f.code.as_deref()), (ErrorClass::Operator, Some("9105")));
    assert!(f.details[0].contains("digest"), "{f}");
    // The signature value changed: the signature no longer verifies.
    let sv = signed.find("<ds:SignatureValue>").unwrap() + "<ds:SignatureValue>".len();
    let mut bytes = signed.clone().into_bytes();
    bytes[sv + 3] = if bytes[sv + 3] == b'A' { b'B' } else { b'A' };
    let (_, f) = post(String::from_utf8(bytes).unwrap()).await;
    assert_eq!(f.code.as_deref(), Some("9105"), "{f}");
    // No signature at all.
    let (_, f) = post(auth_token_request(&ch.challenge, &nip(), SubjectIdentifierType::CertificateSubject)).await;
    assert_eq!(f.code.as_deref(), Some("9102"), "{f}");
    // The untouched request passes, once; the challenge cannot be used twice.
    let (status, _) = post(signed.clone()).await;
    assert_eq!(status, 202);
    let (_, f) = post(signed).await;
    assert_eq!((f.class, f.code.as_deref()), (ErrorClass::NeedsReauth, Some("21111")));
}

#[tokio::test]
async fn certificates_made_by_openssl_log_in_too() {
    let sim = sim().await;
    for (cert, key) in [
        (
            include_str!("fixtures/openssl-ec-cert.pem"),
            include_str!("fixtures/openssl-ec-key.pem"),
        ),
        (
            include_str!("fixtures/openssl-rsa-cert.pem"),
            include_str!("fixtures/xades-test-rsa-key.pem"),
        ),
    ] {
        let identity = SigningIdentity::from_pem(cert, key).unwrap();
        let creds = Credentials::Certificate {
            context: nip(),
            identity,
            subject: SubjectIdentifierType::CertificateSubject,
        };
        KsefClient::new(client_config(&sim), Some(creds))
            .unwrap()
            .authenticate()
            .await
            .unwrap();
    }
}

/// KSeF refuses a certificate outside its validity (21115, before any auth operation starts)
/// and a revoked one (auth status 460): both an operator's problem, never the invoice's.
#[tokio::test]
async fn an_expired_or_revoked_certificate_is_refused_an_operators_problem() {
    let sim = sim().await;
    let subject = "CN=Relay,2.5.4.97=VATPL-9999999999,C=PL";
    let now = std::time::SystemTime::now();
    let day = Duration::from_secs(86_400);
    let key = || SigningKey::EcP256(p256::ecdsa::SigningKey::random(&mut rand_core::OsRng));
    let login = |identity: SigningIdentity| {
        let creds = Credentials::Certificate {
            context: nip(),
            identity,
            subject: SubjectIdentifierType::CertificateSubject,
        };
        let c = KsefClient::new(client_config(&sim), Some(creds)).unwrap();
        async move { c.authenticate().await }
    };
    for (what, not_before, not_after) in [("expired", now - 30 * day, now - day), ("not yet valid", now + day, now + 30 * day)] {
        let identity = SigningIdentity::self_signed_between(subject, key(), not_before, not_after).unwrap();
        let f = login(identity).await.unwrap_err();
        assert_eq!(
            (f.class.clone(), f.code.as_deref()),
            (ErrorClass::Operator, Some("21115")),
            "{what}: {f}"
        );
        assert!(f.details.iter().any(|d| d.contains("not valid now")), "{what}: {f}");
    }
    // Valid, then revoked in KSeF: the next login ends 460.
    let identity = SigningIdentity::self_signed_between(subject, key(), now - day, now + 30 * day).unwrap();
    login(identity.clone()).await.expect("valid: logs in");
    sim.revoke_certificate(&identity.fingerprint_hex());
    let f = login(identity.clone()).await.unwrap_err();
    assert_eq!((f.class.clone(), f.code.as_deref()), (ErrorClass::Operator, Some("460")), "{f}");
    let logins: Vec<(String, i32)> = sim.certificate_logins().into_iter().map(|l| (l.fingerprint, l.status)).collect();
    assert_eq!(
        logins,
        [(identity.fingerprint_hex(), 200), (identity.fingerprint_hex(), 460)],
        "the expired ones never started an auth operation"
    );
}

/// A certificate with this keyUsage, self-signed with a fresh EC P-256 key.
fn with_key_usage(subject: &str, usage: x509_cert::ext::pkix::KeyUsages) -> SigningIdentity {
    use std::str::FromStr;
    use x509_cert::builder::{Builder, CertificateBuilder, Profile};
    use x509_cert::der::Encode;
    use x509_cert::spki::SubjectPublicKeyInfoOwned;
    let key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let now = std::time::SystemTime::now();
    let validity = x509_cert::time::Validity {
        not_before: x509_cert::time::Time::try_from(now - Duration::from_secs(3600)).unwrap(),
        not_after: x509_cert::time::Time::try_from(now + Duration::from_secs(86_400)).unwrap(),
    };
    let spki = {
        use p256::pkcs8::EncodePublicKey;
        SubjectPublicKeyInfoOwned::try_from(key.verifying_key().to_public_key_der().unwrap().as_bytes()).unwrap()
    };
    let mut b = CertificateBuilder::new(
        // No extensions of the builder's own: the keyUsage is the one added below.
        Profile::Manual { issuer: None },
        x509_cert::serial_number::SerialNumber::new(&[0x11, 0x22, 0x33]).unwrap(),
        validity,
        x509_cert::name::Name::from_str(subject).unwrap(),
        spki,
        &key,
    )
    .unwrap();
    b.add_extension(&x509_cert::ext::pkix::KeyUsage(usage.into())).unwrap();
    let der = b.build::<p256::ecdsa::DerSignature>().unwrap().to_der().unwrap();
    SigningIdentity::new(der, SigningKey::EcP256(key))
}

/// An Offline-type KSeF certificate (keyUsage nonRepudiation: it signs KOD II) cannot log in;
/// an Authentication one (digitalSignature) can.
#[tokio::test]
async fn an_offline_certificate_cannot_log_in() {
    use x509_cert::ext::pkix::KeyUsages;
    let sim = sim().await;
    let subject = "CN=Relay,2.5.4.97=VATPL-9999999999,C=PL";
    let login = |identity: SigningIdentity| {
        let creds = Credentials::Certificate {
            context: nip(),
            identity,
            subject: SubjectIdentifierType::CertificateSubject,
        };
        let c = KsefClient::new(client_config(&sim), Some(creds)).unwrap();
        async move { c.authenticate().await }
    };
    let f = login(with_key_usage(subject, KeyUsages::NonRepudiation)).await.unwrap_err();
    assert_eq!((f.class.clone(), f.code.as_deref()), (ErrorClass::Operator, Some("21115")), "{f}");
    assert!(f.details.iter().any(|d| d.contains("Offline")), "{f}");
    login(with_key_usage(subject, KeyUsages::DigitalSignature))
        .await
        .expect("an Authentication certificate logs in");
}
