//! `ksef-relay`: one command-line tool for everything a user does with the relay by hand.
//!
//! - `run`: the local job over the bundled sample invoices (or your own files), with a progress
//!   bar and a final table. Today it runs the intake half of the pipeline for real (identity,
//!   archive, idempotent registration, send queue, claim); sending to KSeF arrives with the
//!   pipeline issue.

mod bundled_samples;
mod run_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ksef-relay",
    version,
    about = "Deliver FA(3) invoices to KSeF reliably: local runs and diagnostics"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the relay locally over the bundled sample invoices (or --input files) and print a table.
    Run(run_cmd::RunArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
