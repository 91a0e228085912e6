//! # The intake function
//!
//! Triggered by the intake queue, which receives S3 ObjectCreated notifications for every key
//! under `inbox/`. For each created object it runs
//! [`relay_pipeline::intake::intake_created_object`], which answers every object: an upload
//! (`inbox/{sellerNip}/{erpDocId}.xml`, read at the version the event names) is taken in; a
//! misplaced one is refused in its seller's outbox; one without a seller folder gets a
//! corrections notice and the `InboxUploadsWithoutSeller` metric. A record whose work
//! failed for a retryable reason (a store, queue or bucket error) is reported in
//! `batchItemFailures`, so SQS redelivers only that one; the intake is idempotent, so a
//! redelivery is harmless. A message that is not an S3 notification at all also fails, so it
//! ends, visible, in the intake DLQ rather than being dropped.

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::Utc;
use relay_aws::settings::IntakeSettings;
use relay_aws::{AwsClients, DynamoDocumentStore, S3Archive, SqsQueue};
use relay_pipeline::intake::{intake_created_object, IntakePorts, ObjectIntake};
use relay_pipeline::s3_event::created_objects;

/// The function's adapters, built once per cold start.
pub struct IntakeDeps {
    pub store: DynamoDocumentStore,
    pub bucket: S3Archive,
    pub send_queue: SqsQueue,
    pub corrections_queue: SqsQueue,
}

impl IntakeDeps {
    pub async fn new(settings: &IntakeSettings) -> Self {
        let clients = AwsClients::new(&settings.aws).await;
        IntakeDeps {
            store: DynamoDocumentStore::new(clients.dynamodb.clone(), &settings.resources.table),
            bucket: S3Archive::new(clients.s3.clone(), &settings.resources.bucket),
            send_queue: SqsQueue::new(clients.sqs.clone(), &settings.send_queue_url),
            corrections_queue: SqsQueue::new(clients.sqs.clone(), &settings.corrections_queue_url),
        }
    }

    fn ports(&self) -> IntakePorts<'_, DynamoDocumentStore> {
        IntakePorts {
            store: &self.store,
            archive: &self.bucket,
            send_queue: &self.send_queue,
            corrections_queue: &self.corrections_queue,
            backlog: None,
        }
    }
}

/// Handles one SQS batch; the response names the messages to redeliver.
pub async fn handle(event: SqsEvent, deps: &IntakeDeps) -> SqsBatchResponse {
    let results = futures::future::join_all(event.records.iter().map(|m| handle_message(m, deps))).await;
    let batch_item_failures = event
        .records
        .iter()
        .zip(results)
        .filter(|(_, ok)| !ok)
        .map(|(m, _)| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = m.message_id.clone().unwrap_or_default();
            f
        })
        .collect();
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = batch_item_failures;
    response
}

/// True when the message is done with (including answered refusals); false to redeliver it.
async fn handle_message(message: &SqsMessage, deps: &IntakeDeps) -> bool {
    let body = message.body.as_deref().unwrap_or_default();
    let objects = match created_objects(body) {
        Ok(objects) => objects,
        Err(e) => {
            tracing::error!(message_id = ?message.message_id, error = %e, "not an S3 notification; leaving it for the DLQ");
            return false;
        }
    };
    let mut ok = true;
    for object in objects {
        match intake_created_object(&deps.ports(), &object, Utc::now()).await {
            ObjectIntake::Done(outcome) => tracing::info!(key = %object.key, outcome = outcome.name(), "intake done"),
            ObjectIntake::Skipped(why) => tracing::info!(key = %object.key, why, "nothing to answer"),
            ObjectIntake::Retry(why) => {
                tracing::warn!(key = %object.key, why, "intake failed; will retry");
                ok = false;
            }
        }
    }
    ok
}
