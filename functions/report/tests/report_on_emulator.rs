//! The report function on the AWS emulator: documents registered by the real intake in
//! DynamoDB, the snapshot job writing the status page to S3, the weekly job writing HTML and CSV
//! and publishing its summary to a real SNS topic (read back from an SQS queue subscribed to it).

use std::time::Duration;

use relay_aws::{provision, DynamoDocumentStore, DynamoSharedCache, S3Archive, SnsTopic, SqsQueue};
use relay_domain::memory::MemoryQueue;
use relay_domain::ports::{Archive, Queue};
use relay_domain::{ErpDocumentId, Nip};
use relay_fn_report::{handle, ReportDeps};
use relay_pipeline::intake::{intake, IntakePorts, Upload};
use relay_tests::emulator;

const SAMPLE_1: &[u8] = include_bytes!("../../../data/ksef/samples/FA_3_Przykład_1.xml");
const EC_CERT: &str = include_str!("../../../crates/ksef-client/tests/fixtures/openssl-ec-cert.pem");
const EC_KEY: &str = include_str!("../../../crates/ksef-client/tests/fixtures/openssl-ec-key.pem");
const SAMPLE_2: &[u8] = include_bytes!("../../../data/ksef/samples/FA_3_Przykład_2.xml");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_and_weekly_write_to_s3_and_publish_to_sns() {
    let c = emulator::clients().await;
    let name = relay_tests::unique_name("report");
    provision::create_documents_table(&c.dynamodb, &name).await.unwrap();
    provision::create_bucket(&c.s3, &name, emulator::REGION).await.unwrap();
    let topic_arn = provision::create_topic(&c.sns, &name).await.unwrap();
    let inbox = provision::create_queue_with_dlq(&c.sqs, &format!("{name}-mail"), 5, Duration::from_secs(60))
        .await
        .unwrap();
    let queue_arn = c
        .sqs
        .get_queue_attributes()
        .queue_url(&inbox.url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    c.sns
        .subscribe()
        .topic_arn(&topic_arn)
        .protocol("sqs")
        .endpoint(&queue_arn)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await
        .unwrap();

    // Two documents through the real intake: one valid (QUEUED), one invalid (REJECTED).
    let store = DynamoDocumentStore::new(c.dynamodb.clone(), &name);
    let archive = S3Archive::new(c.s3.clone(), &name);
    let (send_q, corr_q) = (MemoryQueue::new("send"), MemoryQueue::new("corrections"));
    let ports = IntakePorts {
        store: &store,
        archive: &archive,
        send_queue: &send_q,
        corrections_queue: &corr_q,
        backlog: None,
    };
    let invalid = String::from_utf8_lossy(SAMPLE_2).replacen("<P_15>", "<P_15>x", 1);
    for (erp, bytes) in [("ERP-OK", SAMPLE_1.to_vec()), ("ERP-BAD", invalid.into_bytes())] {
        let upload = Upload {
            bytes: &bytes,
            source_key: format!("inbox/9999999999/{erp}.xml"),
            erp_document_id: ErpDocumentId::parse(erp).unwrap(),
            expected_seller: None,
            trace_id: None,
            offline_mode: None,
            corrects: None,
        };
        intake(&ports, upload, chrono::Utc::now()).await.unwrap();
    }

    // Seller 9999999999's certificate secret read as send or status reads it (on first use),
    // which records its facts in the table; seller 5265877635 has never been read.
    let certificate = serde_json::json!({"certificate_pem": EC_CERT, "private_key_pem": EC_KEY}).to_string();
    let (read, quiet) = (Nip::parse("9999999999").unwrap(), Nip::parse("5265877635").unwrap());
    let contexts = relay_pipeline::sessions::KsefContexts::new()
        .with_credentials(
            std::sync::Arc::new(relay_pipeline::credentials::MemoryCredentials::new().with(read.clone(), certificate.clone())),
            ksef_client::ClientConfig::new(ksef_client::Environment::Custom("http://127.0.0.1:9/v2".into())),
            Duration::from_secs(900),
        )
        .with_shared_cache(std::sync::Arc::new(DynamoSharedCache::new(c.dynamodb.clone(), &name)));
    contexts.client(&read).await.unwrap();
    let facts = ksef_client::StoredCredentials::parse(&certificate).unwrap().facts();
    let (not_after, subject) = (facts.not_after, facts.subject.unwrap());

    let deps = ReportDeps {
        store: DynamoDocumentStore::new(c.dynamodb.clone(), &name),
        reports: S3Archive::new(c.s3.clone(), &name),
        topic: SnsTopic::new(c.sns.clone(), &topic_arn),
        bucket: name.clone(),
        region: emulator::REGION.into(),
        table: name.clone(),
        overdue_after: chrono::Duration::hours(4),
        sellers: vec![read.clone(), quiet.clone()],
        credential_facts: DynamoSharedCache::new(c.dynamodb.clone(), &name),
    };
    let now = chrono::Utc::now() + chrono::Duration::seconds(1);
    let snap = handle(serde_json::json!({"kind": "snapshot"}), &deps, now).await.unwrap();
    assert_eq!(snap.written, vec!["reports/status/index.html"]);
    assert_eq!(snap.documents, 2);
    let page = archive.get("reports/status/index.html").await.unwrap().expect("the page in S3");
    assert_eq!(page.content_type, "text/html; charset=utf-8");
    let page = String::from_utf8(page.bytes).unwrap();
    assert!(page.contains("<td class=\"erp\">ERP-OK</td>") && page.contains("<td class=\"erp\">ERP-BAD</td>"));
    assert!(page.contains("console.aws.amazon.com/s3/object/"), "links to the source objects");
    let days = (not_after - now).num_days();
    assert!(
        page.contains(&format!(
            "data-seller=\"9999999999\"><td>9999999999</td><td>certificate</td><td>{subject} · EC P-256</td><td>{}</td><td>{days}</td>",
            not_after.format("%Y-%m-%d %H:%M UTC")
        )),
        "the read seller's line: {page}"
    );
    assert!(
        page.contains("data-seller=\"5265877635\"><td>5265877635</td><td>?</td>"),
        "the quiet seller's line"
    );
    assert!(!page.contains("BEGIN"), "no PEM on the page");

    let weekly = handle(serde_json::json!({"kind": "weekly", "week_of": now}), &deps, now)
        .await
        .unwrap();
    assert_eq!(weekly.written.len(), 2);
    let csv = archive.get(&weekly.written[1]).await.unwrap().expect("the CSV in S3");
    let csv = String::from_utf8(csv.bytes).unwrap();
    assert!(csv.contains("state,QUEUED,1,") && csv.contains("state,REJECTED,1,"), "{csv}");
    assert!(archive.get(&weekly.written[0]).await.unwrap().is_some());

    // The summary went over the wire to SNS and on to the subscribed queue.
    let mail = SqsQueue::new(c.sqs.clone(), &inbox.url);
    let mut got = Vec::new();
    for _ in 0..5 {
        got = mail.receive(10, Duration::from_secs(30), Duration::from_secs(1)).await.unwrap();
        if !got.is_empty() {
            break;
        }
    }
    assert_eq!(got.len(), 1, "one summary published");
    assert!(got[0].body.starts_with("ksef-relay weekly report "), "{}", got[0].body);
    assert!(got[0].body.contains(&format!("s3://{name}/reports/weekly/")), "{}", got[0].body);

    let bad = handle(serde_json::json!({"kind": "monthly"}), &deps, now).await.unwrap_err();
    assert!(bad.contains("snapshot"), "{bad}");
}
