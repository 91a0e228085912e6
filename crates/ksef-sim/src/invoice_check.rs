//! The simulator's invoice check: what KSeF would answer 450 to, in a basic form. XML 1.0 well
//! formed, UTF-8 without a BOM, root `Faktura` in the FA(3) namespace, `KodFormularza` FA (3),
//! and the identity fields KSeF's duplicate rule needs (Podmiot1 NIP, RodzajFaktury, P_2) plus
//! P_1. The full FA(3) validation lives in the `relay-fa3` crate; this check is deliberately
//! narrower and says so in its messages.

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use relay_domain::{InvoiceKind, InvoiceNumber, Nip};

pub const FA3_NAMESPACE: &str = "http://crd.gov.pl/wzor/2025/06/25/13775/";

/// What the simulator needs from a valid invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceFacts {
    pub seller: Nip,
    pub kind: InvoiceKind,
    pub number: InvoiceNumber,
    /// P_1, the issue date, as written (YYYY-MM-DD).
    pub issue_date: String,
    pub has_attachment: bool,
}

/// Checks an invoice; the error is the `details` list of a 450 status.
pub fn check(bytes: &[u8]) -> Result<InvoiceFacts, Vec<String>> {
    if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
        return Err(vec![
            "Nieprawidłowy XML: plik zawiera znacznik BOM (UTF-8 bez BOM jest wymagany).".into()
        ]);
    }
    let text = std::str::from_utf8(bytes).map_err(|e| vec![format!("Nieprawidłowy XML: niepoprawna sekwencja UTF-8 ({e}).")])?;
    let mut reader = NsReader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut path: Vec<String> = Vec::new();
    let mut root_checked = false;
    let (mut nip, mut kind, mut number, mut p1, mut form_code) = (None, None, None, None, None);
    let mut has_attachment = false;
    let mut text_buf = String::new();
    loop {
        let ev = match reader.read_resolved_event() {
            Ok(ev) => ev,
            Err(e) => {
                let pos = reader.error_position();
                return Err(vec![format!("Nieprawidłowy XML: {e} (pozycja {pos}).")]);
            }
        };
        match ev {
            (ns, Event::Start(e)) | (ns, Event::Empty(e)) if !root_checked => {
                root_checked = true;
                let local = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                let ns_ok = matches!(ns, ResolveResult::Bound(n) if n.as_ref() == FA3_NAMESPACE.as_bytes());
                if local != "Faktura" || !ns_ok {
                    return Err(vec![format!(
                        "Element główny {local} nie jest elementem Faktura w przestrzeni nazw {FA3_NAMESPACE} (schemat FA (3))."
                    )]);
                }
                path.push(local);
            }
            (_, Event::Start(e)) => {
                let local = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if local == "KodFormularza" {
                    for a in e.attributes().flatten() {
                        if a.key.local_name().as_ref() == b"kodSystemowy" {
                            form_code = Some(String::from_utf8_lossy(&a.value).into_owned());
                        }
                    }
                }
                if local == "Zalacznik" {
                    has_attachment = true;
                }
                path.push(local);
                text_buf.clear();
            }
            (_, Event::Empty(e)) if e.local_name().as_ref() == b"Zalacznik" => has_attachment = true,
            (_, Event::Text(t)) => {
                text_buf.push_str(&t.decode().map_err(|e| vec![format!("Nieprawidłowy XML: {e}.")])?);
            }
            (_, Event::GeneralRef(r)) => {
                // Entity and character references inside text, e.g. &amp; in P_2.
                let name = r.decode().map_err(|e| vec![format!("Nieprawidłowy XML: {e}.")])?;
                match r.resolve_char_ref() {
                    Ok(Some(c)) => text_buf.push(c),
                    _ => text_buf.push_str(match name.as_ref() {
                        "amp" => "&",
                        "lt" => "<",
                        "gt" => ">",
                        "quot" => "\"",
                        "apos" => "'",
                        other => return Err(vec![format!("Nieprawidłowy XML: nieznana encja &{other};.")]),
                    }),
                }
            }
            (_, Event::CData(t)) => text_buf.push_str(&String::from_utf8_lossy(&t)),
            (_, Event::End(_)) => {
                let p: Vec<&str> = path.iter().map(String::as_str).collect();
                match p.as_slice() {
                    ["Faktura", "Podmiot1", "DaneIdentyfikacyjne", "NIP"] => nip = Some(text_buf.trim().to_owned()),
                    ["Faktura", "Fa", "RodzajFaktury"] => kind = Some(text_buf.trim().to_owned()),
                    ["Faktura", "Fa", "P_2"] => number = Some(text_buf.clone()),
                    ["Faktura", "Fa", "P_1"] => p1 = Some(text_buf.trim().to_owned()),
                    _ => {}
                }
                path.pop();
                text_buf.clear();
            }
            (_, Event::PI(_)) => return Err(vec!["Nieprawidłowy XML: instrukcje przetwarzania są niedozwolone.".into()]),
            (_, Event::DocType(_)) => return Err(vec!["Nieprawidłowy XML: deklaracja DOCTYPE jest niedozwolona.".into()]),
            (_, Event::Eof) => break,
            _ => {}
        }
    }
    if !root_checked {
        return Err(vec!["Nieprawidłowy XML: brak elementu głównego.".into()]);
    }
    let mut errors = Vec::new();
    if form_code.as_deref() != Some("FA (3)") {
        errors.push(format!(
            "Naglowek/KodFormularza/@kodSystemowy: oczekiwano 'FA (3)', jest {form_code:?}."
        ));
    }
    let seller = match nip.as_deref().map(Nip::parse) {
        Some(Ok(n)) => Some(n),
        Some(Err(e)) => {
            errors.push(format!("Podmiot1/DaneIdentyfikacyjne/NIP: {e}."));
            None
        }
        None => {
            errors.push("Brak wymaganego elementu Podmiot1/DaneIdentyfikacyjne/NIP.".into());
            None
        }
    };
    let kind = match kind.as_deref().map(InvoiceKind::parse) {
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => {
            errors.push(format!("Fa/RodzajFaktury: {e}."));
            None
        }
        None => {
            errors.push("Brak wymaganego elementu Fa/RodzajFaktury.".into());
            None
        }
    };
    let number = match number.as_deref().map(InvoiceNumber::parse) {
        Some(Ok(n)) => Some(n),
        Some(Err(e)) => {
            errors.push(format!("Fa/P_2: {e}."));
            None
        }
        None => {
            errors.push("Brak wymaganego elementu Fa/P_2.".into());
            None
        }
    };
    let issue_date = match p1 {
        Some(d) if chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d").is_ok() => Some(d),
        Some(d) => {
            errors.push(format!("Fa/P_1: wartość {d:?} nie jest datą RRRR-MM-DD."));
            None
        }
        None => {
            errors.push("Brak wymaganego elementu Fa/P_1.".into());
            None
        }
    };
    match (seller, kind, number, issue_date) {
        (Some(seller), Some(kind), Some(number), Some(issue_date)) if errors.is_empty() => Ok(InvoiceFacts {
            seller,
            kind,
            number,
            issue_date,
            has_attachment,
        }),
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<(String, Vec<u8>)> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/ksef/samples");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "xml") {
                out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
        let pdf = format!("{dir}/cirfmf-templates/ksef-pdf-generator-invoice.xml");
        out.push((pdf.clone(), std::fs::read(&pdf).unwrap()));
        assert!(out.len() >= 13, "expected the official samples, found {}", out.len());
        out
    }

    #[test]
    fn every_official_sample_passes_with_its_identity() {
        for (name, bytes) in samples() {
            let facts = check(&bytes).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert!(!facts.number.as_str().is_empty(), "{name}");
            assert_eq!(facts.has_attachment, name.contains("Przykład_24"), "{name}");
        }
    }

    #[test]
    fn the_template_with_placeholders_and_broken_xml_are_refused() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/ksef/samples/cirfmf-templates");
        let template = std::fs::read(format!("{dir}/invoice-template_v3.xml")).unwrap();
        let e = check(&template).unwrap_err();
        assert!(e.iter().any(|d| d.contains("NIP")), "{e:?}");

        let good = samples().remove(0).1;
        let text = String::from_utf8(good).unwrap();
        // Unclosed element.
        let broken = text.replacen("</Podmiot1>", "", 1);
        assert!(check(broken.as_bytes()).unwrap_err()[0].contains("Nieprawidłowy XML"));
        // Wrong namespace.
        let wrong_ns = text.replace(FA3_NAMESPACE, "http://crd.gov.pl/wzor/2023/06/29/12648/");
        assert!(check(wrong_ns.as_bytes()).unwrap_err()[0].contains("FA (3)"));
        // BOM.
        let mut bom = vec![0xEF, 0xBB, 0xBF];
        bom.extend_from_slice(text.as_bytes());
        assert!(check(&bom).unwrap_err()[0].contains("BOM"));
        // Missing P_2.
        let start = text.find("<P_2>").unwrap();
        let end = text.find("</P_2>").unwrap() + "</P_2>".len();
        let no_p2 = format!("{}{}", &text[..start], &text[end..]);
        assert!(check(no_p2.as_bytes()).unwrap_err().iter().any(|d| d.contains("P_2")));
    }
}
