//! Lambda events as AWS delivers them, built from messages received over the wire, so a test can
//! hand a function's handler exactly what the SQS event source would.

use aws_lambda_events::sqs::SqsEvent;
use relay_domain::ports::ReceivedMessage;

/// The SQS event Lambda would deliver for these messages (with their string attributes).
pub fn sqs_event(messages: &[ReceivedMessage]) -> SqsEvent {
    let records: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| {
            let attrs: serde_json::Map<String, serde_json::Value> = m
                .attributes
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        serde_json::json!({"stringValue": v, "dataType": "String", "stringListValues": [], "binaryListValues": []}),
                    )
                })
                .collect();
            serde_json::json!({
                "messageId": m.message_id, "receiptHandle": m.receipt, "body": m.body,
                "attributes": {"ApproximateReceiveCount": m.receive_count.to_string()},
                "messageAttributes": attrs, "md5OfBody": "", "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:eu-central-1:123456789012:queue", "awsRegion": "eu-central-1"
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({ "Records": records })).expect("a Lambda SQS event")
}

/// What Lambda's SQS event source does once: receive a batch (up to 10, hidden 30 s), invoke
/// the handler, delete every message it did not name in `batchItemFailures`. Returns how many
/// messages the batch held.
pub async fn deliver<F, Fut>(queue: &dyn relay_domain::ports::Queue, handler: F) -> usize
where
    F: Fn(SqsEvent) -> Fut,
    Fut: std::future::Future<Output = aws_lambda_events::sqs::SqsBatchResponse>,
{
    let batch = queue
        .receive(10, std::time::Duration::from_secs(30), std::time::Duration::ZERO)
        .await
        .unwrap();
    if batch.is_empty() {
        return 0;
    }
    let response = handler(sqs_event(&batch)).await;
    for m in &batch {
        if !response.batch_item_failures.iter().any(|f| f.item_identifier == m.message_id) {
            queue.delete(&m.receipt).await.unwrap();
        }
    }
    batch.len()
}

/// What the SQS event source of a gathering function does once (a `BatchSize` over 10 with a
/// batching window): receive batches of up to 10 until `max` messages or the queue looks empty,
/// then invoke the handler once with all of them and delete every message it did not name in
/// `batchItemFailures`. Returns how many messages the invocation held.
pub async fn deliver_gathered<F, Fut>(queue: &dyn relay_domain::ports::Queue, max: usize, handler: F) -> usize
where
    F: Fn(SqsEvent) -> Fut,
    Fut: std::future::Future<Output = aws_lambda_events::sqs::SqsBatchResponse>,
{
    let mut gathered = Vec::new();
    while gathered.len() < max {
        let batch = queue
            .receive(10, std::time::Duration::from_secs(300), std::time::Duration::ZERO)
            .await
            .unwrap();
        if batch.is_empty() {
            break;
        }
        gathered.extend(batch);
    }
    if gathered.is_empty() {
        return 0;
    }
    let response = handler(sqs_event(&gathered)).await;
    for m in &gathered {
        if !response.batch_item_failures.iter().any(|f| f.item_identifier == m.message_id) {
            queue.delete(&m.receipt).await.unwrap();
        }
    }
    gathered.len()
}
