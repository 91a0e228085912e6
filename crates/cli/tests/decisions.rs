//! `ksef-relay resolve` and `ksef-relay send-again` on the AWS emulator: the binary, over the
//! wire, against a DynamoDB table, an S3 bucket and SQS queues holding CONFLICT documents as the
//! status function leaves them (KSeF's 440 naming the original and its session).

mod support;

use std::time::Duration;

use chrono::Utc;
use relay_aws::{provision, DynamoDocumentStore, S3Archive, SqsQueue};
use relay_domain::ports::{Archive, DocumentRegistry, DocumentUpdates, Queue};
use relay_domain::{
    Change, ContentHash, DocumentKey, DocumentState, ErpDocumentId, ErrorClass, ErrorSource, Failure, InitialState, InvoiceKind,
    InvoiceNumber, KsefNumber, KsefReference, NewDocument, Nip, StorageKeys, TraceId,
};
use support::*;

const ORIGINAL: &str = "5265877635-20250626-010080DD2B5E-26";
const ORIGINAL_SESSION: &str = "20250625-SB-2C3E6C8000-B675CF5D68-87";

/// A document in CONFLICT: sent, then KSeF answered 440 naming another file's number.
async fn conflict(store: &DynamoDocumentStore, number: &str) -> DocumentKey {
    let key = DocumentKey::new(
        Nip::parse("9999999999").unwrap(),
        InvoiceKind::Vat,
        InvoiceNumber::parse(number).unwrap(),
    );
    let erp = number.replace('/', "-");
    let new = NewDocument {
        key: key.clone(),
        content_hash: ContentHash::of(number.as_bytes()),
        content_size: 1,
        trace_id: TraceId::generate(),
        erp_document_id: ErpDocumentId::parse(&erp).unwrap(),
        storage: StorageKeys {
            source: format!("inbox/9999999999/{erp}.xml"),
            ..Default::default()
        },
        offline_mode: None,
        issue_date: None,
        send_mode: relay_domain::SendMode::Online,
        send_mode_reason: None,
        initial: InitialState::Queued,
    };
    let now = Utc::now();
    let r = match store.register(new, now).await.unwrap() {
        relay_domain::ports::Registration::Created(r) => r,
        other => panic!("{other:?}"),
    };
    let r = store
        .transition(
            &r,
            Change::Sent {
                session: KsefReference::parse("20250625-SO-2C3E6C8000-B675CF5D68-07").unwrap(),
                invoice_reference: KsefReference::parse("20250625-EE-319D7EE000-B67F415CDC-2C").unwrap(),
            },
            now,
        )
        .await
        .unwrap();
    let duplicate = Failure::new(
        ErrorClass::Duplicate {
            original: KsefNumber::parse(ORIGINAL).unwrap(),
        },
        ErrorSource::Ksef {
            operation: "invoice_status".into(),
        },
        "Duplikat faktury (the original's receipt does not carry this document's hash: another invoice holds this number)",
    )
    .with_code("440")
    .with_details(vec![format!("originalSessionReferenceNumber: {ORIGINAL_SESSION}")]);
    store.transition(&r, Change::Conflict { failure: duplicate }, now).await.unwrap();
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_resolves_conflicts_with_the_cli_on_the_aws_emulator() {
    let endpoint = relay_tests::emulator::endpoint();
    let c = relay_tests::emulator::clients().await;
    let name = relay_tests::unique_name("decide");
    provision::create_documents_table(&c.dynamodb, &name).await.unwrap();
    provision::create_bucket(&c.s3, &name, relay_tests::emulator::REGION).await.unwrap();
    let send = provision::create_queue_with_dlq(&c.sqs, &format!("{name}-send"), 5, Duration::from_secs(60))
        .await
        .unwrap();
    let status = provision::create_queue_with_dlq(&c.sqs, &format!("{name}-status"), 5, Duration::from_secs(60))
        .await
        .unwrap();
    let store = DynamoDocumentStore::new(c.dynamodb.clone(), &name);
    let archive = S3Archive::new(c.s3.clone(), &name);
    let status_q = SqsQueue::new(c.sqs.clone(), &status.url);
    let ours = conflict(&store, "CLI/1").await;
    let withdrawn = conflict(&store, "CLI/2").await;

    let stack = [
        ("AWS_REGION", relay_tests::emulator::REGION),
        ("DOCUMENTS_TABLE", name.as_str()),
        ("ARCHIVE_BUCKET", name.as_str()),
        ("SEND_QUEUE_URL", send.url.as_str()),
        ("STATUS_QUEUE_URL", status.url.as_str()),
        ("KSEF_RELAY_AWS_ENDPOINT", endpoint),
    ];
    let who = ["--by", "jan.kowalski", "--reason", "ticket 42"];
    let resolve = |id: &str, extra: &[&str]| {
        let mut args = vec!["resolve", id];
        args.extend_from_slice(&who);
        args.extend_from_slice(extra);
        ksef_relay(&args, &stack)
    };

    // The CLI holds no KSeF token: without the date KSeF shows, it refuses and changes nothing.
    let refused = resolve("CLI/1", &["--decision", "ours"]);
    assert_ne!(refused.code, Some(0), "{}", refused.text());
    assert!(refused.stderr.contains("acquisition"), "{}", refused.text());
    assert_eq!(store.get(&ours).await.unwrap().unwrap().record.state, DocumentState::Conflict);
    let dry = resolve(
        "CLI/1",
        &["--decision", "ours", "--acquisition-date", "2026-02-14T10:00:00Z", "--dry-run"],
    );
    assert_eq!(dry.code, Some(0), "{}", dry.text());
    assert_eq!(store.get(&ours).await.unwrap().unwrap().record.state, DocumentState::Conflict);

    let done = resolve("CLI/1", &["--decision", "ours", "--acquisition-date", "2026-02-14T10:00:00Z"]);
    assert_eq!(done.code, Some(0), "{}", done.text());
    let doc = store.get(&ours).await.unwrap().unwrap();
    let r = &doc.record;
    assert_eq!(r.state, DocumentState::Accepted, "{:#?}", doc.history);
    assert_eq!(r.ksef.ksef_number.as_ref().map(|n| n.as_str()), Some(ORIGINAL));
    assert_eq!(r.ksef.acquisition_date, Some("2026-02-14T10:00:00Z".parse().unwrap()));
    assert_eq!(r.ksef.original_session.as_ref().map(|s| s.as_str()), Some(ORIGINAL_SESSION));
    assert!(r.storage.upo.is_none(), "the status function fetches the UPO");
    let outbox: serde_json::Value =
        serde_json::from_slice(&archive.get("outbox/9999999999/CLI-1.json").await.unwrap().unwrap().bytes).unwrap();
    assert_eq!(
        (outbox["state"].as_str(), outbox["ksefNumber"].as_str()),
        (Some("ACCEPTED"), Some(ORIGINAL))
    );
    // The status function's message for the UPO (not delayed: due now).
    let m = status_q.receive(10, Duration::from_secs(30), Duration::from_secs(5)).await.unwrap();
    assert_eq!(m.len(), 1, "one status message");
    let req = relay_pipeline::messages::StatusRequest::from_json(&m[0].body).unwrap();
    assert_eq!((req.document.clone(), req.step), (ours.clone(), r.step));
    // Again: no harm, nothing written to the record.
    let again = resolve("CLI/1", &["--decision", "ours", "--acquisition-date", "2026-02-14T10:00:00Z"]);
    assert_eq!(again.code, Some(0), "{}", again.text());
    assert!(again.stdout.contains("AlreadyDone"), "{}", again.text());
    assert_eq!(store.get(&ours).await.unwrap().unwrap().record.version, r.version);

    let done = resolve("CLI/2", &["--decision", "withdraw"]);
    assert_eq!(done.code, Some(0), "{}", done.text());
    let r = store.get(&withdrawn).await.unwrap().unwrap().record;
    assert_eq!(r.state, DocumentState::Rejected);
    let outbox: serde_json::Value =
        serde_json::from_slice(&archive.get("outbox/9999999999/CLI-2.json").await.unwrap().unwrap().bytes).unwrap();
    assert_eq!(outbox["state"].as_str(), Some("REJECTED"));
    assert!(
        outbox["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("withdrawn by jan.kowalski: ticket 42"),
        "{outbox}"
    );
    // A withdrawn document is not sent again.
    let mut args = vec!["send-again", "CLI/2"];
    args.extend_from_slice(&who);
    let refused = ksef_relay(&args, &stack);
    assert_ne!(refused.code, Some(0), "{}", refused.text());
    assert!(refused.stderr.contains("withdrawn"), "{}", refused.text());
    assert_eq!(SqsQueue::new(c.sqs.clone(), &send.url).stats().await.unwrap().total(), 0);
}
