//! `ksef-relay load`: the seeds' load test ("koniec miesiąca"), as a command. It makes N distinct
//! valid FA(3) invoices from the Ministry's sample 1 for K sellers, runs them through the whole
//! relay with `run`'s machinery (intake, the send and status stages, the sweeper; in memory or on
//! the AWS emulator) against the embedded KSeF simulator, and reports wall time, throughput, the
//! KSeF calls by kind (the simulator's operation counts), 429s met, sessions used, the latency
//! percentiles from intake to ACCEPTED and to the archived UPO, and whether the simulator's
//! ledger holds every invoice exactly once. It exits 1 when that last check fails.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use relay_domain::record::HistoryEvent;
use relay_domain::{DocumentState, Nip};
use serde_json::json;

use ksef_relay::bundled_samples;

use crate::counting_cache::CountingCache;
use crate::run_cmd::{self, RunArgs, SimSeller};

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// How many distinct invoices to send.
    #[arg(long, default_value_t = 100)]
    invoices: usize,
    /// Over how many sellers (KSeF contexts) to spread them, round robin. The first is the
    /// samples' NIP 9999999999; the others are made-up valid NIPs, each with its own token.
    #[arg(long, default_value_t = 1)]
    sellers: usize,
    /// Use the AWS API at this URL (e.g. a local moto server) instead of in-memory stores, as
    /// `run --aws-endpoint` does: files uploaded to the bucket's inbox, taken in from its
    /// notifications.
    #[arg(long, env = "KSEF_RELAY_AWS_ENDPOINT", value_name = "URL")]
    aws_endpoint: Option<String>,
    /// The AWS region for --aws-endpoint.
    #[arg(long, env = "AWS_REGION", default_value = "eu-central-1")]
    region: String,
    /// A simulator fault scenario, repeatable (see `ksef-relay sim --help`).
    #[arg(long = "fault", value_name = "SCENARIO")]
    faults: Vec<String>,
    /// Simulated seconds per real second in KSeF's rate-limit windows (the simulator's and the
    /// client's): 1 is production's limits in real time; 3600 lives an hour in a second.
    #[arg(long, default_value_t = 1.0)]
    sim_time_scale: f64,
    /// Give up waiting for KSeF's decisions after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// An attachment-free invoice goes online while its seller's online backlog lets it go out
    /// within this many seconds (of KSeF's time: divided by --sim-time-scale), else in batch.
    #[arg(long, env = "BATCH_TARGET_DELAY_SECONDS", default_value_t = 300)]
    batch_target_delay_secs: u64,
    /// The invoices' issue date (`P_1`, YYYY-MM-DD). By default today in Poland: a month end's
    /// invoices are sent on the day they are issued. An earlier date makes every invoice a late
    /// one: each gets its offline QR codes (KOD I, and KOD II with an Offline certificate) and an
    /// outbox result before it is sent.
    #[arg(long, value_name = "DATE")]
    issue_date: Option<chrono::NaiveDate>,
    /// Print the report as one JSON object on stdout (for scripts) instead of tables.
    #[arg(long)]
    json: bool,
}

/// `k` sellers: the samples' NIP 9999999999 with the simulator's default token, then made-up
/// NIPs (526000001x, the check digit computed) with a token each.
pub(crate) fn load_sellers(k: usize) -> Result<Vec<SimSeller>> {
    if k == 0 {
        bail!("--sellers must be at least 1");
    }
    let mut sellers = vec![run_cmd::sample_seller()?];
    let weights = [6u32, 5, 7, 2, 3, 4, 5, 6, 7];
    let mut prefix = 526_000_001u32;
    while sellers.len() < k {
        let digits: Vec<u32> = prefix.to_string().chars().map(|c| c.to_digit(10).unwrap_or(0)).collect();
        let check = digits.iter().zip(weights).map(|(d, w)| d * w).sum::<u32>() % 11;
        if check < 10 {
            let nip = Nip::parse(&format!("{prefix}{check}"))?;
            let token = format!("sim-load-token-{nip}");
            sellers.push((nip, token));
        }
        prefix += 1;
    }
    Ok(sellers)
}

/// `n` distinct invoices from sample 1 issued on `issued` (`P_1`): invoice `i` is seller
/// `i % K`'s (Podmiot1's NIP replaced) with P_2 `LOAD/{i}` (so KSeF's duplicate key and the
/// content hash differ); the file name `load-{i}.xml` is the ERP document id.
pub(crate) fn invoices(sellers: &[SimSeller], n: usize, issued: chrono::NaiveDate) -> Result<Vec<(String, Vec<u8>)>> {
    let (_, sample) = bundled_samples::SAMPLES
        .iter()
        .find(|(name, _)| *name == "FA_3_Przykład_1.xml")
        .context("sample 1 is bundled")?;
    let text = std::str::from_utf8(sample).context("sample 1 is UTF-8")?;
    let (p2, seller) = ("<P_2>FV2026/02/150</P_2>", "<NIP>9999999999</NIP>");
    // The first NIP must be Podmiot1's (the seller), not the buyer's.
    let seller_first = matches!((text.find(seller), text.find("<Podmiot2>")), (Some(s), Some(b)) if s < b);
    let p1 = "<P_1>2026-02-15</P_1>";
    if !text.contains(p2) || !text.contains(p1) || !seller_first {
        bail!("sample 1 no longer has the P_1, P_2 and seller NIP the load generator replaces");
    }
    let text = text.replacen(p1, &format!("<P_1>{issued}</P_1>"), 1);
    Ok((0..n)
        .map(|i| {
            let (nip, _) = &sellers[i % sellers.len()];
            let invoice = text
                .replacen(seller, &format!("<NIP>{nip}</NIP>"), 1)
                .replacen(p2, &format!("<P_2>LOAD/{i:07}</P_2>"), 1);
            (format!("load-{i:07}.xml"), invoice.into_bytes())
        })
        .collect())
}

/// Nearest-rank percentile of sorted values (None when empty).
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn latency_json(mut ms: Vec<f64>) -> serde_json::Value {
    ms.sort_by(f64::total_cmp);
    json!({
        "count": ms.len(),
        "p50": percentile(&ms, 50.0),
        "p95": percentile(&ms, 95.0),
        "p99": percentile(&ms, 99.0),
        "max": ms.last(),
    })
}

/// The KSeF operations a load run reports by name: (name, method, route template). Routes not
/// named here are still in the report's `operations` list and in `ksef_calls_total`.
const OPERATION_KINDS: &[(&str, &str, &str)] = &[
    ("auth_challenges", "POST", "/auth/challenge"),
    ("token_logins", "POST", "/auth/ksef-token"),
    ("certificate_logins", "POST", "/auth/xades-signature"),
    ("auth_status_polls", "GET", "/auth/{referenceNumber}"),
    ("token_redeems", "POST", "/auth/token/redeem"),
    ("token_refreshes", "POST", "/auth/token/refresh"),
    ("online_sessions_opened", "POST", "/sessions/online"),
    ("online_sends", "POST", "/sessions/online/{referenceNumber}/invoices"),
    ("online_sessions_closed", "POST", "/sessions/online/{referenceNumber}/close"),
    ("batch_sessions_opened", "POST", "/sessions/batch"),
    ("batch_part_uploads", "PUT", "/storage/batch/{referenceNumber}/{ordinal}"),
    ("batch_sessions_closed", "POST", "/sessions/batch/{referenceNumber}/close"),
    (
        "invoice_status_polls",
        "GET",
        "/sessions/{referenceNumber}/invoices/{invoiceReferenceNumber}",
    ),
    ("session_status_reads", "GET", "/sessions/{referenceNumber}"),
    ("session_invoice_lists", "GET", "/sessions/{referenceNumber}/invoices"),
    ("session_failed_lists", "GET", "/sessions/{referenceNumber}/invoices/failed"),
    ("session_lists", "GET", "/sessions"),
    ("rate_limit_reads", "GET", "/rate-limits"),
    (
        "upo_reads",
        "GET",
        "/sessions/{referenceNumber}/invoices/{invoiceReferenceNumber}/upo",
    ),
    (
        "upo_reads_by_ksef_number",
        "GET",
        "/sessions/{referenceNumber}/invoices/ksef/{ksefNumber}/upo",
    ),
    ("upo_downloads", "GET", "/storage/upo/{token}"),
    ("session_upo_reads", "GET", "/sessions/{referenceNumber}/upo/{upoReferenceNumber}"),
];

pub async fn run(args: LoadArgs) -> Result<ExitCode> {
    if args.invoices == 0 {
        bail!("--invoices must be at least 1");
    }
    let sellers = load_sellers(args.sellers)?;
    let issued = args
        .issue_date
        .unwrap_or_else(|| relay_domain::polish_calendar::poland_date(chrono::Utc::now()));
    let inputs = invoices(&sellers, args.invoices, issued)?;
    let run_args = RunArgs {
        inputs: Vec::new(),
        aws_endpoint: args.aws_endpoint.clone(),
        region: args.region.clone(),
        ksef_env: None,
        nip: None,
        faults: args.faults.clone(),
        sim_time_scale: args.sim_time_scale,
        timeout_secs: args.timeout_secs,
        batch_target_delay_secs: args.batch_target_delay_secs,
        out: PathBuf::from("local-load"),
    };
    let mut ports = run_cmd::build_ports(&run_args).await?;
    // Counted: the report says how many cache round trips the governor makes per KSeF call.
    let cache = Arc::new(CountingCache::new(ports.shared_cache.clone()));
    ports.shared_cache = cache.clone();
    let ksef = run_cmd::build_ksef(&run_args, &sellers, ports.shared_cache.clone()).await?;
    let sim = ksef.sim.as_ref().context("a load run sends to the embedded simulator")?;
    let header = format!(
        "ksef-relay load: {} invoice(s) for {} seller(s); {}; {} (time scale {})",
        inputs.len(),
        sellers.len(),
        ports.description,
        ksef.description,
        args.sim_time_scale
    );
    if args.json {
        eprintln!("{header}");
    } else {
        println!("{header}");
    }

    let started = Instant::now();
    let rows = run_cmd::intake_all(&ports, &ksef.backlog(&ports, args.batch_target_delay_secs), &inputs).await?;
    let intake_secs = started.elapsed().as_secs_f64();
    let tracked = rows.iter().filter(|r| r.owns_record && r.key.is_some()).count();
    let quiet = run_cmd::drive(
        &ports,
        &ksef,
        Duration::from_secs(args.timeout_secs),
        &run_cmd::bar(tracked, "KSeF"),
    )
    .await?;
    let wall = started.elapsed().as_secs_f64();

    // The relay's side: every document's state, and its latencies from its own history.
    let ledger = sim.ledger();
    let (mut accepted, mut with_upo, mut once) = (0usize, 0usize, 0usize);
    let (mut to_accepted, mut to_upo) = (Vec::new(), Vec::new());
    let mut not_accepted = Vec::new();
    let (mut online, mut batch, mut moved) = (0usize, 0usize, 0usize);
    for row in &rows {
        let Some(key) = row.key.as_ref().filter(|_| row.owns_record) else {
            not_accepted.push(format!("{}: {}", row.file, row.intake));
            continue;
        };
        let Some(doc) = ports.store.get(key).await? else {
            not_accepted.push(format!("{}: no record", row.file));
            continue;
        };
        let r = &doc.record;
        match r.send_mode() {
            Some(relay_domain::SendMode::Batch) => batch += 1,
            _ => online += 1,
        }
        // Online at intake, then taken by its seller's batch going anyway.
        if doc
            .history
            .iter()
            .any(|h| matches!(&h.event, HistoryEvent::Note { message } if message.starts_with("send mode online → batch")))
        {
            moved += 1;
        }
        if ledger.count_hash(&r.content_hash) == 1 {
            once += 1;
        }
        if r.state != DocumentState::Accepted {
            not_accepted.push(format!("{}: {}", row.file, r.state));
            continue;
        }
        accepted += 1;
        // ACCEPTED is the first change into that state; the UPO is archived with it or by a
        // later ACCEPTED → ACCEPTED change ("UPO archived at ..."), the last one.
        let ms_since_intake = |at: chrono::DateTime<chrono::Utc>| (at - r.created_at).num_microseconds().unwrap_or(0) as f64 / 1000.0;
        let into_accepted: Vec<_> = doc
            .history
            .iter()
            .filter(|h| {
                matches!(
                    h.event,
                    HistoryEvent::StateChanged {
                        to: DocumentState::Accepted,
                        ..
                    }
                )
            })
            .map(|h| h.at)
            .collect();
        if let (Some(first), Some(last)) = (into_accepted.first(), into_accepted.last()) {
            to_accepted.push(ms_since_intake(*first));
            if r.storage.upo.is_some() {
                with_upo += 1;
                to_upo.push(ms_since_intake(*last));
            }
        }
    }
    let ledger_entries = ledger.len();
    let sessions_in_ledger = {
        let mut s: Vec<String> = ledger.entries().iter().map(|e| e.session_reference.to_string()).collect();
        s.sort();
        s.dedup();
        s.len()
    };
    let each_once = once == inputs.len() && ledger_entries == inputs.len();
    let ok = quiet && each_once && accepted == inputs.len() && with_upo == inputs.len();

    // KSeF's side: the simulator's counts.
    let counts = sim.operation_counts();
    let ok_status = |s: u16| (200..300).contains(&s);
    let mut kinds = serde_json::Map::new();
    for (name, method, route) in OPERATION_KINDS {
        kinds.insert((*name).into(), counts.count(method, route, ok_status).into());
    }
    let operations = counts.snapshot();
    let total_calls: u64 = operations.iter().map(|o| o.count).sum();
    let too_many = counts.too_many_requests();
    let sessions_opened = counts.count("POST", "/sessions/online", ok_status) + counts.count("POST", "/sessions/batch", ok_status);
    // The calls the fleet governor counts: every API call but the pre-signed storage links
    // (part uploads, UPO downloads), which KSeF does not rate-limit.
    let api_calls: u64 = operations
        .iter()
        .filter(|o| !o.route.starts_with("/storage/"))
        .map(|o| o.count)
        .sum();
    let cache_ops = cache.snapshot();
    let mut cache_json = serde_json::Map::new();
    for (kind, o) in &cache_ops {
        cache_json.insert(
            kind.clone(),
            json!({ "gets": o.gets, "puts": o.puts, "conflicted_puts": o.conflicts, "removes": o.removes }),
        );
    }
    let governor = cache_ops.get("ratelog").copied().unwrap_or_default();

    let report = json!({
        "invoices": inputs.len(),
        "sellers": sellers.len(),
        "stores": if args.aws_endpoint.is_some() { "aws" } else { "memory" },
        "time_scale": args.sim_time_scale,
        "issue_date": issued.to_string(),
        "finished": quiet,
        "accepted": accepted,
        "with_upo": with_upo,
        "ledger_entries": ledger_entries,
        "each_exactly_once": each_once,
        "ok": ok,
        "wall_seconds": wall,
        "intake_seconds": intake_secs,
        "throughput_per_second": accepted as f64 / wall,
        "latency_ms": {
            "intake_to_accepted": latency_json(to_accepted),
            "intake_to_upo": latency_json(to_upo),
        },
        "send_modes": { "online": online, "batch": batch, "moved_online_to_batch": moved, "batch_target_delay_seconds": args.batch_target_delay_secs },
        "shared_cache": cache_json,
        "governor_writes_per_api_call": governor.puts as f64 / api_calls.max(1) as f64,
        "governor_reads_per_api_call": governor.gets as f64 / api_calls.max(1) as f64,
        "ksef_api_calls_governed": api_calls,
        "sessions_opened": sessions_opened,
        "sessions_in_ledger": sessions_in_ledger,
        "too_many_requests": too_many,
        "ksef_calls_total": total_calls,
        "ksef_calls_per_invoice": total_calls as f64 / inputs.len() as f64,
        "ksef_operations": kinds,
        "operations": operations,
        "not_accepted": not_accepted.iter().take(20).collect::<Vec<_>>(),
    });

    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_tables(&report);
    }
    if !ok {
        eprintln!(
            "load run FAILED: {accepted}/{} accepted, {with_upo} with UPO, {once} exactly once in the ledger ({ledger_entries} entries){}",
            inputs.len(),
            if quiet { "" } else { "; stopped at --timeout-secs with work left" }
        );
        for line in not_accepted.iter().take(20) {
            eprintln!("  {line}");
        }
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_tables(r: &serde_json::Value) {
    let ms = |v: &serde_json::Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.0} ms"));
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec!["measure", "value"]);
    let rows: Vec<(&str, String)> = vec![
        ("invoices / sellers", format!("{} / {}", r["invoices"], r["sellers"])),
        ("accepted (with UPO)", format!("{} ({})", r["accepted"], r["with_upo"])),
        (
            "in the simulator's ledger exactly once",
            format!("{} ({} ledger entries)", r["each_exactly_once"], r["ledger_entries"]),
        ),
        (
            "wall time",
            format!(
                "{:.2} s (intake {:.2} s)",
                r["wall_seconds"].as_f64().unwrap_or(0.0),
                r["intake_seconds"].as_f64().unwrap_or(0.0)
            ),
        ),
        (
            "throughput",
            format!("{:.1} invoices/s", r["throughput_per_second"].as_f64().unwrap_or(0.0)),
        ),
        (
            "send mode online / batch",
            format!(
                "{} / {} ({} of them online at intake, taken by a batch going anyway; target delay {} s)",
                r["send_modes"]["online"],
                r["send_modes"]["batch"],
                r["send_modes"]["moved_online_to_batch"],
                r["send_modes"]["batch_target_delay_seconds"]
            ),
        ),
        (
            "KSeF sessions opened (in the ledger)",
            format!("{} ({})", r["sessions_opened"], r["sessions_in_ledger"]),
        ),
        ("429 Too Many Requests met", r["too_many_requests"].to_string()),
        (
            "KSeF calls (per invoice)",
            format!(
                "{} ({:.2})",
                r["ksef_calls_total"],
                r["ksef_calls_per_invoice"].as_f64().unwrap_or(0.0)
            ),
        ),
    ];
    let rows = rows.into_iter().chain([(
        "rate governor cache writes / reads per governed KSeF call",
        format!(
            "{:.2} / {:.2} ({} calls)",
            r["governor_writes_per_api_call"].as_f64().unwrap_or(0.0),
            r["governor_reads_per_api_call"].as_f64().unwrap_or(0.0),
            r["ksef_api_calls_governed"]
        ),
    )]);
    for (k, v) in rows {
        table.add_row(vec![k.to_owned(), v]);
    }
    for (name, label) in [
        ("intake_to_accepted", "intake → ACCEPTED"),
        ("intake_to_upo", "intake → UPO archived"),
    ] {
        let l = &r["latency_ms"][name];
        table.add_row(vec![
            format!("{label} p50 / p95 / p99 / max"),
            format!("{} / {} / {} / {}", ms(&l["p50"]), ms(&l["p95"]), ms(&l["p99"]), ms(&l["max"])),
        ]);
    }
    println!("{table}");

    let mut ops = Table::new();
    ops.load_preset(UTF8_FULL_CONDENSED)
        .set_header(vec!["KSeF operation (2xx answers)", "count"]);
    if let Some(kinds) = r["ksef_operations"].as_object() {
        for (name, count) in kinds.iter().filter(|(_, c)| c.as_u64() != Some(0)) {
            ops.add_row(vec![name.clone(), count.to_string()]);
        }
    }
    println!("{ops}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sellers_are_distinct_valid_nips_the_first_being_the_samples() {
        let sellers = load_sellers(5).unwrap();
        assert_eq!(sellers.len(), 5);
        assert_eq!(sellers[0].0.as_str(), "9999999999");
        let nips: std::collections::HashSet<_> = sellers.iter().map(|(n, _)| n.clone()).collect();
        let tokens: std::collections::HashSet<_> = sellers.iter().map(|(_, t)| t.clone()).collect();
        assert_eq!((nips.len(), tokens.len()), (5, 5));
        assert!(load_sellers(0).is_err());
    }

    #[test]
    fn invoices_are_valid_fa3_with_distinct_identities_and_hashes_spread_over_sellers() {
        let sellers = load_sellers(3).unwrap();
        let issued = chrono::NaiveDate::from_ymd_opt(2026, 3, 2).unwrap();
        let set = invoices(&sellers, 9, issued).unwrap();
        let mut keys = std::collections::HashSet::new();
        let mut bodies = std::collections::HashSet::new();
        for (i, (name, bytes)) in set.iter().enumerate() {
            let id = relay_fa3::read_identity(bytes).unwrap();
            assert_eq!(id.key.seller_nip, sellers[i % 3].0, "{name}");
            assert_eq!(id.key.invoice_number.as_str(), format!("LOAD/{i:07}"));
            assert_eq!(id.issue_date, issued, "{name}");
            assert!(relay_fa3::validate(bytes).is_valid(), "{name} is valid FA(3)");
            keys.insert(id.key);
            bodies.insert(bytes.clone());
        }
        assert_eq!((keys.len(), bodies.len()), (9, 9));
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 95.0), Some(95.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
