//! Certificate authentication: an `AuthTokenRequest` (data/ksef/schemas/auth/schemat_auth_v2-0.xsd)
//! signed with an enveloped XAdES-BES signature, posted to `/auth/xades-signature`. KSeF tokens
//! are announced to stop being a login method after 2026-12-31; this path keeps the relay
//! working in 2027 with a KSeF certificate of type Authentication (RSA-2048 or EC P-256).
//!
//! The signature: exclusive C14N (the `xml-sec` crate) of the document without the signature
//! (enveloped-signature transform) and of the XAdES `SignedProperties` (signing time and the
//! signing certificate's digest and issuer/serial), both SHA-256; `SignedInfo` signed with
//! RSA PKCS#1 v1.5 SHA-256 or ECDSA P-256 SHA-256 (R||S). We write each signed part in its
//! canonical form with its namespaces declared on it, so what we digest and what we send are
//! the same bytes.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use relay_domain::{ErrorClass, ErrorSource, Failure, Nip};
use sha2::{Digest, Sha256};
use x509_cert::der::{Decode, Encode};

use crate::client::Result;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
pub const AUTH_NS: &str = "http://ksef.mf.gov.pl/auth/token/2.0";
pub const DS_NS: &str = "http://www.w3.org/2000/09/xmldsig#";
pub const XADES_NS: &str = "http://uri.etsi.org/01903/v1.3.2#";
pub const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
pub const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
pub const SHA256_DIGEST: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
pub const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
pub const ECDSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256";
pub const SIGNED_PROPERTIES_TYPE: &str = "http://uri.etsi.org/01903#SignedProperties";

fn failure(e: impl fmt::Display) -> Failure {
    Failure::new(
        ErrorClass::Permanent,
        ErrorSource::Ksef {
            operation: "auth_xades_signature".into(),
        },
        format!("cannot sign the auth request: {e}"),
    )
}

/// The private key of a signing certificate.
#[derive(Clone)]
pub enum SigningKey {
    Rsa(Box<rsa::RsaPrivateKey>),
    EcP256(p256::ecdsa::SigningKey),
}

/// A certificate and its private key: what signs the auth request.
#[derive(Clone)]
pub struct SigningIdentity {
    pub certificate_der: Vec<u8>,
    key: SigningKey,
}

impl fmt::Debug for SigningIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.key {
            SigningKey::Rsa(_) => "RSA",
            SigningKey::EcP256(_) => "EC P-256",
        };
        write!(
            f,
            "SigningIdentity({kind}, certificate sha256 {}, key <redacted>)",
            B64.encode(Sha256::digest(&self.certificate_der))
        )
    }
}

impl SigningIdentity {
    /// A certificate (DER) and its key, e.g. a KSeF certificate from `/certificates/enrollments`.
    pub fn new(certificate_der: Vec<u8>, key: SigningKey) -> SigningIdentity {
        SigningIdentity { certificate_der, key }
    }

    /// From PEM files: an X.509 certificate and its private key (PKCS#8, PKCS#1 or SEC1; RSA or
    /// EC P-256), checked to belong together.
    pub fn from_pem(certificate_pem: &str, key_pem: &str) -> Result<SigningIdentity> {
        crate::stored_credentials::identity_from_pem(certificate_pem, key_pem, "the certificate", "the key").map_err(failure)
    }

    /// The certificate as PEM (public: what a secret's `certificate_pem` holds).
    pub fn certificate_pem(&self) -> String {
        let b64 = B64.encode(&self.certificate_der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
            .collect();
        format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n"))
    }

    /// The SHA-256 fingerprint of the certificate, uppercase hex (what KSeF's
    /// `certificateFingerprint` names).
    pub fn fingerprint_hex(&self) -> String {
        Sha256::digest(&self.certificate_der).iter().map(|b| format!("{b:02X}")).collect()
    }

    /// The private key (signs KOD II in [`crate::qr`]).
    pub(crate) fn key(&self) -> &SigningKey {
        &self.key
    }

    /// `RSA-2048`, `EC P-256`, ...: the key's kind, for logs and the CLI.
    pub fn key_type(&self) -> String {
        match &self.key {
            SigningKey::Rsa(k) => {
                use rsa::traits::PublicKeyParts;
                format!("RSA-{}", k.size() * 8)
            }
            SigningKey::EcP256(_) => "EC P-256".to_owned(),
        }
    }

    /// A self-signed certificate for `subject` (an RFC 4514 name such as
    /// `CN=Relay,2.5.4.97=VATPL-9999999999,C=PL`). KSeF TEST accepts self-signed certificates.
    pub fn self_signed(subject: &str, key: SigningKey, valid_for: Duration) -> Result<SigningIdentity> {
        let now = SystemTime::now();
        Self::self_signed_between(subject, key, now - Duration::from_secs(3600), now + valid_for)
    }

    /// [`SigningIdentity::self_signed`] valid from `not_before` to `not_after` (either may be
    /// past: an expired certificate, to rehearse what KSeF answers it).
    pub fn self_signed_between(subject: &str, key: SigningKey, not_before: SystemTime, not_after: SystemTime) -> Result<SigningIdentity> {
        use x509_cert::builder::{Builder, CertificateBuilder, Profile};
        use x509_cert::spki::SubjectPublicKeyInfoOwned;
        let name = x509_cert::name::Name::from_str(subject).map_err(failure)?;
        let validity = x509_cert::time::Validity {
            not_before: x509_cert::time::Time::try_from(not_before).map_err(failure)?,
            not_after: x509_cert::time::Time::try_from(not_after).map_err(failure)?,
        };
        let serial = x509_cert::serial_number::SerialNumber::new(&rand_serial()).map_err(failure)?;
        let der = match &key {
            SigningKey::Rsa(k) => {
                use rsa::pkcs8::EncodePublicKey;
                let spki = SubjectPublicKeyInfoOwned::try_from(k.to_public_key().to_public_key_der().map_err(failure)?.as_bytes())
                    .map_err(failure)?;
                let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new((**k).clone());
                let b = CertificateBuilder::new(Profile::Root, serial, validity, name, spki, &signer).map_err(failure)?;
                b.build::<rsa::pkcs1v15::Signature>().map_err(failure)?.to_der().map_err(failure)?
            }
            SigningKey::EcP256(k) => {
                use p256::pkcs8::EncodePublicKey;
                let spki = SubjectPublicKeyInfoOwned::try_from(k.verifying_key().to_public_key_der().map_err(failure)?.as_bytes())
                    .map_err(failure)?;
                let b = CertificateBuilder::new(Profile::Root, serial, validity, name, spki, k).map_err(failure)?;
                b.build::<p256::ecdsa::DerSignature>().map_err(failure)?.to_der().map_err(failure)?
            }
        };
        Ok(SigningIdentity { certificate_der: der, key })
    }
}

fn rand_serial() -> [u8; 16] {
    use rand_core::RngCore;
    let mut s = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut s);
    s[0] &= 0x7F; // positive
    s[0] |= 0x01; // no leading zero byte
    s
}

/// How KSeF finds the subject in the certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectIdentifierType {
    CertificateSubject,
    CertificateFingerprint,
}

impl SubjectIdentifierType {
    fn as_str(self) -> &'static str {
        match self {
            SubjectIdentifierType::CertificateSubject => "certificateSubject",
            SubjectIdentifierType::CertificateFingerprint => "certificateFingerprint",
        }
    }
}

fn c14n(xml: &str) -> Result<Vec<u8>> {
    use xml_sec::c14n::{canonicalize_xml, C14nAlgorithm, C14nMode};
    canonicalize_xml(xml.as_bytes(), &C14nAlgorithm::new(C14nMode::Exclusive1_0, false)).map_err(failure)
}

fn esc(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

/// The unsigned `AuthTokenRequest`.
pub fn auth_token_request(challenge: &str, context: &Nip, subject: SubjectIdentifierType) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<AuthTokenRequest xmlns=\"{AUTH_NS}\"><Challenge>{}</Challenge><ContextIdentifier><Nip>{context}</Nip></ContextIdentifier><SubjectIdentifierType>{}</SubjectIdentifierType></AuthTokenRequest>",
        esc(challenge),
        subject.as_str()
    )
}

/// Signs `document` (whose root ends the string) with an enveloped XAdES-BES signature.
pub fn sign_enveloped(document: &str, identity: &SigningIdentity, signing_time: DateTime<Utc>) -> Result<String> {
    let cert = x509_cert::Certificate::from_der(&identity.certificate_der).map_err(failure)?;
    let id = format!("{:016x}", {
        use rand_core::RngCore;
        rand_core::OsRng.next_u64()
    });
    let cert_digest = B64.encode(Sha256::digest(&identity.certificate_der));
    let issuer = cert.tbs_certificate.issuer.to_string();
    let serial = rsa::BigUint::from_bytes_be(cert.tbs_certificate.serial_number.as_bytes()).to_string();

    let doc_digest = B64.encode(Sha256::digest(c14n(document)?));
    let signed_properties = String::from_utf8(c14n(&format!(
        "<xades:SignedProperties xmlns:xades=\"{XADES_NS}\" xmlns:ds=\"{DS_NS}\" Id=\"SignedProperties-{id}\"><xades:SignedSignatureProperties><xades:SigningTime>{}</xades:SigningTime><xades:SigningCertificate><xades:Cert><xades:CertDigest><ds:DigestMethod Algorithm=\"{SHA256_DIGEST}\"/><ds:DigestValue>{cert_digest}</ds:DigestValue></xades:CertDigest><xades:IssuerSerial><ds:X509IssuerName>{}</ds:X509IssuerName><ds:X509SerialNumber>{serial}</ds:X509SerialNumber></xades:IssuerSerial></xades:Cert></xades:SigningCertificate></xades:SignedSignatureProperties></xades:SignedProperties>",
        signing_time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        esc(&issuer)
    ))?)
    .map_err(failure)?;
    let props_digest = B64.encode(Sha256::digest(signed_properties.as_bytes()));
    let method = match identity.key {
        SigningKey::Rsa(_) => RSA_SHA256,
        SigningKey::EcP256(_) => ECDSA_SHA256,
    };
    let signed_info = String::from_utf8(c14n(&format!(
        "<ds:SignedInfo xmlns:ds=\"{DS_NS}\"><ds:CanonicalizationMethod Algorithm=\"{EXC_C14N}\"/><ds:SignatureMethod Algorithm=\"{method}\"/><ds:Reference URI=\"\"><ds:Transforms><ds:Transform Algorithm=\"{ENVELOPED}\"/><ds:Transform Algorithm=\"{EXC_C14N}\"/></ds:Transforms><ds:DigestMethod Algorithm=\"{SHA256_DIGEST}\"/><ds:DigestValue>{doc_digest}</ds:DigestValue></ds:Reference><ds:Reference Type=\"{SIGNED_PROPERTIES_TYPE}\" URI=\"#SignedProperties-{id}\"><ds:Transforms><ds:Transform Algorithm=\"{EXC_C14N}\"/></ds:Transforms><ds:DigestMethod Algorithm=\"{SHA256_DIGEST}\"/><ds:DigestValue>{props_digest}</ds:DigestValue></ds:Reference></ds:SignedInfo>"
    ))?)
    .map_err(failure)?;
    let signature_value = match &identity.key {
        SigningKey::Rsa(k) => {
            use rsa::signature::{SignatureEncoding, Signer};
            rsa::pkcs1v15::SigningKey::<Sha256>::new((**k).clone())
                .sign(signed_info.as_bytes())
                .to_vec()
        }
        SigningKey::EcP256(k) => {
            use p256::ecdsa::signature::Signer;
            // XMLDSig wants R||S (64 bytes), not DER.
            let s: p256::ecdsa::Signature = k.sign(signed_info.as_bytes());
            s.to_bytes().to_vec()
        }
    };
    let signature = format!(
        "<ds:Signature xmlns:ds=\"{DS_NS}\" Id=\"Signature-{id}\">{signed_info}<ds:SignatureValue>{}</ds:SignatureValue><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo><ds:Object><xades:QualifyingProperties xmlns:xades=\"{XADES_NS}\" Target=\"#Signature-{id}\">{signed_properties}</xades:QualifyingProperties></ds:Object></ds:Signature>",
        B64.encode(signature_value),
        B64.encode(&identity.certificate_der)
    );
    // Enveloped: the signature is the root's last child, with no text around it, so the
    // document without it is byte for byte the document we digested.
    let close = document
        .rfind("</")
        .ok_or_else(|| failure("the document has no closing root tag"))?;
    Ok(format!("{}{signature}{}", &document[..close], &document[close..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signed_document_without_its_signature_canonicalizes_to_what_was_digested() {
        let key = SigningKey::EcP256(p256::ecdsa::SigningKey::random(&mut rand_core::OsRng));
        let id = SigningIdentity::self_signed("CN=Test,2.5.4.97=VATPL-9999999999,C=PL", key, Duration::from_secs(3600)).unwrap();
        assert!(format!("{id:?}").contains("redacted"));
        let doc = auth_token_request(
            "20250514-CR-226FB7B000-3ACF9BE4C0-10",
            &Nip::parse("9999999999").unwrap(),
            SubjectIdentifierType::CertificateSubject,
        );
        let signed = sign_enveloped(&doc, &id, Utc::now()).unwrap();
        let start = signed.find("<ds:Signature ").unwrap();
        let end = signed.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
        let without = format!("{}{}", &signed[..start], &signed[end..]);
        assert_eq!(c14n(&without).unwrap(), c14n(&doc).unwrap());
        assert!(signed.contains(ECDSA_SHA256));
    }
}
