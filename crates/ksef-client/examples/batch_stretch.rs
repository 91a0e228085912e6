//! Measures the batch builder's longest synchronous stretch: the time of each `add` and of
//! `finish`, in both passes (declare, then build again as the upload does), for N distinct
//! invoices made as `ksef-relay load` makes them (the Ministry's sample 1, each with its own
//! P_2). In the local driver several sellers' batches run in one task, so the longest of these
//! is how long the other sellers' KSeF calls can stay unpolled.
//!
//! `cargo run -p ksef-client --example batch_stretch -- [invoices] [part_size_bytes]`
//! (a debug build is the case that matters: `ksef-relay load` in debug meets the client timeout)

use std::sync::Arc;
use std::time::{Duration, Instant};

use ksef_client::{BatchPlanner, SessionKey};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2_000);
    let part_size: usize = args
        .get(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(ksef_client::batch::MAX_PART_SIZE);
    let sample = String::from_utf8(include_bytes!("../../../data/ksef/samples/FA_3_Przykład_1.xml").to_vec()).unwrap();
    let invoice = |i: usize| {
        sample
            .replacen("<P_2>FV2026/02/150</P_2>", &format!("<P_2>LOAD/{i:07}</P_2>"), 1)
            .into_bytes()
    };
    let key = Arc::new(SessionKey::generate());

    let mut planner = BatchPlanner::new(key, part_size);
    let mut longest_add = Duration::ZERO;
    for i in 0..n {
        let bytes = invoice(i);
        let t = Instant::now();
        planner.add(&format!("{i}.xml"), &bytes).unwrap();
        longest_add = longest_add.max(t.elapsed());
    }
    let t = Instant::now();
    let plan = planner.finish().unwrap();
    let declare_finish = t.elapsed();

    let mut b = plan.builder();
    let mut longest_upload_add = Duration::ZERO;
    for i in 0..n {
        let bytes = invoice(i);
        let t = Instant::now();
        b.add(&format!("{i}.xml"), &bytes).unwrap();
        longest_upload_add = longest_upload_add.max(t.elapsed());
        for p in b.take_ready() {
            plan.check(&p).unwrap();
        }
    }
    let t = Instant::now();
    let (rest, ..) = b.finish().unwrap();
    let upload_finish = t.elapsed();
    for p in rest {
        plan.check(&p).unwrap();
    }
    println!(
        "{n} invoices -> archive {} bytes in {} part(s) of <= {part_size} bytes",
        plan.file_size,
        plan.parts.len()
    );
    println!(
        "declare: longest add {:.1} ms, finish {:.1} ms; upload pass: longest add {:.1} ms, finish {:.1} ms",
        longest_add.as_secs_f64() * 1e3,
        declare_finish.as_secs_f64() * 1e3,
        longest_upload_add.as_secs_f64() * 1e3,
        upload_finish.as_secs_f64() * 1e3
    );
}
