//! KSeF credentials from AWS Secrets Manager: one secret per seller NIP, named `{prefix}{nip}`,
//! read when the seller's work first needs it (and again on rotation; `relay_lambda` decides
//! when). This module only fetches the text; `ksef_client::stored_credentials` parses it. It
//! never logs or prints a value: errors name the secret and what went wrong.

use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata};

/// Why a secret could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    /// The secret is missing, not ours to read, cannot be decrypted, or has no string value:
    /// an operator must act.
    #[error("cannot read the KSeF credentials secret {name}: {message}")]
    Unusable { name: String, message: String },
    /// Throttling, a network failure or a service error: try again.
    #[error("reading the KSeF credentials secret {name} failed for now: {message}")]
    Transient { name: String, message: String },
}

/// A secret's text and the version it came from.
pub struct SecretText {
    /// The value: a secret. Hand it to the parser and drop it.
    pub value: String,
    /// Secrets Manager's `VersionId`: a rotation gives a new one.
    pub version: Option<String>,
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretText(<redacted>, version {:?})", self.version)
    }
}

/// The name of `nip`'s secret.
pub fn secret_name(prefix: &str, nip: &relay_domain::Nip) -> String {
    format!("{prefix}{nip}")
}

/// Reads the current version of the secret `name`.
pub async fn read_secret(client: &aws_sdk_secretsmanager::Client, name: &str) -> Result<SecretText, SecretsError> {
    let value = client.get_secret_value().secret_id(name).send().await.map_err(|e| {
        // Error codes an operator fixes; everything else (throttling, 5xx, network) passes.
        const OPERATOR: [&str; 5] = [
            "ResourceNotFoundException",
            "AccessDeniedException",
            "DecryptionFailure",
            "InvalidRequestException",
            "InvalidParameterException",
        ];
        let message = DisplayErrorContext(&e).to_string();
        if e.code().is_some_and(|c| OPERATOR.contains(&c)) {
            SecretsError::Unusable {
                name: name.to_owned(),
                message,
            }
        } else {
            SecretsError::Transient {
                name: name.to_owned(),
                message,
            }
        }
    })?;
    let version = value.version_id().map(str::to_owned);
    match value.secret_string() {
        Some(s) if !s.trim().is_empty() => Ok(SecretText {
            value: s.to_owned(),
            version,
        }),
        _ => Err(SecretsError::Unusable {
            name: name.to_owned(),
            message: "the secret has no string value".into(),
        }),
    }
}
