//! What the intake will receive: an S3 ObjectCreated notification delivered to SQS by the
//! emulator over the real wire, parsed by `relay_pipeline::s3_event`.

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use relay_aws::provision;
use relay_aws::SqsQueue;
use relay_domain::ports::Queue;
use relay_pipeline::s3_event::created_objects;
use relay_tests::emulator;

#[tokio::test]
async fn an_upload_to_inbox_arrives_as_a_parsable_notification() {
    let c = emulator::clients().await;
    let bucket = relay_tests::unique_name("inbox");
    provision::create_bucket(&c.s3, &bucket, emulator::REGION).await.unwrap();
    let pair = provision::create_queue_with_dlq(&c.sqs, &relay_tests::unique_name("intake"), 5, Duration::from_secs(30))
        .await
        .unwrap();
    provision::notify_queue_on_create(&c.s3, &c.sqs, &bucket, &pair.url, "inbox/")
        .await
        .unwrap();
    let key = "inbox/5265877635/FV 2026+01.xml";
    c.s3.put_object()
        .bucket(&bucket)
        .key(key)
        .body(ByteStream::from_static(b"<Faktura/>"))
        .send()
        .await
        .unwrap();
    c.s3.put_object()
        .bucket(&bucket)
        .key("elsewhere/x.xml")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();

    let queue = SqsQueue::new(c.sqs.clone(), pair.url);
    let mut created = Vec::new();
    let mut bodies = 0;
    for _ in 0..5 {
        for m in queue.receive(10, Duration::from_secs(30), Duration::from_secs(1)).await.unwrap() {
            bodies += 1;
            created.extend(created_objects(&m.body).unwrap_or_else(|e| panic!("{e}: {}", m.body)));
        }
        if !created.is_empty() {
            break;
        }
    }
    assert!(bodies >= 2, "the s3:TestEvent and the upload both arrive");
    assert_eq!(created.len(), 1, "only inbox/ is notified: {created:?}");
    assert_eq!(created[0].key, key);
    assert_eq!(created[0].bucket, bucket);
    assert_eq!(created[0].size, Some(10));
}
