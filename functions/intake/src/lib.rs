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
use relay_domain::ports::Queue;
use relay_pipeline::intake::{intake_created_object, IntakePorts, ObjectIntake};
use relay_pipeline::s3_event::created_objects;
use relay_pipeline::send_route::SendRouting;

/// The function's adapters, built once per cold start.
pub struct IntakeDeps {
    pub store: DynamoDocumentStore,
    pub bucket: S3Archive,
    pub send_queue: SqsQueue,
    /// The batch queue (`BATCH_QUEUE_URL`), and with it the send-mode rule: each invoice's mode
    /// from its seller's online backlog, kept in the table's shared cache (`sendmode/{nip}`, the
    /// only cache entries intake's role may touch). Without a batch queue, only an attachment
    /// makes an invoice Batch.
    pub batch: Option<(SqsQueue, ksef_client::OnlineBacklog)>,
    pub corrections_queue: SqsQueue,
}

impl IntakeDeps {
    pub async fn new(settings: &IntakeSettings) -> Self {
        let clients = AwsClients::new(&settings.aws).await;
        IntakeDeps {
            store: DynamoDocumentStore::new(clients.dynamodb.clone(), &settings.resources.table),
            bucket: S3Archive::new(clients.s3.clone(), &settings.resources.bucket),
            send_queue: SqsQueue::new(clients.sqs.clone(), &settings.send_queue_url),
            // The same backlog the send-batch function reads (KSeF's published online limits).
            batch: settings.batch_queue_url.as_ref().map(|url| {
                let backlog = relay_lambda::online_backlog(&clients, &settings.resources.table, settings.batch_target_delay);
                (SqsQueue::new(clients.sqs.clone(), url), backlog)
            }),
            corrections_queue: SqsQueue::new(clients.sqs.clone(), &settings.corrections_queue_url),
        }
    }

    /// Where a registered document's send request goes: by its mode.
    fn route(&self) -> SendRouting<'_> {
        SendRouting::with_optional(&self.send_queue, self.batch.as_ref().map(|(q, _)| q as &dyn Queue))
    }

    fn ports<'a>(&'a self, route: &'a SendRouting<'a>) -> IntakePorts<'a, DynamoDocumentStore> {
        IntakePorts {
            store: &self.store,
            archive: &self.bucket,
            send_queue: route,
            corrections_queue: &self.corrections_queue,
            backlog: self.batch.as_ref().map(|(_, b)| b),
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
    let route = deps.route();
    for object in objects {
        match intake_created_object(&deps.ports(&route), &object, Utc::now()).await {
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
