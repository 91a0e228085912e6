//! The simulator's two RSA keys (KSeF keeps token encryption and session-key encryption apart)
//! and the self-signed certificates it publishes at `/security/public-key-certificates`.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
use rsa::{Oaep, RsaPrivateKey};
use sha2::{Digest, Sha256};
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::der::Encode;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::{Time, Validity};

use crate::config::KeySource;

const BUNDLED_TOKEN_KEY: &str = include_str!("../keys/sim-token-key.pem");
const BUNDLED_SYMMETRIC_KEY: &str = include_str!("../keys/sim-symmetric-key.pem");

/// What a key is for, in the spec's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUsage {
    KsefTokenEncryption,
    SymmetricKeyEncryption,
}

impl KeyUsage {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyUsage::KsefTokenEncryption => "KsefTokenEncryption",
            KeyUsage::SymmetricKeyEncryption => "SymmetricKeyEncryption",
        }
    }
}

/// One published key: the private half, its certificate and the ids KSeF derives from them.
pub struct SimKey {
    pub usage: KeyUsage,
    private: RsaPrivateKey,
    pub certificate_der: Vec<u8>,
    /// Base64 SHA-256 of the DER certificate.
    pub certificate_id: String,
    /// Base64 SHA-256 of the SubjectPublicKeyInfo (44 characters).
    pub public_key_id: String,
    pub valid_from: DateTime<Utc>,
    pub valid_to: DateTime<Utc>,
}

impl SimKey {
    fn new(usage: KeyUsage, private: RsaPrivateKey) -> anyhow::Result<SimKey> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let spki_der = private.to_public_key().to_public_key_der()?;
        let spki = SubjectPublicKeyInfoOwned::try_from(spki_der.as_bytes())?;
        // Valid from a day ago, for two years: clients pick certificates by validity.
        let now = SystemTime::now();
        let from = now - Duration::from_secs(24 * 3600);
        let to = now + Duration::from_secs(2 * 365 * 24 * 3600);
        let validity = Validity {
            not_before: Time::try_from(from)?,
            not_after: Time::try_from(to)?,
        };
        let subject = Name::from_str(&format!("CN=KSeF simulator {},O=ksef-relay,C=PL", usage.as_str()))?;
        let serial = SerialNumber::from(match usage {
            KeyUsage::KsefTokenEncryption => 1u32,
            KeyUsage::SymmetricKeyEncryption => 2u32,
        });
        let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(private.clone());
        let cert = CertificateBuilder::new(Profile::Root, serial, validity, subject, spki, &signer)?.build::<rsa::pkcs1v15::Signature>()?;
        let certificate_der = cert.to_der()?;
        Ok(SimKey {
            usage,
            certificate_id: b64.encode(Sha256::digest(&certificate_der)),
            public_key_id: b64.encode(Sha256::digest(spki_der.as_bytes())),
            certificate_der,
            private,
            valid_from: DateTime::<Utc>::from(from),
            valid_to: DateTime::<Utc>::from(to),
        })
    }

    /// RSA-OAEP with SHA-256 and MGF1-SHA-256, as KSeF uses for tokens and session keys.
    pub fn decrypt(&self, ciphertext: &[u8]) -> Option<Vec<u8>> {
        self.private.decrypt(Oaep::new::<Sha256>(), ciphertext).ok()
    }
}

/// Both keys. `rotate` swaps their roles, which changes both `publicKeyId`s: enough to act out an
/// emergency key rotation (clients holding the old ids get 21470) without generating keys.
pub struct SimKeys {
    pub token: SimKey,
    pub symmetric: SimKey,
}

impl SimKeys {
    pub fn load(source: &KeySource) -> anyhow::Result<SimKeys> {
        let (t, s) = match source {
            KeySource::Bundled => (
                RsaPrivateKey::from_pkcs8_pem(BUNDLED_TOKEN_KEY)?,
                RsaPrivateKey::from_pkcs8_pem(BUNDLED_SYMMETRIC_KEY)?,
            ),
            KeySource::Generate => {
                let mut rng = rand_core::OsRng;
                (RsaPrivateKey::new(&mut rng, 2048)?, RsaPrivateKey::new(&mut rng, 2048)?)
            }
        };
        Ok(SimKeys {
            token: SimKey::new(KeyUsage::KsefTokenEncryption, t)?,
            symmetric: SimKey::new(KeyUsage::SymmetricKeyEncryption, s)?,
        })
    }

    pub fn rotate(&mut self) -> anyhow::Result<()> {
        let token = SimKey::new(KeyUsage::KsefTokenEncryption, self.symmetric.private.clone())?;
        let symmetric = SimKey::new(KeyUsage::SymmetricKeyEncryption, self.token.private.clone())?;
        self.token = token;
        self.symmetric = symmetric;
        Ok(())
    }

    pub fn all(&self) -> [&SimKey; 2] {
        [&self.token, &self.symmetric]
    }
}
