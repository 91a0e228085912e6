//! The facts the relay reads from a UPO (the official receipt): the KSeF number, the document
//! hash (`SkrotDokumentu`, equal to KSeF's invoiceHash), when KSeF numbered it, and how it filed
//! it (`TrybWysylki`: Online or Offline). Read leniently, as the notes
//! advise: test-environment UPOs do not validate strictly against upo-v4-3.xsd.

use quick_xml::events::Event;
use quick_xml::Reader;

/// One document a UPO lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpoDocument {
    pub ksef_number: String,
    /// `SkrotDokumentu`, Base64.
    pub hash: String,
    /// `DataNadaniaNumeruKSeF`: when KSeF numbered it, legally the date of receipt (the API's
    /// `acquisitionDate`). None when absent or unreadable.
    pub numbered_at: Option<chrono::DateTime<chrono::Utc>>,
    /// `TrybWysylki`: how KSeF filed it. None when absent or not a word KSeF uses.
    pub sending_mode: Option<relay_domain::InvoicingMode>,
}

/// How the UPO says KSeF filed the document with this hash (`TrybWysylki`).
pub fn sending_mode_of(xml: &[u8], hash: &relay_domain::ContentHash) -> Option<relay_domain::InvoicingMode> {
    let hash = hash.to_base64();
    documents(xml).into_iter().find(|d| d.hash == hash).and_then(|d| d.sending_mode)
}

/// Every document the UPO lists.
pub fn documents(xml: &[u8]) -> Vec<UpoDocument> {
    let mut reader = Reader::from_reader(xml);
    let mut buf = Vec::new();
    let mut current: Option<&'static str> = None;
    let (mut number, mut hash, mut numbered_at, mut sending_mode) = (None::<String>, None::<String>, None, None);
    let mut out = Vec::new();
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) => {
                current = match e.local_name().as_ref() {
                    b"NumerKSeFDokumentu" => Some("number"),
                    b"SkrotDokumentu" => Some("hash"),
                    b"DataNadaniaNumeruKSeF" => Some("numbered_at"),
                    b"TrybWysylki" => Some("sending_mode"),
                    _ => None,
                };
            }
            Ok(Event::Text(t)) => {
                if let Ok(text) = t.decode() {
                    let text = text.trim();
                    match current {
                        Some("number") => number = Some(text.to_owned()),
                        Some("hash") => hash = Some(text.to_owned()),
                        Some("sending_mode") => sending_mode = relay_domain::InvoicingMode::parse(text),
                        Some("numbered_at") => {
                            numbered_at = chrono::DateTime::parse_from_rfc3339(text)
                                .ok()
                                .map(|t| t.with_timezone(&chrono::Utc))
                        }
                        _ => {}
                    }
                }
            }
            Ok(Event::End(e)) => {
                current = None;
                // A document's elements end with its own element (`Dokument`): all three read.
                if e.local_name().as_ref() == b"Dokument" {
                    if let (Some(n), Some(h)) = (number.take(), hash.take()) {
                        out.push(UpoDocument {
                            ksef_number: n,
                            hash: h,
                            numbered_at: numbered_at.take(),
                            sending_mode: sending_mode.take(),
                        });
                    }
                    numbered_at = None;
                    sending_mode = None;
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
        buf.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_official_example() {
        let xml = include_bytes!("../../../data/ksef/upo/upo-faktura-kontekst-id-nip.xml");
        let docs = super::documents(xml);
        assert_eq!(docs.len(), 1, "{docs:?}");
        assert!(relay_domain::KsefNumber::parse(&docs[0].ksef_number).is_ok(), "{docs:?}");
        assert!(relay_domain::ContentHash::parse(&docs[0].hash).is_ok(), "{docs:?}");
        assert_eq!(
            docs[0].numbered_at.map(|t| t.to_rfc3339()),
            Some("2025-09-16T09:05:41.045+00:00".to_owned()),
            "DataNadaniaNumeruKSeF, the original's acquisition date"
        );
        let mode = String::from_utf8_lossy(xml)
            .split("<TrybWysylki>")
            .nth(1)
            .map(|t| t.split('<').next().unwrap().to_owned());
        assert_eq!(mode.as_deref(), Some("Online"), "the Ministry's example is an online invoice");
        assert_eq!(docs[0].sending_mode, Some(relay_domain::InvoicingMode::Online));
        let offline = String::from_utf8_lossy(xml).replace("<TrybWysylki>Online<", "<TrybWysylki>Offline<");
        let hash = relay_domain::ContentHash::parse(&docs[0].hash).unwrap();
        assert_eq!(
            super::sending_mode_of(offline.as_bytes(), &hash),
            Some(relay_domain::InvoicingMode::Offline)
        );
        assert_eq!(
            super::sending_mode_of(offline.as_bytes(), &relay_domain::ContentHash::of(b"other")),
            None
        );
    }
}
