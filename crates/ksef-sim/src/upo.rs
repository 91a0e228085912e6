//! UPO XML (Urzędowe Poświadczenie Odbioru) per `data/ksef/upo/upo-v4-3.xsd`: one `Dokument`
//! per accepted invoice, `SkrotDokumentu` = the invoice hash. KSeF signs its UPOs with XAdES;
//! the simulator's are unsigned, which the XSD allows.

use chrono::{DateTime, FixedOffset, Utc};
use relay_domain::{ContentHash, KsefNumber, Nip};

pub const UPO_NAMESPACE: &str = "http://upo.schematy.mf.gov.pl/KSeF/v4-3";

/// One accepted invoice in a UPO.
pub struct UpoDocument<'a> {
    pub seller: &'a Nip,
    pub ksef_number: &'a KsefNumber,
    pub invoice_number: &'a str,
    pub issue_date: &'a str,
    pub received: DateTime<Utc>,
    pub acquired: DateTime<Utc>,
    pub hash: &'a ContentHash,
    pub offline: bool,
}

pub struct UpoHeader<'a> {
    pub receiver_name: &'a str,
    pub session_reference: &'a str,
    pub context: &'a Nip,
    /// Base64 SHA-256 of the document the session was authenticated with.
    pub auth_document_hash: &'a str,
    /// Paging, for session UPOs: (page, pages, from, to, total).
    pub page: Option<(usize, usize, usize, usize, usize)>,
}

fn esc(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

/// Warsaw local time as KSeF writes it in UPOs (`2025-09-16T11:05:40.841+02:00`). The simulator
/// uses a fixed +01:00 rather than carry a time zone database; the instant is the same.
fn local(t: DateTime<Utc>) -> String {
    let tz = FixedOffset::east_opt(3600).expect("valid offset");
    t.with_timezone(&tz).format("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string()
}

pub fn render(h: &UpoHeader<'_>, docs: &[UpoDocument<'_>]) -> String {
    let mut x = String::with_capacity(1024 + docs.len() * 600);
    x.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    x.push_str(&format!("<Potwierdzenie xmlns=\"{UPO_NAMESPACE}\">\n"));
    x.push_str(&format!(
        "\t<NazwaPodmiotuPrzyjmujacego>{}</NazwaPodmiotuPrzyjmujacego>\n",
        esc(h.receiver_name)
    ));
    x.push_str(&format!(
        "\t<NumerReferencyjnySesji>{}</NumerReferencyjnySesji>\n",
        esc(h.session_reference)
    ));
    x.push_str("\t<Uwierzytelnienie>\n\t\t<IdKontekstu>\n");
    x.push_str(&format!("\t\t\t<Nip>{}</Nip>\n", h.context));
    x.push_str("\t\t</IdKontekstu>\n");
    x.push_str(&format!(
        "\t\t<SkrotDokumentuUwierzytelniajacego>{}</SkrotDokumentuUwierzytelniajacego>\n",
        h.auth_document_hash
    ));
    x.push_str("\t</Uwierzytelnienie>\n");
    if let Some((page, pages, from, to, total)) = h.page {
        x.push_str(&format!(
            "\t<OpisPotwierdzenia>\n\t\t<Strona>{page}</Strona>\n\t\t<LiczbaStron>{pages}</LiczbaStron>\n\t\t<ZakresDokumentowOd>{from}</ZakresDokumentowOd>\n\t\t<ZakresDokumentowDo>{to}</ZakresDokumentowDo>\n\t\t<CalkowitaLiczbaDokumentow>{total}</CalkowitaLiczbaDokumentow>\n\t</OpisPotwierdzenia>\n"
        ));
    }
    x.push_str("\t<NazwaStrukturyLogicznej>Schemat_FA(3)_v1-0E.xsd</NazwaStrukturyLogicznej>\n");
    x.push_str("\t<KodFormularza>FA (3)</KodFormularza>\n");
    for d in docs {
        x.push_str("\t<Dokument>\n");
        x.push_str(&format!("\t\t<NipSprzedawcy>{}</NipSprzedawcy>\n", d.seller));
        x.push_str(&format!("\t\t<NumerKSeFDokumentu>{}</NumerKSeFDokumentu>\n", d.ksef_number));
        x.push_str(&format!("\t\t<NumerFaktury>{}</NumerFaktury>\n", esc(d.invoice_number)));
        x.push_str(&format!("\t\t<DataWystawieniaFaktury>{}</DataWystawieniaFaktury>\n", d.issue_date));
        x.push_str(&format!(
            "\t\t<DataPrzeslaniaDokumentu>{}</DataPrzeslaniaDokumentu>\n",
            local(d.received)
        ));
        x.push_str(&format!(
            "\t\t<DataNadaniaNumeruKSeF>{}</DataNadaniaNumeruKSeF>\n",
            local(d.acquired)
        ));
        x.push_str(&format!("\t\t<SkrotDokumentu>{}</SkrotDokumentu>\n", d.hash.to_base64()));
        x.push_str(&format!(
            "\t\t<TrybWysylki>{}</TrybWysylki>\n",
            if d.offline { "Offline" } else { "Online" }
        ));
        x.push_str("\t</Dokument>\n");
    }
    x.push_str("</Potwierdzenie>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Element names in document order, to compare structures.
    fn element_names(xml: &str) -> Vec<String> {
        let mut r = quick_xml::Reader::from_str(xml);
        let mut out = Vec::new();
        loop {
            match r.read_event().unwrap() {
                quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e) => {
                    out.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned())
                }
                quick_xml::events::Event::Eof => return out,
                _ => {}
            }
        }
    }

    #[test]
    fn invoice_and_session_upos_have_the_official_examples_structure() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/ksef/upo");
        let nip = Nip::parse("5265877635").unwrap();
        let hash = ContentHash::of(b"<Faktura/>");
        let n1 = KsefNumber::build(&nip, chrono::NaiveDate::from_ymd_opt(2025, 9, 16).unwrap(), 1);
        let n2 = KsefNumber::build(&nip, chrono::NaiveDate::from_ymd_opt(2025, 9, 16).unwrap(), 2);
        let doc = |n| UpoDocument {
            seller: &nip,
            ksef_number: n,
            invoice_number: "FA/1/2025",
            issue_date: "2025-09-16",
            received: Utc::now(),
            acquired: Utc::now(),
            hash: &hash,
            offline: false,
        };
        let header = |page| UpoHeader {
            receiver_name: "Ministerstwo Finansów",
            session_reference: "20250625-SO-2C3E6C8000-B675CF5D68-07",
            context: &nip,
            auth_document_hash: "kyqH+QUgP8ATWd/95IY632mP4uqibwG66Oqclq9+qno=",
            page,
        };
        let one = render(&header(None), &[doc(&n1)]);
        let official = std::fs::read_to_string(format!("{dir}/upo-faktura-kontekst-id-nip.xml")).unwrap();
        assert_eq!(element_names(&one), element_names(&official));
        assert!(one.contains(&format!("<SkrotDokumentu>{}</SkrotDokumentu>", hash.to_base64())));

        let session = render(&header(Some((1, 1, 1, 2, 2))), &[doc(&n1), doc(&n2)]);
        let official = std::fs::read_to_string(format!("{dir}/upo-sesja-kontekst-id-nip.xml")).unwrap();
        assert_eq!(element_names(&session), element_names(&official));
    }
}
