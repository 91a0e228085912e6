//! Verification of a XAdES-signed `AuthTokenRequest` (what `/auth/xades-signature` receives):
//! an enveloped signature with exclusive C14N, SHA-256 references to the document and to the
//! XAdES `SignedProperties`, RSA PKCS#1 v1.5 or ECDSA P-256 (R||S) over `SignedInfo`, and the
//! signing certificate's digest in `SigningCertificate`. Canonicalization is the `xml-sec`
//! crate's; finding the parts, the enveloped transform and the checks are ours.

use std::collections::HashMap;

use base64::Engine as _;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use sha2::{Digest, Sha256};
use x509_cert::der::{Decode, Encode};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
pub const AUTH_NS_20: &str = "http://ksef.mf.gov.pl/auth/token/2.0";
pub const AUTH_NS_21: &str = "http://ksef.mf.gov.pl/auth/token/2.1";
const DS: &str = "http://www.w3.org/2000/09/xmldsig#";
const XADES: &str = "http://uri.etsi.org/01903/v1.3.2#";
const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
const SHA256_DIGEST: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
const ECDSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256";

/// Why a request was refused, as KSeF's exception codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XadesError {
    /// 9101: not a well-formed AuthTokenRequest.
    BadDocument(String),
    /// 9102: no signature.
    NoSignature,
    /// 9103: more than one signature.
    TooManySignatures,
    /// 9105: the signature does not verify.
    BadSignature(String),
    /// 21115: the certificate is unusable.
    BadCertificate(String),
}

/// What a verified request says.
#[derive(Debug, Clone)]
pub struct VerifiedRequest {
    pub challenge: String,
    pub context_nip: String,
    pub subject_identifier_type: String,
    pub certificate_der: Vec<u8>,
    /// The certificate subject, RFC 4514.
    pub subject: String,
    /// The subject's attribute values as text (CN, organizationIdentifier, serialNumber, ...).
    pub subject_values: Vec<String>,
}

/// One element: its byte range, its namespace, the namespaces in scope at its start tag and
/// those declared on it.
#[derive(Debug, Clone)]
struct El {
    ns: String,
    local: String,
    start: usize,
    end: usize,
    depth: usize,
    in_scope: Vec<(Option<String>, String)>,
    declared: Vec<Option<String>>,
    attrs: HashMap<String, String>,
    text: String,
}

fn parse(xml: &str) -> Result<Vec<El>, XadesError> {
    let bad = |e: String| XadesError::BadDocument(e);
    let mut r = NsReader::from_str(xml);
    r.config_mut().check_end_names = true;
    let mut out: Vec<El> = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    let mut scopes: Vec<Vec<(Option<String>, String)>> = vec![Vec::new()];
    loop {
        let before = r.buffer_position() as usize;
        let (res, ev) = r.read_resolved_event().map_err(|e| bad(e.to_string()))?;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(ev, Event::Empty(_));
                let ns = match res {
                    ResolveResult::Bound(n) => String::from_utf8_lossy(n.as_ref()).into_owned(),
                    _ => String::new(),
                };
                let mut scope = scopes.last().cloned().unwrap_or_default();
                let mut declared = Vec::new();
                let mut attrs = HashMap::new();
                for a in e.attributes() {
                    let a = a.map_err(|e| bad(e.to_string()))?;
                    let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
                    let value = a.unescape_value().map_err(|e| bad(e.to_string()))?.into_owned();
                    let prefix = if key == "xmlns" {
                        Some(None)
                    } else {
                        key.strip_prefix("xmlns:").map(|p| Some(p.to_owned()))
                    };
                    match prefix {
                        Some(p) => {
                            scope.retain(|(q, _)| q != &p);
                            scope.push((p.clone(), value));
                            declared.push(p);
                        }
                        None => {
                            attrs.insert(key, value);
                        }
                    }
                }
                let after = r.buffer_position() as usize;
                out.push(El {
                    ns,
                    local: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
                    start: before,
                    end: after,
                    depth: stack.len(),
                    in_scope: scope.clone(),
                    declared,
                    attrs,
                    text: String::new(),
                });
                if !empty {
                    stack.push(out.len() - 1);
                    scopes.push(scope);
                }
            }
            Event::Text(t) => {
                if let Some(&i) = stack.last() {
                    out[i].text.push_str(&t.decode().map_err(|e| bad(e.to_string()))?);
                }
            }
            Event::End(_) => {
                let i = stack.pop().ok_or_else(|| bad("unbalanced end tag".into()))?;
                scopes.pop();
                out[i].end = r.buffer_position() as usize;
            }
            Event::DocType(_) => return Err(bad("DOCTYPE is not allowed".into())),
            Event::Eof => break,
            _ => {}
        }
    }
    if out.is_empty() {
        return Err(bad("no root element".into()));
    }
    Ok(out)
}

/// The element as a standalone document, with the namespaces in scope declared on it.
/// Exclusive C14N renders only the namespaces an element uses, so this canonicalizes exactly
/// as the element does in place.
fn standalone(xml: &str, el: &El) -> String {
    let text = &xml[el.start..el.end];
    let name_end = text.find(|c: char| c.is_whitespace() || c == '>' || c == '/').unwrap_or(text.len());
    let mut decls = String::new();
    for (p, uri) in &el.in_scope {
        if el.declared.contains(p) {
            continue;
        }
        let uri = quick_xml::escape::escape(uri.as_str());
        match p {
            Some(p) => decls.push_str(&format!(" xmlns:{p}=\"{uri}\"")),
            None => decls.push_str(&format!(" xmlns=\"{uri}\"")),
        }
    }
    format!("{}{decls}{}", &text[..name_end], &text[name_end..])
}

fn c14n(xml: &str) -> Result<Vec<u8>, XadesError> {
    use xml_sec::c14n::{canonicalize_xml, C14nAlgorithm, C14nMode};
    canonicalize_xml(xml.as_bytes(), &C14nAlgorithm::new(C14nMode::Exclusive1_0, false))
        .map_err(|e| XadesError::BadSignature(format!("C14N: {e}")))
}

/// Verifies the request and returns what it says.
pub fn verify(xml: &str) -> Result<VerifiedRequest, XadesError> {
    let els = parse(xml)?;
    let root = &els[0];
    if root.local != "AuthTokenRequest" || !(root.ns == AUTH_NS_20 || root.ns == AUTH_NS_21) {
        return Err(XadesError::BadDocument(format!(
            "root element {{{}}}{} is not an AuthTokenRequest",
            root.ns, root.local
        )));
    }
    let child_text = |local: &str| {
        els.iter()
            .find(|e| e.ns == root.ns && e.local == local)
            .map(|e| e.text.trim().to_owned())
    };
    let challenge = child_text("Challenge").ok_or_else(|| XadesError::BadDocument("Challenge is missing".into()))?;
    let context_nip = child_text("Nip")
        .ok_or_else(|| XadesError::BadDocument("ContextIdentifier/Nip is missing (the simulator supports NIP contexts)".into()))?;
    let subject_identifier_type =
        child_text("SubjectIdentifierType").ok_or_else(|| XadesError::BadDocument("SubjectIdentifierType is missing".into()))?;

    let sigs: Vec<&El> = els.iter().filter(|e| e.ns == DS && e.local == "Signature").collect();
    let sig = match sigs.as_slice() {
        [] => return Err(XadesError::NoSignature),
        [s] => *s,
        _ => return Err(XadesError::TooManySignatures),
    };
    if sig.depth != 1 {
        return Err(XadesError::BadSignature(
            "only an enveloped signature (a child of the root) is accepted".into(),
        ));
    }
    let inside = |e: &&El| e.start > sig.start && e.end <= sig.end;
    let find = |ns: &str, local: &str| els.iter().filter(inside).find(|e| e.ns == ns && e.local == local);
    let bad = |m: &str| XadesError::BadSignature(m.to_owned());

    let signed_info = find(DS, "SignedInfo").ok_or_else(|| bad("SignedInfo is missing"))?;
    let in_signed_info = |e: &&El| e.start > signed_info.start && e.end <= signed_info.end;
    let c14n_method = els
        .iter()
        .filter(in_signed_info)
        .find(|e| e.ns == DS && e.local == "CanonicalizationMethod")
        .and_then(|e| e.attrs.get("Algorithm"));
    if c14n_method.map(String::as_str) != Some(EXC_C14N) {
        return Err(bad("the simulator verifies exclusive C14N (xml-exc-c14n#) only"));
    }
    let method = els
        .iter()
        .filter(in_signed_info)
        .find(|e| e.ns == DS && e.local == "SignatureMethod")
        .and_then(|e| e.attrs.get("Algorithm"))
        .cloned()
        .ok_or_else(|| bad("SignatureMethod is missing"))?;

    let cert_b64: String = find(DS, "X509Certificate")
        .ok_or_else(|| bad("KeyInfo/X509Data/X509Certificate is missing"))?
        .text
        .split_whitespace()
        .collect();
    let cert_der = B64
        .decode(cert_b64)
        .map_err(|_| XadesError::BadCertificate("X509Certificate is not Base64".into()))?;
    let cert = x509_cert::Certificate::from_der(&cert_der).map_err(|e| XadesError::BadCertificate(e.to_string()))?;
    let validity = &cert.tbs_certificate.validity;
    let now = std::time::SystemTime::now();
    if now < validity.not_before.to_system_time() || now > validity.not_after.to_system_time() {
        return Err(XadesError::BadCertificate("the certificate is not valid now".into()));
    }
    if is_offline_certificate(&cert)? {
        // A KSeF certificate of type Offline (keyUsage nonRepudiation only) signs KOD II and
        // cannot log in. KSeF's exact answer is not documented; a certificate refusal is ours.
        return Err(XadesError::BadCertificate(
            "an Offline certificate (keyUsage nonRepudiation, no digitalSignature) cannot be used to log in".into(),
        ));
    }

    // Every reference must digest to what it says.
    let refs: Vec<&El> = els
        .iter()
        .filter(in_signed_info)
        .filter(|e| e.ns == DS && e.local == "Reference")
        .collect();
    let mut signed_document = false;
    let mut signed_properties = None;
    for r in &refs {
        let in_ref = |e: &&El| e.start > r.start && e.end <= r.end;
        let transforms: Vec<&str> = els
            .iter()
            .filter(in_ref)
            .filter(|e| e.ns == DS && e.local == "Transform")
            .filter_map(|e| e.attrs.get("Algorithm").map(String::as_str))
            .collect();
        let digest_method = els
            .iter()
            .filter(in_ref)
            .find(|e| e.ns == DS && e.local == "DigestMethod")
            .and_then(|e| e.attrs.get("Algorithm"));
        if digest_method.map(String::as_str) != Some(SHA256_DIGEST) {
            return Err(bad("references must use SHA-256"));
        }
        let digest = els
            .iter()
            .filter(in_ref)
            .find(|e| e.ns == DS && e.local == "DigestValue")
            .map(|e| e.text.trim().to_owned())
            .unwrap_or_default();
        let uri = r.attrs.get("URI").cloned().unwrap_or_default();
        let canonical = if uri.is_empty() {
            if !transforms.contains(&ENVELOPED) {
                return Err(bad("a reference to the whole document needs the enveloped-signature transform"));
            }
            signed_document = true;
            c14n(&format!("{}{}", &xml[..sig.start], &xml[sig.end..]))?
        } else {
            let id = uri
                .strip_prefix('#')
                .ok_or_else(|| bad("only same-document references are accepted"))?;
            let target = els
                .iter()
                .find(|e| e.attrs.get("Id").map(String::as_str) == Some(id))
                .ok_or_else(|| bad("a reference points at no element"))?;
            if target.ns == XADES && target.local == "SignedProperties" {
                signed_properties = Some(target);
            }
            c14n(&standalone(xml, target))?
        };
        if B64.encode(Sha256::digest(&canonical)) != digest {
            return Err(bad(&format!("the digest of reference {uri:?} does not match")));
        }
    }
    if !signed_document {
        return Err(bad("the signature does not cover the document"));
    }
    // XAdES-BES: the signed properties name the signing certificate.
    let props = signed_properties.ok_or_else(|| bad("XAdES SignedProperties are not signed"))?;
    let in_props = |e: &&El| e.start > props.start && e.end <= props.end;
    let cert_digest = els
        .iter()
        .filter(in_props)
        .find(|e| e.ns == DS && e.local == "DigestValue")
        .map(|e| e.text.trim().to_owned());
    if cert_digest != Some(B64.encode(Sha256::digest(&cert_der))) {
        return Err(bad("SigningCertificate does not match the certificate in KeyInfo"));
    }

    let signature_value = find(DS, "SignatureValue")
        .map(|e| e.text.split_whitespace().collect::<String>())
        .ok_or_else(|| bad("SignatureValue is missing"))?;
    let signature = B64.decode(signature_value).map_err(|_| bad("SignatureValue is not Base64"))?;
    let signed_bytes = c14n(&standalone(xml, signed_info))?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| XadesError::BadCertificate(e.to_string()))?;
    match method.as_str() {
        RSA_SHA256 => {
            use rsa::pkcs8::DecodePublicKey;
            use rsa::signature::Verifier;
            let key =
                rsa::RsaPublicKey::from_public_key_der(&spki).map_err(|e| XadesError::BadCertificate(format!("not an RSA key: {e}")))?;
            let sig = rsa::pkcs1v15::Signature::try_from(signature.as_slice()).map_err(|_| bad("malformed RSA signature"))?;
            rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key)
                .verify(&signed_bytes, &sig)
                .map_err(|_| bad("the RSA signature does not verify"))?;
        }
        ECDSA_SHA256 => {
            use p256::ecdsa::signature::Verifier;
            use p256::pkcs8::DecodePublicKey;
            let key = p256::ecdsa::VerifyingKey::from_public_key_der(&spki)
                .map_err(|e| XadesError::BadCertificate(format!("not a P-256 key: {e}")))?;
            let sig = p256::ecdsa::Signature::from_slice(&signature).map_err(|_| bad("an ECDSA signature must be R||S, 64 bytes"))?;
            key.verify(&signed_bytes, &sig)
                .map_err(|_| bad("the ECDSA signature does not verify"))?;
        }
        other => return Err(bad(&format!("unsupported signature method {other}"))),
    }
    let subject_values = cert
        .tbs_certificate
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .filter_map(|atv| {
            use x509_cert::der::asn1::{PrintableStringRef, Utf8StringRef};
            atv.value
                .decode_as::<Utf8StringRef<'_>>()
                .map(|v| v.as_str().to_owned())
                .or_else(|_| atv.value.decode_as::<PrintableStringRef<'_>>().map(|v| v.as_str().to_owned()))
                .ok()
        })
        .collect();
    Ok(VerifiedRequest {
        challenge,
        context_nip,
        subject_identifier_type,
        certificate_der: cert_der,
        subject: cert.tbs_certificate.subject.to_string(),
        subject_values,
    })
}

/// Whether the certificate is an Offline-type KSeF certificate: its keyUsage allows
/// nonRepudiation and not digitalSignature (an Authentication certificate has digitalSignature;
/// one without keyUsage, e.g. a self-signed test certificate, is not Offline).
fn is_offline_certificate(cert: &x509_cert::Certificate) -> Result<bool, XadesError> {
    use x509_cert::der::oid::AssociatedOid;
    use x509_cert::ext::pkix::{KeyUsage, KeyUsages};
    let Some(extensions) = &cert.tbs_certificate.extensions else {
        return Ok(false);
    };
    match extensions.iter().find(|e| e.extn_id == KeyUsage::OID) {
        None => Ok(false),
        Some(ext) => {
            let usage = KeyUsage::from_der(ext.extn_value.as_bytes()).map_err(|e| XadesError::BadCertificate(format!("keyUsage: {e}")))?;
            Ok(usage.0.contains(KeyUsages::NonRepudiation) && !usage.0.contains(KeyUsages::DigitalSignature))
        }
    }
}
