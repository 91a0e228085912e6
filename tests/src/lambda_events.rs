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
