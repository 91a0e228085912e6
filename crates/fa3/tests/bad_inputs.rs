//! A corpus of bad inputs, one per kind of problem, each with the finding it must produce
//! (rule id, and the XML path where there is one). Most are one edit away from official
//! sample 1, so each case shows exactly one thing wrong.

use chrono::NaiveDate;
use relay_fa3::{validate_with, Category, Severity, ValidateOptions, MAX_SIZE, MAX_SIZE_WITH_ATTACHMENTS};

const SAMPLE: &str = include_str!("../../../data/ksef/samples/FA_3_Przykład_1.xml");
const FA3: &str = "http://crd.gov.pl/wzor/2025/06/25/13775/";

/// Sample 1 with one substring replaced (which must occur).
fn edit(from: &str, to: &str) -> Vec<u8> {
    assert!(SAMPLE.contains(from), "sample 1 lacks {from:?}");
    SAMPLE.replacen(from, to, 1).into_bytes()
}

struct Case {
    kind: &'static str,
    input: Vec<u8>,
    code: &'static str,
    /// Expected path of the finding, when it has one.
    path: Option<&'static str>,
}

fn case(kind: &'static str, input: Vec<u8>, code: &'static str, path: Option<&'static str>) -> Case {
    Case { kind, input, code, path }
}

fn cases() -> Vec<Case> {
    let fa = |p: &'static str| Some(p);
    let bom = [b"\xEF\xBB\xBF".as_slice(), SAMPLE.as_bytes()].concat();
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(SAMPLE.encode_utf16().flat_map(|u| u.to_le_bytes()))
        .collect();
    let latin2 = SAMPLE
        .replacen("Warszawa", "Warszawa \u{0}", 1)
        .replace('\u{0}', "\u{FFFF}")
        .into_bytes();
    let mut latin2_bytes = SAMPLE.as_bytes().to_vec();
    let at = SAMPLE.find("lodówka").unwrap() + 3;
    latin2_bytes.splice(at..at + 2, [0xF3]); // "ó" in ISO-8859-2
    let padding = format!("<!--{}-->", "x".repeat(MAX_SIZE));
    let deep = format!("<Faktura xmlns=\"{FA3}\">{}{}</Faktura>", "<a>".repeat(100), "</a>".repeat(100));
    vec![
        // Hostile input and KSeF's rules for the file itself.
        case(
            "entity bomb in a DTD",
            br#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><Faktura>&lol2;</Faktura>"#
                .to_vec(),
            "xml.doctype",
            None,
        ),
        case(
            "external entity (XXE)",
            br#"<!DOCTYPE Faktura [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><Faktura>&xxe;</Faktura>"#.to_vec(),
            "xml.doctype",
            None,
        ),
        case("byte order mark", bom, "input.bom", None),
        case("UTF-16", utf16, "xml.utf8", None),
        case("ISO-8859-2 bytes", latin2_bytes, "xml.utf8", None),
        case("non-character U+FFFF", latin2, "xml.char", None),
        case(
            "declared encoding other than UTF-8",
            edit("encoding=\"UTF-8\"", "encoding=\"ISO-8859-2\""),
            "input.encoding",
            None,
        ),
        case("larger than 3 MB", vec![b' '; MAX_SIZE_WITH_ATTACHMENTS + 1], "input.size", None),
        case(
            "larger than 1 MB without attachments",
            edit("<Naglowek>", &format!("{padding}<Naglowek>")),
            "input.size",
            None,
        ),
        case("nesting too deep", deep.into_bytes(), "xml.depth", None),
        case(
            "unclosed element",
            SAMPLE.replacen("</Faktura>", "", 1).into_bytes(),
            "xml.malformed",
            None,
        ),
        case("mismatched end tag", edit("</P_2>", "</P_3>"), "xml.malformed", None),
        case("control character", edit("Warszawa", "Warszawa\u{1}"), "xml.char", None),
        case(
            "reference to a forbidden character",
            edit("Warszawa", "Warszawa&#1;"),
            "xml.malformed",
            None,
        ),
        case("undeclared entity", edit("Warszawa", "Warszawa&nbsp;"), "xml.malformed", None),
        case(
            "text after the root",
            format!("{SAMPLE}trailing").into_bytes(),
            "xml.malformed",
            None,
        ),
        case(
            "attribute twice",
            edit("wersjaSchemy=\"1-0E\"", "wersjaSchemy=\"1-0E\" wersjaSchemy=\"1-0E\""),
            "xml.malformed",
            None,
        ),
        case(
            "undeclared prefix",
            edit("<P_1M>Warszawa</P_1M>", "<x:P_1M>Warszawa</x:P_1M>"),
            "xml.malformed",
            None,
        ),
        case("empty file", Vec::new(), "xml.malformed", None),
        case(
            "processing instruction",
            edit("<Fa>", "<Fa><?erp export=1?>"),
            "input.processing_instruction",
            fa("/Faktura/Fa"),
        ),
        case(
            "discouraged control character U+0086",
            edit("Warszawa</P_1M>", "Warszawa\u{86}</P_1M>"),
            "input.discouraged_char",
            None,
        ),
        // Another schema or namespace.
        case(
            "FA(2) namespace",
            edit(FA3, "http://crd.gov.pl/wzor/2023/06/29/12648/"),
            "schema.namespace",
            fa("/Faktura"),
        ),
        case(
            "PEF (UBL) document",
            br#"<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"><ID>1</ID></Invoice>"#.to_vec(),
            "schema.namespace",
            fa("/Invoice"),
        ),
        case(
            "no namespace",
            edit(&format!("xmlns=\"{FA3}\""), ""),
            "schema.namespace",
            fa("/Faktura"),
        ),
        case(
            "wrong root element",
            format!("<Faktury xmlns=\"{FA3}\"/>").into_bytes(),
            "schema.root",
            fa("/Faktury"),
        ),
        // Structure.
        case(
            "required element deleted",
            edit("<P_2>FV2026/02/150</P_2>", ""),
            "schema.missing",
            fa("/Faktura/Fa/P_6"),
        ),
        case(
            "element duplicated",
            edit("<P_2>FV2026/02/150</P_2>", "<P_2>FV2026/02/150</P_2><P_2>FV2026/02/150</P_2>"),
            "schema.order",
            fa("/Faktura/Fa/P_2[2]"),
        ),
        case(
            "elements reordered",
            edit(
                "<P_1>2026-02-15</P_1>\r\n\t\t<P_1M>Warszawa</P_1M>",
                "<P_1M>Warszawa</P_1M><P_1>2026-02-15</P_1>",
            ),
            "schema.missing",
            fa("/Faktura/Fa/P_1M"),
        ),
        case(
            "unknown element",
            edit("<P_6>", "<Uwagi>x</Uwagi><P_6>"),
            "schema.unexpected",
            fa("/Faktura/Fa/Uwagi"),
        ),
        case(
            "element renamed",
            edit("<P_1M>Warszawa</P_1M>", "<P_1X>Warszawa</P_1X>"),
            "schema.unexpected",
            fa("/Faktura/Fa/P_1X"),
        ),
        case(
            "right name, wrong namespace",
            edit("<P_1M>Warszawa</P_1M>", "<P_1M xmlns=\"urn:x\">Warszawa</P_1M>"),
            "schema.unexpected",
            fa("/Faktura/Fa/P_1M"),
        ),
        case(
            "text between elements",
            edit("<P_1M>", "stray text<P_1M>"),
            "schema.text",
            fa("/Faktura/Fa"),
        ),
        case(
            "element inside a value field",
            edit("<P_2>FV2026/02/150</P_2>", "<P_2>FV<b/>2026</P_2>"),
            "schema.unexpected",
            fa("/Faktura/Fa/P_2/b"),
        ),
        case(
            "required attribute missing",
            edit(" kodSystemowy=\"FA (3)\"", ""),
            "schema.attribute_missing",
            fa("/Faktura/Naglowek/KodFormularza"),
        ),
        case(
            "fixed attribute changed",
            edit("kodSystemowy=\"FA (3)\"", "kodSystemowy=\"FA (2)\""),
            "schema.fixed",
            fa("/Faktura/Naglowek/KodFormularza"),
        ),
        case(
            "unknown attribute",
            edit("<P_2>", "<P_2 id=\"1\">"),
            "schema.attribute_unknown",
            fa("/Faktura/Fa/P_2"),
        ),
        case(
            "xsi:type",
            edit("<P_2>", "<P_2 xsi:type=\"xsd:string\">"),
            "schema.xsi",
            fa("/Faktura/Fa/P_2"),
        ),
        // Values.
        case(
            "impossible date",
            edit("<P_1>2026-02-15</P_1>", "<P_1>2026-02-30</P_1>"),
            "value.lexical",
            fa("/Faktura/Fa/P_1"),
        ),
        case(
            "date before 1900",
            edit("<P_6>2026-01-27</P_6>", "<P_6>1899-12-31</P_6>"),
            "value.range",
            fa("/Faktura/Fa/P_6"),
        ),
        case(
            "date with a timezone",
            edit("<P_6>2026-01-27</P_6>", "<P_6>2026-01-27Z</P_6>"),
            "value.pattern",
            fa("/Faktura/Fa/P_6"),
        ),
        case(
            "creation time before FA(3) existed",
            edit("2026-02-01T00:00:00Z", "2025-01-01T00:00:00Z"),
            "value.range",
            fa("/Faktura/Naglowek/DataWytworzeniaFa"),
        ),
        case(
            "three decimals in an amount",
            edit("<P_13_1>1666.66</P_13_1>", "<P_13_1>1666.666</P_13_1>"),
            "value.fraction_digits",
            fa("/Faktura/Fa/P_13_1"),
        ),
        case(
            "amount with a thousands separator",
            edit("<P_15>2051</P_15>", "<P_15>2 051</P_15>"),
            "value.lexical",
            fa("/Faktura/Fa/P_15"),
        ),
        case(
            "unknown currency",
            edit("<KodWaluty>PLN</KodWaluty>", "<KodWaluty>PLZ</KodWaluty>"),
            "value.enumeration",
            fa("/Faktura/Fa/KodWaluty"),
        ),
        case(
            "unknown tax rate",
            edit("<P_12>5</P_12>", "<P_12>24</P_12>"),
            "value.enumeration",
            fa("/Faktura/Fa/FaWiersz[3]/P_12"),
        ),
        case(
            "unknown GTU code",
            edit("<P_12>5</P_12>", "<P_12>5</P_12><GTU>GTU_14</GTU>"),
            "value.enumeration",
            fa("/Faktura/Fa/FaWiersz[3]/GTU"),
        ),
        case(
            "unknown country code",
            edit("<KodKraju>PL</KodKraju>", "<KodKraju>XX</KodKraju>"),
            "value.enumeration",
            fa("/Faktura/Podmiot1/Adres/KodKraju"),
        ),
        case(
            "NIP of the wrong shape",
            edit("<NIP>1111111111</NIP>", "<NIP>0111111111</NIP>"),
            "value.pattern",
            fa("/Faktura/Podmiot2/DaneIdentyfikacyjne/NIP"),
        ),
        case(
            "e-mail without @",
            edit("abc@abc.pl", "abc.abc.pl"),
            "value.pattern",
            fa("/Faktura/Podmiot1/DaneKontaktowe/Email"),
        ),
        case(
            "empty invoice number",
            edit("<P_2>FV2026/02/150</P_2>", "<P_2></P_2>"),
            "value.empty",
            fa("/Faktura/Fa/P_2"),
        ),
        case(
            "invoice number too long",
            edit("FV2026/02/150", &"F".repeat(257)),
            "value.max_length",
            fa("/Faktura/Fa/P_2"),
        ),
        case(
            "negative line number",
            edit("<NrWierszaFa>2</NrWierszaFa>", "<NrWierszaFa>-2</NrWierszaFa>"),
            "value.lexical",
            fa("/Faktura/Fa/FaWiersz[2]/NrWierszaFa"),
        ),
        case(
            "wrong form variant",
            edit(
                "<WariantFormularza>3</WariantFormularza>",
                "<WariantFormularza>2</WariantFormularza>",
            ),
            "value.enumeration",
            fa("/Faktura/Naglowek/WariantFormularza"),
        ),
        case(
            "flag with a value other than 1/2",
            edit("<P_16>2</P_16>", "<P_16>3</P_16>"),
            "value.enumeration",
            fa("/Faktura/Fa/Adnotacje/P_16"),
        ),
        // Business rules.
        case(
            "NIP checksum",
            edit("<NIP>1111111111</NIP>", "<NIP>1234567890</NIP>"),
            "rule.nip_checksum",
            fa("/Faktura/Podmiot2/DaneIdentyfikacyjne/NIP"),
        ),
        case(
            "issue date in the future",
            edit("<P_1>2026-02-15</P_1>", "<P_1>2030-01-01</P_1>"),
            "rule.issue_date_future",
            fa("/Faktura/Fa/P_1"),
        ),
        case(
            "line nets do not add up to P_13_1",
            edit("<P_13_1>1666.66</P_13_1>", "<P_13_1>1666.67</P_13_1>"),
            "rule.net_sum",
            fa("/Faktura/Fa/P_13_1"),
        ),
        case(
            "VAT does not match the rate",
            SAMPLE
                .replacen("<P_14_1>383.33</P_14_1>", "<P_14_1>300.00</P_14_1>", 1)
                .replacen("<P_15>2051</P_15>", "<P_15>1967.66</P_15>", 1)
                .into_bytes(),
            "rule.vat_sum",
            fa("/Faktura/Fa/P_14_1"),
        ),
        case(
            "total P_15 does not add up",
            edit("<P_15>2051</P_15>", "<P_15>2050</P_15>"),
            "rule.total",
            fa("/Faktura/Fa/P_15"),
        ),
        case(
            "correction without the corrected invoice",
            edit("<RodzajFaktury>VAT</RodzajFaktury>", "<RodzajFaktury>KOR</RodzajFaktury>"),
            "rule.correction_reference",
            fa("/Faktura/Fa"),
        ),
        case(
            "foreign currency without VAT in PLN",
            edit("<KodWaluty>PLN</KodWaluty>", "<KodWaluty>EUR</KodWaluty>"),
            "rule.currency_missing_w",
            fa("/Faktura/Fa/P_14_1"),
        ),
        case(
            "VAT in PLN on a PLN invoice",
            edit("<P_14_1>383.33</P_14_1>", "<P_14_1>383.33</P_14_1><P_14_1W>383.33</P_14_1W>"),
            "rule.currency_pln_w",
            fa("/Faktura/Fa/P_14_1W"),
        ),
    ]
}

fn opts() -> ValidateOptions {
    ValidateOptions {
        schema_only: false,
        today: NaiveDate::from_ymd_opt(2026, 11, 1),
    }
}

#[test]
fn every_kind_of_bad_input_has_its_finding() {
    let cases = cases();
    assert!(cases.len() >= 40, "{} kinds", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let report = validate_with(&c.input, &opts());
        let hit = report
            .findings
            .iter()
            .find(|f| f.code == c.code && c.path.is_none_or(|p| f.path == p));
        match hit {
            Some(f) => {
                assert!(
                    f.line >= 1 && !f.message_pl.is_empty() && !f.message_en.is_empty(),
                    "{}: {f:?}",
                    c.kind
                );
                let failure = f.to_failure();
                assert_eq!(failure.code.as_deref(), Some(c.code));
                assert_eq!(failure.location.as_deref(), c.path);
            }
            None => failures.push(format!(
                "{}: expected {} at {:?}, got:\n{}",
                c.kind,
                c.code,
                c.path,
                report.findings.iter().map(|f| format!("    {f}\n")).collect::<String>()
            )),
        }
        // Everything but the soft VAT check makes the invoice unsendable.
        if c.code != "rule.vat_sum" {
            assert!(!report.is_valid(), "{} must not be sendable", c.kind);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn findings_are_all_reported_not_only_the_first() {
    let doc = SAMPLE
        .replacen("<P_1>2026-02-15</P_1>", "<P_1>2026-02-30</P_1>", 1)
        .replacen("<KodWaluty>PLN</KodWaluty>", "<KodWaluty>PLZ</KodWaluty>", 1)
        .replacen("<P_12>5</P_12>", "<P_12>24</P_12>", 1)
        .replacen("<NIP>1111111111</NIP>", "<NIP>1234567890</NIP>", 1);
    let report = validate_with(doc.as_bytes(), &opts());
    let codes: Vec<&str> = report.findings.iter().map(|f| f.code).collect();
    assert_eq!(codes.iter().filter(|c| **c == "value.enumeration").count(), 2, "{codes:?}");
    assert!(
        codes.contains(&"value.lexical") && codes.contains(&"rule.nip_checksum"),
        "{codes:?}"
    );
}

#[test]
fn a_value_the_xsd_refused_is_not_reported_again_by_a_sum() {
    let report = validate_with(&edit("<P_13_1>1666.66</P_13_1>", "<P_13_1>1666.666</P_13_1>"), &opts());
    let codes: Vec<&str> = report.findings.iter().map(|f| f.code).collect();
    assert_eq!(codes, ["value.fraction_digits"]);
}

#[test]
fn a_foreign_schema_is_named() {
    let fa2 = validate_with(&edit(FA3, "http://crd.gov.pl/wzor/2023/06/29/12648/"), &opts());
    assert!(
        fa2.findings
            .iter()
            .any(|f| f.code == "schema.namespace" && f.message_en.contains("FA(2)")),
        "{fa2:?}"
    );
    let pef = validate_with(
        br#"<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"/>"#,
        &opts(),
    );
    assert!(pef.findings.iter().any(|f| f.message_en.contains("PEF/UBL")), "{pef:?}");
}

#[test]
fn schema_only_leaves_business_rules_out_and_categories_separate_them() {
    let doc = edit("<NIP>1111111111</NIP>", "<NIP>1234567890</NIP>");
    let full = validate_with(&doc, &opts());
    assert!(full
        .findings
        .iter()
        .any(|f| f.category == Category::Business && f.severity == Severity::Error));
    assert!(full.is_schema_valid() && !full.is_valid());
    let schema_only = validate_with(
        &doc,
        &ValidateOptions {
            schema_only: true,
            ..opts()
        },
    );
    assert!(schema_only.findings.is_empty());
}

#[test]
fn messages_name_the_field_for_an_accountant() {
    let report = validate_with(&edit("<P_2>FV2026/02/150</P_2>", ""), &opts());
    let f = report.findings.iter().find(|f| f.code == "schema.missing").unwrap();
    assert!(
        f.message_pl.contains("P_2") && f.message_pl.contains("Kolejny numer faktury"),
        "{}",
        f.message_pl
    );
    assert!(f.message_en.starts_with("Required field P_2"), "{}", f.message_en);
    assert_eq!(f.line, 48);
    // Where the schema glosses a field in English, the English message uses the gloss.
    let report = validate_with(&edit("<KodKraju>PL</KodKraju>", "<KodKraju>XX</KodKraju>"), &opts());
    let f = report.findings.iter().find(|f| f.code == "value.enumeration").unwrap();
    assert!(f.message_en.contains("KodKraju (Country Code)"), "{}", f.message_en);
    assert!(f.message_pl.contains("KodKraju (Kod Kraju)"), "{}", f.message_pl);
}
