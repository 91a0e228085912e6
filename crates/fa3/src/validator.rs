//! The validator's entry point: the exact bytes in, every finding out.
//!
//! Order of work: size cap, BOM, UTF-8, a safe parse (DTDs refused, depth bounded), KSeF's input
//! rules, the XSD structure, then the business rules. A hard stop (not UTF-8, not well-formed,
//! DTD, too deep, too big) ends the run with that one finding; everything else is collected.

use chrono::{Datelike, NaiveDate, Utc};

use crate::findings::{Category, Finding, Report, Severity};
use crate::schema_check::SchemaCheck;
use crate::xml_tree::{self, Lines, Tree};
use crate::xsd_schema;

/// KSeF's size limit for an invoice without attachments (per-context default, bytes).
pub const MAX_SIZE: usize = 1_000_000;
/// KSeF's size limit for an invoice with attachments (`Zalacznik`).
pub const MAX_SIZE_WITH_ATTACHMENTS: usize = 3_000_000;

/// How to validate.
#[derive(Debug, Clone, Default)]
pub struct ValidateOptions {
    /// Only well-formedness, KSeF's input rules and the XSD: no business rules.
    pub schema_only: bool,
    /// The date `P_1` must not be later than; today in Poland when `None`.
    pub today: Option<NaiveDate>,
}

/// Validates an FA(3) invoice from its exact bytes with the default options.
pub fn validate(xml: &[u8]) -> Report {
    validate_with(xml, &ValidateOptions::default())
}

fn hard_stop(code: &'static str, category: Category, line: u32, pl: String, en: String) -> Report {
    Report {
        findings: vec![Finding {
            code,
            category,
            severity: Severity::Error,
            path: String::new(),
            line,
            message_pl: pl,
            message_en: en,
        }],
    }
}

/// Validates an FA(3) invoice from its exact bytes.
pub fn validate_with(xml: &[u8], opts: &ValidateOptions) -> Report {
    if xml.len() > MAX_SIZE_WITH_ATTACHMENTS {
        return hard_stop(
            "input.size",
            Category::Input,
            1,
            format!(
                "Plik ma {} bajtów; KSeF przyjmuje najwyżej {MAX_SIZE_WITH_ATTACHMENTS} (z załącznikami).",
                xml.len()
            ),
            format!(
                "The file has {} bytes; KSeF accepts at most {MAX_SIZE_WITH_ATTACHMENTS} (with attachments).",
                xml.len()
            ),
        );
    }
    let lines = Lines::new(xml);
    let mut findings = Vec::new();
    let input = |code, line, pl: String, en: String| Finding {
        code,
        category: Category::Input,
        severity: Severity::Error,
        path: String::new(),
        line,
        message_pl: pl,
        message_en: en,
    };
    let (body, base) = match xml.strip_prefix(b"\xEF\xBB\xBF") {
        Some(rest) => {
            findings.push(input(
                "input.bom",
                1,
                "Plik zaczyna się od znacznika BOM; KSeF przyjmuje UTF-8 bez BOM.".into(),
                "The file starts with a byte order mark (BOM); KSeF accepts UTF-8 without a BOM.".into(),
            ));
            (rest, 3)
        }
        None => (xml, 0),
    };
    let text = match std::str::from_utf8(body) {
        Ok(t) => t,
        Err(e) => {
            let at = e.valid_up_to() + base;
            return hard_stop(
                "xml.utf8",
                Category::Xml,
                lines.line(at),
                format!("Plik nie jest poprawnym UTF-8 (bajt {at}); KSeF przyjmuje wyłącznie UTF-8."),
                format!("The file is not valid UTF-8 (byte {at}); KSeF accepts UTF-8 only."),
            );
        }
    };
    let tree = match xml_tree::parse(text, &lines, base) {
        Ok(t) => t,
        Err(f) => {
            let (category, pl, en) = match f.code {
                "xml.doctype" => (
                    Category::Input,
                    "Plik zawiera deklarację DOCTYPE/DTD; KSeF jej nie przyjmuje, a encje mogłyby być atakiem (XXE).".to_string(),
                    "The file contains a DOCTYPE/DTD declaration; KSeF refuses it, and its entities could be an attack (XXE).".to_string(),
                ),
                "xml.depth" => (
                    Category::Input,
                    format!("Zagnieżdżenie elementów przekracza {} poziomów.", xml_tree::MAX_DEPTH),
                    format!("Elements are nested deeper than {} levels.", xml_tree::MAX_DEPTH),
                ),
                _ => (
                    Category::Xml,
                    format!("Plik nie jest poprawnym dokumentem XML: {}.", f.detail),
                    format!("The file is not well-formed XML: {}.", f.detail),
                ),
            };
            let mut report = Report { findings };
            report.findings.push(Finding {
                code: f.code,
                category,
                severity: Severity::Error,
                path: String::new(),
                line: f.line,
                message_pl: pl,
                message_en: en,
            });
            return report;
        }
    };
    input_rules(&tree, xml.len(), &mut findings);
    SchemaCheck {
        schema: xsd_schema::fa3(),
        tree: &tree,
        findings: &mut findings,
        kids: Vec::new(),
    }
    .run();
    if !opts.schema_only && tree.nodes[0].local == "Faktura" && &*tree.nodes[0].ns == crate::FA3_NAMESPACE {
        let today = opts.today.unwrap_or_else(today_in_poland);
        crate::business_rules::check(&tree, today, &mut findings);
    }
    Report { findings }
}

fn input_rules(tree: &Tree, size: usize, findings: &mut Vec<Finding>) {
    let input = |code, path: String, line, pl: String, en: String| Finding {
        code,
        category: Category::Input,
        severity: Severity::Error,
        path,
        line,
        message_pl: pl,
        message_en: en,
    };
    if let Some(enc) = &tree.declared_encoding {
        if !enc.eq_ignore_ascii_case("utf-8") {
            findings.push(input(
                "input.encoding",
                String::new(),
                1,
                format!("Deklaracja XML podaje kodowanie {enc}; KSeF przyjmuje wyłącznie UTF-8."),
                format!("The XML declaration names encoding {enc}; KSeF accepts UTF-8 only."),
            ));
        }
    }
    for note in &tree.notes {
        let path = note.node.map(|n| tree.path(n)).unwrap_or_default();
        findings.push(match note.code {
            "xml.processing_instruction" => input(
                "input.processing_instruction",
                path,
                note.line,
                format!("Instrukcje przetwarzania ({}) są w KSeF niedozwolone.", note.detail),
                format!("Processing instructions ({}) are not allowed by KSeF.", note.detail),
            ),
            _ => input(
                "input.discouraged_char",
                path,
                note.line,
                format!(
                    "Znak {} jest przez KSeF niedozwolony (znaki sterujące i niecharakterowe).",
                    note.detail
                ),
                format!("Character {} is refused by KSeF (control and non-characters).", note.detail),
            ),
        });
    }
    if size > MAX_SIZE {
        let has_attachment = tree.nodes.iter().any(|n| n.local == "Zalacznik" && &*n.ns == crate::FA3_NAMESPACE);
        if !has_attachment {
            findings.push(input(
                "input.size",
                String::new(),
                1,
                format!("Plik ma {size} bajtów; bez załączników KSeF przyjmuje najwyżej {MAX_SIZE}."),
                format!("The file has {size} bytes; without attachments KSeF accepts at most {MAX_SIZE}."),
            ));
        }
    }
}

/// Today's date in Poland (CET/CEST).
pub fn today_in_poland() -> NaiveDate {
    date_in_poland(Utc::now())
}

/// The calendar date in Poland at an instant, without a timezone database: summer time (UTC+2)
/// runs from 01:00 UTC on the last Sunday of March to 01:00 UTC on the last Sunday of
/// October, winter time is UTC+1. The intake passes its own clock's `now` here.
pub fn date_in_poland(now: chrono::DateTime<Utc>) -> NaiveDate {
    let now = now.naive_utc();
    let year = now.year();
    let last_sunday = |month: u32| {
        let mut d = NaiveDate::from_ymd_opt(year, month + 1, 1)
            .unwrap_or(NaiveDate::MAX)
            .pred_opt()
            .unwrap_or(NaiveDate::MIN);
        while d.weekday() != chrono::Weekday::Sun {
            d = d.pred_opt().unwrap_or(d);
        }
        d.and_hms_opt(1, 0, 0).unwrap_or_default()
    };
    let summer = now >= last_sunday(3) && now < last_sunday(10);
    (now + chrono::Duration::hours(if summer { 2 } else { 1 })).date()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn today_in_poland_is_utc_today_or_tomorrow() {
        let utc = Utc::now().date_naive();
        let pl = today_in_poland();
        assert!(pl == utc || pl == utc.succ_opt().unwrap(), "{pl} vs {utc}");
    }

    #[test]
    fn polish_date_follows_cet_and_cest() {
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        // Winter: 23:30 UTC is 00:30 the next day in Warsaw.
        assert_eq!(
            date_in_poland(at("2026-01-14T23:30:00Z")),
            NaiveDate::from_ymd_opt(2026, 1, 15).unwrap()
        );
        assert_eq!(
            date_in_poland(at("2026-01-14T22:59:59Z")),
            NaiveDate::from_ymd_opt(2026, 1, 14).unwrap()
        );
        // Summer: 22:30 UTC is already the next day.
        assert_eq!(
            date_in_poland(at("2026-07-14T22:30:00Z")),
            NaiveDate::from_ymd_opt(2026, 7, 15).unwrap()
        );
        // 2026 switches on 29 March and 25 October, at 01:00 UTC.
        assert_eq!(
            date_in_poland(at("2026-03-29T00:59:00Z")),
            NaiveDate::from_ymd_opt(2026, 3, 29).unwrap()
        );
        assert_eq!(
            date_in_poland(at("2026-10-24T22:30:00Z")),
            NaiveDate::from_ymd_opt(2026, 10, 25).unwrap()
        );
        assert_eq!(
            date_in_poland(at("2026-10-25T22:30:00Z")),
            NaiveDate::from_ymd_opt(2026, 10, 25).unwrap()
        );
    }

    #[test]
    fn default_options_validate_a_sample_fully() {
        let sample = include_bytes!("../../../data/ksef/samples/FA_3_Przykład_1.xml");
        let report = validate(sample);
        assert!(report.is_valid() && report.findings.is_empty(), "{:?}", report.findings);
        // A byte more than the hard cap is refused before parsing.
        let huge = vec![b' '; MAX_SIZE_WITH_ATTACHMENTS + 1];
        assert_eq!(validate(&huge).findings[0].code, "input.size");
    }
}
