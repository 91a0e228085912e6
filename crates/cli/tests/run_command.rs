//! `ksef-relay run` end to end, as a user runs it: the real binary, the embedded KSeF simulator,
//! in-memory stores and the AWS emulator, with and without faults.

use std::process::Command;

fn run(args: &[&str], out: &std::path::Path) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ksef-relay"))
        .arg("run")
        .args(args)
        .arg("--out")
        .arg(out)
        .env_remove("KSEF_RELAY_AWS_ENDPOINT")
        .output()
        .unwrap();
    (
        output.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

fn out_dir(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("ksef-relay-{tag}-{}", std::process::id()))
}

fn report(out: &std::path::Path) -> Vec<serde_json::Value> {
    serde_json::from_slice::<serde_json::Value>(&std::fs::read(out.join("report.json")).unwrap())
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn state_of<'a>(report: &'a [serde_json::Value], file: &str) -> &'a str {
    let row = report
        .iter()
        .find(|r| r["file"] == file)
        .unwrap_or_else(|| panic!("{file} not in the report"));
    row["document"]["record"]["state"].as_str().unwrap_or("-")
}

/// Every bundled sample ends ACCEPTED with its UPO and outbox result (sample 24 carries an
/// attachment and goes in a batch session). The simulator accepted each invoice exactly once.
fn check_bundled_run(code: Option<i32>, text: &str, out: &std::path::Path, with_files: bool) {
    assert_eq!(code, Some(0), "{text}");
    let report = report(out);
    assert_eq!(report.len(), 12);
    for row in &report {
        let file = row["file"].as_str().unwrap();
        assert_eq!(state_of(&report, file), "ACCEPTED", "{file}: {text}");
        let record = &row["document"]["record"];
        let upo = record["storage"]["upo"].as_str().expect("a UPO key");
        if with_files {
            assert!(out.join(upo).exists(), "{upo} written");
            let outbox = out.join(format!("outbox/9999999999/{}.json", file.trim_end_matches(".xml")));
            let result: serde_json::Value = serde_json::from_slice(&std::fs::read(&outbox).unwrap()).unwrap();
            assert_eq!(result["state"], "ACCEPTED");
            assert_eq!(result["ksefNumber"], record["ksef"]["ksef_number"]);
        }
        let session = record["ksef"]["session_reference"].as_str().unwrap();
        let with_attachment = file == "FA_3_Przykład_24.xml";
        // An attachment-free invoice goes online, unless it was still waiting for its online turn
        // (e.g. after a send KSeF refused outright, under faults) when its seller's batch went
        // anyway: the batch then takes it, and its history says so (CI once saw sample 1 moved).
        assert!(row["document"]["history"].is_array(), "{file}: the report row has its history");
        let history = row["document"]["history"].to_string();
        let moved = history.contains("send mode online → batch");
        assert!(!(with_attachment && moved), "{file}: {history}");
        assert_eq!(
            session.contains("-SB-"),
            with_attachment || moved,
            "{file} went in {session}: {history}"
        );
    }
    assert!(
        text.contains("KSeF simulator ledger: 12 invoice(s) accepted, 12 distinct (each exactly once: true)"),
        "{text}"
    );
}

// Rates a careful deployment must survive within its retry budget (10 attempts): 503s,
// resets, answers past the client's 3 s timeout (the send may or may not have landed), 429
// bursts, invoices cancelled with 550 or stuck in 150 for a while, and session closes that
// answer only after the timeout. Retries press against KSeF's 30 sends a minute; a minute
// passes in six seconds. (At 60× the one-second window shrinks to 17 ms, and on a loaded
// machine concurrent requests then reach the simulator out of order inside one window: real
// 429s with growing penalties, a test artefact, not the relay's behaviour.)
const FAULTS: &[&str] = &[
    "--fault",
    "unavailable:0.1@/invoices",
    "--fault",
    "status550:0.1",
    "--fault",
    "reset:0.03",
    "--fault",
    "slow:0.08:3500@/invoices",
    "--fault",
    "burst429:0.1:500",
    "--fault",
    "stuck150:0.2:2000",
    "--fault",
    "close-timeout::3500",
    "--sim-time-scale",
    "10",
];

#[test]
fn run_over_the_bundled_samples_in_memory() {
    let out = out_dir("run");
    let (code, text) = run(&[], &out);
    check_bundled_run(code, &text, &out, true);
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn run_with_ksef_faults_still_accepts_each_invoice_exactly_once() {
    let out = out_dir("run-faults");
    let (code, text) = run(FAULTS, &out);
    check_bundled_run(code, &text, &out, true);
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn run_against_the_aws_emulator_with_ksef_faults() {
    let out = out_dir("run-aws");
    let endpoint = relay_tests::emulator::endpoint();
    let args: Vec<&str> = ["--aws-endpoint", endpoint].into_iter().chain(FAULTS.iter().copied()).collect();
    let (code, text) = run(&args, &out);
    assert!(text.contains(&format!("AWS API at {endpoint}")), "{text}");
    check_bundled_run(code, &text, &out, false);
    // The deployed path: each file was uploaded to the inbox and taken in from the bucket's
    // notification on the intake queue.
    for row in report(&out) {
        let file = row["file"].as_str().unwrap();
        let source = row["document"]["record"]["storage"]["source"].as_str().unwrap();
        assert_eq!(source, format!("inbox/9999999999/{file}"), "{row}");
    }
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn unreadable_files_are_reported_not_registered() {
    let dir = out_dir("bad");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bomb.xml"), r#"<!DOCTYPE x [<!ENTITY a "aaaa">]><Faktura>&a;</Faktura>"#).unwrap();
    let (code, text) = run(&["--input", dir.to_str().unwrap()], &dir.join("out"));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("not registered: a DOCTYPE declaration is not allowed"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Four invoices for a run through an outage: three issued today (Polish time, `P_1`), one the
/// Ministry's sample 23 as it is (issued in June: late whatever happens).
fn outage_inputs(tag: &str) -> std::path::PathBuf {
    let dir = out_dir(&format!("{tag}-in"));
    std::fs::create_dir_all(&dir).unwrap();
    let today = relay_domain::polish_calendar::poland_date(chrono::Utc::now()).to_string();
    let samples = ksef_relay::bundled_samples::run_set();
    for (sample, number) in [
        ("FA_3_Przykład_1.xml", "1"),
        ("FA_3_Przykład_21.xml", "21"),
        ("FA_3_Przykład_22.xml", "22"),
    ] {
        let (_, bytes) = samples.iter().find(|(n, _)| n == sample).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        let element = |name: &str| {
            let (open, close) = (format!("<{name}>"), format!("</{name}>"));
            let start = text.find(&open).unwrap() + open.len();
            let end = start + text[start..].find(&close).unwrap();
            format!("{open}{}{close}", &text[start..end])
        };
        let (p1, p2) = (element("P_1"), element("P_2"));
        let text =
            text.replacen(&p1, &format!("<P_1>{today}</P_1>"), 1)
                .replacen(&p2, &p2.replace("</P_2>", &format!("-OUT{number}</P_2>")), 1);
        std::fs::write(dir.join(format!("today_{number}.xml")), text).unwrap();
    }
    let (_, late) = samples.iter().find(|(n, _)| n == "FA_3_Przykład_23.xml").unwrap();
    std::fs::write(dir.join("late_23.xml"), late).unwrap();
    dir
}

fn json_file(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// What both outage runs must show: each invoice ACCEPTED exactly once with its KOD I (and, for
/// an offline one, KOD II) files; while KSeF was down, every call the simulator answered 503 was
/// the availability probe's, one per poll whose probe failed, except at most `failed_sends`
/// calls of the relay's own that taught it KSeF was down; no document spent its retry budget on
/// the hold. Returns the report and the polls.
fn check_outage_run(
    code: Option<i32>,
    text: &str,
    out: &std::path::Path,
    failed_sends: u64,
) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("KSeF simulator ledger: 4 invoice(s) accepted, 4 distinct (each exactly once: true)"),
        "{text}"
    );
    let report = report(out);
    assert_eq!(report.len(), 4);
    for row in &report {
        let file = row["file"].as_str().unwrap();
        let record = &row["document"]["record"];
        assert_eq!(record["state"], "ACCEPTED", "{file}: {text}");
        let history = row["document"]["history"].to_string();
        assert!(history.contains("sending held: KSeF CUSTOM is "), "{file} was held: {history}");
        let outbox = json_file(&out.join(format!("outbox/9999999999/{}.json", file.trim_end_matches(".xml"))));
        let codes = outbox["qrCodes"].as_array().unwrap();
        let kod1 = codes
            .iter()
            .find(|c| c["code"] == "KOD_I" && c["label"] == record["ksef"]["ksef_number"])
            .unwrap_or_else(|| panic!("{file}: KOD I with its KSeF number in {outbox}"));
        for c in codes {
            for key in [&c["pngKey"], &c["svgKey"]] {
                assert!(out.join(key.as_str().unwrap()).exists(), "{file}: {key} written");
            }
        }
        assert!(kod1["pngKey"].as_str().unwrap().starts_with("qr/9999999999/"));
        if record["offline"] == true {
            for (code, label) in [("KOD_I", "OFFLINE"), ("KOD_II", "CERTYFIKAT")] {
                assert!(
                    codes.iter().any(|c| c["code"] == code && c["label"] == label),
                    "{file}: {code} {label} in {outbox}"
                );
            }
            assert_eq!(record["offline_codes"], "written", "{file}");
        }
    }
    let polls = json_file(&out.join("availability-polls.json")).as_array().unwrap().clone();
    assert!(
        polls.iter().any(|p| p["availability"]["evidence"]["probe"].get("Err").is_some()),
        "a poll met the outage: {polls:?}"
    );
    // Each poll probes up to three times before calling KSeF down, and says how many failed.
    let failed_probes: u64 = polls.iter().map(|p| p["failed_probes"].as_u64().unwrap()).sum();
    assert!(
        polls.last().unwrap()["availability"]["state"] == "AVAILABLE",
        "the last poll saw KSeF back: {polls:?}"
    );
    let calls = json_file(&out.join("ksef-calls.json"));
    let unavailable: Vec<&serde_json::Value> = calls.as_array().unwrap().iter().filter(|c| c["status"] == 503).collect();
    let count = |probe: bool| -> u64 {
        unavailable
            .iter()
            .filter(|c| (c["route"] == "/security/public-key-certificates") == probe)
            .map(|c| c["count"].as_u64().unwrap())
            .sum()
    };
    // The relay's own calls fetch the same public keys first: any such call beyond the probes
    // is one of the relay's.
    let own = count(false) + count(true) - failed_probes;
    assert!(count(true) >= failed_probes, "{calls}");
    assert!(
        own <= failed_sends,
        "{own} KSeF calls besides the probes during the outage (at most {failed_sends}): {calls}"
    );
    (report, polls)
}

#[test]
fn run_through_an_announced_outage_holds_then_delivers_offline_invoices_with_their_codes_and_deadlines() {
    let out = out_dir("run-outage");
    let input = outage_inputs("run-outage");
    // 600 simulated seconds at 30x: KSeF is down for the first 20 s of the run, and the poll
    // runs every 10 s (the sweeper's 5 minutes).
    let args = [
        "--input",
        input.to_str().unwrap(),
        "--fault",
        "outage:0..600",
        "--sim-time-scale",
        "30",
    ];
    let (code, text) = run(&args, &out);
    // Announced: the relay never calls KSeF while Latarnia says FAILURE.
    let (report, polls) = check_outage_run(code, &text, &out, 0);

    // Latarnia's messages archived, the window on the last poll's state.
    for id in ["K_2FSIM_2FAWR_2F1", "K_2FSIM_2FAWR_2F2"] {
        assert!(out.join(format!("latarnia/CUSTOM/{id}/v1.json")).exists(), "{id} archived");
    }
    assert!(polls
        .iter()
        .any(|p| p["availability"]["state"] == "FAILURE" && p["availability"]["source"]["message"] == "K/SIM/AWR/1"));
    let windows = polls.last().unwrap()["availability"]["windows"].as_array().unwrap().clone();
    assert_eq!(windows.len(), 1, "{windows:?}");
    assert_eq!(windows[0]["end_declared"], true);
    let end: chrono::DateTime<chrono::Utc> = windows[0]["end"].as_str().unwrap().parse().unwrap();
    use relay_domain::polish_calendar::{business_days_after, end_of_day, poland_date};
    let failure_deadline = end_of_day(business_days_after(poland_date(end), 7));

    for row in &report {
        let file = row["file"].as_str().unwrap();
        let record = &row["document"]["record"];
        let history = row["document"]["history"].to_string();
        assert!(history.contains("(Latarnia message K/SIM/AWR/1)"), "{file}: {history}");
        assert_eq!(record["attempts"], 0, "{file}: the hold spent no attempt: {history}");
        assert_eq!(record["ksef"]["invoicing_mode"], "Offline", "{file}");
        assert_eq!(record["offline"], true, "{file}");
        let deadline: chrono::DateTime<chrono::Utc> = record["legal_deadline"]["at"].as_str().unwrap().parse().unwrap();
        let acquired: chrono::DateTime<chrono::Utc> = record["ksef"]["acquisition_date"].as_str().unwrap().parse().unwrap();
        if file.starts_with("today_") {
            // Issued during the declared failure: its emergency mode, 7 business days after it
            // ended, and met.
            assert_eq!(record["offline_mode"], "failure", "{file}: {history}");
            assert_eq!(deadline, failure_deadline, "{file}");
            assert!(acquired <= deadline, "{file}: met");
        } else {
            // Issued in June: late whatever happened, KSeF files it Offline by itself.
            assert_eq!(record["offline_mode"], "sent_after_issue_day", "{file}");
        }
    }
    // The outage and the state, on the status page and in the final lines.
    let page = std::fs::read_to_string(out.join("status.html")).unwrap();
    assert!(
        page.contains("K/SIM/AWR/1") && page.contains("AVAILABLE"),
        "the status page shows the outage"
    );
    assert!(text.contains("KSeF availability: KSeF CUSTOM is AVAILABLE"), "{text}");
    assert!(
        text.contains("declared Failure") && text.contains("K/SIM/AWR/1, end declared"),
        "{text}"
    );
    std::fs::remove_dir_all(&out).ok();
    std::fs::remove_dir_all(&input).ok();
}

#[test]
fn run_through_a_silent_outage_holds_on_the_relays_own_evidence_and_spends_no_budget() {
    let out = out_dir("run-silent");
    let input = outage_inputs("run-silent");
    let args = [
        "--input",
        input.to_str().unwrap(),
        "--fault",
        "silent-outage:0..600",
        "--sim-time-scale",
        "30",
    ];
    let (code, text) = run(&args, &out);
    // At most the run of failed calls that teaches the relay KSeF is down.
    let failed_sends = u64::from(relay_domain::availability::FAILED_CALLS_DOWN);
    let (report, polls) = check_outage_run(code, &text, &out, failed_sends);

    // Latarnia said nothing: no window, no message archived; our own evidence held sending.
    assert!(!out.join("latarnia").exists(), "nothing published");
    assert!(polls.iter().all(|p| p["availability"]["windows"].as_array().unwrap().is_empty()));
    assert!(
        polls
            .iter()
            .any(|p| p["availability"]["state"] == "DEGRADED" && p["availability"]["source"]["kind"] == "own_evidence"),
        "{polls:?}"
    );
    assert!(text.contains("DEGRADED at ") && text.contains("the relay's own evidence"), "{text}");
    for row in &report {
        let file = row["file"].as_str().unwrap();
        let record = &row["document"]["record"];
        let history = row["document"]["history"].to_string();
        assert!(
            history.contains("is DEGRADED since") && history.contains("the relay's own evidence"),
            "{file}: {history}"
        );
        // Only a document whose send met the 503 before the hold spent an attempt.
        assert!(record["attempts"].as_u64().unwrap() <= 1, "{file}: {history}");
        if file.starts_with("today_") {
            // Issued today and received today, nothing declared: an online invoice.
            assert_eq!(record["ksef"]["invoicing_mode"], "Online", "{file}");
            assert!(record["offline_mode"].is_null(), "{file}: {history}");
        } else {
            assert_eq!(record["ksef"]["invoicing_mode"], "Offline", "{file}");
            assert_eq!(record["offline_mode"], "sent_after_issue_day", "{file}");
        }
    }
    std::fs::remove_dir_all(&out).ok();
    std::fs::remove_dir_all(&input).ok();
}
