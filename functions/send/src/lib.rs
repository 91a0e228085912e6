//! # The send function
//!
//! Triggered by the send queue (ReportBatchItemFailures). For each message it runs
//! [`relay_pipeline::send::send`] and carries out the decided action: delays become delayed
//! copies, an exhausted budget a copy in the send DLQ, an infrastructure failure a batch item
//! failure (redelivered after the visibility timeout). After the batch it closes the KSeF
//! session if the send queue is drained ([`KsefContexts::close_when_drained`]).
//!
//! Online sends only: Batch-mode sends have their own queue and function (`functions/send-batch`,
//! many per batch session). A retry's copy goes to the queue of its document's mode
//! ([`SendRouting`]); a Batch-mode message found here is moved to the batch queue.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::Utc;
use relay_aws::{DynamoDocumentStore, S3Archive, SqsQueue};
use relay_domain::ports::Queue;
use relay_domain::SendMode;
use relay_pipeline::messages::SendRequest;
use relay_pipeline::queue_action::QueueAction;
use relay_pipeline::send::{send, SendConfig, SendPorts};
use relay_pipeline::send_route::SendRouting;
use relay_pipeline::sessions::KsefContexts;
use tracing::Instrument;

/// The function's adapters and configuration, built once per cold start.
pub struct SendDeps {
    pub store: DynamoDocumentStore,
    pub archive: S3Archive,
    pub send_queue: SqsQueue,
    pub send_dlq: SqsQueue,
    /// The send-batch function's queue (`BATCH_QUEUE_URL`): Batch-mode sends go there.
    pub batch_queue: Option<SqsQueue>,
    pub status_queue: SqsQueue,
    pub corrections_queue: SqsQueue,
    pub ksef: KsefContexts,
    pub cfg: SendConfig,
}

impl SendDeps {
    /// Everything from the function's settings: AWS clients, the KSeF tokens from Secrets Manager.
    pub async fn from_settings(s: &relay_aws::settings::SendSettings) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let clients = relay_aws::AwsClients::new(&s.aws).await;
        Ok(SendDeps {
            store: DynamoDocumentStore::new(clients.dynamodb.clone(), &s.resources.table),
            archive: S3Archive::new(clients.s3.clone(), &s.resources.bucket),
            send_queue: SqsQueue::new(clients.sqs.clone(), &s.send_queue_url),
            send_dlq: SqsQueue::new(clients.sqs.clone(), &s.send_dlq_url),
            batch_queue: s.batch_queue_url.as_ref().map(|u| SqsQueue::new(clients.sqs.clone(), u)),
            status_queue: SqsQueue::new(clients.sqs.clone(), &s.status_queue_url),
            corrections_queue: SqsQueue::new(clients.sqs.clone(), &s.corrections_queue_url),
            ksef: relay_lambda::ksef_contexts(&s.ksef, &clients, &s.resources.table)?,
            cfg: SendConfig {
                policy: relay_domain::RetryPolicy::standard(s.max_attempts)?,
                owner: std::env::var("AWS_LAMBDA_LOG_STREAM_NAME").unwrap_or_else(|_| "send".into()),
                lease: s.lease,
                first_poll_delay: std::time::Duration::from_secs(2),
            },
        })
    }
}

pub async fn handle(event: SqsEvent, deps: &SendDeps) -> SqsBatchResponse {
    let kept = futures::future::join_all(event.records.iter().map(|m| handle_message(m, deps))).await;
    // The work is done when the send queue is empty: close the session rather than leave it to
    // KSeF's 12-hour timeout (one GetQueueAttributes per batch, not per invoice).
    if let Err(e) = deps
        .ksef
        .close_when_drained(&deps.send_queue, Utc::now(), relay_pipeline::sessions::DRAINED_SESSION_MIN_AGE)
        .await
    {
        tracing::warn!(error = %e, "could not tell whether the send queue is drained; the session stays open");
    }
    relay_lambda::batch_response(
        event
            .records
            .iter()
            .zip(kept)
            .filter(|(_, keep)| *keep)
            .map(|(m, _)| m.message_id.clone().unwrap_or_default()),
    )
}

async fn handle_message(m: &SqsMessage, deps: &SendDeps) -> bool {
    // Every line written while this message is handled carries the document's fields.
    let span = relay_observe::message_span!("send_message");
    async move {
        // A retry's copy goes to the queue of its mode.
        let route = SendRouting::with_optional(&deps.send_queue, deps.batch_queue.as_ref().map(|q| q as &dyn Queue));
        let ports = SendPorts {
            store: &deps.store,
            archive: &deps.archive,
            send_queue: &route,
            status_queue: &deps.status_queue,
            corrections_queue: &deps.corrections_queue,
        };
        let action = match SendRequest::from_json(m.body.as_deref().unwrap_or_default()) {
            Err(e) => {
                tracing::error!(message_id = ?m.message_id, error = %e, "not a send request; to the DLQ");
                QueueAction::DeadLetter
            }
            // A Batch-mode message here (queued before the deployment had a batch queue) is moved
            // to the batch queue, where it joins its seller's next batch session instead of
            // opening one of its own.
            Ok(req) if req.mode == Some(SendMode::Batch) && deps.batch_queue.is_some() => {
                tracing::info!(document = %req.document, trace_id = %req.trace_id, "Batch-mode message moved to the batch queue");
                QueueAction::Requeue {
                    delay: std::time::Duration::ZERO,
                }
            }
            Ok(req) => {
                relay_observe::logging::note_document(&req.trace_id, &req.document.seller_nip, &req.document);
                match send(&ports, &deps.ksef, &deps.cfg, &req, Utc::now()).await {
                    Ok(res) => {
                        if let Some(r) = &res.record {
                            relay_observe::logging::note_state(r.erp_document_id.as_str(), r.state.code());
                        }
                        tracing::info!(document = %req.document, trace_id = %req.trace_id, outcome = res.outcome, "send");
                        res.action
                    }
                    Err(e) => {
                        tracing::warn!(document = %req.document, trace_id = %req.trace_id, error = %e, "send failed on the store or a queue; redelivered later");
                        QueueAction::Release
                    }
                }
            }
        };
        relay_lambda::carry_out(&action, m, &route, &deps.send_dlq)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not carry out the queue action; redelivered later");
                true
            })
    }
    .instrument(span)
    .await
}
