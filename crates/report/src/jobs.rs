//! The report function's two jobs, against the ports: the store to read, the archive to write
//! the pages under `reports/`, and a [`Notifier`] for the weekly summary (SNS in AWS).

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use relay_domain::ports::{Archive, ArchiveError, DocumentQueries, DocumentRegistry, ObjectBody, SharedCache, StoreError};
use relay_domain::Nip;
use serde::Deserialize;

use crate::metrics::Levels;
use crate::snapshot::{self, SnapshotLimits};
use crate::status_page::{self, PageContext};
use crate::weekly::{Week, WeeklyReport};

/// Where the status page lives in the bucket.
pub const STATUS_PAGE_KEY: &str = "reports/status/index.html";

/// The weekly report's keys for `week`: (`.html`, `.csv`).
pub fn weekly_keys(week: &Week) -> (String, String) {
    let l = week.label();
    (format!("reports/weekly/{l}.html"), format!("reports/weekly/{l}.csv"))
}

/// The event an EventBridge schedule sends.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReportEvent {
    /// Every 15 minutes: the status page and the business and regulatory metrics.
    Snapshot,
    /// Weekly: the past week's report and its summary to the alarm topic. `week_of` (an instant)
    /// picks another week than the last complete one.
    Weekly {
        #[serde(default)]
        week_of: Option<DateTime<Utc>>,
    },
}

/// Publishes a short text to people (the alarm topic).
#[async_trait]
pub trait Notifier: Send + Sync {
    async fn publish(&self, subject: &str, message: &str) -> Result<(), String>;
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("publishing the summary failed: {0}")]
    Notify(String),
}

/// What the jobs need besides the ports.
pub struct JobConfig<'a> {
    pub overdue_after: Duration,
    /// Where the documents come from, for the page's header.
    pub source: String,
    pub links: status_page::Links<'a>,
    /// How to point people at the weekly report (an `s3://` URL, a path).
    pub location: &'a dyn Fn(&str) -> String,
    /// The sellers whose KSeF logins the snapshot shows and measures ...
    pub sellers: &'a [Nip],
    /// ... from the facts recorded here (the shared cache; read only), where KSeF's
    /// availability is read too.
    pub credential_facts: &'a dyn SharedCache,
}

/// What a job did, for the function's answer and log line.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct JobOutcome {
    pub kind: &'static str,
    pub written: Vec<String>,
    pub documents: usize,
    pub page_bytes: usize,
}

/// Reads the store and the sellers' recorded login facts, writes the status page and emits the
/// metric lines (`CredentialDaysLeft` for each seller with facts among them).
pub async fn snapshot<S: DocumentRegistry + DocumentQueries + ?Sized>(
    store: &S,
    out: &dyn Archive,
    cfg: &JobConfig<'_>,
    now: DateTime<Utc>,
) -> Result<JobOutcome, JobError> {
    let snap = snapshot::take(store, now, SnapshotLimits::default()).await?;
    // The declared outages move offline invoices' deadlines: read before the levels.
    let availability = crate::availability::read(cfg.credential_facts, now).await?;
    let declared: Vec<relay_domain::FailureWindow> = availability.iter().flat_map(|a| a.declared_failures().to_vec()).collect();
    let levels = Levels::compute_with(&snap, cfg.overdue_after, &declared);
    levels.emit(now);
    let credentials = crate::credentials::read(cfg.credential_facts, cfg.sellers, now).await?;
    crate::credentials::emit(&credentials, now);
    let page = status_page::render(
        &snap,
        &PageContext {
            title: "ksef-relay status",
            source: &cfg.source,
            levels: &levels,
            links: cfg.links,
            credentials: &credentials,
            availability: &availability,
        },
    );
    let page_bytes = page.len();
    out.put(STATUS_PAGE_KEY, ObjectBody::new(page.into_bytes(), "text/html; charset=utf-8"))
        .await?;
    tracing::info!(
        documents = snap.documents.len(),
        page_bytes,
        overdue = levels.overdue,
        past_legal_deadline = levels.past_legal_deadline,
        sellers = credentials.len(),
        "status page written"
    );
    Ok(JobOutcome {
        kind: "snapshot",
        written: vec![STATUS_PAGE_KEY.to_owned()],
        documents: snap.documents.len(),
        page_bytes,
    })
}

/// Aggregates a week, writes its HTML and CSV, publishes the summary.
pub async fn weekly<S: DocumentRegistry + DocumentQueries + ?Sized>(
    store: &S,
    out: &dyn Archive,
    notifier: &dyn Notifier,
    cfg: &JobConfig<'_>,
    week: Week,
    now: DateTime<Utc>,
) -> Result<JobOutcome, JobError> {
    let docs = snapshot::take_window(store, week.from, week.to, 100_000).await?;
    let availability = crate::availability::read(cfg.credential_facts, now).await?;
    let report = WeeklyReport::build(&docs, week, now).with_availability(availability);
    let (html_key, csv_key) = weekly_keys(&week);
    let html = report.html();
    let page_bytes = html.len();
    out.put(&html_key, ObjectBody::new(html.into_bytes(), "text/html; charset=utf-8"))
        .await?;
    out.put(&csv_key, ObjectBody::new(report.csv().into_bytes(), "text/csv; charset=utf-8"))
        .await?;
    let summary = report.summary(&(cfg.location)(&html_key));
    notifier
        .publish(&format!("ksef-relay weekly report {}", week.label()), &summary)
        .await
        .map_err(JobError::Notify)?;
    tracing::info!(week = %week.label(), documents = docs.len(), "weekly report written and published");
    Ok(JobOutcome {
        kind: "weekly",
        written: vec![html_key, csv_key],
        documents: docs.len(),
        page_bytes,
    })
}

/// Runs the job an event names.
pub async fn run<S: DocumentRegistry + DocumentQueries + ?Sized>(
    event: &ReportEvent,
    store: &S,
    out: &dyn Archive,
    notifier: &dyn Notifier,
    cfg: &JobConfig<'_>,
    now: DateTime<Utc>,
) -> Result<JobOutcome, JobError> {
    match event {
        ReportEvent::Snapshot => snapshot(store, out, cfg, now).await,
        ReportEvent::Weekly { week_of } => {
            let week = match week_of {
                Some(t) => Week::containing(*t),
                None => Week::previous(now),
            };
            weekly(store, out, notifier, cfg, week, now).await
        }
    }
}
