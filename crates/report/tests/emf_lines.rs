//! The business and regulatory metric lines, as written to the sink, parse as valid EMF with
//! the names, units and dimensions the alarms and dashboard are built on, and count right.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use relay_domain::{
    ContentHash, DocumentKey, DocumentRecord, DocumentState, ErpDocumentId, InitialState, InvoiceKind, InvoiceNumber, KsefNumber,
    NewDocument, Nip, StorageKeys, TraceId,
};
use relay_report::metrics::Levels;
use relay_report::snapshot::{Snapshot, StoredDocument};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn doc(n: u32, state: DocumentState, created: DateTime<Utc>, issued: NaiveDate) -> StoredDocument {
    let new = NewDocument {
        key: DocumentKey::new(
            Nip::parse("5265877635").unwrap(),
            InvoiceKind::Vat,
            InvoiceNumber::parse(&format!("FV/{n}")).unwrap(),
        ),
        content_hash: ContentHash::of(format!("doc {n}").as_bytes()),
        content_size: 10,
        trace_id: TraceId::generate(),
        erp_document_id: ErpDocumentId::parse(&format!("erp-{n}")).unwrap(),
        storage: StorageKeys {
            source: format!("inbox/5265877635/erp-{n}.xml"),
            ..Default::default()
        },
        offline_mode: None,
        issue_date: Some(issued),
        send_mode: relay_domain::SendMode::Online,
        send_mode_reason: None,
        initial: InitialState::Queued,
    };
    let applied = DocumentRecord::register(new, created);
    let mut record = applied.record;
    record.state = state;
    record.state_since = created;
    StoredDocument {
        record,
        history: applied.history,
    }
}

#[test]
fn metric_lines_are_valid_emf_and_count_right() {
    // Thursday 2026-02-12 10:00 UTC (11:00 in Poland).
    let now = Utc.with_ymd_and_hms(2026, 2, 12, 10, 0, 0).unwrap();
    let today = NaiveDate::from_ymd_opt(2026, 2, 12).unwrap();
    let yesterday = today.pred_opt().unwrap();
    let monday = NaiveDate::from_ymd_opt(2026, 2, 9).unwrap();
    let mut docs = vec![
        // Open, 5 h old, issued Monday: overdue, over 1 h, past its deadline (end of Tuesday).
        doc(1, DocumentState::Queued, now - Duration::hours(5), monday),
        // Open, 2 h old, issued yesterday (Wednesday): over 1 h, offline, due by the end of
        // Thursday (23:00 UTC), 13 h away: not yet near.
        doc(2, DocumentState::Failed, now - Duration::hours(2), yesterday),
        // Open, fresh, issued today: nothing to report.
        doc(3, DocumentState::Sent, now - Duration::minutes(5), today),
        // Rejected, issued Monday, no KSeF number: past the deadline, not open.
        doc(4, DocumentState::Rejected, now - Duration::hours(30), monday),
        // Accepted with a number: no deadline.
        doc(5, DocumentState::Accepted, now - Duration::hours(30), monday),
    ];
    docs[4].record.ksef.ksef_number = Some(KsefNumber::parse(&sample_ksef_number()).unwrap());
    let snap = Snapshot::of(docs, now);
    let levels = Levels::compute(&snap, Duration::hours(4));
    assert_eq!(levels.overdue, 1);
    assert_eq!(levels.waiting_over_one_hour, 2);
    assert_eq!(levels.oldest_open_age_seconds, 5.0 * 3600.0);
    assert_eq!(levels.past_legal_deadline, 2);
    assert_eq!(levels.offline_nearing_deadline, 0);

    // Thursday 21:00 in Poland: document 2's deadline is 3 h away.
    let evening = Utc.with_ymd_and_hms(2026, 2, 12, 20, 0, 0).unwrap();
    let late = Levels::compute(&Snapshot::of(snap.documents.clone(), evening), Duration::hours(4));
    assert_eq!(late.offline_nearing_deadline, 1, "document 2 is due at 23:00 UTC");
    assert_eq!(late.past_legal_deadline, 2);

    let sink = Captured::default();
    relay_observe::emf::set_sink(Box::new(sink.clone()));
    levels.emit(now);
    let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1 + DocumentState::ALL.len());

    let mut declared: BTreeMap<String, String> = BTreeMap::new();
    let mut per_state: BTreeMap<String, f64> = BTreeMap::new();
    for line in &lines {
        for (name, unit) in relay_observe::emf::check_line(line).unwrap_or_else(|e| panic!("{e}: {line}")) {
            declared.insert(name, unit);
        }
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["_aws"]["Timestamp"], now.timestamp_millis());
        for d in v["_aws"]["CloudWatchMetrics"].as_array().unwrap() {
            assert_eq!(d["Namespace"], "KsefRelay");
            let dims = &d["Dimensions"];
            let names: Vec<&str> = d["Metrics"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["Name"].as_str().unwrap())
                .collect();
            if names == ["DocumentsInState"] {
                assert_eq!(dims, &serde_json::json!([["State"]]));
                per_state.insert(v["State"].as_str().unwrap().to_owned(), v["DocumentsInState"].as_f64().unwrap());
            } else {
                assert_eq!(dims, &serde_json::json!([[]]), "the contract's no-dimension metrics");
            }
        }
        if v.get("DocumentsOverdue").is_some() {
            assert_eq!(v["DocumentsOverdue"], 1.0);
            assert_eq!(v["DocumentsPastLegalDeadline"], 2.0);
            assert_eq!(v["OldestOpenDocumentAgeSeconds"], 18000.0);
        }
    }
    let expected: BTreeMap<String, String> = [
        ("DocumentsInState", "Count"),
        ("DocumentsOverdue", "Count"),
        ("DocumentsWaitingOverOneHour", "Count"),
        ("OldestOpenDocumentAgeSeconds", "Seconds"),
        ("DocumentsPastLegalDeadline", "Count"),
        ("OfflineDocumentsNearingDeadline", "Count"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();
    assert_eq!(declared, expected);
    let states: BTreeMap<String, f64> = [
        ("ACCEPTED", 1.0),
        ("CONFLICT", 0.0),
        ("FAILED", 1.0),
        ("PROCESSING", 0.0),
        ("QUEUED", 1.0),
        ("REJECTED", 1.0),
        ("SENT", 1.0),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b))
    .collect();
    assert_eq!(per_state, states, "one line per state, the domain's codes as the State values");
}

/// A KSeF number with a valid CRC, made by the domain's own parser rules.
fn sample_ksef_number() -> String {
    // Seller NIP, date, technical part; the checksum is found by trying all 256 values.
    let base = "5265877635-20260212-0100A0B0C0D0";
    (0..=255u8)
        .map(|c| format!("{base}-{c:02X}"))
        .find(|n| KsefNumber::parse(n).is_ok())
        .unwrap()
}

/// The regulatory counts read each document's own deadline: its offline mode and the declared
/// outages. A failure declared during an offline24 deadline moves it (so a document the strict
/// count called late is not), and one the ERP marked issued in failure mode counts 7 business
/// days from the failure's end.
#[test]
fn the_legal_deadline_counts_follow_the_offline_mode_and_the_declared_failures() {
    use relay_domain::availability::{DeclaredCategory, FailureWindow};
    // Thursday 2026-02-12 10:00 UTC.
    let now = Utc.with_ymd_and_hms(2026, 2, 12, 10, 0, 0).unwrap();
    let monday = NaiveDate::from_ymd_opt(2026, 2, 9).unwrap();
    let tuesday = NaiveDate::from_ymd_opt(2026, 2, 10).unwrap();
    let mut marked = doc(2, DocumentState::Queued, now - Duration::hours(30), tuesday);
    marked.record.offline_mode = Some(relay_domain::OfflineMode::Failure);
    let docs = vec![
        // Issued Monday, online: strictly due by the end of Tuesday, so past it now.
        doc(1, DocumentState::Queued, now - Duration::hours(50), monday),
        marked,
    ];
    let snap = Snapshot::of(docs, now);
    // Nothing declared: both are late by the strict rule (the marked one's failure is unknown).
    assert_eq!(Levels::compute(&snap, Duration::hours(4)).past_legal_deadline, 2);
    // A failure declared Tuesday 09:00 to Wednesday 11 09:00 UTC: document 1's deadline moves to
    // 7 business days after Wednesday (Friday 20th), document 2's too; neither is late or near.
    let failure = FailureWindow {
        event: "AWR/1".into(),
        category: DeclaredCategory::Failure,
        start: Utc.with_ymd_and_hms(2026, 2, 10, 9, 0, 0).unwrap(),
        end: Some(Utc.with_ymd_and_hms(2026, 2, 11, 9, 0, 0).unwrap()),
        end_declared: true,
        messages: vec![("K/2026/AWR/01".into(), 1)],
    };
    let levels = Levels::compute_with(&snap, Duration::hours(4), std::slice::from_ref(&failure));
    assert_eq!((levels.past_legal_deadline, levels.offline_nearing_deadline), (0, 0));
    // Friday 20th 20:00 UTC (21:00 in Poland): both due at 23:00 UTC, 3 h away.
    let friday = Utc.with_ymd_and_hms(2026, 2, 20, 20, 0, 0).unwrap();
    let late = Levels::compute_with(
        &Snapshot::of(snap.documents.clone(), friday),
        Duration::hours(4),
        std::slice::from_ref(&failure),
    );
    assert_eq!((late.past_legal_deadline, late.offline_nearing_deadline), (0, 2));
    // Still open: the deadline waits for its end, so nothing is counted late.
    let open = FailureWindow { end: None, ..failure };
    let waiting = Levels::compute_with(&Snapshot::of(snap.documents.clone(), friday), Duration::hours(4), &[open]);
    assert_eq!((waiting.past_legal_deadline, waiting.offline_nearing_deadline), (0, 0));
}
