//! The identity fields of an FA(3) invoice, read in one streaming pass.
//!
//! Safe on hostile input: a DOCTYPE (and with it every entity declaration) is refused before
//! anything is expanded, nesting depth is bounded, and nothing here panics.

use chrono::NaiveDate;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use relay_domain::{DocumentKey, InvoiceKind, InvoiceNumber, Nip, ParseError};

/// The FA(3) target namespace.
pub const FA3_NAMESPACE: &str = "http://crd.gov.pl/wzor/2025/06/25/13775/";
/// Deeper than any valid FA(3) document; deeper input is refused rather than walked.
const MAX_DEPTH: usize = 64;

/// What the relay needs to know about an invoice before validating it fully.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceIdentity {
    pub key: DocumentKey,
    /// `P_1`, the issue date.
    pub issue_date: NaiveDate,
    /// `KodFormularza/@kodSystemowy`, `FA (3)` for FA(3).
    pub system_code: String,
    /// The invoice carries `Zalacznik` (an attachment): KSeF takes it only in a batch session.
    pub has_attachment: bool,
}

/// Why the identity could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("not well-formed XML at byte {position}: {message}")]
    Malformed { position: u64, message: String },
    #[error("a DOCTYPE declaration is not allowed (KSeF refuses DTDs; entity declarations could be an attack)")]
    Doctype,
    #[error("nesting deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("the root element is <{0}>, an FA(3) invoice has <Faktura>")]
    WrongRoot(String),
    #[error("the root element's namespace is {found:?}; FA(3) is {FA3_NAMESPACE:?}{hint}")]
    WrongNamespace { found: String, hint: String },
    #[error("required element {0} is missing")]
    Missing(&'static str),
    #[error("{path}: {source}")]
    Invalid { path: &'static str, source: ParseError },
}

const NIP_PATH: &str = "/Faktura/Podmiot1/DaneIdentyfikacyjne/NIP";
const KIND_PATH: &str = "/Faktura/Fa/RodzajFaktury";
const P2_PATH: &str = "/Faktura/Fa/P_2";
const P1_PATH: &str = "/Faktura/Fa/P_1";
const CODE_PATH: &str = "/Faktura/Naglowek/KodFormularza";

fn namespace_hint(ns: &str) -> String {
    // Name the schemas people most often send by mistake.
    if ns.contains("2023/06/29/12648") {
        " (this is FA(2), which KSeF no longer accepts on PRD/DEMO)".into()
    } else if ns.contains("oasis") || ns.contains("peppol") {
        " (this looks like a PEF/UBL document, which is sent under another form code)".into()
    } else {
        String::new()
    }
}

/// Reads the identity of an FA(3) invoice from its exact bytes.
pub fn read_identity(xml: &[u8]) -> Result<InvoiceIdentity, IdentityError> {
    let mut reader = NsReader::from_reader(xml);
    reader.config_mut().expand_empty_elements = true;
    let mut path: Vec<String> = Vec::new();
    let mut buf = Vec::new();
    let (mut nip, mut kind, mut p2, mut p1, mut code) = (None, None, None, None, None);
    let mut has_attachment = false;
    let mut text = String::new();
    loop {
        let position = reader.buffer_position();
        let event = reader.read_resolved_event_into(&mut buf).map_err(|e| IdentityError::Malformed {
            position,
            message: e.to_string(),
        })?;
        match event {
            (_, Event::DocType(_)) => return Err(IdentityError::Doctype),
            (ns, Event::Start(e)) => {
                let local = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if path.is_empty() {
                    if local != "Faktura" {
                        return Err(IdentityError::WrongRoot(local));
                    }
                    let found = match ns {
                        ResolveResult::Bound(n) => String::from_utf8_lossy(n.as_ref()).into_owned(),
                        _ => String::new(),
                    };
                    if found != FA3_NAMESPACE {
                        return Err(IdentityError::WrongNamespace {
                            hint: namespace_hint(&found),
                            found,
                        });
                    }
                }
                if path.len() >= MAX_DEPTH {
                    return Err(IdentityError::TooDeep);
                }
                path.push(local);
                text.clear();
                if path.len() == 2 && path[1] == "Zalacznik" {
                    has_attachment = true;
                }
                if joined(&path) == CODE_PATH {
                    for a in e.attributes().flatten() {
                        if a.key.local_name().as_ref() == b"kodSystemowy" {
                            code = Some(
                                a.unescape_value()
                                    .map_err(|e| IdentityError::Malformed {
                                        position,
                                        message: e.to_string(),
                                    })?
                                    .into_owned(),
                            );
                        }
                    }
                }
            }
            (_, Event::Text(t)) => {
                let decoded = t.decode().map_err(|e| IdentityError::Malformed {
                    position,
                    message: e.to_string(),
                })?;
                text.push_str(&decoded);
            }
            (_, Event::GeneralRef(r)) => {
                // Only the five predefined entities and character references exist without a DTD.
                let name = r.decode().map_err(|e| IdentityError::Malformed {
                    position,
                    message: e.to_string(),
                })?;
                let resolved = match name.as_ref() {
                    "lt" => Some('<'),
                    "gt" => Some('>'),
                    "amp" => Some('&'),
                    "apos" => Some('\''),
                    "quot" => Some('"'),
                    _ => r.resolve_char_ref().ok().flatten(),
                };
                match resolved {
                    Some(c) => text.push(c),
                    None => {
                        return Err(IdentityError::Malformed {
                            position,
                            message: format!("undeclared entity &{name};"),
                        })
                    }
                }
            }
            (_, Event::CData(c)) => text.push_str(&String::from_utf8_lossy(&c)),
            (_, Event::End(_)) => {
                let p = joined(&path);
                let slot = match p.as_str() {
                    NIP_PATH => Some(&mut nip),
                    KIND_PATH => Some(&mut kind),
                    P2_PATH => Some(&mut p2),
                    P1_PATH => Some(&mut p1),
                    _ => None,
                };
                if let Some(slot) = slot {
                    if slot.is_none() {
                        *slot = Some(text.clone());
                    }
                }
                path.pop();
                text.clear();
            }
            (_, Event::Eof) => break,
            _ => {}
        }
        buf.clear();
    }
    let nip = Nip::parse(nip.as_deref().ok_or(IdentityError::Missing(NIP_PATH))?)
        .map_err(|source| IdentityError::Invalid { path: NIP_PATH, source })?;
    let kind = InvoiceKind::parse(kind.as_deref().ok_or(IdentityError::Missing(KIND_PATH))?)
        .map_err(|source| IdentityError::Invalid { path: KIND_PATH, source })?;
    let number = InvoiceNumber::parse(p2.as_deref().ok_or(IdentityError::Missing(P2_PATH))?)
        .map_err(|source| IdentityError::Invalid { path: P2_PATH, source })?;
    let p1 = p1.ok_or(IdentityError::Missing(P1_PATH))?;
    let issue_date = NaiveDate::parse_from_str(&p1, "%Y-%m-%d").map_err(|_| IdentityError::Invalid {
        path: P1_PATH,
        source: ParseError {
            field: "issue date (P_1)",
            value: p1.chars().take(40).collect(),
            reason: "must be a date YYYY-MM-DD".into(),
        },
    })?;
    Ok(InvoiceIdentity {
        key: DocumentKey::new(nip, kind, number),
        issue_date,
        system_code: code.ok_or(IdentityError::Missing(CODE_PATH))?,
        has_attachment,
    })
}

fn joined(path: &[String]) -> String {
    let mut s = String::new();
    for p in path {
        s.push('/');
        s.push_str(p);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn samples() -> Vec<PathBuf> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/ksef/samples");
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "xml"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn reads_every_official_sample() {
        let files = samples();
        assert_eq!(files.len(), 12);
        for f in files {
            let id = read_identity(&std::fs::read(&f).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            assert_eq!(id.key.seller_nip.as_str(), "9999999999");
            assert_eq!(id.system_code, "FA (3)");
            // Only sample 24 carries an attachment (Zalacznik).
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            assert_eq!(id.has_attachment, name == "FA_3_Przykład_24.xml", "{name}");
        }
        let one =
            read_identity(&std::fs::read(samples().into_iter().find(|p| p.ends_with("FA_3_Przykład_1.xml")).unwrap()).unwrap()).unwrap();
        assert_eq!(one.key.invoice_number.as_str(), "FV2026/02/150");
        assert_eq!(one.key.kind, InvoiceKind::Vat);
        assert_eq!(one.issue_date, NaiveDate::from_ymd_opt(2026, 2, 15).unwrap());
    }

    const NS: &str = "http://crd.gov.pl/wzor/2025/06/25/13775/";

    fn doc(fa: &str) -> String {
        format!(
            r#"<Faktura xmlns="{NS}"><Naglowek><KodFormularza kodSystemowy="FA (3)" wersjaSchemy="1-0E">FA</KodFormularza></Naglowek><Podmiot1><DaneIdentyfikacyjne><NIP>5265877635</NIP></DaneIdentyfikacyjne></Podmiot1><Fa>{fa}</Fa></Faktura>"#
        )
    }

    #[test]
    fn entities_in_p2_are_decoded_and_bad_input_is_named() {
        let id = read_identity(doc("<P_1>2026-01-02</P_1><P_2>A&amp;B&#47;1</P_2><RodzajFaktury>VAT</RodzajFaktury>").as_bytes()).unwrap();
        assert_eq!(id.key.invoice_number.as_str(), "A&B/1");
        assert_eq!(
            read_identity(doc("<P_1>2026-01-02</P_1><RodzajFaktury>VAT</RodzajFaktury>").as_bytes()),
            Err(IdentityError::Missing(P2_PATH))
        );
        assert!(matches!(
            read_identity(doc("<P_1>2026-01-02</P_1><P_2>1</P_2><RodzajFaktury>XYZ</RodzajFaktury>").as_bytes()),
            Err(IdentityError::Invalid { path: KIND_PATH, .. })
        ));
        assert!(matches!(
            read_identity(doc("<P_1>2026-13-02</P_1><P_2>1</P_2><RodzajFaktury>VAT</RodzajFaktury>").as_bytes()),
            Err(IdentityError::Invalid { path: P1_PATH, .. })
        ));
    }

    #[test]
    fn hostile_and_foreign_documents_are_refused() {
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><Faktura>&lol2;</Faktura>"#;
        assert_eq!(read_identity(bomb.as_bytes()), Err(IdentityError::Doctype));
        assert!(matches!(
            read_identity(b"<Invoice xmlns=\"urn:oasis:names:specification:ubl:schema:xsd:Invoice-2\"/>"),
            Err(IdentityError::WrongRoot(_))
        ));
        let fa2 = r#"<Faktura xmlns="http://crd.gov.pl/wzor/2023/06/29/12648/"/>"#;
        match read_identity(fa2.as_bytes()) {
            Err(e @ IdentityError::WrongNamespace { .. }) => assert!(e.to_string().contains("FA(2)"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            read_identity(b"<Faktura xmlns=\"http://crd.gov.pl/wzor/2025/06/25/13775/\"><a></b></Faktura>"),
            Err(IdentityError::Malformed { .. })
        ));
        let deep = format!("<Faktura xmlns=\"{NS}\">{}{}</Faktura>", "<a>".repeat(100), "</a>".repeat(100));
        assert_eq!(read_identity(deep.as_bytes()), Err(IdentityError::TooDeep));
        assert!(matches!(
            read_identity(doc("<P_2>&xxe;</P_2>").as_bytes()),
            Err(IdentityError::Malformed { .. })
        ));
    }
}
