//! `ksef-relay run` end to end, as a user runs it: the real binary, in-memory and against moto.

use std::process::Command;

fn run(args: &[&str], out: &std::path::Path) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ksef-relay"))
        .arg("run")
        .args(args)
        .arg("--out")
        .arg(out)
        .env_remove("KSEF_RELAY_AWS_ENDPOINT")
        .output()
        .unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

fn check_bundled_run(text: &str, out: &std::path::Path) {
    // 12 samples: 8 distinct identities; samples 21-24 reuse sample 1's seller NIP + VAT + P_2
    // with other content, which KSeF would refuse as duplicates: the relay flags them instead.
    assert_eq!(text.matches("registered, queued").count(), 8, "{text}");
    assert_eq!(text.matches("CONFLICT").count(), 4, "{text}");
    assert_eq!(text.matches("claimed (lease until").count(), 8, "{text}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let docs = report.as_array().unwrap();
    assert_eq!(docs.len(), 12);
    let conflict_history = docs
        .iter()
        .filter_map(|d| d["document"]["history"].as_array())
        .flatten()
        .filter(|h| h["failure"]["code"] == "IDENTITY_CONFLICT")
        .count();
    assert_eq!(conflict_history, 4, "each conflict is in the stored document's history");
}

#[test]
fn run_over_the_bundled_samples_in_memory() {
    let out = std::env::temp_dir().join(format!("ksef-relay-run-{}", std::process::id()));
    let (ok, text) = run(&[], &out);
    assert!(ok, "{text}");
    check_bundled_run(&text, &out);
    // The archive keeps the exact bytes by hash.
    let archived: Vec<_> = std::fs::read_dir(out.join("archive/9999999999")).unwrap().collect();
    assert_eq!(archived.len(), 12, "every distinct file's bytes are archived, conflicts included");
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn run_against_the_aws_emulator() {
    let out = std::env::temp_dir().join(format!("ksef-relay-run-aws-{}", std::process::id()));
    let endpoint = relay_tests::emulator::endpoint();
    let (ok, text) = run(&["--aws-endpoint", endpoint], &out);
    assert!(ok, "{text}");
    assert!(text.contains(&format!("AWS API at {endpoint}")), "{text}");
    check_bundled_run(&text, &out);
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn unreadable_files_are_reported_not_registered() {
    let dir = std::env::temp_dir().join(format!("ksef-relay-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bomb.xml"), r#"<!DOCTYPE x [<!ENTITY a "aaaa">]><Faktura>&a;</Faktura>"#).unwrap();
    let (ok, text) = run(&["--input", dir.to_str().unwrap()], &dir.join("out"));
    assert!(ok, "{text}");
    assert!(text.contains("not registered: a DOCTYPE declaration is not allowed"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}
