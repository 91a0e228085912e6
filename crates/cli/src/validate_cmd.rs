//! `ksef-relay validate FILE...`: the FA(3) check for accountants and for ERP teams' CI.
//!
//! Exit code: 0 when every file may be sent, 1 when at least one has an error (or, with
//! `--strict`, a warning), 2 when a file could not be read. Human-readable output by default
//! (Polish and English), one JSON document with `--json`.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::NaiveDate;
use relay_fa3::{validate_with, Report, Severity, ValidateOptions, MAX_SIZE_WITH_ATTACHMENTS};

#[derive(clap::Args, Debug, Clone)]
pub struct ValidateArgs {
    /// FA(3) invoice files to check.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Print one JSON document with every file's findings instead of text.
    #[arg(long)]
    pub json: bool,
    /// Only well-formedness, KSeF's file rules and the XSD (what xmllint checks); no business rules.
    #[arg(long)]
    pub schema_only: bool,
    /// Fail on warnings too.
    #[arg(long)]
    pub strict: bool,
    /// Check the issue date (P_1) against this day instead of today in Poland (YYYY-MM-DD).
    #[arg(long, value_name = "DATE")]
    pub today: Option<NaiveDate>,
}

enum Outcome {
    Checked(Report),
    Unreadable(String),
}

/// Reads at most one byte more than KSeF's largest size, so a huge file cannot exhaust memory;
/// the validator then reports it as too big.
fn read_capped(path: &PathBuf) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_SIZE_WITH_ATTACHMENTS as u64 + 1)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

pub fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let opts = ValidateOptions {
        schema_only: args.schema_only,
        today: args.today,
    };
    let results: Vec<(PathBuf, Outcome)> = args
        .files
        .iter()
        .map(|f| {
            let outcome = match read_capped(f) {
                Ok(bytes) => Outcome::Checked(validate_with(&bytes, &opts)),
                Err(e) => Outcome::Unreadable(e.to_string()),
            };
            (f.clone(), outcome)
        })
        .collect();

    let passes = |r: &Report| r.is_valid() && !(args.strict && r.findings.iter().any(|f| f.severity == Severity::Warning));
    let unreadable = results.iter().any(|(_, o)| matches!(o, Outcome::Unreadable(_)));
    let all_pass = results.iter().all(|(_, o)| matches!(o, Outcome::Checked(r) if passes(r)));

    if args.json {
        let files: Vec<serde_json::Value> = results
            .iter()
            .map(|(path, o)| match o {
                Outcome::Checked(r) => serde_json::json!({
                    "file": path.display().to_string(),
                    "valid": passes(r),
                    "schema_valid": r.is_schema_valid(),
                    "errors": r.findings.iter().filter(|f| f.severity == Severity::Error).count(),
                    "warnings": r.findings.iter().filter(|f| f.severity == Severity::Warning).count(),
                    "findings": serde_json::to_value(&r.findings).unwrap_or_default(),
                }),
                Outcome::Unreadable(e) => serde_json::json!({
                    "file": path.display().to_string(),
                    "valid": false,
                    "error": format!("cannot read the file: {e}"),
                }),
            })
            .collect();
        let doc = serde_json::json!({ "valid": all_pass && !unreadable, "files": files });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for (path, o) in &results {
            match o {
                Outcome::Unreadable(e) => println!("{}: NIE MOŻNA ODCZYTAĆ / CANNOT READ: {e}", path.display()),
                Outcome::Checked(r) if r.findings.is_empty() => println!("{}: OK", path.display()),
                Outcome::Checked(r) => {
                    let errors = r.findings.iter().filter(|f| f.severity == Severity::Error).count();
                    let warnings = r.findings.len() - errors;
                    let verdict = if passes(r) {
                        "OK (z ostrzeżeniami / with warnings)"
                    } else {
                        "BŁĘDY / ERRORS"
                    };
                    println!(
                        "{}: {verdict}: {errors} błąd(y)/error(s), {warnings} ostrzeżenie(a)/warning(s)",
                        path.display()
                    );
                    for f in &r.findings {
                        let sev = match f.severity {
                            Severity::Error => "błąd/error",
                            Severity::Warning => "ostrzeżenie/warning",
                        };
                        let place = if f.path.is_empty() {
                            String::new()
                        } else {
                            format!("  {}", f.path)
                        };
                        println!("  linia/line {}{place}  [{}] {sev}", f.line, f.code);
                        println!("    PL: {}", f.message_pl);
                        println!("    EN: {}", f.message_en);
                    }
                }
            }
        }
    }
    Ok(if unreadable {
        ExitCode::from(2)
    } else if all_pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
