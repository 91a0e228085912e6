//! Every log line of a whole run (debug level, JSON, with KSeF faults so the error paths log
//! too; the seller's credentials read from its secret as in Lambda) and every metric line: none
//! carries the KSeF token, an access token or invoice content
//! (names, addresses, line items, amounts, the XML itself). And the lines written while a
//! document is handled carry its trace id, seller NIP and identity.

mod support;

use support::*;

/// Text inside `<tag>…</tag>` anywhere in `xml`.
fn texts(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let Some(j) = rest.find(&close) else { break };
        out.push(rest[..j].trim().to_owned());
        rest = &rest[j..];
    }
    out
}

/// Invoice content from every sample the run sends: what must never reach a log.
fn invoice_content() -> Vec<String> {
    let mut found = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(samples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "xml") {
            continue;
        }
        let xml = std::fs::read_to_string(&path).unwrap();
        // Names and addresses of both parties, line items, e-mails; amounts long enough not to
        // occur by chance in a timestamp or a latency.
        for tag in ["Nazwa", "AdresL1", "AdresL2", "P_7", "Email", "Telefon", "StopkaFaktury"] {
            found.extend(texts(&xml, tag).into_iter().filter(|t| t.chars().count() >= 6));
        }
        for tag in ["P_15", "P_11", "P_13_1", "P_14_1", "P_9A"] {
            found.extend(texts(&xml, tag).into_iter().filter(|t| t.len() >= 6 && t.contains('.')));
        }
    }
    found.into_iter().collect()
}

#[test]
fn no_secret_and_no_invoice_content_in_any_log_line() {
    let dir = scratch("hygiene");
    let out = dir.join("out");
    let ran = ksef_relay(
        &[
            "--log-json",
            "run",
            "--out",
            out.to_str().unwrap(),
            "--fault",
            "unavailable:0.2@/invoices",
            "--fault",
            "burst429:0.1:500",
            "--fault",
            "reset:0.05",
            "--sim-time-scale",
            "10",
        ],
        &[("RUST_LOG", "debug")],
    );
    assert_eq!(ran.code, Some(0), "{}", ran.text());
    let logs = ran.stderr.clone();
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines: Vec<&str> = logs.lines().chain(metrics.lines()).collect();
    assert!(logs.lines().count() > 100, "a debug run logs plenty: {}", logs.lines().count());

    let content = invoice_content();
    assert!(content.len() > 20, "samples give enough to look for: {content:?}");
    assert!(content.iter().any(|c| c == "lodówka Zimnotech mk1"), "{content:?}");
    let token = ksef_sim::DEFAULT_TOKEN;
    let secret = token.rsplit('|').next().unwrap();
    let mut forbidden: Vec<&str> = vec![token, secret, "Bearer ", "<Faktura", "<?xml", "encryptedInvoiceContent"];
    forbidden.extend(content.iter().map(String::as_str));
    for line in &lines {
        for f in &forbidden {
            assert!(!line.contains(f), "{f:?} leaked into a log line: {line}");
        }
    }

    // JSON, one object per line; inside a document's span the story's fields are there.
    let mut in_span = 0;
    let mut with_state = 0;
    let mut with_class = 0;
    for line in logs.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let Some(span) = v.get("span") else { continue };
        if !["intake", "send", "status"].contains(&span["name"].as_str().unwrap_or("")) {
            continue;
        }
        in_span += 1;
        for field in ["trace_id", "seller_nip", "document"] {
            assert!(span[field].is_string(), "{field} missing: {line}");
        }
        with_state += usize::from(span["state"].is_string());
        with_class += usize::from(span["error_class"].is_string());
    }
    assert!(in_span > 20, "lines inside document spans: {in_span}");
    // The seller's secret was read on first use and described without its content (the token
    // is among the forbidden strings above): kind and days left, in the log and as a metric.
    assert!(
        logs.lines()
            .any(|l| l.contains("KSeF credentials read") && l.contains("\"credential_kind\":\"token\"")),
        "the credentials read is logged"
    );
    assert!(
        metrics.lines().any(|l| l.contains("\"CredentialDaysLeft\"")),
        "and its days left emitted"
    );
    assert!(with_state > 0 && with_class > 0, "state {with_state}, error class {with_class}");
    std::fs::remove_dir_all(&dir).ok();
}
