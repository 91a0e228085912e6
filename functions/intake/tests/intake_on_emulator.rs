//! The intake function end to end on the AWS emulator: real S3 notifications to a real intake
//! queue, delivered to the handler as the Lambda SQS event source would, with real DynamoDB,
//! S3 and SQS behind it.

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use relay_aws::{provision, DynamoDocumentStore, S3Archive, SqsQueue};
use relay_domain::ports::{Archive, DocumentRegistry, Queue};
use relay_domain::{DocumentKey, DocumentState, InvoiceKind, InvoiceNumber, Nip};
use relay_fn_intake::{handle, IntakeDeps};
use relay_tests::emulator;

const SAMPLE_1: &[u8] = include_bytes!("../../../data/ksef/samples/FA_3_Przykład_1.xml");
const SAMPLE_21: &[u8] = include_bytes!("../../../data/ksef/samples/FA_3_Przykład_21.xml");

async fn drain(queue: &SqsQueue) -> Vec<relay_domain::ports::ReceivedMessage> {
    let mut all = Vec::new();
    for _ in 0..3 {
        let got = queue.receive(10, Duration::from_secs(60), Duration::from_secs(1)).await.unwrap();
        if got.is_empty() && !all.is_empty() {
            break;
        }
        all.extend(got);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_become_documents_repeats_do_nothing_and_bad_files_are_answered() {
    let c = emulator::clients().await;
    let name = relay_tests::unique_name("relay");
    provision::create_documents_table(&c.dynamodb, &name).await.unwrap();
    provision::create_bucket(&c.s3, &name, emulator::REGION).await.unwrap();
    let intake_q = provision::create_queue_with_dlq(&c.sqs, &format!("{name}-intake"), 5, Duration::from_secs(60))
        .await
        .unwrap();
    let send_q = provision::create_queue_with_dlq(&c.sqs, &format!("{name}-send"), 5, Duration::from_secs(60))
        .await
        .unwrap();
    let corr_q = provision::create_queue_with_dlq(&c.sqs, &format!("{name}-corrections"), 5, Duration::from_secs(60))
        .await
        .unwrap();
    provision::notify_queue_on_create(&c.s3, &c.sqs, &name, &intake_q.url, "inbox/")
        .await
        .unwrap();

    let put = |key: &'static str, bytes: &'static [u8], trace: Option<&'static str>| {
        let mut req = c.s3.put_object().bucket(&name).key(key).body(ByteStream::from_static(bytes));
        if let Some(t) = trace {
            req = req.metadata("trace-id", t);
        }
        req.send()
    };
    put("inbox/9999999999/FV-1.xml", SAMPLE_1, Some("erp-trace-0001")).await.unwrap();
    put("inbox/9999999999/FV-1 copy.xml", SAMPLE_1, None).await.unwrap();
    put("inbox/9999999999/FV-21.xml", SAMPLE_21, None).await.unwrap();
    put(
        "inbox/9999999999/junk.xml",
        b"<?xml version=\"1.0\"?><!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>",
        None,
    )
    .await
    .unwrap();
    // Misplaced: a subfolder (answered in the seller's outbox) and a folder that is no NIP
    // (a corrections notice only).
    put("inbox/9999999999/2026/sub.xml", SAMPLE_1, None).await.unwrap();
    put("inbox/1234567890/nip.xml", SAMPLE_1, None).await.unwrap();

    let deps = IntakeDeps {
        store: DynamoDocumentStore::new(c.dynamodb.clone(), &name),
        bucket: S3Archive::new(c.s3.clone(), &name),
        send_queue: SqsQueue::new(c.sqs.clone(), &send_q.url),
        // No batch queue: the attachment rule (the backlog rule runs in tests/batch_on_emulator.rs).
        batch: None,
        corrections_queue: SqsQueue::new(c.sqs.clone(), &corr_q.url),
    };
    let intake_queue = SqsQueue::new(c.sqs.clone(), &intake_q.url);
    let messages = drain(&intake_queue).await;
    assert!(messages.len() >= 7, "6 uploads and the s3:TestEvent, got {}", messages.len());
    // Deliver the first upload alone first, so "first" and "repeat" are well defined.
    let (first, rest): (Vec<_>, Vec<_>) = messages.into_iter().partition(|m| m.body.contains("FV-1.xml"));
    for batch in [first, rest] {
        let response = handle(relay_tests::lambda_events::sqs_event(&batch), &deps).await;
        assert!(response.batch_item_failures.is_empty(), "{:?}", response.batch_item_failures);
    }

    let key = DocumentKey::new(
        Nip::parse("9999999999").unwrap(),
        InvoiceKind::Vat,
        InvoiceNumber::parse("FV2026/02/150").unwrap(),
    );
    let doc = deps.store.get(&key).await.unwrap().expect("registered");
    assert_eq!(doc.record.state, DocumentState::Queued);
    assert_eq!(
        doc.record.trace_id.as_str(),
        "erp-trace-0001",
        "the ERP's trace id from the object metadata"
    );
    assert_eq!(doc.record.erp_document_id.as_str(), "FV-1");
    let archived = deps
        .bucket
        .get(doc.record.storage.archive.as_deref().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(archived.bytes, SAMPLE_1, "the exact bytes are archived");
    let history: Vec<String> = doc.history.iter().map(|h| serde_json::to_string(h).unwrap()).collect();
    assert!(
        history.iter().any(|h| h.contains("arrived again") && h.contains("FV-1 copy")),
        "{history:?}"
    );
    assert!(
        history.iter().any(|h| h.contains("IDENTITY_CONFLICT") && h.contains("FV-21")),
        "{history:?}"
    );

    let sends = drain(&deps.send_queue).await;
    assert_eq!(sends.len(), 1, "one document to send: the repeat and the conflict are not sent");
    assert_eq!(sends[0].trace_id().map(|t| t.to_string()).as_deref(), Some("erp-trace-0001"));
    let corrections: Vec<String> = drain(&deps.corrections_queue).await.into_iter().map(|m| m.body).collect();
    assert_eq!(corrections.len(), 4, "{corrections:?}");
    assert!(corrections
        .iter()
        .any(|b| b.contains("INBOX_KEY") && b.contains("inbox/1234567890/nip.xml")));
    assert!(corrections.iter().any(|b| b.contains("\"outcome\":\"CONFLICT\"")));
    assert!(corrections
        .iter()
        .any(|b| b.contains("\"outcome\":\"NOT_REGISTERED\"") && b.contains("DOCTYPE")));

    let outbox = |erp: &str| {
        let bucket = &deps.bucket;
        let key = format!("outbox/9999999999/{erp}.json");
        async move { serde_json::from_slice::<serde_json::Value>(&bucket.get(&key).await.unwrap().expect("outbox result").bytes).unwrap() }
    };
    assert_eq!(outbox("FV-1").await["state"], "QUEUED");
    assert_eq!(outbox("FV-21").await["state"], "CONFLICT");
    assert_eq!(outbox("junk").await["state"], "NOT_REGISTERED");
    assert_eq!(outbox("FV-1").await["traceId"], "erp-trace-0001");
    let sub = outbox("2026/sub").await;
    assert_eq!(
        (sub["state"].as_str(), sub["errors"][0]["code"].as_str()),
        (Some("NOT_REGISTERED"), Some("INBOX_KEY"))
    );
}

/// The ERP marks an upload issued offline with S3 object metadata (`x-amz-meta-ksef-offline-mode`),
/// read over the real wire: the record keeps the mode and its deadline in DynamoDB, the outbox
/// says both; an unreadable marking is answered in the uploader's outbox and nothing is registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_erps_offline_marking_in_the_object_metadata_is_kept_on_the_record() {
    let c = emulator::clients().await;
    let name = relay_tests::unique_name("relay");
    provision::create_documents_table(&c.dynamodb, &name).await.unwrap();
    provision::create_bucket(&c.s3, &name, emulator::REGION).await.unwrap();
    let intake_q = provision::create_queue_with_dlq(&c.sqs, &format!("{name}-intake"), 5, Duration::from_secs(60))
        .await
        .unwrap();
    let send_q = provision::create_queue_with_dlq(&c.sqs, &format!("{name}-send"), 5, Duration::from_secs(60))
        .await
        .unwrap();
    let corr_q = provision::create_queue_with_dlq(&c.sqs, &format!("{name}-corrections"), 5, Duration::from_secs(60))
        .await
        .unwrap();
    provision::notify_queue_on_create(&c.s3, &c.sqs, &name, &intake_q.url, "inbox/")
        .await
        .unwrap();
    let numbered = |n: &str| {
        String::from_utf8(SAMPLE_1.to_vec())
            .unwrap()
            .replace("<P_2>FV2026/02/150</P_2>", &format!("<P_2>{n}</P_2>"))
            .into_bytes()
    };
    for (key, number, marking) in [
        ("inbox/9999999999/OFF-1.xml", "OFF/1", "failure"),
        ("inbox/9999999999/OFF-2.xml", "OFF/2", "offline 24"),
    ] {
        c.s3.put_object()
            .bucket(&name)
            .key(key)
            .metadata("ksef-offline-mode", marking)
            .body(ByteStream::from(numbered(number)))
            .send()
            .await
            .unwrap();
    }
    let deps = IntakeDeps {
        store: DynamoDocumentStore::new(c.dynamodb.clone(), &name),
        bucket: S3Archive::new(c.s3.clone(), &name),
        send_queue: SqsQueue::new(c.sqs.clone(), &send_q.url),
        batch: None,
        corrections_queue: SqsQueue::new(c.sqs.clone(), &corr_q.url),
    };
    let messages = drain(&SqsQueue::new(c.sqs.clone(), &intake_q.url)).await;
    let response = handle(relay_tests::lambda_events::sqs_event(&messages), &deps).await;
    assert!(response.batch_item_failures.is_empty(), "{:?}", response.batch_item_failures);

    let key = |n: &str| {
        DocumentKey::new(
            Nip::parse("9999999999").unwrap(),
            InvoiceKind::Vat,
            InvoiceNumber::parse(n).unwrap(),
        )
    };
    let doc = deps.store.get(&key("OFF/1")).await.unwrap().expect("registered");
    assert_eq!(doc.record.state, DocumentState::Queued);
    assert_eq!(
        (doc.record.offline_mode, doc.record.offline),
        (Some(relay_domain::OfflineMode::Failure), true)
    );
    // No failure is declared here: the strict limit, the end of Monday 16.02.2026 (P_1 is Sunday 15th).
    assert_eq!(
        doc.record
            .legal_deadline
            .as_ref()
            .and_then(|d| d.at())
            .map(|t| t.to_rfc3339())
            .as_deref(),
        Some("2026-02-16T23:00:00+00:00")
    );
    assert!(
        deps.store.get(&key("OFF/2")).await.unwrap().is_none(),
        "a bad marking registers nothing"
    );

    let outbox = |erp: &str| {
        let bucket = &deps.bucket;
        let key = format!("outbox/9999999999/{erp}.json");
        async move { serde_json::from_slice::<serde_json::Value>(&bucket.get(&key).await.unwrap().expect("outbox result").bytes).unwrap() }
    };
    let marked = outbox("OFF-1").await;
    assert_eq!(
        (marked["state"].as_str(), marked["offlineMode"].as_str()),
        (Some("QUEUED"), Some("failure"))
    );
    let bad = outbox("OFF-2").await;
    assert_eq!(
        (bad["state"].as_str(), bad["errors"][0]["code"].as_str()),
        (Some("NOT_REGISTERED"), Some("OFFLINE_MODE_MARKING"))
    );
    assert!(bad["errors"][0]["message"].as_str().unwrap().contains("\"offline 24\""), "{bad:#}");
}

#[tokio::test]
async fn a_message_that_is_not_a_notification_is_failed_for_the_dlq() {
    let c = emulator::clients().await;
    let name = relay_tests::unique_name("relay");
    let deps = IntakeDeps {
        store: DynamoDocumentStore::new(c.dynamodb.clone(), &name),
        bucket: S3Archive::new(c.s3.clone(), &name),
        send_queue: SqsQueue::new(c.sqs.clone(), "http://unused"),
        batch: None,
        corrections_queue: SqsQueue::new(c.sqs.clone(), "http://unused"),
    };
    let junk = relay_domain::ports::ReceivedMessage {
        message_id: "m-1".into(),
        receipt: "r".into(),
        body: "hello".into(),
        attributes: Default::default(),
        receive_count: 1,
        sent_at: chrono::Utc::now(),
    };
    let response = handle(relay_tests::lambda_events::sqs_event(&[junk]), &deps).await;
    assert_eq!(response.batch_item_failures.len(), 1);
    assert_eq!(response.batch_item_failures[0].item_identifier, "m-1");
}

/// A technical correction over the real wire: the ERP uploads the fixed file with the object
/// metadata `x-amz-meta-ksef-corrects` naming the rejected offline upload; the intake reads it,
/// links the two in DynamoDB and in both outbox results, and queues the correction. A marking
/// that names no registered invoice of the correction's identity registers nothing and is
/// answered in the uploader's outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_technical_correction_named_in_the_object_metadata_is_linked_to_the_rejected_upload() {
    use relay_domain::{Change, ErrorClass, ErrorSource, Failure};
    let c = emulator::clients().await;
    let name = relay_tests::unique_name("relay");
    provision::create_documents_table(&c.dynamodb, &name).await.unwrap();
    provision::create_bucket(&c.s3, &name, emulator::REGION).await.unwrap();
    let intake_q = provision::create_queue_with_dlq(&c.sqs, &format!("{name}-intake"), 5, Duration::from_secs(60))
        .await
        .unwrap();
    let send_q = provision::create_queue_with_dlq(&c.sqs, &format!("{name}-send"), 5, Duration::from_secs(60))
        .await
        .unwrap();
    let corr_q = provision::create_queue_with_dlq(&c.sqs, &format!("{name}-corrections"), 5, Duration::from_secs(60))
        .await
        .unwrap();
    provision::notify_queue_on_create(&c.s3, &c.sqs, &name, &intake_q.url, "inbox/")
        .await
        .unwrap();
    let deps = IntakeDeps {
        store: DynamoDocumentStore::new(c.dynamodb.clone(), &name),
        bucket: S3Archive::new(c.s3.clone(), &name),
        send_queue: SqsQueue::new(c.sqs.clone(), &send_q.url),
        batch: None,
        corrections_queue: SqsQueue::new(c.sqs.clone(), &corr_q.url),
    };
    let intake_queue = SqsQueue::new(c.sqs.clone(), &intake_q.url);
    let send_queue = SqsQueue::new(c.sqs.clone(), &send_q.url);
    let put = |key: &'static str, body: Vec<u8>, meta: (&'static str, &'static str)| {
        let (s3, bucket) = (c.s3.clone(), name.clone());
        async move {
            s3.put_object()
                .bucket(&bucket)
                .key(key)
                .metadata(meta.0, meta.1)
                .body(ByteStream::from(body))
                .send()
                .await
                .unwrap();
        }
    };
    let numbered = |n: &str| {
        String::from_utf8(SAMPLE_1.to_vec())
            .unwrap()
            .replace("<P_2>FV2026/02/150</P_2>", &format!("<P_2>{n}</P_2>"))
            .into_bytes()
    };
    let original = numbered("TC/1");
    put("inbox/9999999999/TC-1.xml", original.clone(), ("ksef-offline-mode", "offline24")).await;
    let response = handle(relay_tests::lambda_events::sqs_event(&drain(&intake_queue).await), &deps).await;
    assert!(response.batch_item_failures.is_empty(), "{:?}", response.batch_item_failures);
    assert_eq!(drain(&send_queue).await.len(), 1);
    // KSeF rejects it technically (the simulator's part is tested in the pipeline's tests).
    let key = DocumentKey::new(
        Nip::parse("9999999999").unwrap(),
        InvoiceKind::Vat,
        InvoiceNumber::parse("TC/1").unwrap(),
    );
    let r = deps.store.get(&key).await.unwrap().unwrap().record;
    let ksef_450 = Failure::new(
        ErrorClass::Permanent,
        ErrorSource::Ksef {
            operation: "invoice_status".into(),
        },
        "Błąd weryfikacji semantyki dokumentu faktury",
    )
    .with_code("450");
    relay_domain::ports::DocumentUpdates::transition(&deps.store, &r, Change::Rejected { failures: vec![ksef_450] }, chrono::Utc::now())
        .await
        .unwrap();

    let mut fixed = original.clone();
    fixed.extend_from_slice(b"\n");
    put("inbox/9999999999/TC-1-fix.xml", fixed.clone(), ("ksef-corrects", "TC-1")).await;
    put("inbox/9999999999/TC-9-fix.xml", numbered("TC/9"), ("ksef-corrects", "TC-9")).await;
    let response = handle(relay_tests::lambda_events::sqs_event(&drain(&intake_queue).await), &deps).await;
    assert!(response.batch_item_failures.is_empty(), "{:?}", response.batch_item_failures);

    let r = deps.store.get(&key).await.unwrap().unwrap().record;
    assert_eq!(r.state, DocumentState::Queued);
    assert_eq!(r.content_hash, relay_domain::ContentHash::of(&fixed));
    let corrects = r.corrects.as_ref().expect("the correction names what it corrects");
    assert_eq!(
        (corrects.erp_document_id.as_str(), corrects.content_hash),
        ("TC-1", relay_domain::ContentHash::of(&original))
    );
    assert_eq!(
        drain(&send_queue).await.len(),
        1,
        "the correction is queued; the bad marking is not"
    );

    let outbox = |erp: &str| {
        let bucket = &deps.bucket;
        let key = format!("outbox/9999999999/{erp}.json");
        async move { serde_json::from_slice::<serde_json::Value>(&bucket.get(&key).await.unwrap().expect("outbox result").bytes).unwrap() }
    };
    let fix = outbox("TC-1-fix").await;
    assert_eq!((fix["state"].as_str(), fix["corrects"].as_str()), (Some("QUEUED"), Some("TC-1")));
    let old = outbox("TC-1").await;
    assert_eq!(
        (old["state"].as_str(), old["correctedBy"].as_str()),
        (Some("REJECTED"), Some("TC-1-fix"))
    );
    let unknown = outbox("TC-9-fix").await;
    assert_eq!(
        (unknown["state"].as_str(), unknown["errors"][0]["code"].as_str()),
        (Some("NOT_REGISTERED"), Some("TECHNICAL_CORRECTION_TARGET"))
    );
    let key9 = DocumentKey::new(
        Nip::parse("9999999999").unwrap(),
        InvoiceKind::Vat,
        InvoiceNumber::parse("TC/9").unwrap(),
    );
    assert!(
        deps.store.get(&key9).await.unwrap().is_none(),
        "nothing registered for a bad target"
    );
}
