//! The bucket layout, in one place. The ERP writes `inbox/`, reads `outbox/` and `upo/`;
//! `archive/` keeps the exact bytes by content hash and is never overwritten.

use crate::ids::{ContentHash, ErpDocumentId, KsefNumber, Nip, ParseError};

pub const INBOX_PREFIX: &str = "inbox/";

/// `inbox/{sellerNip}/{erpDocId}.xml`: where the ERP puts an invoice.
pub fn inbox_key(seller: &Nip, erp: &ErpDocumentId) -> String {
    format!("{INBOX_PREFIX}{seller}/{erp}.xml")
}

/// Reads `inbox/{sellerNip}/{erpDocId}.xml` back into its parts.
pub fn parse_inbox_key(key: &str) -> Result<(Nip, ErpDocumentId), ParseError> {
    let bad = |reason: &str| ParseError {
        field: "inbox key",
        value: key.chars().take(120).collect(),
        reason: reason.into(),
    };
    let rest = key.strip_prefix(INBOX_PREFIX).ok_or_else(|| bad("must start with inbox/"))?;
    let (nip, file) = rest
        .split_once('/')
        .ok_or_else(|| bad("must be inbox/{sellerNip}/{erpDocId}.xml"))?;
    let erp = file.strip_suffix(".xml").ok_or_else(|| bad("the file name must end in .xml"))?;
    Ok((Nip::parse(nip)?, ErpDocumentId::parse(erp)?))
}

/// `archive/{sellerNip}/{sha256 hex}.xml`: the exact bytes sent, immutable.
pub fn archive_key(seller: &Nip, hash: &ContentHash) -> String {
    format!("archive/{seller}/{}.xml", hash.to_hex())
}

/// `upo/{sellerNip}/{ksefNumber}.xml`: the official receipt.
pub fn upo_key(seller: &Nip, ksef: &KsefNumber) -> String {
    format!("upo/{seller}/{ksef}.xml")
}

/// `outbox/{sellerNip}/{erpDocId}.json`: the result the ERP reads back.
pub fn outbox_key(seller: &Nip, erp: &ErpDocumentId) -> String {
    format!("outbox/{seller}/{erp}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_keys_round_trip_and_bad_ones_say_why() {
        let nip = Nip::parse("9999999999").unwrap();
        let erp = ErpDocumentId::parse("FV-2026-01").unwrap();
        assert_eq!(parse_inbox_key(&inbox_key(&nip, &erp)).unwrap(), (nip, erp));
        assert!(parse_inbox_key("inbox/9999999999/a.txt").unwrap_err().reason.contains(".xml"));
        assert!(parse_inbox_key("inbox/1234567890/a.xml").unwrap_err().to_string().contains("NIP"));
        assert!(parse_inbox_key("outbox/9999999999/a.xml").is_err());
    }
}
