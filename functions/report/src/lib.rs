//! # The report function
//!
//! Invoked by two EventBridge schedules: `{"kind":"snapshot"}` every 15 minutes writes the
//! status page to `reports/status/index.html` (with a line per seller's KSeF login) and emits
//! the business and regulatory metrics and each seller's `CredentialDaysLeft` (EMF on stdout,
//! from the facts the KSeF-calling functions record: this function reads no secret); `{"kind":"weekly"}` writes last week's report to
//! `reports/weekly/{YYYY-Www}.html` and `.csv` and publishes its summary to the alarm topic.
//! Read-only on the table; writes only under `reports/`.

use chrono::{DateTime, Utc};
use relay_aws::settings::ReportSettings;
use relay_aws::{DynamoDocumentStore, DynamoSharedCache, S3Archive, SnsTopic};
use relay_domain::Nip;
use relay_report::jobs::{self, JobConfig, JobError, JobOutcome, Notifier, ReportEvent};

pub struct ReportDeps {
    pub store: DynamoDocumentStore,
    pub reports: S3Archive,
    pub topic: SnsTopic,
    pub bucket: String,
    pub region: String,
    pub table: String,
    pub overdue_after: chrono::Duration,
    /// The sellers whose KSeF logins the snapshot shows and measures ...
    pub sellers: Vec<Nip>,
    /// ... from the facts the KSeF-calling functions record here (read with Query only).
    pub credential_facts: DynamoSharedCache,
}

struct Topic<'a>(&'a SnsTopic);

#[async_trait::async_trait]
impl Notifier for Topic<'_> {
    async fn publish(&self, subject: &str, message: &str) -> Result<(), String> {
        self.0.publish(subject, message).await.map(|_| ())
    }
}

impl ReportDeps {
    pub async fn from_settings(s: &ReportSettings) -> Self {
        let clients = relay_aws::AwsClients::new(&s.aws).await;
        ReportDeps {
            store: DynamoDocumentStore::new(clients.dynamodb.clone(), &s.resources.table),
            reports: S3Archive::new(clients.s3.clone(), &s.resources.bucket),
            topic: SnsTopic::new(clients.sns.clone(), &s.alarm_topic_arn),
            bucket: s.resources.bucket.clone(),
            region: s.aws.region.clone(),
            table: s.resources.table.clone(),
            overdue_after: chrono::Duration::hours(i64::from(s.overdue_after_hours)),
            sellers: s.seller_nips.clone(),
            credential_facts: DynamoSharedCache::new(clients.dynamodb.clone(), &s.resources.table),
        }
    }
}

/// Decodes the schedule's event and runs its job.
pub async fn handle(event: serde_json::Value, deps: &ReportDeps, now: DateTime<Utc>) -> Result<JobOutcome, String> {
    let event: ReportEvent = serde_json::from_value(event)
        .map_err(|e| format!("not a report event ({e}); expected {{\"kind\":\"snapshot\"}} or {{\"kind\":\"weekly\"}}"))?;
    let links = relay_report::status_page::s3_console_links(deps.bucket.clone(), deps.region.clone());
    let bucket = deps.bucket.clone();
    let location = move |key: &str| format!("s3://{bucket}/{key}");
    let cfg = JobConfig {
        overdue_after: deps.overdue_after,
        source: format!("table {}", deps.table),
        links: &links,
        location: &location,
        sellers: &deps.sellers,
        credential_facts: &deps.credential_facts,
    };
    jobs::run(&event, &deps.store, &deps.reports, &Topic(&deps.topic), &cfg, now)
        .await
        .map_err(|e: JobError| e.to_string())
}
