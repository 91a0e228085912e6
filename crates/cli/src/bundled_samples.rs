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
