//! Every finding of every file named on the command line, in both modes, one line each (code,
//! category, severity, path, line, Polish and English message), for `scripts/validate_findings_diff.py`,
//! which builds this on two commits and compares the outputs.
//!
//! `cargo run -p relay-fa3 --example findings_dump -- FILE...`

use relay_fa3::{validate_with, NaiveDate, ValidateOptions};

fn main() {
    let files: Vec<String> = std::env::args().skip(1).collect();
    for schema_only in [false, true] {
        let o = ValidateOptions {
            schema_only,
            today: NaiveDate::from_ymd_opt(2026, 11, 1),
        };
        for p in &files {
            let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{p}: {e}"));
            let r = validate_with(&bytes, &o);
            println!(
                "{p} schema_only={schema_only} valid={} schema_valid={}",
                r.is_valid(),
                r.is_schema_valid()
            );
            for f in &r.findings {
                println!(
                    "  {} {:?} {:?} {} {} | {:?} | {:?}",
                    f.code, f.category, f.severity, f.path, f.line, f.message_pl, f.message_en
                );
            }
        }
    }
}
