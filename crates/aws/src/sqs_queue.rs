//! The queue port on SQS. Redrive to the DLQ is SQS's own (RedrivePolicy on the queue).
//!
//! The age of the oldest message is not a queue attribute in SQS (real AWS and the emulator
//! alike): it exists only as the CloudWatch metric `AWS/SQS ApproximateAgeOfOldestMessage`, which
//! the backlog alarms read directly. So [`Queue::stats`] reports `oldest_age: None` here; the
//! relay's own backlog age comes from the document store (`list_by_state`), which is the
//! business-level figure anyway (a document waiting, not a message).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};
use chrono::{DateTime, Utc};
use relay_domain::ports::queue::{check_receive, check_visibility};
use relay_domain::ports::{OutgoingMessage, Queue, QueueError, QueueStats, ReceivedMessage};

/// One SQS queue.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

fn unavailable<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(op: &str, e: SdkError<E, R>) -> QueueError {
    let code = e.as_service_error().and_then(|s| s.code()).unwrap_or_default().to_owned();
    if code.contains("ReceiptHandleIsInvalid") || code.contains("MessageNotInflight") {
        return QueueError::ReceiptInvalid(format!("SQS {op}: {code}"));
    }
    QueueError::Unavailable(format!("SQS {op}: {}", DisplayErrorContext(&e)))
}

/// SQS counts delays and visibility in whole seconds; round up so nothing is early.
fn whole_seconds(d: Duration) -> i32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.min(i32::MAX as u64) as i32
}

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        SqsQueue { client, url: url.into() }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The queue name: the last segment of its URL.
    pub fn name(&self) -> &str {
        self.url.rsplit('/').next().unwrap_or(&self.url)
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, message: OutgoingMessage) -> Result<String, QueueError> {
        message.check()?;
        let mut attributes = HashMap::new();
        for (k, v) in &message.attributes {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .map_err(|e| QueueError::Invalid(e.to_string()))?;
            attributes.insert(k.clone(), value);
        }
        let out = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(message.body)
            .delay_seconds(whole_seconds(message.delay))
            .set_message_attributes((!attributes.is_empty()).then_some(attributes))
            .send()
            .await
            .map_err(|e| unavailable("SendMessage", e))?;
        Ok(out.message_id().unwrap_or_default().to_owned())
    }

    async fn receive(&self, max: u32, visibility: Duration, wait: Duration) -> Result<Vec<ReceivedMessage>, QueueError> {
        check_receive(max, visibility)?;
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max as i32)
            .visibility_timeout(whole_seconds(visibility))
            .wait_time_seconds(whole_seconds(wait).min(20))
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(|e| unavailable("ReceiveMessage", e))?;
        let mut received = Vec::new();
        for m in out.messages() {
            let system = m.attributes();
            let receive_count = system
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            let sent_at = system
                .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                .and_then(|v| v.parse::<i64>().ok())
                .and_then(DateTime::<Utc>::from_timestamp_millis)
                .unwrap_or_else(Utc::now);
            let attributes: BTreeMap<String, String> = m
                .message_attributes()
                .map(|attrs| {
                    attrs
                        .iter()
                        .filter_map(|(k, v)| v.string_value().map(|s| (k.clone(), s.to_owned())))
                        .collect()
                })
                .unwrap_or_default();
            received.push(ReceivedMessage {
                message_id: m.message_id().unwrap_or_default().to_owned(),
                receipt: m.receipt_handle().unwrap_or_default().to_owned(),
                body: m.body().unwrap_or_default().to_owned(),
                attributes,
                receive_count,
                sent_at,
            });
        }
        Ok(received)
    }

    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        check_visibility(timeout)?;
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(whole_seconds(timeout))
            .send()
            .await
            .map_err(|e| unavailable("ChangeMessageVisibility", e))?;
        Ok(())
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| unavailable("DeleteMessage", e))?;
        Ok(())
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| unavailable("GetQueueAttributes", e))?;
        let get = |name: QueueAttributeName| {
            out.attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(QueueStats {
            visible: get(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            delayed: get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
            oldest_age: None,
        })
    }
}
