//! `ksef-relay resolve ID` and `ksef-relay send-again ID`: a person's decision on one document
//! in the relay's DynamoDB table (in AWS, or at `--aws-endpoint`), the same use cases as
//! dlq-replay's `resolve` and `send_again` events (`relay_pipeline::resolve`).
//!
//! The CLI holds no KSeF token, so for `--decision ours` it cannot fetch the original's UPO: the
//! person gives the acquisition date KSeF shows (`--acquisition-date`), and the status function
//! fetches the UPO. dlq-replay's `resolve` event fetches it at once and takes KSeF's date.
//! There is no local-store variant: a `ksef-relay run` keeps its store in memory and ends.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use relay_aws::settings::AwsSettings;
use relay_aws::{AwsClients, DynamoDocumentStore, S3Archive, SqsQueue};
use relay_domain::{KsefNumber, KsefReference};
use relay_pipeline::resolve::{resolve_conflict, send_again, Decision, DecisionPorts, DecisionReport, ResolveRequest, SendAgainRequest};

/// Where the relay lives: the stack's table, bucket and queues (the functions' own variables).
#[derive(Debug, Args)]
pub struct Stack {
    #[arg(long, env = "DOCUMENTS_TABLE")]
    table: String,
    /// The archive bucket (the ERP's outbox is written there).
    #[arg(long, env = "ARCHIVE_BUCKET")]
    bucket: String,
    #[arg(long, env = "SEND_QUEUE_URL")]
    send_queue_url: String,
    #[arg(long, env = "STATUS_QUEUE_URL")]
    status_queue_url: String,
    /// The AWS API at this URL instead of AWS (e.g. a local moto server).
    #[arg(long, env = "KSEF_RELAY_AWS_ENDPOINT", value_name = "URL")]
    aws_endpoint: Option<String>,
    #[arg(long, env = "AWS_REGION", default_value = "eu-central-1")]
    region: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DecisionArg {
    /// The KSeF original is this invoice: ACCEPTED under its number.
    Ours,
    /// Send it again: KSeF answers again and the duplicate is proven anew.
    Recheck,
    /// It will not be sent: REJECTED (WITHDRAWN).
    Withdraw,
}

#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// The document: ERP document id, trace id, KSeF number or invoice number (P_2).
    id: String,
    #[arg(long, value_enum)]
    decision: DecisionArg,
    /// Who decides (kept in the history).
    #[arg(long)]
    by: String,
    /// Why (kept in the history).
    #[arg(long)]
    reason: String,
    /// For ours: the original's KSeF number (default: the one KSeF's 440 named).
    #[arg(long)]
    ksef_number: Option<KsefNumber>,
    /// For ours: the session that holds the original (default: the one KSeF's 440 named).
    #[arg(long)]
    original_session: Option<KsefReference>,
    /// For ours: the acquisition date KSeF shows for the original (RFC 3339).
    #[arg(long)]
    acquisition_date: Option<DateTime<Utc>>,
    /// Say what would happen; change nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    stack: Stack,
}

#[derive(Debug, Args)]
pub struct SendAgainArgs {
    /// The document: ERP document id, trace id, KSeF number or invoice number (P_2).
    id: String,
    #[arg(long)]
    by: String,
    #[arg(long)]
    reason: String,
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    stack: Stack,
}

struct Opened {
    store: DynamoDocumentStore,
    archive: S3Archive,
    send_queue: SqsQueue,
    status_queue: SqsQueue,
}

impl Opened {
    async fn new(s: &Stack) -> Self {
        let clients = AwsClients::new(&AwsSettings {
            region: s.region.clone(),
            endpoint_url: s.aws_endpoint.clone(),
        })
        .await;
        Opened {
            store: DynamoDocumentStore::new(clients.dynamodb.clone(), &s.table),
            archive: S3Archive::new(clients.s3.clone(), &s.bucket),
            send_queue: SqsQueue::new(clients.sqs.clone(), &s.send_queue_url),
            status_queue: SqsQueue::new(clients.sqs.clone(), &s.status_queue_url),
        }
    }

    fn ports(&self) -> DecisionPorts<'_, DynamoDocumentStore> {
        DecisionPorts {
            store: &self.store,
            archive: &self.archive,
            send_queue: &self.send_queue,
            status_queue: &self.status_queue,
        }
    }

    /// The one document `id` names, as `{nip}|{kind}|{P_2}`.
    async fn document(&self, id: &str) -> Result<String> {
        let found = relay_report::lookup::find(&self.store, id).await.context("reading the table")?;
        match found.as_slice() {
            [one] => Ok(one.record.key.storage_id()),
            [] => bail!("no document is named {id:?} (ERP id, trace id, KSeF number or invoice number)"),
            many => bail!(
                "{id:?} names {} documents ({}): use the invoice number",
                many.len(),
                many.iter().map(|d| d.record.key.to_string()).collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

fn print(report: &DecisionReport) -> ExitCode {
    println!(
        "{}{}: {:?}, now {}: {}",
        if report.dry_run { "(dry run) " } else { "" },
        report.document,
        report.outcome,
        report.state,
        report.detail
    );
    ExitCode::SUCCESS
}

pub async fn resolve(args: ResolveArgs) -> Result<ExitCode> {
    let opened = Opened::new(&args.stack).await;
    let req = ResolveRequest {
        document: opened.document(&args.id).await?,
        decision: match args.decision {
            DecisionArg::Ours => Decision::Ours,
            DecisionArg::Recheck => Decision::Recheck,
            DecisionArg::Withdraw => Decision::Withdraw,
        },
        by: args.by,
        reason: args.reason,
        ksef_number: args.ksef_number,
        original_session: args.original_session,
        acquisition_date: args.acquisition_date,
        dry_run: args.dry_run,
    };
    let report = resolve_conflict(&opened.ports(), None, &req, Utc::now()).await?;
    Ok(print(&report))
}

pub async fn send_again_cmd(args: SendAgainArgs) -> Result<ExitCode> {
    let opened = Opened::new(&args.stack).await;
    let req = SendAgainRequest {
        document: opened.document(&args.id).await?,
        by: args.by,
        reason: args.reason,
        dry_run: args.dry_run,
    };
    let report = send_again(&opened.ports(), &req, Utc::now()).await?;
    Ok(print(&report))
}
