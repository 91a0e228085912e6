//! Secrets that never print: the KSeF token, access and refresh tokens, AES session keys.
//! `Debug` shows `<redacted>`, there is no `Display`, and memory is zeroed on drop (secrecy).

use std::fmt;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretBox, SecretString};

/// A KSeF token (the long-lived credential generated in KSeF for a context).
#[derive(Clone)]
pub struct KsefToken(SecretString);

impl KsefToken {
    pub fn new(token: impl Into<String>) -> KsefToken {
        KsefToken(SecretString::from(token.into()))
    }
    /// The token itself, for the one request that needs it. Named to stand out in review.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for KsefToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KsefToken(<redacted>)")
    }
}

/// A bearer token with its expiry (authentication, access or refresh token).
#[derive(Clone)]
pub struct BearerToken {
    token: SecretString,
    pub valid_until: DateTime<Utc>,
}

impl BearerToken {
    pub fn new(token: String, valid_until: DateTime<Utc>) -> BearerToken {
        BearerToken {
            token: SecretString::from(token),
            valid_until,
        }
    }
    /// The token itself, to send it or to keep it in a secret store.
    pub fn expose_secret(&self) -> &str {
        self.token.expose_secret()
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BearerToken(<redacted>, valid until {})", self.valid_until.to_rfc3339())
    }
}

/// A fresh AES-256 key and IV for one session.
pub struct SessionKey {
    key: SecretBox<[u8; 32]>,
    pub iv: [u8; 16],
}

impl SessionKey {
    pub fn generate() -> SessionKey {
        use rand_core::RngCore;
        let mut key = Box::new([0u8; 32]);
        let mut iv = [0u8; 16];
        rand_core::OsRng.fill_bytes(key.as_mut());
        rand_core::OsRng.fill_bytes(&mut iv);
        SessionKey {
            key: SecretBox::new(key),
            iv,
        }
    }
    pub(crate) fn key(&self) -> &[u8; 32] {
        self.key.expose_secret()
    }

    /// A key and IV kept from an earlier process (see `OnlineSession::import_secret_json`).
    pub fn from_parts(key: [u8; 32], iv: [u8; 16]) -> SessionKey {
        SessionKey {
            key: SecretBox::new(Box::new(key)),
            iv,
        }
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let t = KsefToken::new("super-secret-token");
        let b = BearerToken::new("eyJ-secret".into(), Utc::now());
        let k = SessionKey::generate();
        let all = format!("{t:?} {b:?} {k:?}");
        assert!(!all.contains("super-secret") && !all.contains("eyJ-secret"), "{all}");
        let key_hex: String = k.key().iter().map(|b| format!("{b:02x}")).collect();
        assert!(!all.contains(&key_hex));
    }
}
