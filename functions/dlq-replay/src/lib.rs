//! # The dlq-replay function
//!
//! Invoked by ops from the Lambda console with a JSON event, one of:
//!
//! - `{"queue": "send", "limit": 50, "dry_run": true}` (or `"batch"`, the batch queue's DLQ, or `"status"`) (filters: `seller_nip`, `error_class`,
//!   `min_age_minutes`): runs [`relay_pipeline::replay::replay`] and returns its summary: what was
//!   moved, what was dropped (already ACCEPTED, or waiting for a person) and what was left, and why;
//! - `{"resolve": {"document": "{nip}|{kind}|{P_2}", "decision": "ours"|"recheck"|"withdraw",
//!   "by": "...", "reason": "...", "dry_run": true}}`: a person's decision on a CONFLICT
//!   ([`relay_pipeline::resolve::resolve_conflict`]; for `ours` the original's UPO is fetched
//!   from KSeF, so its acquisition date is KSeF's own);
//! - `{"send_again": {"document": "...", "by": "...", "reason": "..."}}`: a REJECTED document
//!   whose rejection was not about its content sent again ([`relay_pipeline::resolve::send_again`]).

use chrono::Utc;
use relay_aws::{DynamoDocumentStore, S3Archive, SqsQueue};
use relay_domain::ports::Queue;
use relay_pipeline::replay::{replay, ReplayError, ReplayPorts, ReplayRequest, ReplaySummary};
use relay_pipeline::resolve::{
    resolve_conflict, send_again, DecisionError, DecisionPorts, DecisionReport, ResolveRequest, SendAgainRequest,
};
use relay_pipeline::send_route::SendRouting;
use relay_pipeline::sessions::KsefContexts;
use serde::Serialize;

pub struct ReplayDeps {
    pub store: DynamoDocumentStore,
    /// The ERP's outbox (and a resolved duplicate's UPO).
    pub archive: S3Archive,
    pub send_queue: SqsQueue,
    pub send_dlq: SqsQueue,
    /// The batch queue and its DLQ (`REPLAY_QUEUES` entry `batch=`), when the deployment has
    /// them: Batch-mode sends are moved back to the batch queue, from either DLQ.
    pub batch: Option<(SqsQueue, SqsQueue)>,
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
            archive: S3Archive::new(clients.s3.clone(), &s.resources.bucket),
            send_queue: SqsQueue::new(clients.sqs.clone(), &send.target_url),
            send_dlq: SqsQueue::new(clients.sqs.clone(), &send.dlq_url),
            batch: route("batch").ok().map(|b| {
                (
                    SqsQueue::new(clients.sqs.clone(), &b.target_url),
                    SqsQueue::new(clients.sqs.clone(), &b.dlq_url),
                )
            }),
            status_queue: SqsQueue::new(clients.sqs.clone(), &status.target_url),
            status_dlq: SqsQueue::new(clients.sqs.clone(), &status.dlq_url),
            ksef: relay_lambda::ksef_contexts(&s.ksef, &clients, &s.resources.table)?,
        })
    }
}

/// The console event, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleEvent {
    Replay(ReplayRequest),
    Resolve(ResolveRequest),
    SendAgain(SendAgainRequest),
}

impl ConsoleEvent {
    /// `{"resolve": {...}}` or `{"send_again": {...}}` (the only key), else a replay request;
    /// every shape refuses unknown fields, so a typo is an error, not a silent real run.
    pub fn from_json(event: serde_json::Value) -> Result<Self, HandlerError> {
        let bad = |e: serde_json::Error| HandlerError::BadEvent(e.to_string());
        let single = event.as_object().filter(|o| o.len() == 1).and_then(|o| o.iter().next());
        match single {
            Some((k, v)) if k == "resolve" => Ok(ConsoleEvent::Resolve(serde_json::from_value(v.clone()).map_err(bad)?)),
            Some((k, v)) if k == "send_again" => Ok(ConsoleEvent::SendAgain(serde_json::from_value(v.clone()).map_err(bad)?)),
            _ => Ok(ConsoleEvent::Replay(serde_json::from_value(event).map_err(bad)?)),
        }
    }
}

/// The answer: the replay's summary or the decision's report (as JSON, one or the other).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ConsoleAnswer {
    Replay(ReplaySummary),
    Decision(DecisionReport),
}

impl ConsoleAnswer {
    pub fn into_replay(self) -> Option<ReplaySummary> {
        match self {
            ConsoleAnswer::Replay(s) => Some(s),
            ConsoleAnswer::Decision(_) => None,
        }
    }

    pub fn into_decision(self) -> Option<DecisionReport> {
        match self {
            ConsoleAnswer::Decision(d) => Some(d),
            ConsoleAnswer::Replay(_) => None,
        }
    }
}

/// Runs one console event.
pub async fn handle(event: serde_json::Value, deps: &ReplayDeps) -> Result<ConsoleAnswer, HandlerError> {
    // A send request goes back to the queue of its document's mode.
    let route = SendRouting::with_optional(&deps.send_queue, deps.batch.as_ref().map(|(q, _)| q as &dyn Queue));
    let decisions = DecisionPorts {
        store: &deps.store,
        archive: &deps.archive,
        send_queue: &route,
        status_queue: &deps.status_queue,
    };
    Ok(match ConsoleEvent::from_json(event)? {
        ConsoleEvent::Replay(mut req) => {
            // The batch DLQ holds send requests too: it is replayed as a send DLQ, with the
            // same checks.
            let send_dlq: &dyn Queue = match (req.queue.as_str(), &deps.batch) {
                ("batch", Some((_, dlq))) => {
                    req.queue = "send".into();
                    dlq
                }
                _ => &deps.send_dlq,
            };
            let ports = ReplayPorts {
                store: &deps.store,
                send_dlq,
                status_dlq: &deps.status_dlq,
                send_queue: &route,
                status_queue: &deps.status_queue,
            };
            ConsoleAnswer::Replay(replay(&ports, &deps.ksef, &req, Utc::now()).await?)
        }
        ConsoleEvent::Resolve(req) => ConsoleAnswer::Decision(resolve_conflict(&decisions, Some(&deps.ksef), &req, Utc::now()).await?),
        ConsoleEvent::SendAgain(req) => ConsoleAnswer::Decision(send_again(&decisions, &req, Utc::now()).await?),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("bad event (expected {{\"queue\": \"send\"|\"status\", \"limit\": N, \"dry_run\": bool, ...}}, {{\"resolve\": {{\"document\", \"decision\", \"by\", \"reason\", ...}}}} or {{\"send_again\": {{\"document\", \"by\", \"reason\"}}}}): {0}")]
    BadEvent(String),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error(transparent)]
    Decision(#[from] DecisionError),
}
