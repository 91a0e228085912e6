//! # relay-lambda: the glue every ksef-relay Lambda shares
//!
//! The functions in `functions/` stay thin: decode the event, call one use case from
//! `relay-pipeline`, encode the answer. What they have in common lives here:
//!
//! - [`ksef_contexts`]: one KSeF client per seller NIP, made on the seller's first use from its
//!   credentials secret in Secrets Manager ([`SecretsManagerCredentials`]: a token or a
//!   certificate, read again on rotation), sharing logins and sessions across instances through
//!   the store's cache, the secrets in it sealed with KMS ([`relay_aws::KmsSealer`]);
//! - [`online_backlog`]: each seller's log of Online choices (intake writes it, the send-batch
//!   function takes the documents still waiting in it into a batch going anyway);
//! - [`carry_out`]: a use case's [`QueueAction`] in a Lambda SQS invocation, where the event
//!   source deletes every message not reported in `batchItemFailures`: delays and dead letters
//!   are sent as copies, and only `Release` keeps the original for redelivery;
//! - [`init_logging`]: JSON log lines and EMF metrics on stdout for CloudWatch.

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsMessage};
use ksef_client::{ClientConfig, Environment, StoredCredentials};
use relay_aws::secrets::{read_secret, secret_name, SecretsError};
use relay_aws::settings::KsefSettings;
use relay_aws::AwsClients;
use relay_domain::ports::{OutgoingMessage, Queue, QueueError, MAX_DELAY};
use relay_domain::{ErrorClass, ErrorSource, Failure, Nip};
use relay_pipeline::credentials::{invalid, CredentialsProvider, ProvidedCredentials, CREDENTIALS_UNREADABLE};
use relay_pipeline::queue_action::QueueAction;
use relay_pipeline::sessions::KsefContexts;

#[derive(Debug, thiserror::Error)]
pub enum GlueError {
    #[error("KSEF_ENV: {0}")]
    Environment(String),
}

/// The egress every function's KSeF calls leave from, as the rate governor counts it: one per
/// deployment (the runbook's NAT gateway with an Elastic IP).
pub const EGRESS: &str = "nat";

/// The KSeF contexts of the configured sellers: each seller's client is made on its first use
/// from its secret (so one unreadable secret parks only that seller), and shares tokens and
/// open sessions with the other instances through the documents table, sealed with the KMS key
/// `KSEF_CACHE_KEY_ID` (which intake and report, who can read the table, may not use).
pub fn ksef_contexts(settings: &KsefSettings, clients: &AwsClients, table: &str) -> Result<KsefContexts, GlueError> {
    let environment = Environment::parse(&settings.environment).map_err(GlueError::Environment)?;
    let cache = Arc::new(relay_aws::DynamoSharedCache::new(clients.dynamodb.clone(), table));
    let provider = Arc::new(SecretsManagerCredentials::new(
        clients.secrets.clone(),
        &settings.token_secret_prefix,
        &settings.seller_nips,
    ));
    let sealer = Arc::new(relay_aws::KmsSealer::new(clients.kms.clone(), &settings.cache_key_id));
    Ok(KsefContexts::new()
        .with_credentials(provider, ClientConfig::new(environment.clone()), settings.credentials_ttl)
        .with_shared_cache(cache)
        .with_sealer(sealer)
        .with_fleet_governor(EGRESS)
        .with_availability(&environment))
}

/// Each seller's online backlog (`sendmode/{nip}` in the documents table's shared cache, plain:
/// it holds document ids and projected times, no secret), against KSeF's published online
/// limits (the send path's fleet governor keeps to the live ones). Intake chooses each invoice's
/// mode from it; the send-batch function's contexts carry it
/// ([`KsefContexts::with_online_backlog`]) so that a seller's batch going anyway takes the
/// Online documents still waiting for their turn, and frees their slots.
pub fn online_backlog(clients: &AwsClients, table: &str, target_delay: std::time::Duration) -> ksef_client::OnlineBacklog {
    let cache = Arc::new(relay_aws::DynamoSharedCache::new(clients.dynamodb.clone(), table));
    ksef_client::OnlineBacklog::new(cache, ksef_client::ClientLimits::official(), target_delay)
}

/// Each configured seller's credentials from the secret `{prefix}{nip}` (the format:
/// `ksef_client::stored_credentials`). A seller not configured has none: the relay reads no
/// secret a document's NIP names unless the deployment sends for that seller.
pub struct SecretsManagerCredentials {
    client: aws_sdk_secretsmanager::Client,
    prefix: String,
    sellers: Vec<Nip>,
}

impl SecretsManagerCredentials {
    pub fn new(client: aws_sdk_secretsmanager::Client, prefix: &str, sellers: &[Nip]) -> Self {
        SecretsManagerCredentials {
            client,
            prefix: prefix.to_owned(),
            sellers: sellers.to_vec(),
        }
    }
}

/// The failure for a secret that could not be read: an operator's when it is missing or denied,
/// transient when Secrets Manager did not answer.
pub fn unreadable(e: SecretsError) -> Failure {
    let class = match e {
        SecretsError::Unusable { .. } => ErrorClass::Operator,
        SecretsError::Transient { .. } => ErrorClass::Transient,
    };
    Failure::new(
        class,
        ErrorSource::Storage {
            operation: "secrets_manager".into(),
        },
        e.to_string(),
    )
    .with_code(CREDENTIALS_UNREADABLE)
}

#[async_trait::async_trait]
impl CredentialsProvider for SecretsManagerCredentials {
    async fn read(&self, seller: &Nip) -> Result<ProvidedCredentials, Failure> {
        if !self.sellers.contains(seller) {
            return Err(Failure::new(
                ErrorClass::Operator,
                ErrorSource::Relay,
                format!("seller NIP {seller} is not in KSEF_SELLER_NIPS: this deployment has no KSeF credentials for it"),
            )
            .with_code("NO_CREDENTIALS"));
        }
        let name = secret_name(&self.prefix, seller);
        let text = read_secret(&self.client, &name).await.map_err(unreadable)?;
        let stored = StoredCredentials::parse(&text.value).map_err(|e| invalid(&name, e))?;
        Ok(ProvidedCredentials {
            stored,
            version: text.version,
        })
    }
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
