//! The bucket layout, in one place. The ERP writes `inbox/`, reads `outbox/`, `upo/` and `qr/`;
//! `archive/` keeps the exact bytes by content hash and is never overwritten.

use crate::ids::{ContentHash, ErpDocumentId, KsefNumber, Nip, ParseError};

pub const INBOX_PREFIX: &str = "inbox/";

/// `inbox/{sellerNip}/{erpDocId}.xml`: where the ERP puts an invoice.
pub fn inbox_key(seller: &Nip, erp: &ErpDocumentId) -> String {
    format!("{INBOX_PREFIX}{seller}/{erp}.xml")
}

/// Reads `inbox/{sellerNip}/{erpDocId}.xml` back into its parts (see [`classify_inbox_key`]
/// for what the intake does with every other key).
pub fn parse_inbox_key(key: &str) -> Result<(Nip, ErpDocumentId), ParseError> {
    let bad = |reason: String| ParseError {
        field: "inbox key",
        value: key.chars().take(120).collect(),
        reason,
    };
    match classify_inbox_key(key)? {
        InboxObject::Upload { seller, erp } => Ok((seller, erp)),
        InboxObject::Misplaced { reason, .. } | InboxObject::NoSeller { reason, .. } => Err(bad(reason)),
        InboxObject::Folder => Err(bad("a folder, not inbox/{sellerNip}/{erpDocId}.xml".into())),
    }
}

/// What an object under `inbox/` is to the intake. Every kind gets an answer: an upload its
/// result, a misplaced object a refusal in its seller's outbox, an object without a readable
/// seller a corrections notice (and a metric), since there is no outbox to answer in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboxObject {
    /// `inbox/{sellerNip}/{erpDocId}.xml`, the extension in any letter case (`.XML` too).
    Upload { seller: Nip, erp: ErpDocumentId },
    /// In a seller's folder, but not an upload the relay takes (a subfolder, another
    /// extension, a name that is no ERP document id). Answered at `answer`: the key mirrored
    /// into the seller's outbox (`inbox/{nip}/sub/a.xml` → `outbox/{nip}/sub/a.json`), which
    /// for a subfolder can never be an upload's own result key.
    Misplaced {
        seller: Nip,
        /// The id named in the answer (the file name without `.xml`, or `unnamed`).
        erp: ErpDocumentId,
        answer: String,
        reason: String,
    },
    /// No seller NIP can be read from the key (no folder, not a NIP, a wrong checksum).
    NoSeller { erp: ErpDocumentId, reason: String },
    /// A folder marker (`inbox/.../`, as S3 consoles create): no file, nothing to answer.
    Folder,
}

/// Sorts a key under `inbox/` into what the intake does with it; an error only for a key
/// outside `inbox/`.
pub fn classify_inbox_key(key: &str) -> Result<InboxObject, ParseError> {
    let rest = key.strip_prefix(INBOX_PREFIX).ok_or_else(|| ParseError {
        field: "inbox key",
        value: key.chars().take(120).collect(),
        reason: "must start with inbox/".into(),
    })?;
    if rest.is_empty() || rest.ends_with('/') {
        return Ok(InboxObject::Folder);
    }
    let file = rest.rsplit('/').next().unwrap_or(rest);
    let stem = strip_xml(file);
    let named = ErpDocumentId::parse(stem.unwrap_or(file)).unwrap_or_else(|_| ErpDocumentId::parse("unnamed").expect("a valid id"));
    let Some((folder, path)) = rest.split_once('/') else {
        return Ok(InboxObject::NoSeller {
            erp: named,
            reason: format!("{key} is not in a seller's folder: put it at inbox/{{sellerNip}}/{{erpDocId}}.xml"),
        });
    };
    let seller = match Nip::parse(folder) {
        Ok(nip) => nip,
        Err(e) => {
            return Ok(InboxObject::NoSeller {
                erp: named,
                reason: format!("the folder of {key} is not a seller NIP ({e}): put it at inbox/{{sellerNip}}/{{erpDocId}}.xml"),
            })
        }
    };
    let answer = format!("outbox/{seller}/{}.json", strip_xml(path).unwrap_or(path));
    let misplaced = |reason: String| InboxObject::Misplaced {
        seller: seller.clone(),
        erp: named.clone(),
        answer: answer.clone(),
        reason,
    };
    if path.contains('/') {
        return Ok(misplaced(format!(
            "{key} is in a subfolder; the relay takes only inbox/{seller}/{{erpDocId}}.xml, so it was not sent"
        )));
    }
    let Some(stem) = stem else {
        return Ok(misplaced(format!("{key} does not end in .xml, so it was not sent")));
    };
    match ErpDocumentId::parse(stem) {
        Ok(erp) => Ok(InboxObject::Upload { seller, erp }),
        Err(e) => Ok(misplaced(format!(
            "the file name of {key} is not an ERP document id ({e}), so it was not sent"
        ))),
    }
}

/// The name without a `.xml` extension in any letter case; None when it has none.
fn strip_xml(name: &str) -> Option<&str> {
    let cut = name.len().checked_sub(4)?;
    (name.is_char_boundary(cut) && name[cut..].eq_ignore_ascii_case(".xml")).then(|| &name[..cut])
}

/// `archive/{sellerNip}/{sha256 hex}.xml`: the exact bytes sent, immutable.
pub fn archive_key(seller: &Nip, hash: &ContentHash) -> String {
    format!("archive/{seller}/{}.xml", hash.to_hex())
}

/// `upo/{sellerNip}/{ksefNumber}.xml`: the official receipt.
pub fn upo_key(seller: &Nip, ksef: &KsefNumber) -> String {
    format!("upo/{seller}/{ksef}.xml")
}

/// Where one QR code's two images are: a PNG (the label drawn under the code) and an SVG.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QrCodeKeys {
    pub png: String,
    pub svg: String,
}

impl QrCodeKeys {
    fn at(stem: String) -> QrCodeKeys {
        QrCodeKeys {
            png: format!("{stem}.png"),
            svg: format!("{stem}.svg"),
        }
    }
}

/// `qr/{sellerNip}/{ksefNumber}-kod1.png` and `.svg`: KOD I of a numbered invoice, labelled with
/// its KSeF number.
pub fn qr_invoice_keys(seller: &Nip, ksef: &KsefNumber) -> QrCodeKeys {
    QrCodeKeys::at(format!("qr/{seller}/{ksef}-kod1"))
}

/// `qr/{sellerNip}/offline/{sha256 hex}-kod1` and `-kod2` (`.png`, `.svg`): the two codes of an
/// offline invoice before KSeF numbers it (KOD I labelled OFFLINE, KOD II CERTYFIKAT), keyed by
/// content like the archive.
pub fn qr_offline_keys(seller: &Nip, hash: &ContentHash) -> (QrCodeKeys, QrCodeKeys) {
    let stem = format!("qr/{seller}/offline/{}", hash.to_hex());
    (QrCodeKeys::at(format!("{stem}-kod1")), QrCodeKeys::at(format!("{stem}-kod2")))
}

/// `outbox/{sellerNip}/{erpDocId}.json`: the result the ERP reads back.
pub fn outbox_key(seller: &Nip, erp: &ErpDocumentId) -> String {
    format!("outbox/{seller}/{erp}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qr_keys_sit_in_the_sellers_qr_folder() {
        let nip = Nip::parse("9999999999").unwrap();
        let ksef = KsefNumber::parse("5265877635-20250626-010080DD2B5E-26").unwrap();
        let k = qr_invoice_keys(&nip, &ksef);
        assert_eq!(k.png, "qr/9999999999/5265877635-20250626-010080DD2B5E-26-kod1.png");
        assert_eq!(k.svg, "qr/9999999999/5265877635-20250626-010080DD2B5E-26-kod1.svg");
        let hash = ContentHash::of(b"<Faktura/>");
        let (kod1, kod2) = qr_offline_keys(&nip, &hash);
        assert_eq!(kod1.png, format!("qr/9999999999/offline/{}-kod1.png", hash.to_hex()));
        assert_eq!(kod2.svg, format!("qr/9999999999/offline/{}-kod2.svg", hash.to_hex()));
    }

    #[test]
    fn inbox_keys_round_trip_and_bad_ones_say_why() {
        let nip = Nip::parse("9999999999").unwrap();
        let erp = ErpDocumentId::parse("FV-2026-01").unwrap();
        assert_eq!(parse_inbox_key(&inbox_key(&nip, &erp)).unwrap(), (nip, erp));
        assert!(parse_inbox_key("inbox/9999999999/a.txt").unwrap_err().reason.contains(".xml"));
        assert!(parse_inbox_key("inbox/1234567890/a.xml").unwrap_err().to_string().contains("NIP"));
        assert!(parse_inbox_key("outbox/9999999999/a.xml").is_err());
    }

    #[test]
    fn every_inbox_key_is_sorted_into_something_the_intake_answers() {
        let nip = Nip::parse("9999999999").unwrap();
        let erp = |s: &str| ErpDocumentId::parse(s).unwrap();
        assert_eq!(
            classify_inbox_key("inbox/9999999999/FV-1.XML").unwrap(),
            InboxObject::Upload {
                seller: nip.clone(),
                erp: erp("FV-1")
            }
        );
        assert_eq!(
            classify_inbox_key("inbox/9999999999/FV 1.xml").unwrap(),
            InboxObject::Upload {
                seller: nip.clone(),
                erp: erp("FV 1")
            }
        );
        let InboxObject::Misplaced {
            seller,
            erp: e,
            answer,
            reason,
        } = classify_inbox_key("inbox/9999999999/2026/FV-1.xml").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (seller, e, answer.as_str()),
            (nip.clone(), erp("FV-1"), "outbox/9999999999/2026/FV-1.json")
        );
        assert!(reason.contains("subfolder"), "{reason}");
        let InboxObject::Misplaced { answer, reason, .. } = classify_inbox_key("inbox/9999999999/FV-1.pdf").unwrap() else {
            panic!()
        };
        assert_eq!(answer, "outbox/9999999999/FV-1.pdf.json");
        assert!(reason.contains(".xml"), "{reason}");
        assert!(matches!(
            classify_inbox_key("inbox/9999999999/...xml").unwrap(),
            InboxObject::Misplaced { .. }
        ));
        let InboxObject::NoSeller { erp: e, reason } = classify_inbox_key("inbox/1234567890/FV-1.xml").unwrap() else {
            panic!()
        };
        assert_eq!(e, erp("FV-1"));
        assert!(reason.contains("NIP"), "{reason}");
        assert!(matches!(
            classify_inbox_key("inbox/FV-1.xml").unwrap(),
            InboxObject::NoSeller { .. }
        ));
        assert!(matches!(classify_inbox_key("inbox/9999999999/").unwrap(), InboxObject::Folder));
        assert!(matches!(classify_inbox_key("inbox/").unwrap(), InboxObject::Folder));
        assert!(classify_inbox_key("outbox/9999999999/FV-1.xml").is_err());
        // Whatever the key, classifying it never panics (multi-byte names included).
        for k in ["inbox/ż.xml", "inbox/9999999999/żółw", "inbox/9999999999/ł.XmL", "inbox/a/b/c/"] {
            let _ = classify_inbox_key(k);
        }
    }
}
