//! Sellers with KSeF certificates for the deployed-template tests: self-signed certificates for
//! the fixtures' RSA and EC keys, the secret format the functions read, sample 1 as a seller's
//! invoice, and the EMF lines the functions write, kept for a test.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use ksef_client::stored_credentials::private_key_from_pem;
use ksef_client::SigningIdentity;
use relay_domain::{DocumentKey, InvoiceKind, InvoiceNumber, Nip};
use serde_json::Value;

pub const SAMPLE_1: &[u8] = include_bytes!("../../data/ksef/samples/FA_3_Przykład_1.xml");
pub const RSA_KEY: &str = include_str!("../../crates/ksef-client/tests/fixtures/xades-test-rsa-key.pem");
pub const EC_KEY: &str = include_str!("../../crates/ksef-client/tests/fixtures/openssl-ec-key.pem");
/// The seller of sample 1 (its certificate uses the RSA key in these tests).
pub const RSA_SELLER: &str = "9999999999";
pub const EC_SELLER: &str = "5265877635";

/// EMF lines, as the functions write them (stdout in Lambda), kept for the test.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    pub fn lines(&self) -> Vec<Value> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// A self-signed certificate of `nip` (its VATPL organisation identifier) for `key_pem`.
pub fn certificate(nip: &str, key_pem: &str, not_before: SystemTime, not_after: SystemTime) -> SigningIdentity {
    let key = private_key_from_pem(key_pem, "the key").unwrap();
    SigningIdentity::self_signed_between(&format!("CN=Seller {nip},2.5.4.97=VATPL-{nip},C=PL"), key, not_before, not_after).unwrap()
}

/// A seller's secret in the documented format, for a certificate and its key.
pub fn secret(identity: &SigningIdentity, key_pem: &str) -> String {
    serde_json::json!({"certificate_pem": identity.certificate_pem(), "private_key_pem": key_pem}).to_string()
}

/// Sample 1 as `nip`'s invoice number `number`.
pub fn invoice(nip: &str, number: &str) -> Vec<u8> {
    String::from_utf8(SAMPLE_1.to_vec())
        .unwrap()
        .replacen(&format!("<NIP>{RSA_SELLER}</NIP>"), &format!("<NIP>{nip}</NIP>"), 1)
        .replace("FV2026/02/150", number)
        .into_bytes()
}

/// The document key of `nip`'s VAT invoice `number`.
pub fn key(nip: &str, number: &str) -> DocumentKey {
    DocumentKey::new(Nip::parse(nip).unwrap(), InvoiceKind::Vat, InvoiceNumber::parse(number).unwrap())
}
