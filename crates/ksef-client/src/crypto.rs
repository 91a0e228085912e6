//! KSeF's crypto (API-NOTES §2): RSA-OAEP with SHA-256 and MGF1-SHA-256 against a published
//! certificate, and AES-256-CBC with PKCS#7 padding. The IV travels separately, never prefixed.

use aes::cipher::{block_padding::Pkcs7, BlockEncryptMut, KeyIvInit};
use rsa::pkcs8::DecodePublicKey;
use rsa::{Oaep, RsaPublicKey};
use sha2::Sha256;
use x509_cert::der::{Decode, Encode};

use crate::secret::SessionKey;

/// The RSA public key inside a DER certificate, and the DER of its SubjectPublicKeyInfo.
pub fn rsa_key_from_certificate(der: &[u8]) -> Result<(RsaPublicKey, Vec<u8>), String> {
    let cert = x509_cert::Certificate::from_der(der).map_err(|e| format!("certificate is not DER X.509: {e}"))?;
    let spki = cert.tbs_certificate.subject_public_key_info.to_der().map_err(|e| e.to_string())?;
    let key = RsaPublicKey::from_public_key_der(&spki).map_err(|e| format!("certificate key is not RSA: {e}"))?;
    Ok((key, spki))
}

pub fn rsa_oaep_encrypt(key: &RsaPublicKey, plaintext: &[u8]) -> Result<Vec<u8>, String> {
    key.encrypt(&mut rand_core::OsRng, Oaep::new::<Sha256>(), plaintext)
        .map_err(|e| e.to_string())
}

pub fn aes_encrypt(key: &SessionKey, plaintext: &[u8]) -> Vec<u8> {
    cbc::Encryptor::<aes::Aes256>::new(key.key().into(), (&key.iv).into()).encrypt_padded_vec_mut::<Pkcs7>(plaintext)
}

pub(crate) fn wrap_session_key(rsa: &RsaPublicKey, key: &SessionKey) -> Result<Vec<u8>, String> {
    rsa_oaep_encrypt(rsa, key.key())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ciphertext_is_plaintext_plus_padding_and_the_iv_is_not_prefixed() {
        let k = SessionKey::generate();
        // The OpenAPI example: invoiceSize 6480 gives encryptedInvoiceSize 6496.
        assert_eq!(aes_encrypt(&k, &[7u8; 6480]).len(), 6496);
        assert_eq!(aes_encrypt(&k, &[7u8; 6479]).len(), 6480);
        assert_eq!(aes_encrypt(&k, b"").len(), 16);
    }
}
