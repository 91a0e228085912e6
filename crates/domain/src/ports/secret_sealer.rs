//! Sealing the secrets the shared cache holds (KSeF access and refresh tokens, an open
//! session's AES key): the cache lives in the documents table, which functions that never call
//! KSeF (intake parses untrusted XML, report renders pages) can read, so a secret goes in only
//! sealed with a key those functions cannot use (KMS in AWS: `relay_aws::kms_sealer`).
//!
//! `name` is the cache entry's name and is bound into the seal, so a sealed value copied to
//! another entry (another seller's) does not open there.

use async_trait::async_trait;

use crate::ErrorClass;

/// Why sealing or opening failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The key service did not answer (throttled, unreachable): try again.
    #[error("the key service is unavailable: {0}")]
    Unavailable(String),
    /// The key cannot be used by us: access denied, disabled, deleted, not found. An operator's.
    #[error("the sealing key refused: {0}")]
    Refused(String),
    /// The value was not sealed by this key for this name, or is damaged (for example the key
    /// was replaced since it was written): the entry counts as absent.
    #[error("the sealed value cannot be opened: {0}")]
    Unreadable(String),
}

impl SealError {
    pub fn class(&self) -> ErrorClass {
        match self {
            SealError::Unavailable(_) => ErrorClass::Transient,
            SealError::Refused(_) => ErrorClass::Operator,
            SealError::Unreadable(_) => ErrorClass::Permanent,
        }
    }
}

#[async_trait]
pub trait SecretSealer: Send + Sync {
    /// `plain` sealed for the cache entry `name`: text that tells nothing of `plain`.
    async fn seal(&self, name: &str, plain: &str) -> Result<String, SealError>;

    /// The inverse of [`SecretSealer::seal`] for the same `name`.
    async fn open(&self, name: &str, sealed: &str) -> Result<String, SealError>;
}
