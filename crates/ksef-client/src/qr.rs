//! KSeF's QR codes (API-NOTES §10, §11): the links a buyer scans on an invoice that reached them
//! outside KSeF (a PDF, a printout), and their images.
//!
//! - **KOD I** (every invoice): `https://{qr host}/invoice/{sellerNIP}/{P_1 as DD-MM-YYYY}/{hash}`,
//!   the hash being the SHA-256 of the invoice file's exact bytes in base64url without padding
//!   (the same digest as KSeF's `invoiceHash`). Labelled with the KSeF number, or `OFFLINE`
//!   before one exists.
//! - **KOD II** (offline invoices only): `https://{qr host}/certificate/{ctxType}/{ctxValue}/
//!   {sellerNIP}/{certSerialHex}/{hash}/{signature}`, the signature made with the seller's
//!   **Offline** KSeF certificate over the link without `https://`: RSASSA-PSS (SHA-256, MGF1
//!   SHA-256, salt 32, keys of 2048 bits or more) or ECDSA P-256 SHA-256 as IEEE P1363 `r||s`,
//!   base64url without padding. Labelled `CERTYFIKAT`.
//!
//! Images: the symbol from the `qrcode` crate (error correction M, a 4-module quiet zone), as a
//! 1-bit PNG with the label drawn under it in a built-in 5×7 pixel font (the characters of KSeF
//! numbers and of the two fixed labels), and as SVG with the label as text. Both renderings are
//! pure functions of the link and the label: the same document gives the same bytes every time,
//! so a redelivered message rewrites identical files. KOD II's link itself is not: RSA-PSS
//! signatures are randomized (ECDSA here is deterministic, RFC 6979).
//!
//! Checked against the Ministry's published material (CIRFMF/ksef-docs `kody-qr.md`, the C#
//! client's `VerificationLinkService` and its tests); see the tests below and
//! `data/ksef/SOURCES.md` for what was and was not reproducible.

use std::fmt::Write as _;

use base64::Engine as _;
use chrono::NaiveDate;
use relay_domain::{ErrorClass, ErrorSource, Failure, KsefNumber, Nip};
use sha2::{Digest, Sha256};
use x509_cert::der::Decode;

use crate::environment::Environment;
use crate::xades::{SigningIdentity, SigningKey};

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The label under KOD I before KSeF numbers the invoice.
pub const OFFLINE_LABEL: &str = "OFFLINE";
/// The label under KOD II.
pub const CERTIFICATE_LABEL: &str = "CERTYFIKAT";

fn failure(class: ErrorClass, message: impl Into<String>) -> Failure {
    Failure::new(class, ErrorSource::Relay, message).with_code("QR_CODE")
}

/// The SHA-256 of an invoice file's exact bytes: KOD I's and KOD II's hash.
pub fn invoice_hash(invoice: &[u8]) -> [u8; 32] {
    Sha256::digest(invoice).into()
}

/// KOD I's link.
pub fn invoice_link(environment: &Environment, seller: &Nip, issue_date: NaiveDate, hash: &[u8; 32]) -> String {
    format!(
        "https://{}/invoice/{seller}/{}/{}",
        environment.qr_host(),
        issue_date.format("%d-%m-%Y"),
        B64URL.encode(hash)
    )
}

/// How the context that issues an offline invoice is identified (KOD II's first segments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextIdentifier {
    Nip(Nip),
    InternalId(String),
    NipVatUe(String),
    PeppolId(String),
}

impl ContextIdentifier {
    fn parts(&self) -> (&'static str, &str) {
        match self {
            ContextIdentifier::Nip(n) => ("Nip", n.as_str()),
            ContextIdentifier::InternalId(v) => ("InternalId", v),
            ContextIdentifier::NipVatUe(v) => ("NipVatUe", v),
            ContextIdentifier::PeppolId(v) => ("PeppolId", v),
        }
    }
}

/// A certificate's serial number as KOD II writes it: the DER integer's bytes in upper-case hex,
/// as the Ministry's clients (`X509Certificate2.SerialNumber`) and KSeF's certificate list show it.
pub fn certificate_serial_hex(certificate_der: &[u8]) -> Result<String, Failure> {
    let cert = x509_cert::Certificate::from_der(certificate_der)
        .map_err(|e| failure(ErrorClass::Operator, format!("the Offline certificate is not DER X.509: {e}")))?;
    Ok(cert
        .tbs_certificate
        .serial_number
        .as_bytes()
        .iter()
        .fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02X}");
            s
        }))
}

/// What KOD II signs: its link without `https://` and without the signature,
/// `{host}/certificate/{ctxType}/{ctxValue}/{sellerNIP}/{serial}/{hash}`.
pub fn certificate_signed_path(host: &str, context: &ContextIdentifier, seller: &Nip, certificate_serial: &str, hash: &[u8; 32]) -> String {
    let (kind, value) = context.parts();
    format!(
        "{host}/certificate/{kind}/{value}/{seller}/{certificate_serial}/{}",
        B64URL.encode(hash)
    )
}

/// KOD II's link, signed with the seller's Offline certificate. An RSA key under 2048 bits is
/// refused (the Ministry's minimum), as our configuration's fault, not the invoice's.
pub fn certificate_link(
    environment: &Environment,
    context: &ContextIdentifier,
    seller: &Nip,
    offline: &SigningIdentity,
    hash: &[u8; 32],
) -> Result<String, Failure> {
    let serial = certificate_serial_hex(&offline.certificate_der)?;
    let path = certificate_signed_path(environment.qr_host(), context, seller, &serial, hash);
    let signature = match offline.key() {
        SigningKey::Rsa(k) => {
            use rsa::signature::{RandomizedSigner, SignatureEncoding};
            use rsa::traits::PublicKeyParts;
            if k.size() * 8 < 2048 {
                return Err(failure(
                    ErrorClass::Operator,
                    format!(
                        "the Offline certificate's RSA key has {} bits; KOD II needs 2048 or more",
                        k.size() * 8
                    ),
                ));
            }
            rsa::pss::SigningKey::<Sha256>::new_with_salt_len((**k).clone(), 32)
                .sign_with_rng(&mut rand_core::OsRng, path.as_bytes())
                .to_vec()
        }
        SigningKey::EcP256(k) => {
            use p256::ecdsa::signature::Signer;
            // IEEE P1363: r||s, 32 bytes each (the recommended form; DER is also accepted).
            let s: p256::ecdsa::Signature = k.sign(path.as_bytes());
            s.to_bytes().to_vec()
        }
    };
    Ok(format!("https://{path}/{}", B64URL.encode(signature)))
}

/// Checks a KOD II link against the certificate it names: the serial in the link is the
/// certificate's, and the signature verifies with its public key over the link without
/// `https://` and without the signature (RSASSA-PSS SHA-256 salt 32, or ECDSA P-256 as `r||s` or
/// DER). What KSeF's verification page checks of the link itself, for tests and for checking a
/// code before it is printed.
pub fn verify_certificate_link(link: &str, certificate_der: &[u8]) -> Result<(), Failure> {
    let bad = |why: &str| failure(ErrorClass::Permanent, format!("not a valid KOD II link: {why}"));
    let rest = link
        .strip_prefix("https://")
        .ok_or_else(|| bad("it does not start with https://"))?;
    let (path, signature) = rest.rsplit_once('/').ok_or_else(|| bad("it has no signature"))?;
    let segments: Vec<&str> = path.split('/').collect();
    if segments.len() != 7 || segments[1] != "certificate" {
        return Err(bad(
            "it is not {host}/certificate/{ctxType}/{ctxValue}/{nip}/{serial}/{hash}/{signature}",
        ));
    }
    if segments[5] != certificate_serial_hex(certificate_der)? {
        return Err(bad("the serial is not the certificate's"));
    }
    let signature = B64URL.decode(signature).map_err(|_| bad("the signature is not base64url"))?;
    let cert = x509_cert::Certificate::from_der(certificate_der)
        .map_err(|e| failure(ErrorClass::Operator, format!("the certificate is not DER X.509: {e}")))?;
    let spki = x509_cert::der::Encode::to_der(&cert.tbs_certificate.subject_public_key_info)
        .map_err(|e| failure(ErrorClass::Operator, format!("the certificate's key cannot be read: {e}")))?;
    let verified = if let Ok(key) = <rsa::RsaPublicKey as rsa::pkcs8::DecodePublicKey>::from_public_key_der(&spki) {
        use rsa::signature::Verifier;
        rsa::pss::Signature::try_from(signature.as_slice()).is_ok_and(|s| {
            rsa::pss::VerifyingKey::<Sha256>::new_with_salt_len(key, 32)
                .verify(path.as_bytes(), &s)
                .is_ok()
        })
    } else if let Ok(key) = <p256::ecdsa::VerifyingKey as p256::pkcs8::DecodePublicKey>::from_public_key_der(&spki) {
        use p256::ecdsa::signature::Verifier;
        let s = p256::ecdsa::Signature::from_slice(&signature).or_else(|_| p256::ecdsa::Signature::from_der(&signature));
        s.is_ok_and(|s| key.verify(path.as_bytes(), &s).is_ok())
    } else {
        return Err(failure(ErrorClass::Operator, "the certificate's key is neither RSA nor EC P-256"));
    };
    if verified {
        Ok(())
    } else {
        Err(bad("the signature does not verify with the certificate's key"))
    }
}

/// KOD I's label: the KSeF number once known, else `OFFLINE`.
pub fn invoice_label(ksef_number: Option<&KsefNumber>) -> String {
    ksef_number.map_or_else(|| OFFLINE_LABEL.to_owned(), |k| k.as_str().to_owned())
}

/// A QR code rendered for a document: its link, the label under it, and the two images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QrImage {
    pub url: String,
    pub label: String,
    pub png: Vec<u8>,
    pub svg: String,
}

/// Pixels per module in the PNG.
const SCALE: usize = 6;
/// Modules of white around the symbol (ISO/IEC 18004's minimum).
const QUIET: usize = 4;
/// The label's font is drawn at this many pixels per font pixel.
const FONT_SCALE: usize = 2;
const GLYPH_W: usize = 5;
const GLYPH_H: usize = 7;
/// One character's advance: the glyph and a pixel of space, in font pixels.
const ADVANCE: usize = GLYPH_W + 1;

/// Renders `url` as a QR code with `label` under it, as PNG and SVG.
pub fn render(url: &str, label: &str) -> Result<QrImage, Failure> {
    let code = qrcode::QrCode::with_error_correction_level(url.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| failure(ErrorClass::Permanent, format!("the link does not fit a QR code: {e}")))?;
    let modules = code.width();
    let dark: Vec<bool> = code.to_colors().into_iter().map(|c| c == qrcode::Color::Dark).collect();
    Ok(QrImage {
        url: url.to_owned(),
        label: label.to_owned(),
        png: png_image(modules, &dark, label)?,
        svg: svg_image(modules, &dark, label, url),
    })
}

/// The PNG: 1-bit greyscale, the symbol centred on top, the label centred under it.
fn png_image(modules: usize, dark: &[bool], label: &str) -> Result<Vec<u8>, Failure> {
    let code_px = (modules + 2 * QUIET) * SCALE;
    let label_px = label.chars().count() * ADVANCE * FONT_SCALE;
    let width = code_px.max(label_px + 2 * QUIET * SCALE);
    let label_band = if label.is_empty() { 0 } else { (GLYPH_H + 4) * FONT_SCALE };
    let height = code_px + label_band;
    // true = black.
    let mut px = vec![false; width * height];
    let code_left = (width - code_px) / 2;
    for y in 0..modules {
        for x in 0..modules {
            if !dark[y * modules + x] {
                continue;
            }
            for dy in 0..SCALE {
                let row = (QUIET + y) * SCALE + dy;
                let start = row * width + code_left + (QUIET + x) * SCALE;
                px[start..start + SCALE].fill(true);
            }
        }
    }
    // The label sits just under the symbol's quiet zone bottom edge, inside the band.
    let top = code_px;
    let left = (width - label_px) / 2;
    for (i, c) in label.chars().enumerate() {
        let glyph = glyph(c);
        for (gy, bits) in glyph.iter().enumerate() {
            for gx in 0..GLYPH_W {
                if bits & (1 << (GLYPH_W - 1 - gx)) == 0 {
                    continue;
                }
                for dy in 0..FONT_SCALE {
                    for dx in 0..FONT_SCALE {
                        let y = top + gy * FONT_SCALE + dy;
                        let x = left + (i * ADVANCE + gx) * FONT_SCALE + dx;
                        px[y * width + x] = true;
                    }
                }
            }
        }
    }
    // Pack: 1 bit per pixel, most significant first, 1 = white in PNG greyscale.
    let row_bytes = width.div_ceil(8);
    let mut data = vec![0u8; row_bytes * height];
    for y in 0..height {
        for x in 0..width {
            if !px[y * width + x] {
                data[y * row_bytes + x / 8] |= 0x80 >> (x % 8);
            }
        }
    }
    let png_failure = |e: png::EncodingError| failure(ErrorClass::Permanent, format!("cannot encode the QR code as PNG: {e}"));
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width as u32, height as u32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::One);
        let mut writer = enc.write_header().map_err(png_failure)?;
        writer.write_image_data(&data).map_err(png_failure)?;
        writer.finish().map_err(png_failure)?;
    }
    Ok(out)
}

/// The SVG: one path for the symbol, in module units, and the label as text under it.
fn svg_image(modules: usize, dark: &[bool], label: &str, url: &str) -> String {
    let side = modules + 2 * QUIET;
    let band = if label.is_empty() { 0 } else { 3 };
    let mut path = String::new();
    for y in 0..modules {
        for x in 0..modules {
            if dark[y * modules + x] {
                let _ = write!(path, "M{},{}h1v1h-1z", x + QUIET, y + QUIET);
            }
        }
    }
    let esc = |s: &str| quick_xml::escape::escape(s).into_owned();
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {side} {}\" width=\"{}\" height=\"{}\" shape-rendering=\"crispEdges\">\
<title>{}</title><rect width=\"{side}\" height=\"{}\" fill=\"#fff\"/><path d=\"{path}\" fill=\"#000\"/>",
        side + band,
        side * SCALE,
        (side + band) * SCALE,
        esc(url),
        side + band,
    );
    if !label.is_empty() {
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" font-family=\"monospace\" font-size=\"2\" text-anchor=\"middle\" textLength=\"{}\" lengthAdjust=\"spacingAndGlyphs\">{}</text>",
            side as f64 / 2.0,
            side + 2,
            side.min(label.chars().count() + 4).saturating_sub(2).max(1),
            esc(label)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// A 5×7 glyph, one row per byte, bit 4 the leftmost pixel. Digits, capitals and `-` (what KSeF
/// numbers and the two fixed labels use); anything else is an empty box.
fn glyph(c: char) -> [u8; GLYPH_H] {
    match c.to_ascii_uppercase() {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        ' ' => [0x00; GLYPH_H],
        _ => [0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F],
    }
}

/// KOD I for an invoice, labelled with its KSeF number (or `OFFLINE` without one).
pub fn invoice_code(
    environment: &Environment,
    seller: &Nip,
    issue_date: NaiveDate,
    hash: &[u8; 32],
    ksef_number: Option<&KsefNumber>,
) -> Result<QrImage, Failure> {
    render(&invoice_link(environment, seller, issue_date, hash), &invoice_label(ksef_number))
}

/// KOD II for an offline invoice, labelled `CERTYFIKAT`.
pub fn certificate_code(
    environment: &Environment,
    context: &ContextIdentifier,
    seller: &Nip,
    offline: &SigningIdentity,
    hash: &[u8; 32],
) -> Result<QrImage, Failure> {
    render(&certificate_link(environment, context, seller, offline, hash)?, CERTIFICATE_LABEL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The Ministry's example (ksef-docs `kody-qr.md`; API-NOTES §10): seller 1111111111, P_1
    /// 01.02.2026, hash `UtQp9Gpc51y-u3xApZjIjgkpZ01js-J8KflSPW8WzIE`.
    const EXAMPLE_HASH: &str = "UtQp9Gpc51y-u3xApZjIjgkpZ01js-J8KflSPW8WzIE";
    const MINISTRY_CERT_PEM: &str = include_str!("../../../data/ksef/qr/ministry-example-cert.pem");

    fn example_hash() -> [u8; 32] {
        B64URL.decode(EXAMPLE_HASH).unwrap().try_into().unwrap()
    }

    fn nip(s: &str) -> Nip {
        Nip::parse(s).unwrap()
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn ministry_cert_der() -> Vec<u8> {
        x509_cert::der::pem::decode_vec(MINISTRY_CERT_PEM.as_bytes()).unwrap().1
    }

    #[test]
    fn kod_i_reproduces_the_ministrys_example_byte_for_byte() {
        assert_eq!(
            invoice_link(&Environment::Test, &nip("1111111111"), date(2026, 2, 1), &example_hash()),
            "https://qr-test.ksef.mf.gov.pl/invoice/1111111111/01-02-2026/UtQp9Gpc51y-u3xApZjIjgkpZ01js-J8KflSPW8WzIE"
        );
        assert_eq!(
            invoice_link(&Environment::Prod, &nip("1111111111"), date(2026, 2, 1), &example_hash()),
            "https://qr.ksef.mf.gov.pl/invoice/1111111111/01-02-2026/UtQp9Gpc51y-u3xApZjIjgkpZ01js-J8KflSPW8WzIE"
        );
    }

    #[test]
    fn kod_i_hashes_the_exact_bytes_in_base64url_without_padding() {
        // The C# client's test inputs; the expected digests worked out with openssl
        // (`printf '...' | openssl dgst -sha256 -binary | base64`), not with this code.
        let link = |xml: &[u8]| invoice_link(&Environment::Test, &nip("1111111111"), date(2026, 1, 5), &invoice_hash(xml));
        assert_eq!(
            link(b"<root>test</root>"),
            "https://qr-test.ksef.mf.gov.pl/invoice/1111111111/05-01-2026/qrs2gCLXnTUy6--AHwHuDxFuCj0BYUGRGtBuGnJwN-c"
        );
        // Base64 `2bEg3cUOcJxR38JekXJxuJphnkn+NUdSP+uyOc0hB6I=`: `+` becomes `-`, `=` goes.
        assert_eq!(
            link(b"<data>special & chars /?</data>"),
            "https://qr-test.ksef.mf.gov.pl/invoice/1111111111/05-01-2026/2bEg3cUOcJxR38JekXJxuJphnkn-NUdSP-uyOc0hB6I"
        );
        // Every byte counts: a trailing newline is another invoice file.
        assert_ne!(link(b"<root>test</root>\n"), link(b"<root>test</root>"));
    }

    #[test]
    fn the_serial_is_read_from_the_ministrys_certificate_as_its_example_writes_it() {
        assert_eq!(certificate_serial_hex(&ministry_cert_der()).unwrap(), "01F20A5D352AE590");
    }

    #[test]
    fn kod_ii_signs_the_documented_path() {
        // ksef-docs `kody-qr.md` "Format podpisu" with the current host (API-NOTES §10).
        assert_eq!(
            certificate_signed_path(
                Environment::Test.qr_host(),
                &ContextIdentifier::Nip(nip("1111111111")),
                &nip("1111111111"),
                "01F20A5D352AE590",
                &example_hash()
            ),
            "qr-test.ksef.mf.gov.pl/certificate/Nip/1111111111/1111111111/01F20A5D352AE590/UtQp9Gpc51y-u3xApZjIjgkpZ01js-J8KflSPW8WzIE"
        );
    }

    #[test]
    fn our_path_is_the_one_the_ministry_signed_in_its_first_published_example() {
        // The 30.07.2025 version of `kody-qr.md` printed a signature made with the certificate
        // above over the path of that time's host; it verifies (as PKCS#1 v1.5, the rule then)
        // only if our path is byte for byte the string the Ministry signed.
        use rsa::pkcs8::DecodePublicKey;
        use rsa::signature::Verifier;
        const SIGNATURE: &str = "KFoN1Z91HvySb2uqP2ZDFKubKftzWtWsQOjqTdLFXA3ZEoC1PB8sixNi1LLwgnndwL-MkDcpaCEZxBuVtjWcBpAUJEYlnmDQFOMQs-ueSsp5uuVbmNb-d8_yRTAQvSUdHNuIYfpy7Wpj1jTY0yghgOmdTQzpV5MrcHEReLKjpGONHj8lZtq7RpY43LlCfvctHbUWbqSYAC0C7zmNKz5ROK1LFE-QIi5qGqrRIdw1PCEEPW9tKcB94G3qAHXizNyp5TO6V_0qZ9eC1DXtftkCocQD_CEI3MY-nu7yk6LC7hF7yQ1t8GGRikhQP6w4OwBR-z048IdhCtWd-RYNnxiU6w";
        let (_, spki) = crate::crypto::rsa_key_from_certificate(&ministry_cert_der()).unwrap();
        let key = rsa::RsaPublicKey::from_public_key_der(&spki).unwrap();
        let verifier = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key);
        let signature = rsa::pkcs1v15::Signature::try_from(B64URL.decode(SIGNATURE).unwrap().as_slice()).unwrap();
        let serial = certificate_serial_hex(&ministry_cert_der()).unwrap();
        let path = |host: &str| {
            certificate_signed_path(
                host,
                &ContextIdentifier::Nip(nip("1111111111")),
                &nip("1111111111"),
                &serial,
                &example_hash(),
            )
        };
        assert!(verifier
            .verify(path("ksef-test.mf.gov.pl/client-app").as_bytes(), &signature)
            .is_ok());
        assert!(verifier.verify(path("qr-test.ksef.mf.gov.pl").as_bytes(), &signature).is_err());
    }

    fn offline_identity(key: SigningKey) -> SigningIdentity {
        SigningIdentity::self_signed("CN=Offline,2.5.4.97=VATPL-1111111111,C=PL", key, Duration::from_secs(3600)).unwrap()
    }

    /// Splits a KOD II link into its signed path and its signature.
    fn split(link: &str) -> (&str, Vec<u8>) {
        let rest = link.strip_prefix("https://").unwrap();
        let (path, sig) = rest.rsplit_once('/').unwrap();
        assert!(sig.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "{sig}");
        (path, B64URL.decode(sig).unwrap())
    }

    #[test]
    fn kod_ii_with_rsa_is_pss_sha256_salt_32_over_the_path_and_verifies_with_the_public_key() {
        use rsa::signature::Verifier;
        let private = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
        let public = private.to_public_key();
        let id = offline_identity(SigningKey::Rsa(Box::new(private)));
        let ctx = ContextIdentifier::Nip(nip("1111111111"));
        let link = certificate_link(&Environment::Test, &ctx, &nip("1111111111"), &id, &example_hash()).unwrap();
        let serial = certificate_serial_hex(&id.certificate_der).unwrap();
        let (path, sig) = split(&link);
        assert_eq!(
            path,
            format!("qr-test.ksef.mf.gov.pl/certificate/Nip/1111111111/1111111111/{serial}/{EXAMPLE_HASH}")
        );
        assert_eq!(sig.len(), 256);
        let signature = rsa::pss::Signature::try_from(sig.as_slice()).unwrap();
        // Salt length 32 exactly: a verifier fixed to 32 accepts it, one fixed to 20 does not.
        let exact = rsa::pss::VerifyingKey::<Sha256>::new_with_salt_len(public.clone(), 32);
        assert!(exact.verify(path.as_bytes(), &signature).is_ok());
        let other_salt = rsa::pss::VerifyingKey::<Sha256>::new_with_salt_len(public.clone(), 20);
        assert!(other_salt.verify(path.as_bytes(), &signature).is_err());
        // Over the path, nothing else.
        assert!(exact.verify(format!("https://{path}").as_bytes(), &signature).is_err());
        // Randomized: a second link for the same invoice has another signature, and verifies too.
        let again = certificate_link(&Environment::Test, &ctx, &nip("1111111111"), &id, &example_hash()).unwrap();
        assert_ne!(again, link);
        let (_, sig2) = split(&again);
        assert!(exact
            .verify(path.as_bytes(), &rsa::pss::Signature::try_from(sig2.as_slice()).unwrap())
            .is_ok());
    }

    #[test]
    fn kod_ii_with_ec_is_p1363_r_s_and_verifies_with_the_public_key() {
        use p256::ecdsa::signature::Verifier;
        let private = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let public = *private.verifying_key();
        let id = offline_identity(SigningKey::EcP256(private));
        let ctx = ContextIdentifier::InternalId("1111111111-12345".into());
        let link = certificate_link(&Environment::Prod, &ctx, &nip("1111111111"), &id, &example_hash()).unwrap();
        let (path, sig) = split(&link);
        assert!(
            path.starts_with("qr.ksef.mf.gov.pl/certificate/InternalId/1111111111-12345/1111111111/"),
            "{path}"
        );
        assert_eq!(sig.len(), 64, "r||s, not DER");
        let signature = p256::ecdsa::Signature::from_slice(&sig).unwrap();
        assert!(public.verify(path.as_bytes(), &signature).is_ok());
        assert!(public.verify(b"qr.ksef.mf.gov.pl/certificate/other", &signature).is_err());
    }

    #[test]
    fn a_kod_ii_link_verifies_against_its_certificate_and_a_tampered_one_does_not() {
        for key in [
            SigningKey::EcP256(p256::ecdsa::SigningKey::random(&mut rand_core::OsRng)),
            SigningKey::Rsa(Box::new(rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap())),
        ] {
            let id = offline_identity(key);
            let ctx = ContextIdentifier::Nip(nip("1111111111"));
            let link = certificate_link(&Environment::Test, &ctx, &nip("1111111111"), &id, &example_hash()).unwrap();
            assert_eq!(verify_certificate_link(&link, &id.certificate_der), Ok(()));
            // Another invoice's hash in the same link: the signature no longer matches.
            let other = B64URL.encode(invoice_hash(b"another invoice"));
            assert!(verify_certificate_link(&link.replace(EXAMPLE_HASH, &other), &id.certificate_der).is_err());
            // Another certificate: its serial is not the one in the link.
            let stranger = offline_identity(SigningKey::EcP256(p256::ecdsa::SigningKey::random(&mut rand_core::OsRng)));
            assert!(verify_certificate_link(&link, &stranger.certificate_der).is_err());
        }
        // The Ministry's certificate, with a link signed by someone else's key.
        let link = format!("https://qr-test.ksef.mf.gov.pl/certificate/Nip/1111111111/1111111111/01F20A5D352AE590/{EXAMPLE_HASH}/AAAA");
        assert!(verify_certificate_link(&link, &ministry_cert_der())
            .unwrap_err()
            .message
            .contains("does not verify"));
    }

    #[test]
    fn a_small_rsa_key_is_refused_as_our_configuration() {
        let id = offline_identity(SigningKey::Rsa(Box::new(
            rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 1024).unwrap(),
        )));
        let ctx = ContextIdentifier::Nip(nip("1111111111"));
        let f = certificate_link(&Environment::Test, &ctx, &nip("1111111111"), &id, &example_hash()).unwrap_err();
        assert_eq!(f.class, ErrorClass::Operator);
        assert!(f.message.contains("2048"), "{}", f.message);
    }

    /// Decodes a PNG back to its QR code's text.
    fn decode_png(png_bytes: &[u8]) -> String {
        let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.color_type, info.bit_depth), (png::ColorType::Grayscale, png::BitDepth::One));
        let (w, h, row) = (info.width as usize, info.height as usize, info.line_size);
        let mut img =
            rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| if buf[y * row + x / 8] & (0x80 >> (x % 8)) != 0 { 255 } else { 0 });
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1);
        grids[0].decode().unwrap().1
    }

    #[test]
    fn the_png_decodes_back_to_the_exact_link_for_kod_i_and_kod_ii() {
        let ksef = KsefNumber::parse("5265877635-20250729-01004014E040-00").unwrap();
        let url = invoice_link(&Environment::Test, &nip("1111111111"), date(2026, 2, 1), &example_hash());
        let kod1 = invoice_code(
            &Environment::Test,
            &nip("1111111111"),
            date(2026, 2, 1),
            &example_hash(),
            Some(&ksef),
        )
        .unwrap();
        assert_eq!(kod1.label, "5265877635-20250729-01004014E040-00");
        assert_eq!(decode_png(&kod1.png), url);
        let offline = invoice_code(&Environment::Test, &nip("1111111111"), date(2026, 2, 1), &example_hash(), None).unwrap();
        assert_eq!(offline.label, "OFFLINE");
        assert_eq!(decode_png(&offline.png), url);

        let id = offline_identity(SigningKey::EcP256(p256::ecdsa::SigningKey::random(&mut rand_core::OsRng)));
        let ctx = ContextIdentifier::Nip(nip("1111111111"));
        let kod2 = certificate_code(&Environment::Test, &ctx, &nip("1111111111"), &id, &example_hash()).unwrap();
        assert_eq!(kod2.label, "CERTYFIKAT");
        assert_eq!(decode_png(&kod2.png), kod2.url);
        // An RSA signature makes the longest link (342 characters of signature): it fits too.
        let id = offline_identity(SigningKey::Rsa(Box::new(
            rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap(),
        )));
        let kod2 = certificate_code(&Environment::Test, &ctx, &nip("1111111111"), &id, &example_hash()).unwrap();
        assert_eq!(decode_png(&kod2.png), kod2.url);
    }

    #[test]
    fn rendering_is_the_same_bytes_every_time_and_the_label_is_drawn_under_the_code() {
        let url = invoice_link(&Environment::Test, &nip("1111111111"), date(2026, 2, 1), &example_hash());
        let a = render(&url, "OFFLINE").unwrap();
        assert_eq!(a, render(&url, "OFFLINE").unwrap());
        let b = render(&url, "5265877635-20250729-01004014E040-00").unwrap();
        let bare = render(&url, "").unwrap();
        // Same symbol, different label: the images differ only in what is under the code.
        assert_ne!(a.png, b.png);
        let rows = |png_bytes: &[u8]| {
            let mut r = png::Decoder::new(std::io::Cursor::new(png_bytes)).read_info().unwrap();
            let mut buf = vec![0; r.output_buffer_size().unwrap()];
            let info = r.next_frame(&mut buf).unwrap();
            (info.width as usize, info.height as usize, info.line_size, buf)
        };
        let (w, h, line, buf) = rows(&a.png);
        let (bw, bh, _, _) = rows(&bare.png);
        assert_eq!(bw, w);
        assert!(h > bh, "a label band is added under the code");
        // The band holds black pixels (the text), and the rows of the symbol's quiet zone none.
        let black_in = |ys: std::ops::Range<usize>| {
            ys.flat_map(|y| (0..w).map(move |x| (x, y)))
                .any(|(x, y)| buf[y * line + x / 8] & (0x80 >> (x % 8)) == 0)
        };
        assert!(black_in(bh..h));
        assert!(!black_in(bh - QUIET * SCALE..bh));
        // The SVG carries the symbol, the link and the label as text.
        assert!(a.svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(a.svg.contains(">OFFLINE</text>"));
        assert!(a.svg.contains(&format!("<title>{url}</title>")));
        assert!(!bare.svg.contains("<text"));
        assert_eq!(a.svg, render(&url, "OFFLINE").unwrap().svg);
    }

    #[test]
    fn the_svg_draws_the_same_symbol_as_the_png() {
        // Every dark module of the symbol is one `M{x},{y}h1v1h-1z` in the path.
        let url = "https://qr-test.ksef.mf.gov.pl/invoice/1111111111/01-02-2026/x";
        let code = qrcode::QrCode::with_error_correction_level(url, qrcode::EcLevel::M).unwrap();
        let dark = code.to_colors().iter().filter(|c| **c == qrcode::Color::Dark).count();
        let svg = render(url, "CERTYFIKAT").unwrap().svg;
        assert_eq!(svg.matches("h1v1h-1z").count(), dark);
        assert!(svg.contains(&format!("M{},{}h1v1h-1z", QUIET, QUIET)), "the finder's corner");
    }
}
