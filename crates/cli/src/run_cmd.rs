//! `ksef-relay run`: the relay on one machine, over the bundled samples or your files.
//!
//! What runs today is the intake half of the pipeline, for real: each invoice's identity is
//! read, its exact bytes archived by hash, the document registered with one conditional write
//! (a repeat is a no-op, other content under the same identity a conflict), and a send request
//! queued; then the send stage's first step claims each queued document with a lease. Sending
//! to KSeF (the simulator by default) joins when the pipeline issue lands; the table says so.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::Utc;
use clap::Args;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use indicatif::{ProgressBar, ProgressStyle};
use relay_aws::settings::AwsSettings;
use relay_aws::{provision, AwsClients, DynamoDocumentStore, S3Archive, SqsQueue};
use relay_domain::memory::{MemoryArchive, MemoryDocumentStore, MemoryQueue};
use relay_domain::ports::{Archive, DocumentStore, Queue, StoreError};
use relay_domain::{ClaimPurpose, DocumentKey, ErpDocumentId, SystemClock};
use relay_pipeline::intake::{intake, IntakeOutcome, IntakePorts, Upload};
use relay_pipeline::messages::SendRequest;

use crate::bundled_samples::SAMPLES;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Invoice files or directories of *.xml to run instead of the bundled samples.
    #[arg(long = "input", value_name = "PATH")]
    inputs: Vec<PathBuf>,
    /// Use the AWS API at this URL (e.g. a local moto server) instead of in-memory stores;
    /// a fresh table, queues and bucket are created for the run.
    #[arg(long, env = "KSEF_RELAY_AWS_ENDPOINT", value_name = "URL")]
    aws_endpoint: Option<String>,
    /// The AWS region for --aws-endpoint.
    #[arg(long, env = "AWS_REGION", default_value = "eu-central-1")]
    region: String,
    /// Where to write the run's report (report.json) and, with in-memory stores, the archive.
    #[arg(long, default_value = "local-run")]
    out: PathBuf,
}

struct Ports {
    store: Box<dyn DocumentStore>,
    archive: Box<dyn Archive>,
    send_queue: Box<dyn Queue>,
    corrections_queue: Box<dyn Queue>,
    memory_archive: Option<Arc<MemoryArchive>>,
    description: String,
}

/// Lets a shared in-memory archive be both a port and readable afterwards.
struct SharedArchive(Arc<MemoryArchive>);

#[async_trait::async_trait]
impl Archive for SharedArchive {
    async fn put_if_absent(
        &self,
        key: &str,
        body: relay_domain::ports::ObjectBody,
    ) -> Result<relay_domain::ports::PutOutcome, relay_domain::ports::ArchiveError> {
        self.0.put_if_absent(key, body).await
    }
    async fn put(&self, key: &str, body: relay_domain::ports::ObjectBody) -> Result<(), relay_domain::ports::ArchiveError> {
        self.0.put(key, body).await
    }
    async fn get(&self, key: &str) -> Result<Option<relay_domain::ports::ObjectBody>, relay_domain::ports::ArchiveError> {
        self.0.get(key).await
    }
}

async fn build_ports(args: &RunArgs) -> Result<Ports> {
    match &args.aws_endpoint {
        None => {
            let archive = Arc::new(MemoryArchive::new());
            let (send, _dlq) = MemoryQueue::with_dlq("send", 5, Arc::new(SystemClock));
            let (corrections, _dlq) = MemoryQueue::with_dlq("corrections", 5, Arc::new(SystemClock));
            Ok(Ports {
                store: Box::new(MemoryDocumentStore::new()),
                archive: Box::new(SharedArchive(archive.clone())),
                send_queue: Box::new(send),
                corrections_queue: Box::new(corrections),
                memory_archive: Some(archive),
                description: "in-memory stores".into(),
            })
        }
        Some(endpoint) => {
            let clients = AwsClients::new(&AwsSettings {
                region: args.region.clone(),
                endpoint_url: Some(endpoint.clone()),
            })
            .await;
            let run = format!("ksef-relay-local-{:06x}", rand_suffix());
            provision::create_documents_table(&clients.dynamodb, &run).await?;
            provision::create_bucket(&clients.s3, &run, &args.region).await?;
            let pair = provision::create_queue_with_dlq(&clients.sqs, &format!("{run}-send"), 5, Duration::from_secs(180)).await?;
            let corrections =
                provision::create_queue_with_dlq(&clients.sqs, &format!("{run}-corrections"), 5, Duration::from_secs(180)).await?;
            Ok(Ports {
                store: Box::new(DynamoDocumentStore::new(clients.dynamodb.clone(), &run)),
                archive: Box::new(S3Archive::new(clients.s3.clone(), &run)),
                send_queue: Box::new(SqsQueue::new(clients.sqs.clone(), pair.url)),
                corrections_queue: Box::new(SqsQueue::new(clients.sqs.clone(), corrections.url)),
                memory_archive: None,
                description: format!("AWS API at {endpoint} (table, bucket and queue {run}*)"),
            })
        }
    }
}

fn rand_suffix() -> u32 {
    (Utc::now().timestamp_subsec_nanos() ^ std::process::id().rotate_left(13)) & 0xFF_FFFF
}

/// (display name, ERP id, bytes)
fn load_inputs(inputs: &[PathBuf]) -> Result<Vec<(String, Vec<u8>)>> {
    if inputs.is_empty() {
        return Ok(SAMPLES.iter().map(|(name, bytes)| (name.to_string(), bytes.to_vec())).collect());
    }
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(input)
                .with_context(|| format!("reading directory {}", input.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("xml")))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(input.clone());
        }
    }
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
            Ok((
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| p.display().to_string()),
                bytes,
            ))
        })
        .collect()
}

fn bar(len: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:32}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_prefix(what.to_owned());
    pb
}

struct Row {
    file: String,
    key: Option<DocumentKey>,
    /// Whether this file is the one the stored record describes (not a repeat or a conflict).
    owns_record: bool,
    intake: String,
    claim: String,
    trace: String,
}

pub async fn run(args: RunArgs) -> Result<ExitCode> {
    let inputs = load_inputs(&args.inputs)?;
    let ports = build_ports(&args).await?;
    println!("ksef-relay run: {} invoice(s), {}", inputs.len(), ports.description);
    let intake_ports = IntakePorts {
        store: ports.store.as_ref(),
        archive: ports.archive.as_ref(),
        send_queue: ports.send_queue.as_ref(),
        corrections_queue: ports.corrections_queue.as_ref(),
    };

    let pb = bar(inputs.len(), "intake");
    let mut rows = Vec::new();
    for (name, bytes) in &inputs {
        pb.set_message(name.clone());
        let stem = name.strip_suffix(".xml").unwrap_or(name);
        let erp = ErpDocumentId::parse(stem).with_context(|| format!("{name} cannot serve as an ERP document id"))?;
        let upload = Upload {
            bytes,
            source_key: format!("local/{name}"),
            erp_document_id: erp,
            expected_seller: None,
            trace_id: None,
        };
        let outcome = intake(&intake_ports, upload, Utc::now())
            .await
            .with_context(|| format!("intake of {name}"))?;
        let (key, owns_record, text, trace) = match &outcome {
            IntakeOutcome::Queued(r) => (Some(r.key.clone()), true, "registered, queued".to_owned(), r.trace_id.to_string()),
            IntakeOutcome::Resubmitted(r) => (
                Some(r.key.clone()),
                true,
                "corrected file replaced a rejected one, queued".to_owned(),
                r.trace_id.to_string(),
            ),
            IntakeOutcome::Rejected(r) => {
                let why = r.last_error.as_ref().map(|f| f.message.clone()).unwrap_or_default();
                (Some(r.key.clone()), true, format!("REJECTED: {why}"), r.trace_id.to_string())
            }
            IntakeOutcome::Repeat(r) => (
                Some(r.key.clone()),
                false,
                "repeat of a registered file: nothing to do".to_owned(),
                r.trace_id.to_string(),
            ),
            IntakeOutcome::Conflict { existing, .. } => (
                Some(existing.key.clone()),
                false,
                format!(
                    "CONFLICT: {} has this identity with other content; not sent",
                    existing.erp_document_id
                ),
                String::new(),
            ),
            IntakeOutcome::NotRegistered(f) => {
                let why: Vec<&str> = f.iter().map(|f| f.message.as_str()).collect();
                (None, false, format!("not registered: {}", why.join("; ")), String::new())
            }
        };
        rows.push(Row {
            file: name.clone(),
            key,
            owns_record,
            intake: text,
            claim: String::new(),
            trace,
        });
        pb.inc(1);
    }
    pb.finish_with_message("done");

    // The send stage's first step: take each queued document with a lease.
    let queued = ports.send_queue.stats().await?.visible;
    let pb = bar(queued as usize, "claim");
    loop {
        let batch = ports.send_queue.receive(10, Duration::from_secs(300), Duration::ZERO).await?;
        if batch.is_empty() {
            break;
        }
        for m in batch {
            let req = SendRequest::from_json(&m.body).context("a send request on the queue")?;
            let result = ports
                .store
                .claim(
                    &req.document,
                    ClaimPurpose::Send,
                    "local-runner",
                    Utc::now(),
                    Duration::from_secs(300),
                )
                .await;
            let text = match result {
                Ok(r) => format!(
                    "claimed (lease until {}, version {})",
                    r.lease.map(|l| l.until.format("%H:%M:%S").to_string()).unwrap_or_default(),
                    r.version
                ),
                Err(StoreError::Claim(refused)) => format!("not claimed: {refused}"),
                Err(e) => return Err(e.into()),
            };
            for row in rows.iter_mut().filter(|r| r.owns_record && r.key.as_ref() == Some(&req.document)) {
                row.claim = text.clone();
            }
            pb.inc(1);
        }
    }
    pb.finish_with_message("done");

    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "file",
        "seller NIP",
        "kind",
        "P_2",
        "state",
        "intake",
        "send stage",
        "trace id",
    ]);
    let mut report = Vec::new();
    for row in &rows {
        let doc = match &row.key {
            Some(k) if row.owns_record => ports.store.get(k).await?,
            _ => None,
        };
        let state = doc
            .as_ref()
            .map(|d| format!("{} ({})", d.record.state, d.record.state.label_pl()))
            .unwrap_or_else(|| "-".into());
        let (nip, kind, number) = row
            .key
            .as_ref()
            .map(|k| (k.seller_nip.to_string(), k.kind.to_string(), k.invoice_number.to_string()))
            .unwrap_or_default();
        table.add_row(vec![
            row.file.clone(),
            nip,
            kind,
            number,
            state,
            row.intake.clone(),
            row.claim.clone(),
            row.trace.clone(),
        ]);
        report.push(serde_json::json!({
            "file": row.file, "intake": row.intake, "send_stage": row.claim,
            "document": doc.as_ref().map(|d| serde_json::json!({"record": d.record, "history": d.history})),
        }));
    }
    println!("{table}");
    println!("Sending to KSeF is not part of `run` yet: the send, status and dlq-replay stages arrive with the pipeline issue.");

    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let report_path = args.out.join("report.json");
    std::fs::write(&report_path, serde_json::to_vec_pretty(&report)?).with_context(|| format!("writing {}", report_path.display()))?;
    if let Some(archive) = &ports.memory_archive {
        for (key, body) in archive.snapshot() {
            let path = args.out.join(&key);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&path, &body.bytes).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    println!("Report: {} (every document's record and history)", report_path.display());
    Ok(ExitCode::SUCCESS)
}
