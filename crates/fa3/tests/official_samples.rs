//! Every official sample (and the CIRFMF PDF-generator invoice) is valid: no finding at all,
//! business rules included; and the template with placeholders is not.

use std::path::PathBuf;

use chrono::NaiveDate;
use relay_fa3::{validate_with, ValidateOptions};

fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/ksef").join(rel)
}

fn opts() -> ValidateOptions {
    ValidateOptions {
        schema_only: false,
        today: NaiveDate::from_ymd_opt(2026, 11, 1),
    }
}

#[test]
fn official_samples_have_no_findings() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data("samples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .collect();
    files.push(data("samples/cirfmf-templates/ksef-pdf-generator-invoice.xml"));
    assert_eq!(files.len(), 13);
    for f in files {
        let report = validate_with(&std::fs::read(&f).unwrap(), &opts());
        // The correction samples refer to a made-up KSeF number: a warning, nothing else.
        let made_up = |x: &relay_fa3::Finding| {
            x.code == "rule.correction_ksef_number" && x.message_en.contains("9999999999-20230908-8BEF280C8D35-4D")
        };
        assert!(
            report.findings.iter().all(made_up),
            "{}:\n{}",
            f.display(),
            report.findings.iter().map(|x| format!("  {x}\n")).collect::<String>()
        );
    }
}

#[test]
fn the_template_with_placeholders_is_refused_with_its_places_named() {
    let report = validate_with(
        &std::fs::read(data("samples/cirfmf-templates/invoice-template_v3.xml")).unwrap(),
        &opts(),
    );
    assert!(!report.is_schema_valid());
    for f in &report.findings {
        println!("{f}");
    }
    assert!(report.findings.iter().all(|f| f.line > 0));
}
