//! Typed identities, each constructed by parsing: a value of these types is valid by construction.
//!
//! The checks follow KSeF's own rules (see `docs/ksef/API-NOTES.md`): the NIP checksum, the
//! 35-character KSeF number and the 36-character reference numbers, both ending in a CRC-8
//! (polynomial 0x07, initial value 0) over everything before the last dash.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Why a value could not be parsed. The message names the field and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} {value:?}: {reason}")]
pub struct ParseError {
    pub field: &'static str,
    pub value: String,
    pub reason: String,
}

impl ParseError {
    fn new(field: &'static str, value: &str, reason: impl Into<String>) -> Self {
        // Never echo more than a short prefix of what we were given: it may be hostile or huge.
        let value: String = value.chars().take(80).collect();
        ParseError {
            field,
            value,
            reason: reason.into(),
        }
    }
}

/// Implements Display, FromStr, Serialize and Deserialize for a string newtype with a `parse` fn.
macro_rules! string_newtype {
    ($ty:ident) => {
        impl $ty {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl FromStr for $ty {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                $ty::parse(s)
            }
        }
        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $ty::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A Polish tax identification number (NIP): ten digits, the last a weighted checksum.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nip(String);
string_newtype!(Nip);

const NIP_WEIGHTS: [u32; 9] = [6, 5, 7, 2, 3, 4, 5, 6, 7];

impl Nip {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let bytes = s.as_bytes();
        if bytes.len() != 10 || !bytes.iter().all(u8::is_ascii_digit) {
            return Err(ParseError::new("NIP", s, "must be exactly 10 digits"));
        }
        let digit = |i: usize| u32::from(bytes[i] - b'0');
        if digit(0) == 0 {
            return Err(ParseError::new("NIP", s, "must not start with 0"));
        }
        if digit(1) == 0 && digit(2) == 0 {
            // KSeF's own pattern: ^[1-9]((\d[1-9])|([1-9]\d))\d{7}$ (no tax office code 00).
            return Err(ParseError::new("NIP", s, "digits 2 and 3 must not both be 0"));
        }
        let sum: u32 = NIP_WEIGHTS.iter().enumerate().map(|(i, w)| w * digit(i)).sum();
        let check = sum % 11;
        if check == 10 || check != digit(9) {
            return Err(ParseError::new("NIP", s, "checksum digit does not match"));
        }
        Ok(Nip(s.to_owned()))
    }

    /// The checksum digit for nine leading digits, or None when no valid NIP starts with them.
    pub fn checksum_for(first_nine: &[u8; 9]) -> Option<u8> {
        let sum: u32 = NIP_WEIGHTS.iter().zip(first_nine).map(|(w, d)| w * u32::from(*d)).sum();
        let check = sum % 11;
        (check != 10).then_some(check as u8)
    }
}

/// The invoice number as the seller gave it (FA(3) `P_2`): 1 to 256 characters, kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InvoiceNumber(String);
string_newtype!(InvoiceNumber);

impl InvoiceNumber {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let n = s.chars().count();
        if n == 0 || n > 256 {
            return Err(ParseError::new("invoice number (P_2)", s, "must be 1 to 256 characters"));
        }
        if s.chars().any(char::is_control) {
            return Err(ParseError::new("invoice number (P_2)", s, "must not contain control characters"));
        }
        Ok(InvoiceNumber(s.to_owned()))
    }
}

/// FA(3) `RodzajFaktury`: the kind of invoice. Part of KSeF's duplicate key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum InvoiceKind {
    #[serde(rename = "VAT")]
    Vat,
    #[serde(rename = "KOR")]
    Kor,
    #[serde(rename = "ZAL")]
    Zal,
    #[serde(rename = "ROZ")]
    Roz,
    #[serde(rename = "UPR")]
    Upr,
    #[serde(rename = "KOR_ZAL")]
    KorZal,
    #[serde(rename = "KOR_ROZ")]
    KorRoz,
}

impl InvoiceKind {
    pub const ALL: [InvoiceKind; 7] = [
        InvoiceKind::Vat,
        InvoiceKind::Kor,
        InvoiceKind::Zal,
        InvoiceKind::Roz,
        InvoiceKind::Upr,
        InvoiceKind::KorZal,
        InvoiceKind::KorRoz,
    ];

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        Self::ALL.into_iter().find(|k| k.code() == s).ok_or_else(|| {
            ParseError::new(
                "invoice kind (RodzajFaktury)",
                s,
                "must be one of VAT, KOR, ZAL, ROZ, UPR, KOR_ZAL, KOR_ROZ",
            )
        })
    }

    /// The code as FA(3) writes it.
    pub fn code(self) -> &'static str {
        match self {
            InvoiceKind::Vat => "VAT",
            InvoiceKind::Kor => "KOR",
            InvoiceKind::Zal => "ZAL",
            InvoiceKind::Roz => "ROZ",
            InvoiceKind::Upr => "UPR",
            InvoiceKind::KorZal => "KOR_ZAL",
            InvoiceKind::KorRoz => "KOR_ROZ",
        }
    }

    /// Corrections go to the corrections flow and must name the invoice they correct.
    pub fn is_correction(self) -> bool {
        matches!(self, InvoiceKind::Kor | InvoiceKind::KorZal | InvoiceKind::KorRoz)
    }
}

impl fmt::Display for InvoiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for InvoiceKind {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        InvoiceKind::parse(s)
    }
}

/// SHA-256 of the exact invoice bytes; in Base64 with padding this is KSeF's `invoiceHash`
/// and the UPO's `SkrotDokumentu`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash([u8; 32]);

impl ContentHash {
    pub fn of(bytes: &[u8]) -> Self {
        ContentHash(Sha256::digest(bytes).into())
    }

    /// A SHA-256 digest computed elsewhere (streamed over bytes never held at once).
    pub fn from_digest(digest: [u8; 32]) -> Self {
        ContentHash(digest)
    }

    /// Parses KSeF's form: standard Base64 with padding, 44 characters.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.len() != 44 {
            return Err(ParseError::new("content hash", s, "must be 44 characters of Base64"));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| ParseError::new("content hash", s, format!("not Base64: {e}")))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| ParseError::new("content hash", s, "must decode to 32 bytes"))?;
        Ok(ContentHash(arr))
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Standard Base64 with padding, as in KSeF's `invoiceHash`.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// Base64url without padding, as in KSeF's QR code links.
    pub fn to_base64url(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.0)
    }

    /// Lowercase hex, safe in S3 keys and file names.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", self.to_base64())
    }
}

impl FromStr for ContentHash {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        ContentHash::parse(s)
    }
}

impl Serialize for ContentHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ContentHash::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// CRC-8, polynomial 0x07, initial value 0, no reflection: KSeF's check digits.
pub fn crc8(data: &[u8]) -> u8 {
    let mut crc = 0u8;
    for &b in data {
        crc ^= b;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 { (crc << 1) ^ 0x07 } else { crc << 1 };
        }
    }
    crc
}

fn is_upper_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

fn check_date_yyyymmdd(field: &'static str, full: &str, s: &str) -> Result<(), ParseError> {
    chrono::NaiveDate::parse_from_str(s, "%Y%m%d")
        .map(|_| ())
        .map_err(|_| ParseError::new(field, full, format!("{s:?} is not a calendar date YYYYMMDD")))
}

fn check_crc(field: &'static str, s: &str) -> Result<(), ParseError> {
    let (body, cc) = s.rsplit_once('-').expect("caller checked the shape");
    let want = format!("{:02X}", crc8(body.as_bytes()));
    if cc != want {
        return Err(ParseError::new(field, s, format!("CRC-8 check digits are {cc}, expected {want}")));
    }
    Ok(())
}

/// The number KSeF assigns to an accepted invoice:
/// `NNNNNNNNNN-YYYYMMDD-XXXXXXXXXXXX-CC` (seller NIP, acceptance date, 12 uppercase hex, CRC-8).
/// The 36-character form of KSeF 1.0 (`XXXXXX-XXXXXX` in the middle) is accepted too.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KsefNumber(String);
string_newtype!(KsefNumber);

impl KsefNumber {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        const F: &str = "KSeF number";
        let parts: Vec<&str> = s.split('-').collect();
        let hex_ok = match parts.as_slice() {
            [_, _, hex, _] => hex.len() == 12 && is_upper_hex(hex),
            [_, _, a, b, _] => a.len() == 6 && b.len() == 6 && is_upper_hex(a) && is_upper_hex(b),
            _ => false,
        };
        if !(s.len() == 35 || s.len() == 36) || !hex_ok {
            return Err(ParseError::new(F, s, "must look like NNNNNNNNNN-YYYYMMDD-XXXXXXXXXXXX-CC"));
        }
        let cc = parts[parts.len() - 1];
        if cc.len() != 2 || !is_upper_hex(cc) {
            return Err(ParseError::new(F, s, "must end in two uppercase hex check digits"));
        }
        if !parts[0].bytes().all(|b| b.is_ascii_digit()) || parts[0].len() != 10 {
            return Err(ParseError::new(F, s, "must start with the seller's 10-digit NIP"));
        }
        if parts[1].len() != 8 || !parts[1].bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::new(F, s, "must carry a date YYYYMMDD after the NIP"));
        }
        check_date_yyyymmdd(F, s, parts[1])?;
        check_crc(F, s)?;
        Ok(KsefNumber(s.to_owned()))
    }

    /// Builds a 35-character KSeF number, computing the check digits (the simulator uses this).
    pub fn build(seller: &Nip, date: chrono::NaiveDate, unique: u64) -> KsefNumber {
        let body = format!("{}-{}-{:012X}", seller, date.format("%Y%m%d"), unique & 0xFFFF_FFFF_FFFF);
        let cc = crc8(body.as_bytes());
        KsefNumber(format!("{body}-{cc:02X}"))
    }

    /// The seller NIP at the start of the number (not checksum-validated: KSeF wrote it).
    pub fn seller_nip_digits(&self) -> &str {
        &self.0[..10]
    }
}

/// A KSeF reference number (`YYYYMMDD-TT-XXXXXXXXXX-XXXXXXXXXX-CC`, 36 characters): sessions
/// (`SO` online, `SB` batch), invoices within a session (`EE`, ...), auth operations (`AU`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KsefReference(String);
string_newtype!(KsefReference);

impl KsefReference {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        const F: &str = "KSeF reference number";
        let parts: Vec<&str> = s.split('-').collect();
        let shape_ok = s.len() == 36
            && matches!(parts.as_slice(), [d, t, a, b, c]
                if d.len() == 8 && d.bytes().all(|x| x.is_ascii_digit())
                && t.len() == 2 && t.bytes().all(|x| x.is_ascii_uppercase())
                && a.len() == 10 && is_upper_hex(a)
                && b.len() == 10 && is_upper_hex(b)
                && c.len() == 2 && is_upper_hex(c));
        if !shape_ok {
            return Err(ParseError::new(F, s, "must look like YYYYMMDD-TT-XXXXXXXXXX-XXXXXXXXXX-CC"));
        }
        check_date_yyyymmdd(F, s, parts[0])?;
        check_crc(F, s)?;
        Ok(KsefReference(s.to_owned()))
    }

    /// Builds a reference number with valid check digits (the simulator uses this).
    pub fn build(date: chrono::NaiveDate, kind: &str, a: u64, b: u64) -> KsefReference {
        assert!(
            kind.len() == 2 && kind.bytes().all(|x| x.is_ascii_uppercase()),
            "kind is two uppercase letters"
        );
        let body = format!(
            "{}-{kind}-{:010X}-{:010X}",
            date.format("%Y%m%d"),
            a & 0xFF_FFFF_FFFF,
            b & 0xFF_FFFF_FFFF
        );
        let cc = crc8(body.as_bytes());
        KsefReference(format!("{body}-{cc:02X}"))
    }

    /// The two-letter kind: `SO`, `SB`, `EE`, `AU`, ...
    pub fn kind(&self) -> &str {
        &self.0[9..11]
    }
}

/// Checks an identifier that travels in S3 keys, queue attributes and log lines.
fn check_token(field: &'static str, s: &str, max: usize, allow: impl Fn(char) -> bool) -> Result<(), ParseError> {
    if s.is_empty() || s.len() > max {
        return Err(ParseError::new(field, s, format!("must be 1 to {max} bytes")));
    }
    if let Some(bad) = s.chars().find(|c| !allow(*c)) {
        return Err(ParseError::new(field, s, format!("character {bad:?} is not allowed")));
    }
    Ok(())
}

/// One id per document across the ERP, the relay, logs and metrics. The ERP may set its own
/// (S3 object metadata `trace-id`); otherwise the relay makes one in W3C trace-id form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(String);
string_newtype!(TraceId);

impl TraceId {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        check_token("trace id", s, 128, |c| c.is_ascii_alphanumeric() || "-_.:".contains(c))?;
        Ok(TraceId(s.to_owned()))
    }

    /// 32 lowercase hex digits (128 random bits), the W3C trace-id form.
    pub fn generate() -> TraceId {
        let v: u128 = rand::random();
        TraceId(format!("{v:032x}"))
    }
}

/// The ERP's own id for the document: the file name in `inbox/{sellerNip}/{erpDocId}.xml`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErpDocumentId(String);
string_newtype!(ErpDocumentId);

impl ErpDocumentId {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        check_token("ERP document id", s, 200, |c| !c.is_control() && c != '/' && c != '\\')?;
        if s == "." || s == ".." {
            return Err(ParseError::new("ERP document id", s, "must not be a path component"));
        }
        Ok(ErpDocumentId(s.to_owned()))
    }
}

/// KSeF's duplicate key and our business identity: seller NIP + RodzajFaktury + P_2.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DocumentKey {
    pub seller_nip: Nip,
    pub kind: InvoiceKind,
    pub invoice_number: InvoiceNumber,
}

impl DocumentKey {
    pub fn new(seller_nip: Nip, kind: InvoiceKind, invoice_number: InvoiceNumber) -> Self {
        DocumentKey {
            seller_nip,
            kind,
            invoice_number,
        }
    }

    /// A single string for stores and messages: `{nip}|{kind}|{P_2}`. The NIP and kind have
    /// fixed alphabets without `|`, so the P_2 part may contain anything and the form stays unique.
    pub fn storage_id(&self) -> String {
        format!("{}|{}|{}", self.seller_nip, self.kind, self.invoice_number)
    }

    pub fn parse_storage_id(s: &str) -> Result<Self, ParseError> {
        let mut it = s.splitn(3, '|');
        match (it.next(), it.next(), it.next()) {
            (Some(nip), Some(kind), Some(num)) => Ok(DocumentKey::new(
                Nip::parse(nip)?,
                InvoiceKind::parse(kind)?,
                InvoiceNumber::parse(num)?,
            )),
            _ => Err(ParseError::new("document id", s, "must be {nip}|{kind}|{invoice number}")),
        }
    }
}

impl fmt::Display for DocumentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.seller_nip, self.kind, self.invoice_number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nip_checksum() {
        assert!(Nip::parse("5265877635").is_ok());
        assert!(Nip::parse("9999999999").is_ok());
        let e = Nip::parse("5265877636").unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
        assert!(Nip::parse("526587763").is_err());
        assert!(Nip::parse("52658776a5").is_err());
        assert!(Nip::parse("0265877635").is_err());
    }

    #[test]
    fn ksef_numbers_from_the_docs_parse() {
        for s in [
            "5265877635-20250626-010080DD2B5E-26",
            "5265877635-20250916-010040741B3E-46",
            "5555555555-20250828-010080615740-E4",
        ] {
            KsefNumber::parse(s).unwrap();
        }
        let e = KsefNumber::parse("5265877635-20250626-010080DD2B5E-27").unwrap_err();
        assert!(e.reason.contains("CRC-8"), "{e}");
        assert!(KsefNumber::parse("5265877635-20251326-010080DD2B5E-26").is_err());
        assert!(KsefNumber::parse("5265877635-20250626-010080dd2b5e-26").is_err());
    }

    #[test]
    fn reference_numbers_from_the_docs_parse() {
        let r = KsefReference::parse("20250625-SO-2C3E6C8000-B675CF5D68-07").unwrap();
        assert_eq!(r.kind(), "SO");
        KsefReference::parse("20250514-AU-2DFC46C000-3AC6D5877F-D4").unwrap();
        assert!(KsefReference::parse("20250625-SO-2C3E6C8000-B675CF5D68-08").is_err());
        assert!(KsefReference::parse("20250625-so-2C3E6C8000-B675CF5D68-07").is_err());
    }

    #[test]
    fn content_hash_round_trips_in_ksef_form() {
        let h = ContentHash::of(b"<Faktura/>");
        assert_eq!(h.to_base64().len(), 44);
        assert_eq!(ContentHash::parse(&h.to_base64()).unwrap(), h);
        assert_eq!(h.to_hex().len(), 64);
        assert!(!h.to_base64url().contains('='));
    }

    #[test]
    fn ids_reject_what_would_break_keys_or_logs() {
        assert!(ErpDocumentId::parse("FV/2026/1").is_err());
        assert!(ErpDocumentId::parse("..").is_err());
        assert!(ErpDocumentId::parse("FV-2026-0001").is_ok());
        assert!(TraceId::parse("abc def").is_err());
        assert_eq!(TraceId::generate().as_str().len(), 32);
        assert!(InvoiceNumber::parse("").is_err());
        assert!(InvoiceNumber::parse("FV\n1").is_err());
    }

    #[test]
    fn document_key_storage_id_round_trips_with_separators_in_p2() {
        let k = DocumentKey::new(
            Nip::parse("9999999999").unwrap(),
            InvoiceKind::KorZal,
            InvoiceNumber::parse("FV|1/2026").unwrap(),
        );
        assert_eq!(DocumentKey::parse_storage_id(&k.storage_id()).unwrap(), k);
    }

    proptest! {
        #[test]
        fn every_built_nip_parses_and_every_wrong_check_digit_fails(first in proptest::array::uniform9(0u8..10), wrong in 0u8..10) {
            prop_assume!(first[0] != 0 && !(first[1] == 0 && first[2] == 0));
            if let Some(check) = Nip::checksum_for(&first) {
                let s: String = first.iter().chain(std::iter::once(&check)).map(|d| char::from(b'0' + d)).collect();
                prop_assert!(Nip::parse(&s).is_ok());
                if wrong != check {
                    let bad: String = first.iter().chain(std::iter::once(&wrong)).map(|d| char::from(b'0' + d)).collect();
                    prop_assert!(Nip::parse(&bad).is_err());
                }
            }
        }

        #[test]
        fn built_ksef_numbers_parse_and_a_changed_char_is_caught(unique in any::<u64>(), days in 0i64..3000, pos in 0usize..32) {
            let nip = Nip::parse("5265877635").unwrap();
            let date = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + chrono::Days::new(days as u64);
            let n = KsefNumber::build(&nip, date, unique);
            prop_assert_eq!(n.as_str().len(), 35);
            prop_assert!(KsefNumber::parse(n.as_str()).is_ok());
            // CRC-8 catches every single-character change.
            let mut bytes = n.as_str().as_bytes().to_vec();
            let orig = bytes[pos];
            if orig != b'-' {
                bytes[pos] = if orig == b'1' { b'2' } else { b'1' };
                let changed = String::from_utf8(bytes).unwrap();
                prop_assert!(KsefNumber::parse(&changed).is_err());
            }
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,64}") {
            let _ = Nip::parse(&s);
            let _ = KsefNumber::parse(&s);
            let _ = KsefReference::parse(&s);
            let _ = ContentHash::parse(&s);
            let _ = TraceId::parse(&s);
            let _ = ErpDocumentId::parse(&s);
            let _ = InvoiceNumber::parse(&s);
            let _ = DocumentKey::parse_storage_id(&s);
        }
    }
}
