//! `ksef-relay status ID`: a document's whole story from the store, found by its ERP document
//! id, trace id, KSeF number or invoice number.
//!
//! Which store: with `--table` the DynamoDB table (in AWS, or at `--aws-endpoint` such as a
//! local moto server); otherwise the snapshot the last `ksef-relay run` wrote to
//! `--from/store.json` (its in-memory store is gone when the run ends).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use relay_aws::settings::AwsSettings;
use relay_aws::{AwsClients, DynamoDocumentStore};
use relay_report::lookup;
use relay_report::snapshot::StoredDocument;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// ERP document id, trace id, KSeF number or invoice number (P_2).
    id: String,
    /// Read this DynamoDB documents table (the stack's DOCUMENTS_TABLE).
    #[arg(long, env = "DOCUMENTS_TABLE")]
    table: Option<String>,
    /// The AWS API at this URL instead of AWS (e.g. a local moto server), with --table.
    #[arg(long, env = "KSEF_RELAY_AWS_ENDPOINT", value_name = "URL")]
    aws_endpoint: Option<String>,
    #[arg(long, env = "AWS_REGION", default_value = "eu-central-1")]
    region: String,
    /// Without --table: the directory a `ksef-relay run` wrote (its store.json).
    #[arg(long, default_value = "local-run")]
    from: PathBuf,
}

pub async fn run(args: StatusArgs) -> Result<ExitCode> {
    let (found, place): (Vec<StoredDocument>, String) = match &args.table {
        Some(table) => {
            let clients = AwsClients::new(&AwsSettings {
                region: args.region.clone(),
                endpoint_url: args.aws_endpoint.clone(),
            })
            .await;
            let store = DynamoDocumentStore::new(clients.dynamodb.clone(), table);
            (lookup::find(&store, &args.id).await?, format!("table {table}"))
        }
        None => {
            let path = args.from.join(crate::run_reports::STORE_FILE);
            let bytes = std::fs::read(&path).with_context(|| {
                format!(
                    "reading {} (run `ksef-relay run` first, or name a DynamoDB table with --table)",
                    path.display()
                )
            })?;
            let docs: Vec<StoredDocument> = serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))?;
            let found = lookup::find_in(&docs, &args.id).into_iter().cloned().collect();
            (found, path.display().to_string())
        }
    };
    if found.is_empty() {
        println!(
            "No document in {place} is named {:?} (ERP id, trace id, KSeF number or invoice number).",
            args.id
        );
        return Ok(ExitCode::from(1));
    }
    for (i, d) in found.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print!("{}", lookup::story(d));
    }
    Ok(ExitCode::SUCCESS)
}
