//! Measures the batch builder's memory for N distinct invoices (default 10,000, from the official
//! sample FA(3) with an attachment, each with its own P_2): both passes (declare, then build again
//! part by part as the upload does, each part dropped when "sent"), the builder's own peak of
//! archive bytes held, and the process's peak resident set (VmHWM) before and after.
//!
//! `cargo run --release -p ksef-client --example batch_memory -- [invoices] [part_size_bytes]`

use std::sync::Arc;
use std::time::Instant;

use ksef_client::{BatchPlanner, SessionKey};

fn vm_hwm_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let part_size: usize = args
        .get(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(ksef_client::batch::MAX_PART_SIZE);
    let sample = String::from_utf8(include_bytes!("../../../data/ksef/samples/FA_3_Przykład_24.xml").to_vec()).unwrap();
    // Made one at a time, as the pipeline reads each member's bytes from the archive.
    let invoice = |i: usize| {
        sample
            .replace("<P_2>FV2026/02/150</P_2>", &format!("<P_2>MEM/{i:06}</P_2>"))
            .into_bytes()
    };
    let rss_start = vm_hwm_kb();
    let t = Instant::now();
    let key = Arc::new(SessionKey::generate());
    let mut planner = BatchPlanner::new(key, part_size);
    let mut input = 0u64;
    for i in 0..n {
        let bytes = invoice(i);
        input += bytes.len() as u64;
        planner.add(&format!("{i}.xml"), &bytes).unwrap();
    }
    let plan = planner.finish().unwrap();
    let declared = t.elapsed();
    let mut b = plan.builder();
    let mut uploaded = 0u64;
    for i in 0..n {
        b.add(&format!("{i}.xml"), &invoice(i)).unwrap();
        for p in b.take_ready() {
            plan.check(&p).unwrap();
            uploaded += p.bytes.len() as u64;
        }
    }
    let (rest, ..) = b.finish().unwrap();
    for p in rest {
        plan.check(&p).unwrap();
        uploaded += p.bytes.len() as u64;
    }
    println!(
        "{n} invoices, {input} bytes of XML -> archive {} bytes in {} part(s) of <= {part_size} bytes; {uploaded} encrypted bytes",
        plan.file_size,
        plan.parts.len()
    );
    println!(
        "builder peak held: {} bytes; process VmHWM: {} kB at start, {} kB at end; declare {:.2} s, both passes {:.2} s",
        plan.peak_buffered,
        rss_start,
        vm_hwm_kb(),
        declared.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
}
