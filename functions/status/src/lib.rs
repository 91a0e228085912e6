//! # The status function
//!
//! Triggered by the status queue (ReportBatchItemFailures). For each message it runs
//! [`relay_pipeline::status::poll`] and carries out the decided action: the next poll is a
//! delayed copy with the poll counter moved on; a document KSeF cancelled goes back to the send
//! queue (done by the use case); giving up goes to the status DLQ.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::Utc;
use relay_aws::{DynamoDocumentStore, S3Archive, SqsQueue};
use relay_domain::ports::Queue;
use relay_pipeline::messages::StatusRequest;
use relay_pipeline::queue_action::QueueAction;
use relay_pipeline::send_route::SendRouting;
use relay_pipeline::sessions::KsefContexts;
use relay_pipeline::status::{poll, StatusConfig, StatusPorts};
use tracing::Instrument;

pub struct StatusDeps {
    pub store: DynamoDocumentStore,
    pub archive: S3Archive,
    pub status_queue: SqsQueue,
    pub status_dlq: SqsQueue,
    pub send_queue: SqsQueue,
    /// Batch-mode sends go there (`BATCH_QUEUE_URL`), when the deployment has one.
    pub batch_queue: Option<SqsQueue>,
    pub corrections_queue: SqsQueue,
    pub ksef: KsefContexts,
    pub cfg: StatusConfig,
}

impl StatusDeps {
    /// Everything from the function's settings: AWS clients, the KSeF tokens from Secrets Manager.
    pub async fn from_settings(s: &relay_aws::settings::StatusSettings) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let clients = relay_aws::AwsClients::new(&s.aws).await;
        Ok(StatusDeps {
            store: DynamoDocumentStore::new(clients.dynamodb.clone(), &s.resources.table),
            archive: S3Archive::new(clients.s3.clone(), &s.resources.bucket),
            status_queue: SqsQueue::new(clients.sqs.clone(), &s.status_queue_url),
            status_dlq: SqsQueue::new(clients.sqs.clone(), &s.status_dlq_url),
            send_queue: SqsQueue::new(clients.sqs.clone(), &s.send_queue_url),
            batch_queue: s.batch_queue_url.as_ref().map(|u| SqsQueue::new(clients.sqs.clone(), u)),
            corrections_queue: SqsQueue::new(clients.sqs.clone(), &s.corrections_queue_url),
            ksef: relay_lambda::ksef_contexts(&s.ksef, &clients, &s.resources.table)?,
            cfg: StatusConfig::standard(relay_domain::RetryPolicy::standard(s.max_attempts)?),
        })
    }
}

pub async fn handle(event: SqsEvent, deps: &StatusDeps) -> SqsBatchResponse {
    let kept = futures::future::join_all(event.records.iter().map(|m| handle_message(m, deps))).await;
    relay_lambda::batch_response(
        event
            .records
            .iter()
            .zip(kept)
            .filter(|(_, keep)| *keep)
            .map(|(m, _)| m.message_id.clone().unwrap_or_default()),
    )
}

async fn handle_message(m: &SqsMessage, deps: &StatusDeps) -> bool {
    // Every line written while this message is handled carries the document's fields.
    let span = relay_observe::message_span!("status_message");
    async move {
        let route = SendRouting::with_optional(&deps.send_queue, deps.batch_queue.as_ref().map(|q| q as &dyn Queue));
        let ports = StatusPorts {
            store: &deps.store,
            archive: &deps.archive,
            send_queue: &route,
            status_queue: &deps.status_queue,
            corrections_queue: &deps.corrections_queue,
        };
        let action = match StatusRequest::from_json(m.body.as_deref().unwrap_or_default()) {
            Err(e) => {
                tracing::error!(message_id = ?m.message_id, error = %e, "not a status request; to the DLQ");
                QueueAction::DeadLetter
            }
            Ok(req) => {
                relay_observe::logging::note_document(&req.trace_id, &req.document.seller_nip, &req.document);
                match poll(&ports, &deps.ksef, &deps.cfg, &req, Utc::now()).await {
                    Ok(res) => {
                        if let Some(r) = &res.record {
                            relay_observe::logging::note_state(r.erp_document_id.as_str(), r.state.code());
                        }
                        tracing::info!(document = %req.document, trace_id = %req.trace_id, outcome = res.outcome, poll = req.poll, "status");
                        res.action
                    }
                    Err(e) => {
                        tracing::warn!(document = %req.document, trace_id = %req.trace_id, error = %e, "status failed on the store or a queue; redelivered later");
                        QueueAction::Release
                    }
                }
            }
        };
        relay_lambda::carry_out(&action, m, &deps.status_queue, &deps.status_dlq)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not carry out the queue action; redelivered later");
                true
            })
    }
    .instrument(span)
    .await
}
