//! KSeF tokens from AWS Secrets Manager: one secret per seller NIP, named `{prefix}{nip}`, read
//! once at cold start. The values are handed straight to the KSeF client's secret type; this
//! module never logs or prints them.

use aws_sdk_secretsmanager::error::DisplayErrorContext;
use relay_domain::Nip;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("cannot read the KSeF token secret {name}: {message}")]
    Unreadable { name: String, message: String },
    #[error("the KSeF token secret {0} has no string value")]
    Empty(String),
}

/// Reads `{prefix}{nip}` for each NIP. The value is the token itself, or JSON `{"token": "..."}`.
/// The second element of each pair is a secret: wrap it at once.
pub async fn ksef_tokens(client: &aws_sdk_secretsmanager::Client, prefix: &str, nips: &[Nip]) -> Result<Vec<(Nip, String)>, SecretsError> {
    let mut out = Vec::new();
    for nip in nips {
        let name = format!("{prefix}{nip}");
        let value = client
            .get_secret_value()
            .secret_id(&name)
            .send()
            .await
            .map_err(|e| SecretsError::Unreadable {
                name: name.clone(),
                message: DisplayErrorContext(&e).to_string(),
            })?;
        let raw = value
            .secret_string()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| SecretsError::Empty(name.clone()))?;
        let token = match serde_json::from_str::<serde_json::Value>(raw) {
            Ok(serde_json::Value::Object(map)) => map
                .get("token")
                .and_then(|t| t.as_str())
                .map(str::to_owned)
                .ok_or_else(|| SecretsError::Empty(name.clone()))?,
            _ => raw.trim().to_owned(),
        };
        out.push((nip.clone(), token));
    }
    Ok(out)
}
