//! Microseconds per official sample invoice: the full validator (XSD + business rules) and
//! the schema-only mode, each sample on its own. Compare with `bench/lxml_bench.py`, which
//! times libxml2 (via lxml) on the same files with the schema preloaded.
//!
//! Run: `cargo bench -p relay-fa3 --bench validate`.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use relay_fa3::{validate_with, ValidateOptions};

fn samples() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/ksef/samples");
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    v.sort();
    v
}

fn bench(c: &mut Criterion) {
    let samples = samples();
    // Compile the schema outside the measurement (it happens once per process).
    assert!(samples
        .iter()
        .all(|(_, b)| validate_with(b, &ValidateOptions::default()).is_schema_valid()));
    let total: usize = samples.iter().map(|(_, b)| b.len()).sum();
    for (mode, schema_only) in [("full", false), ("schema_only", true)] {
        let opts = ValidateOptions {
            schema_only,
            today: relay_fa3::NaiveDate::from_ymd_opt(2026, 11, 1),
        };
        let mut g = c.benchmark_group(format!("validate_{mode}"));
        // One iteration validates all 12 samples; per-invoice time is that divided by 12.
        g.throughput(Throughput::Elements(samples.len() as u64));
        g.bench_function(BenchmarkId::new("all_12_samples", total), |b| {
            b.iter(|| {
                for (_, bytes) in &samples {
                    std::hint::black_box(validate_with(std::hint::black_box(bytes), &opts));
                }
            })
        });
        g.finish();
    }
    let mut g = c.benchmark_group("validate_one");
    let opts = ValidateOptions {
        schema_only: false,
        today: relay_fa3::NaiveDate::from_ymd_opt(2026, 11, 1),
    };
    for (name, bytes) in samples.iter().filter(|(n, _)| n.ends_with("_1.xml") || n.ends_with("_24.xml")) {
        g.bench_function(name.as_str(), |b| b.iter(|| validate_with(std::hint::black_box(bytes), &opts)));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
