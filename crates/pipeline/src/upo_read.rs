//! The two facts the relay reads from a UPO (the official receipt): the KSeF number and the
//! document hash (`SkrotDokumentu`, equal to KSeF's invoiceHash). Read leniently, as the notes
//! advise: test-environment UPOs do not validate strictly against upo-v4-3.xsd.

use quick_xml::events::Event;
use quick_xml::Reader;

/// (KSeF number, document hash in Base64) for each document the UPO lists.
pub fn documents(xml: &[u8]) -> Vec<(String, String)> {
    let mut reader = Reader::from_reader(xml);
    let mut buf = Vec::new();
    let mut current: Option<&'static str> = None;
    let (mut number, mut hash) = (None::<String>, None::<String>);
    let mut out = Vec::new();
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) => {
                current = match e.local_name().as_ref() {
                    b"NumerKSeFDokumentu" => Some("number"),
                    b"SkrotDokumentu" => Some("hash"),
                    _ => None,
                };
            }
            Ok(Event::Text(t)) => {
                if let Ok(text) = t.decode() {
                    match current {
                        Some("number") => number = Some(text.trim().to_owned()),
                        Some("hash") => hash = Some(text.trim().to_owned()),
                        _ => {}
                    }
                }
            }
            Ok(Event::End(_)) => {
                current = None;
                if let (Some(n), Some(h)) = (&number, &hash) {
                    out.push((n.clone(), h.clone()));
                    number = None;
                    hash = None;
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
        assert!(relay_domain::KsefNumber::parse(&docs[0].0).is_ok(), "{docs:?}");
        assert!(relay_domain::ContentHash::parse(&docs[0].1).is_ok(), "{docs:?}");
    }
}
