//! The sweeper function on the AWS emulator: a document registered by the real intake whose send
//! message was lost (intake's send queue here is an in-memory one nobody reads) is re-driven to
//! the real send queue, with a history line saying why; while that message waits, the send
//! stage has a backlog and the next sweep holds back. A document numbered by KSeF whose UPO is
//! still to be fetched is re-driven to the status queue.

use std::time::Duration;

use chrono::Utc;
use relay_aws::{provision, DynamoDocumentStore, S3Archive, SqsQueue};
use relay_domain::memory::MemoryQueue;
use relay_domain::ports::{DocumentRegistry, DocumentUpdates, Queue};
use relay_domain::{Change, DocumentKey, DocumentState, ErpDocumentId, KsefNumber, KsefReference};
use relay_fn_sweeper::{handle, SweeperDeps};
use relay_pipeline::intake::{intake, IntakeOutcome, IntakePorts, Upload};
use relay_pipeline::messages::{SendRequest, StatusRequest};
use relay_pipeline::sweeper::SweepConfig;
use relay_tests::emulator;

const SAMPLE_1: &[u8] = include_bytes!("../../../data/ksef/samples/FA_3_Przykład_1.xml");

struct Setup {
    deps: SweeperDeps,
    send_q: SqsQueue,
    status_q: SqsQueue,
}

async fn setup(name: &str) -> Setup {
    let c = emulator::clients().await;
    provision::create_documents_table(&c.dynamodb, name).await.unwrap();
    provision::create_bucket(&c.s3, name, emulator::REGION).await.unwrap();
    let queue = |suffix: &str| {
        let sqs = c.sqs.clone();
        let name = format!("{name}-{suffix}");
        async move {
            provision::create_queue_with_dlq(&sqs, &name, 5, Duration::from_secs(60))
                .await
                .unwrap()
                .url
        }
    };
    let (send, status, corrections) = (queue("send").await, queue("status").await, queue("corrections").await);
    Setup {
        deps: SweeperDeps {
            store: DynamoDocumentStore::new(c.dynamodb.clone(), name),
            archive: S3Archive::new(c.s3.clone(), name),
            send_queue: SqsQueue::new(c.sqs.clone(), &send),
            batch_queue: None,
            status_queue: SqsQueue::new(c.sqs.clone(), &status),
            corrections_queue: SqsQueue::new(c.sqs.clone(), &corrections),
            cfg: SweepConfig::standard(),
        },
        send_q: SqsQueue::new(c.sqs.clone(), &send),
        status_q: SqsQueue::new(c.sqs.clone(), &status),
    }
}

/// The sample through the real intake, its send message dropped: QUEUED with nothing to move it.
async fn registered_with_its_message_lost(s: &Setup, erp: &str) -> DocumentKey {
    let (lost, corrections) = (MemoryQueue::new("lost"), MemoryQueue::new("corrections"));
    let ports = IntakePorts {
        store: &s.deps.store,
        archive: &s.deps.archive,
        send_queue: &lost,
        corrections_queue: &corrections,
        backlog: None,
    };
    let upload = Upload {
        bytes: SAMPLE_1,
        source_key: format!("inbox/9999999999/{erp}.xml"),
        erp_document_id: ErpDocumentId::parse(erp).unwrap(),
        expected_seller: None,
        trace_id: None,
        offline_mode: None,
        corrects: None,
    };
    let outcome = intake(&ports, upload, Utc::now()).await.unwrap();
    let IntakeOutcome::Queued(r) = outcome else {
        panic!("not queued: {outcome:?}")
    };
    r.key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_send_message_is_redriven_once_and_a_backlog_holds_the_next_sweep_back() {
    let s = setup(&relay_tests::unique_name("sweeper")).await;
    let key = registered_with_its_message_lost(&s, "FV-150").await;

    // Not overdue yet: the grace (60 s) has not passed.
    let report = handle(serde_json::json!({"trigger": "test"}), &s.deps, Utc::now()).await.unwrap();
    assert!(report.redriven.is_empty(), "{report:?}");

    let later = Utc::now() + chrono::Duration::minutes(2);
    let report = handle(serde_json::json!({}), &s.deps, later).await.unwrap();
    let redriven: Vec<_> = report.redriven.iter().map(|r| (r.document.clone(), r.state, r.stage)).collect();
    assert_eq!(redriven, [(key.to_string(), DocumentState::Queued, "send")], "{report:?}");
    assert!(report.held_back.is_empty() && report.outbox_rewritten.is_empty(), "{report:?}");

    let doc = s.deps.store.get(&key).await.unwrap().unwrap();
    let history = serde_json::to_string(&doc.history).unwrap();
    assert!(history.contains("re-driven: the sweeper found it"), "{history}");
    let messages = s.send_q.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap();
    assert_eq!(messages.len(), 1, "one follow-up on the real send queue");
    let req = SendRequest::from_json(&messages[0].body).unwrap();
    assert_eq!(
        (req.document, req.step),
        (key.clone(), doc.record.step),
        "for the step just written"
    );
    s.send_q.change_visibility(&messages[0].receipt, Duration::ZERO).await.unwrap();

    // The follow-up waits in the send queue: that stage has a backlog, so the sweep holds back.
    let report = handle(serde_json::json!({}), &s.deps, later + chrono::Duration::minutes(2))
        .await
        .unwrap();
    assert!(report.redriven.is_empty(), "{report:?}");
    assert_eq!(report.held_back, ["send"]);

    // Not a JSON object: refused, naming what is expected.
    let err = handle(serde_json::json!("sweep"), &s.deps, later).await.unwrap_err();
    assert!(err.contains("trigger"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_document_without_its_upo_is_redriven_to_the_status_queue() {
    let s = setup(&relay_tests::unique_name("sweeper-upo")).await;
    let key = registered_with_its_message_lost(&s, "FV-150").await;
    let now = Utc::now();
    let r = s.deps.store.get(&key).await.unwrap().unwrap().record;
    let session = KsefReference::parse("20250625-SO-2C3E6C8000-B675CF5D68-07").unwrap();
    let invoice = KsefReference::parse("20250625-SB-2C3E6C8000-B675CF5D68-87").unwrap();
    let r = s
        .deps
        .store
        .transition(
            &r,
            Change::Sent {
                session,
                invoice_reference: invoice,
            },
            now,
        )
        .await
        .unwrap();
    let r = s
        .deps
        .store
        .transition(
            &r,
            Change::Accepted {
                ksef_number: KsefNumber::parse("5265877635-20250626-010080DD2B5E-26").unwrap(),
                acquisition_date: now,
                upo_key: None,
                qr_code: None,
                invoicing_mode: None,
                upo_mode: None,
                reason: "numbered; the UPO could not be fetched yet".into(),
            },
            now,
        )
        .await
        .unwrap();
    assert_eq!((r.state, r.storage.upo.as_deref()), (DocumentState::Accepted, None));

    let report = handle(serde_json::json!({}), &s.deps, now + chrono::Duration::minutes(2))
        .await
        .unwrap();
    let redriven: Vec<_> = report.redriven.iter().map(|r| (r.document.clone(), r.state, r.stage)).collect();
    assert_eq!(redriven, [(key.to_string(), DocumentState::Accepted, "status")], "{report:?}");
    let messages = s.status_q.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(StatusRequest::from_json(&messages[0].body).unwrap().document, key);
}
