//! AES-256-CBC with PKCS#7 padding: how KSeF encrypts invoices and batch parts.

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};

type Decryptor = cbc::Decryptor<aes::Aes256>;

/// Decrypts with the session key and IV; None when the padding is wrong (a wrong key or IV).
pub fn decrypt(key: &[u8; 32], iv: &[u8; 16], ciphertext: &[u8]) -> Option<Vec<u8>> {
    Decryptor::new(key.into(), iv.into())
        .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
        .ok()
}
