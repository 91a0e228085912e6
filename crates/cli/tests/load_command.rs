//! `ksef-relay load` as a script runs it: the real binary, the embedded simulator, in-memory
//! stores, a compressed time scale. Counts only: no wall-clock assertion (two loaded cores).

mod support;

#[test]
fn thirty_invoices_for_two_sellers_are_each_accepted_once() {
    let ran = support::ksef_relay(
        &["load", "--invoices", "30", "--sellers", "2", "--sim-time-scale", "3600", "--json"],
        &[],
    );
    assert_eq!(ran.code, Some(0), "{}", ran.text());
    let r: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap_or_else(|e| panic!("{e}: {}", ran.text()));

    assert_eq!(r["invoices"], 30);
    assert_eq!(r["sellers"], 2);
    assert_eq!(r["stores"], "memory");
    assert_eq!(r["finished"], true);
    assert_eq!(r["accepted"], 30);
    assert_eq!(r["with_upo"], 30);
    assert_eq!(r["ledger_entries"], 30);
    assert_eq!(r["each_exactly_once"], true);
    assert_eq!(r["ok"], true);
    // How many 429s KSeF answered is a measurement, not a property: at a compressed time scale
    // the client's one-second window is a fraction of a millisecond, so whether one more send
    // slips in depends on the machine's load. It is reported, and each invoice is still
    // accepted exactly once (above).
    assert!(r["too_many_requests"].is_u64(), "{}", ran.stdout);

    // KSeF's side, from the simulator's counts: each seller logged in and used its own online
    // session; every invoice was sent online (once, or again after a 429) and its UPO read.
    let ops = &r["ksef_operations"];
    assert!(ops["online_sends"].as_u64().unwrap() >= 30, "{ops}");
    assert_eq!(ops["token_logins"], 2);
    assert_eq!(ops["online_sessions_opened"], 2);
    assert_eq!(r["sessions_opened"], 2);
    assert_eq!(r["sessions_in_ledger"], 2);
    assert!(ops["invoice_status_polls"].as_u64().unwrap() >= 30, "{ops}");
    assert!(
        ops["upo_downloads"].as_u64().unwrap() + ops["upo_reads"].as_u64().unwrap() >= 30,
        "{ops}"
    );
    let total: u64 = r["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["count"].as_u64().unwrap())
        .sum();
    assert_eq!(r["ksef_calls_total"], total);

    // The measures a bench reads are there and sane (their values are not asserted).
    for field in ["wall_seconds", "intake_seconds", "throughput_per_second", "ksef_calls_per_invoice"] {
        assert!(r[field].as_f64().is_some_and(|v| v > 0.0), "{field}: {}", r[field]);
    }
    for path in ["intake_to_accepted", "intake_to_upo"] {
        let l = &r["latency_ms"][path];
        assert_eq!(l["count"], 30, "{path}");
        let (p50, p95, p99, max) = (
            l["p50"].as_f64().unwrap(),
            l["p95"].as_f64().unwrap(),
            l["p99"].as_f64().unwrap(),
            l["max"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p95 && p95 <= p99 && p99 <= max, "{path}: {l}");
    }
}

#[test]
fn a_run_that_cannot_finish_fails_with_the_ledger_check() {
    // Every send refused as unavailable: nothing reaches the ledger, and the run stops at its
    // timeout with work left; the exit code says so (a bench script relies on it).
    let ran = support::ksef_relay(
        &[
            "load",
            "--invoices",
            "3",
            "--sim-time-scale",
            "3600",
            "--fault",
            "unavailable:1.0@/invoices",
            "--timeout-secs",
            "3",
            "--json",
        ],
        &[],
    );
    assert_eq!(ran.code, Some(1), "{}", ran.text());
    let r: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap_or_else(|e| panic!("{e}: {}", ran.text()));
    assert_eq!(r["ok"], false);
    assert_eq!(r["each_exactly_once"], false);
    assert_eq!(r["ledger_entries"], 0);
    assert!(ran.stderr.contains("load run FAILED"), "{}", ran.stderr);
}

#[test]
fn at_production_limits_a_send_that_must_wait_a_minute_waits_as_a_message_not_in_the_client() {
    // 35 invoices for one seller at real time: KSeF takes 30 sends a minute, so the 31st cannot
    // go until about 61 s after the first. The run has 8 s. The relay's rate governor (the same
    // as the deployed functions', over the in-memory shared cache) does not sleep in the client
    // for that: the send fails RateLimited before calling KSeF and waits as a delayed message,
    // and the run stops at its timeout, long before the window could open (a client that slept
    // for its slot would end after 61 s at the earliest).
    let started = std::time::Instant::now();
    let ran = support::ksef_relay(
        &["load", "--invoices", "35", "--sim-time-scale", "1", "--timeout-secs", "8", "--json"],
        &[],
    );
    let took = started.elapsed();
    assert_eq!(ran.code, Some(1), "{}", ran.text());
    let r: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap_or_else(|e| panic!("{e}: {}", ran.text()));
    assert_eq!(r["finished"], false, "{}", ran.stdout);
    assert_eq!(r["too_many_requests"], 0, "nothing reached KSeF past its limit: {}", ran.stdout);
    let in_ledger = r["ledger_entries"].as_u64().unwrap();
    assert!(in_ledger <= 30, "{in_ledger} sends in KSeF's first minute");
    assert_eq!(r["each_exactly_once"], false, "not all were sent");
    assert!(
        took < std::time::Duration::from_secs(60),
        "the run ended after {took:?}: something waited for the minute window"
    );
}
