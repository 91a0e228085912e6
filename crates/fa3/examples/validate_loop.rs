//! One timing round of relay-fa3 on the official samples, for `scripts/validate_bench.py`,
//! which runs it interleaved with libxml2 (`crates/fa3/bench/lxml_bench.py --json`) and prints
//! the ratio.
//!
//! Validates every sample in `data/ksef/samples` (sorted by name) in both modes, the full
//! validator (XSD + business rules) and `schema_only`, after a warm-up that also compiles the
//! schema; each mode is timed over `batches` batches of `loops` passes over all samples (the
//! modes' batches alternating), and the median batch is printed as microseconds per invoice, one
//! JSON object on stdout.
//!
//! `cargo run --release -p relay-fa3 --example validate_loop -- [loops] [batches]`
//!
//! With `--callgrind LOOPS [schema-only]` it runs LOOPS passes of one mode inside `measured`
//! and prints nothing: for `valgrind --tool=callgrind --toggle-collect='*measured*'`, whose
//! instruction count divided by LOOPS × samples is the cost of one invoice, schema compilation
//! and the first-call warm-up excluded.

use std::path::PathBuf;
use std::time::Instant;

use relay_fa3::{validate_with, NaiveDate, ValidateOptions};

fn samples() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/ksef/samples");
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("data/ksef/samples")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .map(|p| {
            (
                p.file_name().unwrap_or_default().to_string_lossy().into_owned(),
                std::fs::read(&p).expect("sample"),
            )
        })
        .collect();
    v.sort();
    v
}

fn opts(schema_only: bool) -> ValidateOptions {
    ValidateOptions {
        schema_only,
        today: NaiveDate::from_ymd_opt(2026, 11, 1),
    }
}

/// Nanoseconds this thread has spent on a CPU (Linux schedstat), when the kernel tells.
fn cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One batch: `loops` passes over all samples; µs per invoice, wall clock and on-CPU time
/// (the latter leaves out the time other processes had the core, on a shared machine).
fn batch(samples: &[(String, Vec<u8>)], o: &ValidateOptions, loops: usize) -> (f64, f64) {
    let (t, c) = (Instant::now(), cpu_ns());
    for _ in 0..loops {
        for (_, bytes) in samples {
            std::hint::black_box(validate_with(std::hint::black_box(bytes), o));
        }
    }
    let n = (loops * samples.len()) as f64;
    let wall = t.elapsed().as_secs_f64() * 1e6 / n;
    let cpu = match (c, cpu_ns()) {
        (Some(a), Some(b)) => (b - a) as f64 / 1e3 / n,
        _ => wall,
    };
    (wall, cpu)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The region callgrind counts (`--toggle-collect='*measured*'`).
#[inline(never)]
fn measured(samples: &[(String, Vec<u8>)], o: &ValidateOptions, loops: usize) {
    for _ in 0..loops {
        for (_, bytes) in samples {
            std::hint::black_box(validate_with(std::hint::black_box(bytes), o));
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let samples = samples();
    assert!(!samples.is_empty(), "no samples");
    // Every sample must be valid, or the timing would be of the error path.
    for (name, bytes) in &samples {
        let r = validate_with(bytes, &opts(false));
        assert!(r.is_schema_valid(), "{name} is not schema-valid: {:?}", r.findings);
    }
    if args.first().map(String::as_str) == Some("--callgrind") {
        let loops: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
        measured(&samples, &opts(args.get(2).is_some_and(|a| a == "schema-only")), loops);
        return;
    }
    let loops: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(100);
    let batches: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    // Warm-up: caches, allocator, branch predictors.
    batch(&samples, &opts(false), loops.div_ceil(4));
    // The two modes' batches alternate, so a change in the machine's load hits both alike.
    let (mut full, mut schema_only) = (Vec::new(), Vec::new());
    for _ in 0..batches {
        full.push(batch(&samples, &opts(false), loops));
        schema_only.push(batch(&samples, &opts(true), loops));
    }
    let wall = |v: &[(f64, f64)]| median(v.iter().map(|x| x.0).collect());
    let cpu = |v: &[(f64, f64)]| median(v.iter().map(|x| x.1).collect());
    println!(
        "{{\"impl\":\"relay-fa3\",\"samples\":{},\"full_us\":{:.2},\"schema_only_us\":{:.2},\"full_cpu_us\":{:.2},\"schema_only_cpu_us\":{:.2}}}",
        samples.len(),
        wall(&full),
        wall(&schema_only),
        cpu(&full),
        cpu(&schema_only)
    );
}
