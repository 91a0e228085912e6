//! # relay-lambda: the glue every ksef-relay Lambda shares
//!
//! The functions in `functions/` stay thin: decode the event, call one use case from
//! `relay-pipeline`, encode the answer. What they have in common lives here:
//!
//! - [`ksef_contexts`]: one KSeF client per seller NIP, with the tokens read from Secrets Manager
//!   at cold start, sharing logins and sessions across instances through the store's cache;
//! - [`carry_out`]: a use case's [`QueueAction`] in a Lambda SQS invocation, where the event
//!   source deletes every message not reported in `batchItemFailures`: delays and dead letters
//!   are sent as copies, and only `Release` keeps the original for redelivery;
//! - [`init_logging`]: JSON log lines and EMF metrics on stdout for CloudWatch.

use std::collections::BTreeMap;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsMessage};
use ksef_client::{ClientConfig, Credentials, Environment, KsefClient, KsefToken};
use relay_aws::settings::KsefSettings;
use relay_aws::AwsClients;
use relay_domain::ports::{OutgoingMessage, Queue, QueueError, MAX_DELAY};
use relay_pipeline::queue_action::QueueAction;
use relay_pipeline::sessions::KsefContexts;

#[derive(Debug, thiserror::Error)]
pub enum GlueError {
    #[error(transparent)]
    Secrets(#[from] relay_aws::secrets::SecretsError),
    #[error("KSEF_ENV: {0}")]
    Environment(String),
    #[error("KSeF client for {nip}: {message}")]
    Client { nip: String, message: String },
}

/// One KSeF client per configured seller NIP, authenticating with that context's token, sharing
/// tokens and open sessions with the other instances through the documents table.
pub async fn ksef_contexts(settings: &KsefSettings, clients: &AwsClients, table: &str) -> Result<KsefContexts, GlueError> {
    let tokens = relay_aws::secrets::ksef_tokens(&clients.secrets, &settings.token_secret_prefix, &settings.seller_nips).await?;
    let environment = Environment::parse(&settings.environment).map_err(GlueError::Environment)?;
    let cache = std::sync::Arc::new(relay_aws::DynamoSharedCache::new(clients.dynamodb.clone(), table));
    let mut contexts = KsefContexts::new().with_shared_cache(cache);
    for (nip, token) in tokens {
        let credentials = Credentials::Token {
            context: nip.clone(),
            token: KsefToken::new(token),
        };
        let client = KsefClient::new(ClientConfig::new(environment.clone()), Some(credentials)).map_err(|f| GlueError::Client {
            nip: nip.to_string(),
            message: f.to_string(),
        })?;
        contexts = contexts.with(nip, client);
    }
    Ok(contexts)
}

fn attributes(m: &SqsMessage) -> BTreeMap<String, String> {
    m.message_attributes
        .iter()
        .filter_map(|(k, v)| v.string_value.clone().map(|s| (k.clone(), s)))
        .collect()
}

/// Carries out `action` for message `m` of an SQS-triggered invocation. Returns true when the
/// message must be reported as a batch item failure (kept for redelivery).
pub async fn carry_out(action: &QueueAction, m: &SqsMessage, queue: &dyn Queue, dlq: &dyn Queue) -> Result<bool, QueueError> {
    let copy = |body: String| {
        let mut out = OutgoingMessage::new(body);
        out.attributes = attributes(m);
        out
    };
    let body = m.body.clone().unwrap_or_default();
    match action {
        QueueAction::Delete => Ok(false),
        QueueAction::Requeue { delay } => queue.send(copy(body).delayed((*delay).min(MAX_DELAY))).await.map(|_| false),
        QueueAction::Replace { body, delay } => queue.send(copy(body.clone()).delayed((*delay).min(MAX_DELAY))).await.map(|_| false),
        QueueAction::DeadLetter => dlq.send(copy(body)).await.map(|_| false),
        QueueAction::Release => Ok(true),
    }
}

/// The response naming the messages to redeliver.
pub fn batch_response(kept: impl IntoIterator<Item = String>) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = kept
        .into_iter()
        .map(|id| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            f
        })
        .collect();
    response
}

/// JSON log lines and EMF metric lines on stdout for CloudWatch (the format is
/// `relay_observe::logging`'s, shared with the CLI); `RUST_LOG` sets the level, `info` by default.
pub fn init_logging() {
    relay_observe::logging::init_lambda();
}
