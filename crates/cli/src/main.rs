//! `ksef-relay`: one command-line tool for everything a user does with the relay by hand.
//!
//! - `run`: the local job over the bundled sample invoices (or your own files), with a progress
//!   bar and a final table.
//! - `load --invoices N --sellers K`: the load test; `run`'s machinery over N generated
//!   invoices, reporting throughput, KSeF calls by kind, 429s, sessions and latency percentiles.
//! - `validate FILE...`: the FA(3) check (XSD-equal structure and business rules), for
//!   accountants and ERP teams' CI; exit code 0 valid, 1 invalid, 2 unreadable.
//! - `ksef ...`: talk to a KSeF environment (or the simulator) directly: auth check, send a
//!   file, status, UPO. The first thing to run when diagnosing a connection.
//! - `sim`: start the KSeF simulator.
//! - `status ID`: a document's whole history from the store (DynamoDB, or the last run's
//!   `store.json`), found by ERP document id, trace id, KSeF number or invoice number.
//! - `resolve ID --decision ours|recheck|withdraw` and `send-again ID`: a person's decision on a
//!   CONFLICT, or a REJECTED document not rejected for its content sent again (DynamoDB table).

mod counting_cache;
mod decide_cmd;
mod ksef_cmd;
mod load_cmd;
mod run_cmd;
mod run_reports;
mod sim_cmd;
mod status_cmd;
mod validate_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ksef-relay",
    version,
    about = "Deliver FA(3) invoices to KSeF reliably: local runs and diagnostics"
)]
struct Cli {
    /// Log lines as JSON objects (the Lambda functions' format) instead of text; RUST_LOG sets
    /// the level (warn by default).
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the relay locally over the bundled sample invoices (or --input files) and print a table.
    Run(run_cmd::RunArgs),
    /// The load test: N distinct generated invoices for K sellers through the whole relay and
    /// the simulator; reports throughput, KSeF calls by kind, 429s, sessions and latencies.
    Load(load_cmd::LoadArgs),
    /// Validate FA(3) invoice files (XSD-equal structure and business rules).
    Validate(validate_cmd::ValidateArgs),
    /// Talk to KSeF (TEST, DEMO, PROD or the simulator): auth check, send, status, UPO.
    #[command(subcommand)]
    Ksef(ksef_cmd::KsefCommand),
    /// Start the KSeF simulator.
    Sim(sim_cmd::SimArgs),
    /// Print a document's whole history: by ERP document id, trace id, KSeF number or invoice number.
    Status(status_cmd::StatusArgs),
    /// Resolve a CONFLICT as a person decided: ours (ACCEPTED under the original's number),
    /// recheck (send again, KSeF answers again), withdraw (REJECTED, never sent).
    Resolve(decide_cmd::ResolveArgs),
    /// Send again a REJECTED document whose rejection was not about its content.
    SendAgain(decide_cmd::SendAgainArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Diagnostics go to stderr, quiet unless RUST_LOG asks for more; tables and reports to stdout.
    // The format is the Lambda functions' own (relay-observe), as text or, with --log-json, JSON.
    let format = if cli.log_json {
        relay_observe::logging::LogFormat::Json
    } else {
        relay_observe::logging::LogFormat::Text
    };
    relay_observe::logging::init(format, "warn", std::io::stderr);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run_cmd::run(args).await,
            Command::Load(args) => load_cmd::run(args).await,
            Command::Validate(args) => validate_cmd::run(args),
            Command::Ksef(cmd) => ksef_cmd::run(cmd).await.map(|()| ExitCode::SUCCESS),
            Command::Sim(args) => sim_cmd::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Status(args) => status_cmd::run(args).await,
            Command::Resolve(args) => decide_cmd::resolve(args).await,
            Command::SendAgain(args) => decide_cmd::send_again_cmd(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
