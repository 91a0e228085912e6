//! The official FA(3) sample invoices, built into the binary so `ksef-relay run` works from any
//! directory. Source and provenance: `data/ksef/samples/` and `data/ksef/SOURCES.md`.

/// (file name, exact bytes)
pub const SAMPLES: &[(&str, &[u8])] = &[
    (
        "FA_3_Przykład_1.xml",
        include_bytes!("../../../data/ksef/samples/FA_3_Przykład_1.xml"),
    ),
    (
        "FA_3_Przykład_10.xml",
        include_bytes!("../../../data/ksef/samples/FA_3_Przykład_10.xml"),
    ),
    (
        "FA_3_Przykład_11.xml",
        include_bytes!("../../../data/ksef/samples/FA_3_Przykład_11.xml"),
    ),
    (
        "FA_3_Przykład_15.xml",
        include_bytes!("../../../data/ksef/samples/FA_3_Przykład_15.xml"),
    ),
    (
        "FA_3_Przykład_2.xml",
        include_bytes!("../../../data/ksef/samples/FA_3_Przykład_2.xml"),
    ),
    (
        "FA_3_Przykład_21.xml",
        include_bytes!("../../../data/ksef/samples/FA_3_Przykład_21.xml"),
    ),
    (
        "FA_3_Przykład_22.xml",
        include_bytes!("../../../data/ksef/samples/FA_3_Przykład_22.xml"),
    ),
    (
        "FA_3_Przykład_23.xml",
        include_bytes!("../../../data/ksef/samples/FA_3_Przykład_23.xml"),
    ),
    (
        "FA_3_Przykład_24.xml",
        include_bytes!("../../../data/ksef/samples/FA_3_Przykład_24.xml"),
    ),
    (
        "FA_3_Przykład_26.xml",
        include_bytes!("../../../data/ksef/samples/FA_3_Przykład_26.xml"),
    ),
    (
        "Fa_3_Przykład_14.xml",
        include_bytes!("../../../data/ksef/samples/Fa_3_Przykład_14.xml"),
    ),
    (
        "Fa_3_Przykład_18.xml",
        include_bytes!("../../../data/ksef/samples/Fa_3_Przykład_18.xml"),
    ),
];

/// The samples as `ksef-relay run` sends them. Several official samples reuse sample 1's seller
/// NIP + kind + invoice number (P_2) with other content; KSeF would refuse all but the first as
/// duplicates (and the relay flags them as conflicts). So that each sample shows its own journey,
/// a repeated P_2 gets the sample's number appended (`FV2026/02/150` becomes `FV2026/02/150-21`);
/// nothing else changes. `--input data/ksef/samples` sends the untouched files.
pub fn run_set() -> Vec<(String, Vec<u8>)> {
    let mut seen = std::collections::HashSet::new();
    SAMPLES
        .iter()
        .map(|(name, bytes)| {
            let mut bytes = bytes.to_vec();
            if let Ok(id) = relay_fa3::read_identity(&bytes) {
                if !seen.insert(id.key.clone()) {
                    let number = name.trim_end_matches(".xml").rsplit('_').next().unwrap_or(name);
                    let p2 = id.key.invoice_number.as_str();
                    let text = String::from_utf8_lossy(&bytes).replace(&format!("<P_2>{p2}</P_2>"), &format!("<P_2>{p2}-{number}</P_2>"));
                    bytes = text.into_bytes();
                }
            }
            (name.to_string(), bytes)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_run_set_has_one_identity_per_sample() {
        let set = super::run_set();
        assert_eq!(set.len(), super::SAMPLES.len());
        let ids: std::collections::HashSet<_> = set.iter().map(|(_, b)| relay_fa3::read_identity(b).unwrap().key).collect();
        assert_eq!(ids.len(), set.len());
        let s21 = set.iter().find(|(n, _)| n == "FA_3_Przykład_21.xml").unwrap();
        assert_eq!(
            relay_fa3::read_identity(&s21.1).unwrap().key.invoice_number.as_str(),
            "FV2026/02/150-21"
        );
        let s1 = set.iter().find(|(n, _)| n == "FA_3_Przykład_1.xml").unwrap();
        assert_eq!(
            s1.1,
            super::SAMPLES.iter().find(|(n, _)| *n == "FA_3_Przykład_1.xml").unwrap().1,
            "first occurrences are untouched"
        );
    }
}
