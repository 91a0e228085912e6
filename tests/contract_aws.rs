//! The contract suites against the AWS adapters, over the real wire to the moto emulator.
//! Every test creates its own table, queue pair or bucket.

use std::time::Duration;

use relay_aws::{provision, DynamoDocumentStore, DynamoSharedCache, S3Archive, SqsQueue};
use relay_tests::emulator;

async fn store() -> DynamoDocumentStore {
    let c = emulator::clients().await;
    let table = relay_tests::unique_name("documents");
    provision::create_documents_table(&c.dynamodb, &table).await.unwrap();
    DynamoDocumentStore::new(c.dynamodb, table)
}

async fn queues(max_receive_count: u32) -> (SqsQueue, SqsQueue) {
    let c = emulator::clients().await;
    let pair = provision::create_queue_with_dlq(
        &c.sqs,
        &relay_tests::unique_name("send"),
        max_receive_count,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    (SqsQueue::new(c.sqs.clone(), pair.url), SqsQueue::new(c.sqs, pair.dlq_url))
}

async fn archive() -> S3Archive {
    let c = emulator::clients().await;
    let bucket = relay_tests::unique_name("archive");
    provision::create_bucket(&c.s3, &bucket, emulator::REGION).await.unwrap();
    S3Archive::new(c.s3, bucket)
}

async fn cache() -> DynamoSharedCache {
    let c = emulator::clients().await;
    let table = relay_tests::unique_name("documents");
    provision::create_documents_table(&c.dynamodb, &table).await.unwrap();
    DynamoSharedCache::new(c.dynamodb, table)
}

relay_tests::document_store_contract!(store);
relay_tests::shared_cache_contract!(cache);
relay_tests::queue_contract!(queues);
relay_tests::archive_contract!(archive);
