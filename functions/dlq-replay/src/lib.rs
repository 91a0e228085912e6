//! # The dlq-replay function
//!
//! Invoked by ops from the Lambda console with a JSON event such as
//! `{"queue": "send", "limit": 50, "dry_run": true}` (filters: `seller_nip`, `error_class`,
//! `min_age_minutes`). Runs [`relay_pipeline::replay::replay`] and returns its summary: what was
//! moved, what was dropped (already ACCEPTED, or waiting for a person) and what was left, and why.

use chrono::Utc;
use relay_aws::{DynamoDocumentStore, SqsQueue};
use relay_pipeline::replay::{replay, ReplayError, ReplayPorts, ReplayRequest, ReplaySummary};
use relay_pipeline::sessions::KsefContexts;

pub struct ReplayDeps {
    pub store: DynamoDocumentStore,
    pub send_queue: SqsQueue,
    pub send_dlq: SqsQueue,
    pub status_queue: SqsQueue,
    pub status_dlq: SqsQueue,
    pub ksef: KsefContexts,
}

impl ReplayDeps {
    /// Everything from the function's settings: AWS clients, the KSeF tokens from Secrets Manager.
    pub async fn from_settings(s: &relay_aws::settings::ReplaySettings) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let clients = relay_aws::AwsClients::new(&s.aws).await;
        let route = |name: &str| {
            s.queues
                .iter()
                .find(|r| r.name == name)
                .cloned()
                .ok_or_else(|| format!("REPLAY_QUEUES has no {name}= entry"))
        };
        let (send, status) = (route("send")?, route("status")?);
        Ok(ReplayDeps {
            store: DynamoDocumentStore::new(clients.dynamodb.clone(), &s.resources.table),
            send_queue: SqsQueue::new(clients.sqs.clone(), &send.target_url),
            send_dlq: SqsQueue::new(clients.sqs.clone(), &send.dlq_url),
            status_queue: SqsQueue::new(clients.sqs.clone(), &status.target_url),
            status_dlq: SqsQueue::new(clients.sqs.clone(), &status.dlq_url),
            ksef: relay_lambda::ksef_contexts(&s.ksef, &clients, &s.resources.table)?,
        })
    }
}

pub async fn handle(event: serde_json::Value, deps: &ReplayDeps) -> Result<ReplaySummary, HandlerError> {
    let req: ReplayRequest = serde_json::from_value(event).map_err(|e| HandlerError::BadEvent(e.to_string()))?;
    let ports = ReplayPorts {
        store: &deps.store,
        send_dlq: &deps.send_dlq,
        status_dlq: &deps.status_dlq,
        send_queue: &deps.send_queue,
        status_queue: &deps.status_queue,
    };
    Ok(replay(&ports, &deps.ksef, &req, Utc::now()).await?)
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("bad event (expected {{\"queue\": \"send\"|\"status\", \"limit\": N, \"dry_run\": bool, ...}}): {0}")]
    BadEvent(String),
    #[error(transparent)]
    Replay(#[from] ReplayError),
}
