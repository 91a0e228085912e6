//! # The sweeper function
//!
//! Invoked by an EventBridge schedule every 5 minutes (its constant input is
//! `{"trigger": "schedule"}`), or by a person from the Lambda console with any JSON object
//! (`{"trigger": "console"}`). Runs one [`relay_pipeline::sweeper::sweep`]: open documents
//! (QUEUED, SENT, PROCESSING, ACCEPTED without its UPO) whose next step is overdue with no lease
//! live are re-driven (a history line says why, then the follow-up message), while their
//! stage's queue has no visible backlog; final documents whose outbox result lags the record get
//! it rewritten. The answer is the [`SweepReport`]; the EMF metrics `DocumentsRedriven` (per
//! `Stage` and overall) and `OutboxResultsRewritten` go to stdout.
//!
//! Never sends to KSeF: it only issues the message a stage would have issued, and the stages
//! reconcile with KSeF before any resend.
//!
//! Its second job, when `KSEF_ENV` is set: KSeF's availability ([`poll_availability`], the use
//! case `relay_pipeline::availability::poll`): Latarnia read (no credentials: it is public),
//! each message version archived under `latarnia/`, a light probe of a public KSeF endpoint,
//! and the decided state written to the table's shared cache, where the send stage reads it.

use chrono::{DateTime, Utc};
use ksef_client::{Environment, LatarniaClient};
use relay_aws::settings::SweeperSettings;
use relay_aws::{DynamoDocumentStore, DynamoSharedCache, S3Archive, SqsQueue};
use relay_domain::ports::Queue;
use relay_pipeline::availability::{poll, PollPorts, PollReport, PollTargets};
use relay_pipeline::follow_up::FollowUpPorts;
use relay_pipeline::send_route::SendRouting;
use relay_pipeline::sweeper::{sweep, SweepConfig, SweepReport};
use serde::Deserialize;

pub struct SweeperDeps {
    pub store: DynamoDocumentStore,
    pub archive: S3Archive,
    pub send_queue: SqsQueue,
    /// Batch-mode sends go there (`BATCH_QUEUE_URL`), when the deployment has one.
    pub batch_queue: Option<SqsQueue>,
    pub status_queue: SqsQueue,
    pub corrections_queue: SqsQueue,
    pub cfg: SweepConfig,
}

impl SweeperDeps {
    /// Everything from the function's settings: the table, the bucket, the three queues.
    pub async fn from_settings(s: &SweeperSettings) -> Self {
        let clients = relay_aws::AwsClients::new(&s.aws).await;
        SweeperDeps {
            store: DynamoDocumentStore::new(clients.dynamodb.clone(), &s.resources.table),
            archive: S3Archive::new(clients.s3.clone(), &s.resources.bucket),
            send_queue: SqsQueue::new(clients.sqs.clone(), &s.send_queue_url),
            batch_queue: s.batch_queue_url.as_ref().map(|u| SqsQueue::new(clients.sqs.clone(), u)),
            status_queue: SqsQueue::new(clients.sqs.clone(), &s.status_queue_url),
            corrections_queue: SqsQueue::new(clients.sqs.clone(), &s.corrections_queue_url),
            cfg: SweepConfig::standard(),
        }
    }
}

/// What invoked the sweep: the schedule's constant input, or a person's JSON from the console.
/// Nothing in it changes what a sweep does; other fields are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SweepEvent {
    #[serde(default)]
    pub trigger: Option<String>,
}

/// Runs one sweep at `now` and answers with its report.
pub async fn handle(event: serde_json::Value, deps: &SweeperDeps, now: DateTime<Utc>) -> Result<SweepReport, String> {
    let event: SweepEvent = serde_json::from_value(event)
        .map_err(|e| format!("not a sweeper event ({e}); expected a JSON object such as {{\"trigger\":\"console\"}}"))?;
    tracing::info!(trigger = event.trigger.as_deref().unwrap_or("unnamed"), "sweep started");
    let route = SendRouting::with_optional(&deps.send_queue, deps.batch_queue.as_ref().map(|q| q as &dyn Queue));
    let ports = FollowUpPorts {
        store: &deps.store,
        archive: &deps.archive,
        send_queue: &route,
        status_queue: &deps.status_queue,
        corrections_queue: &deps.corrections_queue,
    };
    sweep(&ports, &deps.cfg, now).await.map_err(|e| e.to_string())
}

/// What the availability poll needs: the environment, its Latarnia (None for DEMO), the table's
/// shared cache and the bucket.
pub struct AvailabilityDeps {
    pub environment: Environment,
    pub latarnia: Option<LatarniaClient>,
    pub cache: DynamoSharedCache,
    pub archive: S3Archive,
}

/// Each request to Latarnia or KSeF's probe gets this long (the sweeper's timeout is 240 s).
pub const AVAILABILITY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl AvailabilityDeps {
    /// From the settings; None when `KSEF_ENV` is not set (no poll). A bad `KSEF_ENV` fails fast.
    pub async fn from_settings(s: &SweeperSettings) -> Result<Option<Self>, String> {
        let Some(env) = s.availability_environment.as_deref() else {
            return Ok(None);
        };
        let environment = Environment::parse(env).map_err(|e| format!("KSEF_ENV: {e}"))?;
        let clients = relay_aws::AwsClients::new(&s.aws).await;
        Ok(Some(AvailabilityDeps {
            latarnia: LatarniaClient::for_environment(&environment, AVAILABILITY_TIMEOUT),
            environment,
            cache: DynamoSharedCache::new(clients.dynamodb.clone(), &s.resources.table),
            archive: S3Archive::new(clients.s3.clone(), &s.resources.bucket),
        }))
    }
}

/// One availability poll at `now`.
pub async fn poll_availability(deps: &AvailabilityDeps, now: DateTime<Utc>) -> Result<PollReport, String> {
    let ports = PollPorts {
        cache: &deps.cache,
        archive: &deps.archive,
    };
    let targets = PollTargets {
        environment: &deps.environment,
        latarnia: deps.latarnia.as_ref(),
        probe_timeout: AVAILABILITY_TIMEOUT,
    };
    poll(&ports, &targets, now).await.map_err(|e| e.to_string())
}
