//! What the jobs read from a store: a document retrying all week belongs in the week's errors
//! although its state began earlier; a snapshot reads histories for all but ACCEPTED documents.

use chrono::{DateTime, Duration, TimeZone, Utc};
use relay_domain::memory::MemoryDocumentStore;
use relay_domain::ports::{DocumentRegistry, DocumentUpdates, Registration};
use relay_domain::{
    Change, ContentHash, DocumentKey, DocumentState, ErpDocumentId, ErrorClass, ErrorSource, Failure, InitialState, InvoiceKind,
    InvoiceNumber, KsefReference, NewDocument, Nip, StorageKeys, TraceId,
};
use relay_report::snapshot::{take, take_window, SnapshotLimits};
use relay_report::weekly::{Week, WeeklyReport};

fn new_doc(n: u32) -> NewDocument {
    NewDocument {
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
        issue_date: None,
        send_mode: relay_domain::SendMode::Online,
        send_mode_reason: None,
        initial: InitialState::Queued,
    }
}

async fn register(store: &MemoryDocumentStore, n: u32, at: DateTime<Utc>) -> relay_domain::DocumentRecord {
    match store.register(new_doc(n), at).await.unwrap() {
        Registration::Created(r) => r,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_week_counts_errors_of_documents_queued_before_it_and_snapshots_skip_accepted_histories() {
    let now = Utc.with_ymd_and_hms(2026, 2, 12, 10, 0, 0).unwrap(); // Thursday of 2026-W07
    let week = Week::containing(now);
    let store = MemoryDocumentStore::new();

    // Queued last week, retried this week: still QUEUED since last week.
    let old = register(&store, 1, week.from - Duration::days(2)).await;
    let failure = Failure::new(
        ErrorClass::Transient,
        ErrorSource::Ksef {
            operation: "send_invoice".into(),
        },
        "503 Service Unavailable",
    )
    .with_code("503");
    store
        .transition(
            &old,
            Change::RetryScheduled {
                failure,
                retry_at: now,
                charged: true,
                maybe_received: true,
            },
            now - Duration::hours(1),
        )
        .await
        .unwrap();

    // Registered and accepted this week.
    let fresh = register(&store, 2, now - Duration::hours(3)).await;
    let session = KsefReference::parse("20250625-SO-2C3E6C8000-B675CF5D68-07").unwrap();
    let sent = store
        .transition(
            &fresh,
            Change::Sent {
                session: session.clone(),
                invoice_reference: session.clone(),
            },
            now - Duration::hours(2),
        )
        .await
        .unwrap();
    let number = (0..=255u8)
        .map(|c| format!("5265877635-20260212-0100A0B0C0D0-{c:02X}"))
        .find_map(|n| relay_domain::KsefNumber::parse(&n).ok())
        .unwrap();
    store
        .transition(
            &sent,
            Change::Accepted {
                ksef_number: number,
                acquisition_date: now - Duration::hours(1),
                upo_key: Some("upo/5265877635/x.xml".into()),
                qr_code: None,
                invoicing_mode: None,
                upo_mode: None,
                reason: "200".into(),
            },
            now - Duration::hours(1),
        )
        .await
        .unwrap();

    let docs = take_window(&store, week.from, week.to, 100).await.unwrap();
    assert_eq!(docs.len(), 2, "the open one from last week is part of this week's story");
    let report = WeeklyReport::build(&docs, week, now);
    let cause = report.causes.iter().find(|c| c.code == "503").expect("the week's 503");
    assert_eq!((cause.count, cause.documents), (1, 1));
    assert_eq!(report.by_state[&DocumentState::Queued], 0, "its state began last week");
    assert_eq!(report.by_state[&DocumentState::Accepted], 1);
    assert_eq!(report.accepted_count, 1);
    assert_eq!(report.percentiles.iter().find(|(n, _)| *n == "max").unwrap().1, 2.0 * 3600.0);

    let snap = take(&store, now, SnapshotLimits::default()).await.unwrap();
    let by_state = |s: DocumentState| snap.documents.iter().find(|d| d.record.state == s).unwrap();
    assert!(by_state(DocumentState::Accepted).history.is_empty());
    assert!(!by_state(DocumentState::Queued).history.is_empty());
    assert_eq!(snap.counts[&DocumentState::Accepted], 1);
    assert_eq!(snap.counts[&DocumentState::Queued], 1);
}
