//! The two QR codes of an offline invoice (`qr_codes::write_offline_codes`), signed with the
//! Offline certificate read from the seller's credentials secret (EC P-256 and RSA-2048, both as
//! openssl writes them): KOD I labelled OFFLINE, KOD II labelled CERTYFIKAT whose signature
//! verifies with the certificate, kept as first made when written again; a secret without an
//! Offline certificate is the operator's problem and writes nothing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::{client_config, invoice, world, World};
use relay_domain::memory::MemoryArchive;
use relay_domain::ports::{Archive, DocumentRegistry};
use relay_domain::{ContentHash, ErrorClass};
use relay_pipeline::credentials::MemoryCredentials;
use relay_pipeline::qr_codes::write_offline_codes;
use relay_pipeline::sessions::{KsefContexts, OFFLINE_CERTIFICATE_MISSING};

const EC_CERT: &str = include_str!("../../ksef-client/tests/fixtures/openssl-ec-cert.pem");
const EC_KEY: &str = include_str!("../../ksef-client/tests/fixtures/openssl-ec-key.pem");
const RSA_CERT: &str = include_str!("../../ksef-client/tests/fixtures/openssl-rsa-cert.pem");
const RSA_KEY: &str = include_str!("../../ksef-client/tests/fixtures/openssl-rsa-key-pkcs1.pem");

fn certificate_der(cert: &str, key: &str) -> Vec<u8> {
    ksef_client::stored_credentials::identity_from_pem(cert, key, "certificate", "key")
        .unwrap()
        .certificate_der
}

fn contexts(w: &World, secret: serde_json::Value) -> KsefContexts {
    let secrets = Arc::new(MemoryCredentials::new().with(World::nip(), secret.to_string()));
    KsefContexts::new().with_credentials(secrets, client_config(&w.sim), Duration::from_secs(900))
}

#[tokio::test]
async fn an_offline_invoice_gets_kod_i_offline_and_kod_ii_signed_with_the_sellers_offline_certificate() {
    let w = world(10).await;
    let bytes = invoice("OFF/1");
    let req = w.register(&bytes).await;
    let r = w.store.get(&req.document).await.unwrap().unwrap().record;
    let hash = ContentHash::of(&bytes)
        .to_base64()
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_");
    // Serials as openssl prints them (`openssl x509 -noout -serial`).
    for (cert, key, serial) in [
        (EC_CERT, EC_KEY, "6A8F130B3F173128F3873EEA9CD0F3E5484685A8"),
        (RSA_CERT, RSA_KEY, "0C25010505C8C1A50CF3136301DD152C03DB53C4"),
    ] {
        let ksef = contexts(
            &w,
            serde_json::json!({"token": ksef_sim::DEFAULT_TOKEN, "offline_certificate_pem": cert, "offline_private_key_pem": key}),
        );
        let archive = MemoryArchive::new();
        let codes = write_offline_codes(&archive, &ksef, &r, Utc::now()).await.unwrap().unwrap();

        // KOD I: the sample's P_1 (2026-02-15), the exact bytes' hash, labelled OFFLINE.
        assert_eq!(
            codes.invoice_url,
            format!("https://qr-test.ksef.mf.gov.pl/invoice/9999999999/15-02-2026/{hash}")
        );
        assert_eq!(
            codes.invoice.png,
            format!("qr/9999999999/offline/{}-kod1.png", r.content_hash.to_hex())
        );
        let svg = String::from_utf8(archive.get(&codes.invoice.svg).await.unwrap().unwrap().bytes).unwrap();
        assert!(svg.contains(">OFFLINE</text>"), "{svg}");

        // KOD II: the seller's context, the certificate's serial, the hash, and a signature that
        // verifies with the certificate's public key.
        let prefix = format!("https://qr-test.ksef.mf.gov.pl/certificate/Nip/9999999999/9999999999/{serial}/{hash}/");
        assert!(codes.certificate_url.starts_with(&prefix), "{}", codes.certificate_url);
        assert_eq!(
            ksef_client::qr::verify_certificate_link(&codes.certificate_url, &certificate_der(cert, key)),
            Ok(())
        );
        let png = archive.get(&codes.certificate.png).await.unwrap().unwrap();
        assert_eq!(png.metadata.get("qr-url"), Some(&codes.certificate_url));
        let svg = String::from_utf8(archive.get(&codes.certificate.svg).await.unwrap().unwrap().bytes).unwrap();
        assert!(svg.contains(">CERTYFIKAT</text>"), "{svg}");
        assert!(svg.contains(&format!("<title>{}</title>", codes.certificate_url)));

        // Written again (a redelivery): the KOD II first made stays, PNG and SVG alike, even
        // though an RSA signature made again would differ.
        let again = write_offline_codes(&archive, &ksef, &r, Utc::now()).await.unwrap().unwrap();
        assert_eq!(again, codes);
        assert_eq!(archive.get(&codes.certificate.png).await.unwrap().unwrap().bytes, png.bytes);
    }
}

#[tokio::test]
async fn a_secret_without_an_offline_certificate_is_the_operators_problem_and_writes_nothing() {
    let w = world(10).await;
    let req = w.register(&invoice("OFF/2")).await;
    let r = w.store.get(&req.document).await.unwrap().unwrap().record;
    let ksef = contexts(&w, serde_json::json!({"token": ksef_sim::DEFAULT_TOKEN}));
    let archive = MemoryArchive::new();
    let f = write_offline_codes(&archive, &ksef, &r, Utc::now()).await.unwrap().unwrap_err();
    assert_eq!(f.class, ErrorClass::Operator);
    assert_eq!(f.code.as_deref(), Some(OFFLINE_CERTIFICATE_MISSING));
    assert!(f.message.contains("offline_certificate_pem"), "{}", f.message);
    let (kod1, kod2) = relay_domain::storage_keys::qr_offline_keys(&r.key.seller_nip, &r.content_hash);
    for key in [kod1.png, kod1.svg, kod2.png, kod2.svg] {
        assert!(archive.get(&key).await.unwrap().is_none(), "{key}");
    }
}
