//! The archive: immutable objects (the invoice bytes, UPOs) written once, and replaceable ones
//! (the ERP's outbox results, status pages).

use std::collections::BTreeMap;

use async_trait::async_trait;

/// An object's bytes and what describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectBody {
    pub bytes: Vec<u8>,
    pub content_type: String,
    /// User metadata. Names are lowercase (S3 lowercases them); values printable ASCII.
    pub metadata: BTreeMap<String, String>,
}

impl ObjectBody {
    pub fn new(bytes: Vec<u8>, content_type: impl Into<String>) -> Self {
        ObjectBody {
            bytes,
            content_type: content_type.into(),
            metadata: BTreeMap::new(),
        }
    }

    pub fn with_metadata(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(name.into(), value.into());
        self
    }

    /// The rules S3 imposes, checked the same way by every adapter.
    pub fn check(&self) -> Result<(), ArchiveError> {
        for (k, v) in &self.metadata {
            if k.is_empty()
                || !k
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
            {
                return Err(ArchiveError::Invalid(format!(
                    "metadata name {k:?} must be lowercase letters, digits, - or _"
                )));
            }
            if !v.chars().all(|c| (' '..='~').contains(&c)) {
                return Err(ArchiveError::Invalid(format!("metadata value for {k:?} must be printable ASCII")));
            }
        }
        Ok(())
    }
}

/// What a put-if-absent did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    /// Something was already stored under the key; it was left as it was.
    AlreadyExists,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    #[error("invalid archive request: {0}")]
    Invalid(String),
    #[error("archive unavailable: {0}")]
    Unavailable(String),
}

/// Checks an object key: what S3 accepts and what stays readable in a console.
pub fn check_key(key: &str) -> Result<(), ArchiveError> {
    if key.is_empty() || key.len() > 1024 || key.starts_with('/') || key.chars().any(char::is_control) {
        return Err(ArchiveError::Invalid(format!("object key {key:?} is not allowed")));
    }
    Ok(())
}

#[async_trait]
pub trait Archive: Send + Sync {
    /// Stores the object unless the key exists; never overwrites.
    async fn put_if_absent(&self, key: &str, body: ObjectBody) -> Result<PutOutcome, ArchiveError>;

    /// Stores the object, replacing what was there (outbox results, reports).
    async fn put(&self, key: &str, body: ObjectBody) -> Result<(), ArchiveError>;

    /// The current version of the object.
    async fn get(&self, key: &str) -> Result<Option<ObjectBody>, ArchiveError>;

    /// The object as one version left it (the version an S3 event names, so an upload that was
    /// overwritten before it was read is still the one processed); None when that version does
    /// not exist.
    async fn get_version(&self, key: &str, version_id: &str) -> Result<Option<ObjectBody>, ArchiveError>;

    /// The id of the object's current version; None for a missing object or a store that keeps
    /// no versions.
    async fn current_version(&self, key: &str) -> Result<Option<String>, ArchiveError>;
}
