//! The two facts the relay reads from a UPO (the official receipt): the KSeF number and the
//! document hash (`SkrotDokumentu`, equal to KSeF's invoiceHash). Read leniently, as the notes
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
}

/// Every document the UPO lists.
pub fn documents(xml: &[u8]) -> Vec<UpoDocument> {
    let mut reader = Reader::from_reader(xml);
    let mut buf = Vec::new();
    let mut current: Option<&'static str> = None;
    let (mut number, mut hash, mut numbered_at) = (None::<String>, None::<String>, None);
    let mut out = Vec::new();
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) => {
                current = match e.local_name().as_ref() {
                    b"NumerKSeFDokumentu" => Some("number"),
                    b"SkrotDokumentu" => Some("hash"),
                    b"DataNadaniaNumeruKSeF" => Some("numbered_at"),
                    _ => None,
                };
            }
            Ok(Event::Text(t)) => {
                if let Ok(text) = t.decode() {
                    let text = text.trim();
                    match current {
                        Some("number") => number = Some(text.to_owned()),
                        Some("hash") => hash = Some(text.to_owned()),
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
                        });
                    }
                    numbered_at = None;
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
    }
}
