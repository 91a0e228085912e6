//! A local run over a mixed batch (accepted, rejected by our validation, rejected by KSeF,
//! failed after a long KSeF outage on the send path) leaves the status page, the week's report,
//! valid EMF metric lines and a store snapshot that `ksef-relay status` reads back.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use support::*;

fn state(d: &serde_json::Value) -> &str {
    d["record"]["state"].as_str().unwrap()
}

#[test]
fn a_mixed_batch_produces_the_status_page_the_weekly_report_and_metrics() {
    let dir = scratch("mixed");
    let input = dir.join("in");
    let out = dir.join("out");
    std::fs::create_dir_all(&input).unwrap();
    batch(&input, &[("ERP-BAD.xml", invalid_invoice())]);
    // Online sending (`/sessions/online/{ref}/...`: send, close) answers 503 to every request, so
    // each invoice sent online spends its budget of 10 attempts and ends FAILED; sample 24
    // carries an attachment and travels in a batch session, untouched, to ACCEPTED. Deterministic:
    // no outcome depends on the dice. A minute of KSeF's rate limits passes in a second.
    let ran = ksef_relay(
        &[
            "run",
            "--input",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--fault",
            "unavailable:1@/online/",
            "--sim-time-scale",
            "60",
            "--timeout-secs",
            "120",
        ],
        &[],
    );
    let text = ran.text();
    let docs = stored(&out);
    let states: BTreeMap<String, String> = docs
        .iter()
        .map(|d| (d["record"]["erp_document_id"].as_str().unwrap().to_owned(), state(d).to_owned()))
        .collect();
    let count = |s: &str| states.values().filter(|v| *v == s).count();
    for (erp, state) in &states {
        let expected = match erp.as_str() {
            "ERP-BAD" => "REJECTED",
            "ERP-24" => "ACCEPTED",
            _ => "FAILED",
        };
        assert_eq!(state, expected, "{erp}: {states:?}\n{text}");
    }
    assert_eq!(states.len(), 13, "12 samples and the invalid one: {states:?}");
    assert_eq!(ran.code, Some(1), "FAILED documents make the run exit 1: {text}");

    // The rejected one: our validation's findings with their XML path.
    let bad = by_erp(&docs, "ERP-BAD");
    let findings: Vec<&serde_json::Value> = bad["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "error")
        .map(|e| &e["failure"])
        .collect();
    assert!(!findings.is_empty());
    let located = findings
        .iter()
        .find(|f| f["location"].is_string())
        .expect("a finding with an XML path");
    let path = located["location"].as_str().unwrap().to_owned();
    let message = located["message"].as_str().unwrap().to_owned();

    // A failed one: the budget of ten attempts spent, every failure in the history.
    let failed = docs.iter().find(|d| state(d) == "FAILED").unwrap();
    let errors = failed["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "error")
        .count();
    assert!(errors >= 10, "{failed}");

    // The status page: every document, the rejection's message and path, escaped.
    let page = std::fs::read_to_string(out.join("status.html")).unwrap();
    for erp in states.keys() {
        assert!(page.contains(&format!("<td class=\"erp\">{erp}</td>")), "{erp} listed");
    }
    let escaped = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#39;")
    };
    assert!(page.contains(&escaped(&path)), "XML path {path} on the page");
    assert!(page.contains(&escaped(&message)), "message {message} on the page");
    assert!(!page.contains("<b id=\"pwn\">"), "document text is escaped");
    assert!(page.contains("archive/9999999999/"), "a link to the archived bytes");
    for fetch in ["<link", " src=", "@import", "url("] {
        assert!(!page.contains(fetch), "self-contained: nothing to fetch ({fetch})");
    }

    // The week's report: counts by state, causes, percentiles, as HTML and CSV.
    let weekly: Vec<_> = std::fs::read_dir(out.join("weekly")).unwrap().map(|e| e.unwrap().path()).collect();
    let csv_path = weekly.iter().find(|p| p.extension().unwrap() == "csv").expect("a CSV");
    assert!(weekly.iter().any(|p| p.extension().unwrap() == "html"));
    let csv = std::fs::read_to_string(csv_path).unwrap();
    assert!(csv.starts_with("section,name,value,detail\n"), "{csv}");
    assert!(csv.contains(&format!("state,ACCEPTED,{},", count("ACCEPTED"))), "{csv}");
    assert!(csv.contains(&format!("state,FAILED,{},", count("FAILED"))), "{csv}");
    assert!(csv.contains(&format!("state,REJECTED,{},", count("REJECTED"))), "{csv}");
    assert!(csv.lines().any(|l| l.starts_with("error,TRANSIENT 503,")), "{csv}");
    assert!(csv.lines().any(|l| l.starts_with("processing_seconds,p95,")), "{csv}");
    assert!(text.contains("ksef-relay weekly report"), "summary printed: {text}");

    // The metrics the run emitted: valid EMF, the contract's names and units.
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let mut declared = BTreeSet::new();
    let mut state_values = BTreeSet::new();
    let mut server_errors = 0.0;
    for line in lines.lines() {
        for (name, unit) in relay_observe::emf::check_line(line).unwrap_or_else(|e| panic!("{e}: {line}")) {
            declared.insert((name, unit));
        }
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(s) = v["State"].as_str() {
            state_values.insert(s.to_owned());
        }
        server_errors += v["KsefCall5xx"].as_f64().unwrap_or(0.0);
    }
    for (name, unit) in [
        ("KsefCallLatency", "Milliseconds"),
        ("KsefCallErrors", "Count"),
        ("DocumentsInState", "Count"),
        ("DocumentsOverdue", "Count"),
        ("DocumentsPastLegalDeadline", "Count"),
        ("OldestOpenDocumentAgeSeconds", "Seconds"),
    ] {
        assert!(
            declared.contains(&(name.to_owned(), unit.to_owned())),
            "{name} ({unit}) in {declared:?}"
        );
    }
    let all_states: BTreeSet<String> = ["QUEUED", "SENT", "PROCESSING", "ACCEPTED", "REJECTED", "FAILED", "CONFLICT"]
        .map(String::from)
        .into();
    assert_eq!(state_values, all_states);
    assert!(server_errors >= 10.0, "the outage shows as 5xx: {server_errors}");

    // `ksef-relay status` reads the run's store back: by ERP id, trace id and KSeF number.
    let from = out.to_str().unwrap();
    let by_erp_id = ksef_relay(&["status", "ERP-BAD", "--from", from], &[]);
    assert_eq!(by_erp_id.code, Some(0), "{}", by_erp_id.text());
    assert!(
        by_erp_id.stdout.contains("REJECTED") && by_erp_id.stdout.contains(&path),
        "{}",
        by_erp_id.stdout
    );
    let trace = failed["record"]["trace_id"].as_str().unwrap();
    let by_trace = ksef_relay(&["status", trace, "--from", from], &[]);
    assert_eq!(by_trace.code, Some(0), "{}", by_trace.text());
    assert!(by_trace.stdout.contains("FAILED"), "{}", by_trace.stdout);
    assert!(by_trace.stdout.matches("error [TRANSIENT]").count() >= 10, "{}", by_trace.stdout);
    let accepted = docs.iter().find(|d| state(d) == "ACCEPTED").unwrap();
    let number = accepted["record"]["ksef"]["ksef_number"].as_str().unwrap();
    let by_number = ksef_relay(&["status", number, "--from", from], &[]);
    assert_eq!(by_number.code, Some(0), "{}", by_number.text());
    assert!(by_number.stdout.contains(&format!("KSeF number  {number}")), "{}", by_number.stdout);
    let unknown = ksef_relay(&["status", "NO-SUCH-DOC", "--from", from], &[]);
    assert_eq!(unknown.code, Some(1));
    assert!(unknown.stdout.contains("No document"), "{}", unknown.stdout);

    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn status_reads_the_dynamodb_table_of_a_run_on_the_aws_emulator() {
    let dir = scratch("status-aws");
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("ERP-7.xml"), sample_with_number("FA_3_Przykład_2.xml", "7")).unwrap();
    std::fs::write(input.join("ERP-BAD.xml"), invalid_invoice()).unwrap();
    let endpoint = relay_tests::emulator::endpoint();
    let ran = ksef_relay(
        &[
            "run",
            "--input",
            input.to_str().unwrap(),
            "--out",
            dir.join("out").to_str().unwrap(),
            "--aws-endpoint",
            endpoint,
        ],
        &[("AWS_REGION", relay_tests::emulator::REGION)],
    );
    assert_eq!(ran.code, Some(0), "{}", ran.text());
    // "(table, bucket and queues ksef-relay-local-xxxxxx*)"
    let marker = "table, bucket and queues ";
    let start = ran.stdout.find(marker).expect("the run names its table") + marker.len();
    let table = ran.stdout[start..].split('*').next().unwrap().to_owned();

    let env = [("AWS_REGION", relay_tests::emulator::REGION)];
    let found = ksef_relay(&["status", "ERP-7", "--table", &table, "--aws-endpoint", endpoint], &env);
    assert_eq!(found.code, Some(0), "{}", found.text());
    assert!(
        found.stdout.contains("ACCEPTED") && found.stdout.contains("KSeF number"),
        "{}",
        found.stdout
    );
    assert!(found.stdout.contains("QUEUED -> SENT"), "the whole history: {}", found.stdout);
    let rejected = ksef_relay(
        &["status", "FV2026/02/150-BAD", "--table", &table, "--aws-endpoint", endpoint],
        &env,
    );
    assert_eq!(rejected.code, Some(0), "{}", rejected.text());
    assert!(rejected.stdout.contains("REJECTED"), "{}", rejected.stdout);
    let missing = ksef_relay(&["status", "ERP-8", "--table", &table, "--aws-endpoint", endpoint], &env);
    assert_eq!(missing.code, Some(1), "{}", missing.text());
    std::fs::remove_dir_all(&dir).ok();
}
