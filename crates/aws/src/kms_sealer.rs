//! The [`SecretSealer`] on KMS, by envelope encryption: each seal asks KMS for a fresh AES-256
//! data key (`GenerateDataKey`), seals the value with it in AES-256-GCM and keeps only the data
//! key as KMS encrypted it; opening asks KMS to decrypt that data key (`Decrypt`, named key
//! only). KMS takes at most 4 KiB in a direct Encrypt, and two KSeF JWTs may come near that;
//! an envelope has no such limit. The entry name is both KMS's encryption context and the GCM
//! associated data, so a value copied to another entry does not open. Who may seal or open is
//! the key's business: in the template only the functions that call KSeF may use it.
//!
//! Sealed form: `kms1:{data key ciphertext}:{nonce}:{ciphertext}`, each part base64.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use async_trait::async_trait;
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use relay_domain::ports::{SealError, SecretSealer};

const FORMAT: &str = "kms1";
/// The encryption context's key; its value is the cache entry's name.
const CONTEXT: &str = "ksef-relay-cache";

/// Seals with the KMS key `key_id` (an id, ARN or alias).
#[derive(Debug, Clone)]
pub struct KmsSealer {
    client: aws_sdk_kms::Client,
    key_id: String,
}

impl KmsSealer {
    pub fn new(client: aws_sdk_kms::Client, key_id: impl Into<String>) -> Self {
        KmsSealer {
            client,
            key_id: key_id.into(),
        }
    }
}

/// A KMS failure in the taxonomy: what the key refuses is an operator's, what cannot be opened
/// with it counts as absent, the rest is transient.
fn kms_error<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(what: &str, e: SdkError<E, R>) -> SealError {
    let code = e.as_service_error().and_then(|s| s.code()).map(str::to_owned);
    let text = format!("KMS {what}: {}", DisplayErrorContext(&e));
    match code.as_deref() {
        Some("InvalidCiphertextException" | "IncorrectKeyException") => SealError::Unreadable(text),
        Some(
            "AccessDeniedException"
            | "NotFoundException"
            | "DisabledException"
            | "KMSInvalidStateException"
            | "InvalidKeyUsageException"
            | "KeyUnavailableException"
            | "InvalidGrantTokenException",
        ) => SealError::Refused(text),
        _ => SealError::Unavailable(text),
    }
}

fn cipher(key: &[u8]) -> Result<Aes256Gcm, SealError> {
    Aes256Gcm::new_from_slice(key).map_err(|_| SealError::Unavailable(format!("KMS gave a data key of {} bytes, not 32", key.len())))
}

#[async_trait]
impl SecretSealer for KmsSealer {
    async fn seal(&self, name: &str, plain: &str) -> Result<String, SealError> {
        let out = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context(CONTEXT, name)
            .send()
            .await
            .map_err(|e| kms_error("GenerateDataKey", e))?;
        let (Some(key), Some(wrapped)) = (out.plaintext(), out.ciphertext_blob()) else {
            return Err(SealError::Unavailable("KMS GenerateDataKey returned no key".into()));
        };
        let nonce: [u8; 12] = rand::random();
        let sealed = cipher(key.as_ref())?
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| SealError::Unavailable("AES-GCM refused to seal".into()))?;
        Ok(format!(
            "{FORMAT}:{}:{}:{}",
            B64.encode(wrapped.as_ref()),
            B64.encode(nonce),
            B64.encode(sealed)
        ))
    }

    async fn open(&self, name: &str, sealed: &str) -> Result<String, SealError> {
        let unreadable = |why: &str| SealError::Unreadable(format!("cache entry {name}: {why}"));
        let parts: Vec<&str> = sealed.split(':').collect();
        let [FORMAT, wrapped, nonce, body] = parts[..] else {
            return Err(unreadable("not a kms1 sealed value"));
        };
        let decode = |s: &str| B64.decode(s).map_err(|_| unreadable("not base64"));
        let (wrapped, nonce, body) = (decode(wrapped)?, decode(nonce)?, decode(body)?);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| unreadable("the nonce is not 12 bytes"))?;
        let out = self
            .client
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(wrapped))
            .encryption_context(CONTEXT, name)
            .send()
            .await
            .map_err(|e| kms_error("Decrypt", e))?;
        let key = out.plaintext().ok_or_else(|| unreadable("KMS returned no data key"))?;
        let plain = cipher(key.as_ref())?
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &body,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| unreadable("it does not open with its data key (damaged, or sealed for another entry)"))?;
        String::from_utf8(plain).map_err(|_| unreadable("not UTF-8"))
    }
}
