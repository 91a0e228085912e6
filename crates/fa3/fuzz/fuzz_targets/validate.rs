//! Arbitrary bytes into the validator: it must never panic, and it must always say something
//! about a document it refuses. Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run validate` in crates/fa3.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_fa3::{validate_with, ValidateOptions};

fuzz_target!(|data: &[u8]| {
    let opts = ValidateOptions {
        schema_only: false,
        today: chrono_free_today(),
    };
    let report = validate_with(data, &opts);
    // A refusal always carries a reason and a line.
    for f in &report.findings {
        assert!(!f.message_en.is_empty() && !f.message_pl.is_empty() && f.line >= 1);
    }
    let _ = relay_fa3::read_identity(data);
});

fn chrono_free_today() -> Option<relay_fa3::NaiveDate> {
    relay_fa3::NaiveDate::from_ymd_opt(2026, 6, 1)
}
