//! The structural part of the validator agrees with libxml2 (`xmllint --schema`) on the
//! official samples and on a generated corpus of mutated invoices.
//!
//! Only well-formedness and XSD findings are compared (`schema_only`, categories `xml` and
//! `schema`); KSeF's input rules and the business rules are extra by design. The test fails,
//! with a message saying how to install it, when xmllint is missing: it never skips silently.
//!
//! Run with `--nocapture` to see the counts (catch rate, false rejects, xmllint time).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use relay_fa3::{validate_with, ValidateOptions};
use support::mutate::{mutate, Rng};

/// 13 sources × 160 = 2,080 mutants by default; `RELAY_FA3_MUTANTS` and `RELAY_FA3_SEED`
/// explore further (the default run is the one CI keeps).
const MUTANTS_PER_SOURCE: usize = 160;
const FA3_IMPORT_URL: &str = "http://crd.gov.pl/xml/schematy/dziedzinowe/mf/2022/01/05/eD/DefinicjeTypy/StrukturyDanych_v10-0E.xsd";

fn repo_data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/ksef").join(rel)
}

fn sources() -> Vec<(String, String)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_data("samples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .collect();
    files.sort();
    files.push(repo_data("samples/cirfmf-templates/ksef-pdf-generator-invoice.xml"));
    files
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect()
}

/// A copy of the four XSDs with the FA(3) import pointed at the local StrukturyDanych.
fn local_schema(dir: &Path) -> PathBuf {
    for f in [
        "StrukturyDanych_v10-0E.xsd",
        "ElementarneTypyDanych_v10-0E.xsd",
        "KodyKrajow_v10-0E.xsd",
    ] {
        std::fs::copy(repo_data("schemas").join(f), dir.join(f)).unwrap();
    }
    let fa3 = std::fs::read_to_string(repo_data("schemas/schemat_FA(3)_v1-0E.xsd")).unwrap();
    assert!(
        fa3.contains(FA3_IMPORT_URL),
        "the FA(3) XSD no longer imports StrukturyDanych by the known URL"
    );
    let path = dir.join("fa3.xsd");
    std::fs::write(&path, fa3.replace(FA3_IMPORT_URL, "StrukturyDanych_v10-0E.xsd")).unwrap();
    path
}

/// Runs xmllint over many files per invocation, two invocations at a time; returns, per file,
/// whether xmllint said it validates.
fn xmllint_verdicts(schema: &Path, files: &[PathBuf]) -> Vec<bool> {
    let probe = Command::new("xmllint").arg("--version").output();
    assert!(
        probe.is_ok(),
        "xmllint is not installed: the agreement test needs it (Debian/Ubuntu: apt-get install -y libxml2-utils). Not skipping."
    );
    let chunks: Vec<&[PathBuf]> = files.chunks(files.len().div_ceil(2).max(1)).collect();
    let outputs: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                s.spawn(move || {
                    let out = Command::new("xmllint")
                        .arg("--noout")
                        .arg("--nonet")
                        .arg("--schema")
                        .arg(schema)
                        .args(*chunk)
                        .output()
                        .unwrap();
                    String::from_utf8_lossy(&out.stderr).into_owned()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all = outputs.join("\n");
    let ok: std::collections::HashSet<&str> = all.lines().filter_map(|l| l.strip_suffix(" validates")).collect();
    files.iter().map(|f| ok.contains(f.to_str().unwrap())).collect()
}

#[test]
fn agrees_with_xmllint_on_samples_and_mutants() {
    let dir = std::env::temp_dir().join(format!("relay-fa3-agreement-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let schema = local_schema(&dir);

    let per_source: usize = std::env::var("RELAY_FA3_MUTANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MUTANTS_PER_SOURCE);
    let seed: u64 = std::env::var("RELAY_FA3_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5EED);
    let mut docs: Vec<(String, String)> = Vec::new();
    for (name, text) in sources() {
        let mut rng = Rng::new(seed ^ (name.len() as u64) << 8 ^ text.len() as u64);
        for i in 0..per_source {
            let (m, what) = mutate(&text, &mut rng);
            docs.push((format!("{name} #{i}: {what}"), m));
        }
        docs.push((format!("{name} (unchanged)"), text));
    }
    let files: Vec<PathBuf> = docs
        .iter()
        .enumerate()
        .map(|(i, (_, text))| {
            let p = dir.join(format!("m{i:05}.xml"));
            std::fs::write(&p, text).unwrap();
            p
        })
        .collect();

    let t = Instant::now();
    let lint = xmllint_verdicts(&schema, &files);
    let lint_time = t.elapsed();
    let t = Instant::now();
    let schema_only = ValidateOptions {
        schema_only: true,
        today: None,
    };
    let ours: Vec<relay_fa3::Report> = docs.iter().map(|(_, text)| validate_with(text.as_bytes(), &schema_only)).collect();
    let our_time = t.elapsed();

    let (mut caught, mut missed, mut false_rejects, mut both_valid) = (0, 0, 0, 0);
    let mut disagreements = Vec::new();
    for (i, ((what, _), report)) in docs.iter().zip(&ours).enumerate() {
        let we_accept = report.is_schema_valid();
        match (lint[i], we_accept) {
            (true, true) => both_valid += 1,
            (false, false) => caught += 1,
            (false, true) => {
                missed += 1;
                disagreements.push(format!("MISSED  {} ({what})", files[i].display()));
            }
            (true, false) => {
                false_rejects += 1;
                let first = report
                    .findings
                    .iter()
                    .find(|f| f.is_schema_level())
                    .map(|f| f.to_string())
                    .unwrap_or_default();
                disagreements.push(format!("FALSE REJECT  {} ({what}): {first}", files[i].display()));
            }
        }
    }
    let invalid = caught + missed;
    println!(
        "xmllint agreement: {} documents ({} samples unchanged, {} mutants); xmllint: {} valid, {} invalid",
        docs.len(),
        sources().len(),
        docs.len() - sources().len(),
        both_valid + false_rejects,
        invalid
    );
    println!(
        "caught {caught}/{invalid} invalid ({:.2}%), false rejects {false_rejects}/{} valid; xmllint {:.2?} (2 processes), relay-fa3 {:.2?} (1 thread)",
        100.0 * caught as f64 / invalid.max(1) as f64,
        both_valid + false_rejects,
        lint_time,
        our_time
    );
    assert!(docs.len() >= 2000);
    assert!(invalid >= 1000, "the mutator should break most documents; it broke {invalid}");
    assert!(
        both_valid >= 100,
        "some mutants should stay valid, to measure false rejects; {both_valid} did"
    );
    if disagreements.is_empty() {
        std::fs::remove_dir_all(&dir).ok();
    }
    assert!(
        disagreements.is_empty(),
        "{} disagreements with xmllint (files kept in {}):\n{}",
        disagreements.len(),
        dir.display(),
        disagreements.join("\n")
    );
}
