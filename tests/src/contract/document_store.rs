//! The document store contract.

use std::time::Duration;

use chrono::{DateTime, Utc};
use relay_domain::ports::{DocumentStore, Registration, StoreError};
use relay_domain::{
    Change, ClaimPurpose, ClaimRefused, ContentHash, DocumentKey, DocumentState, ErpDocumentId, ErrorClass, ErrorSource, Failure,
    HistoryEntry, HistoryEvent, InitialState, InvoiceKind, InvoiceNumber, KsefReference, NewDocument, Nip, StorageKeys, TraceId,
};

/// Generates one `#[tokio::test]` per contract case; `$make` is an async fn returning a fresh store.
#[macro_export]
macro_rules! document_store_contract {
    ($make:path) => {
        mod document_store_contract {
            use super::*;
            $crate::document_store_contract!(@cases $make;
                second_register_returns_the_existing_record,
                offline_mode_and_legal_deadline_are_kept,
                get_of_an_unknown_document_is_none,
                a_claim_while_another_lease_is_held_fails,
                an_expired_lease_can_be_claimed,
                claims_respect_the_purpose,
                racing_claims_have_exactly_one_winner,
                a_claim_as_read_writes_only_over_the_version_read,
                transition_records_the_result_and_refuses_a_stale_version,
                a_transition_the_state_machine_forbids_writes_nothing,
                append_history_appends_and_needs_the_document,
                list_by_state_finds_the_old_ones_oldest_first,
                windows_and_counts_by_state,
                long_histories_are_kept_whole_and_in_order,
            );
        }
    };
    (@cases $make:path; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::contract::document_store::$case($make().await).await;
            }
        )+
    };
}

fn key(number: &str) -> DocumentKey {
    DocumentKey::new(
        Nip::parse("5265877635").unwrap(),
        InvoiceKind::Vat,
        InvoiceNumber::parse(number).unwrap(),
    )
}

fn new_doc(number: &str, content: &[u8]) -> NewDocument {
    NewDocument {
        key: key(number),
        content_hash: ContentHash::of(content),
        content_size: content.len() as u64,
        trace_id: TraceId::generate(),
        erp_document_id: ErpDocumentId::parse(&format!("erp-{}", number.replace('/', "-"))).unwrap(),
        storage: StorageKeys {
            source: format!("inbox/5265877635/{number}.xml"),
            ..Default::default()
        },
        offline_mode: None,
        issue_date: None,
        send_mode: relay_domain::SendMode::Online,
        send_mode_reason: None,
        initial: InitialState::Queued,
    }
}

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_770_000_000 + secs, 0).unwrap()
}

fn transient(msg: &str) -> Failure {
    Failure::new(
        ErrorClass::Transient,
        ErrorSource::Ksef {
            operation: "send_invoice".into(),
        },
        msg,
    )
}

fn session() -> KsefReference {
    KsefReference::parse("20250625-SO-2C3E6C8000-B675CF5D68-07").unwrap()
}

async fn created<S: DocumentStore>(store: &S, doc: NewDocument, now: DateTime<Utc>) -> relay_domain::DocumentRecord {
    match store.register(doc, now).await.unwrap() {
        Registration::Created(r) => r,
        other => panic!("expected Created, got {other:?}"),
    }
}

pub async fn second_register_returns_the_existing_record<S: DocumentStore>(store: S) {
    let first = created(&store, new_doc("FV/1", b"<a/>"), t(0)).await;
    assert_eq!((first.state, first.version), (DocumentState::Queued, 1));
    // Same identity and content again: the stored record comes back untouched.
    match store.register(new_doc("FV/1", b"<a/>"), t(5)).await.unwrap() {
        Registration::Existing(doc) => {
            assert_eq!(doc.record, first);
            assert_eq!(doc.history.len(), 2, "registered + state change: {:?}", doc.history);
        }
        other => panic!("expected Existing, got {other:?}"),
    }
    // Same identity, other content: still the original, so the caller can see the conflict.
    match store.register(new_doc("FV/1", b"<b/>"), t(6)).await.unwrap() {
        Registration::Existing(doc) => {
            assert_eq!(doc.record.content_hash, ContentHash::of(b"<a/>"));
            assert_ne!(doc.record.content_hash, ContentHash::of(b"<b/>"));
        }
        other => panic!("expected Existing, got {other:?}"),
    }
    let stored = store.get(&key("FV/1")).await.unwrap().unwrap();
    assert_eq!(stored.record, first);
}

/// An offline invoice's mode, issue date and legal deadline are kept as registered, and the
/// offline check's write (mode, deadline, QR codes) reads back the same from every store.
pub async fn offline_mode_and_legal_deadline_are_kept<S: DocumentStore>(store: S) {
    let issued = chrono::NaiveDate::from_ymd_opt(2026, 11, 9).unwrap();
    let mut doc = new_doc("OFF/1", b"<off/>");
    doc.offline_mode = Some(relay_domain::OfflineMode::Failure);
    doc.issue_date = Some(issued);
    let r = created(&store, doc, t(0)).await;
    assert_eq!((r.offline, r.offline_mode), (true, Some(relay_domain::OfflineMode::Failure)));
    let stored = store.get(&key("OFF/1")).await.unwrap().unwrap().record;
    assert_eq!(stored, r);
    assert!(stored.legal_deadline.is_some());
    let claimed = store
        .claim(&r.key, ClaimPurpose::Send, "w", t(1), Duration::from_secs(60))
        .await
        .unwrap();
    let deadline = relay_domain::LegalDeadline::AfterOpenFailure {
        event: "AWR/1".into(),
        start: t(0),
    };
    let checked = store
        .transition(
            &claimed,
            Change::OfflineChecked {
                mode: Some(relay_domain::OfflineMode::Failure),
                deadline: deadline.clone(),
                codes: Some(Ok(())),
            },
            t(2),
        )
        .await
        .unwrap();
    let stored = store.get(&key("OFF/1")).await.unwrap().unwrap();
    assert_eq!(stored.record, checked);
    assert_eq!(
        (stored.record.legal_deadline, stored.record.offline_codes),
        (Some(deadline), relay_domain::OfflineCodes::Written)
    );
    assert!(stored
        .history
        .iter()
        .any(|h| matches!(&h.event, HistoryEvent::Note { message } if message.contains("KOD II"))));
}

pub async fn get_of_an_unknown_document_is_none<S: DocumentStore>(store: S) {
    assert_eq!(store.get(&key("nope")).await.unwrap(), None);
    let err = store
        .claim(&key("nope"), ClaimPurpose::Send, "w", t(0), Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

pub async fn a_claim_while_another_lease_is_held_fails<S: DocumentStore>(store: S) {
    created(&store, new_doc("FV/2", b"x"), t(0)).await;
    let held = store
        .claim(&key("FV/2"), ClaimPurpose::Send, "worker-a", t(1), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(held.lease.as_ref().unwrap().owner, "worker-a");
    assert_eq!(held.version, 2);
    let err = store
        .claim(&key("FV/2"), ClaimPurpose::Send, "worker-b", t(30), Duration::from_secs(60))
        .await
        .unwrap_err();
    match err {
        StoreError::Claim(ClaimRefused::LeaseHeld { owner, until }) => {
            assert_eq!(owner, "worker-a");
            assert_eq!(until, t(61));
        }
        other => panic!("expected LeaseHeld, got {other:?}"),
    }
    assert_eq!(
        store.get(&key("FV/2")).await.unwrap().unwrap().record,
        held,
        "a refused claim writes nothing"
    );
}

pub async fn an_expired_lease_can_be_claimed<S: DocumentStore>(store: S) {
    created(&store, new_doc("FV/3", b"x"), t(0)).await;
    store
        .claim(&key("FV/3"), ClaimPurpose::Send, "worker-a", t(1), Duration::from_secs(60))
        .await
        .unwrap();
    let taken = store
        .claim(&key("FV/3"), ClaimPurpose::Send, "worker-b", t(62), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(taken.lease.as_ref().unwrap().owner, "worker-b");
    assert_eq!(taken.version, 3);
    assert_eq!(store.get(&key("FV/3")).await.unwrap().unwrap().record, taken);
}

pub async fn claims_respect_the_purpose<S: DocumentStore>(store: S) {
    let mut d = new_doc("FV/4", b"x");
    d.initial = InitialState::Rejected {
        findings: vec![Failure::new(ErrorClass::Permanent, ErrorSource::Validation, "P_2 missing").at("/Faktura/Fa/P_2")],
    };
    created(&store, d, t(0)).await;
    let err = store
        .claim(&key("FV/4"), ClaimPurpose::Send, "w", t(1), Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Claim(ClaimRefused::WrongState {
                state: DocumentState::Rejected,
                ..
            })
        ),
        "{err:?}"
    );
    created(&store, new_doc("FV/5", b"x"), t(0)).await;
    assert!(store
        .claim(&key("FV/5"), ClaimPurpose::Poll, "w", t(1), Duration::from_secs(30))
        .await
        .is_err());
}

pub async fn racing_claims_have_exactly_one_winner<S: DocumentStore>(store: S) {
    created(&store, new_doc("FV/6", b"x"), t(0)).await;
    let k = key("FV/6");
    let claims = (0..6).map(|i| {
        let (store, k) = (&store, k.clone());
        async move {
            store
                .claim(&k, ClaimPurpose::Send, &format!("worker-{i}"), t(1), Duration::from_secs(60))
                .await
        }
    });
    // join_all polls every claim before any finishes, so they really race.
    let results = futures::future::join_all(claims).await;
    let winners: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for r in results.iter().filter(|r| r.is_err()) {
        let e = r.as_ref().unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::VersionConflict { .. } | StoreError::Claim(ClaimRefused::LeaseHeld { .. })
            ),
            "{e:?}"
        );
        assert_eq!(e.class(), ErrorClass::Transient);
    }
}

/// A claim over the record the caller just read: it writes without reading again, and only if
/// nobody wrote since; a lease the read record shows held refuses it; a stale read writes nothing.
pub async fn a_claim_as_read_writes_only_over_the_version_read<S: DocumentStore>(store: S) {
    created(&store, new_doc("FV/61", b"x"), t(0)).await;
    let read = store.get(&key("FV/61")).await.unwrap().unwrap().record;
    let held = store
        .claim_as_read(&read, ClaimPurpose::Send, "worker-a", t(1), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(held.version, read.version + 1);
    assert_eq!(held.lease.as_ref().unwrap().owner, "worker-a");
    assert_eq!(store.get(&key("FV/61")).await.unwrap().unwrap().record, held);
    // The same stale read again (another worker read before worker-a's claim): refused.
    let err = store
        .claim_as_read(&read, ClaimPurpose::Send, "worker-b", t(2), Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::VersionConflict { .. }), "{err:?}");
    // A fresh read shows the lease: refused as held, until it runs out.
    let fresh = store.get(&key("FV/61")).await.unwrap().unwrap().record;
    let err = store
        .claim_as_read(&fresh, ClaimPurpose::Send, "worker-b", t(30), Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Claim(ClaimRefused::LeaseHeld { .. })), "{err:?}");
    assert_eq!(
        store.get(&key("FV/61")).await.unwrap().unwrap().record,
        held,
        "refused claims write nothing"
    );
    let taken = store
        .claim_as_read(&fresh, ClaimPurpose::Send, "worker-b", t(62), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(taken.version, held.version + 1);
    assert_eq!(taken.lease.as_ref().unwrap().owner, "worker-b");
}

pub async fn transition_records_the_result_and_refuses_a_stale_version<S: DocumentStore>(store: S) {
    created(&store, new_doc("FV/7", b"x"), t(0)).await;
    let claimed = store
        .claim(&key("FV/7"), ClaimPurpose::Send, "w", t(1), Duration::from_secs(60))
        .await
        .unwrap();
    let started = store
        .transition(&claimed, Change::SendStarted { session: session() }, t(2))
        .await
        .unwrap();
    assert!(started.lease.is_some(), "about-to-send keeps the lease");
    let retried = store
        .transition(
            &started,
            Change::RetryScheduled {
                failure: transient("HTTP 503"),
                retry_at: t(32),
                charged: true,
                maybe_received: true,
            },
            t(3),
        )
        .await
        .unwrap();
    assert_eq!((retried.attempts, retried.version, retried.lease.clone()), (1, 4, None));
    assert_eq!(
        retried.ksef.unconfirmed_send,
        Some(session()),
        "a 503 after the POST may hide a receipt"
    );
    // A writer still holding the older version loses.
    let err = store
        .transition(
            &started,
            Change::Failed {
                failure: transient("late"),
            },
            t(4),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::VersionConflict { expected: 3, .. }), "{err:?}");
    let doc = store.get(&key("FV/7")).await.unwrap().unwrap();
    assert_eq!(doc.record, retried);
    assert_eq!(doc.record.last_error, Some(transient("HTTP 503")));
    let events: Vec<&HistoryEvent> = doc.history.iter().map(|h| &h.event).collect();
    assert!(matches!(events[2], HistoryEvent::SendStarted { attempt: 1, .. }), "{events:?}");
    assert!(
        matches!(events[3], HistoryEvent::Error { failure } if failure.message == "HTTP 503"),
        "{events:?}"
    );
    assert!(!events
        .iter()
        .any(|e| matches!(e, HistoryEvent::Error { failure } if failure.message == "late")));
}

pub async fn a_transition_the_state_machine_forbids_writes_nothing<S: DocumentStore>(store: S) {
    let mut d = new_doc("FV/8", b"x");
    d.initial = InitialState::Rejected { findings: vec![] };
    let r = created(&store, d, t(0)).await;
    let err = store
        .transition(
            &r,
            Change::Processing {
                detail: "150".into(),
                next_poll_at: t(9),
            },
            t(1),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Transition(_)), "{err:?}");
    assert_eq!(store.get(&key("FV/8")).await.unwrap().unwrap().record, r);
}

pub async fn append_history_appends_and_needs_the_document<S: DocumentStore>(store: S) {
    created(&store, new_doc("FV/9", b"x"), t(0)).await;
    let note = HistoryEntry {
        at: t(1),
        event: HistoryEvent::Note {
            message: "the same file was uploaded again".into(),
        },
    };
    store.append_history(&key("FV/9"), vec![note.clone()]).await.unwrap();
    let doc = store.get(&key("FV/9")).await.unwrap().unwrap();
    assert_eq!(doc.history.last(), Some(&note));
    assert_eq!(doc.record.version, 1, "history does not change the record");
    let err = store.append_history(&key("missing"), vec![note]).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_eq!(store.get(&key("missing")).await.unwrap(), None);
}

pub async fn list_by_state_finds_the_old_ones_oldest_first<S: DocumentStore>(store: S) {
    for (i, n) in ["L/1", "L/2", "L/3", "L/4"].iter().enumerate() {
        created(&store, new_doc(n, n.as_bytes()), t(100 * (4 - i as i64))).await;
    }
    // L/4 (registered at t=100) moves on and leaves QUEUED.
    let r = store.get(&key("L/4")).await.unwrap().unwrap().record;
    store
        .transition(
            &r,
            Change::Failed {
                failure: transient("budget"),
            },
            t(500),
        )
        .await
        .unwrap();
    let old = store.list_by_state(DocumentState::Queued, t(350), 10).await.unwrap();
    let names: Vec<&str> = old.iter().map(|r| r.key.invoice_number.as_str()).collect();
    assert_eq!(names, vec!["L/3", "L/2"]);
    let one = store.list_by_state(DocumentState::Queued, t(1000), 1).await.unwrap();
    assert_eq!(one.iter().map(|r| r.key.invoice_number.as_str()).collect::<Vec<_>>(), vec!["L/3"]);
    let failed = store.list_by_state(DocumentState::Failed, t(501), 10).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].state_since, t(500));
    assert!(
        store.list_by_state(DocumentState::Failed, t(500), 10).await.unwrap().is_empty(),
        "strictly older than T"
    );
}

pub async fn windows_and_counts_by_state<S: DocumentStore>(store: S) {
    for i in 1..=5i64 {
        let n = format!("W/{i}");
        created(&store, new_doc(&n, n.as_bytes()), t(100 * i)).await;
    }
    let r = store.get(&key("W/5")).await.unwrap().unwrap().record;
    store
        .transition(
            &r,
            Change::Failed {
                failure: transient("budget"),
            },
            t(600),
        )
        .await
        .unwrap();
    let names = |v: Vec<relay_domain::DocumentRecord>| v.into_iter().map(|r| r.key.invoice_number.to_string()).collect::<Vec<_>>();
    // [200, 400): W/2 and W/3, newest first; the end is excluded, the start included.
    let window = store
        .list_by_state_between(DocumentState::Queued, t(200), t(400), 10)
        .await
        .unwrap();
    assert_eq!(names(window), vec!["W/3", "W/2"]);
    let one = store.list_by_state_between(DocumentState::Queued, t(0), t(1000), 1).await.unwrap();
    assert_eq!(names(one), vec!["W/4"]);
    assert!(store
        .list_by_state_between(DocumentState::Queued, t(400), t(400), 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.count_by_state(DocumentState::Queued).await.unwrap(), 4);
    assert_eq!(store.count_by_state(DocumentState::Failed).await.unwrap(), 1);
    assert_eq!(store.count_by_state(DocumentState::Accepted).await.unwrap(), 0);
}

pub async fn long_histories_are_kept_whole_and_in_order<S: DocumentStore>(store: S) {
    let findings: Vec<Failure> = (0..150)
        .map(|i| {
            Failure::new(ErrorClass::Permanent, ErrorSource::Validation, format!("finding {i}")).at(format!("/Faktura/Fa/FaWiersz[{i}]"))
        })
        .collect();
    let mut d = new_doc("FV/10", b"x");
    d.initial = InitialState::Rejected { findings };
    created(&store, d, t(0)).await;
    let doc = store.get(&key("FV/10")).await.unwrap().unwrap();
    assert_eq!(doc.history.len(), 152);
    let messages: Vec<String> = doc
        .history
        .iter()
        .filter_map(|h| match &h.event {
            HistoryEvent::Error { failure } => Some(failure.message.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(messages, (0..150).map(|i| format!("finding {i}")).collect::<Vec<_>>());
}
