//! # The send-batch function
//!
//! Triggered by the batch queue, whose event source gathers messages (up to `BatchSize`
//! thousands, for up to `MaximumBatchingWindowInSeconds`, within Lambda's 6 MB invoke payload):
//! every message is a Batch-mode `SendRequest` (intake routes there the invoices its seller's
//! online backlog cannot send in time, and those with attachments). The handler groups the
//! messages per seller and sends each seller's together in ONE batch session
//! ([`relay_pipeline::send::send_batch`]: recorded before it is opened, parts streamed from the
//! archive, closed, each member awaiting its batch; a later message harvests the session for
//! all its members). Each message's own decided action is carried out (a delay is a delayed
//! copy, back on the batch queue; an exhausted budget a copy in the batch DLQ), and an
//! infrastructure failure is reported in `batchItemFailures`, for that message only.
//!
//! A seller's batch going anyway also takes that seller's Online documents still waiting for
//! their turn in KSeF's online windows (the contexts carry the online backlog intake writes,
//! [`relay_lambda::online_backlog`]): each claimed, `ModeChanged` to Batch with the reason in its
//! history, and its follow-up sent to the batch queue.
//!
//! One seller's group at a time: a batch's parts are held in memory while they upload (the
//! memory setting follows docs/performance.md, "Batch builder memory").

use std::collections::BTreeMap;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::Utc;
use relay_aws::settings::SendBatchSettings;
use relay_aws::{DynamoDocumentStore, S3Archive, SqsQueue};
use relay_pipeline::messages::SendRequest;
use relay_pipeline::queue_action::QueueAction;
use relay_pipeline::send::{send_batch, BatchConfig, SendConfig, SendPorts};
use relay_pipeline::send_route::SendRouting;
use relay_pipeline::sessions::KsefContexts;

/// The function's adapters and configuration, built once per cold start.
pub struct SendBatchDeps {
    pub store: DynamoDocumentStore,
    pub archive: S3Archive,
    /// Where a member that is not (or no longer) Batch-mode goes back to.
    pub send_queue: SqsQueue,
    pub batch_queue: SqsQueue,
    pub batch_dlq: SqsQueue,
    pub status_queue: SqsQueue,
    pub corrections_queue: SqsQueue,
    pub ksef: KsefContexts,
    pub cfg: SendConfig,
    pub batch_cfg: BatchConfig,
}

impl SendBatchDeps {
    /// Everything from the function's settings: AWS clients, the KSeF credentials from Secrets Manager.
    pub async fn from_settings(s: &SendBatchSettings) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let clients = relay_aws::AwsClients::new(&s.aws).await;
        Ok(SendBatchDeps {
            store: DynamoDocumentStore::new(clients.dynamodb.clone(), &s.resources.table),
            archive: S3Archive::new(clients.s3.clone(), &s.resources.bucket),
            send_queue: SqsQueue::new(clients.sqs.clone(), &s.send_queue_url),
            batch_queue: SqsQueue::new(clients.sqs.clone(), &s.batch_queue_url),
            batch_dlq: SqsQueue::new(clients.sqs.clone(), &s.batch_dlq_url),
            status_queue: SqsQueue::new(clients.sqs.clone(), &s.status_queue_url),
            corrections_queue: SqsQueue::new(clients.sqs.clone(), &s.corrections_queue_url),
            // A seller's batch takes its Online documents still waiting for their online turn
            // (the target delay is intake's, for choosing; taking and freeing do not use it).
            ksef: relay_lambda::ksef_contexts(&s.ksef, &clients, &s.resources.table)?.with_online_backlog(relay_lambda::online_backlog(
                &clients,
                &s.resources.table,
                ksef_client::OnlineBacklog::DEFAULT_TARGET_DELAY,
            )),
            cfg: SendConfig {
                policy: relay_domain::RetryPolicy::standard(s.max_attempts)?,
                owner: std::env::var("AWS_LAMBDA_LOG_STREAM_NAME").unwrap_or_else(|_| "send-batch".into()),
                lease: s.lease,
                first_poll_delay: std::time::Duration::from_secs(2),
            },
            batch_cfg: BatchConfig::default(),
        })
    }
}

/// Handles one gathered SQS batch; the response names the messages to redeliver.
pub async fn handle(event: SqsEvent, deps: &SendBatchDeps) -> SqsBatchResponse {
    let route = SendRouting::new(&deps.send_queue, &deps.batch_queue);
    let mut kept = Vec::new();
    let mut by_seller: BTreeMap<String, Vec<(&SqsMessage, SendRequest)>> = BTreeMap::new();
    for m in &event.records {
        match SendRequest::from_json(m.body.as_deref().unwrap_or_default()) {
            Ok(req) => by_seller.entry(req.document.seller_nip.to_string()).or_default().push((m, req)),
            Err(e) => {
                tracing::error!(message_id = ?m.message_id, error = %e, "not a send request; to the batch DLQ");
                if carry(&QueueAction::DeadLetter, m, &route, deps).await {
                    kept.push(m.message_id.clone().unwrap_or_default());
                }
            }
        }
    }
    let ports = SendPorts {
        store: &deps.store,
        archive: &deps.archive,
        send_queue: &route,
        status_queue: &deps.status_queue,
        corrections_queue: &deps.corrections_queue,
    };
    for (seller, group) in by_seller {
        for chunk in group.chunks(deps.batch_cfg.max_members.max(1)) {
            let reqs: Vec<SendRequest> = chunk.iter().map(|(_, r)| r.clone()).collect();
            tracing::info!(seller_nip = %seller, messages = reqs.len(), "sending a seller's Batch-mode documents together");
            let results = send_batch(&ports, &deps.ksef, &deps.cfg, &deps.batch_cfg, &reqs, Utc::now()).await;
            for ((m, req), res) in chunk.iter().zip(results) {
                let action = match res {
                    Ok(res) => {
                        tracing::info!(document = %req.document, trace_id = %req.trace_id, outcome = res.outcome, "send-batch");
                        res.action
                    }
                    Err(e) => {
                        tracing::warn!(document = %req.document, trace_id = %req.trace_id, error = %e, "send failed on the store or a queue; redelivered later");
                        QueueAction::Release
                    }
                };
                if carry(&action, m, &route, deps).await {
                    kept.push(m.message_id.clone().unwrap_or_default());
                }
            }
        }
    }
    relay_lambda::batch_response(kept)
}

/// Carries out one message's action; true when the message must be redelivered.
async fn carry(action: &QueueAction, m: &SqsMessage, route: &SendRouting<'_>, deps: &SendBatchDeps) -> bool {
    relay_lambda::carry_out(action, m, route, &deps.batch_dlq)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not carry out the queue action; redelivered later");
            true
        })
}
